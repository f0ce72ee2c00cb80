#include "cli/local_search.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include <unistd.h>

#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "worker/devices.h"
#include "worker/runner.h"
#include "worker/worker.h"

namespace minas::cli {
namespace {

// The running controller or worker, for the signal handler: request_stop is
// a lock-free atomic store, safe in a handler.
std::atomic<Controller*> g_controller{nullptr};
std::atomic<Worker*> g_worker{nullptr};
std::atomic<bool> g_stop_requested{false};  // SIGINT or SIGTERM, not the budget

extern "C" void on_signal(int) {
  g_stop_requested.store(true);
  if (Controller* c = g_controller.load()) c->request_stop();
  if (Worker* w = g_worker.load()) w->request_stop();
}

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
  explicit ProgressDisplay(std::string who)
      : who_(std::move(who)), tty_(::isatty(STDERR_FILENO) == 1) {}
  ~ProgressDisplay() { finish(); }
  void show(const ControllerProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (!tty_ && now - last_ < std::chrono::seconds(30)) return;
    last_ = now;
    char best[32] = "-";
    if (p.best_val_acc >= 0) std::snprintf(best, sizeof best, "%.2f%%", 100 * p.best_val_acc);
    std::string line =
        "trials " + std::to_string(p.done) + " done, " + std::to_string(p.running) + " running, " +
        std::to_string(p.pruned) + " pruned, " + std::to_string(p.failed) + " failed | best " +
        best + (p.best_arch.empty() ? "" : " " + p.best_arch) + " | " + clock_text(p.elapsed_s) +
        (p.budget_s > 0 ? " of " + clock_text(p.budget_s) : "") + " | busy " +
        std::to_string(p.slots_busy) + "/" + std::to_string(p.slots);
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      drawn_ = true;
    } else {
      log_line(who_, line);
    }
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string who_;
  bool tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace

double parse_duration(const std::string& text, const std::string& flag) {
  double total = 0;
  size_t at = 0;
  bool any = false;
  while (at < text.size()) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(text.substr(at), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    const std::string where = flag + " " + printable_excerpt(text, 40);
    if (used == 0 || !(v >= 0) || !std::isfinite(v))
      throw Error(where, "a duration is a number with s, m or h: 90s, 45m, 1h30m");
    at += used;
    double unit = 1;
    if (at < text.size()) {
      const char u = text[at];
      if (u == 's' || u == 'm' || u == 'h') {
        unit = u == 'h' ? 3600 : u == 'm' ? 60 : 1;
        ++at;
      } else {
        throw Error(where,
                    "unknown unit '" + printable_excerpt(std::string(1, u)) + "' (s, m or h)");
      }
    }
    total += v * unit;
    any = true;
  }
  // A billion seconds (some 30 years) is beyond any budget, and keeps sums finite.
  if (!any || !(total > 0) || !(total <= 1e9))
    throw Error(flag + " " + printable_excerpt(text, 40),
                "must be a positive duration of at most 1e9 s");
  return total;
}

std::string printable_text(const std::string& text, size_t max_line, bool keep_newlines) {
  std::string out;
  size_t column = 0;  // characters written on the current line
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\n' && keep_newlines) {
      out += '\n';
      column = 0;
      continue;
    }
    if (column >= max_line) {
      if (column == max_line) out += "...";
      ++column;
      continue;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
    ++column;
  }
  return out;
}

void log_line(const std::string& who, const std::string& line) {
  // Longer than any line minas writes; a line this long quotes something whole.
  constexpr size_t kMaxLogLine = 4000;
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&t));
  std::fprintf(stderr, "%s %s: %s\n", stamp, printable_text(who, 200, false).c_str(),
               printable_text(line, kMaxLogLine, false).c_str());
}

std::string shell_word(const std::string& w) {
  const bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./:=,+%@", c);
  });
  if (plain) return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string reproduce_line(const CLI::App& cmd, const std::string& program,
                           const std::vector<std::string>& skip, uint64_t seed,
                           const std::string& budget) {
  std::string line = program;
  bool has_seed = false, has_budget = false;
  for (const CLI::Option* o : cmd.get_options()) {
    const std::string name = o->get_single_name();
    if (o->count() == 0 || name == "help" ||
        std::find(skip.begin(), skip.end(), name) != skip.end())
      continue;
    has_seed |= name == "seed";
    has_budget |= name == "budget";
    if (o->get_type_size_max() == 0 || o->get_expected_max() == 0) {
      if (o->as<bool>()) line += " --" + name;
      continue;
    }
    for (const std::string& v : o->results()) line += " --" + name + " " + shell_word(v);
  }
  if (!has_seed) line += " --seed " + std::to_string(seed);
  if (!has_budget) line += " --budget " + shell_word(budget);
  return line;
}

std::string default_experiment_name(const std::string& prefix) {
  char name[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(name, sizeof name, "-%Y%m%d-%H%M%S", std::localtime(&t));
  return prefix + name;
}

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_stop_requested.load();
}

StopTarget::StopTarget(Controller* c) {
  g_controller = c;
}
StopTarget::StopTarget(Worker* w) {
  g_worker = w;
}
StopTarget::~StopTarget() {
  g_controller = nullptr;
  g_worker = nullptr;
}

ControllerSummary run_local_search(db::Store& store, const Space& space, Strategy& strategy,
                                   const ExperimentConfig& cfg, const LocalPool& p) {
  // The local pool talks over an ipc socket in a private folder: no port to
  // pick or guard.
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("minas-search-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  struct RemoveDir {
    std::filesystem::path dir;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } remove_dir{dir};
  ControllerOptions opt;
  opt.bind = "ipc://" + (dir / "controller.sock").string();
  ProgressDisplay display(p.who);
  opt.log = [&display](const std::string& l) {
    display.finish();
    log_line("controller", l);
  };
  opt.on_progress = [&display](const ControllerProgress& pr) { display.show(pr); };
  Controller controller(store, space, strategy, cfg, opt);
  auto runner = std::shared_ptr<TrialRunner>(make_cpu_runner());
  std::vector<std::unique_ptr<Worker>> pool;
  const int threads = std::max(1, p.threads), per_trial = std::max(1, p.per_trial);
  for (int i = 0; i < (p.devices.empty() ? std::max(1, p.workers) : 1); ++i) {
    WorkerOptions w;
    w.connect = controller.endpoint();
    w.name = "local-" + std::to_string(i);
    w.runner = runner;
    std::string devices;
    for (int k = 0; k < per_trial; ++k) devices += (k ? ",cpu:" : "cpu:") + std::to_string(threads);
    w.slots = parse_devices(p.devices.empty() ? devices : p.devices);
    w.log = [name = w.name](const std::string& l) { log_line(name, l); };
    pool.push_back(std::make_unique<Worker>(w));
  }
  log_line(p.who, "experiment '" + cfg.name + "': " + std::to_string(pool.size()) +
                      " local worker(s), " +
                      (p.devices.empty() ? std::to_string(per_trial) + " slot(s) of " +
                                               std::to_string(threads) + " thread(s) each"
                                         : "slots " + p.devices));
  std::vector<std::thread> threads_of_pool;
  for (auto& w : pool) threads_of_pool.emplace_back([&w] { w->run(); });
  ControllerSummary s;
  {
    StopTarget target(&controller);
    install_stop_signals();
    try {
      s = controller.run();
    } catch (...) {
      for (auto& w : pool) w->request_stop();
      for (auto& t : threads_of_pool) t.join();
      throw;
    }
  }
  // The search is over: local workers have no one else to work for, even
  // if a goodbye was lost.
  for (auto& w : pool) w->request_stop();
  for (auto& t : threads_of_pool) t.join();
  display.finish();
  if (!s.error.empty())
    throw Error("experiment '" + cfg.name + "'",
                "the search stopped after " + std::to_string(s.done) + " trial(s): " + s.error);
  return s;
}

}  // namespace minas::cli
