// Worker pools in the loop: an experiment trains only on its training pool,
// and with a latency pool every architecture is measured there (for real, on
// a CPU worker) before a worker of the training pool trains it; a pool that
// cannot measure fails its trials with the reason.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller.h"
#include "db/queries.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

namespace {

std::shared_ptr<TrialRunner> sim() {
  return std::shared_ptr<TrialRunner>(make_sim_runner(nb201_table(), "cifar10_valid_12ep", 0.001));
}

struct PoolWorker {
  std::string name, pool;
  int slots;
  std::shared_ptr<TrialRunner> runner;
};

ControllerSummary run_pools(Search& search, const ExperimentConfig& cfg,
                            const std::vector<PoolWorker>& pool) {
  return run_workers(search, cfg, [&](const std::string& endpoint) {
    std::vector<WorkerOptions> out;
    for (const auto& p : pool) {
      out.push_back(worker_options(endpoint, p.name, p.runner, p.slots));
      out.back().pool = p.pool;
      out.back().tags = {{"site", "test"}};
    }
    return out;
  });
}

// Trials per worker name, of every status.
std::map<std::string, int64_t> trials_by_worker(const std::string& path) {
  db::Connection c = db::open_store_readonly(path);
  db::Statement s = c.prepare(
      "SELECT coalesce(w.name, '-'), count(*) FROM trials t LEFT JOIN workers w ON w.id = "
      "t.worker_id GROUP BY 1");
  std::map<std::string, int64_t> n;
  while (s.step()) n[s.column_text(0)] = s.column_int64(1);
  return n;
}

}  // namespace

TEST_CASE("pools: only the experiment's training pool trains") {
  if (!have_external(nb201_table())) return;
  Search search("pool-train", "pool-train", 3);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 30;
  cfg.train_pool = "gpu";
  const ControllerSummary s = run_pools(
      search, cfg, {{"fast", "gpu", 2, sim()}, {"slow", "cpu", 2, sim()}, {"any", "", 1, sim()}});
  CHECK(s.done == 30);
  const auto n = trials_by_worker(search.path);
  CHECK(n.at("fast") == 30);
  CHECK(n.count("slow") == 0);
  CHECK(n.count("any") == 0);
}

TEST_CASE("pools: a latency pool measures every architecture before another pool trains it") {
  if (!have_external(nb201_table())) return;
  Search search("pool-latency", "pool-latency", 4);
  // A small network of the same cells (the table's keys), so that measuring
  // it for real on one CPU thread takes milliseconds.
  search.space = Space::load("nb201:cells=1,channels=8,input=1x28x28");
  search.remake();
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 8;
  cfg.latency_pool = "edge";
  const std::shared_ptr<TrialRunner> cpu(make_cpu_runner());
  const ControllerSummary s =
      run_pools(search, cfg, {{"trainer", "default", 2, sim()}, {"phone", "edge", 1, cpu}});
  CHECK(s.done == 8);
  CHECK(s.failed == 0);
  // Every trial trained by the training pool, with the latency, params and
  // MACs the latency pool measured (the simulated trainer reports none).
  const auto n = trials_by_worker(search.path);
  CHECK(n.at("trainer") == 8);
  CHECK(n.count("phone") == 0);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q = c.prepare("SELECT arch_key, latency_ms, params, macs FROM trials");
  int rows = 0;
  while (q.step()) {
    ++rows;
    CHECK(q.column_double(1) > 0);
    const LayerGraph g = search.space.lower(search.space.parse_key(q.column_text(0)));
    CHECK(q.column_int64(2) == g.params());
    CHECK(q.column_int64(3) == g.macs());
  }
  CHECK(rows == 8);
  // The workers registered with their pools and tags (the device type added).
  db::Statement w = c.prepare("SELECT pool, tags FROM workers WHERE name = 'phone'");
  REQUIRE(w.step());
  CHECK(w.column_text(0) == "edge");
  CHECK(nlohmann::json::parse(w.column_text(1)) ==
        nlohmann::json::parse(R"({"site":"test","device":"cpu"})"));
}

TEST_CASE("pools: a latency pool that cannot measure fails the trials, saying why") {
  if (!have_external(nb201_table())) return;
  Search search("pool-nolatency", "pool-nolatency", 5);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 4;
  cfg.latency_pool = "edge";
  const ControllerSummary s =
      run_pools(search, cfg, {{"trainer", "default", 1, sim()}, {"pretend", "edge", 1, sim()}});
  CHECK(s.done == 0);
  CHECK(s.failed == 4);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q = c.prepare("SELECT DISTINCT error FROM trials");
  REQUIRE(q.step());
  CHECK(contains(q.column_text(0), "latency measurement: a simulated worker has no latency"));
  CHECK_FALSE(q.step());
}
