#pragma once
// The controller: one event loop that owns a search. It binds a ZeroMQ
// ROUTER, registers workers, hands each free device slot a trial attempt,
// records progress and results through the store's group-committing Writer
// (the only writer of the store), acknowledges results only after they are
// durable, re-queues the attempts of workers that go silent or leave, and
// resumes an experiment from the store after a crash.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "controller/asha.h"
#include "controller/auth.h"
#include "controller/experiment_config.h"
#include "controller/objective.h"
#include "controller/strategy.h"
#include "db/store.h"
#include "searchspace/space.h"

namespace minas {

// Where a running search stands, for a progress display.
struct ControllerProgress {
  int64_t done = 0, failed = 0, pruned = 0, running = 0, queued = 0;
  // Architectures scored by screening (with a score), of the `screen` asked for (0: none).
  int64_t screened = 0, screen = 0;
  int workers = 0, slots_busy = 0, slots = 0;
  double best_val_acc = -1;  // of the done trials; -1 before the first
  std::string best_arch;     // its canonical key
  double elapsed_s = 0;      // since this run of the controller started
  double budget_s = 0;       // the wall-clock budget; 0: none
};

struct ControllerOptions {
  std::string bind = "tcp://127.0.0.1:5555";
  // Heartbeats every second and a worker lost after 5 missed: a lost worker's
  // trials are back in the queue within about 5 s, while a loaded machine
  // that stalls a process for a second or two does not lose its trials.
  int heartbeat_ms = 1000;
  int liveness = 5;
  int max_attempts = 3;  // attempts of one trial before it is marked failed
  // Group commit: results are made durable (and acknowledged) when this many
  // are pending or this much time has passed, whichever comes first.
  size_t commit_every = 256;
  int commit_ms = 20;
  std::function<void(const std::string&)> log;  // one line per event worth a log; null: quiet
  // CURVE: the controller's key pair and the worker keys it admits. Required
  // when binding beyond loopback (tcp on another address, a wildcard), where
  // anyone who can reach the port could otherwise take trials or feed results.
  std::optional<auth::KeyPair> curve_key;
  std::set<std::string> allowed_workers;
  // Where trials' training states (ASHA's rung checkpoints) are kept until the
  // trial ends, so a retried attempt continues from its last rung; empty:
  // beside the store, in STORE.states/EXPERIMENT_ID.
  std::string state_dir;
  // Called from the controller's loop about every progress_ms; null: never.
  std::function<void(const ControllerProgress&)> on_progress;
  int progress_ms = 1000;
};

struct ControllerSummary {
  int64_t done = 0, failed = 0, pruned = 0, requeued = 0, late = 0;
  int64_t rejected = 0;  // candidates the constraints refused before training
  bool resumed = false;
  bool stopped = false;  // by request_stop() or the time budget, before the trial budget
  // Why the strategy could not go on (it threw: constraints that leave almost
  // nothing of the space, say); the search stopped then. Empty otherwise.
  std::string error;
};

// Throws Error saying which setting is out of range and why (a heartbeat of
// 0 ms would busy-loop, fewer than 1 attempt could never run a trial, ...).
// The Controller checks its settings itself; a caller that creates files
// (the store) checks them first, so a refused start leaves nothing behind.
void check_controller_settings(const ExperimentConfig& config, const ControllerOptions& options);

// The epoch after which a trial's state is final, the one children inherit
// (config.inherit): the fidelity, else the recipe's epochs; 0 when trials
// have no fixed number of epochs (a time budget).
int final_epoch(const ExperimentConfig& config);
// With config.inherit, throws Error unless the strategy names its
// candidates' parents (evolution) and every trial has a final epoch. The
// Controller checks it too; a caller that creates files checks it first.
void check_inherit(const ExperimentConfig& config, const Strategy& strategy);

// The controller's socket, bound (with its CURVE handler and handshake monitor
// when options.curve_key is set). Made before the store is opened, it lets a
// start refused for its address (bad, in use, beyond loopback without CURVE)
// leave nothing on disk. Throws Error for such an address or bad options.
class ControllerSocket {
 public:
  explicit ControllerSocket(const ControllerOptions& options);
  ~ControllerSocket();
  ControllerSocket(ControllerSocket&&) noexcept;
  ControllerSocket& operator=(ControllerSocket&&) noexcept;
  // The endpoint actually bound (resolves a wildcard port).
  std::string endpoint() const;

  struct State;

 private:
  friend class Controller;
  std::unique_ptr<State> state_;
};

class Controller {
 public:
  // Binds options.bind itself.
  Controller(db::Store& store, const Space& space, Strategy& strategy, ExperimentConfig config,
             ControllerOptions options);
  // On a socket bound before (for the same options' bind and keys).
  Controller(db::Store& store, const Space& space, Strategy& strategy, ExperimentConfig config,
             ControllerOptions options, ControllerSocket socket);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Runs until the trial budget is spent and every trial has finished, the
  // time budget runs out, or request_stop(). Workers are told goodbye.
  ControllerSummary run();
  // Thread-safe, also from a signal handler's thread.
  void request_stop() { stop_.store(true); }
  // The endpoint actually bound (resolves a wildcard port).
  std::string endpoint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace minas
