#pragma once
// A training recipe: how a candidate network is trained (optimizer, learning-rate
// schedule, loss, augmentation, budget). Written as JSON; one annotated parameter
// table (recipe_params()) is the single source of truth for its fields, types,
// defaults, ranges and documentation, LightGBM style: parsing, validation, the
// CLI's flags and docs/recipe.md are all read from it.
//
// The defaults reproduce shared/bench/torch_ref.py: SGD with Nesterov momentum,
// weight decay 5e-4 added to the gradient (PyTorch's coupled L2), OneCycleLR to a
// peak of 0.2 with PyTorch's defaults (so momentum cycles 0.95 -> 0.85 -> 0.95 and
// the 0.9 given to SGD is overridden), label smoothing 0.1, batch 128, one epoch,
// no augmentation, seed 0. The reference trains on all 60000 images and 2 threads:
// set "val_size": 0 and "threads": 2 to reproduce its run exactly.
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

// Enumerators are in the order of their names in the parameter table.
enum class OptimizerKind { sgd, lars };
enum class WeightDecayMode { coupled, decoupled };
enum class ScheduleKind { onecycle, cosine, constant };
enum class AnnealStrategy { cos, linear };
enum class Precision { fp32, bf16, fp16 };
enum class FractionSchedule { short_run, cut };

struct Recipe {
  // Budget: at least one of the two is nonzero; with both, training stops at
  // whichever comes first.
  int64_t epochs{};
  double time_budget_s{};
  // Reduced fidelity: stop after this share of the run's steps, the schedule
  // planned over the shortened run (short_run) or the full run's, cut there.
  double run_fraction{};
  FractionSchedule fraction_schedule{};
  int64_t batch{};

  OptimizerKind optimizer{};
  double lr{};  // the peak learning rate (OneCycleLR's max_lr)
  double momentum{};
  bool nesterov{};
  double weight_decay{};
  WeightDecayMode weight_decay_mode{};
  bool no_decay_bn_bias{};
  double lars_eta{};

  ScheduleKind schedule{};
  double warmup_epochs{};  // cosine only
  // onecycle only, named and defaulted as torch.optim.lr_scheduler.OneCycleLR.
  double pct_start{};
  double div_factor{};
  double final_div_factor{};
  AnnealStrategy anneal_strategy{};
  bool cycle_momentum{};
  double base_momentum{};
  double max_momentum{};

  double label_smoothing{};
  int64_t crop_pad{};
  bool hflip{};
  int64_t val_size{};
  // Reduced fidelity: train on a stratified, seeded sample of the training
  // split (what val_size leaves), as a share of it or as a count.
  double subset_fraction{};
  int64_t subset_size{};
  uint64_t seed{};
  int64_t threads{};
  Precision precision{};

  Recipe();  // every field at its table default (the {} above only zero-initializes)

  // Reads a recipe object; absent fields keep their defaults. `origin` names the
  // document in errors ("recipe.json"). Throws Error for unknown fields, wrong
  // types, out-of-range values and inconsistent combinations.
  static Recipe from_json(const nlohmann::json& doc, const std::string& origin);
  static Recipe parse(std::string_view text, const std::string& origin);  // JSON text
  static Recipe load(const std::string& path);                            // a JSON file
  nlohmann::json to_json() const;  // every field, so the recipe is complete on its own

  // Sets the fields present in `doc` over the current values, then validates.
  void update(const nlohmann::json& doc, const std::string& origin);
  // Sets one field from a value written as text (a CLI flag: "0.1", "true", "sgd").
  void set(std::string_view name, std::string_view text, const std::string& origin);
  // Checks constraints between fields; the table checks each field on its own.
  void validate(const std::string& origin) const;

  bool operator==(const Recipe&) const = default;
};

enum class ParamType { integer, unsigned_integer, number, boolean, choice };
const char* param_type_name(ParamType t);  // "int", "uint64", "number", "bool", "string"

// One row of the parameter table.
struct RecipeParam {
  std::string_view name;  // the JSON field and, with '-' for '_', the CLI flag
  ParamType type;
  nlohmann::json default_value;
  // integer and number: the allowed interval, open at an end where *_open.
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;
  std::vector<std::string_view> values;  // choice: the allowed strings
  std::string_view description;          // one line
  std::function<nlohmann::json(const Recipe&)> get;
  // Stores a value the table has already checked for type and range.
  std::function<void(Recipe&, const nlohmann::json&)> set;

  std::string range_text() const;  // "[1, 65536]", "> 0", "sgd | lars", "true | false"
};

// The table, in documentation order.
const std::vector<RecipeParam>& recipe_params();
const RecipeParam* find_recipe_param(std::string_view name);  // nullptr if unknown
// The table as a markdown table (name, type, default, range, description).
std::string recipe_params_markdown();

}  // namespace minas
