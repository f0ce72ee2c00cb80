// The experiment settings' parameter table (pipeline/experiment.h): its rows,
// the config it fills, the recipe it reads, and the docs it generates.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>

#include "pipeline/experiment.h"
#include "searchspace/error.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/data.h"

using minas::pipeline::ExperimentParam;
using minas::pipeline::ExperimentSettings;
using minas::test::contains;

TEST_CASE("experiment settings: one row per field, each default the struct's own") {
  std::set<std::string> names;
  for (const ExperimentParam& p : minas::pipeline::experiment_params()) {
    INFO(p.name);
    CHECK(names.insert(std::string(p.name)).second);
    CHECK_FALSE(p.description.empty());
    CHECK(p.name.find('-') == std::string_view::npos);  // the flag is the name with '-' for '_'
    // The flag's default is what an ExperimentSettings holds before any flag.
    ExperimentSettings fresh;
    std::visit(
        [&](auto field) {
          const auto& value = field(fresh);
          using T = std::remove_cvref_t<decltype(value)>;
          if constexpr (std::is_same_v<T, std::string>) {
            CHECK(value == std::string(p.default_text));
          } else if constexpr (std::is_same_v<T, bool>) {
            CHECK((value ? "true" : "false") == std::string(p.default_text));
          } else {
            REQUIRE_FALSE(p.default_text.empty());
            CHECK(std::to_string(value) ==
                  std::string(p.default_text) + (std::is_floating_point_v<T> ? ".000000" : ""));
            if constexpr (!std::is_same_v<T, uint64_t>) {
              CHECK(p.min <= static_cast<double>(value));
              CHECK(static_cast<double>(value) <= p.max);
            }
          }
        },
        p.field);
  }
  CHECK(names.count("trials") == 1);
  CHECK(minas::pipeline::experiment_param("seed").name == "seed");
  CHECK_THROWS_AS(minas::pipeline::experiment_param("trails"), std::logic_error);
}

TEST_CASE("experiment settings: a row's field is the settings' own, written through it") {
  ExperimentSettings s;
  std::get<minas::pipeline::SettingRef<int64_t>>(minas::pipeline::experiment_param("trials").field)(
      s) = 7;
  std::get<minas::pipeline::SettingRef<std::string>>(
      minas::pipeline::experiment_param("space").field)(s) = "nb201";
  std::get<minas::pipeline::SettingRef<std::string>>(
      minas::pipeline::experiment_param("latency_pool").field)(s) = "edge";
  CHECK(s.config.budget_trials == 7);
  CHECK(s.space == "nb201");
  CHECK(s.config.latency_pool == "edge");
}

TEST_CASE("experiment settings: experiment_config holds the fields, recipe and strategy") {
  ExperimentSettings s;
  s.config.name = "e";
  s.config.data = "simulated";
  s.config.budget_trials = 12;
  s.config.budget_seconds = 30;
  s.config.fidelity = 2;
  s.config.seed = 9;
  s.config.gpus_per_trial = 2;
  s.config.train_pool = "gpu";
  minas::Recipe recipe;
  recipe.set("epochs", "4", "test");
  minas::StrategySettings strategy;
  strategy.name = "evolution";
  strategy.seed = 9;
  strategy.objective.max_params = 1000;
  minas::AshaSettings asha;
  asha.eta = 3;
  asha.rungs = {1};
  const minas::ExperimentConfig c = minas::pipeline::experiment_config(s, recipe, strategy, asha);
  CHECK(c.name == "e");
  CHECK(c.data == "simulated");
  CHECK(c.budget_trials == 12);
  CHECK(c.budget_seconds == 30);
  CHECK(c.fidelity == 2);
  CHECK(c.seed == 9);
  CHECK(c.gpus_per_trial == 2);
  CHECK(c.train_pool == "gpu");
  CHECK(c.recipe == recipe.to_json());
  CHECK(c.strategy_settings == strategy.to_json());
  CHECK(c.objective.max_params == 1000);
  REQUIRE(c.asha.has_value());
  CHECK(c.asha->rungs == std::vector<double>{1});
  CHECK_FALSE(minas::pipeline::experiment_config(s, recipe, strategy, std::nullopt).asha);
}

TEST_CASE("experiment settings: the recipe is the file's object, else the recipe file") {
  const minas::test::TempDir dir("experiment-recipe");
  ExperimentSettings s;
  CHECK(minas::pipeline::experiment_recipe(s, "exp.json") == minas::Recipe());
  const std::string file = dir.file("recipe.json");
  std::ofstream(file) << R"({"epochs": 3})";
  s.recipe = file;
  CHECK(minas::pipeline::experiment_recipe(s, "exp.json").epochs == 3);
  s.recipe_inline = {{"epochs", 2}};
  CHECK(minas::pipeline::experiment_recipe(s, "exp.json").epochs == 2);
  s.recipe_inline = {{"epochs", -1}};
  const minas::Error e =
      minas::test::error_of([&] { minas::pipeline::experiment_recipe(s, "exp.json"); });
  CHECK_MESSAGE(contains(e.what(), "exp.json: /recipe"), std::string(e.what()));
}

TEST_CASE("experiment settings: fingerprint_data records the data set's fingerprint and files") {
  const minas::test::TempDir dir("experiment-data");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 50, 3);
  minas::ExperimentConfig c;
  c.data = d;
  minas::pipeline::fingerprint_data(c, false);
  CHECK(c.data_fingerprint == minas::data::load_dataset(d).train.fingerprint());
  CHECK(c.data_files.empty());
  minas::pipeline::fingerprint_data(c, true);
  CHECK(c.data_files == minas::data::dataset_files(d));
  c.data = dir.file("missing");
  CHECK_THROWS_AS(minas::pipeline::fingerprint_data(c, false), minas::Error);
}

TEST_CASE("experiment settings: docs/distributed.md holds the table as the code defines it") {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/docs/distributed.md";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK_MESSAGE(contains(ss.str(), minas::pipeline::experiment_params_markdown()),
                path << " does not hold experiment_params_markdown(): regenerate its table "
                        "from the code");
}
