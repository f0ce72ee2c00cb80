#pragma once
// The one-click search (`minas search`): a search on this machine's local
// workers within a share of a wall-clock budget, then the final training,
// evaluation and export of the best architecture in what is left of it.
#include <chrono>
#include <optional>
#include <string>

#include "controller/controller.h"
#include "controller/strategy.h"
#include "pipeline/final_model.h"
#include "pipeline/local_search.h"
#include "pipeline/log.h"
#include "searchspace/space.h"
#include "trainer/recipe.h"

namespace minas::pipeline {

// The options of `minas search` (docs/search.md); errors name the flag of
// the option at fault.
struct SearchOptions {
  std::string db = "minas.db";
  // The experiment (experiment_config()): an empty name is search-DATE-TIME,
  // or with `resume` the store's latest experiment. Its budget_seconds is
  // set here: the search's share of what is left of `budget_s`.
  ExperimentConfig experiment;
  Recipe recipe;              // the trials'; the final training's with final_epochs
  StrategySettings strategy;  // as in experiment.strategy_settings
  double budget_s = 1200;     // the whole run: search and final training
  double final_share = 0.3;   // of the budget, kept for the final training
  int final_epochs = 30;      // at most; it also ends with its share of the budget
  // How the final training's architecture is chosen (pipeline/final_choice.h).
  FinalPick final_pick = FinalPick::validation;
  double curve_exponent = 0;  // 0: by the trials' F (final_choice.h)
  bool final_training = true;  // false: search only
  bool resume = false;         // continue the store's latest experiment (or the named one)
  std::string out;             // export folder; empty: runs/EXPERIMENT
  LocalPool pool;              // workers 0: one per core / (threads x per_trial)
  std::string reproduce;       // the command line that reproduces the run, for the report
  // When the command began: the budget counts from it (reading the data and
  // opening the store included); unset: from run_search's start.
  std::optional<std::chrono::steady_clock::time_point> started;
};

// What the final training leaves of the budget for the process's own end
// (stopping the local workers, closing the store): 0.5% of it, at most 5 s.
double exit_reserve_seconds(double budget_s);

struct SearchResult {
  std::string experiment;
  ControllerSummary summary;
  bool interrupted = false;          // a signal stopped the search: it resumes later
  std::optional<FinalResult> final;  // with final_training, unless interrupted
};

// Throws Error for options refused before anything is written (run_search
// checks them first too; a front end may call it sooner, to refuse a start
// before the work of other checks).
void check_search_options(const SearchOptions& options);

// The time-aware reward's floor (Objective::time_floor_s) for this search:
// the trial seconds of a network whose final_epochs just fill the final
// training's share of the budget, from a trial's F epochs (fidelity x
// trial_fraction) on its threads to the final training's epochs on every
// core (taken as scaling with threads: an estimate that errs high). None
// without a final training.
std::optional<double> time_floor(const SearchOptions& options);

SearchResult run_search(const Space& space, const SearchOptions& options, const Log& log = {});

}  // namespace minas::pipeline
