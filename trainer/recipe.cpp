#include "trainer/recipe.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "searchspace/error.h"
#include "searchspace/json_excerpt.h"
#include "searchspace/json_read.h"
#include "searchspace/text_file.h"

namespace minas {

using nlohmann::json;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Range {
  double min = -kInf, max = kInf;
  bool min_open = false, max_open = false;
  Range open_min() const { return {min, max, true, max_open}; }
};
Range between(double lo, double hi) {
  return {lo, hi, false, false};
}
Range at_least(double lo) {
  return {lo, kInf, false, false};
}
Range above(double lo) {
  return {lo, kInf, true, false};
}

// A row bound to the Recipe member m, whose JSON value converts to T.
template <class T>
RecipeParam row(std::string_view name, ParamType type, T Recipe::*m, json def, Range r,
                std::string_view description) {
  RecipeParam p;
  p.name = name;
  p.type = type;
  p.default_value = std::move(def);
  p.min = r.min;
  p.max = r.max;
  p.min_open = r.min_open;
  p.max_open = r.max_open;
  p.description = description;
  p.get = [m](const Recipe& rc) { return json(rc.*m); };
  p.set = [m](Recipe& rc, const json& v) { rc.*m = v.get<T>(); };
  return p;
}

RecipeParam integer(std::string_view name, int64_t Recipe::*m, int64_t def, Range r,
                    std::string_view description) {
  return row(name, ParamType::integer, m, def, r, description);
}

RecipeParam uint64(std::string_view name, uint64_t Recipe::*m, uint64_t def,
                   std::string_view description) {
  return row(name, ParamType::unsigned_integer, m, def, at_least(0), description);
}

RecipeParam number(std::string_view name, double Recipe::*m, double def, Range r,
                   std::string_view description) {
  return row(name, ParamType::number, m, def, r, description);
}

RecipeParam boolean(std::string_view name, bool Recipe::*m, bool def,
                    std::string_view description) {
  return row(name, ParamType::boolean, m, def, Range{}, description);
}

// `values` lists the enumerators' names in the enum's order.
template <class E>
RecipeParam choice(std::string_view name, E Recipe::*m, E def, std::vector<std::string_view> values,
                   std::string_view description) {
  RecipeParam p;
  p.name = name;
  p.type = ParamType::choice;
  p.default_value = std::string(values.at(static_cast<size_t>(def)));
  p.values = values;
  p.description = description;
  p.get = [m, values](const Recipe& rc) {
    return json(std::string(values.at(static_cast<size_t>(rc.*m))));
  };
  p.set = [m, values](Recipe& rc, const json& v) {
    const auto s = v.get<std::string>();
    rc.*m = static_cast<E>(std::find(values.begin(), values.end(), s) - values.begin());
  };
  return p;
}

std::vector<RecipeParam> make_table() {
  using R = Recipe;
  return {
      integer("epochs", &R::epochs, 1, between(0, 1e6),
              "passes over the training set; 0 = as many as time_budget_s allows"),
      number("time_budget_s", &R::time_budget_s, 0, at_least(0),
             "wall-clock limit on training in seconds; 0 = none (epochs or this, or both)"),
      integer("batch", &R::batch, 128, between(1, 65536), "images per optimizer step"),
      choice("optimizer", &R::optimizer, OptimizerKind::sgd, {"sgd", "lars"},
             "sgd: PyTorch's SGD with momentum; lars: SGD with a per-tensor trust ratio"),
      number("lr", &R::lr, 0.2, at_least(0),
             "peak learning rate (onecycle's max_lr; cosine's after warm-up; constant's)"),
      number("momentum", &R::momentum, 0.9, between(0, 1),
             "momentum; unused when onecycle cycles it (cycle_momentum)"),
      boolean("nesterov", &R::nesterov, true, "Nesterov momentum as PyTorch's SGD computes it"),
      number("weight_decay", &R::weight_decay, 5e-4, at_least(0), "weight decay factor"),
      choice("weight_decay_mode", &R::weight_decay_mode, WeightDecayMode::coupled,
             {"coupled", "decoupled"},
             "coupled: wd*w added to the gradient (PyTorch SGD); decoupled: w -= lr*wd*w"),
      boolean("no_decay_bn_bias", &R::no_decay_bn_bias, false,
              "batch-norm parameters and biases skip weight decay"),
      number("lars_eta", &R::lars_eta, 0.001, above(0),
             "LARS trust coefficient: ratio = eta*norm(w) / (norm(g) + wd*norm(w))"),
      choice("schedule", &R::schedule, ScheduleKind::onecycle, {"onecycle", "cosine", "constant"},
             "learning-rate schedule over the steps of the whole training"),
      number("warmup_epochs", &R::warmup_epochs, 0, at_least(0),
             "cosine: epochs of linear warm-up before the cosine decay to 0"),
      number("pct_start", &R::pct_start, 0.3, between(0, 1),
             "onecycle: fraction of the steps spent raising the learning rate"),
      number("div_factor", &R::div_factor, 25, above(0),
             "onecycle: the initial learning rate is lr / div_factor"),
      number("final_div_factor", &R::final_div_factor, 1e4, above(0),
             "onecycle: the final learning rate is lr / div_factor / final_div_factor"),
      choice("anneal_strategy", &R::anneal_strategy, AnnealStrategy::cos, {"cos", "linear"},
             "onecycle: annealing between the phase end points"),
      boolean("cycle_momentum", &R::cycle_momentum, true,
              "onecycle: momentum goes max -> base -> max opposite the learning rate"),
      number("base_momentum", &R::base_momentum, 0.85, between(0, 1),
             "onecycle: momentum at the peak learning rate"),
      number("max_momentum", &R::max_momentum, 0.95, between(0, 1),
             "onecycle: momentum at the start and the end"),
      number("label_smoothing", &R::label_smoothing, 0.1, between(0, 1),
             "cross-entropy label smoothing as PyTorch's: target (1-s)*onehot + s/classes"),
      integer("crop_pad", &R::crop_pad, 0, between(0, 64),
              "random-crop augmentation: zero padding in pixels on each side; 0 = none"),
      boolean("hflip", &R::hflip, false, "random horizontal flip with probability 1/2"),
      // 10000 held out by default: a search must rank candidates on data that is
      // neither trained on nor the test set. 10000 gives a binomial standard error of
      // 0.3% at 90% accuracy, fine enough to rank candidates half a percent apart,
      // equals the test set in size (val and test accuracy equally noisy) and
      // leaves 50000 images (5/6) to train on. 0 trains on all, as torch_ref.py does.
      integer("val_size", &R::val_size, 10000, between(0, 2147483647),
              "training images held out for validation; 0 = train on all"),
      // Reduced fidelity (a data subset, a fraction of the run; issue 20).
      number("subset_fraction", &R::subset_fraction, 1, between(0, 1).open_min(),
             "share of the training split trained on: a sample stratified by class, seeded; "
             "1 = all"),
      integer("subset_size", &R::subset_size, 0, between(0, 2147483647),
              "training images trained on: a sample stratified by class, seeded; 0 = "
              "subset_fraction decides"),
      // run_fraction's schedule is by default planned over the short run: a
      // cheap evaluator then compares networks at the end of a complete,
      // annealed OneCycle, not mid-warm-up at a rising learning rate (cut at
      // 1/8 of a run, OneCycle with pct_start 0.3 is still warming up).
      // `cut` is what the first steps of a full training are: what an ASHA
      // rung inside that training sees.
      number("run_fraction", &R::run_fraction, 1, between(0, 1).open_min(),
             "share of the run's steps (epochs x steps per epoch) trained, then stop; 1 = all"),
      choice("fraction_schedule", &R::fraction_schedule, FractionSchedule::short_run,
             {"short", "cut"},
             "run_fraction below 1: short = the schedule planned over the shortened run; cut = "
             "the full run's schedule, stopped where the fraction ends"),
      uint64("seed", &R::seed, 0, "seed of initialization, shuffling and augmentation"),
      integer("threads", &R::threads, 0, between(0, 4096), "CPU threads; 0 = all cores"),
      choice("precision", &R::precision, Precision::fp32, {"fp32", "bf16", "fp16"},
             "GPU: convolutions and linear layers in bf16 or fp16 on tensor cores (fp32 master "
             "weights, fp16 with dynamic loss scaling); the CPU trains in fp32"),
  };
}

std::string format_number(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (std::trunc(v) == v && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  // The shortest text that reads back as the same value: 0.2, not 0.20000000000000001;
  // 17 significant digits always do.
  char text[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*g", precision, v);
    if (std::strtod(text, nullptr) == v) break;
  }
  return text;
}

std::string type_of(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

std::string show(const json& v) {
  return json_excerpt(v, 60);
}

bool in_range(const RecipeParam& p, double v) {
  if (p.min_open ? !(v > p.min) : !(v >= p.min)) return false;
  if (p.max_open ? !(v < p.max) : !(v <= p.max)) return false;
  return true;
}

[[noreturn]] void wrong_value(const std::string& where, const json& v,
                              const std::string& expected) {
  throw Error(where, "must be " + expected + ", got " + show(v) +
                         (v.is_number() ? "" : " (" + type_of(v) + ")"));
}

// Checks `v` against the parameter's type and range and returns it in the form
// the setter reads (integers as integers even when written 3.0).
json checked(const RecipeParam& p, const json& v, const std::string& where) {
  switch (p.type) {
    case ParamType::integer: {
      const std::string expected = "an integer in " + p.range_text();
      int64_t i = 0;
      if (v.is_number_unsigned()) {
        if (v.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()})
          wrong_value(where, v, expected);
        i = v.get<int64_t>();
      } else if (v.is_number_integer()) {
        i = v.get<int64_t>();
      } else if (v.is_number_float()) {
        const double d = v.get<double>();
        // Beyond 2^53 a double no longer says which integer was meant.
        if (!(std::trunc(d) == d && std::fabs(d) < 9007199254740992.0))
          wrong_value(where, v, expected);
        i = static_cast<int64_t>(d);
      } else {
        wrong_value(where, v, expected);
      }
      if (!in_range(p, static_cast<double>(i))) wrong_value(where, v, expected);
      return i;
    }
    case ParamType::unsigned_integer: {
      if (v.is_number_unsigned()) return v.get<uint64_t>();
      if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<uint64_t>();
      if (v.is_number_float()) {
        const double d = v.get<double>();
        if (std::trunc(d) == d && d >= 0 && d < 9007199254740992.0) return static_cast<uint64_t>(d);
      }
      wrong_value(where, v, "an integer in " + p.range_text());
    }
    case ParamType::number: {
      if (!v.is_number()) wrong_value(where, v, "a number in " + p.range_text());
      const double d = v.get<double>();
      if (!std::isfinite(d) || !in_range(p, d))
        wrong_value(where, v, "a number in " + p.range_text());
      return d;
    }
    case ParamType::boolean:
      if (!v.is_boolean()) wrong_value(where, v, "true or false");
      return v;
    case ParamType::choice:
      if (v.is_string() &&
          std::find(p.values.begin(), p.values.end(), v.get<std::string>()) != p.values.end())
        return v;
      wrong_value(where, v, "one of " + p.range_text());
  }
  wrong_value(where, v, "a valid value");
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diag = up;
    }
  }
  return row[b.size()];
}

[[noreturn]] void unknown_field(std::string_view name, const std::string& where) {
  std::string known, closest;
  size_t best = 3;  // suggest only names within two edits
  for (const auto& p : recipe_params()) {
    known += (known.empty() ? "" : ", ") + std::string(p.name);
    if (const size_t d = edit_distance(name, p.name); d < best) {
      best = d;
      closest = p.name;
    }
  }
  throw Error(where, "unknown field '" + printable_excerpt(name, 40) + "'" +
                         (closest.empty() ? "" : " (did you mean '" + closest + "'?)") +
                         "; known fields: " + known);
}

// A '|' inside a cell would split the markdown table.
std::string markdown_cell(std::string_view text) {
  std::string cell;
  for (char c : text) {
    if (c == '|') cell += '\\';
    cell += c;
  }
  return cell;
}

}  // namespace

const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::integer:
      return "int";
    case ParamType::unsigned_integer:
      return "uint64";
    case ParamType::number:
      return "number";
    case ParamType::boolean:
      return "bool";
    case ParamType::choice:
      return "string";
  }
  return "?";
}

std::string RecipeParam::range_text() const {
  switch (type) {
    case ParamType::boolean:
      return "true | false";
    case ParamType::choice: {
      std::string s;
      for (auto v : values) s += (s.empty() ? "" : " | ") + std::string(v);
      return s;
    }
    case ParamType::unsigned_integer:
      return "[0, 2^64-1]";
    case ParamType::integer:
    case ParamType::number:
      if (std::isinf(max)) return std::string(min_open ? "> " : ">= ") + format_number(min);
      return std::string(min_open ? "(" : "[") + format_number(min) + ", " + format_number(max) +
             (max_open ? ")" : "]");
  }
  return "";
}

const std::vector<RecipeParam>& recipe_params() {
  static const std::vector<RecipeParam> table = make_table();
  return table;
}

const RecipeParam* find_recipe_param(std::string_view name) {
  for (const auto& p : recipe_params())
    if (p.name == name) return &p;
  return nullptr;
}

std::string recipe_params_markdown() {
  std::string md =
      "| field | type | default | allowed | description |\n"
      "|---|---|---|---|---|\n";
  for (const auto& p : recipe_params()) {
    md += "| `" + std::string(p.name) + "` | " + param_type_name(p.type) + " | `" +
          (p.type == ParamType::number ? format_number(p.default_value.get<double>())
                                       : p.default_value.dump()) +
          "` | " + markdown_cell(p.range_text()) + " | " + markdown_cell(p.description) + " |\n";
  }
  return md;
}

Recipe::Recipe() {
  for (const auto& p : recipe_params()) p.set(*this, p.default_value);
}

void Recipe::update(const json& doc, const std::string& origin) {
  if (!doc.is_object()) throw Error(origin, "a recipe must be a JSON object, got " + type_of(doc));
  Recipe next = *this;  // all or nothing: a bad field leaves *this as it was
  for (const auto& [name, value] : doc.items()) {
    const std::string where = origin + ": /" + printable_excerpt(name, 40);
    const RecipeParam* p = find_recipe_param(name);
    if (!p) unknown_field(name, where);
    p->set(next, checked(*p, value, where));
  }
  next.validate(origin);
  *this = next;
}

void Recipe::set(std::string_view name, std::string_view text, const std::string& origin) {
  const std::string where = origin + ": /" + printable_excerpt(name, 40);
  const RecipeParam* p = find_recipe_param(name);
  if (!p) unknown_field(name, where);
  json v;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto parsed = [&](auto value) {
    auto [end, ec] = std::from_chars(first, last, value);
    bool finite = true;  // nan and inf would read back as JSON null
    if constexpr (std::is_floating_point_v<decltype(value)>) finite = std::isfinite(value);
    if (ec == std::errc() && end == last && first != last && finite)
      v = value;
    else
      v = std::string(text);  // the table then reports the wrong type with the text
  };
  switch (p->type) {
    case ParamType::integer:
      parsed(int64_t{});
      break;
    case ParamType::unsigned_integer:
      parsed(uint64_t{});
      break;
    case ParamType::number:
      parsed(double{});
      break;
    case ParamType::boolean:
      if (text == "true" || text == "1")
        v = true;
      else if (text == "false" || text == "0")
        v = false;
      else
        v = std::string(text);
      break;
    case ParamType::choice:
      v = std::string(text);
      break;
  }
  Recipe next = *this;
  p->set(next, checked(*p, v, where));
  next.validate(origin);
  *this = next;
}

void Recipe::validate(const std::string& origin) const {
  if (epochs == 0 && time_budget_s == 0)
    throw Error(origin + ": /epochs",
                "epochs and time_budget_s are both 0: set at least one to bound the training");
  if (run_fraction < 1 && time_budget_s > 0)
    throw Error(origin + ": /run_fraction",
                "a run bounded by time_budget_s cannot stop at a fraction of its steps: give "
                "epochs alone, or leave run_fraction at 1");
  if (subset_fraction < 1 && subset_size > 0)
    throw Error(origin + ": /subset_size",
                "and subset_fraction both choose the training subset: set one of them");
  if (schedule == ScheduleKind::cosine && epochs > 0 && warmup_epochs > static_cast<double>(epochs))
    throw Error(origin + ": /warmup_epochs", "warm-up of " + format_number(warmup_epochs) +
                                                 " epochs is longer than the training (" +
                                                 std::to_string(epochs) + " epochs)");
}

Recipe Recipe::from_json(const json& doc, const std::string& origin) {
  Recipe r;
  r.update(doc, origin);
  return r;
}

Recipe Recipe::parse(std::string_view text, const std::string& origin) {
  return from_json(read_json(text, origin), origin);
}

Recipe Recipe::load(const std::string& path) {
  return parse(read_text_file(path, "recipe", JsonLimits{}.max_bytes), path);
}

json Recipe::to_json() const {
  json j = json::object();
  for (const auto& p : recipe_params()) j[std::string(p.name)] = p.get(*this);
  return j;
}

}  // namespace minas
