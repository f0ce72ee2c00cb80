#include "pipeline/final_choice.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <utility>

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

double default_curve_exponent(double fidelity) {
  struct Point {
    double f, a;
  };
  static constexpr Point kMeasured[] = {{0.125, 0.272}, {0.25, 0.237}, {3, 0.07}};
  if (!(fidelity > kMeasured[0].f)) return kMeasured[0].a;
  for (size_t i = 1; i < std::size(kMeasured); ++i)
    if (fidelity <= kMeasured[i].f) {
      const Point& lo = kMeasured[i - 1];
      const Point& hi = kMeasured[i];
      const double t = std::log(fidelity / lo.f) / std::log(hi.f / lo.f);
      return lo.a + t * (hi.a - lo.a);
    }
  return std::end(kMeasured)[-1].a;
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
    const double f = static_cast<double>(c.trial.fidelity) * trial_fraction;
    c.exponent = exponent > 0 ? exponent : default_curve_exponent(f);
    c.predicted = predicted_accuracy(*c.trial.val_acc, f, c.epochs, c.exponent);
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const PickCandidate& a, const PickCandidate& b) {
                     if (a.predicted != b.predicted) return a.predicted > b.predicted;
                     if (*a.trial.val_acc != *b.trial.val_acc)
                       return *a.trial.val_acc > *b.trial.val_acc;
                     return a.trial.number < b.trial.number;
                   });
}

std::vector<db::TrialRow> shortlist_by_trial_time(std::vector<db::TrialRow> trials, size_t keep,
                                                  double exponent, double trial_fraction) {
  auto cost = [&](const db::TrialRow& t) -> std::optional<double> {
    if (!t.val_acc || !t.train_seconds || !(*t.train_seconds > 0) || t.fidelity < 1)
      return std::nullopt;
    const double f = static_cast<double>(t.fidelity) * trial_fraction;
    const double a = exponent > 0 ? exponent : default_curve_exponent(f);
    return std::clamp(1 - *t.val_acc, 0.0, 1.0) * std::pow(*t.train_seconds, a);
  };
  std::vector<std::pair<std::optional<double>, db::TrialRow>> c;
  c.reserve(trials.size());
  for (db::TrialRow& t : trials) c.emplace_back(cost(t), std::move(t));
  std::stable_sort(c.begin(), c.end(), [](const auto& a, const auto& b) {
    if (a.first.has_value() != b.first.has_value()) return a.first.has_value();
    if (a.first && *a.first != *b.first) return *a.first < *b.first;
    const double va = a.second.val_acc.value_or(-1), vb = b.second.val_acc.value_or(-1);
    if (va != vb) return va > vb;
    return a.second.number < b.second.number;
  });
  std::vector<db::TrialRow> out;
  for (auto& [_, t] : c) {
    if (out.size() == keep) break;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace minas::pipeline
