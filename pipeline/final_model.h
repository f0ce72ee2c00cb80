#pragma once
// The end of a one-click search: the best architecture by validation
// accuracy retrained with the full recipe on the training and validation
// images together, evaluated once on the test set, and exported to a folder
// (the architecture as JSON, the weights as a minas checkpoint, an ONNX model
// checked by ONNX's checker and against the runtime's outputs, a markdown
// report) with model.json: what `minas predict` needs to use it (the space
// and architecture, the input shape, the normalization, the class names).
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "db/queries.h"
#include "pipeline/final_choice.h"
#include "pipeline/log.h"
#include "searchspace/space.h"
#include "trainer/recipe.h"

namespace minas::pipeline {

inline constexpr int kPickPool = 5;

struct FinalOptions {
  std::string db, experiment;            // the store and the experiment searched
  std::string data;                      // data set name or folder
  std::string out;                       // folder written: runs/<experiment> by default
  Recipe recipe;                         // the final training (val_size is set to 0)
  std::string reproduce;                 // the command that reproduces the run, for the report
  std::vector<std::string> class_names;  // for model.json; empty: "0", "1", ...
  // The architecture retrained is chosen among the best by validation
  // accuracy of the trials that meet these (minas adapt: the deployment
  // constraints): the best of them, or with FinalPick::final_time the one
  // predicted best after the epochs it can train in the final training's
  // time (pipeline/final_choice.h), of the `pick_candidates` best.
  std::vector<db::Constraint> constraints;
  FinalPick pick = FinalPick::validation;
  // The share of its epochs' steps each search trial trained
  // (ExperimentConfig::trial_fraction): a trial's F epochs are its fidelity
  // times this.
  double trial_fraction = 1;
  double curve_exponent = 0;  // 0: default_curve_exponent of the trials' F
  // How many candidates are timed, shortlisted by their trials' speed from
  // the kPickPool times as many best by validation accuracy.
  int pick_candidates = 8;
  // Where the final latency is measured ("cpu:THREADS", "cuda:N"); empty: on
  // the training backend with the recipe's threads.
  std::string latency_device;
  // When the whole call must be done: training, evaluation and export. The
  // training's time budget (recipe.time_budget_s) is then what is left when
  // it starts less what the work after it takes, measured on the network
  // before it trains, and at least kMinFinalSeconds. Without one the recipe's
  // own budget applies.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // The evaluator the search screened by (ExperimentConfig::screen_evaluator):
  // with a combination, the report's screening section adds its rank sums'
  // correlation to its members'. Empty: the members' rows alone.
  std::string screen_evaluator;
  // The cost the report's Pareto picture puts on x (a cost metric).
  db::Metric pareto_x = db::Metric::params;
};

inline constexpr size_t kMisclassifiedShown = 24;

// The least a final training gets, even when the search has left less.
inline constexpr double kMinFinalSeconds = 10;

struct FinalResult {
  std::string arch, out;
  double val_acc = 0, test_acc = 0, latency_ms = 0, train_seconds = 0;
  int64_t params = 0, macs = 0;
  double onnx_max_diff = 0;  // largest logit difference between the ONNX file and the runtime
  int onnx_checked = 0;      // test images it was checked on
  int64_t trial = 0;         // the search trial whose architecture it is
  std::string latency_device;
  // confusion[true class][predicted class] over the test set.
  std::vector<std::vector<int64_t>> confusion;
  // Test images the model gets wrong, for the report's picture: at most
  // kMisclassifiedShown, taken in turn from each true class, in test order.
  struct Miss {
    size_t index = 0;  // in the test set
    int truth = 0, predicted = 0;
  };
  std::vector<Miss> misclassified;
  // With FinalPick::final_time: the candidates as ranked, the chosen first.
  std::vector<PickCandidate> pick;
  // The pictures written beside report.md (file names).
  std::vector<std::string> pictures;
  // With a deadline: the training's budget, the seconds kept for the work
  // after it (measured before training, doubled) and what that work took.
  double train_budget_s = 0, finish_reserved_s = 0, finish_seconds = 0;
};

// Markdown pieces of the reports: a fraction as a percentage with two
// decimals ("-" when absent); an architecture key as code in a table cell
// (its '|' escaped, or it would end the cell); a number by printf format.
std::string report_percent(std::optional<double> fraction);
std::string report_code(const std::string& key);
std::string report_number(double v, const char* format = "%.0f");

// Throws Error when the experiment has no finished trial (that meets the
// constraints). `more_report`, when given, returns markdown sections put in
// report.md before "Reproduce". The final training's epochs and timings go
// to `log` as text.
FinalResult retrain_and_export(
    const Space& space, const FinalOptions& options,
    const std::function<std::string(const FinalResult&)>& more_report = {}, const Log& log = {});

}  // namespace minas::pipeline
