// The pipelines in-process, on tiny data sets: a search on local workers,
// the one-click search with its final training and export, the final
// training alone, and the adaptation pipeline, each through its entry point
// (the CLI's tests run the same through the minas binary).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "adapt/images.h"
#include "db/queries.h"
#include "db/store.h"
#include "pipeline/adapt.h"
#include "pipeline/experiment.h"
#include "pipeline/final_model.h"
#include "pipeline/local_search.h"
#include "pipeline/search.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "tests/xml_check.h"

namespace fs = std::filesystem;
using minas::test::contains;

namespace {

// A Log that keeps what the pipeline wrote, lines as "WHO: LINE".
struct CapturedLog {
  std::mutex mu;
  std::string lines, text;
  minas::pipeline::Log log() {
    minas::pipeline::Log l;
    l.on_line = [this](const std::string& who, const std::string& line) {
      std::lock_guard lock(mu);
      lines += who + ": " + line + "\n";
    };
    l.on_text = [this](const std::string& t) {
      std::lock_guard lock(mu);
      text += t;
    };
    return l;
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// The one-click search's options on a folder of 12x12 images: `trials`
// trials of one epoch (no ASHA), random search.
minas::pipeline::SearchOptions tiny_search(const std::string& db, const std::string& data,
                                           const std::string& name, int64_t trials) {
  minas::pipeline::SearchOptions o;
  o.db = db;
  o.recipe.set("val_size", "60", "test");
  o.recipe.set("batch", "32", "test");
  o.recipe.set("threads", "1", "test");
  minas::pipeline::ExperimentSettings s;
  s.config.name = name;
  s.config.data = data;
  s.config.budget_trials = trials;
  s.config.fidelity = 1;
  o.strategy.name = "random";
  o.experiment = minas::pipeline::experiment_config(s, o.recipe, o.strategy, std::nullopt);
  o.budget_s = 300;  // the trials end the search first
  o.pool.workers = 2;
  return o;
}

}  // namespace

TEST_CASE("pipeline: run_local_search trains the budget on a pool of local workers") {
  const minas::test::TempDir dir("pipeline-local");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 300, 4);
  const minas::Space space = minas::Space::load("small:input=1x12x12");
  minas::pipeline::ExperimentSettings s;
  s.config.name = "local";
  s.config.data = d;
  s.config.budget_trials = 4;
  minas::Recipe recipe;
  recipe.set("val_size", "60", "test");
  recipe.set("batch", "32", "test");
  recipe.set("threads", "1", "test");
  minas::StrategySettings strategy;
  minas::ExperimentConfig cfg =
      minas::pipeline::experiment_config(s, recipe, strategy, std::nullopt);
  minas::pipeline::fingerprint_data(cfg, false);
  const auto random = minas::make_strategy(space, strategy);
  minas::pipeline::LocalPool pool;
  pool.workers = 2;
  CapturedLog captured;
  const minas::pipeline::Log log = captured.log();
  const std::string db = dir.file("minas.db");
  minas::ControllerSummary summary;
  {
    minas::db::Store store = minas::db::Store::open(db);
    summary = minas::pipeline::run_local_search(store, space, *random, cfg, pool, log);
  }
  INFO(captured.lines);
  CHECK(summary.done == 4);
  CHECK(summary.failed == 0);
  CHECK_FALSE(summary.stopped);
  CHECK(contains(captured.lines,
                 "search: experiment 'local': 2 local worker(s), 1 slot(s) of 1 thread(s) each"));
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement w = c.prepare("SELECT count(*) FROM workers");
  REQUIRE(w.step());
  CHECK(w.column_int64(0) == 2);
  // The ipc folder of the run is gone with it.
  CHECK_FALSE(
      fs::exists(fs::temp_directory_path() / ("minas-search-" + std::to_string(::getpid()))));
}

TEST_CASE("pipeline: run_search searches, retrains, exports and reports in-process") {
  const minas::test::TempDir dir("pipeline-search");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 400, 7);
  const minas::Space space = minas::Space::load("small:input=1x12x12");
  minas::pipeline::SearchOptions o = tiny_search(dir.file("minas.db"), d, "e2e", 3);
  o.final_epochs = 1;
  o.out = dir.file("out");
  o.reproduce = "minas search --reproduce-me";
  CapturedLog captured;
  const minas::pipeline::SearchResult r = minas::pipeline::run_search(space, o, captured.log());
  INFO(captured.lines << captured.text);
  CHECK(r.experiment == "e2e");
  CHECK(r.summary.done == 3);
  CHECK_FALSE(r.interrupted);
  REQUIRE(r.final.has_value());
  CHECK(r.final->out == o.out);
  CHECK(r.final->test_acc >= 0);
  CHECK(r.final->params > 0);
  CHECK(r.final->onnx_checked > 0);
  CHECK(r.final->train_budget_s >= minas::pipeline::kMinFinalSeconds);
  for (const char* f : {"arch.json", "model.ckpt", "model.onnx", "model.json", "report.md"})
    CHECK_MESSAGE(fs::exists(fs::path(o.out) / f), f);
  const std::string report = slurp(fs::path(o.out) / "report.md");
  CHECK(contains(report, "## Top 5 by validation accuracy"));
  CHECK(contains(report, "minas search --reproduce-me"));
  // The pictures beside the report, linked from it, each a well-formed SVG.
  CHECK(r.final->pictures.size() == 4);
  for (const std::string& f : r.final->pictures) {
    CHECK_MESSAGE(contains(report, "](" + f + ")"), f);
    const auto x = minas::test::check_xml(slurp(fs::path(o.out) / f));
    CHECK_MESSAGE(x.error.empty(), f << ": " << x.error);
    CHECK_MESSAGE(x.root == "svg", f);
  }
  // The progress went to the log given, not to stderr.
  CHECK(contains(captured.lines, "search: final training, evaluation and export"));
  CHECK(contains(captured.lines, "search: exported to " + o.out));
  CHECK(contains(captured.text, "final training: epoch 1, loss"));
  CHECK(contains(captured.text, "final: evaluation and export took"));

  // Search only, resuming the store's latest experiment: its trial budget is
  // spent, so nothing more runs and no model is made.
  minas::pipeline::SearchOptions again = tiny_search(o.db, d, "", 3);
  again.resume = true;
  again.final_training = false;
  const minas::pipeline::SearchResult r2 =
      minas::pipeline::run_search(space, again, captured.log());
  CHECK(r2.experiment == "e2e");
  CHECK(r2.summary.resumed);
  CHECK_FALSE(r2.final.has_value());
}

TEST_CASE("pipeline: retrain_and_export alone, its report sections, and constraints none meets") {
  const minas::test::TempDir dir("pipeline-final");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 300, 5);
  const minas::Space space = minas::Space::load("small:input=1x12x12");
  minas::pipeline::SearchOptions o = tiny_search(dir.file("minas.db"), d, "f", 2);
  o.final_training = false;
  CapturedLog captured;
  REQUIRE(minas::pipeline::run_search(space, o, captured.log()).summary.done == 2);

  minas::pipeline::FinalOptions fo;
  fo.db = o.db;
  fo.experiment = "f";
  fo.data = d;
  fo.out = dir.file("final");
  fo.recipe = o.recipe;
  fo.recipe.set("epochs", "1", "test");
  fo.class_names = {"zero", "one"};
  const minas::pipeline::FinalResult r = minas::pipeline::retrain_and_export(
      space, fo,
      [](const minas::pipeline::FinalResult& fr) {
        return "## Extra\n\ntrial " + std::to_string(fr.trial) + "\n";
      },
      captured.log());
  CHECK(r.confusion.size() == 10);
  CHECK(r.train_budget_s == 0);  // no deadline: the recipe's epochs alone
  const std::string report = slurp(fs::path(fo.out) / "report.md");
  CHECK(contains(report, "## Extra\n\ntrial " + std::to_string(r.trial)));
  CHECK(report.find("## Extra") < report.find("## Reproduce"));
  const std::string info = slurp(fs::path(fo.out) / "model.json");
  CHECK(contains(info, "\"zero\""));
  CHECK(contains(info, "\"2\""));  // past the names given, classes are numbered

  fo.constraints.push_back({minas::db::Metric::params, minas::db::CompareOp::le, 1});
  const minas::Error e =
      minas::test::error_of([&] { minas::pipeline::retrain_and_export(space, fo); });
  CHECK_MESSAGE(contains(e.what(), "has no finished trial that meets params<=1"),
                std::string(e.what()));
  CHECK_MESSAGE(contains(e.what(), "the same command with --name '" + fo.experiment +
                                       "' and a larger --budget continues it"),
                std::string(e.what()));
}

TEST_CASE("pipeline: the time-aware reward's floor is the trial time of a net that fills the final training") {
  minas::pipeline::SearchOptions o;
  o.budget_s = 1200;
  o.final_share = 0.5;
  o.final_epochs = 30;  // 600 s: 20 s an epoch fills it
  o.experiment.fidelity = 1;
  o.experiment.trial_fraction = 0.25;
  o.pool.workers = 1;
  o.pool.threads = 4096;  // more threads a trial than cores: no scaling up
  REQUIRE(minas::pipeline::time_floor(o));
  CHECK(*minas::pipeline::time_floor(o) == doctest::Approx(5));  // 20 s x a quarter epoch
  o.final_training = false;
  CHECK_FALSE(minas::pipeline::time_floor(o));
}

TEST_CASE("pipeline: the final training leaves 0.5% of the budget, at most 5 s, for the process's end") {
  CHECK(minas::pipeline::exit_reserve_seconds(1200) == doctest::Approx(5));
  CHECK(minas::pipeline::exit_reserve_seconds(100) == doctest::Approx(0.5));
  CHECK(minas::pipeline::exit_reserve_seconds(0) == 0);
}

TEST_CASE("pipeline: run_search refuses bad options before it creates the store") {
  const minas::test::TempDir dir("pipeline-refused");
  const minas::Space space = minas::Space::load("small:input=1x12x12");
  minas::pipeline::SearchOptions o = tiny_search(dir.file("minas.db"), dir.file("data"), "x", 1);
  o.resume = true;
  minas::Error e = minas::test::error_of([&] { minas::pipeline::run_search(space, o); });
  CHECK_MESSAGE(contains(e.what(), "--resume: no store"), std::string(e.what()));
  o.resume = false;
  std::ofstream(dir.file("a-file")) << "x";
  o.out = dir.file("a-file");
  e = minas::test::error_of([&] { minas::pipeline::check_search_options(o); });
  CHECK_MESSAGE(contains(e.what(), "is a file, not a folder for the export"),
                std::string(e.what()));
  o.out.clear();
  o.pool.devices = "gpu:7";
  CHECK_THROWS_AS(minas::pipeline::run_search(space, o), minas::Error);
  o.pool.devices.clear();
  CHECK_THROWS_AS(minas::pipeline::run_search(space, o), minas::Error);  // no data set there
  CHECK_FALSE(fs::exists(o.db));
}

namespace {

// DIR/CLASS/N.png: `per_class[k]` random 12x12 gray images of class k.
void write_classes(const fs::path& dir, const std::vector<size_t>& per_class) {
  minas::Rng rng(11);
  std::vector<uint8_t> pixels(144);
  for (size_t k = 0; k < per_class.size(); ++k) {
    const fs::path folder = dir / ("class" + std::to_string(k));
    fs::create_directories(folder);
    for (size_t i = 0; i < per_class[k]; ++i) {
      // A class's images share a bright band, so that they are learnable.
      for (size_t p = 0; p < pixels.size(); ++p)
        pixels[p] = static_cast<uint8_t>(p / 12 == 3 * k ? 255 : rng.below(128));
      minas::adapt::write_png((folder / (std::to_string(i) + ".png")).string(), 12, 12, 1,
                              pixels.data());
    }
  }
}

}  // namespace

TEST_CASE("pipeline: run_adapt keeps the report of unusable data and refuses an export inside it") {
  const minas::test::TempDir dir("pipeline-adapt-refused");
  const fs::path data = dir.path / "customer";
  write_classes(data, {20, 3});  // a class of 3 images is too small to learn
  minas::pipeline::AdaptOptions o;
  o.data = data.string();
  o.db = dir.file("store.db");
  o.out = (data / "out").string();
  CapturedLog captured;
  minas::Error e = minas::test::error_of([&] { minas::pipeline::run_adapt(o, captured.log()); });
  CHECK_MESSAGE(contains(e.what(), "is inside the customer's folder"), std::string(e.what()));
  CHECK_FALSE(fs::exists(o.db));  // refused before anything is written

  o.out = dir.file("o1");
  e = minas::test::error_of([&] { minas::pipeline::run_adapt(o, captured.log()); });
  CHECK_MESSAGE(contains(e.what(), "cannot be used"), std::string(e.what()));
  CHECK(contains(captured.text, "class1"));  // the validation report, as text
  CHECK(fs::exists(fs::path(o.out) / "validation.json"));
  minas::db::Store store = minas::db::Store::open(o.db, minas::db::OpenMode::ReadOnly);
  const auto reports = store.data_reports();
  REQUIRE(reports.size() == 1);
  CHECK_FALSE(reports[0].usable);
  CHECK(store.experiments().empty());
}

TEST_CASE("pipeline: run_adapt validates, searches under a cap, retrains and reports in-process") {
  const minas::test::TempDir dir("pipeline-adapt");
  const fs::path data = dir.path / "customer";
  write_classes(data, {40, 40, 40});
  minas::pipeline::AdaptOptions o;
  o.data = data.string();
  o.db = dir.file("store.db");
  o.out = dir.file("out");
  o.name = "customer";
  o.max_params = 100000;
  o.budget_s = 30;
  o.final_share = 0.5;
  o.fidelity = 1;
  o.final_epochs = 1;
  o.workers = 1;
  o.reproduce = "minas adapt --reproduce-me";
  CapturedLog captured;
  const minas::pipeline::AdaptResult r = minas::pipeline::run_adapt(o, captured.log());
  INFO(captured.lines << captured.text);
  CHECK(r.experiment == "customer");
  CHECK_FALSE(r.interrupted);
  CHECK(r.target == "cpu:1");
  CHECK(r.final.params <= 100000);
  CHECK(r.constraints_met);
  CHECK(r.latency_model.is_null());  // no latency limit, no latency model
  CHECK(contains(captured.lines, "adapt: search: small:input="));
  CHECK(contains(captured.lines, "adapt: exported to " + o.out));
  const std::string report = slurp(fs::path(o.out) / "report.md");
  for (const char* section : {"## Constraints", "| parameters | 100000 |", "## Confusion matrix",
                              "## Pareto front: validation accuracy against params", "## Data",
                              "## Warm start", "minas adapt --reproduce-me"})
    CHECK_MESSAGE(contains(report, section), section);
  CHECK(fs::exists(fs::path(o.out) / "data" / "train-images-idx3-ubyte"));
  // The pictures: the front against the constraint, the confusion matrix,
  // and the images the model gets wrong (as many as the matrix counts, up to
  // the picture's limit), each an embedded PNG.
  for (const char* f : {"best_so_far.svg", "pareto.svg", "confusion.svg", "misclassified.svg"}) {
    const auto x = minas::test::check_xml(slurp(fs::path(o.out) / f));
    CHECK_MESSAGE(x.error.empty(), f << ": " << x.error);
    CHECK_MESSAGE(contains(report, std::string("](") + f + ")"), f);
  }
  int64_t wrong = 0;
  for (size_t t = 0; t < r.final.confusion.size(); ++t)
    for (size_t p = 0; p < r.final.confusion[t].size(); ++p)
      wrong += t != p ? r.final.confusion[t][p] : 0;
  const auto grid = minas::test::check_xml(slurp(fs::path(o.out) / "misclassified.svg"));
  const int64_t shown = std::min<int64_t>(wrong, minas::pipeline::kMisclassifiedShown);
  CHECK(r.final.misclassified.size() == static_cast<size_t>(shown));
  CHECK((shown == 0 ? grid.elements.count("image") == 0 : grid.elements.at("image") == shown));
  CHECK(contains(slurp(fs::path(o.out) / "pareto.svg"),
                 "chosen: trial " + std::to_string(r.final.trial)));
}

TEST_CASE(
    "pipeline: the final training chosen for its time, and the screening's rank correlation") {
  const minas::test::TempDir dir("pipeline-final-time");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 300, 5);
  const minas::Space space = minas::Space::load("small:input=1x12x12");
  minas::pipeline::SearchOptions o = tiny_search(dir.file("minas.db"), d, "t", 6);
  // Screening 30 architectures first; evolution's population starts from the best 4 of them.
  o.strategy.name = "evolution";
  o.strategy.population = 4;
  o.strategy.tournament = 2;
  minas::pipeline::ExperimentSettings s;
  s.config.name = "t";
  s.config.data = d;
  s.config.budget_trials = 6;
  s.config.fidelity = 1;
  s.config.screen = 30;
  s.config.screen_batch = 10;
  o.experiment = minas::pipeline::experiment_config(s, o.recipe, o.strategy, std::nullopt);
  o.final_training = false;
  CapturedLog captured;
  REQUIRE(minas::pipeline::run_search(space, o, captured.log()).summary.done == 6);

  minas::pipeline::FinalOptions fo;
  fo.db = o.db;
  fo.experiment = "t";
  fo.data = d;
  fo.out = dir.file("final");
  fo.recipe = o.recipe;
  fo.recipe.set("epochs", "2", "test");
  fo.pick = minas::pipeline::FinalPick::final_time;
  fo.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  const minas::pipeline::FinalResult r =
      minas::pipeline::retrain_and_export(space, fo, {}, captured.log());
  // All 6 trials were timed and ranked (up to 8 are); the first is the one retrained.
  REQUIRE(r.pick.size() == 6);
  CHECK(r.pick.front().trial.number == r.trial);
  for (const auto& p : r.pick) {
    CHECK(p.step_seconds > 0);
    CHECK(p.epochs > 0);
    CHECK(p.epochs <= 2);  // at most the recipe's
    CHECK(p.predicted > 0);
    CHECK(p.predicted <= 1);
  }
  for (size_t i = 1; i < r.pick.size(); ++i) CHECK(r.pick[i - 1].predicted >= r.pick[i].predicted);
  CHECK(contains(captured.text, "final choice: trial " + std::to_string(r.trial)));
  const std::string report = slurp(fs::path(fo.out) / "report.md");
  CHECK(contains(report, "predicted best in the final training's time"));
  CHECK(contains(report, "## How the architecture was chosen"));
  // 1-epoch trials: the exponent measured between a quarter epoch's and 3 epochs'.
  CHECK(contains(report, "with a = 0.144 (measured for trials of F epochs"));
  // Screening: 30 scored by synflow; the population's first 4 trials were screened ones.
  CHECK(contains(report, "## Screening"));
  CHECK(contains(report, "| synflow | 30 of 30 | "));
  const auto row = report.find("| synflow | 30 of 30 | ");
  const std::string line = report.substr(row, report.find('\n', row) - row);
  std::vector<std::string> cells;
  for (size_t at = 0; (at = line.find("| ", at)) != std::string::npos; at += 2)
    cells.push_back(line.substr(at + 2, line.find(" |", at + 2) - at - 2));
  REQUIRE(cells.size() == 6);
  CHECK(std::stoi(cells[3]) >= 4);  // trained and scored
  // Kendall's tau: a number, or "-" where the accuracies of tiny trials all tie.
  CHECK((cells[4] == "-" || std::abs(std::stod(cells[4])) <= 1.0));
}

TEST_CASE("pipeline: run_adapt with the screened pipeline's settings screens and picks for time") {
  const minas::test::TempDir dir("pipeline-adapt-screened");
  const fs::path data = dir.path / "customer";
  write_classes(data, {40, 40, 40});
  minas::pipeline::AdaptOptions o;
  o.data = data.string();
  o.db = dir.file("store.db");
  o.out = dir.file("out");
  o.name = "screened";
  o.max_params = 100000;
  o.budget_s = 40;
  o.final_share = 0.5;
  o.fidelity = 1;
  o.final_epochs = 1;
  o.workers = 1;
  o.screen = 30;
  o.screen_evaluator = "synflow+params";
  o.trial_fraction = 0.25;  // what --pipeline screened sets
  o.final_pick = minas::pipeline::FinalPick::final_time;
  CapturedLog captured;
  const minas::pipeline::AdaptResult r = minas::pipeline::run_adapt(o, captured.log());
  INFO(captured.lines << captured.text);
  CHECK_FALSE(r.interrupted);
  CHECK(r.final.params <= 100000);
  CHECK_FALSE(r.final.pick.empty());
  CHECK(r.final.pick.front().trial.number == r.final.trial);
  for (const auto& p : r.final.pick) CHECK(*p.trial.params <= 100000);  // the constraint holds
  const std::string report = slurp(fs::path(o.out) / "report.md");
  CHECK(contains(report, "## How the architecture was chosen"));
  // Each candidate's accuracy was reached after a quarter of its 1 epoch.
  CHECK(contains(report, "% (0.25) | "));
  CHECK(contains(captured.text, "after 0.25 epoch(s)"));
  {
    // The trials' recipe as stored: a quarter of the run; no ASHA validations inside it.
    minas::db::Connection c = minas::db::open_store_readonly(o.db);
    minas::db::Statement q = c.prepare("SELECT recipe FROM experiments WHERE name = 'screened'");
    REQUIRE(q.step());
    CHECK(q.column_text(0).find("\"run_fraction\":0.25") != std::string::npos);
    minas::db::Statement sub = c.prepare("SELECT count(*) FROM sub_epochs");
    REQUIRE(sub.step());
    CHECK(sub.column_int64(0) == 0);
  }
  CHECK(contains(report, "## Screening"));
  // Each member's row, and the combination's: its rank sums over the 30 both scored.
  CHECK(contains(report, "| synflow | 30 of 30 | "));
  CHECK(contains(report, "| params | 30 of 30 | "));
  CHECK(contains(report, "| synflow+params (rank sum) | 30 by every member | "));
  CHECK(contains(report, "The search screened by synflow+params."));
}
