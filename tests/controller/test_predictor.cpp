// The performance predictor (an ensemble of MLPs) and the strategy built on it
// (BANANAS): what the ensemble learns and how its spread behaves, exact
// save/restore, and the strategy's mechanics: random asks first, then fitted
// picks among mutations of the best, what it learns from (not pruned or
// infeasible results), and never an architecture twice.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "controller/predictor.h"
#include "controller/predictor_strategy.h"
#include "controller/ranking.h"
#include "searchspace/error.h"

using namespace minas;

namespace {

// An additive function of the decisions of `small`, with one interaction, so
// that a linear model alone would not fit it exactly.
double target(const Space& space, const Arch& a) {
  double v = 0;
  for (size_t d = 0; d < a.choice.size(); ++d)
    v += std::sin(1.3 * (a.choice[d] + 1) * (d + 1)) / static_cast<double>(d + 1);
  if (a.choice[0] == a.choice[1]) v += 0.5;
  (void)space;
  return v;
}

struct Sample {
  std::vector<Arch> archs;
  std::vector<std::vector<float>> x;
  std::vector<double> y;
};

Sample sample(const Space& space, size_t n, uint64_t seed) {
  Rng rng(seed);
  Sample s;
  std::set<std::string> keys;
  while (s.archs.size() < n) {
    const Arch a = space.sample(rng);
    if (!keys.insert(space.key(a)).second) continue;
    s.archs.push_back(a);
    s.x.push_back(space.one_hot(a));
    s.y.push_back(target(space, a));
  }
  return s;
}

double mean_std(const Predictor& p, const std::vector<std::vector<float>>& x) {
  double s = 0;
  for (const auto& v : x) s += p.predict(v).std;
  return s / static_cast<double>(x.size());
}

Score score_of(double v) {
  Score s;
  s.value = v;
  return s;
}

}  // namespace

TEST_CASE(
    "predictor: the ensemble ranks held-out architectures, and is unsure away from its data") {
  const auto space = Space::load("small");
  const Sample all = sample(space, 700, 1);
  const Sample train{{all.archs.begin(), all.archs.begin() + 200},
                     {all.x.begin(), all.x.begin() + 200},
                     {all.y.begin(), all.y.begin() + 200}};
  const std::vector<std::vector<float>> held_x(all.x.begin() + 200, all.x.end());
  const std::vector<double> held_y(all.y.begin() + 200, all.y.end());
  PredictorSettings ps;
  ps.seed = 3;
  Predictor p(space.one_hot_size(), ps);
  CHECK_FALSE(p.fitted());
  p.fit(train.x, train.y, 200);
  CHECK(p.fitted());
  std::vector<double> predicted;
  for (const auto& x : held_x) predicted.push_back(p.predict(x).mean);
  const double tau = kendall_tau(predicted, held_y);
  INFO("Kendall tau on 500 held-out architectures: " << tau);
  CHECK(tau > 0.7);
  // Members agree more on what they were trained on than on what they were not.
  CHECK(mean_std(p, train.x) < mean_std(p, held_x));
  // The mean is the members' mean; the spread their population standard deviation.
  const auto each = p.member_predictions(held_x[0]);
  REQUIRE(each.size() == 5);
  double m = 0, v = 0;
  for (double e : each) m += e / 5;
  for (double e : each) v += (e - m) * (e - m) / 5;
  CHECK(p.predict(held_x[0]).mean == doctest::Approx(m));
  CHECK(p.predict(held_x[0]).std == doctest::Approx(std::sqrt(v)));
  CHECK(v > 0);  // each member its own initialization and shuffling
}

TEST_CASE("predictor: deterministic for a seed, and a restored one predicts and refits the same") {
  const auto space = Space::load("small");
  const Sample s = sample(space, 120, 2);
  const std::vector<std::vector<float>> first(s.x.begin(), s.x.begin() + 60);
  const std::vector<double> first_y(s.y.begin(), s.y.begin() + 60);
  PredictorSettings ps;
  ps.seed = 11;
  Predictor a(space.one_hot_size(), ps), b(space.one_hot_size(), ps);
  a.fit(first, first_y, 30);
  b.fit(first, first_y, 30);
  CHECK(a.member_predictions(s.x[100]) == b.member_predictions(s.x[100]));
  PredictorSettings other = ps;
  other.seed = 12;
  Predictor c(space.one_hot_size(), other);
  c.fit(first, first_y, 30);
  CHECK(c.member_predictions(s.x[100]) != a.member_predictions(s.x[100]));

  // Saved, restored into a predictor of another seed, and both warm-refit on more data.
  Predictor r(space.one_hot_size(), other);
  r.restore(nlohmann::json::parse(a.save().dump()), "state");
  CHECK(r.fitted());
  CHECK(r.member_predictions(s.x[100]) == a.member_predictions(s.x[100]));
  a.fit(s.x, s.y, 5);
  r.fit(s.x, s.y, 5);
  for (size_t i = 0; i < s.x.size(); i += 17)
    CHECK(r.member_predictions(s.x[i]) == a.member_predictions(s.x[i]));
  a.reset();
  CHECK_FALSE(a.fitted());
}

TEST_CASE("predictor: bad settings, data and states are refused, naming what is wrong") {
  const auto space = Space::load("small");
  const size_t n = space.one_hot_size();
  PredictorSettings ps;
  ps.members = 0;
  CHECK_THROWS_WITH_AS(Predictor(n, ps), doctest::Contains("members"), Error);
  ps = {};
  ps.learning_rate = 0;
  CHECK_THROWS_WITH_AS(Predictor(n, ps), doctest::Contains("learning_rate"), Error);
  CHECK_THROWS_AS(Predictor(0, {}), Error);
  Predictor p(n, {});
  CHECK_THROWS_WITH_AS(p.fit({}, {}, 10), doctest::Contains("no data"), Error);
  CHECK_THROWS_WITH_AS(p.fit({std::vector<float>(n)}, {1, 2}, 10),
                       doctest::Contains("1 feature vectors but 2 targets"), Error);
  CHECK_THROWS_WITH_AS(p.fit({std::vector<float>(n + 1)}, {1}, 10),
                       doctest::Contains("feature vector 0"), Error);
  CHECK_THROWS_WITH_AS(p.fit({std::vector<float>(n)}, {NAN}, 10), doctest::Contains("not finite"),
                       Error);
  CHECK_THROWS_AS(p.predict(std::vector<float>(n + 1)), Error);

  nlohmann::json state = p.save();
  Predictor wider(n + 1, {});
  CHECK_THROWS_WITH_AS(wider.restore(state, "st"), doctest::Contains("st: is a predictor of"),
                       Error);
  nlohmann::json bad = state;
  bad["members"][1]["weights"] = "00zz";
  CHECK_THROWS_WITH_AS(p.restore(bad, "st"), doctest::Contains("st/members/1/weights"), Error);
  bad = state;
  std::string w = bad["members"][0]["weights"];
  w.replace(0, 8, "7fc00000");  // a NaN
  bad["members"][0]["weights"] = w;
  CHECK_THROWS_WITH_AS(p.restore(bad, "st"), doctest::Contains("not finite"), Error);
  bad = state;
  bad["members"].erase(0);
  CHECK_THROWS_WITH_AS(p.restore(bad, "st"), doctest::Contains("st/members"), Error);
  CHECK_THROWS_AS(p.restore(nlohmann::json::object(), "st"), Error);
  // A failed restore leaves the predictor as it was.
  CHECK(p.save() == state);
}

TEST_CASE("strategy: predictor asks initial_samples at random, then fitted picks near the best") {
  const auto space = Space::load("small");
  StrategySettings st;
  st.name = "predictor";
  st.seed = 5;
  st.initial_samples = 12;
  st.candidates = 50;
  PredictorStrategy s(space, st);
  std::set<std::string> keys;
  std::vector<double> values;
  for (int i = 0; i < 60; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    CHECK(keys.insert(space.key(c->arch)).second);  // never twice
    // Until the initial samples are told, nothing is fitted.
    CHECK(s.predictor().fitted() == (i >= 12));
    const double v = target(space, c->arch);
    values.push_back(v);
    s.tell(c->arch, score_of(v));
    CHECK(s.results() == static_cast<size_t>(i + 1));
  }
  // The fitted asks find better architectures than the random ones did.
  const double random_best = *std::max_element(values.begin(), values.begin() + 12);
  const double fitted_best = *std::max_element(values.begin() + 12, values.end());
  CHECK(fitted_best > random_best);
  const auto snap = s.take_snapshot();
  CHECK(snap.at("results") == 60);
  CHECK(snap.at("fits") == 48);  // one per ask with a new result
  CHECK(snap.at("predicted").is_number());
  CHECK(s.take_snapshot().at("fits") == 0);
}

TEST_CASE(
    "strategy: predictor learns from finished, feasible results only, and pruned ones are not asked "
    "again") {
  const auto space = Space::load("small");
  StrategySettings st;
  st.name = "predictor";
  st.seed = 8;
  st.initial_samples = 4;
  PredictorStrategy s(space, st);
  std::set<std::string> keys;
  for (int i = 0; i < 40; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    CHECK(keys.insert(space.key(c->arch)).second);
    Score sc = score_of(target(space, c->arch));
    if (i % 3 == 1) sc.pruned = true;  // ASHA stopped it at a low fidelity
    if (i % 3 == 2 && i > 4) sc.feasible = false;
    s.tell(c->arch, sc);
  }
  // 40 told: 13 pruned (i = 1, 4, ...), 12 infeasible (i = 5, 8, ..., 38).
  CHECK(s.results() == 40 - 13 - 12);
  // Pruned alone: the random asks go on until a result the ensemble can learn from.
  PredictorStrategy only_pruned(space, st);
  for (int i = 0; i < 10; ++i) {
    auto c = only_pruned.ask();
    REQUIRE(c);
    Score sc = score_of(0.5);
    sc.pruned = true;
    only_pruned.tell(c->arch, sc);
  }
  CHECK(only_pruned.results() == 0);
  CHECK_FALSE(only_pruned.predictor().fitted());
}

TEST_CASE("strategy: predictor's bad settings and a state of another strategy are refused") {
  const auto space = Space::load("small");
  StrategySettings st;
  st.name = "predictor";
  st.candidates = 0;
  CHECK_THROWS_WITH_AS(PredictorStrategy(space, st), doctest::Contains("candidates"), Error);
  StrategySettings ok;
  ok.name = "predictor";
  PredictorStrategy s(space, ok);
  CHECK_THROWS_WITH_AS(s.restore({{"strategy", "evolution"}}), doctest::Contains("not 'predictor'"),
                       Error);
  nlohmann::json state = s.save();
  state["ensemble"]["members"] = nlohmann::json::array();
  CHECK_THROWS_WITH_AS(s.restore(state), doctest::Contains("/ensemble/members"), Error);
  CHECK_THROWS_AS(StrategySettings::from_json({{"fit_epochs", 0}}, "x"), Error);
  CHECK(StrategySettings::from_json({{"name", "predictor"}, {"candidates", 30}}, "x").candidates ==
        30);
}
