// `minas bench dispatch`: the controller, the protocol and the store under
// many instant workers.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "controller/controller.h"
#include "searchspace/error.h"
#include "worker/worker.h"

namespace minas::cli {
namespace {

struct DispatchFlags {
  int workers = 64;
  int64_t trials = 20000;
  std::string bind = "ipc://";
};

void run(const DispatchFlags& f) {
  if (f.workers < 1 || f.workers > 1024 || f.trials < 1)
    throw Error("bench dispatch", "need 1 <= --workers <= 1024 and --trials >= 1");
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("minas-bench-dispatch-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string endpoint =
      f.bind == "ipc://" ? "ipc://" + (dir / "controller.sock").string() : f.bind;
  {
    // The mobile space: large enough that random search never runs out.
    const Space space = Space::load("mobile");
    db::Store store = db::Store::open((dir / "bench.db").string());
    RandomStrategy strategy(space, 1);
    ExperimentConfig cfg;
    cfg.name = "dispatch";
    cfg.data = "simulated";
    cfg.budget_trials = f.trials;
    ControllerOptions opt;
    opt.bind = endpoint;
    Controller controller(store, space, strategy, cfg, opt);

    std::mutex mu;
    std::vector<double> latencies;
    latencies.reserve(static_cast<size_t>(f.trials));
    auto runner = std::shared_ptr<TrialRunner>(make_instant_runner());
    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < f.workers; ++i) {
      WorkerOptions w;
      w.connect = controller.endpoint();
      w.name = "w" + std::to_string(i);
      w.runner = runner;
      w.slots = parse_devices("cpu:1");
      w.on_dispatch = [&](double ms) {
        std::lock_guard lock(mu);
        latencies.push_back(ms);
      };
      workers.push_back(std::make_unique<Worker>(w));
    }
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    const ControllerSummary s = controller.run();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& t : threads) t.join();
    std::sort(latencies.begin(), latencies.end());
    const double p50 = latencies.empty() ? 0 : latencies[latencies.size() / 2];
    const double p99 = latencies.empty() ? 0 : latencies[latencies.size() * 99 / 100];
    std::printf(
        "workers=%d trials=%lld done=%lld seconds=%.2f p99_dispatch_ms=%.2f "
        "store=WAL,synchronous=FULL\n",
        f.workers, static_cast<long long>(f.trials), static_cast<long long>(s.done), seconds, p99);
    std::printf("trials_per_s=%.0f p50_dispatch_ms=%.3f\n", static_cast<double>(s.done) / seconds,
                p50);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace

void add_dispatch_benchmark(CLI::App& bench) {
  auto f = std::make_shared<DispatchFlags>();
  CLI::App* c = bench.add_subcommand(
      "dispatch", "A search of simulated instant trials: dispatch, report and durable storage");
  c->add_option("--workers", f->workers, "Worker processes' worth of workers (threads here)")
      ->default_val(64)
      ->check(in_range(1, 1024));
  c->add_option("--trials", f->trials, "Trial budget")
      ->default_val(20000)
      ->check(in_range<decltype(f->trials)>(1, 1'000'000'000));
  c->add_option("--bind", f->bind, "Controller endpoint (default: an ipc socket in a temp folder)");
  c->callback([f] { run(*f); });
}

}  // namespace minas::cli
