#pragma once
// What `minas search` and `minas adapt` share: a search on this machine (the
// controller and a pool of local workers in one process, over an ipc socket
// in a private folder), its progress line, stopping on Ctrl-C or SIGTERM, and
// the small pieces of their command lines (durations, shell words, names).
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "controller/controller.h"
#include "controller/strategy.h"
#include "db/store.h"
#include "searchspace/space.h"
#include "worker/worker.h"

namespace minas::cli {

// "90", "90s", "45m", "1.5h", "1h30m": seconds. Throws Error naming `flag`.
double parse_duration(const std::string& text, const std::string& flag);
// "HH:MM:SS WHO: LINE" on stderr, one line whatever LINE holds (printable_text
// with newlines escaped: a peer's text cannot forge a log line).
void log_line(const std::string& who, const std::string& line);
// Text for a terminal or a log: control characters and bytes that are not
// printable ASCII written as \xNN (newlines kept, or written as \n), each
// line cut after `max_line` characters. Backslashes stay: places that quote
// a value have escaped it already, and this is the last guard behind them.
std::string printable_text(const std::string& text, size_t max_line, bool keep_newlines = true);
// A word as the shell reads it back: as is when plain, else in single quotes.
std::string shell_word(const std::string& w);
// The command line that runs `program` ("minas search") again: every option
// of `cmd` that was given (flags only when true: an experiment file's false
// sets nothing), values shell-quoted, those named in `skip` left out; then
// --seed and --budget with the values used when they were not given.
std::string reproduce_line(const CLI::App& cmd, const std::string& program,
                           const std::vector<std::string>& skip, uint64_t seed,
                           const std::string& budget);
// PREFIX-YYYYMMDD-HHMMSS, local time.
std::string default_experiment_name(const std::string& prefix);

// SIGINT and SIGTERM ask the registered controller and worker to stop (a
// lock-free store, safe in a handler). Registered for the scope of a guard.
void install_stop_signals();
bool stop_requested();  // a signal came, as opposed to the budget ending
class StopTarget {
 public:
  explicit StopTarget(Controller* c);
  explicit StopTarget(Worker* w);
  ~StopTarget();
  StopTarget(const StopTarget&) = delete;
  StopTarget& operator=(const StopTarget&) = delete;
};

struct LocalPool {
  int workers = 1;             // local workers, each with per_trial slots of `threads`
  int threads = 1;             // CPU threads of a slot
  int per_trial = 1;           // slots one trial trains on, data parallel
  std::string devices;         // instead: one worker with these slots (parse_devices)
  std::string who = "search";  // the log's name for the run
};

// Runs the experiment's search to its end (budget, trials, or a signal) with
// a progress line on stderr. The store must outlive the call. Throws Error
// when the strategy could not go on (ControllerSummary::error).
ControllerSummary run_local_search(db::Store& store, const Space& space, Strategy& strategy,
                                   const ExperimentConfig& config, const LocalPool& pool);

}  // namespace minas::cli
