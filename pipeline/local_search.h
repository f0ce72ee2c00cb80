#pragma once
// A search on this machine: the controller and a pool of local workers in one
// process, over an ipc socket in a private folder, with a progress line.
#include <string>

#include "controller/controller.h"
#include "controller/strategy.h"
#include "db/store.h"
#include "pipeline/log.h"
#include "searchspace/space.h"

namespace minas::pipeline {

struct LocalPool {
  int workers = 1;             // local workers, each with per_trial slots of `threads`
  int threads = 1;             // CPU threads of a slot
  int per_trial = 1;           // slots one trial trains on, data parallel
  std::string devices;         // instead: one worker with these slots (parse_devices)
  std::string who = "search";  // the log's name for the run
};

// Runs the experiment's search to its end (budget, trials, or a signal: the
// handlers of stop.h are installed for the run). The progress line is redrawn
// on stderr when it is a terminal, else logged every 30 s. The store must
// outlive the call. Throws Error when the strategy could not go on
// (ControllerSummary::error).
ControllerSummary run_local_search(db::Store& store, const Space& space, Strategy& strategy,
                                   const ExperimentConfig& config, const LocalPool& pool,
                                   const Log& log = {});

}  // namespace minas::pipeline
