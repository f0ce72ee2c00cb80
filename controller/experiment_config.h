#pragma once
// What an experiment is, as the controller keeps it: created on first run,
// checked on resume. Filled from a user's settings by the parameter table of
// pipeline/experiment.h.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/asha.h"
#include "controller/objective.h"

namespace minas {

// What the experiment is: created on first run, checked on resume.
struct ExperimentConfig {
  std::string name;
  std::string data = "fashion-mnist";
  std::string data_fingerprint;  // empty: not checked by workers
  // The data set's files (data::dataset_files), sent to a worker that lacks
  // them; empty when the controller cannot read the data set itself.
  std::vector<std::string> data_files;
  nlohmann::json recipe = nlohmann::json::object();
  int fidelity = 0;  // epochs per trial; 0: the recipe's
  // A trial trains this share of its epochs' steps, the learning-rate
  // schedule planned over that share (the recipe's run_fraction, schedule
  // "short"): a complete short run whose accuracy ranks networks better than
  // the first steps of a long one (experiments/evaluators.md). 1: all.
  // Below 1 there are no ASHA rungs, no inheritance, and the recipe has no
  // time budget.
  double trial_fraction = 1;
  // Device slots of one worker each trial trains on, data parallel (GPUs for
  // a GPU pool; CPU slots of a CPU worker likewise).
  int gpus_per_trial = 1;
  // Pools (minas worker --pool): only train_pool's workers train (empty: any
  // worker); with latency_pool, each new trial is first measured by a worker
  // of that pool (batch-1 latency on the objective's latency device, else on
  // that worker's slot, with params and MACs) and trained after, elsewhere.
  std::string train_pool, latency_pool;
  int64_t budget_trials = 100;  // trials to finish (done or failed for good)
  double budget_seconds = 0;    // wall-clock budget; 0: none
  uint64_t seed = 0;
  // How the strategy was configured (StrategySettings::to_json()), stored with
  // the experiment and checked on resume; null: {"name": ..., "seed": seed}.
  nlohmann::json strategy_settings;
  // What results are scored by; must be the strategy's own objective.
  Objective objective;
  // Early stopping over epochs; the trials run `fidelity` epochs (or the
  // recipe's), and the rungs must lie below that.
  std::optional<AshaSettings> asha;
  // Screening (controller/screening.h): before any trial, `screen`
  // architectures sampled from the seed are scored at initialization by
  // `screen_evaluator` on the workers, in requests of `screen_batch`, and the
  // strategy starts from the best. 0: off. The evaluator is a proxy of
  // trainer/proxies.h, or several joined by '+' ("synflow+params"): each is
  // scored and stored, and an architecture's score is the sum of its ranks
  // among the screened under each (screen_members).
  int64_t screen = 0;
  std::string screen_evaluator = "synflow";
  int screen_batch = 50;
  // The order the strategy takes the screened architectures in: "score"
  // (best first) or "front" (successive Pareto fronts of score against
  // MACs, each cheapest first: the best-scoring architecture at every cost
  // before the second best of any; controller/screening.h).
  std::string screen_order = "score";
  // Weight inheritance: an evolution child trains from its parent's final
  // weights in every layer the mutation left unchanged (trainer/inherit.h).
  // The controller keeps each finished trial's final state while a child may
  // still inherit it (controller/checkpoints.h). Needs a fixed number of
  // epochs per trial (fidelity, or the recipe's epochs without a time budget).
  bool inherit = false;
};

// The evaluators a screen_evaluator names, in its order: the parts of it
// joined by '+' (one for a single proxy). Empty parts come back as they are,
// for the caller to refuse.
inline std::vector<std::string> screen_members(const std::string& evaluator) {
  std::vector<std::string> out;
  size_t from = 0;
  for (size_t plus; (plus = evaluator.find('+', from)) != std::string::npos; from = plus + 1)
    out.push_back(evaluator.substr(from, plus - from));
  out.push_back(evaluator.substr(from));
  return out;
}

}  // namespace minas
