#pragma once
// Reports: what workers say of the attempts they train (progress, result,
// failure, the attempts a heartbeat lists), and what becomes of the attempts
// of a worker that is gone. Each ends in a transition of the trial book and
// the store's writes it calls for. Part of the controller's loop (controller/core.h).
#include <cstdint>
#include <string>

#include "controller/protocol.h"
#include "db/store.h"

namespace minas::loop {

struct Core;

class Reports {
 public:
  explicit Reports(Core& core) : core_(core) {}
  void on_progress(const std::string& worker, const proto::Progress& p);
  void on_result(const std::string& worker, const proto::Result& m);
  void on_failure(const std::string& worker, const proto::Failure& m);
  // A worker's heartbeat lists the attempts it runs. One of ours missing from
  // it for longer than a message could be on its way (a worker process
  // restarted under the same name) is lost: retried like a lost worker's.
  void on_heartbeat(const std::string& worker, const proto::Heartbeat& h);
  // The attempts a worker was running go back to the queue with the attempt
  // number raised, or fail for good at the cap.
  void requeue_all(const std::string& worker, const std::string& why);

 private:
  // The store's row of a result; `current`: from the attempt's own worker.
  db::TrialResult result_row(const std::string& worker, const proto::Result& m, bool current) const;
  // A counted result: the strategy hears of it, and the trial is done.
  void done(const std::string& worker, const db::TrialResult& r);
  // A counted result of a warm-started child: its lineage of weights in the store.
  void record_inheritance(const proto::Result& m);
  // Below the rung's cut: the attempt is cancelled on its worker and the
  // trial recorded as pruned; the strategy hears of it at its low fidelity.
  void prune(int64_t trial, double epochs, double val_acc);
  void retry_or_fail(int64_t trial, const std::string& why, double now);
  // The trial failed for good: the store, its states and the strategy hear of it.
  void failed(int64_t trial, int attempt, const std::string& arch, const std::string& why,
              double now);
  // The attempt's slots are let go: busy time in slot-seconds, as connected time is counted.
  void let_go(const std::string& worker, int64_t trial, double started, double ended, size_t slots);
  Core& core_;
};

}  // namespace minas::loop
