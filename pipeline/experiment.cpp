#include "pipeline/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "trainer/data.h"
#include "trainer/proxies.h"

namespace minas::pipeline {
namespace {

// The ranges of the settings (an experiment file's field meets its flag's
// check): beyond them a value is a typo, not an experiment.
constexpr double kMaxTrials = 1'000'000'000;
constexpr double kMaxSeconds = 1e9;  // some 30 years
constexpr double kMaxEpochs = 100000;
constexpr double kMaxSlotsPerTrial = 1024;
constexpr double kMaxScreened = 10'000'000;
constexpr double kMaxScreenBatch = 1024;  // proto::kMaxScreenBatch

std::vector<ExperimentParam> make_table() {
  using S = ExperimentSettings;
  return {
      {"name", +[](S& s) -> std::string& { return s.config.name; }, "", 0, 0,
       "Experiment name (an existing one is resumed)"},
      {"space", +[](S& s) -> std::string& { return s.space; }, "small", 0, 0,
       "Search space (name or file, with overrides)"},
      {"data", +[](S& s) -> std::string& { return s.config.data; }, "fashion-mnist", 0, 0,
       "Data set the workers train on, or 'simulated'"},
      {"recipe", +[](S& s) -> std::string& { return s.recipe; }, "", 0, 0,
       "Training recipe (JSON file)"},
      {"trials", +[](S& s) -> int64_t& { return s.config.budget_trials; }, "100", 1, kMaxTrials,
       "Trial budget"},
      {"seconds", +[](S& s) -> double& { return s.config.budget_seconds; }, "0", 0, kMaxSeconds,
       "Wall-clock budget, 0 for none"},
      {"fidelity", +[](S& s) -> int& { return s.config.fidelity; }, "0", 0, kMaxEpochs,
       "Epochs per trial, 0 for the recipe's"},
      {"trial_fraction", +[](S& s) -> double& { return s.config.trial_fraction; }, "1", 0.01, 1,
       "Share of its epochs' steps a trial trains, the schedule planned over that share (a "
       "short complete run ranks networks better than the start of a long one); 1: all"},
      {"seed", +[](S& s) -> uint64_t& { return s.config.seed; }, "0", 0, 0, "Strategy seed"},
      {"gpus_per_trial", +[](S& s) -> int& { return s.config.gpus_per_trial; }, "1", 1,
       kMaxSlotsPerTrial,
       "Device slots of one worker a trial trains on, data parallel (GPUs; CPU slots "
       "likewise)"},
      {"train_pool", +[](S& s) -> std::string& { return s.config.train_pool; }, "", 0, 0,
       "Only workers of this pool (minas worker --pool) train; default: any"},
      {"latency_pool", +[](S& s) -> std::string& { return s.config.latency_pool; }, "", 0, 0,
       "Workers of this pool measure each architecture's batch-1 latency (on the objective's "
       "latency device, else their own) before it is trained elsewhere"},
      {"screen", +[](S& s) -> int64_t& { return s.config.screen; }, "0", 0, kMaxScreened,
       "Architectures sampled and scored at initialization on the workers (no training) before "
       "any trial; evolution and predictor start from the best; 0: off"},
      {"screen_evaluator", +[](S& s) -> std::string& { return s.config.screen_evaluator; },
       "synflow", 0, 0,
       "What screening scores by: naswot, synflow, grad_norm, jacob_cov, params or macs, or "
       "several joined by + (synflow+params: the sum of the ranks under each)"},
      {"screen_batch", +[](S& s) -> int& { return s.config.screen_batch; }, "50", 1,
       kMaxScreenBatch, "Architectures per screening request to a worker slot"},
      {"screen_order", +[](S& s) -> std::string& { return s.config.screen_order; }, "score", 0, 0,
       "The order the strategy takes the screened in: score (best first) or front (Pareto "
       "fronts of score against MACs, each cheapest first)"},
      {"inherit", +[](S& s) -> bool& { return s.config.inherit; }, "false", 0, 1,
       "Evolution children train from their parent's final weights in every layer the mutation "
       "left unchanged (a warm start; the final training never inherits)"},
  };
}

std::string type_name(const SettingField& f) {
  switch (f.index()) {
    case 0:
      return "string";
    case 1:
      return "int64";
    case 2:
      return "int";
    case 3:
      return "uint64";
    case 5:
      return "bool";
    default:
      return "number";
  }
}

std::string bound(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, v == std::floor(v) ? "%.0f" : "%g", v);
  return buf;
}

std::string allowed(const ExperimentParam& p) {
  if (p.field.index() == 0) return "-";
  if (p.field.index() == 3) return "any";
  if (p.field.index() == 5) return "true, false";
  return "[" + bound(p.min) + ", " + bound(p.max) + "]";
}

}  // namespace

const std::vector<ExperimentParam>& experiment_params() {
  static const std::vector<ExperimentParam> table = make_table();
  return table;
}

const ExperimentParam& experiment_param(std::string_view name) {
  for (const ExperimentParam& p : experiment_params())
    if (p.name == name) return p;
  throw std::logic_error("experiment_param: no setting '" + std::string(name) + "'");
}

std::string experiment_params_markdown() {
  std::string md =
      "| field | flag | type | default | allowed | meaning |\n|---|---|---|---|---|---|\n";
  for (const ExperimentParam& p : experiment_params()) {
    std::string flag = "--" + std::string(p.name);
    for (char& c : flag)
      if (c == '_') c = '-';
    md += "| `" + std::string(p.name) + "` | `" + flag + "` | " + type_name(p.field) + " | " +
          (p.default_text.empty() ? "-" : std::string(p.default_text)) + " | " + allowed(p) +
          " | " + std::string(p.description) + " |\n";
  }
  return md;
}

Recipe experiment_recipe(const ExperimentSettings& s, const std::string& experiment_file) {
  if (!s.recipe_inline.is_null())
    return Recipe::from_json(s.recipe_inline, experiment_file + ": /recipe");
  return s.recipe.empty() ? Recipe() : Recipe::load(s.recipe);
}

ExperimentConfig experiment_config(const ExperimentSettings& s, const Recipe& recipe,
                                   const StrategySettings& strategy,
                                   std::optional<AshaSettings> asha) {
  ExperimentConfig cfg = s.config;
  if (cfg.screen > 0) {
    const std::vector<std::string> members = screen_members(cfg.screen_evaluator);
    for (size_t i = 0; i < members.size(); ++i) {
      if (!proxy_from_name(members[i]))
        throw Error("--screen-evaluator",
                    "unknown evaluator '" + printable_excerpt(members[i], 40) + "' in '" +
                        printable_excerpt(cfg.screen_evaluator, 80) +
                        "' (evaluators: " + proxy_names() + ", or several joined by +)");
      if (std::find(members.begin(), members.begin() + static_cast<long>(i), members[i]) !=
          members.begin() + static_cast<long>(i))
        throw Error("--screen-evaluator", "'" + members[i] + "' is named twice in '" +
                                              printable_excerpt(cfg.screen_evaluator, 80) + "'");
    }
  }
  if (cfg.screen_order != "score" && cfg.screen_order != "front")
    throw Error("--screen-order",
                "'" + printable_excerpt(cfg.screen_order, 40) + "' is not score or front");
  cfg.recipe = recipe.to_json();
  // Short trials: the trials' recipe stops at that share of its steps with
  // the schedule planned over them; the store keeps the recipe so.
  if (cfg.trial_fraction < 1) {
    cfg.recipe["run_fraction"] = cfg.trial_fraction;
    cfg.recipe["fraction_schedule"] = "short";
  }
  cfg.strategy_settings = strategy.to_json();
  cfg.objective = strategy.objective;
  cfg.asha = std::move(asha);
  return cfg;
}

void fingerprint_data(ExperimentConfig& cfg, bool with_files) {
  cfg.data_fingerprint = data::load_dataset(cfg.data).train.fingerprint();
  if (with_files) cfg.data_files = data::dataset_files(cfg.data);
}

}  // namespace minas::pipeline
