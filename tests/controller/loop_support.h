#pragma once
// What the in-process search tests share: worker options, counts read back
// from the store, and a Search (a fresh store, the nb201 space, a strategy,
// simulated data, a controller on an ephemeral loopback port with fast
// heartbeats).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller.h"
#include "db/queries.h"
#include "tests/support.h"
#include "tests/wait.h"
#include "worker/worker.h"

namespace minas::test {

inline WorkerOptions worker_options(const std::string& endpoint, const std::string& name,
                                    std::shared_ptr<TrialRunner> runner, int slots) {
  WorkerOptions w;
  w.connect = endpoint;
  w.name = name;
  w.runner = std::move(runner);
  std::string devices = "cpu:1";
  for (int i = 1; i < slots; ++i) devices += ",cpu:1";
  w.slots = parse_devices(devices);
  w.heartbeat_ms = 50;
  return w;
}

struct Counts {
  int64_t trials = 0, done = 0, distinct = 0;
};

inline Counts count(const std::string& path) {
  db::Connection c = db::open_store_readonly(path);
  Counts n;
  db::Statement s =
      c.prepare("SELECT count(*), sum(status = 'done'), count(DISTINCT arch_key) FROM trials");
  REQUIRE(s.step());
  n.trials = s.column_int64(0);
  n.done = s.column_int64(1);
  n.distinct = s.column_int64(2);
  return n;
}

struct Search {
  test::TempDir dir;
  std::string path;
  Space space;
  db::Store store;
  StrategySettings settings;
  std::unique_ptr<Strategy> strategy;
  std::string name;

  Search(const std::string& tag, std::string experiment, uint64_t seed,
         const std::string& strategy_name = "random")
      : dir(tag),
        path(dir.file("minas.db")),
        space(Space::load("nb201")),
        store(db::Store::open(path)),
        name(std::move(experiment)) {
    settings.name = strategy_name;
    settings.seed = seed;
    strategy = make_strategy(space, settings);
  }
  // After changing `settings`: the strategy they describe.
  void remake() { strategy = make_strategy(space, settings); }

  ExperimentConfig config() const {
    ExperimentConfig c;
    c.name = name;
    c.data = "simulated";
    c.seed = settings.seed;
    c.strategy_settings = settings.to_json();
    c.objective = settings.objective;
    return c;
  }
  static ControllerOptions options() {
    ControllerOptions o;
    o.bind = "tcp://127.0.0.1:*";
    o.heartbeat_ms = 50;
    // Fast heartbeats, but a worker (or, on the worker's side, the controller) is taken for
    // lost only after 5 s of silence, as by default: a loaded machine stalls a thread for
    // longer than a few heartbeats (a commit's fsync), and these tests lose workers only by
    // a goodbye, never by silence.
    o.liveness = 100;
    return o;
  }
};

// A runner that lets a test wait for what its inner runner is asked to do: each attempt's
// start is counted, and `on_start` (if set) runs first with the count, on the slot's thread.
class WatchedRunner final : public TrialRunner {
 public:
  explicit WatchedRunner(std::shared_ptr<TrialRunner> inner,
                         std::function<void(int started)> on_start = nullptr)
      : inner_(std::move(inner)), on_start_(std::move(on_start)) {}
  bool needs_data() const override { return inner_->needs_data(); }
  TrialOutcome run(const TrialRequest& req,
                   const std::function<void(int, const nlohmann::json&)>& on_epoch,
                   const std::function<bool()>& cancelled) override {
    int n;
    {
      std::lock_guard lock(mu_);
      n = ++started_;
    }
    cv_.notify_all();
    if (on_start_) on_start_(n);
    return inner_->run(req, on_epoch, cancelled);
  }
  // Whether `n` attempts have started within `limit` (a hang guard).
  bool await_started(int n, std::chrono::milliseconds limit = kHangGuard) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return started_ >= n; });
  }

 private:
  std::shared_ptr<TrialRunner> inner_;
  std::function<void(int)> on_start_;
  std::mutex mu_;
  std::condition_variable cv_;
  int started_ = 0;
};

// Runs a controller for the search until it ends, with one worker thread per
// WorkerOptions that `make` gives for the controller's endpoint. Workers are
// stopped after it: one that took the controller for lost while it was busy
// reconnects under a new identity, misses the goodbye and would wait.
// `opt` is the controller's (Search::options() by default); `running`, when
// given, holds the controller while it runs.
inline ControllerSummary run_workers(
    Search& search, const ExperimentConfig& cfg,
    const std::function<std::vector<WorkerOptions>(const std::string& endpoint)>& make,
    const ControllerOptions& opt = Search::options(), std::atomic<Controller*>* running = nullptr) {
  Controller controller(search.store, search.space, *search.strategy, cfg, opt);
  if (running) running->store(&controller);
  std::vector<std::unique_ptr<Worker>> workers;
  for (WorkerOptions& o : make(controller.endpoint()))
    workers.push_back(std::make_unique<Worker>(std::move(o)));
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
  const ControllerSummary s = controller.run();
  for (auto& w : workers) w->request_stop();
  for (auto& t : threads) t.join();
  if (running) running->store(nullptr);
  return s;
}

}  // namespace minas::test
