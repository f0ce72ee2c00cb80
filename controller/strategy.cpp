#include "controller/strategy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "controller/pareto.h"
#include "controller/strategy_registry.h"
#include "searchspace/error.h"

namespace minas {
namespace {

// Consecutive filter refusals after which the constraints are judged to
// leave nothing worth searching.
constexpr int64_t kMaxRejectedInARow = 100000;

std::string mutation_text(const Space& space, const Mutation& m) {
  const Decision& d = space.decisions()[m.decision];
  return d.name + ": " + d.label(m.from) + " -> " + d.label(m.to);
}

template <class F>
auto json_guard(const std::string& where, F&& body) {
  try {
    return body();
  } catch (const nlohmann::json::exception& e) {
    throw Error(where, e.what());
  }
}

void check_name(const nlohmann::json& state, const std::string& name) {
  if (state.at("strategy") != name)
    throw Error("strategy state", "is for " + state.at("strategy").dump() + ", not '" + name + "'");
}

// Every field of "strategy_settings", for the error that names an unknown one:
// the registry's settings between the common fields.
std::string settings_fields() {
  std::string fields = "name, seed";
  for (const StrategyEntry& e : strategy_registry())
    for (const StrategySetting& s : e.settings) fields += std::string(", ") + s.field;
  return fields + ", objective, initial";
}

}  // namespace

// ------------------------------------------------------------ settings

StrategySettings StrategySettings::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where, "strategy settings are a JSON object, got " + j.dump());
  StrategySettings s;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    const std::string at = where + "/" + k;
    auto integer = [&](int64_t lo) {
      if (!v.is_number_integer() || v.get<int64_t>() < lo)
        throw Error(at, "must be an integer >= " + std::to_string(lo) + ", got " + v.dump());
      return v.get<int64_t>();
    };
    auto real = [&](double lo, double hi) {
      if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
        throw Error(at, "must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                            "], got " + v.dump());
      return v.get<double>();
    };
    if (k == "name") {
      if (!v.is_string()) throw Error(at, "must be a string, got " + v.dump());
      s.name = v.get<std::string>();
      find_strategy(s.name, at);
    } else if (k == "seed") {
      if (!v.is_number_unsigned()) throw Error(at, "must be an integer >= 0, got " + v.dump());
      s.seed = v.get<uint64_t>();
    } else if (const StrategySetting* setting = strategy_setting(k)) {
      if (setting->integer)
        s.*(setting->integer) = static_cast<int>(integer(static_cast<int64_t>(setting->file_lo)));
      else
        s.*(setting->real) = real(setting->file_lo, setting->file_hi);
    } else if (k == "objective") {
      s.objective = Objective::from_json(v, at);
    } else if (k == "initial") {
      if (!v.is_array()) throw Error(at, "must be an array of architecture keys, got " + v.dump());
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string())
          throw Error(at + "/" + std::to_string(i),
                      "must be an architecture key, got " + v[i].dump());
        s.initial.push_back(v[i].get<std::string>());
      }
    } else {
      throw Error(at, "unknown field '" + k + "' (fields: " + settings_fields() + ")");
    }
  }
  if (s.tournament > s.population)
    throw Error(where + "/tournament",
                "must not exceed the population (" + std::to_string(s.population) + ")");
  return s;
}

nlohmann::json StrategySettings::to_json() const {
  nlohmann::json j = {{"name", name}, {"seed", seed}, {"objective", objective.to_json()}};
  // Only the named strategy's own settings.
  if (const StrategyEntry* e = strategy_entry(name))
    for (const StrategySetting& s : e->settings) {
      if (s.integer)
        j[s.field] = this->*(s.integer);
      else
        j[s.field] = this->*(s.real);
    }
  if (!initial.empty()) j["initial"] = initial;
  return j;
}

std::unique_ptr<Strategy> make_strategy(const Space& space, const StrategySettings& settings) {
  std::unique_ptr<Strategy> s = find_strategy(settings.name, "strategy").make(space, settings);
  std::vector<Arch> initial;
  for (size_t i = 0; i < settings.initial.size(); ++i) {
    try {
      initial.push_back(space.parse_key(settings.initial[i]));
    } catch (const Error& e) {
      throw Error("strategy settings: /initial/" + std::to_string(i),
                  "'" + settings.initial[i] + "' is not an architecture of space '" + space.name() +
                      "': " + e.what());
    }
  }
  s->set_initial(std::move(initial));
  const Objective& o = settings.objective;
  if (o.max_params || o.max_macs)
    s->set_filter([&space, o](const Arch& a) { return o.precheck(space.lower(a)); });
  return s;
}

// ------------------------------------------------------------ shared pieces

bool Strategy::admissible(const Arch& a) {
  if (!filter_ || !filter_(a)) {
    rejected_in_a_row_ = 0;
    return true;
  }
  ++rejected_;
  if (++rejected_in_a_row_ >= kMaxRejectedInARow)
    throw Error("constraints", "refused " + std::to_string(kMaxRejectedInARow) +
                                   " candidates in a row before training (last: " + *filter_(a) +
                                   "): they leave (almost) nothing of the space; loosen them");
  return false;
}

void Strategy::restore_base(const nlohmann::json& state) {
  rejected_ = state.value("rejected", int64_t{0});
  initial_next_ = state.value("initial_next", size_t{0});
  rejected_in_a_row_ = 0;
}

void Strategy::add_initial_best(const std::vector<Screened>& best_first, size_t k) {
  for (size_t i = 0; i < best_first.size() && i < k; ++i) initial_.push_back(best_first[i].arch);
}

std::optional<Arch> Strategy::take_initial(const Space& space,
                                           const std::unordered_set<uint64_t>& seen) {
  while (initial_next_ < initial_.size()) {
    const Arch& a = initial_[initial_next_++];
    if (!seen.count(space.hash(a)) && admissible(a)) return a;
  }
  return std::nullopt;
}

std::optional<Arch> Strategy::sample_unseen(const Space& space, Rng& rng,
                                            const std::unordered_set<uint64_t>& seen) {
  const auto size = space.size();
  if (size && seen.size() >= *size) return std::nullopt;
  // Rejection keeps draws uniform over the architectures not yet seen. Once
  // most of a (necessarily small) space is taken it stops paying, and what is
  // left is listed and drawn from.
  for (int attempt = 0; attempt < 64 || !size || *size > 1000000; ++attempt) {
    Arch a = space.sample(rng);
    if (seen.count(space.hash(a))) continue;
    if (admissible(a)) return a;
    attempt = 0;  // a refusal by the constraints is not a sign the space is used up
  }
  std::vector<Arch> left;
  space.enumerate([&](const Arch& a) {
    if (!seen.count(space.hash(a))) left.push_back(a);
    return true;
  });
  while (!left.empty()) {
    const size_t i = rng.below(left.size());
    if (admissible(left[i])) return left[i];
    left[i] = left.back();
    left.pop_back();
  }
  return std::nullopt;
}

// ------------------------------------------------------------ random

RandomStrategy::RandomStrategy(const Space& space, uint64_t seed) : space_(space), rng_(seed) {}

std::optional<Candidate> RandomStrategy::ask() {
  auto a = take_initial(space_, asked_);
  if (!a) a = sample_unseen(space_, rng_, asked_);
  if (!a) return std::nullopt;
  asked_.insert(space_.hash(*a));
  return Candidate{*a, std::nullopt, {}};
}

nlohmann::json RandomStrategy::save() const {
  nlohmann::json j = base_state();
  j["strategy"] = name();
  j["rng"] = rng_.state();
  return j;
}

void RandomStrategy::restore(const nlohmann::json& state) {
  json_guard("strategy state", [&] {
    check_name(state, name());
    rng_.set_state(state.at("rng").get<std::array<uint64_t, 4>>());
    restore_base(state);
    asked_.clear();  // rebuilt by replay
  });
}

// ------------------------------------------------------------ evolution

EvolutionStrategy::EvolutionStrategy(const Space& space, const StrategySettings& s)
    : space_(space),
      size_(s.population),
      tournament_(s.tournament),
      pareto_(s.objective.pareto_mode()),
      rng_(s.seed) {
  if (size_ < 2) throw Error("evolution", "the population must be at least 2");
  if (tournament_ < 1 || tournament_ > size_)
    throw Error("evolution", "the tournament must be between 1 and the population");
}

size_t EvolutionStrategy::select() {
  std::vector<size_t> drawn;
  for (int i = 0; i < tournament_; ++i) drawn.push_back(rng_.below(population_.size()));
  if (!pareto_) {
    size_t best = drawn[0];
    for (size_t i : drawn)
      if (population_[i].value > population_[best].value) best = i;
    return best;
  }
  std::vector<pareto::Point> pts;
  for (const auto& m : population_) pts.push_back({m.value, m.cost});
  const auto rank = pareto::ranks(pts);
  const auto crowd = pareto::crowding(pts, rank);
  size_t best = drawn[0];
  for (size_t i : drawn)
    if (rank[i] < rank[best] || (rank[i] == rank[best] && crowd[i] > crowd[best])) best = i;
  return best;
}

std::optional<Candidate> EvolutionStrategy::ask() {
  if (initial_asked_ < size_ || population_.empty()) {
    auto a = take_initial(space_, seen_);
    if (!a) a = sample_unseen(space_, rng_, seen_);
    if (!a) return std::nullopt;
    if (initial_asked_ < size_) ++initial_asked_;
    seen_.insert(space_.hash(*a));
    return Candidate{*a, std::nullopt, {}};
  }
  // A child already seen (or refused) is redrawn: from the same parent a few
  // times, then from another tournament; a population whose neighbourhood is
  // all seen falls back to a random unseen architecture.
  for (int round = 0; round < 16; ++round) {
    const Member& parent = population_[select()];
    const Arch p = space_.parse_key(parent.key);
    for (int attempt = 0; attempt < 16; ++attempt) {
      Mutation m;
      Arch child = space_.mutate(p, rng_, &m);
      if (seen_.count(space_.hash(child)) || !admissible(child)) continue;
      seen_.insert(space_.hash(child));
      return Candidate{child, p, mutation_text(space_, m)};
    }
  }
  auto a = sample_unseen(space_, rng_, seen_);
  if (!a) return std::nullopt;
  seen_.insert(space_.hash(*a));
  return Candidate{*a, std::nullopt, {}};
}

void EvolutionStrategy::tell(const Arch& arch, const Score& score) {
  if (!score.feasible || score.pruned) return;  // never a parent
  population_.push_back({space_.key(arch), score.value, score.cost});
  if (static_cast<int>(population_.size()) <= size_) return;
  if (!pareto_) {
    population_.erase(population_.begin());  // the oldest dies
    return;
  }
  std::vector<pareto::Point> pts;
  for (const auto& m : population_) pts.push_back({m.value, m.cost});
  const auto rank = pareto::ranks(pts);
  const auto crowd = pareto::crowding(pts, rank);
  size_t worst = 0;  // highest rank, then most crowded, then oldest
  for (size_t i = 1; i < population_.size(); ++i)
    if (rank[i] > rank[worst] || (rank[i] == rank[worst] && crowd[i] < crowd[worst])) worst = i;
  population_.erase(population_.begin() + static_cast<std::ptrdiff_t>(worst));
}

std::optional<std::vector<std::string>> EvolutionStrategy::possible_parents() const {
  std::vector<std::string> keys;
  for (const auto& m : population_) keys.push_back(m.key);
  return keys;
}

nlohmann::json EvolutionStrategy::take_snapshot() {
  nlohmann::json values = nlohmann::json::array(), costs = nlohmann::json::array();
  for (const auto& m : population_) {
    values.push_back(m.value);
    costs.push_back(m.cost);
  }
  nlohmann::json j = {{"population", values}};
  if (pareto_) j["cost"] = costs;
  return j;
}

nlohmann::json EvolutionStrategy::save() const {
  nlohmann::json pop = nlohmann::json::array();
  for (const auto& m : population_) pop.push_back({m.key, m.value, m.cost});
  nlohmann::json j = base_state();
  j["strategy"] = name();
  j["rng"] = rng_.state();
  j["initial_asked"] = initial_asked_;
  j["population"] = pop;
  return j;
}

void EvolutionStrategy::restore(const nlohmann::json& state) {
  json_guard("strategy state", [&] {
    check_name(state, name());
    rng_.set_state(state.at("rng").get<std::array<uint64_t, 4>>());
    initial_asked_ = state.at("initial_asked").get<int64_t>();
    population_.clear();
    for (const auto& m : state.at("population")) {
      const std::string key = m.at(0).get<std::string>();
      space_.parse_key(key);  // throws naming the key if it is not of this space
      population_.push_back({key, m.at(1).get<double>(), m.at(2).get<double>()});
    }
    restore_base(state);
    seen_.clear();  // rebuilt by replay
  });
}

// ------------------------------------------------------------ reinforce

ReinforceStrategy::ReinforceStrategy(const Space& space, const StrategySettings& s)
    : space_(space), settings_(s), rng_(s.seed) {
  for (const Decision& d : space.decisions()) {
    logits_.emplace_back(d.options.size(), 0.0);
    m_.emplace_back(d.options.size(), 0.0);
    v_.emplace_back(d.options.size(), 0.0);
  }
}

std::vector<double> ReinforceStrategy::probabilities(size_t decision) const {
  const auto& z = logits_.at(decision);
  const double top = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double sum = 0;
  for (size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] - top);
  for (double& x : p) x /= sum;
  return p;
}

double ReinforceStrategy::entropy() const {
  double h = 0;
  for (size_t d = 0; d < logits_.size(); ++d)
    for (double p : probabilities(d))
      if (p > 0) h -= p * std::log(p);
  return h;
}

void ReinforceStrategy::update(const Arch& arch, double reward) {
  if (!has_baseline_) {
    baseline_ = reward;
    has_baseline_ = true;
  }
  reward_sum_ += reward;
  ++reward_count_;
  const double advantage = reward - baseline_;
  baseline_ = settings_.baseline_decay * baseline_ + (1 - settings_.baseline_decay) * reward;
  // Adam ascent (Kingma & Ba 2015, their default moments) on the logits.
  constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  ++steps_;
  const double c1 = 1 - std::pow(b1, static_cast<double>(steps_));
  const double c2 = 1 - std::pow(b2, static_cast<double>(steps_));
  for (size_t d = 0; d < logits_.size(); ++d) {
    const auto p = probabilities(d);
    double h = 0;
    for (double x : p)
      if (x > 0) h -= x * std::log(x);
    for (size_t i = 0; i < p.size(); ++i) {
      // d log p(a) / dz_i = [i == a] - p_i;  dH / dz_i = -p_i (log p_i + H)
      const double g_logp = (i == arch.choice[d] ? 1.0 : 0.0) - p[i];
      const double g_h = p[i] > 0 ? -p[i] * (std::log(p[i]) + h) : 0.0;
      const double g = advantage * g_logp + settings_.entropy_weight * g_h;
      m_[d][i] = b1 * m_[d][i] + (1 - b1) * g;
      v_[d][i] = b2 * v_[d][i] + (1 - b2) * g * g;
      logits_[d][i] += settings_.learning_rate * (m_[d][i] / c1) / (std::sqrt(v_[d][i] / c2) + eps);
    }
  }
}

namespace {
double reward_of(const Score& s) {
  return s.feasible ? s.value : 0.0;
}
}  // namespace

std::optional<Candidate> ReinforceStrategy::ask() {
  // Drawn from the policy; a draw already tried teaches with its stored
  // reward (or waits for it) and is drawn again, so that no architecture is
  // trained twice. A policy that has settled on what is known gives way to a
  // random unseen architecture.
  for (int draw = 0; draw < 100; ++draw) {
    Arch a;
    a.choice.resize(logits_.size());
    for (size_t d = 0; d < logits_.size(); ++d) {
      const auto p = probabilities(d);
      double u = rng_.uniform();
      size_t i = 0;
      while (i + 1 < p.size() && u >= p[i]) u -= p[i++];
      a.choice[d] = static_cast<uint32_t>(i);
    }
    const uint64_t h = space_.hash(a);
    if (seen_.count(h)) {
      if (auto k = known_.find(h); k != known_.end()) update(a, k->second);
      continue;
    }
    if (!admissible(a)) {
      update(a, 0.0);
      continue;
    }
    seen_.insert(h);
    return Candidate{a, std::nullopt, {}};
  }
  auto a = sample_unseen(space_, rng_, seen_);
  if (!a) return std::nullopt;
  seen_.insert(space_.hash(*a));
  return Candidate{*a, std::nullopt, {}};
}

void ReinforceStrategy::tell(const Arch& arch, const Score& score) {
  const double r = reward_of(score);
  update(arch, r);
  if (!score.pruned) known_[space_.hash(arch)] = r;
}

void ReinforceStrategy::replay(const Arch& arch, const std::optional<Score>& score) {
  seen_.insert(space_.hash(arch));
  if (score && !score->pruned) known_[space_.hash(arch)] = reward_of(*score);
}

nlohmann::json ReinforceStrategy::take_snapshot() {
  nlohmann::json j = {
      {"reward", reward_count_ ? nlohmann::json(reward_sum_ / reward_count_) : nlohmann::json()},
      {"baseline", has_baseline_ ? nlohmann::json(baseline_) : nlohmann::json()},
      {"entropy", entropy()},
      {"updates", steps_}};
  reward_sum_ = 0;
  reward_count_ = 0;
  return j;
}

nlohmann::json ReinforceStrategy::save() const {
  nlohmann::json j = base_state();
  j["strategy"] = name();
  j["rng"] = rng_.state();
  j["logits"] = logits_;
  j["adam_m"] = m_;
  j["adam_v"] = v_;
  j["steps"] = steps_;
  j["baseline"] = baseline_;
  j["has_baseline"] = has_baseline_;
  return j;
}

void ReinforceStrategy::restore(const nlohmann::json& state) {
  json_guard("strategy state", [&] {
    check_name(state, name());
    auto table = [&](const char* k) {
      auto t = state.at(k).get<std::vector<std::vector<double>>>();
      if (t.size() != logits_.size())
        throw Error("strategy state /" + std::string(k), "has the wrong number of decisions");
      for (size_t d = 0; d < t.size(); ++d)
        if (t[d].size() != logits_[d].size())
          throw Error("strategy state /" + std::string(k) + "/" + std::to_string(d),
                      "has the wrong number of options");
      return t;
    };
    rng_.set_state(state.at("rng").get<std::array<uint64_t, 4>>());
    logits_ = table("logits");
    m_ = table("adam_m");
    v_ = table("adam_v");
    steps_ = state.at("steps").get<int64_t>();
    baseline_ = state.at("baseline").get<double>();
    has_baseline_ = state.at("has_baseline").get<bool>();
    restore_base(state);
    seen_.clear();  // rebuilt by replay
    known_.clear();
  });
}

}  // namespace minas
