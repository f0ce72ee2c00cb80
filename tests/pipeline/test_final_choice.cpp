// The final training's choice of architecture for its time
// (pipeline/final_choice.h) and the step timing it is made from
// (trainer/step_time.h).
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/final_choice.h"
#include "searchspace/error.h"
#include "searchspace/space.h"
#include "trainer/network.h"
#include "trainer/step_time.h"

using minas::pipeline::FinalPick;
using minas::pipeline::PickCandidate;

namespace {

PickCandidate candidate(int64_t number, double val_acc, int64_t fidelity, double step_s) {
  PickCandidate c;
  c.trial.number = number;
  c.trial.val_acc = val_acc;
  c.trial.fidelity = fidelity;
  c.step_seconds = step_s;
  return c;
}

}  // namespace

TEST_CASE("final choice: the power law predicts from the trial's fidelity") {
  using minas::pipeline::predicted_accuracy;
  // At the trial's own epochs the prediction is its accuracy.
  CHECK(predicted_accuracy(0.92, 3, 3, 0.07) == doctest::Approx(0.92));
  // Error falls by (E / F)^-a: 8% after 3 epochs, a = 0.5, 12 epochs: 4%.
  CHECK(predicted_accuracy(0.92, 3, 12, 0.5) == doctest::Approx(0.96));
  // Fewer epochs than the trial: worse, and never below 0.
  CHECK(predicted_accuracy(0.92, 3, 1, 0.07) < 0.92);
  CHECK(predicted_accuracy(0.5, 3, 1e-9, 1.0) == doctest::Approx(0.0));
  // a = 0: accuracy at any epochs is the trial's.
  CHECK(predicted_accuracy(0.9, 3, 30, 0) == doctest::Approx(0.9));
}

TEST_CASE("final choice: a slower network that is better after 3 epochs loses in a short budget") {
  std::vector<PickCandidate> c = {candidate(1, 0.930, 3, 0.10),  // 10x slower
                                  candidate(2, 0.923, 3, 0.01)};
  // 100 steps per epoch: 10 s and 1 s per epoch; 60 s: 6 and 30 (capped) epochs.
  minas::pipeline::rank_for_final_time(c, 60, 30, 100, 0.07);
  REQUIRE(c.size() == 2);
  CHECK(c[0].trial.number == 2);
  CHECK(c[0].epoch_seconds == doctest::Approx(1.0));
  CHECK(c[0].epochs == doctest::Approx(30));  // at most the recipe's epochs
  CHECK(c[1].epochs == doctest::Approx(6));
  CHECK(c[0].predicted > c[1].predicted);
  // With time enough for both to reach the recipe's epochs, the better one wins.
  minas::pipeline::rank_for_final_time(c, 3000, 30, 100, 0.07);
  CHECK(c[0].trial.number == 1);
  // No time bound: every candidate gets the recipe's epochs.
  minas::pipeline::rank_for_final_time(c, 0, 30, 100, 0.07);
  CHECK(c[0].trial.number == 1);
  CHECK(c[1].epochs == doctest::Approx(30));
  // Ties in prediction: the better validation accuracy, then the earlier trial.
  std::vector<PickCandidate> t = {candidate(5, 0.9, 3, 0.01), candidate(4, 0.9, 3, 0.01)};
  minas::pipeline::rank_for_final_time(t, 100, 30, 10, 0.07);
  CHECK(t[0].trial.number == 4);
}

TEST_CASE("final choice: short trials (trial_fraction) reached their accuracy after F x fraction epochs") {
  // A trial of 1 epoch at fraction 0.25 trained a quarter epoch: its
  // prediction after 4 epochs is the power law over 16x, not 4x.
  std::vector<PickCandidate> c = {candidate(1, 0.80, 1, 1.0)};
  minas::pipeline::rank_for_final_time(c, 0, 4, 1, 0.5, 0.25);
  CHECK(c[0].predicted == doctest::Approx(minas::pipeline::predicted_accuracy(0.80, 0.25, 4, 0.5)));
  CHECK(c[0].predicted == doctest::Approx(0.95));  // 20% error / sqrt(16)
  minas::pipeline::rank_for_final_time(c, 0, 4, 1, 0.5);  // whole epochs: 20% / sqrt(4)
  CHECK(c[0].predicted == doctest::Approx(0.90));
  for (double bad : {0.0, -0.5, 1.5})
    CHECK_THROWS_AS(minas::pipeline::rank_for_final_time(c, 0, 4, 1, 0.5, bad), minas::Error);
}

TEST_CASE("final choice: the default exponent is the one measured for the trials' F") {
  using minas::pipeline::default_curve_exponent;
  CHECK(default_curve_exponent(0.25) == doctest::Approx(0.237));
  CHECK(default_curve_exponent(0.125) == doctest::Approx(0.272));
  CHECK(default_curve_exponent(3) == doctest::Approx(0.07));
  CHECK(default_curve_exponent(0.05) == doctest::Approx(0.272));  // outside: the nearest
  CHECK(default_curve_exponent(20) == doctest::Approx(0.07));
  // Between: linear in log F, so 1 epoch (the geometric middle of 1/3 and 3) is...
  const double one = default_curve_exponent(1);
  CHECK(one < 0.237);
  CHECK(one > 0.07);
  CHECK(one == doctest::Approx(0.237 + (0.07 - 0.237) * std::log(4.0) / std::log(12.0)));
  // rank_for_final_time with exponent 0 takes it per candidate.
  std::vector<PickCandidate> c = {candidate(1, 0.86, 1, 0.01)};
  minas::pipeline::rank_for_final_time(c, 0, 10, 100, 0, 0.25);
  CHECK(c[0].exponent == doctest::Approx(0.237));
  CHECK(c[0].predicted ==
        doctest::Approx(minas::pipeline::predicted_accuracy(0.86, 0.25, 10, 0.237)));
}

TEST_CASE("final choice: the shortlist is ordered by the error a trial's speed implies") {
  auto row = [](int64_t number, std::optional<double> val, std::optional<double> seconds) {
    minas::db::TrialRow t;
    t.number = number;
    t.val_acc = val;
    t.fidelity = 1;
    t.train_seconds = seconds;
    return t;
  };
  // Best by accuracy first, as the store lists them; the slowest is best.
  std::vector<minas::db::TrialRow> top = {row(0, 0.87, 80), row(1, 0.86, 10),
                                          row(2, 0.85, std::nullopt), row(3, 0.84, 11)};
  const auto s = minas::pipeline::shortlist_by_trial_time(top, 3, 0.237, 0.25);
  REQUIRE(s.size() == 3);
  // 0.14 x 10^a < 0.16 x 11^a < 0.13 x 80^a; the one without a time last (left out).
  CHECK(s[0].number == 1);
  CHECK(s[1].number == 3);
  CHECK(s[2].number == 0);
  const auto all = minas::pipeline::shortlist_by_trial_time(top, 10, 0.237, 0.25);
  REQUIRE(all.size() == 4);
  CHECK(all[3].number == 2);
  // With no exponent given, the quarter epoch's: the same order here.
  CHECK(minas::pipeline::shortlist_by_trial_time(top, 1, 0, 0.25)[0].number == 1);
}

TEST_CASE("final choice: a candidate without accuracy, fidelity or speed is an error") {
  std::vector<PickCandidate> c = {candidate(1, 0.9, 0, 0.01)};
  CHECK_THROWS_AS(minas::pipeline::rank_for_final_time(c, 10, 30, 10, 0.07), minas::Error);
  c = {candidate(1, 0.9, 3, 0)};
  CHECK_THROWS_AS(minas::pipeline::rank_for_final_time(c, 10, 30, 10, 0.07), minas::Error);
  c = {candidate(1, 0.9, 3, 0.01)};
  c[0].trial.val_acc.reset();
  CHECK_THROWS_AS(minas::pipeline::rank_for_final_time(c, 10, 30, 10, 0.07), minas::Error);
}

TEST_CASE("final choice: the pick's names") {
  CHECK(minas::pipeline::parse_final_pick("validation") == FinalPick::validation);
  CHECK(minas::pipeline::parse_final_pick("final-time") == FinalPick::final_time);
  CHECK(std::string(minas::pipeline::final_pick_name(FinalPick::final_time)) == "final-time");
  CHECK_THROWS_WITH_AS(minas::pipeline::parse_final_pick("\x1b[2Jfast"),
                       doctest::Contains("'\\x1b[2Jfast' is not validation or final-time"),
                       minas::Error);
}

TEST_CASE("step time: a wider network's step is measured slower than a narrow one's") {
  const minas::Space space = minas::Space::load("small");
  auto backend = minas::make_cpu_backend(1);
  minas::Recipe recipe;
  recipe.batch = 32;
  const minas::Model narrow(space.lower(space.parse_key("16|32|conv_k3|skip|64|conv_k3|skip")), 0);
  const minas::Model wide(space.lower(space.parse_key("32|64|conv_k5|conv_k5|128|conv_k5|conv_k5")),
                          0);
  const double n = minas::measure_step_seconds(narrow, *backend, recipe, 3);
  const double w = minas::measure_step_seconds(wide, *backend, recipe, 3);
  CHECK(n > 0);
  CHECK(std::isfinite(w));
  // The wide one does over 20 times the MACs; medians of 3 steps keep a
  // machine's hiccup from reversing them.
  CHECK(w > n);
  CHECK_THROWS_AS(minas::measure_step_seconds(narrow, *backend, recipe, 0), minas::Error);
}
