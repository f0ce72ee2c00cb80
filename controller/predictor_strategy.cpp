#include "controller/predictor_strategy.h"

#include <algorithm>
#include <cmath>

#include "searchspace/error.h"

namespace minas {
namespace {

// Candidates are mutations of this many of the best results so far.
constexpr size_t kParents = 10;
// One candidate in this many is a uniform draw, so the search can leave the
// best results' neighbourhood where the ensemble is confidently wrong.
constexpr size_t kRandomEvery = 10;
// The first fit starts from the initialization and runs this many times
// fit_epochs; the ones after it start from the last fit's weights.
constexpr int kFirstFitFactor = 10;

PredictorSettings ensemble_settings(const StrategySettings& s) {
  PredictorSettings p;
  p.members = s.ensemble_size;
  p.seed = s.seed ^ 0x5052454449435452ULL;  // its own stream, apart from the asks'
  return p;
}

// A standard normal draw (Box-Muller) from our own RNG, the same everywhere.
double normal(Rng& rng) {
  const double u1 = 1.0 - rng.uniform();  // (0, 1]
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace

PredictorStrategy::PredictorStrategy(const Space& space, const StrategySettings& s)
    : space_(space),
      settings_(s),
      rng_(s.seed),
      predictor_(space.one_hot_size(), ensemble_settings(s)) {
  if (s.initial_samples < 1) throw Error("predictor", "initial_samples must be >= 1");
  if (s.candidates < 1) throw Error("predictor", "candidates must be >= 1");
  if (s.fit_epochs < 1) throw Error("predictor", "fit_epochs must be >= 1");
}

void PredictorStrategy::refit() {
  std::vector<std::vector<float>> x;
  std::vector<double> y;
  x.reserve(results_.size());
  y.reserve(results_.size());
  for (const auto& [hash, r] : results_) {
    x.push_back(features(r.arch));
    y.push_back(r.value);
  }
  const bool first = !predictor_.fitted();
  predictor_.fit(x, y, first ? kFirstFitFactor * settings_.fit_epochs : settings_.fit_epochs);
  fitted_on_ = results_.size();
  ++fits_;
}

std::vector<Arch> PredictorStrategy::propose() {
  std::vector<const Result*> best;
  for (const auto& [hash, r] : results_) best.push_back(&r);
  const size_t parents = std::min(kParents, best.size());
  std::partial_sort(best.begin(), best.begin() + static_cast<std::ptrdiff_t>(parents), best.end(),
                    [&](const Result* a, const Result* b) {
                      if (a->value != b->value) return a->value > b->value;
                      return space_.hash(a->arch) < space_.hash(b->arch);
                    });
  const size_t want = static_cast<size_t>(settings_.candidates);
  std::vector<Arch> out;
  std::unordered_set<uint64_t> proposed, proposed_equivalent;
  // A neighbourhood used up (all asked or refused) ends the proposal early;
  // the attempts bound the work when most children are taken.
  for (size_t attempt = 0; out.size() < want && attempt < 20 * want; ++attempt) {
    Arch a = (attempt + 1) % kRandomEvery == 0
                 ? space_.sample(rng_)
                 : space_.mutate(best[rng_.below(parents)]->arch, rng_);
    const uint64_t h = space_.hash(a);
    if (seen_.count(h) || proposed.count(h)) continue;
    // A cell that computes the same function as one asked or proposed already
    // (isomorphic, or differing only in dead edges) would spend a query on
    // what is known but for training noise.
    const uint64_t e = fnv1a64(space_.equivalence_key(a));
    if (seen_equivalent_.count(e) || proposed_equivalent.count(e) || !admissible(a)) continue;
    proposed.insert(h);
    proposed_equivalent.insert(e);
    out.push_back(std::move(a));
  }
  return out;
}

std::optional<Candidate> PredictorStrategy::ask() {
  auto pick = [&](const Arch& a) {
    seen_.insert(space_.hash(a));
    seen_equivalent_.insert(fnv1a64(space_.equivalence_key(a)));
    return Candidate{a, std::nullopt, {}};
  };
  if (initial_asked_ < settings_.initial_samples || results_.empty()) {
    auto a = take_initial(space_, seen_);
    if (!a) a = sample_unseen(space_, rng_, seen_);
    if (!a) return std::nullopt;
    if (initial_asked_ < settings_.initial_samples) ++initial_asked_;
    last_.reset();
    return pick(*a);
  }
  if (results_.size() != fitted_on_) refit();
  const std::vector<Arch> candidates = propose();
  if (candidates.empty()) {
    auto a = sample_unseen(space_, rng_, seen_);
    if (!a) return std::nullopt;
    last_.reset();
    return pick(*a);
  }
  size_t chosen = 0;
  double top = -INFINITY;
  Prediction chosen_prediction;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Prediction p = predictor_.predict(features(candidates[i]));
    const double draw = p.mean + p.std * normal(rng_);
    if (draw > top) {
      top = draw;
      chosen = i;
      chosen_prediction = p;
    }
  }
  last_ = chosen_prediction;
  return pick(candidates[chosen]);
}

void PredictorStrategy::tell(const Arch& arch, const Score& score) {
  if (score.pruned || !score.feasible) return;
  results_.insert_or_assign(space_.hash(arch), Result{arch, score.value});
}

void PredictorStrategy::replay(const Arch& arch, const std::optional<Score>& score) {
  seen_.insert(space_.hash(arch));
  seen_equivalent_.insert(fnv1a64(space_.equivalence_key(arch)));
  if (score) tell(arch, *score);
}

nlohmann::json PredictorStrategy::take_snapshot() {
  nlohmann::json j = {{"results", results_.size()},
                      {"fits", fits_},
                      {"predicted", last_ ? nlohmann::json(last_->mean) : nlohmann::json()},
                      {"std", last_ ? nlohmann::json(last_->std) : nlohmann::json()}};
  fits_ = 0;
  return j;
}

nlohmann::json PredictorStrategy::save() const {
  nlohmann::json j = base_state();
  j["strategy"] = name();
  j["rng"] = rng_.state();
  j["initial_asked"] = initial_asked_;
  j["fitted_on"] = fitted_on_;
  j["ensemble"] = predictor_.save();
  return j;
}

void PredictorStrategy::restore(const nlohmann::json& state) {
  try {
    if (state.at("strategy") != name())
      throw Error("strategy state",
                  "is for " + state.at("strategy").dump() + ", not '" + name() + "'");
    rng_.set_state(state.at("rng").get<std::array<uint64_t, 4>>());
    initial_asked_ = state.at("initial_asked").get<int64_t>();
    fitted_on_ = state.at("fitted_on").get<size_t>();
    predictor_.restore(state.at("ensemble"), "strategy state /ensemble");
    restore_base(state);
  } catch (const nlohmann::json::exception& e) {
    throw Error("strategy state", e.what());
  }
  seen_.clear();  // rebuilt by replay
  seen_equivalent_.clear();
  results_.clear();
  last_.reset();
}

}  // namespace minas
