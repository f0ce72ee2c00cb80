#pragma once
// Predictor-guided search after BANANAS (White et al. 2021, "BANANAS:
// Bayesian Optimization with Neural Architectures for Neural Architecture
// Search"): an ensemble of MLPs (controller/predictor.h) is fitted on the
// results so far, and each ask trains the candidate it rates best.
//
// The warm start (StrategySettings::initial) and then `initial_samples`
// uniform draws come first. After that each ask:
//   1. refits the ensemble on every result told so far, if any arrived since
//      the last fit (warm: from the members' current weights, `fit_epochs`
//      passes; the first fit runs ten times as many from the initialization);
//   2. proposes up to `candidates` architectures never asked, not equivalent
//      to one asked (Space::equivalence_key: the same function) and admitted
//      by the constraints: one-decision mutations of the ten best results so
//      far (nine in ten), and uniform draws (one in ten);
//   3. asks the candidate of the highest independent Thompson sample, one
//      draw from N(mean, std) of the ensemble's prediction for each.
// Asynchronous: asks in flight are simply not results yet; they are never
// proposed again.
//
// What the ensemble learns from: finished, feasible results. A pruned result
// (ASHA) is an accuracy at a lower fidelity than every other result, and an
// infeasible one broke a constraint measured after training; neither trains
// the ensemble nor becomes a parent, and neither is asked again. (The store's
// replay carries no score for pruned trials either, so this is also what a
// resumed run can rebuild.)
//
// State: save() holds the RNG, the ensemble's weights and member RNGs, and
// how many results the last fit saw; the results themselves are rebuilt by
// replay(). The ensemble is fitted on the results in a canonical order (by
// architecture hash), not in the order they were told, so a killed and
// resumed run fits, and asks, exactly as the run that was never killed.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "controller/predictor.h"
#include "controller/strategy.h"

namespace minas {

class PredictorStrategy final : public Strategy {
 public:
  PredictorStrategy(const Space& space, const StrategySettings& settings);
  std::optional<Candidate> ask() override;
  void tell(const Arch& arch, const Score& score) override;
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, const std::optional<Score>& score) override;
  std::string name() const override { return "predictor"; }
  // The initial samples start from the best screened architectures.
  void screened(const std::vector<Screened>& best_first) override {
    add_initial_best(best_first, static_cast<size_t>(settings_.initial_samples));
  }
  // {"results": results the ensemble learns from, "fits": fits since the
  //  last snapshot, "predicted", "std": the last ask's prediction for what it
  //  asked (null: no model yet)}
  nlohmann::json take_snapshot() override;

  // The results the ensemble learns from (finished, feasible), by hash.
  size_t results() const { return results_.size(); }
  const Predictor& predictor() const { return predictor_; }
  // The features the ensemble sees for an architecture.
  std::vector<float> features(const Arch& a) const { return space_.one_hot(a); }

 private:
  struct Result {
    Arch arch;
    double value = 0;
  };
  void refit();
  std::vector<Arch> propose();

  const Space& space_;
  StrategySettings settings_;
  Rng rng_;
  Predictor predictor_;
  int64_t initial_asked_ = 0;
  size_t fitted_on_ = 0;  // results_.size() at the last fit; 0: never fitted
  std::unordered_set<uint64_t> seen_;
  std::unordered_set<uint64_t> seen_equivalent_;  // hashes of Space::equivalence_key
  std::map<uint64_t, Result> results_;            // by hash: the fit's canonical order
  // For take_snapshot (not in the saved state).
  int64_t fits_ = 0;
  std::optional<Prediction> last_;
};

}  // namespace minas
