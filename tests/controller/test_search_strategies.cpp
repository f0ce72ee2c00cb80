// Strategies driven by the controller over real sockets, with simulated
// workers answering from the NAS-Bench-201 table: lineage in the store, exact
// resume after a stop, ASHA's cancellations, constraints before training, and
// the store's Pareto query over a Pareto search.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "controller/controller.h"
#include "db/queries.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

namespace {

std::shared_ptr<TrialRunner> sim(double delay_s) {
  return std::shared_ptr<TrialRunner>(
      make_sim_runner(nb201_table(), "cifar10_valid_12ep", delay_s));
}

// Runs the controller with the given workers (name, slots) until it ends.
ControllerSummary run_search(Search& search, const ExperimentConfig& cfg,
                             const std::vector<std::pair<std::string, int>>& pool,
                             double delay_s = 0.001) {
  const auto runner = sim(delay_s);
  return run_workers(search, cfg, [&](const std::string& endpoint) {
    std::vector<WorkerOptions> out;
    for (const auto& [name, slots] : pool)
      out.push_back(worker_options(endpoint, name, runner, slots));
    return out;
  });
}

// The simulated runner with a training state of 1.3 MB, so that states
// travel in several checkpoint chunks each way; a resumed attempt whose state
// did not arrive intact fails.
// With `hold_after`, an attempt that has handed over its state after that epoch goes no
// further until it is cancelled (or a hang guard passes): a test can stop its worker then,
// however slow the machine, and the attempt is surely lost mid-trial.
class BigStateRunner final : public TrialRunner {
 public:
  explicit BigStateRunner(std::shared_ptr<TrialRunner> inner, int hold_after = 0)
      : inner_(std::move(inner)), hold_after_(hold_after) {}
  bool needs_data() const override { return false; }
  TrialOutcome run(const TrialRequest& req,
                   const std::function<void(int, const nlohmann::json&)>& on_epoch,
                   const std::function<bool()>& cancelled) override {
    TrialRequest r = req;
    if (req.on_checkpoint)
      r.on_checkpoint = [&req, &cancelled, this](int epoch, std::string bytes) {
        req.on_checkpoint(epoch, bytes + padding(epoch));
        if (epoch == hold_after_) eventually(cancelled, kHangGuard, std::chrono::milliseconds(1));
      };
    if (!req.resume.empty()) {
      const std::string pad = padding(req.resume_epoch);
      if (req.resume.size() < pad.size() ||
          req.resume.compare(req.resume.size() - pad.size(), pad.size(), pad) != 0) {
        TrialOutcome out;
        out.reason = "the state arrived damaged";
        return out;
      }
      r.resume = req.resume.substr(0, req.resume.size() - pad.size());
    }
    return inner_->run(r, on_epoch, cancelled);
  }

 private:
  static std::string padding(int epoch) {
    std::string p(1300000, '\0');
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<char>((i * 31 + epoch) & 0xff);
    return p;
  }
  std::shared_ptr<TrialRunner> inner_;
  int hold_after_;
};

std::vector<std::string> keys_in_order(const std::string& path) {
  db::Connection c = db::open_store_readonly(path);
  db::Statement s = c.prepare("SELECT arch_key FROM trials ORDER BY number");
  std::vector<std::string> keys;
  while (s.step()) keys.push_back(s.column_text(0));
  return keys;
}

}  // namespace

TEST_CASE("strategies in the loop: evolution records each child's parent and mutation") {
  if (!have_external(nb201_table())) return;
  Search search("evo-lineage", "lineage", 7, "evolution");
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 60;
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}, {"b", 1}});
  CHECK(s.done == 60);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q = c.prepare(
      "SELECT t.arch_key, t.mutation, p.arch_key, p.status FROM trials t "
      "JOIN trials p ON p.id = t.parent_id ORDER BY t.number");
  int children = 0;
  while (q.step()) {
    ++children;
    const Arch child = search.space.parse_key(q.column_text(0));
    const Arch parent = search.space.parse_key(q.column_text(2));
    size_t differ = 0, where = 0;
    for (size_t d = 0; d < child.choice.size(); ++d)
      if (child.choice[d] != parent.choice[d]) ++differ, where = d;
    CHECK(differ == 1);
    const std::string& decision = search.space.decisions()[where].name;
    CHECK(q.column_text(1).rfind(decision + ": ", 0) == 0);
    CHECK(q.column_text(3) == "done");  // only results become parents
  }
  CHECK(children == 50);  // all but the P = 10 random ones
  // The store's own lineage view agrees.
  const db::TrialDetail last = db::trial(c, db::find_experiment_id(c, "lineage"), 59);
  CHECK_FALSE(last.lineage.empty());

  // For the dashboard: the population after each batch of results (up to 60
  // rows, one per result at this size), never above P = 10, full at the end.
  db::Statement snaps = c.prepare("SELECT results, state FROM strategy_snapshots ORDER BY results");
  int64_t rows = 0, previous = 0;
  size_t size = 0;
  while (snaps.step()) {
    ++rows;
    CHECK(snaps.column_int64(0) > previous);
    previous = snaps.column_int64(0);
    size = nlohmann::json::parse(snaps.column_text(1))["population"].size();
    CHECK(size <= 10);
  }
  CHECK(rows >= 5);
  CHECK(previous == 60);
  CHECK(size == 10);
  // The pool: three slots on two workers, busy between 0 and 3, idle at the end.
  db::Statement pool = c.prepare(
      "SELECT count(*), max(slots), max(busy), min(busy >= 0 AND busy <= slots) FROM "
      "pool_samples");
  REQUIRE(pool.step());
  CHECK(pool.column_int64(0) >= 2);
  CHECK(pool.column_int64(1) == 3);
  CHECK(pool.column_int64(2) >= 1);
  CHECK(pool.column_int64(3) == 1);
  db::Statement end = c.prepare("SELECT busy, queued FROM pool_samples ORDER BY at DESC LIMIT 1");
  REQUIRE(end.step());
  CHECK(end.column_int64(0) == 0);
  CHECK(end.column_int64(1) == 0);
  // The run's budget, for the overview's "budget used".
  db::Statement budget = c.prepare(
      "SELECT budget_trials, budget_seconds IS NULL, run_started_at >= started_at FROM "
      "experiments");
  REQUIRE(budget.step());
  CHECK(budget.column_int64(0) == 60);
  CHECK(budget.column_int64(1) == 1);  // no wall-clock budget
  CHECK(budget.column_int64(2) == 1);
}

TEST_CASE(
    "strategies in the loop: reinforce's reward, baseline and entropy are kept as it learns") {
  if (!have_external(nb201_table())) return;
  Search search("rl-snapshots", "rl", 3, "reinforce");
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 40;
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}});
  CHECK(s.done == 40);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement snaps = c.prepare("SELECT results, state FROM strategy_snapshots ORDER BY results");
  int64_t rows = 0, updates = 0;
  while (snaps.step()) {
    ++rows;
    const auto j = nlohmann::json::parse(snaps.column_text(1));
    CHECK(j["updates"].get<int64_t>() >= updates);  // at least one per result
    updates = j["updates"].get<int64_t>();
    CHECK(j["entropy"].get<double>() > 0);
    CHECK(j["baseline"].is_number());
  }
  CHECK(rows >= 5);
  CHECK(updates >= 40);
}

TEST_CASE("strategies in the loop: stopped and resumed, the search makes the same decisions") {
  if (!have_external(nb201_table())) return;
  for (const std::string name : {"random", "evolution", "reinforce"}) {
    CAPTURE(name);
    // One worker with one slot: results and asks alternate, so the order of
    // events, and with it every decision, is the same in each run.
    Search straight("resume-straight-" + name, "exp", 21, name);
    ExperimentConfig cfg = straight.config();
    cfg.budget_trials = 36;
    run_search(straight, cfg, {{"w", 1}});
    const auto expected = keys_in_order(straight.path);
    REQUIRE(expected.size() == 36);

    Search split("resume-split-" + name, "exp", 21, name);
    {
      Controller controller(split.store, split.space, *split.strategy, cfg, Search::options());
      // Stopped part-way, with a trial in flight: as the 16th attempt starts, after 15 results.
      const auto stopper = std::make_shared<WatchedRunner>(sim(0.004), [&](int started) {
        if (started == 16) controller.request_stop();
      });
      Worker w(worker_options(controller.endpoint(), "w", stopper, 1));
      std::thread tw([&] { w.run(); });
      const ControllerSummary s = controller.run();
      tw.join();
      CHECK(s.stopped);
      CHECK(s.done >= 15);
      CHECK(s.done < 36);
    }
    // A new process: a fresh strategy object restored from the store.
    split.remake();
    const ControllerSummary s = run_search(split, cfg, {{"w", 1}});
    CHECK(s.resumed);
    CHECK(keys_in_order(split.path) == expected);
  }
}

TEST_CASE(
    "strategies in the loop: ASHA cancels trials below a rung's cut and records them pruned") {
  if (!have_external(nb201_table())) return;
  Search search("asha", "asha", 3, "evolution");
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 45;
  cfg.fidelity = 9;
  AshaSettings asha;
  asha.eta = 3;
  asha.rungs = {1, 3};
  cfg.asha = asha;
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}, {"b", 2}}, 0.05);
  CHECK(s.done + s.pruned == 45);
  CHECK(s.pruned >= 15);  // about 2/3 at the first rung, once it has results to compare
  CHECK(s.done >= 5);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q = c.prepare(
      "SELECT t.status, max(e.epoch), t.val_acc FROM trials t JOIN epochs e ON e.trial_id = t.id "
      "GROUP BY t.id");
  int pruned = 0;
  while (q.step()) {
    if (q.column_text(0) == "pruned") {
      ++pruned;
      CHECK(q.column_int64(1) < 9);  // stopped before the end: no epoch was wasted on it
      CHECK(q.is_null(2));           // and no result
    } else {
      CHECK(q.column_text(0) == "done");
      CHECK(q.column_int64(1) == 9);  // promoted trials trained on to the full budget
    }
  }
  CHECK(pruned == s.pruned);
  // The first ceil(eta) at each rung go on; after that only the top third.
  db::Statement first = c.prepare(
      "SELECT t.status FROM trials t JOIN epochs e ON e.trial_id = t.id AND e.epoch = 1 "
      "ORDER BY t.number LIMIT 3");
  while (first.step()) CHECK(first.column_text(0) != "queued");
}

TEST_CASE("strategies in the loop: ASHA prunes at rungs inside the first epoch") {
  if (!have_external(nb201_table())) return;
  Search search("asha-fraction", "asha-fraction", 3, "evolution");
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 30;
  cfg.fidelity = 3;
  AshaSettings asha;
  asha.eta = 3;
  asha.rungs = {0.25, 0.5};  // no whole rung: every cut is made inside an epoch
  cfg.asha = asha;
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}, {"b", 2}}, 0.05);
  CHECK(s.done + s.pruned == 30);
  CHECK(s.pruned >= 10);  // about 2/3 at the first rung once it has results to compare
  CHECK(s.done >= 3);
  db::Connection c = db::open_store_readonly(search.path);
  // Every trial was validated and judged at 0.25 epochs; pruned ones have no result.
  db::Statement q = c.prepare(
      "SELECT t.number, t.status, t.val_acc, "
      "(SELECT count(*) FROM sub_epochs p WHERE p.trial_id = t.id AND p.at = 0.25) "
      "FROM trials t ORDER BY t.number");
  int pruned = 0;
  while (q.step()) {
    CAPTURE(q.column_int64(0));
    CHECK(q.column_int64(3) == 1);
    if (q.column_text(1) == "pruned") {
      ++pruned;
      CHECK(q.is_null(2));
    } else {
      CHECK(q.column_text(1) == "done");
    }
  }
  CHECK(pruned == s.pruned);
  // A finished trial's learning curve holds the points inside its first epoch,
  // then its three epochs, in order.
  db::Statement done = c.prepare("SELECT number FROM trials WHERE status = 'done' LIMIT 1");
  REQUIRE(done.step());
  const auto d =
      db::find_trial(c, db::find_experiment_id(c, "asha-fraction"), done.column_int64(0));
  REQUIRE(d);
  std::vector<double> at;
  for (const db::EpochRow& e : d->curve) at.push_back(e.epochs());
  CHECK(at == std::vector<double>{0.25, 0.5, 1, 2, 3});
  CHECK(d->curve[0].epoch == 1);
  CHECK(d->curve[0].at == 0.25);
  CHECK(d->curve[0].val_acc);
  // The experiment keeps the rungs as given.
  db::Statement settings = c.prepare("SELECT strategy_settings FROM experiments");
  REQUIRE(settings.step());
  CHECK(nlohmann::json::parse(settings.column_text(0))["asha"]["rungs"].dump() == "[0.25,0.5]");
}

TEST_CASE("strategies in the loop: a MACs limit refuses candidates before any training") {
  if (!have_external(nb201_table())) return;
  Search search("macs", "macs", 4, "evolution");
  search.settings.objective.max_macs = 60e6;
  search.remake();
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 40;
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}});
  CHECK(s.done == 40);
  CHECK(s.rejected > 0);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q = c.prepare("SELECT count(*), max(macs), min(macs) FROM trials");
  REQUIRE(q.step());
  CHECK(q.column_int64(0) == 40);  // the refused ones never became trials
  CHECK(q.column_int64(1) <= 60000000);
  CHECK(q.column_int64(2) > 0);  // MACs come from the layer graph when a worker leaves them out
}

TEST_CASE(
    "strategies in the loop: constraints that leave nothing stop the search with the reason") {
  if (!have_external(nb201_table())) return;
  Search search("nothing", "nothing", 4, "evolution");
  search.settings.objective.max_params = 1;  // no network of the space is that small
  search.remake();
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 40;
  const ControllerSummary s = run_search(search, cfg, {{"a", 1}});
  CHECK(s.stopped);
  CHECK(s.done == 0);
  CHECK(contains(s.error, "refused 100000 candidates in a row"));
  CHECK(contains(s.error, "max_params 1"));
  db::Store store = db::Store::open(search.path, db::OpenMode::ReadOnly);
  const auto e = store.find_experiment("nothing");
  REQUIRE(e);
  CHECK(e->status == "stopped");
}

TEST_CASE(
    "strategies in the loop: a GPU latency device gives trials only to workers with that GPU") {
  if (!have_external(nb201_table())) return;
  Search search("gpu-latency", "gpu-latency", 4, "evolution");
  search.settings.objective.latency_device = "cuda:0";
  search.remake();
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 10;
  cfg.budget_seconds = 1.5;  // CPU workers only: nothing can be measured, the budget ends it
  const ControllerSummary s = run_search(search, cfg, {{"a", 2}});
  CHECK(s.stopped);
  CHECK(s.done == 0);
  CHECK(count(search.path).trials == 0);
}

TEST_CASE("strategies in the loop: a Pareto search's front is what the store's query shows") {
  if (!have_external(nb201_table())) return;
  Search search("pareto", "pareto", 5, "evolution");
  search.settings.objective.pareto = "macs";
  search.remake();
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 80;
  run_search(search, cfg, {{"a", 2}, {"b", 2}});
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement objective = c.prepare("SELECT objective FROM experiments");
  REQUIRE(objective.step());
  CHECK(objective.column_text(0) == "pareto:val_acc,macs");
  const auto front = db::pareto(c, db::find_experiment_id(c, "pareto"), db::Metric::macs);
  REQUIRE(front.size() >= 3);
  for (size_t i = 1; i < front.size(); ++i) {
    // Cheapest first, each costlier one better; trials equal on both axes
    // (architectures that compute the same function) are all kept.
    CHECK(*front[i].macs >= *front[i - 1].macs);
    CHECK(front[i].val_acc >= front[i - 1].val_acc);
    if (front[i].val_acc == front[i - 1].val_acc) CHECK(*front[i].macs == *front[i - 1].macs);
    if (*front[i].macs == *front[i - 1].macs) CHECK(front[i].val_acc == front[i - 1].val_acc);
  }
}

TEST_CASE(
    "strategies in the loop: a trial lost after an ASHA rung continues from its state there") {
  if (!have_external(nb201_table())) return;
  Search search("asha-state", "asha-state", 8);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 1;
  cfg.fidelity = 8;
  AshaSettings asha;
  asha.eta = 3;
  asha.rungs = {2, 4};
  cfg.asha = asha;
  ControllerOptions opt = Search::options();
  std::mutex mu;
  std::vector<std::string> lines;
  opt.log = [&](const std::string& l) {
    std::lock_guard lock(mu);
    lines.push_back(l);
  };
  Controller controller(search.store, search.space, *search.strategy, cfg, opt);
  std::thread tc([&] { controller.run(); });
  const std::filesystem::path states = search.path + ".states/1";
  {
    // Held after the first rung's state: stopped (a bye, as on SIGTERM) once that state has
    // reached the controller.
    Worker slow(worker_options(controller.endpoint(), "slow",
                               std::make_shared<BigStateRunner>(sim(0.8), 2), 1));
    std::thread ts([&] { slow.run(); });
    const bool kept =
        eventually([&] { return std::filesystem::exists(states / "trial-1-epoch-2.state"); });
    slow.request_stop();
    ts.join();
    REQUIRE_MESSAGE(kept, "waited " << kHangGuard.count() << " s for the controller to keep "
                                    << (states / "trial-1-epoch-2.state").string());
  }
  Worker fast(worker_options(controller.endpoint(), "fast",
                             std::make_shared<BigStateRunner>(sim(0.008)), 1));
  std::thread tf([&] { fast.run(); });
  tc.join();
  tf.join();

  int resumed_after = -1;
  for (const auto& l : lines)
    if (std::sscanf(l.c_str(), "trial 1 attempt 1 continues after epoch %d", &resumed_after) == 1)
      break;
  std::string log;
  for (const auto& l : lines) log += l + "\n";
  CAPTURE(log);
  REQUIRE_MESSAGE(resumed_after >= 2, "the retried attempt did not continue from a rung");
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement t = c.prepare("SELECT status, attempt FROM trials");
  REQUIRE(t.step());
  CHECK(t.column_text(0) == "done");
  CHECK(t.column_int64(1) == 1);
  db::Statement e = c.prepare("SELECT min(epoch), max(epoch) FROM epochs WHERE attempt = 1");
  REQUIRE(e.step());
  CHECK(e.column_int64(0) == resumed_after + 1);  // nothing before the state was trained again
  CHECK(e.column_int64(1) == 8);
  CHECK_FALSE(std::filesystem::exists(states));  // the search ended: its states are gone
}

TEST_CASE(
    "search loop: gpus_per_trial gangs slots of one worker, a worker with too few gets none") {
  if (!have_external(nb201_table())) return;
  Search search("gang", "gang", 6);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 20;
  cfg.gpus_per_trial = 2;
  const ControllerSummary s = run_search(search, cfg, {{"three", 3}, {"one", 1}}, 0.005);
  CHECK(s.done == 20);
  db::Connection c = db::open_store_readonly(search.path);
  db::Statement q =
      c.prepare("SELECT w.name, t.device FROM trials t JOIN workers w ON w.id = t.worker_id");
  int rows = 0;
  while (q.step()) {
    ++rows;
    CHECK(q.column_text(0) == "three");
    const std::string device = q.column_text(1);
    CHECK(std::count(device.begin(), device.end(), ',') == 1);  // two slots
  }
  CHECK(rows == 20);
}
