#include "controller/asha.h"

#include <algorithm>
#include <cmath>

#include "searchspace/error.h"

namespace minas {

std::vector<double> AshaSettings::geometric(int min_epochs, double eta, int max_epochs) {
  if (min_epochs < 1) throw Error("asha", "the first rung must be at least 1 epoch");
  if (!(eta > 1)) throw Error("asha", "the reduction factor eta must be > 1");
  std::vector<double> rungs;
  for (double e = min_epochs; e < max_epochs; e *= eta) {
    const double r = static_cast<double>(std::lround(e));
    if (rungs.empty() || r > rungs.back()) rungs.push_back(r);
  }
  return rungs;
}

namespace {

bool whole(double epochs) {
  return std::trunc(epochs) == epochs;
}

}  // namespace

std::vector<int> AshaSettings::whole_rungs() const {
  std::vector<int> out;
  for (double r : rungs)
    if (whole(r)) out.push_back(static_cast<int>(r));
  return out;
}

std::vector<double> AshaSettings::fractional_rungs() const {
  std::vector<double> out;
  for (double r : rungs)
    if (!whole(r)) out.push_back(r);
  return out;
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
        // Fractions of an epoch are rungs too (0.25: after a quarter of the
        // first epoch's steps); a whole rung past the protocol's epoch
        // numbers could never be reported.
        const double e = v[i].is_number() ? v[i].get<double>() : 0;
        if (!v[i].is_number() || !std::isfinite(e) || !(e > 0) || e > 1e6 ||
            (!s.rungs.empty() && e <= s.rungs.back()))
          throw Error(where + "/rungs/" + std::to_string(i),
                      "must be a number of epochs > 0 (a fraction such as 0.25 is one) above "
                      "the one before, got " +
                          v[i].dump());
        s.rungs.push_back(e);
      }
    } else {
      throw Error(where + "/" + k, "unknown field '" + k + "' (fields: eta, rungs)");
    }
  }
  if (s.rungs.empty()) throw Error(where, "needs rungs (the epochs at which trials are judged)");
  return s;
}

nlohmann::json AshaSettings::to_json() const {
  nlohmann::json r = nlohmann::json::array();
  for (double e : rungs)
    r.push_back(whole(e) ? nlohmann::json(static_cast<int64_t>(e)) : nlohmann::json(e));
  return {{"eta", eta}, {"rungs", r}};
}

Asha::Asha(AshaSettings settings) : settings_(std::move(settings)) {
  if (!(settings_.eta > 1)) throw Error("asha", "the reduction factor eta must be > 1");
}

bool Asha::is_rung(double epochs) const {
  return std::binary_search(settings_.rungs.begin(), settings_.rungs.end(), epochs);
}

bool Asha::report(long long trial, double epochs, double value) {
  if (!is_rung(epochs)) return true;
  auto& rung = recorded_[epochs];
  if (judged_.insert({epochs, trial}).second) {
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

const std::vector<std::pair<long long, double>>& Asha::rung(double epochs) const {
  static const std::vector<std::pair<long long, double>> none;
  auto it = recorded_.find(epochs);
  return it == recorded_.end() ? none : it->second;
}

}  // namespace minas
