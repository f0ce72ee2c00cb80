// Weight inheritance in the loop: an evolution search on two real CPU
// workers, where every child trains from its parent's final weights, the
// store keeps the lineage of weights, and the controller keeps parents'
// states only while a child may inherit them.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "controller/controller.h"
#include "db/queries.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

namespace {

// Files (states) in a folder; 0 when it is not there.
int files_in(const std::filesystem::path& dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

}  // namespace

TEST_CASE(
    "inherit in the loop: evolution children on two workers train from their parents' "
    "weights, and the store keeps the lineage") {
  const TempDir dir("inherit-loop");
  const std::string data = dir.file("digits");
  write_idx_folder(data, 300, 4);  // 12x12 random images: the mechanics, not the accuracy
  const std::string path = dir.file("minas.db");
  const Space space = Space::load("small:input=1x12x12");
  db::Store store = db::Store::open(path);
  StrategySettings settings;
  settings.name = "evolution";
  settings.seed = 3;
  settings.population = 4;
  settings.tournament = 2;
  auto strategy = make_strategy(space, settings);
  ExperimentConfig cfg;
  cfg.name = "inherit";
  cfg.data = data;
  cfg.recipe = {{"epochs", 1}, {"val_size", 60}, {"batch", 32}, {"threads", 1}};
  cfg.fidelity = 2;
  cfg.budget_trials = 12;
  cfg.seed = settings.seed;
  cfg.strategy_settings = settings.to_json();
  cfg.inherit = true;

  Controller controller(store, space, *strategy, cfg, Search::options());
  // The parents' states on disk, counted as each attempt starts: the population's
  // (4) and the parents of the children in flight (2 slots) at most.
  const std::filesystem::path parents = path + ".parents/1";
  std::atomic<int> most{0};
  auto runner =
      std::make_shared<WatchedRunner>(std::shared_ptr<TrialRunner>(make_cpu_runner()), [&](int) {
        const int n = files_in(parents);
        int m = most.load();
        while (n > m && !most.compare_exchange_weak(m, n)) {
        }
      });
  Worker a(worker_options(controller.endpoint(), "a", runner, 1));
  Worker b(worker_options(controller.endpoint(), "b", runner, 1));
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); });
  const ControllerSummary s = controller.run();
  a.request_stop();
  b.request_stop();
  ta.join();
  tb.join();
  CHECK(s.done == 12);
  CHECK(most.load() >= 1);  // states were kept while the search ran
  CHECK(most.load() <= 4 + 2);
  CHECK_FALSE(std::filesystem::exists(path + ".parents"));  // and removed at its end

  db::Connection c = db::open_store_readonly(path);
  // Every child (all but the 4 random members of the first population) inherited from its own
  // parent's final epoch; the random ones inherited nothing.
  db::Statement q = c.prepare(
      "SELECT t.id, t.parent_id, t.params, w.parent_trial_id, w.parent_epoch, w.tensors, "
      "w.params FROM trials t LEFT JOIN weight_inheritance w ON w.trial_id = t.id "
      "WHERE t.status = 'done' ORDER BY t.number");
  int children = 0, roots = 0;
  while (q.step()) {
    CAPTURE(q.column_int64(0));
    if (q.is_null(1)) {
      ++roots;
      CHECK(q.is_null(3));
      continue;
    }
    ++children;
    REQUIRE_FALSE(q.is_null(3));
    CHECK(q.column_int64(3) == q.column_int64(1));
    CHECK(q.column_int64(4) == 2);  // the parent's state after its last epoch
    CHECK(q.column_int64(5) > 0);
    CHECK(q.column_int64(6) > 0);
    CHECK(q.column_int64(6) <= q.column_int64(2));  // never more than the child has
  }
  CHECK(roots == 4);
  CHECK(children == 8);
  // A child that changed one decision keeps most of its parent's parameters, on average.
  db::Statement share = c.prepare(
      "SELECT avg(1.0 * w.params / t.params) FROM weight_inheritance w JOIN trials t ON "
      "t.id = w.trial_id");
  REQUIRE(share.step());
  CHECK(share.column_double(0) > 0.2);
}

TEST_CASE(
    "inherit in the loop: a strategy without parents, or trials without a fixed epoch "
    "count, are refused before anything runs") {
  const TempDir dir("inherit-refused");
  const Space space = Space::load("small:input=1x12x12");
  db::Store store = db::Store::open(dir.file("minas.db"));
  StrategySettings settings;
  settings.name = "random";
  auto strategy = make_strategy(space, settings);
  ExperimentConfig cfg;
  cfg.name = "x";
  cfg.fidelity = 1;
  cfg.inherit = true;
  auto open = [&] { Controller controller(store, space, *strategy, cfg, Search::options()); };
  CHECK(contains(error_of(open).what(), "(evolution), not 'random'"));
  settings.name = "evolution";
  strategy = make_strategy(space, settings);
  cfg.fidelity = 0;
  cfg.recipe = {{"epochs", 0}, {"time_budget_s", 30}};
  CHECK(contains(error_of(open).what(), "fixed number of epochs"));
  db::Connection c = db::open_store_readonly(dir.file("minas.db"));
  db::Statement q = c.prepare("SELECT count(*) FROM experiments");
  REQUIRE(q.step());
  CHECK(q.column_int64(0) == 0);  // refused before the experiment was made
}

TEST_CASE("inherit in the loop: stopped and resumed, every child still inherits from its parent") {
  const TempDir dir("inherit-resume");
  const std::string data = dir.file("digits");
  write_idx_folder(data, 300, 4);
  const std::string path = dir.file("minas.db");
  const Space space = Space::load("small:input=1x12x12");
  db::Store store = db::Store::open(path);
  StrategySettings settings;
  settings.name = "evolution";
  settings.seed = 5;
  settings.population = 3;
  settings.tournament = 2;
  ExperimentConfig cfg;
  cfg.name = "inherit";
  cfg.data = data;
  cfg.recipe = {{"epochs", 1}, {"val_size", 60}, {"batch", 32}, {"threads", 1}};
  cfg.fidelity = 1;
  cfg.budget_trials = 9;
  cfg.seed = settings.seed;
  cfg.strategy_settings = settings.to_json();
  cfg.inherit = true;
  const auto cpu = std::shared_ptr<TrialRunner>(make_cpu_runner());
  {
    auto strategy = make_strategy(space, settings);
    Controller controller(store, space, *strategy, cfg, Search::options());
    // Stopped as the 6th attempt (a child: the first 3 are the random population) starts.
    auto stopper = std::make_shared<WatchedRunner>(cpu, [&](int started) {
      if (started == 6) controller.request_stop();
    });
    Worker w(worker_options(controller.endpoint(), "w", stopper, 1));
    std::thread tw([&] { w.run(); });
    const ControllerSummary s = controller.run();
    tw.join();
    CHECK(s.stopped);
    CHECK(s.done < 9);
  }
  // Stopped, not finished: the parents' states stay for the resume.
  CHECK(files_in(path + ".parents/1") >= 1);
  // A new process: a fresh strategy restored from the store, the states from their folder.
  auto strategy = make_strategy(space, settings);
  Controller controller(store, space, *strategy, cfg, Search::options());
  Worker w(worker_options(controller.endpoint(), "w", cpu, 1));
  std::thread tw([&] { w.run(); });
  const ControllerSummary s = controller.run();
  w.request_stop();
  tw.join();
  CHECK(s.resumed);
  CHECK_FALSE(std::filesystem::exists(path + ".parents"));
  db::Connection c = db::open_store_readonly(path);
  db::Statement q = c.prepare(
      "SELECT count(*), sum(t.status = 'done'), count(w.trial_id), "
      "sum(w.parent_trial_id = t.parent_id) FROM trials t LEFT JOIN weight_inheritance w ON "
      "w.trial_id = t.id WHERE t.parent_id IS NOT NULL");
  REQUIRE(q.step());
  CHECK(q.column_int64(0) == 6);  // 9 trials, 3 of them the first population
  CHECK(q.column_int64(1) == 6);
  CHECK(q.column_int64(2) == 6);  // each child inherited, the one stopped mid-attempt too
  CHECK(q.column_int64(3) == 6);
}
