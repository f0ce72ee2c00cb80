// Reduced fidelity in the trainer: a stratified, seeded data subset, a run
// stopped at a fraction of its steps (its schedule planned over the short run
// or cut from the full one), and validations inside an epoch (ASHA's
// fractional rungs) that leave the training itself unchanged.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/optim.h"
#include "trainer/train.h"

using namespace minas;
using minas::test::contains;
using minas::test::error_of;
using minas::test::synthetic;

namespace {

const char* kSpace = "mobile:input=1x12x12,stem.channels=8,head.channels=16";

// 300 synthetic images, 60 held out: 240 to train on, 15 steps of 16 an epoch.
Recipe small_recipe(int64_t epochs) {
  Recipe r;
  r.set("epochs", std::to_string(epochs), "test");
  r.set("val_size", "60", "test");
  r.set("batch", "16", "test");
  r.set("threads", "1", "test");
  return r;
}

std::vector<float> weights(const Model& m) {
  std::vector<float> all;
  for (const auto* group : {&m.params(), &m.buffers()})
    for (const auto& p : *group) all.insert(all.end(), p.value.begin(), p.value.end());
  return all;
}

struct Run {
  TrainReport report;
  std::vector<float> weights;
  std::vector<EpochRecord> seen_points;  // as on_point got them
};

Run run(const Recipe& r, std::vector<double> validate_at = {}) {
  const Space space = Space::load(kSpace);
  Rng rng(3);
  const Arch arch = space.sample(rng);
  const auto data = synthetic({1, 12, 12}, 10, 300);
  Model model(space.lower(arch), r.seed);
  auto backend = make_cpu_backend(1);
  TrainOptions opt;
  opt.measure_latency = false;
  opt.validate_at = std::move(validate_at);
  Run out;
  opt.on_point = [&](const EpochRecord& e) { out.seen_points.push_back(e); };
  out.report = train(model, r, data, *backend, opt);
  out.weights = weights(model);
  return out;
}

std::map<uint8_t, size_t> class_counts(const data::Dataset& ds, const std::vector<uint32_t>& idx) {
  std::map<uint8_t, size_t> n;
  for (uint32_t i : idx) ++n[ds.labels[i]];
  return n;
}

}  // namespace

TEST_CASE("fidelity: a subset is stratified by class, seeded, and drawn from the training split") {
  const Space space = Space::load(kSpace);
  Rng rng(1);
  const LayerGraph g = space.lower(space.sample(rng));
  const auto data = synthetic({1, 12, 12}, 10, 1000);
  Recipe full;
  full.set("val_size", "100", "test");
  const TrainSplit all = train_split(g, full, data);
  REQUIRE(all.train.size() == 900);

  Recipe sub = full;
  sub.set("subset_fraction", "0.2", "test");
  const TrainSplit s = train_split(g, sub, data);
  CHECK(s.train.size() == 180);
  CHECK(s.val == all.val);  // the validation split does not move
  CHECK(std::includes(all.train.begin(), all.train.end(), s.train.begin(), s.train.end()));
  // Each class in proportion: its share of 180, rounded down or up.
  const auto pool = class_counts(data.train, all.train), got = class_counts(data.train, s.train);
  for (const auto& [label, n] : pool) {
    const double share = 180.0 * static_cast<double>(n) / 900.0;
    CAPTURE(int(label));
    CHECK(static_cast<double>(got.count(label) ? got.at(label) : 0) >= std::floor(share));
    CHECK(static_cast<double>(got.count(label) ? got.at(label) : 0) <= std::ceil(share));
  }
  // Seeded: the same seed draws the same images, another seed others; a count
  // draws what the same share does.
  CHECK(train_split(g, sub, data).train == s.train);
  Recipe other = sub;
  other.set("seed", "1", "test");
  CHECK(train_split(g, other, data).train != s.train);
  Recipe count = full;
  count.set("subset_size", "180", "test");
  CHECK(train_split(g, count, data).train == s.train);
  // The whole split is no subset at all.
  count.set("subset_size", "900", "test");
  CHECK(train_split(g, count, data).train == all.train);

  count.set("subset_size", "901", "test");
  const auto e = error_of([&] { train_split(g, count, data); });
  CHECK(e.where() == "recipe: /subset_size");
  CHECK(contains(e.reason(), "901 images is larger than the 900 training images"));

  // Training takes its steps from the subset: 180 / 16 a epoch.
  Recipe trained = small_recipe(1);
  trained.set("subset_size", "48", "test");
  CHECK(run(trained).report.steps == 3);
}

TEST_CASE("fidelity: a run fraction stops at its step, the schedule planned short or cut") {
  // 2 epochs of 15 steps; 0.3 of them is 9 steps, inside the first epoch.
  Recipe r = small_recipe(2);
  r.set("run_fraction", "0.3", "test");
  const Run shorter = run(r);
  CHECK(shorter.report.steps == 9);
  REQUIRE(shorter.report.epochs.size() == 1);
  CHECK(shorter.report.epochs[0].steps == 9);
  CHECK(std::isfinite(shorter.report.val_acc));
  // short: the schedule is the 9 steps', so the last step is its end.
  CHECK(shorter.report.planned_steps == 9);
  CHECK(shorter.report.epochs[0].lr == doctest::Approx(ElasticSchedule(r, 15, 9).lr(8)));

  r.set("fraction_schedule", "cut", "test");
  const Run cut = run(r);
  CHECK(cut.report.steps == 9);
  CHECK(cut.report.planned_steps == 30);  // the full run's schedule, stopped early
  CHECK(cut.report.epochs[0].lr == doctest::Approx(ElasticSchedule(r, 15, 30).lr(8)));
  CHECK(cut.report.epochs[0].lr != doctest::Approx(shorter.report.epochs[0].lr));

  // A fraction past an epoch ends inside the next one: 0.6 of 30 is 15 + 3.
  r.set("run_fraction", "0.6", "test");
  const Run longer = run(r);
  CHECK(longer.report.steps == 18);
  REQUIRE(longer.report.epochs.size() == 2);
  CHECK(longer.report.epochs[1].steps == 3);

  // Cut at an epoch's end, the run is exactly the first epoch of the full one.
  r.set("run_fraction", "0.5", "test");
  const Run half = run(r);
  Recipe whole = small_recipe(2);
  const Run straight = run(whole);
  REQUIRE(half.report.epochs.size() == 1);
  CHECK(half.report.epochs[0].val_acc == straight.report.epochs[0].val_acc);
  CHECK(half.report.epochs[0].train_loss == straight.report.epochs[0].train_loss);
}

TEST_CASE("fidelity: validations inside epochs come at their steps and change no training") {
  const Recipe r = small_recipe(2);
  // 0.5 of 15 steps rounds to step 8; 1.25 to step 15 + 4 (18.75 rounds to 19).
  const Run with = run(r, {0.5, 1.25, 7.5});
  const Run without = run(r);
  REQUIRE(with.report.points.size() == 2);  // 7.5 lies past the run: never reached
  REQUIRE(with.seen_points.size() == 2);
  const EpochRecord& a = with.seen_points[0];
  const EpochRecord& b = with.seen_points[1];
  CHECK(a.at == 0.5);
  CHECK(a.epoch == 1);
  CHECK(a.steps == 8);
  CHECK(b.at == 1.25);
  CHECK(b.epoch == 2);
  CHECK(b.steps == 4);
  CHECK(std::isfinite(a.val_acc));
  CHECK(a.train_loss > 0);
  CHECK(b.seconds >= 0);
  CHECK(with.report.points[1].at == 1.25);
  // The training is the same with them as without.
  CHECK(with.weights == without.weights);
  REQUIRE(with.report.epochs.size() == without.report.epochs.size());
  for (size_t i = 0; i < with.report.epochs.size(); ++i) {
    CHECK(with.report.epochs[i].val_acc == without.report.epochs[i].val_acc);
    CHECK(with.report.epochs[i].train_loss == without.report.epochs[i].train_loss);
    CHECK_FALSE(with.report.epochs[i].at);
  }
  CHECK(with.report.to_json()["points"].size() == 2);
  CHECK_FALSE(without.report.to_json().contains("points"));

  // A point of a run stopped at a fraction is reached when it lies before the stop.
  Recipe part = r;
  part.set("run_fraction", "0.3", "test");  // 9 steps
  CHECK(run(part, {0.5}).report.points.size() == 1);
  CHECK(run(part, {0.75}).report.points.empty());

  CHECK(contains(error_of([&] { run(r, {1.0}); }).reason(), "not a whole epoch"));
  CHECK(contains(error_of([&] { run(r, {0.5, 0.25}); }).reason(), "ascending"));
  CHECK(contains(error_of([&] { run(r, {-0.5}); }).reason(), "above 0"));
}
