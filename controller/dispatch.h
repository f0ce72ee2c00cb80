#pragma once
// Dispatch: trials from the strategy into the trial book, and from the
// book's queue onto free device slots. Part of the controller's loop
// (controller/core.h).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/sessions.h"
#include "controller/trial_book.h"

namespace minas::loop {

struct Core;

class Dispatch {
 public:
  explicit Dispatch(Core& core) : core_(core) {}
  // Trials of the experiment before this run (they count toward the budget).
  void count_existing() { ++created_; }
  // More trials may be asked of the strategy.
  bool asking_allowed() const;
  // A queued trial for a free slot: a re-queued one first, else a new one
  // (with a latency pool, new ones are measured first: new_trial() there).
  std::optional<int64_t> next_trial();
  // A new trial from the strategy, recorded and in the book's queue;
  // nullopt when there is none to ask.
  std::optional<int64_t> new_trial();

  // A slot said ready. It must be one the worker declared in its hello, and
  // not one that runs an attempt of ours: a worker that lost an attempt is
  // found by its heartbeat (Reports::on_heartbeat), which frees the slot.
  void on_ready(const std::string& worker, const std::string& slot);
  // Trials for a worker's free slots, gpus_per_trial at a time (a data-
  // parallel trial runs on all of its slots of one worker).
  void dispatch(const std::string& worker);
  // Hands queued work to workers whose slots were free when there was none.
  void fill_idle();
  // The train message of one worker's part of an attempt (the space document
  // once per connection: it is the bulk of a train, and a worker keeps it).
  nlohmann::json train_body(WorkerState& ws, const Trial& t, const std::vector<std::string>& slots);

 private:
  void start(WorkerState& w, const std::string& worker, int64_t trial,
             const std::vector<std::string>& slots);

  Core& core_;
  int64_t created_ = 0;         // trials of the experiment, this run's and before
  bool no_more_archs_ = false;  // the strategy has none left, or cannot go on
};

}  // namespace minas::loop
