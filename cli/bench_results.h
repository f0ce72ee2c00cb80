#pragma once
// Simulated trial results recorded through the controller's write path (the
// store's Writer), for `minas bench store` and `minas bench dashboard`: an
// nb201 experiment, 8 workers, and per result a trial added, started, its
// epochs and its result, committed every `batch` results.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "db/store.h"
#include "searchspace/rng.h"

namespace minas::cli {

class SimulatedResults {
 public:
  // Creates the experiment `name` in the store.
  SimulatedResults(db::Store& store, const std::string& name, int epochs, uint64_t seed);
  // Records `count` more results through `writer`, committing every `batch`
  // and at the end; returns the commits made.
  int64_t record(db::Writer& writer, int64_t count, int64_t batch);
  int64_t experiment() const { return experiment_; }
  // Also what a controller writes for the dashboard beside the results: a
  // worker-pool sample per result and evolution's population snapshots at
  // the controller's pace (every result, then every 1% more).
  void write_internals(bool on) { internals_ = on; }
  int64_t recorded() const { return next_; }

 private:
  db::Store& store_;
  bool internals_ = false;
  int64_t next_snapshot_ = 1;
  std::vector<double> population_;
  int epochs_;
  Rng rng_;
  int64_t experiment_ = 0;
  int64_t next_ = 0;
  std::vector<std::pair<std::string, std::string>> archs_;  // key, JSON
  std::vector<int64_t> workers_;
};

}  // namespace minas::cli
