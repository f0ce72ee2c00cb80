#pragma once
// Asynchronous successive halving (ASHA, Li et al. 2020) over training epochs,
// in its stopping form: every trial is started for the full budget, and when
// it reports the validation accuracy of a rung's epoch it is compared with
// every trial that reached that rung before it. In the top 1/eta it is
// promoted and simply goes on training from its own weights and optimizer
// state; below the cut it is cancelled and recorded as pruned. No trial waits
// for others to reach a rung. The controller also keeps each trial's training
// state at its last rung, so an attempt lost later continues from there on
// any worker instead of from scratch.
//
// The first ceil(eta) trials at a rung are always promoted: with fewer
// results, the top 1/eta is not yet defined.
//
// Rungs are in epochs and may be fractions of one (0.25, 0.5, 1, 3): a
// fractional rung is a validation the trainer makes mid-epoch, after that
// share of the steps, which the worker reports with the fraction itself
// (progress's `at`), so the rung is matched exactly, never rounded. Training
// states are kept at whole-epoch rungs only (a resumed run starts at an epoch
// boundary).
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

struct AshaSettings {
  double eta = 3;             // reduction factor, > 1
  std::vector<double> rungs;  // epochs at which trials are judged, ascending, each > 0

  // Rungs at min_epochs * eta^k below max_epochs.
  static std::vector<double> geometric(int min_epochs, double eta, int max_epochs);
  static AshaSettings from_json(const nlohmann::json& j, const std::string& where);
  // Whole rungs are written as JSON integers, so settings stored before
  // fractions existed read back and compare equal.
  nlohmann::json to_json() const;
  // The rungs at whole epochs (where training states are kept) and those
  // inside an epoch (validated mid-epoch), each ascending.
  std::vector<int> whole_rungs() const;
  std::vector<double> fractional_rungs() const;
};

class Asha {
 public:
  explicit Asha(AshaSettings settings);
  const AshaSettings& settings() const { return settings_; }
  bool is_rung(double epochs) const;
  // A trial reports val_acc after `epochs` (whole or a fraction): true to
  // promote (go on), false to prune. Points that are not rungs always go on.
  // A trial judged at a rung before (a retried attempt) is judged again
  // against the others, and its first value is kept.
  bool report(long long trial, double epochs, double value);
  // What a rung holds: (trial, value) in arrival order.
  const std::vector<std::pair<long long, double>>& rung(double epochs) const;

 private:
  AshaSettings settings_;
  std::map<double, std::vector<std::pair<long long, double>>> recorded_;
  std::set<std::pair<double, long long>> judged_;
};

}  // namespace minas
