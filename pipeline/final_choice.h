#pragma once
// Which searched architecture the final training gets. By its validation
// accuracy at the search's fidelity (FinalPick::validation), or for the
// final training's time (FinalPick::final_time): each of the best few by
// validation accuracy is timed on this machine with the final recipe, the
// epochs it can train in the final training's budget are derived from that
// speed, and the accuracy it reaches after them is predicted from its
// validation accuracy after its trial's F epochs by a learning curve's power
// law, err(E) = err(F) * (E / F)^-exponent. In a fixed time a large network
// that learns fast in a short trial gets few epochs and a small one many;
// ranking by accuracy at the search's fidelity favours the large one
// (experiments/one-click.md).
#include <cstdint>
#include <string>
#include <vector>

#include "db/queries.h"

namespace minas::pipeline {

enum class FinalPick { validation, final_time };

// "validation" or "final-time"; anything else is an Error naming the choices.
FinalPick parse_final_pick(const std::string& text);
const char* final_pick_name(FinalPick pick);

// The learning curve's exponent a for trials of F epochs, measured on this
// project's runs: how a trial's error after F epochs (a run planned over
// them) relates to a full training's. From the ground truth of `small`
// (experiments/ground-truth, 61 architectures; a run of F planned epochs
// against the 10-epoch run's validation error): 0.272 +- 0.015 at F = 0.125,
// 0.237 +- 0.018 at F = 0.25. From the 2-core one-click runs (3-epoch trials,
// final trainings of 5 to 20 epochs, experiments/one-click.md): 0.07.
// Between these, linear in log F; outside, the nearest.
double default_curve_exponent(double fidelity);
// Kept for the 3-epoch trials of the classic pipeline.
inline constexpr double kDefaultCurveExponent = 0.07;

struct PickCandidate {
  db::TrialRow trial;        // its val_acc after `trial.fidelity` epochs
  double step_seconds = 0;   // one training step of the final recipe here, measured
  double epoch_seconds = 0;  // step_seconds times the final training's steps per epoch
  double epochs = 0;         // affordable in the budget, at most the recipe's
  double predicted = 0;      // accuracy predicted after those epochs
  double exponent = 0;       // the learning curve's a used for it
};

// Accuracy after `epochs` of a network whose validation accuracy was
// `val_acc` after `fidelity` (both > 0; accuracies are fractions in [0, 1]).
double predicted_accuracy(double val_acc, double fidelity, double epochs, double exponent);

// Sets each candidate's epoch seconds, affordable epochs and prediction, and
// orders them best first (ties: the better validation accuracy, then the
// earlier trial). budget_s <= 0: no time bound, every candidate gets
// max_epochs. Candidates need a val_acc, a fidelity >= 1 and step_seconds > 0.
// trial_fraction: the share of its fidelity's steps each trial trained
// (ExperimentConfig::trial_fraction), so F = fidelity x trial_fraction.
// exponent 0: default_curve_exponent(F) for each.
void rank_for_final_time(std::vector<PickCandidate>& candidates, double budget_s, double max_epochs,
                         int64_t steps_per_epoch, double exponent, double trial_fraction = 1);

// The order in which the final choice times its candidates: by the error
// each trial's training time implies for one fixed time, err(F) x
// train_seconds^a, the trials without a time last (ties: the better
// validation accuracy, then the earlier trial). Keeps the first `keep`.
std::vector<db::TrialRow> shortlist_by_trial_time(std::vector<db::TrialRow> trials, size_t keep,
                                                  double exponent, double trial_fraction);

}  // namespace minas::pipeline
