#include <doctest/doctest.h>

#include <unistd.h>
#include "tests/support.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "searchspace/error.h"
#include "trainer/recipe.h"

using minas::Recipe;
using nlohmann::json;

namespace {

using minas::test::contains;
using minas::test::error_of;

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("minas_test_recipe_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

}  // namespace

TEST_SUITE_BEGIN("recipe");

TEST_CASE("recipe defaults reproduce torch_ref.py") {
  const Recipe r;
  CHECK(r.optimizer == minas::OptimizerKind::sgd);
  CHECK(r.nesterov);
  CHECK(r.momentum == 0.9);
  CHECK(r.weight_decay == 5e-4);
  CHECK(r.weight_decay_mode == minas::WeightDecayMode::coupled);
  CHECK_FALSE(r.no_decay_bn_bias);
  CHECK(r.schedule == minas::ScheduleKind::onecycle);
  CHECK(r.lr == 0.2);
  // OneCycleLR's own defaults, which torch_ref.py leaves in place.
  CHECK(r.pct_start == 0.3);
  CHECK(r.div_factor == 25);
  CHECK(r.final_div_factor == 1e4);
  CHECK(r.anneal_strategy == minas::AnnealStrategy::cos);
  CHECK(r.cycle_momentum);
  CHECK(r.base_momentum == 0.85);
  CHECK(r.max_momentum == 0.95);
  CHECK(r.label_smoothing == 0.1);
  CHECK(r.batch == 128);
  CHECK(r.epochs == 1);
  CHECK(r.time_budget_s == 0);
  CHECK(r.crop_pad == 0);
  CHECK_FALSE(r.hflip);
  CHECK(r.seed == 0);
  CHECK(r.val_size == 10000);
  CHECK(r.threads == 0);
  CHECK_NOTHROW(r.validate("defaults"));
}

TEST_CASE("recipe table: every field documented, defaults valid, markdown has a row each") {
  const auto& table = minas::recipe_params();
  REQUIRE(table.size() >= 26);
  const std::string md = minas::recipe_params_markdown();
  const json defaults = Recipe().to_json();
  for (const auto& p : table) {
    CAPTURE(p.name);
    CHECK_FALSE(p.description.empty());
    CHECK(minas::find_recipe_param(p.name) == &p);
    CHECK(defaults.at(std::string(p.name)) == p.default_value);
    CHECK(contains(md, "| `" + std::string(p.name) + "` |"));
    // Each default passes the table's own check.
    CHECK_NOTHROW(Recipe::from_json(json{{std::string(p.name), p.default_value}}, "t"));
    if (p.type == minas::ParamType::choice) CHECK_FALSE(p.values.empty());
  }
  CHECK(minas::find_recipe_param("nope") == nullptr);
  CHECK(minas::find_recipe_param("batch")->range_text() == "[1, 65536]");
  CHECK(minas::find_recipe_param("lars_eta")->range_text() == "> 0");
  CHECK(minas::find_recipe_param("lr")->range_text() == ">= 0");
  CHECK(minas::find_recipe_param("optimizer")->range_text() == "sgd | lars");
  CHECK(contains(md, "| `optimizer` | string | `\"sgd\"` | sgd \\| lars |"));
  CHECK(contains(md, "| `weight_decay` | number | `0.0005` | >= 0 |"));
}

TEST_CASE("recipe to_json writes every field and reads back equal") {
  const json j = Recipe().to_json();
  CHECK(j.size() == minas::recipe_params().size());
  CHECK(Recipe::from_json(j, "t") == Recipe());

  Recipe r = Recipe::from_json(json{{"epochs", 0},
                                    {"time_budget_s", 90.5},
                                    {"optimizer", "lars"},
                                    {"lr", 3.2},
                                    {"schedule", "cosine"},
                                    {"warmup_epochs", 0.5},
                                    {"weight_decay_mode", "decoupled"},
                                    {"no_decay_bn_bias", true},
                                    {"crop_pad", 2},
                                    {"hflip", true},
                                    {"val_size", 0},
                                    {"seed", 18446744073709551615ull},
                                    {"anneal_strategy", "linear"}},
                               "t");
  CHECK(r.optimizer == minas::OptimizerKind::lars);
  CHECK(r.schedule == minas::ScheduleKind::cosine);
  CHECK(r.weight_decay_mode == minas::WeightDecayMode::decoupled);
  CHECK(r.anneal_strategy == minas::AnnealStrategy::linear);
  CHECK(r.seed == 18446744073709551615ull);
  CHECK(r.batch == 128);  // absent: the default
  const Recipe back = Recipe::parse(r.to_json().dump(), "t");
  CHECK(back == r);
}

TEST_CASE("recipe rejects unknown fields, naming them and the known ones") {
  const auto e = error_of([] { Recipe::from_json(json{{"lrr", 0.1}}, "recipe.json"); });
  CHECK(e.where() == "recipe.json: /lrr");
  CHECK(contains(e.reason(), "unknown field 'lrr'"));
  CHECK(contains(e.reason(), "did you mean 'lr'?"));
  CHECK(contains(e.reason(), "known fields: epochs, time_budget_s, batch,"));
  const auto far = error_of([] { Recipe::from_json(json{{"zzzzzzzz", 1}}, "r"); });
  CHECK_FALSE(contains(far.reason(), "did you mean"));
}

TEST_CASE("recipe rejects wrong types, naming field, value and expected type") {
  struct Case {
    json doc;
    std::string where, reason;
  };
  const Case cases[] = {
      {{{"batch", "128"}},
       "r.json: /batch",
       "must be an integer in [1, 65536], got \"128\" (string)"},
      {{{"batch", 12.5}}, "r.json: /batch", "must be an integer in [1, 65536], got 12.5"},
      {{{"nesterov", 1}}, "r.json: /nesterov", "must be true or false, got 1"},
      {{{"lr", true}}, "r.json: /lr", "must be a number in >= 0, got true (boolean)"},
      {{{"optimizer", "adam"}}, "r.json: /optimizer", "must be one of sgd | lars, got \"adam\""},
      {{{"schedule", 3}}, "r.json: /schedule", "must be one of onecycle | cosine | constant"},
      {{{"seed", -1}}, "r.json: /seed", "must be an integer in [0, 2^64-1], got -1"},
      {{{"hflip", nullptr}}, "r.json: /hflip", "got null (null)"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.doc.dump());
    const auto e = error_of([&] { Recipe::from_json(c.doc, "r.json"); });
    CHECK(e.where() == c.where);
    CHECK(contains(e.reason(), c.reason));
  }
  const auto e = error_of([] { Recipe::from_json(json::array({1}), "r.json"); });
  CHECK(e.where() == "r.json");
  CHECK(contains(e.reason(), "must be a JSON object, got array"));
}

TEST_CASE("recipe rejects out-of-range values, naming field, value and range") {
  struct Case {
    json doc;
    std::string where, reason;
  };
  const Case cases[] = {
      {{{"batch", 0}}, "r: /batch", "[1, 65536], got 0"},
      {{{"batch", 65537}}, "r: /batch", "[1, 65536], got 65537"},
      {{{"epochs", -1}}, "r: /epochs", "got -1"},
      {{{"lr", -0.1}}, "r: /lr", "a number in >= 0, got -0.1"},
      {{{"momentum", 1.5}}, "r: /momentum", "[0, 1], got 1.5"},
      {{{"div_factor", 0}}, "r: /div_factor", "a number in > 0, got 0"},
      {{{"label_smoothing", 1.01}}, "r: /label_smoothing", "[0, 1], got 1.01"},
      {{{"threads", 5000}}, "r: /threads", "[0, 4096], got 5000"},
      {{{"crop_pad", 18446744073709551615ull}}, "r: /crop_pad", "got 18446744073709551615"},
      {{{"val_size", 1e300}}, "r: /val_size", "an integer"},
      {{{"time_budget_s", NAN}}, "r: /time_budget_s", "a number in >= 0"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.doc.dump());
    const auto e = error_of([&] { Recipe::from_json(c.doc, "r"); });
    CHECK(e.where() == c.where);
    CHECK(contains(e.reason(), c.reason));
  }
}

TEST_CASE("recipe accepts whole numbers written as floats for integer fields") {
  const Recipe r = Recipe::from_json(json{{"batch", 256.0}, {"seed", 7.0}, {"epochs", 1e2}}, "r");
  CHECK(r.batch == 256);
  CHECK(r.seed == 7);
  CHECK(r.epochs == 100);
  CHECK(r.to_json()["batch"].is_number_integer());
}

TEST_CASE("recipe needs epochs or a time budget") {
  const auto e = error_of([] {
    Recipe::from_json(json{{"epochs", 0}, {"time_budget_s", 0}}, "r");
  });
  CHECK(e.where() == "r: /epochs");
  CHECK(contains(e.reason(), "both 0"));
  const Recipe timed = Recipe::from_json(json{{"epochs", 0}, {"time_budget_s", 60}}, "r");
  CHECK(timed.time_budget_s == 60);
  const Recipe both = Recipe::from_json(json{{"epochs", 5}, {"time_budget_s", 60}}, "r");
  CHECK(both.epochs == 5);
  const auto w = error_of([] {
    Recipe::from_json(json{{"schedule", "cosine"}, {"epochs", 2}, {"warmup_epochs", 3}}, "r");
  });
  CHECK(w.where() == "r: /warmup_epochs");
}

TEST_CASE("recipe: reduced fidelity fields, their bounds and the combinations refused") {
  const Recipe d;
  CHECK(d.run_fraction == 1);
  CHECK(d.fraction_schedule == minas::FractionSchedule::short_run);
  CHECK(d.subset_fraction == 1);
  CHECK(d.subset_size == 0);
  const Recipe r = Recipe::from_json(
      json{{"run_fraction", 0.125}, {"fraction_schedule", "cut"}, {"subset_size", 5000}}, "r");
  CHECK(r.run_fraction == 0.125);
  CHECK(r.fraction_schedule == minas::FractionSchedule::cut);
  CHECK(r.subset_size == 5000);
  CHECK(Recipe::parse(r.to_json().dump(), "r") == r);
  CHECK(Recipe::from_json(json{{"subset_fraction", 1e-9}}, "r").subset_fraction == 1e-9);
  struct Case {
    json doc;
    std::string where, reason;
  };
  const Case cases[] = {
      {{{"run_fraction", 0}}, "r: /run_fraction", "a number in (0, 1], got 0"},
      {{{"run_fraction", 1.5}}, "r: /run_fraction", "(0, 1], got 1.5"},
      {{{"run_fraction", -0.25}}, "r: /run_fraction", "(0, 1], got -0.25"},
      {{{"subset_fraction", 0}}, "r: /subset_fraction", "a number in (0, 1], got 0"},
      {{{"subset_fraction", 2}}, "r: /subset_fraction", "(0, 1], got 2"},
      {{{"subset_size", -1}}, "r: /subset_size", "an integer in [0, 2147483647], got -1"},
      {{{"subset_size", 0.5}}, "r: /subset_size", "an integer"},
      {{{"fraction_schedule", "planned"}},
       "r: /fraction_schedule",
       "must be one of short | cut, got \"planned\""},
      // A time budget already bounds the run; its length is only known as it goes.
      {{{"run_fraction", 0.5}, {"time_budget_s", 60}}, "r: /run_fraction", "time_budget_s"},
      {{{"subset_fraction", 0.5}, {"subset_size", 100}}, "r: /subset_size", "subset_fraction"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.doc.dump());
    const auto e = error_of([&] { Recipe::from_json(c.doc, "r"); });
    CHECK(e.where() == c.where);
    CHECK(contains(e.reason(), c.reason));
  }
  // A CLI flag's text goes through the same checks, and a refused one changes nothing.
  Recipe f;
  CHECK_THROWS_AS(f.set("run_fraction", "0", "--set"), minas::Error);
  CHECK(f.run_fraction == 1);
  f.set("run_fraction", "0.25", "--set");
  CHECK(f.run_fraction == 0.25);
}

TEST_CASE("recipe JSON syntax errors name file, line and column") {
  const std::string text = "{\n  \"lr\": 0.1,\n  \"batch\": ]\n}\n";
  const auto e = error_of([&] { Recipe::parse(text, "r.json"); });
  CHECK(e.where() == "r.json");
  CHECK(contains(e.reason(), "line 3, column 12: JSON syntax error: unexpected ']'"));
  CHECK_FALSE(contains(e.reason(), "json.exception"));

  const auto huge = error_of([] { Recipe::parse("{\"lr\": 1e400}", "r.json"); });
  CHECK(huge.where() == "r.json");
  CHECK(contains(huge.reason(), "number overflow"));

  const std::string path = temp_path("bad.json");
  { std::ofstream(path) << text; }
  const auto f = error_of([&] { Recipe::load(path); });
  CHECK(f.where() == path);
  CHECK(contains(f.reason(), "line 3, column 12: JSON syntax error"));
  std::filesystem::remove(path);
}

TEST_CASE("recipe load reads a file and reports a missing one") {
  const std::string path = temp_path("ok.json");
  { std::ofstream(path) << R"({"batch": 64, "optimizer": "lars"})"; }
  const Recipe r = Recipe::load(path);
  CHECK(r.batch == 64);
  CHECK(r.optimizer == minas::OptimizerKind::lars);
  std::filesystem::remove(path);

  const auto e = error_of([&] { Recipe::load(path); });
  CHECK(e.where() == path);
  CHECK(contains(e.reason(), "cannot open the recipe: No such file or directory"));
  const auto dir = error_of([] { Recipe::load(std::filesystem::temp_directory_path()); });
  CHECK(contains(dir.reason(), "cannot read the recipe"));
}

TEST_CASE("recipe set parses CLI flag text by the field's type") {
  Recipe r;
  r.set("lr", "0.05", "--lr");
  r.set("batch", "512", "--batch");
  r.set("hflip", "true", "--hflip");
  r.set("optimizer", "lars", "--optimizer");
  r.set("seed", "18446744073709551615", "--seed");
  CHECK(r.lr == 0.05);
  CHECK(r.batch == 512);
  CHECK(r.hflip);
  CHECK(r.optimizer == minas::OptimizerKind::lars);
  CHECK(r.seed == 18446744073709551615ull);
  const auto e = error_of([&] { r.set("batch", "12x", "--batch"); });
  CHECK(e.where() == "--batch: /batch");
  CHECK(contains(e.reason(), "got \"12x\" (string)"));
  const auto u = error_of([&] { r.set("bach", "1", "flags"); });
  CHECK(contains(u.reason(), "did you mean 'batch'?"));
  CHECK(r.batch == 512);
}

TEST_CASE("recipe update is all or nothing") {
  Recipe r;
  r.update(json{{"lr", 0.1}}, "a");
  CHECK(r.lr == 0.1);
  CHECK_THROWS_AS(r.update(json{{"batch", 64}, {"momentum", 2}}, "b"), minas::Error);
  CHECK(r.batch == 128);
  CHECK(r.lr == 0.1);
}

TEST_SUITE_END();

TEST_CASE("recipe: docs/recipe.md holds the parameter table as the code defines it") {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/docs/recipe.md";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str(), table = minas::recipe_params_markdown();
  CHECK_MESSAGE(doc.size() >= table.size(), path);
  CHECK_MESSAGE(doc.compare(doc.size() - table.size(), table.size(), table) == 0,
                path << " ends with a table that differs from recipe_params_markdown(): "
                        "regenerate its table from the code");
}
