#include "controller/asha.h"

#include <algorithm>
#include <cmath>

#include "searchspace/error.h"

namespace minas {

std::vector<int> AshaSettings::geometric(int min_epochs, double eta, int max_epochs) {
  if (min_epochs < 1) throw Error("asha", "the first rung must be at least 1 epoch");
  if (!(eta > 1)) throw Error("asha", "the reduction factor eta must be > 1");
  std::vector<int> rungs;
  for (double e = min_epochs; e < max_epochs; e *= eta) {
    const int r = static_cast<int>(std::lround(e));
    if (rungs.empty() || r > rungs.back()) rungs.push_back(r);
  }
  return rungs;
}

AshaSettings AshaSettings::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where, "ASHA settings are a JSON object, got " + j.dump());
  AshaSettings s;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    if (k == "eta") {
      if (!v.is_number() || !(v.get<double>() > 1))
        throw Error(where + "/eta", "must be a number > 1, got " + v.dump());
      s.eta = v.get<double>();
    } else if (k == "rungs") {
      if (!v.is_array() || v.empty())
        throw Error(where + "/rungs", "must be a non-empty array of epochs, got " + v.dump());
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_number_integer() || v[i].get<int64_t>() < 1 ||
            (!s.rungs.empty() && v[i].get<int64_t>() <= s.rungs.back()))
          throw Error(where + "/rungs/" + std::to_string(i),
                      "must be an epoch >= 1 above the one before, got " + v[i].dump());
        s.rungs.push_back(v[i].get<int>());
      }
    } else {
      throw Error(where + "/" + k, "unknown field '" + k + "' (fields: eta, rungs)");
    }
  }
  if (s.rungs.empty()) throw Error(where, "needs rungs (the epochs at which trials are judged)");
  return s;
}

nlohmann::json AshaSettings::to_json() const {
  return {{"eta", eta}, {"rungs", rungs}};
}

Asha::Asha(AshaSettings settings) : settings_(std::move(settings)) {
  if (!(settings_.eta > 1)) throw Error("asha", "the reduction factor eta must be > 1");
}

bool Asha::is_rung(int epoch) const {
  return std::binary_search(settings_.rungs.begin(), settings_.rungs.end(), epoch);
}

bool Asha::report(long long trial, int epoch, double value) {
  if (!is_rung(epoch)) return true;
  auto& rung = recorded_[epoch];
  if (judged_.insert({epoch, trial}).second) {
    rung.emplace_back(trial, value);
  } else {
    for (const auto& [t, v] : rung)
      if (t == trial) value = v;
  }
  const size_t n = rung.size();
  if (static_cast<double>(n) <= std::ceil(settings_.eta)) return true;
  // Promoted if among the top max(1, floor(n / eta)) of the rung.
  const size_t keep = std::max<size_t>(1, static_cast<size_t>(std::floor(n / settings_.eta)));
  size_t better = 0;
  for (const auto& [t, v] : rung)
    if (t != trial && v > value) ++better;
  return better < keep;
}

const std::vector<std::pair<long long, double>>& Asha::rung(int epoch) const {
  static const std::vector<std::pair<long long, double>> none;
  auto it = recorded_.find(epoch);
  return it == recorded_.end() ? none : it->second;
}

}  // namespace minas
