#pragma once
// The worker process: connects a DEALER to the controller, advertises its
// device slots, runs one trial attempt per slot at a time (each on its own
// thread, through a TrialRunner), streams progress, keeps every result until
// the controller acknowledges it as stored, reconnects with backoff when the
// controller goes silent, and leaves cleanly when stopped.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controller/auth.h"
#include "worker/devices.h"
#include "worker/runner.h"
#include "worker/screener.h"

namespace minas {

struct WorkerOptions {
  std::string connect;            // the controller's endpoint
  std::vector<DeviceSlot> slots;  // parse_devices(); each runs one attempt at a time
  std::string name;               // identity; empty: host:pid
  // The pool it belongs to and its labels, sent in hello: an experiment may
  // train on one pool and measure latency on another. The device type
  // ("cpu" or "cuda") is added to the tags as "device" unless given.
  std::string pool = "default";
  // The host name or address other workers reach this one by, for the
  // ranks of a trial spread over several workers; empty: this host's name.
  std::string advertise;
  std::map<std::string, std::string> tags;
  std::shared_ptr<TrialRunner> runner;  // shared by the slots (thread-safe)
  // Scores the controller's screening requests (shared by the slots, thread-safe); null: the
  // proxies through the trainer's backend (make_proxy_screener()).
  std::shared_ptr<Screener> screener;
  int heartbeat_ms = 1000;  // until the controller's welcome says otherwise
  int liveness = 5;
  double max_backoff_s = 5;  // reconnect delays double from 0.1 s up to this
  std::function<void(const std::string&)> log;
  // Called with the milliseconds from a slot's `ready` to its next `train`.
  std::function<void(double)> on_dispatch;
  // CURVE: this worker's key pair and the controller's public key. A refused
  // key gets no answer: the worker keeps retrying with backoff and says so.
  std::optional<auth::KeyPair> curve_key;
  std::string server_public_key;
  // Where data sets fetched from the controller are kept, one folder each
  // (NAME-FINGERPRINT); empty: $MINAS_DATA_CACHE, else ~/.cache/minas/data.
  std::string data_cache;
};

// "cpu", "cpu:THREADS", "cuda:0,1" (one slot per GPU), or several joined by
// commas ("cpu:1,cpu:1": two one-thread CPU slots, "cpu" and "cpu.1").
// Throws Error naming the bad part.
std::vector<DeviceSlot> parse_devices(const std::string& text);

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs until the controller says goodbye or request_stop(); returns 0.
  // Attempts still running at a stop are cancelled and reported as
  // interrupted (bye), so the controller re-queues them at once.
  int run();
  void request_stop() { stop_.store(true); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
};

}  // namespace minas
