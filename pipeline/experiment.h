#pragma once
// An experiment's settings as a user gives them, as flags or as the fields of
// an experiment file: one annotated parameter table (experiment_params()),
// LightGBM style, as the recipe's (trainer/recipe.h). Each row binds a field
// of ExperimentSettings, so the command line's options, the experiment
// files' fields, their ranges and the generated docs come from one place, and
// experiment_config() is the one place an ExperimentConfig is completed.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/asha.h"
#include "controller/experiment_config.h"
#include "controller/strategy.h"
#include "trainer/recipe.h"

namespace minas::pipeline {

struct ExperimentSettings {
  ExperimentConfig config;       // the fields the table sets: name, data, budgets, ...
  std::string space = "small";   // the search space: a name or a file, with overrides
  std::string recipe;            // a recipe file; empty: the default recipe
  nlohmann::json recipe_inline;  // an experiment file's "recipe" object; null: none
};

// A row's field: where in the settings its value lives, of the option's type.
template <class T>
using SettingRef = T& (*)(ExperimentSettings&);
using SettingField = std::variant<SettingRef<std::string>, SettingRef<int64_t>, SettingRef<int>,
                                  SettingRef<uint64_t>, SettingRef<double>, SettingRef<bool>>;

// One row of the table.
struct ExperimentParam {
  std::string_view name;  // the experiment file's field; the flag is --NAME, '-' for '_'
  SettingField field;
  std::string_view default_text;  // the flag's default as written; empty: none
  // Numbers: the allowed interval, both ends in (an unsigned field takes any
  // value of its type).
  double min = 0, max = 0;
  std::string_view description;  // the help line (`minas controller`'s)
};

// The table, in the order of `minas controller --help`.
const std::vector<ExperimentParam>& experiment_params();
// The row named `name`; throws std::logic_error for a name not in the table
// (a programmer's error: the names are the code's).
const ExperimentParam& experiment_param(std::string_view name);
// The table as markdown: field, flag, type, default, allowed, meaning.
std::string experiment_params_markdown();

// The recipe the settings name: the experiment file's object (errors named
// "FILE: /recipe"), else the recipe file, else the default recipe.
Recipe experiment_recipe(const ExperimentSettings& settings, const std::string& experiment_file);

// The experiment's config: the table's fields, the recipe, and the
// strategy's settings, objective and early stopping. The data set's
// fingerprint and files are fingerprint_data's.
ExperimentConfig experiment_config(const ExperimentSettings& settings, const Recipe& recipe,
                                   const StrategySettings& strategy,
                                   std::optional<AshaSettings> asha);

// Reads config.data to record its fingerprint (which workers check) and,
// when `with_files`, its files (sent to a worker that lacks them). Throws
// Error when the data set cannot be read here.
void fingerprint_data(ExperimentConfig& config, bool with_files);

}  // namespace minas::pipeline
