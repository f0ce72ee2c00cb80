#pragma once
// How the controller asks what to train next and tells what came of it.
//
// A strategy is asynchronous: ask may be called again before earlier asks are
// told, as workers free up, and results arrive in any order. Nothing waits for
// a generation.
//
// State and resume: save() is the strategy's decision state (its RNG, its
// population or policy) and is written to the store in the same transaction
// as the trials and results that changed it. What can be rebuilt from the
// trials themselves (which architectures were asked, their results) is left
// out of save() and rebuilt by replay(), called after restore() for every
// trial of the experiment in trial order. A search killed and resumed thus
// continues with exactly the decisions it would have made.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/objective.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"

namespace minas {

// One architecture to train, and where it came from.
struct Candidate {
  Arch arch;
  std::optional<Arch> parent;  // evolution: the tournament winner it mutates
  std::string mutation;        // what changed from the parent: "DECISION: FROM -> TO"
};

// An architecture scored at initialization, without training, at the start of
// a search (controller/screening.h): a higher score is predicted better.
struct Screened {
  Arch arch;
  double score = 0;
};

// Everything a strategy is configured with; stored with the experiment.
struct StrategySettings {
  std::string name = "random";  // a name of the registry (controller/strategy_registry.h)
  uint64_t seed = 0;
  // Each strategy's own settings, their file fields, flags and checks: the
  // registry's rows (controller/strategy_registry.h); these initializers are
  // their defaults.
  // evolution (Real et al. 2019; NAS-Bench-201's baseline uses P=10, S=3)
  int population = 10;
  int tournament = 3;
  // reinforce: Adam on the policy's logits, an exponential moving average of
  // the reward as baseline, and an entropy bonus
  double learning_rate = 0.1;
  double baseline_decay = 0.9;
  double entropy_weight = 0.001;
  // stratified: architectures sampled, one per stratum of parameter count
  int sample_size = 60;
  // predictor (BANANAS): uniform asks before the first fit, architectures
  // rated per ask, members of the ensemble, passes over the results per refit
  int initial_samples = 20;
  int candidates = 100;
  int ensemble_size = 5;
  int fit_epochs = 10;
  Objective objective;
  // Warm start (random, evolution and predictor): canonical keys of architectures asked
  // first, in this order, before anything is sampled; those already tried or
  // refused by the constraints are skipped. REINFORCE ignores them: its
  // updates assume samples drawn from its own policy.
  std::vector<std::string> initial;

  // Throws Error naming `where` and the field.
  static StrategySettings from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  // The next candidate; nullopt when the strategy has none left. Candidates
  // that break a constraint checkable before training are never returned.
  virtual std::optional<Candidate> ask() = 0;
  // A finished (or pruned: score.pruned) trial.
  virtual void tell(const Arch& arch, const Score& score) = 0;
  // A trial that failed for good (after its retries).
  virtual void tell_failure(const Arch& arch) = 0;
  virtual nlohmann::json save() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;
  // After restore(): a trial the store holds, with its score if it finished
  // (not pruned, not failed). Rebuilds only what save() leaves out.
  virtual void replay(const Arch& arch, const std::optional<Score>& score) = 0;
  virtual std::string name() const = 0;
  // A summary of the decision state for people (the dashboard's search
  // internals), not for resuming: null when the strategy keeps none worth
  // showing. May reset what it accumulates between two snapshots.
  virtual nlohmann::json take_snapshot() { return nullptr; }
  // Before the first ask of each run (after restore() and replay()): the
  // architectures the search screened at its start that got a score, best
  // first, ties by key. The same list in every run of an experiment, so what
  // a strategy builds from it is rebuilt here, not saved. Ignored by default.
  virtual void screened(const std::vector<Screened>& best_first) { (void)best_first; }
  // The architectures a later ask may still name as a candidate's parent
  // (evolution: its population), whose final weights a child may inherit;
  // nullopt for a strategy that never names parents.
  virtual std::optional<std::vector<std::string>> possible_parents() const { return std::nullopt; }

  // The check applied before training: the broken constraint, or nullopt.
  using Filter = std::function<std::optional<std::string>(const Arch&)>;
  void set_filter(Filter f) { filter_ = std::move(f); }
  // Candidates refused by the filter so far (in the saved state).
  int64_t rejected() const { return rejected_; }
  // The warm-start architectures (StrategySettings::initial), asked first.
  void set_initial(std::vector<Arch> initial) { initial_ = std::move(initial); }

 protected:
  bool admissible(const Arch& a);  // counts a rejection
  nlohmann::json base_state() const {
    return {{"rejected", rejected_}, {"initial_next", initial_next_}};
  }
  void restore_base(const nlohmann::json& state);
  // The k best screened architectures join the warm start, after the settings' own.
  void add_initial_best(const std::vector<Screened>& best_first, size_t k);
  // The next warm-start architecture not in `seen` that passes the filter;
  // nullopt once the list is spent.
  std::optional<Arch> take_initial(const Space& space, const std::unordered_set<uint64_t>& seen);
  // An architecture not in `seen` that passes the filter, uniform among those
  // (rejection sampling, then enumeration of what is left); nullopt when
  // there is none. Throws Error when the filter refuses every one of many
  // samples: the constraints leave (almost) nothing.
  std::optional<Arch> sample_unseen(const Space& space, Rng& rng,
                                    const std::unordered_set<uint64_t>& seen);

 private:
  Filter filter_;
  int64_t rejected_ = 0;
  int64_t rejected_in_a_row_ = 0;
  std::vector<Arch> initial_;
  size_t initial_next_ = 0;  // in the saved state
};

// Builds the named strategy (its registry entry's factory), with the warm
// start and the objective's pre-training constraints installed as its filter.
std::unique_ptr<Strategy> make_strategy(const Space& space, const StrategySettings& settings);

// Uniform over the space, never repeating an architecture already asked in
// this experiment; nullopt once every architecture has been asked.
class RandomStrategy final : public Strategy {
 public:
  RandomStrategy(const Space& space, uint64_t seed);
  std::optional<Candidate> ask() override;
  void tell(const Arch&, const Score&) override {}
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, const std::optional<Score>&) override {
    asked_.insert(space_.hash(arch));
  }
  std::string name() const override { return "random"; }

 private:
  const Space& space_;
  Rng rng_;
  std::unordered_set<uint64_t> asked_;  // hashes of canonical keys
};

// Regularized (aging) evolution, asynchronous: the first P asks are random;
// after that each ask runs a tournament of S members drawn (with replacement)
// from the population, mutates the winner in one decision, and each result
// joins the population while its oldest member leaves. A child already tried
// is not tried again: the mutation is redrawn.
//
// Pareto mode (objective.pareto set): NSGA-II style. The tournament winner is
// the member of lowest non-dominated rank, then largest crowding distance, and
// when the population is full the member of highest rank and smallest
// crowding leaves instead of the oldest, so the front is kept.
class EvolutionStrategy final : public Strategy {
 public:
  EvolutionStrategy(const Space& space, const StrategySettings& settings);
  std::optional<Candidate> ask() override;
  void tell(const Arch& arch, const Score& score) override;
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, const std::optional<Score>&) override {
    seen_.insert(space_.hash(arch));
  }
  std::string name() const override { return "evolution"; }
  // The population starts from the best screened architectures.
  void screened(const std::vector<Screened>& best_first) override {
    add_initial_best(best_first, static_cast<size_t>(size_));
  }
  // {"population": [score, ...]} oldest first, with "cost": [...] in Pareto mode.
  nlohmann::json take_snapshot() override;
  std::optional<std::vector<std::string>> possible_parents() const override;

  struct Member {
    std::string key;
    double value = 0, cost = 0;
  };
  const std::vector<Member>& population() const { return population_; }  // oldest first

 private:
  size_t select();  // the tournament winner's index

  const Space& space_;
  int size_, tournament_;
  bool pareto_;
  Rng rng_;
  int64_t initial_asked_ = 0;
  std::vector<Member> population_;
  std::unordered_set<uint64_t> seen_;
};

// REINFORCE over an independent softmax per decision (as NAS-Bench-201's
// baseline): each result updates the policy at once by Adam on
// (reward - baseline) * grad log p(arch) + entropy_weight * grad H, the
// baseline an exponential moving average of the rewards. A sample already
// tried is not trained again: its stored reward updates the policy once more
// (free information) and another is drawn; a sample that breaks a constraint
// gets reward 0.
class ReinforceStrategy final : public Strategy {
 public:
  ReinforceStrategy(const Space& space, const StrategySettings& settings);
  std::optional<Candidate> ask() override;
  void tell(const Arch& arch, const Score& score) override;
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, const std::optional<Score>& score) override;
  std::string name() const override { return "reinforce"; }
  // {"reward": mean reward of the updates since the last snapshot (null: none),
  //  "baseline", "entropy", "updates": policy updates so far}
  nlohmann::json take_snapshot() override;

  // The policy's probabilities for one decision.
  std::vector<double> probabilities(size_t decision) const;
  double baseline() const { return baseline_; }
  double entropy() const;  // summed over decisions, in nats

 private:
  void update(const Arch& arch, double reward);

  const Space& space_;
  StrategySettings settings_;
  Rng rng_;
  std::vector<std::vector<double>> logits_, m_, v_;  // per decision, per option
  int64_t steps_ = 0;
  double baseline_ = 0;
  bool has_baseline_ = false;
  std::unordered_set<uint64_t> seen_;
  std::unordered_map<uint64_t, double> known_;  // hash -> reward of a finished trial
  double reward_sum_ = 0;                       // since the last snapshot (not in the saved state)
  int64_t reward_count_ = 0;
};

}  // namespace minas
