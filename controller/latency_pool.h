#pragma once
// The latency pool: with ExperimentConfig::latency_pool, each new trial is
// first measured by a worker of that pool (batch-1 latency, params, MACs)
// and trained after, elsewhere. Part of the controller's loop (controller/core.h).
#include <string>

#include "controller/protocol.h"
#include "controller/sessions.h"

namespace minas::loop {

struct Core;

class LatencyPool {
 public:
  explicit LatencyPool(Core& core) : core_(core) {}
  // A free slot measures the next trial waiting for it, or a new one while
  // the trials measured and waiting for training, with those being
  // measured, are fewer than the training slots (measuring runs ahead of
  // training by about one round, not further).
  void dispatch(const std::string& worker, WorkerState& w);
  // A latency pool's answer: the trial's latency, params and MACs go to its
  // row, and the trial to the training queue.
  void on_measured(const std::string& worker, const proto::Result& r);
  // A failure report about a measurement `worker` runs now: handled, true;
  // false if it is not one (a training attempt's, or not the worker's).
  bool on_failure(const std::string& worker, const proto::Failure& m);
  // A worker gone: what it measured is measured again by another.
  void lost(WorkerState& w);

 private:
  Core& core_;
};

}  // namespace minas::loop
