// Strategies on their own: a synthetic objective with a known optimum, the
// mechanics of each (aging, tournament, the policy's step, Pareto
// selection), exact resume from saved state, and constraints enforced before
// any training.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <set>

#include "controller/asha.h"
#include "controller/pareto.h"
#include "controller/ranking.h"
#include "controller/strategy.h"
#include "searchspace/error.h"

using namespace minas;

namespace {

// A separable objective over `small` whose unique optimum is `target`: each
// decision scores by its distance to the target's option.
struct Synthetic {
  const Space& space;
  Arch target;
  explicit Synthetic(const Space& s)
      : space(s), target(s.parse_key("24|48|sep_k3|conv_k5|96|mb_k3_e3|sep_k5")) {}
  double operator()(const Arch& a) const {
    double v = 0;
    for (size_t d = 0; d < a.choice.size(); ++d) {
      const double n = static_cast<double>(space.decisions()[d].options.size());
      v += 1.0 - std::abs(static_cast<double>(a.choice[d]) - target.choice[d]) / n;
    }
    return v / static_cast<double>(a.choice.size());
  }
};

Score score_of(double v) {
  Score s;
  s.value = v;
  return s;
}

// Runs `queries` asks and tells with `in_flight` outstanding (told oldest
// first); returns the best value seen and the keys in ask order.
std::pair<double, std::vector<std::string>> drive(Strategy& s, const Space& space,
                                                  const Synthetic& f, int queries,
                                                  int in_flight = 1) {
  std::deque<Arch> flying;
  std::vector<std::string> keys;
  double best = -1;
  int asked = 0;
  for (int told = 0; told < queries;) {
    while (asked < queries && static_cast<int>(flying.size()) < in_flight) {
      auto c = s.ask();
      REQUIRE(c.has_value());
      keys.push_back(space.key(c->arch));
      flying.push_back(c->arch);
      ++asked;
    }
    const Arch a = flying.front();
    flying.pop_front();
    const double v = f(a);
    best = std::max(best, v);
    s.tell(a, score_of(v));
    ++told;
  }
  return {best, keys};
}

StrategySettings settings_for(const std::string& name, uint64_t seed) {
  StrategySettings s;
  s.name = name;
  s.seed = seed;
  return s;
}

}  // namespace

TEST_CASE("strategy: random never repeats and exhausts a small space exactly") {
  const auto space = Space::load("nb201");
  RandomStrategy s(space, 1);
  std::set<std::string> seen;
  while (auto c = s.ask()) {
    REQUIRE(seen.insert(space.key(c->arch)).second);
    CHECK_FALSE(c->parent.has_value());
  }
  CHECK(seen.size() == 15625);
  CHECK_FALSE(s.ask().has_value());
}

TEST_CASE("strategy: each finds the known optimum of a synthetic objective, random rarely") {
  const auto space = Space::load("small");
  const Synthetic f(space);
  std::map<std::string, int> hits;
  std::map<std::string, double> mean_best;
  const int seeds = 10, queries = 1000;
  for (const std::string name : {"random", "evolution", "reinforce"}) {
    for (int seed = 0; seed < seeds; ++seed) {
      auto s = make_strategy(space, settings_for(name, static_cast<uint64_t>(seed)));
      const double best = drive(*s, space, f, queries, 4).first;
      hits[name] += best == 1.0;
      mean_best[name] += best / seeds;
    }
  }
  INFO("mean best: random " << mean_best["random"] << ", evolution " << mean_best["evolution"]
                            << ", reinforce " << mean_best["reinforce"]);
  INFO("hits: random " << hits["random"] << ", evolution " << hits["evolution"] << ", reinforce "
                       << hits["reinforce"]);
  // Aging evolution drifts (the best dies with age unless its children carry
  // it), so it ends one mutation short in some runs; random search hits the
  // optimum in about 2% of them.
  CHECK(hits["evolution"] >= 6);
  CHECK(hits["reinforce"] >= 8);
  CHECK(hits["random"] <= 2);  // 1000 of 47,628: about 2% a run
  CHECK(mean_best["evolution"] > mean_best["random"]);
  CHECK(mean_best["reinforce"] > mean_best["random"]);
}

TEST_CASE("strategy: evolution starts with P random asks, then mutates tournament winners") {
  const auto space = Space::load("small");
  StrategySettings st = settings_for("evolution", 3);
  st.population = 10;
  st.tournament = 3;
  EvolutionStrategy s(space, st);
  std::set<std::string> asked;
  for (int i = 0; i < 10; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    CHECK_FALSE(c->parent.has_value());
    asked.insert(space.key(c->arch));
    s.tell(c->arch, score_of(i));
  }
  for (int i = 0; i < 50; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    REQUIRE(c->parent.has_value());
    // Exactly one decision differs from the parent, and the text says which.
    size_t differ = 0, where = 0;
    for (size_t d = 0; d < c->arch.choice.size(); ++d)
      if (c->arch.choice[d] != c->parent->choice[d]) ++differ, where = d;
    CHECK(differ == 1);
    CHECK(c->mutation.rfind(space.decisions()[where].name + ": ", 0) == 0);
    CHECK(asked.insert(space.key(c->arch)).second);  // never a child already tried
    // The parent is a member of the population.
    bool member = false;
    for (const auto& m : s.population()) member = member || m.key == space.key(*c->parent);
    CHECK(member);
    s.tell(c->arch, score_of(100 + i));
  }
}

TEST_CASE("strategy: evolution's population ages: the oldest leaves, even the best") {
  const auto space = Space::load("small");
  StrategySettings st = settings_for("evolution", 4);
  st.population = 5;
  st.tournament = 2;
  EvolutionStrategy s(space, st);
  std::vector<std::string> told;
  for (int i = 0; i < 8; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    told.push_back(space.key(c->arch));
    s.tell(c->arch, score_of(i == 0 ? 1000.0 : i));  // the first is by far the best
  }
  REQUIRE(s.population().size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(s.population()[i].key == told[3 + i]);
  // A failed, pruned or infeasible trial never joins.
  Score pruned = score_of(5000);
  pruned.pruned = true;
  Score infeasible = score_of(5000);
  infeasible.feasible = false;
  auto c = s.ask();
  s.tell(c->arch, pruned);
  c = s.ask();
  s.tell(c->arch, infeasible);
  c = s.ask();
  s.tell_failure(c->arch);
  CHECK(s.population().front().key == told[3]);
}

TEST_CASE("strategy: snapshots for people: evolution's population, reinforce's reward and policy") {
  const auto space = Space::load("small");
  StrategySettings st = settings_for("evolution", 4);
  st.population = 3;
  EvolutionStrategy evo(space, st);
  CHECK(evo.take_snapshot() == nlohmann::json::parse(R"({"population":[]})"));
  for (double v : {0.25, 0.5, 0.75, 1.0}) evo.tell(evo.ask()->arch, score_of(v));
  CHECK(evo.take_snapshot() == nlohmann::json::parse(R"({"population":[0.5,0.75,1.0]})"));

  ReinforceStrategy rl(space, settings_for("reinforce", 2));
  const nlohmann::json first = rl.take_snapshot();
  CHECK(first["reward"].is_null());  // nothing told yet
  CHECK(first["baseline"].is_null());
  CHECK(first["entropy"].get<double>() == doctest::Approx(rl.entropy()));
  CHECK(first["updates"] == 0);
  for (double v : {0.25, 0.5, 0.75}) rl.tell(rl.ask()->arch, score_of(v));
  const nlohmann::json snap = rl.take_snapshot();
  CHECK(snap["updates"] == 3);
  CHECK(snap["reward"].get<double>() == doctest::Approx(0.5));
  CHECK(snap["baseline"].get<double>() == doctest::Approx(rl.baseline()));
  CHECK(snap["entropy"].get<double>() == doctest::Approx(rl.entropy()));
  CHECK(snap["entropy"].get<double>() < first["entropy"].get<double>());
  // The mean reward is of the updates since the last snapshot.
  rl.tell(rl.ask()->arch, score_of(0.125));
  CHECK(rl.take_snapshot()["reward"].get<double>() == doctest::Approx(0.125));
  CHECK(RandomStrategy(space, 1).take_snapshot().is_null());
}

TEST_CASE("strategy: a larger tournament picks the population's best as parent more often") {
  // A large space, so the best's children are never used up.
  const auto space = Space::load("mobile");
  auto best_parent_share = [&](int tournament) {
    StrategySettings st = settings_for("evolution", 11);
    st.population = 20;
    st.tournament = tournament;
    EvolutionStrategy s(space, st);
    std::string best;
    for (int i = 0; i < 20; ++i) {
      auto c = s.ask();
      if (i == 7) best = space.key(c->arch);
      s.tell(c->arch, score_of(i == 7 ? 10.0 : 1.0));
    }
    int hits = 0;
    for (int i = 0; i < 400; ++i) {
      auto c = s.ask();  // not told: the population stays as it is
      hits += space.key(*c->parent) == best;
    }
    return hits / 400.0;
  };
  // With replacement: P(best drawn) = 1 - (19/20)^S.
  CHECK(best_parent_share(1) == doctest::Approx(0.05).epsilon(0.6));
  CHECK(best_parent_share(20) == doctest::Approx(1 - std::pow(0.95, 20)).epsilon(0.15));
}

TEST_CASE("strategy: Pareto evolution keeps the front and selects by rank and crowding") {
  const auto space = Space::load("small");
  StrategySettings st = settings_for("evolution", 5);
  st.population = 6;
  st.tournament = 6;
  st.objective.pareto = "macs";
  EvolutionStrategy s(space, st);
  // Five points on a front (value up as cost goes up), then dominated ones.
  std::vector<std::pair<double, double>> pts = {{0.5, 1}, {0.6, 2}, {0.7, 3}, {0.8, 4},
                                                {0.9, 5}, {0.4, 5}, {0.3, 6}, {0.2, 7}};
  std::set<std::string> front;
  for (size_t i = 0; i < pts.size(); ++i) {
    auto c = s.ask();
    REQUIRE(c);
    if (i < 5) front.insert(space.key(c->arch));
    Score sc = score_of(pts[i].first);
    sc.cost = pts[i].second;
    s.tell(c->arch, sc);
  }
  REQUIRE(s.population().size() == 6);
  std::set<std::string> kept;
  for (const auto& m : s.population()) kept.insert(m.key);
  for (const auto& k : front) CHECK(kept.count(k) == 1);  // aging would have dropped the first
}

TEST_CASE("pareto: ranks, crowding and hypervolume on known sets") {
  using pareto::Point;
  const std::vector<Point> p = {{3, 3}, {2, 2}, {1, 1}, {2, 3}, {1, 3}, {1, 2}, {2, 2}};
  const auto r = pareto::ranks(p);
  CHECK(r == std::vector<int>{0, 0, 0, 1, 2, 1, 0});
  const auto c = pareto::crowding(p, r);
  CHECK(std::isinf(c[0]));
  CHECK(std::isinf(c[2]));
  // Front {1,1} {2,2} {2,2} {3,3}: an inner point's neighbours are 1 apart
  // in each objective of range 2.
  CHECK(c[1] == doctest::Approx(1.0));
  CHECK(c[6] == doctest::Approx(1.0));
  // Hypervolume: staircase of (value, cost) against reference (0, 4).
  CHECK(pareto::hypervolume({{3, 3}, {2, 2}, {1, 1}}, {0, 4}) ==
        doctest::Approx(1 * 1 + 1 * 2 + 1 * 3));
  CHECK(pareto::hypervolume({{3, 3}}, {0, 4}) == doctest::Approx(3.0));
  CHECK(pareto::hypervolume({{3, 3}, {1, 3.5}}, {0, 4}) == doctest::Approx(3.0));  // dominated
  CHECK(pareto::hypervolume({{-1, 1}, {1, 5}}, {0, 4}) == 0.0);                    // outside
}

TEST_CASE("strategy: reinforce's policy moves toward a rewarded option, and the baseline follows") {
  const auto space = Space::load("small");
  ReinforceStrategy s(space, settings_for("reinforce", 2));
  const size_t d = 3;  // stage1.layer2, 7 options
  const auto before = s.probabilities(d);
  CHECK(before[4] == doctest::Approx(1.0 / 7));
  for (int i = 0; i < 300; ++i) {
    auto c = s.ask();
    REQUIRE(c);
    s.tell(c->arch, score_of(c->arch.choice[d] == 4 ? 1.0 : 0.2));
  }
  const auto after = s.probabilities(d);
  CHECK(after[4] > 0.6);
  CHECK(s.baseline() > 0.5);  // the moving average of mostly rewarded draws
  // The other decisions did not matter and stayed spread out.
  const auto p0 = s.probabilities(0);
  CHECK(*std::max_element(p0.begin(), p0.end()) < 0.8);
}

TEST_CASE("strategy: reinforce's entropy bonus keeps an unrewarded policy spread") {
  const auto space = Space::load("small");
  StrategySettings with = settings_for("reinforce", 6), without = with;
  with.entropy_weight = 1.0;
  without.entropy_weight = 0.0;
  ReinforceStrategy a(space, with), b(space, without);
  Rng noise(1);
  for (int i = 0; i < 300; ++i) {
    for (ReinforceStrategy* s : {&a, &b}) {
      auto c = s->ask();
      s->tell(c->arch, score_of(noise.uniform()));
    }
  }
  CHECK(a.entropy() > b.entropy());
}

TEST_CASE("strategy: killed and resumed from save() + replay, each makes the same asks") {
  const auto space = Space::load("small");
  const Synthetic f(space);
  for (const std::string name : {"random", "evolution", "reinforce", "predictor"}) {
    CAPTURE(name);
    StrategySettings st = settings_for(name, 42);
    // Rejections are state too.
    if (name == "evolution" || name == "predictor") st.objective.max_params = 60000;
    auto straight = make_strategy(space, st);
    const auto expected = drive(*straight, space, f, 120, 3).second;

    // The same run, killed after 50 tells with 3 asks in flight: a new
    // process restores the saved state and replays every trial the store has.
    auto first = make_strategy(space, st);
    std::deque<Arch> flying;
    std::vector<std::string> keys;
    std::vector<std::pair<Arch, std::optional<Score>>> store;
    auto ask = [&](Strategy& s) {
      auto c = s.ask();
      REQUIRE(c);
      keys.push_back(space.key(c->arch));
      flying.push_back(c->arch);
      store.emplace_back(c->arch, std::nullopt);
    };
    auto tell = [&](Strategy& s) {
      const Arch a = flying.front();
      flying.pop_front();
      s.tell(a, score_of(f(a)));
      for (auto& [arch, sc] : store)
        if (arch == a) sc = score_of(f(a));
    };
    for (int i = 0; i < 3; ++i) ask(*first);
    for (int told = 0; told < 50; ++told) {
      tell(*first);
      ask(*first);
    }
    const std::string saved = first->save().dump();
    first.reset();
    auto second = make_strategy(space, settings_for(name, 999));  // seed from the state
    if (name == "evolution" || name == "predictor") second = make_strategy(space, st);
    second->restore(nlohmann::json::parse(saved));
    for (const auto& [arch, sc] : store) second->replay(arch, sc);
    for (int told = 50; told < 120; ++told) {
      tell(*second);
      if (static_cast<int>(keys.size()) < 120) ask(*second);
    }
    CHECK(keys == expected);
  }
}

TEST_CASE("strategy: a warm start asks its architectures first, skipping tried and refused ones") {
  const auto space = Space::load("small");
  const Synthetic f(space);
  const std::vector<std::string> warm = {"24|48|sep_k3|conv_k5|96|mb_k3_e3|sep_k5",
                                         "32|64|conv_k5|conv_k5|128|conv_k5|conv_k5",  // too big
                                         "16|32|conv_k3|skip|64|conv_k3|skip",
                                         "24|48|sep_k3|conv_k5|96|mb_k3_e3|sep_k5"};  // again
  for (const std::string name : {"random", "evolution", "predictor"}) {
    CAPTURE(name);
    StrategySettings st = settings_for(name, 7);
    st.initial = warm;
    st.objective.max_params = 200000;
    auto s = make_strategy(space, st);
    const auto keys = drive(*s, space, f, 40, 2).second;
    REQUIRE(keys.size() == 40);
    CHECK(keys[0] == warm[0]);
    CHECK(keys[1] == warm[2]);
    CHECK(std::set<std::string>(keys.begin(), keys.end()).size() == keys.size());
    CHECK(s->rejected() >= 1);
    // The warm start is part of the settings and of the saved state.
    CHECK(StrategySettings::from_json(st.to_json(), "s").initial == warm);
    CHECK(s->save().at("initial_next") == 4);
  }
  StrategySettings bad = settings_for("random", 1);
  bad.initial = {"24|48|nope"};
  CHECK_THROWS_WITH_AS(make_strategy(space, bad), doctest::Contains("/initial/0"), Error);
  CHECK_THROWS_WITH_AS(StrategySettings::from_json({{"initial", {1}}}, "x"),
                       doctest::Contains("x/initial/0"), Error);
}

TEST_CASE("strategy: constraints refuse candidates before any training, and say when none fit") {
  const auto space = Space::load("small");
  for (const std::string name : {"random", "evolution", "reinforce", "predictor"}) {
    CAPTURE(name);
    StrategySettings st = settings_for(name, 9);
    st.objective.max_params = 40000;
    st.objective.max_macs = 3000000;
    auto s = make_strategy(space, st);
    for (int i = 0; i < 60; ++i) {
      auto c = s->ask();
      REQUIRE(c);
      const LayerGraph g = space.lower(c->arch);
      CHECK(g.params() <= 40000);
      CHECK(g.macs() <= 3000000);
      s->tell(c->arch, score_of(0.5 + 0.001 * i));
    }
    CHECK(s->rejected() > 0);
    StrategySettings impossible = settings_for(name, 9);
    impossible.objective.max_params = 10;
    auto none = make_strategy(space, impossible);
    try {
      none->ask();
      FAIL("a constraint nothing meets must be an error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("constraints") != std::string::npos);
    }
  }
}

TEST_CASE("objective: hard constraints, MnasNet's soft reward, Pareto cost, bad settings") {
  Objective o;
  Metrics m;
  m.val_acc = 0.9;
  m.latency_ms = 2.0;
  m.params = 50000;
  m.macs = 1e6;
  CHECK(o.score(m).value == 0.9);
  o.max_params = 40000;
  CHECK_FALSE(o.score(m).feasible);
  o = {};
  o.latency_target_ms = 1.0;
  o.latency_weight = -0.07;
  CHECK(o.score(m).value == doctest::Approx(0.9 * std::pow(2.0, -0.07)));
  m.latency_ms = std::nullopt;
  CHECK_FALSE(o.score(m).feasible);  // a latency reward without a latency cannot be judged
  o = {};
  o.pareto = "macs";
  CHECK(o.score(m).cost == 1e6);
  // The time-aware reward: the error scaled by (seconds / 10)^a; a trial
  // twice as slow must halve its error's share by 2^-a to tie.
  o = {};
  o.time_exponent = 0.25;
  m.train_seconds = 40;
  CHECK(o.score(m).value == doctest::Approx(1 - 0.1 * std::pow(4.0, 0.25)));
  CHECK(o.score(m).feasible);
  Metrics fast = m;
  fast.val_acc = 0.88;
  fast.train_seconds = 10;  // 4 times faster, 20% more error: better in a fixed time
  CHECK(o.score(fast).value > o.score(m).value);
  m.train_seconds = std::nullopt;
  CHECK_FALSE(o.score(m).feasible);  // no time: cannot be judged against those with one
  m.train_seconds = 0;
  CHECK_FALSE(o.score(m).feasible);
  m.train_seconds = 5;
  o.time_floor_s = 20;  // faster than the floor counts as the floor
  CHECK(o.score(m).value == doctest::Approx(1 - 0.1 * std::pow(2.0, 0.25)));
  m.train_seconds = 40;
  CHECK(o.score(m).value == doctest::Approx(1 - 0.1 * std::pow(4.0, 0.25)));
  CHECK_THROWS_WITH_AS(Objective::from_json({{"time_floor_s", 3}}, "x"),
                       doctest::Contains("x/time_floor_s"), Error);
  const Objective read = Objective::from_json(o.to_json(), "x");
  REQUIRE(read.time_floor_s);
  CHECK(*read.time_floor_s == 20);
  REQUIRE(read.time_exponent);
  CHECK(*read.time_exponent == 0.25);
  CHECK_THROWS_WITH_AS(Objective::from_json({{"time_exponent", 0}}, "x"),
                       doctest::Contains("x/time_exponent"), Error);
  CHECK_THROWS_WITH_AS(Objective::from_json({{"time_exponent", "fast"}}, "x"),
                       doctest::Contains("x/time_exponent"), Error);
  CHECK_THROWS_WITH_AS(
      Objective::from_json({{"time_exponent", 0.2}, {"latency_target_ms", 1}}, "x"),
      doctest::Contains("exclude each other"), Error);
  CHECK_THROWS_WITH_AS(Objective::from_json({{"pareto", "speed"}}, "exp.json: /objective"),
                       doctest::Contains("exp.json: /objective/pareto"), Error);
  CHECK_THROWS_WITH_AS(Objective::from_json({{"max_params", -1}}, "x"),
                       doctest::Contains("x/max_params"), Error);
  CHECK_THROWS_WITH_AS(
      Objective::from_json({{"latency_weight", 0.5}, {"latency_target_ms", 1}}, "x"),
      doctest::Contains("< 0"), Error);
  CHECK(Objective::from_json({{"latency_device", "cpu:4"}}, "x").latency_device == "cpu:4");
  CHECK(
      Objective::from_json(Objective::from_json({{"latency_device", "cuda:1"}}, "x").to_json(), "x")
          .latency_device == "cuda:1");
  CHECK_THROWS_WITH_AS(Objective::from_json({{"latency_device", "gpu"}}, "x"),
                       doctest::Contains("x/latency_device: must be cpu:THREADS or cuda:N"), Error);
  CHECK(parse_latency_device("cpu")->threads == 1);
  CHECK(parse_latency_device("cpu:16")->threads == 16);
  CHECK(parse_latency_device("cuda:007")->device == "cuda:7");
  for (const char* bad :
       {"cpu:0", "cpu:5000", "cpu:", "cpu:x", "cuda:", "cuda:1000", "cuda:-1", "CPU", "cpu:1 ", ""})
    CHECK_MESSAGE(!parse_latency_device(bad), bad);
  CHECK_THROWS_WITH_AS(
      StrategySettings::from_json({{"name", "evolution"}, {"tournament", 20}}, "s"),
      doctest::Contains("s/tournament"), Error);
  CHECK_THROWS_WITH_AS(StrategySettings::from_json({{"name", "bayes"}}, "s"),
                       doctest::Contains("unknown strategy"), Error);
  const auto back = StrategySettings::from_json(
      StrategySettings::from_json({{"name", "reinforce"}, {"learning_rate", 0.3}}, "s").to_json(),
      "s");
  CHECK(back.learning_rate == 0.3);
}

TEST_CASE("asha: the first ceil(eta) at a rung go on, then only the top 1/eta") {
  AshaSettings st;
  st.eta = 3;
  st.rungs = {1, 3};
  Asha asha(st);
  CHECK(asha.report(1, 2, 0.1));  // not a rung
  CHECK(asha.report(1, 1, 0.50));
  CHECK(asha.report(2, 1, 0.40));
  CHECK(asha.report(3, 1, 0.30));        // three results: still every one goes on
  CHECK_FALSE(asha.report(4, 1, 0.45));  // n=4: keep floor(4/3)=1, the best is 0.50
  CHECK(asha.report(5, 1, 0.60));        // n=5: best of all
  CHECK(asha.report(6, 1, 0.55));        // n=6: keep 2 (0.60, 0.55)
  CHECK_FALSE(asha.report(7, 1, 0.52));  // n=7: keep 2
  // A retried attempt is judged with its first value.
  CHECK(asha.report(5, 1, 0.0));
  CHECK(asha.rung(1).size() == 7);
  CHECK(AshaSettings::geometric(1, 3, 27) == std::vector<double>{1, 3, 9});
  CHECK(AshaSettings::geometric(2, 2, 9) == std::vector<double>{2, 4, 8});
  CHECK_THROWS_WITH_AS(AshaSettings::from_json({{"eta", 1}, {"rungs", {1}}}, "asha"),
                       doctest::Contains("asha/eta"), Error);
  CHECK_THROWS_WITH_AS(AshaSettings::from_json({{"rungs", {3, 2}}}, "asha"),
                       doctest::Contains("asha/rungs/1"), Error);
}

TEST_CASE("asha: rungs at fractions of an epoch are judged there, whole ones as before") {
  const AshaSettings st = AshaSettings::from_json({{"eta", 2}, {"rungs", {0.25, 0.5, 1, 3}}}, "a");
  CHECK(st.rungs == std::vector<double>{0.25, 0.5, 1, 3});
  CHECK(st.whole_rungs() == std::vector<int>{1, 3});
  CHECK(st.fractional_rungs() == std::vector<double>{0.25, 0.5});
  // Whole rungs are written as integers: settings stored before fractions
  // existed compare equal on resume.
  CHECK(st.to_json().dump() == R"({"eta":2.0,"rungs":[0.25,0.5,1,3]})");
  CHECK(AshaSettings::from_json({{"rungs", {1.0, 2}}}, "a").to_json()["rungs"].dump() == "[1,2]");
  Asha asha(st);
  CHECK(asha.report(1, 0.25, 0.30));
  CHECK(asha.report(2, 0.25, 0.20));        // ceil(eta) = 2 results: both go on
  CHECK_FALSE(asha.report(3, 0.25, 0.10));  // n=3: keep 1
  CHECK(asha.report(3, 0.3, 0.0));          // not a rung
  CHECK(asha.report(1, 0.5, 0.4));
  CHECK(asha.rung(0.25).size() == 3);
  CHECK(asha.rung(0.5).size() == 1);
  CHECK(asha.rung(1).empty());
  for (const nlohmann::json& bad :
       {nlohmann::json{0}, nlohmann::json{-0.5}, nlohmann::json{0.5, 0.5}, nlohmann::json{"1"},
        nlohmann::json{1e7}}) {
    CAPTURE(bad.dump());
    CHECK_THROWS_WITH_AS(AshaSettings::from_json({{"rungs", bad}}, "asha"),
                         doctest::Contains("asha/rungs/"), Error);
  }
}

TEST_CASE(
    "strategy: stratified asks the warm start, then one pick per stratum of params, then ends") {
  const auto space = Space::load("small");
  StrategySettings st = settings_for("stratified", 3);
  st.sample_size = 12;
  st.initial = {"16|32|conv_k3|skip|64|conv_k3|skip"};
  auto s = make_strategy(space, st);
  std::vector<std::string> keys;
  while (auto c = s->ask()) keys.push_back(space.key(c->arch));
  REQUIRE(keys.size() == 13);  // the picks never include the warm start here (checked below)
  CHECK(keys[0] == st.initial[0]);
  // One pick per twelfth of the space sorted by parameters: the sorted picks'
  // ranks fall one in each stratum.
  std::vector<int64_t> all;
  space.enumerate([&](const Arch& a) {
    all.push_back(space.lower(a).params());
    return true;
  });
  std::sort(all.begin(), all.end());
  std::vector<int64_t> picked;
  for (size_t i = 1; i < keys.size(); ++i)
    picked.push_back(space.lower(space.parse_key(keys[i])).params());
  std::sort(picked.begin(), picked.end());
  for (size_t i = 0; i < picked.size(); ++i) {
    CAPTURE(i);
    const size_t lo = i * all.size() / 12, hi = (i + 1) * all.size() / 12 - 1;
    CHECK(picked[i] >= all[lo]);
    CHECK(picked[i] <= all[hi]);
  }
  // Asked in a random order, not by size; the same seed gives the same sample.
  CHECK(!std::is_sorted(keys.begin() + 1, keys.end(), [&](const auto& a, const auto& b) {
    return space.lower(space.parse_key(a)).params() < space.lower(space.parse_key(b)).params();
  }));
  auto again = make_strategy(space, st);
  for (const auto& k : keys) CHECK(space.key(again->ask()->arch) == k);
  // Resumed after 5 asks: the rest, exactly.
  auto first = make_strategy(space, st);
  std::vector<Arch> asked;
  for (int i = 0; i < 5; ++i) asked.push_back(first->ask()->arch);
  auto second = make_strategy(space, st);
  second->restore(first->save());
  for (const auto& a : asked) second->replay(a, std::nullopt);
  for (size_t i = 5; i < keys.size(); ++i) CHECK(space.key(second->ask()->arch) == keys[i]);
  CHECK(!second->ask());
  // Bad settings say what is wrong.
  st.sample_size = 50000;
  CHECK_THROWS_WITH_AS(make_strategy(space, st), doctest::Contains("sample_size 50000"), Error);
  st.sample_size = 5;
  st.initial.clear();
  CHECK_THROWS_WITH_AS(make_strategy(Space::load("mobile"), st),
                       doctest::Contains("more architectures than"), Error);
}

TEST_CASE("ranking: Kendall's tau-b and Spearman's rho on known lists") {
  const std::vector<double> x = {1, 2, 3, 4, 5};
  CHECK(kendall_tau(x, x) == doctest::Approx(1));
  CHECK(kendall_tau(x, {5, 4, 3, 2, 1}) == doctest::Approx(-1));
  // One swapped pair of 10: (9 - 1) / 10.
  CHECK(kendall_tau(x, {2, 1, 3, 4, 5}) == doctest::Approx(0.8));
  // Ties (scipy.stats.kendalltau([1,2,2,3], [1,3,2,4]) = 0.9128709)
  CHECK(kendall_tau({1, 2, 2, 3}, {1, 3, 2, 4}) == doctest::Approx(0.9128709));
  CHECK(spearman_rho(x, {1, 4, 9, 16, 25}) == doctest::Approx(1));
  // scipy.stats.spearmanr([1,2,3,4,5], [2,1,4,3,5]) = 0.8
  CHECK(spearman_rho(x, {2, 1, 4, 3, 5}) == doctest::Approx(0.8));
  CHECK(average_ranks({10, 20, 20, 5}) == std::vector<double>{2, 3.5, 3.5, 1});
  CHECK(std::isnan(kendall_tau({1, 1, 1}, {1, 2, 3})));
  CHECK(std::isnan(spearman_rho({1}, {2})));
}
