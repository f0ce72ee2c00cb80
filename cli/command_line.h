#pragma once
// The small pieces of the command lines of `minas search` and `minas adapt`
// (durations, shell words, the line that reproduces a run), and the log and
// stop helpers of the pipelines they print and stop through.
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "pipeline/log.h"
#include "pipeline/stop.h"

namespace minas::cli {

using pipeline::default_experiment_name;
using pipeline::install_stop_signals;
using pipeline::log_line;
using pipeline::printable_text;
using pipeline::stop_requested;
using pipeline::StopTarget;

// "90", "90s", "45m", "1.5h", "1h30m": seconds. Throws Error naming `flag`.
double parse_duration(const std::string& text, const std::string& flag);
// A word as the shell reads it back: as is when plain, else in single quotes.
std::string shell_word(const std::string& w);
// The command line that runs `program` ("minas search") again: every option
// of `cmd` that was given (flags only when true: an experiment file's false
// sets nothing), values shell-quoted, those named in `skip` left out; then
// --seed and --budget with the values used when they were not given.
std::string reproduce_line(const CLI::App& cmd, const std::string& program,
                           const std::vector<std::string>& skip, uint64_t seed,
                           const std::string& budget);

}  // namespace minas::cli
