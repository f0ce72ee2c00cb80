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
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

struct AshaSettings {
  double eta = 3;          // reduction factor, > 1
  std::vector<int> rungs;  // epochs at which trials are judged, ascending, each >= 1

  // Rungs at min_epochs * eta^k below max_epochs.
  static std::vector<int> geometric(int min_epochs, double eta, int max_epochs);
  static AshaSettings from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
};

class Asha {
 public:
  explicit Asha(AshaSettings settings);
  const AshaSettings& settings() const { return settings_; }
  bool is_rung(int epoch) const;
  // A trial reports val_acc at `epoch`: true to promote (go on), false to
  // prune. Epochs that are not rungs always go on. A trial judged at a rung
  // before (a retried attempt) is judged again against the others, and its
  // first value is kept.
  bool report(long long trial, int epoch, double value);
  // What a rung holds: (trial, value) in arrival order.
  const std::vector<std::pair<long long, double>>& rung(int epoch) const;

 private:
  AshaSettings settings_;
  std::map<int, std::vector<std::pair<long long, double>>> recorded_;
  std::set<std::pair<int, long long>> judged_;
};

}  // namespace minas
