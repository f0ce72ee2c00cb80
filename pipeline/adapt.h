#pragma once
// The adaptation pipeline (`minas adapt`): a customer's images and a
// deployment constraint in; a validated, searched, retrained and exported
// model out, with its report. In steps: read and validate the images (the
// store keeps the report either way), choose the input size and splits and
// write the data set the workers train on, suit the recipe to its size, set
// the constraints (and the target's latency model), choose the warm start,
// search on local workers, check the latency model against the
// measurements, and retrain, export and report the best architecture that
// meets the constraints.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/final_model.h"
#include "pipeline/log.h"

namespace minas::pipeline {

// The options of `minas adapt` (docs/adapt.md), of its flags' names; errors
// name the flag of the option at fault.
struct AdaptOptions {
  std::string data;                      // image folders, a CSV of path,label, or an IDX prefix
  std::string test;                      // separate test images; empty: a stratified split
  std::string target = "cpu:1";          // where latency counts: cpu[:THREADS] or cuda:N
  double latency_ms = 0;                 // latency limit at batch 1 on the target; 0: none
  int64_t max_params = 0, max_macs = 0;  // 0: none
  double budget_s = 1800;                // the whole run: validation, search, final training
  std::string out;                       // export folder; empty: runs/EXPERIMENT
  bool strict = false;                   // stop on an unreadable file instead of leaving it out
  std::string db = "minas.db";
  std::string name;  // empty: adapt-DATE-TIME; an existing one resumes
  uint64_t seed = 0;
  double test_share = 0.15, val_share = 0.15, final_share = 0.3;
  int final_epochs = 30;
  // How the final training's architecture is chosen (pipeline/final_choice.h).
  FinalPick final_pick = FinalPick::validation;
  double curve_exponent = 0;  // 0: by the trials' F (final_choice.h)
  double time_exponent = 0;   // the time-aware reward's (Objective::time_exponent); 0: off
  // Architectures scored at initialization before any trial (evolution
  // starts from the best that meet the constraints); 0: none.
  int64_t screen = 0;
  std::string screen_order = "score";  // or "front" (ExperimentConfig::screen_order)
  std::string screen_evaluator = "synflow";  // ExperimentConfig::screen_evaluator
  // Below 1: each trial trains this share of its fidelity's steps as one
  // short run, without ASHA (ExperimentConfig::trial_fraction).
  double trial_fraction = 1;
  int fidelity = 0;     // epochs per trial; 0: enough for about 150,000 images seen (3 to 30)
  int workers = 0;      // local workers; 0: one per core / the target's threads
  std::string devices;  // one local worker with these slots instead
  bool warm_start = true;
  std::string reproduce;  // the command line that reproduces the run, for the report
};

struct AdaptResult {
  std::string experiment;
  bool interrupted = false;  // a signal stopped the search: no final model
  FinalResult final;
  std::string target;            // canonical: "cpu:1", "cuda:0"
  bool constraints_met = false;  // by the final model's own measurement
  // With a latency limit: how the latency model's predictions compared with
  // the measurements on the target; null otherwise.
  nlohmann::json latency_model;
};

// Throws Error (naming the flag) for options it refuses before anything is
// written, and for data that cannot be used (after writing the validation
// report to the store and to OUT/validation.*).
AdaptResult run_adapt(const AdaptOptions& options, const Log& log = {});

}  // namespace minas::pipeline
