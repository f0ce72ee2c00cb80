// Runs bounded by time: the schedule whose length is fixed while it runs
// (ElasticSchedule), and train()'s plan, which must survive a probe that
// misjudges the speed. Budgets here are multiples of an epoch time measured
// in the test itself, so they hold on a fast machine and a loaded one.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/trainer/synthetic.h"
#include "trainer/comm.h"
#include "trainer/optim.h"
#include "trainer/train.h"

using namespace minas;
using minas::test::synthetic;

namespace {

Recipe recipe_of(const nlohmann::json& fields) {
  Recipe r;
  r.update(fields, "test");
  return r;
}

// The recipes whose curves a re-plan must keep well formed.
std::vector<nlohmann::json> schedules() {
  return {{{"schedule", "onecycle"}},
          {{"schedule", "onecycle"}, {"anneal_strategy", "linear"}, {"pct_start", 0.25}},
          {{"schedule", "cosine"}, {"warmup_epochs", 2}, {"epochs", 10}},
          {{"schedule", "cosine"}},
          {{"schedule", "constant"}}};
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

TEST_CASE("elastic schedule: without a re-plan it is LrSchedule, bit for bit") {
  for (const auto& fields : schedules()) {
    CAPTURE(fields.dump());
    const Recipe r = recipe_of(fields);
    const LrSchedule fixed(r, 10, 97);
    const ElasticSchedule elastic(r, 10, 97);
    for (uint64_t s = 0; s < 100; ++s) {
      CHECK(elastic.lr(s) == fixed.lr(s));
      CHECK(elastic.momentum(s) == fixed.momentum(s));
      if (s < 97) CHECK(fixed.lr_at(static_cast<double>(s)) == fixed.lr(s));
    }
  }
}

TEST_CASE("elastic schedule: a re-plan keeps the rate where it was and walks to the curve's end") {
  for (const auto& fields : schedules()) {
    const Recipe r = recipe_of(fields);
    // Longer and shorter plans, fixed early (in a warm-up) and late.
    for (const auto& [first, at, then] : std::vector<std::array<uint64_t, 3>>{
             {100, 5, 480}, {100, 40, 480}, {100, 90, 120}, {480, 30, 100}, {480, 200, 250}}) {
      CAPTURE(fields.dump());
      CAPTURE(first);
      CAPTURE(at);
      CAPTURE(then);
      ElasticSchedule e(r, 10, first);
      const double before = e.lr(at), momentum_before = e.momentum(at);
      e.replan(at, then);
      CHECK(e.total_steps() == then);
      CHECK(e.replans() == 1);
      // No jump: the same place on the curve gives the same rate.
      CHECK(e.lr(at) == doctest::Approx(before).epsilon(1e-9));
      CHECK(e.momentum(at) == doctest::Approx(momentum_before).epsilon(1e-9));
      // The new plan's last step gets the curve's last rate.
      const LrSchedule target(r, 10, then);
      CHECK(e.lr(then - 1) == doctest::Approx(target.lr(then - 1)).epsilon(1e-9));
      // Between, the walk goes forward along the curve, step by step.
      double last = e.position(at);
      for (uint64_t s = at + 1; s < then; ++s) {
        CHECK(e.position(s) > last);
        last = e.position(s);
      }
      CHECK(last == doctest::Approx(static_cast<double>(then - 1)));
    }
  }
}

TEST_CASE("elastic schedule: a re-plan during a cosine warm-up only moves the end") {
  const Recipe r = recipe_of({{"schedule", "cosine"}, {"warmup_epochs", 3}, {"epochs", 30}});
  ElasticSchedule e(r, 10, 60);
  e.replan(12, 250);
  const LrSchedule straight(r, 10, 250);
  for (uint64_t s = 12; s < 250; ++s) CHECK(e.lr(s) == straight.lr(s));
  CHECK_THROWS_AS(e.replan(250, 250), Error);
  CHECK_THROWS_AS(e.replan(251, 100), Error);
}

namespace {

const char* kReference = "16|32|conv_k3|skip|64|conv_k3|skip";

struct Bench {
  Space space = Space::load("small:input=1x12x12");
  data::TrainTest data = synthetic({1, 12, 12}, 10, 1200);
  std::unique_ptr<Backend> backend = make_cpu_backend(1);

  Recipe recipe(const nlohmann::json& fields) const {
    Recipe r;
    r.set("batch", "32", "test");
    r.set("val_size", "200", "test");
    r.set("threads", "1", "test");
    r.update(fields, "test");
    return r;
  }
  // What one epoch of this recipe costs here and now, validation included: a
  // run of two epochs by the clock, halved (setup and the test pass make it
  // an overestimate, so a budget of k of them buys at most k epochs).
  double epoch_seconds(const Recipe& base) const {
    Recipe r = base;
    r.set("epochs", "2", "test");
    r.set("time_budget_s", "0", "test");
    Model model(space.lower(space.parse_key(kReference)), 1);
    TrainOptions opt;
    opt.measure_latency = false;
    const auto t0 = Clock::now();
    train(model, r, data, *backend, opt);
    return since(t0) / 2;
  }
  struct Run {
    TrainReport report;
    double seconds;  // the whole call
  };
  Run timed(Recipe r, double budget_s, double probe_factor) const {
    r.set("time_budget_s", std::to_string(budget_s), "test");
    r.set("epochs", "0", "test");
    Model model(space.lower(space.parse_key(kReference)), 1);
    TrainOptions opt;
    opt.measure_latency = false;
    opt.probe_filter = [probe_factor](double s) { return s * probe_factor; };
    const auto t0 = Clock::now();
    TrainReport rep = train(model, r, data, *backend, opt);
    return {std::move(rep), since(t0)};
  }
};

}  // namespace

TEST_CASE("train: a probe 40 times too slow cannot cut a time-bounded run to one epoch") {
  const Bench bench;
  for (const nlohmann::json& fields :
       {nlohmann::json::object(), nlohmann::json{{"schedule", "cosine"}, {"warmup_epochs", 0.5}}}) {
    CAPTURE(fields.dump());
    const Recipe r = bench.recipe(fields);
    const double epoch_s = bench.epoch_seconds(r);
    const double budget = 8 * epoch_s;
    // Planned from the probe alone, this budget would buy a fifth of an epoch.
    const auto run = bench.timed(r, budget, 40.0);
    const TrainReport& rep = run.report;
    MESSAGE("epoch " << epoch_s << " s, budget " << budget << " s: " << rep.epochs.size()
                     << " epochs, " << rep.steps << " of " << rep.planned_steps
                     << " planned steps, " << rep.replans << " re-plans, " << run.seconds
                     << " s, last lr " << rep.epochs.back().lr);
    CHECK(rep.replans >= 1);
    CHECK(rep.epochs.size() >= 3);
    CHECK(run.seconds >= 0.6 * budget);  // most of the budget is used
    // And it still ends with it: after the budget come only the last
    // validation and the test pass, which the measured epoch time includes.
    CHECK(run.seconds <= budget + 3 * epoch_s);
    // The schedule reached its end: a rate near zero, not a run cut mid-curve.
    CHECK(rep.epochs.back().lr <= 0.05 * r.lr);
    CHECK(rep.steps >= rep.planned_steps - rep.planned_steps / 10);
  }
}

TEST_CASE("train: a probe 40 times too fast still ends at the budget, its schedule complete") {
  const Bench bench;
  const Recipe r = bench.recipe(nlohmann::json::object());
  const double epoch_s = bench.epoch_seconds(r);
  double run_epoch_s = epoch_s;  // what an epoch took inside the first run
  {
    const double budget = 8 * epoch_s;
    // Planned from the probe alone, this run would take 40 times its budget.
    const auto run = bench.timed(r, budget, 1.0 / 40);
    const TrainReport& rep = run.report;
    MESSAGE("epoch " << epoch_s << " s, budget " << budget << " s: " << rep.epochs.size()
                     << " epochs, " << rep.steps << " of " << rep.planned_steps
                     << " planned steps, " << rep.replans << " re-plans, " << run.seconds
                     << " s, last lr " << rep.epochs.back().lr);
    CHECK(rep.replans >= 1);
    CHECK(rep.train_seconds <= budget + epoch_s / 4);  // a step over at most
    CHECK(run.seconds <= budget + 3 * epoch_s);
    CHECK(run.seconds >= 0.6 * budget);
    CHECK(rep.epochs.size() >= 3);
    CHECK(rep.epochs.back().lr <= 0.05 * r.lr);
    run_epoch_s = std::min(epoch_s, rep.train_seconds / static_cast<double>(rep.epochs.size()));
  }
  {
    // A budget of a sixteenth of an epoch: the first epoch ends early. The
    // epoch is the faster of the two measures (the first includes set-up and
    // the test pass, and the load of a shared machine comes and goes), so it
    // takes a machine sixteen times faster than either to fit a whole epoch.
    const double budget = run_epoch_s / 16;
    const auto run = bench.timed(r, budget, 1.0 / 1000);
    const TrainReport& rep = run.report;
    const uint64_t per_epoch = (1200 - 200) / 32;
    CHECK(rep.epochs.size() == 1);
    CHECK(static_cast<uint64_t>(rep.steps) < per_epoch);
    CHECK(rep.train_seconds <= budget + epoch_s / 4);
  }
}

TEST_CASE("train: data-parallel ranks follow rank 0's plan through re-plans and stay alike") {
  const Bench bench;
  const Recipe r = bench.recipe(nlohmann::json::object());
  const double epoch_s = bench.epoch_seconds(r);
  Recipe timed = r;
  // Two ranks halve each rank's epoch; how many the budget buys depends on
  // how the two threads share the cores, so only agreement is checked.
  timed.set("time_budget_s", std::to_string(6 * epoch_s), "test");
  timed.set("epochs", "0", "test");
  auto group = make_thread_group(2);
  const LayerGraph graph = bench.space.lower(bench.space.parse_key(kReference));
  std::vector<std::unique_ptr<Model>> models;
  for (int k = 0; k < 2; ++k) models.push_back(std::make_unique<Model>(graph, 1));
  std::vector<TrainReport> reports(2);
  std::vector<std::exception_ptr> errors(2);
  std::vector<std::thread> threads;
  for (int k = 0; k < 2; ++k)
    threads.emplace_back([&, k] {
      try {
        auto be = make_cpu_backend(1);
        TrainOptions opt;
        opt.measure_latency = false;
        opt.comm = group[static_cast<size_t>(k)].get();
        // Rank 1's probe is ignored: only rank 0 measures.
        opt.probe_filter = [k](double s) { return s * (k == 0 ? 40.0 : 1.0 / 40); };
        reports[static_cast<size_t>(k)] =
            train(*models[static_cast<size_t>(k)], timed, bench.data, *be, opt);
      } catch (...) {
        errors[static_cast<size_t>(k)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  const TrainReport &a = reports[0], &b = reports[1];
  MESSAGE(a.epochs.size() << " epochs, " << a.steps << " of " << a.planned_steps
                          << " planned steps, " << a.replans << " re-plans");
  CHECK(a.replans >= 1);
  CHECK(b.steps == a.steps);
  CHECK(b.planned_steps == a.planned_steps);
  CHECK(b.replans == a.replans);
  REQUIRE(b.epochs.size() == a.epochs.size());
  for (size_t e = 0; e < a.epochs.size(); ++e) {
    CHECK(b.epochs[e].lr == a.epochs[e].lr);
    CHECK(b.epochs[e].train_loss == a.epochs[e].train_loss);
  }
  std::vector<float> wa, wb;
  for (const auto* group_of : {&models[0]->params(), &models[0]->buffers()})
    for (const auto& p : *group_of) wa.insert(wa.end(), p.value.begin(), p.value.end());
  for (const auto* group_of : {&models[1]->params(), &models[1]->buffers()})
    for (const auto& p : *group_of) wb.insert(wb.end(), p.value.begin(), p.value.end());
  CHECK(wa == wb);
}
