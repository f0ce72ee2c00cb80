#pragma once
// Opening an experiment: created on first run; on a resume, checked against
// the store, the strategy restored, every trial back in the book, and the
// attempts the store shows running kept for their workers to take back
// during a grace period. Part of the controller's loop (controller/core.h).
#include <cstdint>
#include <optional>
#include <string>

#include "controller/sessions.h"
#include "controller/trial_book.h"
#include "db/queries.h"
#include "db/sqlite.h"

namespace minas::loop {

struct Core;

class Resume {
 public:
  explicit Resume(Core& core) : core_(core) {}
  // Creates or resumes the experiment, reads the data set, opens the states.
  void open_experiment();
  // After a restart, `worker` says it runs (or ran) the attempt the store
  // shows running on it: the attempt is its flight again, on the slots the
  // store names, which must be the worker's own. False if not its to take.
  bool claim(const std::string& worker, int64_t trial, int attempt);
  // The grace period is over (or now_anyway): what nobody took back trains again.
  void expire_unclaimed(bool now_anyway);

 private:
  void resume();
  // One trial of the resumed experiment (a row of `trials`) into the book and the strategy.
  void add_trial(const db::ResumedTrial& t, double now);
  // A trial of the resumed experiment back in the queue (or in the latency
  // pool's) at attempt `next`.
  void requeue(int64_t id, const std::string& arch, int attempt, int next,
               std::optional<Measured> measured, double now);
  Core& core_;
  Clock::time_point grace_end_;
};

}  // namespace minas::loop
