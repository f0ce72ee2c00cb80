#include "pipeline/local_search.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include <unistd.h>

#include "pipeline/stop.h"
#include "searchspace/error.h"
#include "worker/devices.h"
#include "worker/runner.h"
#include "worker/worker.h"

namespace minas::pipeline {
namespace {

std::string clock_text(double seconds) {
  char buf[32];
  const long s = static_cast<long>(seconds);
  std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// One line: on a terminal redrawn in place every second, otherwise a log
// line every 30 seconds.
class ProgressDisplay {
 public:
  ProgressDisplay(std::string who, const Log& log)
      : who_(std::move(who)), log_(log), tty_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressDisplay() { finish(); }
  void show(const ControllerProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (!tty_ && now - last_ < std::chrono::seconds(30)) return;
    last_ = now;
    char best[32] = "-";
    if (p.best_val_acc >= 0) std::snprintf(best, sizeof best, "%.2f%%", 100 * p.best_val_acc);
    std::string line =
        (p.screen > 0
             ? "screened " + std::to_string(p.screened) + " of " + std::to_string(p.screen) + " | "
             : std::string()) +
        "trials " + std::to_string(p.done) + " done, " + std::to_string(p.running) + " running, " +
        std::to_string(p.pruned) + " pruned, " + std::to_string(p.failed) + " failed | best " +
        best + (p.best_arch.empty() ? "" : " " + p.best_arch) + " | " + clock_text(p.elapsed_s) +
        (p.budget_s > 0 ? " of " + clock_text(p.budget_s) : "") + " | busy " +
        std::to_string(p.slots_busy) + "/" + std::to_string(p.slots);
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      drawn_ = true;
    } else {
      log_.line(who_, line);
    }
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string who_;
  const Log& log_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// The ipc folder of this process's local searches: no port to pick or guard.
// Removed with what is in it when the search ends.
struct PrivateFolder {
  std::filesystem::path dir;
  PrivateFolder()
      : dir(std::filesystem::temp_directory_path() /
            ("minas-search-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(dir);
  }
  ~PrivateFolder() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
};

// The pool's workers: `workers` alike, or one with the pool's devices.
std::vector<std::unique_ptr<Worker>> make_workers(const LocalPool& p, const std::string& endpoint,
                                                  const Log& log) {
  auto runner = std::shared_ptr<TrialRunner>(make_cpu_runner());
  std::vector<std::unique_ptr<Worker>> pool;
  const int threads = std::max(1, p.threads), per_trial = std::max(1, p.per_trial);
  for (int i = 0; i < (p.devices.empty() ? std::max(1, p.workers) : 1); ++i) {
    WorkerOptions w;
    w.connect = endpoint;
    w.name = "local-" + std::to_string(i);
    w.runner = runner;
    std::string devices;
    for (int k = 0; k < per_trial; ++k) devices += (k ? ",cpu:" : "cpu:") + std::to_string(threads);
    w.slots = parse_devices(p.devices.empty() ? devices : p.devices);
    w.log = [name = w.name, &log](const std::string& l) { log.line(name, l); };
    pool.push_back(std::make_unique<Worker>(w));
  }
  return pool;
}

std::string pool_text(const LocalPool& p, size_t workers) {
  const int threads = std::max(1, p.threads), per_trial = std::max(1, p.per_trial);
  return std::to_string(workers) + " local worker(s), " +
         (p.devices.empty() ? std::to_string(per_trial) + " slot(s) of " + std::to_string(threads) +
                                  " thread(s) each"
                            : "slots " + p.devices);
}

// The controller's run with the workers on threads beside it; the workers
// are stopped and joined however the run ends.
ControllerSummary run_with_workers(Controller& controller,
                                   std::vector<std::unique_ptr<Worker>>& pool) {
  std::vector<std::thread> threads;
  for (auto& w : pool) threads.emplace_back([&w] { w->run(); });
  auto stop_workers = [&] {
    for (auto& w : pool) w->request_stop();
    for (auto& t : threads) t.join();
  };
  ControllerSummary s;
  {
    StopTarget target(&controller);
    install_stop_signals();
    try {
      s = controller.run();
    } catch (...) {
      stop_workers();
      throw;
    }
  }
  // The search is over: local workers have no one else to work for, even
  // if a goodbye was lost.
  stop_workers();
  return s;
}

}  // namespace

ControllerSummary run_local_search(db::Store& store, const Space& space, Strategy& strategy,
                                   const ExperimentConfig& cfg, const LocalPool& p,
                                   const Log& log) {
  const PrivateFolder folder;
  ControllerOptions opt;
  opt.bind = "ipc://" + (folder.dir / "controller.sock").string();
  ProgressDisplay display(p.who, log);
  opt.log = [&display, &log](const std::string& l) {
    display.finish();
    log.line("controller", l);
  };
  opt.on_progress = [&display](const ControllerProgress& pr) { display.show(pr); };
  Controller controller(store, space, strategy, cfg, opt);
  std::vector<std::unique_ptr<Worker>> pool = make_workers(p, controller.endpoint(), log);
  log.line(p.who, "experiment '" + cfg.name + "': " + pool_text(p, pool.size()));
  const ControllerSummary s = run_with_workers(controller, pool);
  display.finish();
  if (!s.error.empty())
    throw Error("experiment '" + cfg.name + "'",
                "the search stopped after " + std::to_string(s.done) + " trial(s): " + s.error);
  return s;
}

}  // namespace minas::pipeline
