#include "controller/strategy_registry.h"

#include <sstream>

#include "controller/predictor_strategy.h"
#include "controller/stratified.h"
#include "searchspace/error.h"

namespace minas {
namespace {

std::unique_ptr<Strategy> make_random(const Space& space, const StrategySettings& s) {
  return std::make_unique<RandomStrategy>(space, s.seed);
}

std::unique_ptr<Strategy> make_evolution(const Space& space, const StrategySettings& s) {
  return std::make_unique<EvolutionStrategy>(space, s);
}

std::unique_ptr<Strategy> make_stratified(const Space& space, const StrategySettings& s) {
  return std::make_unique<StratifiedStrategy>(space, s);
}

std::unique_ptr<Strategy> make_predictor(const Space& space, const StrategySettings& s) {
  return std::make_unique<PredictorStrategy>(space, s);
}

std::unique_ptr<Strategy> make_reinforce(const Space& space, const StrategySettings& s) {
  return std::make_unique<ReinforceStrategy>(space, s);
}

// The table. The flag ranges and the file ranges differ where they always have
// (the file's learning_rate stops at 10, the flag's at 1000): both are kept as
// they were, the flag's value meeting the file's check after its own.
const std::vector<StrategyEntry>& table() {
  static const std::vector<StrategyEntry> t = {
      {.name = "random",
       .help = "uniform over the space, never an architecture already tried in the experiment",
       .settings = {},
       .pareto = true,
       .make = make_random},
      {.name = "evolution",
       .help = "regularized (aging) evolution (Real et al. 2019): tournament, mutation, the "
               "oldest leaves; NSGA-II selection in Pareto mode",
       .settings = {{.field = "population",
                     .flag = "--population",
                     .help = "population size P",
                     .integer = &StrategySettings::population,
                     .file_lo = 2,
                     .flag_lo = 2,
                     .flag_hi = 1000000},
                    {.field = "tournament",
                     .flag = "--tournament",
                     .help = "tournament size S",
                     .integer = &StrategySettings::tournament,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000000}},
       .pareto = true,
       .make = make_evolution},
      {.name = "reinforce",
       .help = "REINFORCE (Williams 1992) over an independent softmax per decision: Adam on the "
               "logits, a moving-average reward baseline, an entropy bonus",
       .settings = {{.field = "learning_rate",
                     .flag = "--learning-rate",
                     .help = "Adam's step on the logits",
                     .real = &StrategySettings::learning_rate,
                     .file_lo = 1e-9,
                     .file_hi = 10,
                     .flag_lo = 0,
                     .flag_hi = 1000,
                     .flag_lo_open = true},
                    {.field = "baseline_decay",
                     .flag = "--baseline-decay",
                     .help = "the reward baseline's moving-average decay",
                     .real = &StrategySettings::baseline_decay,
                     .file_lo = 0,
                     .file_hi = 1,
                     .flag_lo = 0,
                     .flag_hi = 1},
                    {.field = "entropy_weight",
                     .flag = "--entropy-weight",
                     .help = "weight of the entropy bonus",
                     .real = &StrategySettings::entropy_weight,
                     .file_lo = 0,
                     .file_hi = 10,
                     .flag_lo = 0,
                     .flag_hi = 10}},
       .pareto = false,
       .make = make_reinforce},
      {.name = "predictor",
       .help = "BANANAS (White et al. 2021): an ensemble of MLPs fitted on the results so far "
               "rates mutations of the best ones; the best independent Thompson sample is asked",
       .settings = {{.field = "initial_samples",
                     .flag = "--initial-samples",
                     .help = "uniform asks before the ensemble is first fitted",
                     .integer = &StrategySettings::initial_samples,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000000},
                    {.field = "candidates",
                     .flag = "--candidates",
                     .help = "architectures the ensemble rates per ask",
                     .integer = &StrategySettings::candidates,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000000},
                    {.field = "ensemble_size",
                     .flag = "--ensemble-size",
                     .help = "MLPs in the ensemble",
                     .integer = &StrategySettings::ensemble_size,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000},
                    {.field = "fit_epochs",
                     .flag = "--fit-epochs",
                     .help = "passes over the results per refit (the first fit: ten times as many)",
                     .integer = &StrategySettings::fit_epochs,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000000}},
       .pareto = false,
       .make = make_predictor},
      {.name = "stratified",
       .help = "a fixed seeded sample for a ground-truth table: one architecture from each of N "
               "strata of parameter count, in random order, then done",
       .settings = {{.field = "sample_size",
                     .flag = "--sample-size",
                     .help = "architectures sampled (strata of parameter count)",
                     .integer = &StrategySettings::sample_size,
                     .file_lo = 1,
                     .flag_lo = 1,
                     .flag_hi = 1000000}},
       .pareto = true,
       .make = make_stratified},
  };
  return t;
}

// A setting's default: StrategySettings' own initializer.
std::string default_text(const StrategySetting& s) {
  const StrategySettings defaults;
  std::ostringstream out;
  if (s.integer)
    out << defaults.*(s.integer);
  else
    out << defaults.*(s.real);
  return out.str();
}

}  // namespace

std::span<const StrategyEntry> strategy_registry() {
  return table();
}

const StrategyEntry* strategy_entry(std::string_view name) {
  for (const StrategyEntry& e : table())
    if (name == e.name) return &e;
  return nullptr;
}

const StrategyEntry& find_strategy(const std::string& name, const std::string& where) {
  if (const StrategyEntry* e = strategy_entry(name)) return *e;
  throw Error(where, "unknown strategy '" + name + "' (" + strategy_names_text() + ")");
}

std::vector<std::string> strategy_names() {
  std::vector<std::string> names;
  for (const StrategyEntry& e : table()) names.emplace_back(e.name);
  return names;
}

std::string strategy_names_text(std::string_view last) {
  const std::vector<std::string> names = strategy_names();
  std::string text;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) text += i + 1 == names.size() ? std::string(last) : std::string(", ");
    text += names[i];
  }
  return text;
}

const StrategySetting* strategy_setting(std::string_view field) {
  for (const StrategyEntry& e : table())
    for (const StrategySetting& s : e.settings)
      if (field == s.field) return &s;
  return nullptr;
}

std::string strategies_markdown() {
  std::string md = "| strategy | what it does |\n|---|---|\n";
  for (const StrategyEntry& e : table())
    md += "| `" + std::string(e.name) + "` | " + e.help + " |\n";
  md += "\n| strategy | setting | flag | default | meaning |\n|---|---|---|---|---|\n";
  for (const StrategyEntry& e : table())
    for (const StrategySetting& s : e.settings)
      md += "| " + std::string(e.name) + " | `" + s.field + "` | `" + s.flag + "` | " +
            default_text(s) + " | " + s.help + " |\n";
  return md;
}

}  // namespace minas
