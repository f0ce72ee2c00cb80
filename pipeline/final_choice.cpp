#include "pipeline/final_choice.h"

#include <algorithm>
#include <cmath>

#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::pipeline {

FinalPick parse_final_pick(const std::string& text) {
  if (text == "validation") return FinalPick::validation;
  if (text == "final-time") return FinalPick::final_time;
  throw Error("--final-pick",
              "'" + printable_excerpt(text, 40) + "' is not validation or final-time");
}

const char* final_pick_name(FinalPick pick) {
  return pick == FinalPick::validation ? "validation" : "final-time";
}

double predicted_accuracy(double val_acc, double fidelity, double epochs, double exponent) {
  const double err = std::clamp(1 - val_acc, 0.0, 1.0);
  return 1 - std::min(1.0, err * std::pow(epochs / fidelity, -exponent));
}

void rank_for_final_time(std::vector<PickCandidate>& candidates, double budget_s, double max_epochs,
                         int64_t steps_per_epoch, double exponent, double trial_fraction) {
  if (!(trial_fraction > 0 && trial_fraction <= 1))
    throw Error("final training", "the trials' fraction of their epochs must be in (0, 1]");
  for (PickCandidate& c : candidates) {
    if (!c.trial.val_acc || c.trial.fidelity < 1 || !(c.step_seconds > 0))
      throw Error("final training", "trial " + std::to_string(c.trial.number) +
                                        " has no validation accuracy, fidelity or step time");
    c.epoch_seconds = c.step_seconds * static_cast<double>(steps_per_epoch);
    c.epochs = budget_s > 0 ? std::min(max_epochs, budget_s / c.epoch_seconds) : max_epochs;
    c.predicted = predicted_accuracy(
        *c.trial.val_acc, static_cast<double>(c.trial.fidelity) * trial_fraction, c.epochs,
        exponent);
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const PickCandidate& a, const PickCandidate& b) {
                     if (a.predicted != b.predicted) return a.predicted > b.predicted;
                     if (*a.trial.val_acc != *b.trial.val_acc)
                       return *a.trial.val_acc > *b.trial.val_acc;
                     return a.trial.number < b.trial.number;
                   });
}

}  // namespace minas::pipeline
