// `minas bench dashboard`: every endpoint of the dashboard over HTTP, on a
// store of --trials trials, while a writer keeps adding results.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/bench_results.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "dashboard/server.h"
#include "db/store.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct DashboardBenchFlags {
  int64_t trials = 100000;
  double seconds = 20;
  int clients = 2;
  double write_rate = 200;  // results per second while the clients ask
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

void run(const DashboardBenchFlags& f) {
  if (f.trials < 1 || !(f.seconds > 0) || f.clients < 1 || f.clients > 64 || f.write_rate < 0)
    throw Error("bench dashboard",
                "need --trials >= 1, --seconds > 0, 1 <= --clients <= 64, --write-rate >= 0");
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("minas-bench-dashboard-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "bench.db").string();
  db::Store store = db::Store::open(path);
  SimulatedResults sim(store, "bench", 5, 1);
  sim.write_internals(true);
  db::Writer writer(store);
  const auto fill0 = Clock::now();
  sim.record(writer, f.trials, 256);
  std::fprintf(stderr, "bench dashboard: %lld trials recorded in %.1f s\n",
               static_cast<long long>(f.trials),
               std::chrono::duration<double>(Clock::now() - fill0).count());

  dashboard::ServerOptions o;
  o.db = path;
  o.port = 0;
  dashboard::Server server(o);
  std::thread serving([&] { server.run(); });

  // The writer: results at --write-rate, committed every 50 ms, as a
  // controller's group commit does.
  std::atomic<bool> done{false};
  std::thread writing([&] {
    const auto start = Clock::now();
    while (!done) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const int64_t due =
          static_cast<int64_t>(elapsed * f.write_rate) - (sim.recorded() - f.trials);
      if (due > 0) sim.record(writer, due, due);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  // What a page asks: each endpoint with the parameters a user's clicks give.
  const std::string e = "experiment=bench";
  const std::vector<std::pair<std::string, std::string>> endpoints = {
      {"experiments", "/api/experiments"},
      {"overview", "/api/experiment?" + e},
      {"trials by number", "/api/trials?" + e + "&limit=100"},
      {"trials by val_acc", "/api/trials?" + e + "&sort=val_acc&limit=100"},
      {"trials page 50", "/api/trials?" + e + "&after=5000&limit=100"},
      {"trials running", "/api/trials?" + e + "&status=running&limit=100"},
      {"trial", "/api/trial?" + e + "&number="},
      {"changes", "/api/changes?" + e + "&since="},
      {"pareto latency", "/api/pareto?" + e + "&x=latency_ms"},
      {"pareto params", "/api/pareto?" + e + "&x=params"},
      {"failures", "/api/failures?" + e},
      {"workers", "/api/workers?" + e},
      {"pool", "/api/pool?" + e},
      {"internals", "/api/internals?" + e},
  };
  std::mutex mu;
  std::map<std::string, std::vector<double>> ms;
  std::atomic<int64_t> errors{0};
  std::vector<std::thread> clients;
  const auto until = Clock::now() + std::chrono::duration<double>(f.seconds);
  for (int c = 0; c < f.clients; ++c)
    clients.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", server.port());
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      Rng rng(static_cast<uint64_t>(c) + 7);
      int64_t seq = 0;
      for (size_t k = static_cast<size_t>(c); Clock::now() < until; ++k) {
        const auto& [name, base] = endpoints[k % endpoints.size()];
        std::string url = base;
        if (name == "trial") url += std::to_string(rng.below(static_cast<uint64_t>(f.trials)));
        if (name == "changes") url += std::to_string(seq);
        const auto t0 = Clock::now();
        const auto r = client.Get(url);
        const double took = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!r || r->status != 200) {
          ++errors;
          continue;
        }
        if (name == "overview") {
          // An answer that is not JSON counts as an error, not an end of the thread.
          try {
            seq = read_json(r->body, url).value("seq", int64_t{0});
          } catch (const std::exception&) {
            ++errors;
            continue;
          }
        }
        std::lock_guard lock(mu);
        ms[name].push_back(took);
      }
    });
  for (auto& t : clients) t.join();
  done = true;
  writing.join();
  server.stop();
  serving.join();

  double worst = 0;
  size_t requests = 0;
  std::printf("%-20s %8s %8s %8s %8s\n", "endpoint", "requests", "p50_ms", "p95_ms", "max_ms");
  for (const auto& [name, base] : endpoints) {
    const auto& v = ms[name];
    requests += v.size();
    const double p95 = percentile(v, 0.95);
    worst = std::max(worst, p95);
    std::printf("%-20s %8zu %8.2f %8.2f %8.2f\n", name.c_str(), v.size(), percentile(v, 0.5), p95,
                v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()));
  }
  std::printf("trials=%lld written_during=%lld clients=%d seconds=%.0f requests=%zu errors=%lld\n",
              static_cast<long long>(f.trials), static_cast<long long>(sim.recorded() - f.trials),
              f.clients, f.seconds, requests, static_cast<long long>(errors.load()));
  std::printf("p95_ms=%.2f\n", worst);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace

void add_dashboard_benchmark(CLI::App& bench) {
  auto f = std::make_shared<DashboardBenchFlags>();
  CLI::App* c = bench.add_subcommand(
      "dashboard",
      "Every dashboard endpoint over HTTP on a store of --trials trials while a writer adds "
      "results; p50/p95 per endpoint, the worst p95 last (p95_ms=X)");
  c->add_option("--trials", f->trials, "Trials in the store")
      ->default_val(100000)
      ->check(in_range<int64_t>(1, 1'000'000'000));
  c->add_option("--seconds", f->seconds, "How long the clients ask")
      ->default_val(20)
      ->check(above(0.0, 86400.0));
  c->add_option("--clients", f->clients, "Concurrent clients")
      ->default_val(2)
      ->check(in_range(1, 64));
  c->add_option("--write-rate", f->write_rate, "Results per second written meanwhile")
      ->default_val(200)
      ->check(in_range(0.0, 1e6));
  c->callback([f] { run(*f); });
}

}  // namespace minas::cli
