// Trials spread over several workers (gangs): when a trial needs more slots
// than any worker has, the controller gangs slots of several workers, rank
// 0's worker opens the group's hub and the controller hands its address to
// the others. Real CPU training over the socket communicator ends with the
// very weights a single two-slot worker's in-process group gives (the same
// validation accuracy to the bit); a worker of a gang that leaves mid-trial
// ends the attempt on every worker, and the trial is trained again.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controller/controller.h"
#include "db/queries.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/data.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

namespace {

struct GangWorker {
  std::string name;
  int slots;
  std::shared_ptr<TrialRunner> runner;
};

// Runs the search with the workers, each reachable by its gang's other ranks on loopback.
ControllerSummary run_gang(Search& search, const ExperimentConfig& cfg,
                           const std::vector<GangWorker>& pool) {
  return run_workers(search, cfg, [&](const std::string& endpoint) {
    std::vector<WorkerOptions> out;
    for (const auto& p : pool) {
      out.push_back(worker_options(endpoint, p.name, p.runner, p.slots));
      out.back().advertise = "127.0.0.1";
    }
    return out;
  });
}

// trial number -> (val_acc, device)
std::map<int64_t, std::pair<double, std::string>> results(const std::string& path) {
  db::Connection c = db::open_store_readonly(path);
  db::Statement s = c.prepare("SELECT number, val_acc, device FROM trials WHERE status = 'done'");
  std::map<int64_t, std::pair<double, std::string>> out;
  while (s.step()) out[s.column_int64(0)] = {s.column_double(1), s.column_text(2)};
  return out;
}

}  // namespace

TEST_CASE(
    "gang: two one-slot workers train a two-slot trial over sockets to the bits of one "
    "two-slot worker") {
  TempDir data_dir("gang-data");
  const std::string data = data_dir.file("synthetic");
  write_idx_folder(data, 300, 11);
  auto config = [&](Search& search) {
    search.space = Space::load("mobile:input=1x12x12,stem.channels=8,head.channels=16");
    search.remake();
    ExperimentConfig cfg = search.config();
    cfg.data = data;
    cfg.data_fingerprint = data::load_dataset(data).train.fingerprint();
    cfg.recipe = {{"epochs", 1}, {"val_size", 40}, {"batch", 16}, {"threads", 1}};
    cfg.gpus_per_trial = 2;
    cfg.budget_trials = 3;
    return cfg;
  };
  const std::shared_ptr<TrialRunner> cpu(make_cpu_runner());
  // The same search twice: ranks on two workers over sockets, then on one
  // worker's two slots in one process.
  Search spread("gang-spread", "gang", 21);
  const ControllerSummary s1 = run_gang(spread, config(spread), {{"a", 1, cpu}, {"b", 1, cpu}});
  Search together("gang-together", "gang", 21);
  const ControllerSummary s2 = run_gang(together, config(together), {{"ab", 2, cpu}});
  CHECK(s1.done == 3);
  CHECK(s2.done == 3);
  const auto r1 = results(spread.path), r2 = results(together.path);
  REQUIRE(r1.size() == 3);
  REQUIRE(r2.size() == 3);
  for (const auto& [number, r] : r1) {
    CAPTURE(number);
    // Rank 0 on one worker, rank 1 on the other: the device names both.
    CHECK(contains(r.second, "a:cpu"));
    CHECK(contains(r.second, "b:cpu"));
    CHECK(r2.at(number).second == "cpu,cpu.1");
    CHECK(r.first == r2.at(number).first);  // the same training, to the bit
  }
}

TEST_CASE("gang: a worker of a gang that leaves mid-trial ends the attempt, which runs again") {
  if (!have_external(nb201_table())) return;
  Search search("gang-lost", "gang-lost", 8);
  ExperimentConfig cfg = search.config();
  cfg.gpus_per_trial = 2;
  cfg.budget_trials = 4;
  Controller controller(search.store, search.space, *search.strategy, cfg, Search::options());
  const auto sim = std::shared_ptr<TrialRunner>(
      make_sim_runner(nb201_table(), "cifar10_valid_12ep", 1.0));  // a second a trial
  // b's attempts are watched: it leaves once it runs its part of the first trial.
  const auto b_runner = std::make_shared<WatchedRunner>(sim);
  auto options = [&](const std::string& name) {
    WorkerOptions o = worker_options(controller.endpoint(), name, name == "b" ? b_runner : sim, 1);
    o.advertise = "127.0.0.1";
    return o;
  };
  Worker a(options("a")), b(options("b")), c(options("c"));
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); });
  std::thread tc;
  bool b_started = false;
  std::thread watcher([&] {
    // Once b runs its part of the first trial, it leaves (SIGTERM: bye), and c joins.
    b_started = b_runner->await_started(1);
    b.request_stop();
    tc = std::thread([&] { c.run(); });
  });
  const ControllerSummary s = controller.run();
  watcher.join();
  for (Worker* w : {&a, &b, &c}) w->request_stop();
  ta.join();
  tb.join();
  if (tc.joinable()) tc.join();
  REQUIRE_MESSAGE(b_started, "waited " << kHangGuard.count() << " s for worker b to run its part");
  CHECK(s.done == 4);
  CHECK(s.failed == 0);
  db::Connection conn = db::open_store_readonly(search.path);
  // The interrupted trial ran again on a and c; none was trained alone.
  db::Statement again = conn.prepare(
      "SELECT count(*) FROM trials WHERE attempt >= 1 AND device LIKE '%a:%' AND device LIKE "
      "'%c:%'");
  REQUIRE(again.step());
  CHECK(again.column_int64(0) >= 1);
  db::Statement pairs =
      conn.prepare("SELECT count(*) FROM trials WHERE status = 'done' AND device LIKE '%,%'");
  REQUIRE(pairs.step());
  CHECK(pairs.column_int64(0) == 4);
  // No result counted twice: the members' reports are not results. A late result can come
  // only from the ended attempt, where rank 0 finished before the end reached it (a busy
  // machine), never from the attempt that counted.
  db::Statement late = conn.prepare(
      "SELECT l.trial_id, l.attempt, t.attempt, w.name FROM late_results l "
      "JOIN trials t ON t.id = l.trial_id LEFT JOIN workers w ON w.id = l.worker_id");
  while (late.step()) {
    INFO("late result of trial " << late.column_int64(0) << " attempt " << late.column_int64(1)
                                 << " (its last attempt " << late.column_int64(2)
                                 << ") from worker " << late.column_text(3));
    CHECK(late.column_int64(1) < late.column_int64(2));
    MESSAGE("a late result from an ended attempt");
  }
}
