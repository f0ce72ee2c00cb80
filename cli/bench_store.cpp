// `minas bench store`: the experiment store under a controller's write load.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "cli/bench_results.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "db/queries.h"
#include "db/store.h"
#include "searchspace/error.h"
#include "searchspace/space.h"

namespace minas::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct StoreBenchFlags {
  int64_t results = 100000;
  int64_t batch = 256;
  int epochs = 5;
  std::string db;
  int repeats = 7;
};

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

template <class F>
double median_ms(int repeats, F&& f) {
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    ms.push_back(ms_since(t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void run(const StoreBenchFlags& f) {
  if (f.results < 1 || f.batch < 1 || f.epochs < 0 || f.repeats < 1)
    throw Error("bench store", "--results, --batch and --repeats must be >= 1, --epochs >= 0");
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("minas-bench-store-" + std::to_string(::getpid()));
  const std::string path = f.db.empty() ? (dir / "bench.db").string() : f.db;
  if (f.db.empty()) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  } else if (fs::exists(path)) {
    throw Error(path, "exists: bench store writes a new store (give a new path)");
  }

  db::Store store = db::Store::open(path);
  SimulatedResults sim(store, "bench", f.epochs, 1);
  const int64_t exp = sim.experiment();
  db::Writer writer(store);
  const auto t0 = Clock::now();
  const int64_t commits = sim.record(writer, f.results, f.batch);
  const double seconds = ms_since(t0) / 1e3;

  db::Connection reader = db::open_store_readonly(path);
  const double top_ms =
      median_ms(f.repeats, [&] { db::top_k(reader, exp, db::Metric::val_acc, 10, {}); });
  const double pareto_ms = median_ms(
      f.repeats, [&] { db::pareto(reader, exp, db::Metric::latency_ms, db::Metric::val_acc, {}); });
  std::printf(
      "results=%lld epochs_per_result=%d batch=%lld commits=%lld seconds=%.2f "
      "synchronous=FULL journal=WAL store=%s\n",
      static_cast<long long>(f.results), f.epochs, static_cast<long long>(f.batch),
      static_cast<long long>(commits), seconds, path.c_str());
  std::printf("results_per_s=%.0f top_ms=%.2f pareto_ms=%.2f\n",
              static_cast<double>(f.results) / seconds, top_ms, pareto_ms);
  if (f.db.empty()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
}

}  // namespace

void add_store_benchmarks(CLI::App& bench) {
  auto f = std::make_shared<StoreBenchFlags>();
  CLI::App* c = bench.add_subcommand(
      "store",
      "Record simulated trial results durably through the controller's write path, then "
      "time top-k and Pareto queries over them");
  c->add_option("--results", f->results, "Trial results to record")
      ->default_val(100000)
      ->check(in_range<int64_t>(1, 1'000'000'000));
  c->add_option("--batch", f->batch, "Results per commit (group commit)")
      ->default_val(256)
      ->check(in_range<int64_t>(1, 1'000'000));
  c->add_option("--epochs", f->epochs, "Per-epoch metric rows per result")
      ->default_val(5)
      ->check(in_range(0, 10000));
  c->add_option("--repeats", f->repeats, "Runs of each query; the median is reported")
      ->default_val(7)
      ->check(in_range(1, 10000));
  c->add_option("--db", f->db, "Store file to create (default: a temporary one, removed after)");
  c->callback([f] { run(*f); });
}

}  // namespace minas::cli
