#pragma once
// The controller's loop, in parts: what they share (the experiment, the
// store's writer, the trial book, the results so far) and the parts
// themselves, each in its own file:
//   sessions       workers, hello/heartbeat/bye, slots, sending
//   data_transfer  the data set for a worker that lacks it
//   resume         opening or resuming the experiment, attempts taken back
//   dispatch       strategy -> book -> free slots
//   latency_pool   measuring latency before training
//   gangs          trials spread over several workers
//   reports        progress, results, failures, lost attempts
//   checkpoints    training states kept between attempts
//   screening      architectures scored at initialization before any trial
// controller.cpp runs the loop and hands each message to its part.
// Internal to the controller target.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "controller/asha.h"
#include "controller/checkpoints.h"
#include "controller/controller.h"
#include "controller/data_transfer.h"
#include "controller/dispatch.h"
#include "controller/gangs.h"
#include "controller/latency_pool.h"
#include "controller/reports.h"
#include "controller/resume.h"
#include "controller/screening.h"
#include "controller/sessions.h"
#include "controller/trial_book.h"
#include "db/store.h"

namespace minas::loop {

double unix_now();

// An answer to a result or failure, sent once what it reports is durable.
struct Ack {
  std::string worker;
  int64_t trial;
  int attempt;
  bool counted;
};

struct Core {
  Core(db::Store& store, const Space& space, Strategy& strategy, ExperimentConfig config,
       ControllerOptions options, zmq::socket_t& socket);
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  void log(const std::string& line) const {
    if (opt.log) opt.log(line);
  }

  // ---- who may report what
  // True if `worker` runs (trial, attempt) as its trained attempt now (rank
  // 0's worker for a gang). After a restart, the attempt the store shows it
  // running is taken back by it here while the grace period lasts.
  bool owns(const std::string& worker, int64_t trial, int attempt);
  // A report about an attempt from before the controller restarted that no
  // worker took back: whose it was cannot be told any more, so it is
  // acknowledged as not counted (its worker lets it go) and nothing is
  // stored. Anyone else's report about an attempt it was never sent is refused.
  void refuse_unless_ran(const std::string& worker, int64_t trial, int attempt) const;

  // ---- results
  void ack(const std::string& worker, int64_t trial, int attempt, bool counted) {
    acks.push_back({worker, trial, attempt, counted});
  }
  // A trial failed for good (out of attempts, or not retryable): the
  // strategy hears of it, and it counts.
  void tell_failure(const std::string& arch);
  // After a result, prune or failure told to the strategy: its summary for the
  // dashboard, joining the batch of that result, at every result at first and
  // then once per 1% more results.
  void snapshot_if_due();

  db::Store& store;
  const Space& space;
  Strategy& strategy;
  const ExperimentConfig config;
  const ControllerOptions opt;
  db::Writer writer;
  std::string space_id;  // the space document's hash, as workers cache it
  int64_t experiment = 0;
  std::optional<Asha> asha;
  bool stopping = false;
  ControllerSummary summary;
  bool strategy_dirty = false;  // asked or told since the state was last saved
  int64_t next_snapshot = 1;    // results at which the next strategy snapshot is due
  double best_val = -1;         // of the done trials, and its architecture
  std::string best_arch;
  std::vector<Ack> acks;  // sent at the next commit

  TrialBook book;
  Sessions sessions;
  DataTransfer data;
  CheckpointStates states;
  // With inherit: the final states of trials children may inherit from, and
  // each unfinished child's parent trial (whose state it waits for).
  CheckpointStates parents{*this, CheckpointStates::Kept::parents};
  std::map<int64_t, int64_t> heirs;  // child trial -> parent trial
  // The epoch after which a trial's state is final: the one children inherit.
  int final_epoch() const;
  // Drops the kept final states no child can inherit any more: of ended
  // trials that are neither a possible parent of the strategy's nor the
  // parent of an unfinished child. Called after each trial ends.
  void keep_parents();
  Resume resume;
  Dispatch dispatch;
  LatencyPool latency;
  Gangs gangs;
  Reports reports;
  Screening screening;
};

}  // namespace minas::loop
