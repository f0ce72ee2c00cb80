#include "controller/objective.h"

#include <algorithm>
#include <cmath>

#include "searchspace/error.h"

namespace minas {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::optional<LatencyDevice> parse_latency_device(const std::string& text) {
  auto number = [](const std::string& s, int lo, int hi) -> std::optional<int> {
    if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    const int v = std::stoi(s);
    if (v < lo || v > hi) return std::nullopt;
    return v;
  };
  if (text == "cpu") return LatencyDevice{"cpu", 1};
  if (text.rfind("cpu:", 0) == 0) {
    if (auto t = number(text.substr(4), 1, 4096)) return LatencyDevice{"cpu", *t};
    return std::nullopt;
  }
  if (text.rfind("cuda:", 0) == 0)
    if (auto n = number(text.substr(5), 0, 999))
      return LatencyDevice{"cuda:" + std::to_string(*n), 0};
  return std::nullopt;
}

Objective Objective::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where, "the objective is a JSON object, got " + j.dump());
  Objective o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    const std::string at = where + "/" + k;
    auto positive = [&] {
      if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
        throw Error(at, "must be a number > 0, got " + v.dump());
      return v.get<double>();
    };
    if (k == "max_latency_ms") {
      o.max_latency_ms = positive();
    } else if (k == "max_params") {
      o.max_params = positive();
    } else if (k == "max_macs") {
      o.max_macs = positive();
    } else if (k == "latency_target_ms") {
      o.latency_target_ms = positive();
    } else if (k == "latency_weight") {
      if (!v.is_number() || !(v.get<double>() < 0) || !std::isfinite(v.get<double>()))
        throw Error(at, "must be a number < 0 (MnasNet uses -0.07), got " + v.dump());
      o.latency_weight = v.get<double>();
    } else if (k == "time_exponent") {
      if (!v.is_number() || !(v.get<double>() > 0) || !(v.get<double>() <= 2))
        throw Error(at, "must be a number in (0, 2] (a learning curve's exponent), got " +
                            v.dump());
      o.time_exponent = v.get<double>();
    } else if (k == "time_floor_s") {
      o.time_floor_s = positive();
    } else if (k == "pareto") {
      if (!v.is_string()) throw Error(at, "must be a string, got " + v.dump());
      o.pareto = v.get<std::string>();
      if (!o.pareto.empty() && o.pareto != "latency_ms" && o.pareto != "params" &&
          o.pareto != "macs")
        throw Error(at, "must be latency_ms, params or macs, got '" + o.pareto + "'");
    } else if (k == "latency_device") {
      if (!v.is_string()) throw Error(at, "must be a string, got " + v.dump());
      o.latency_device = v.get<std::string>();
      if (!o.latency_device.empty() && !parse_latency_device(o.latency_device))
        throw Error(at, "must be cpu:THREADS or cuda:N, got '" + o.latency_device + "'");
    } else {
      throw Error(at, "unknown field '" + k +
                          "' (fields: max_latency_ms, max_params, max_macs, latency_target_ms, "
                          "latency_weight, time_exponent, time_floor_s, pareto, latency_device)");
    }
  }
  if (o.pareto_mode() && o.latency_target_ms)
    throw Error(where,
                "pareto and latency_target_ms exclude each other: Pareto mode keeps "
                "accuracy and cost apart, the soft reward folds them into one value");
  if (o.time_floor_s && !o.time_exponent)
    throw Error(where + "/time_floor_s", "needs a time_exponent (the reward it bounds)");
  if (o.time_exponent && o.latency_target_ms)
    throw Error(where,
                "time_exponent and latency_target_ms exclude each other: each folds a cost "
                "into the one value a search maximizes");
  return o;
}

nlohmann::json Objective::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  if (max_latency_ms) j["max_latency_ms"] = *max_latency_ms;
  if (max_params) j["max_params"] = *max_params;
  if (max_macs) j["max_macs"] = *max_macs;
  if (latency_target_ms) {
    j["latency_target_ms"] = *latency_target_ms;
    j["latency_weight"] = latency_weight;
  }
  if (time_exponent) j["time_exponent"] = *time_exponent;
  if (time_floor_s) j["time_floor_s"] = *time_floor_s;
  if (pareto_mode()) j["pareto"] = pareto;
  if (!latency_device.empty()) j["latency_device"] = latency_device;
  return j;
}

bool Objective::needs_latency() const {
  return max_latency_ms || latency_target_ms || pareto == "latency_ms";
}

double Objective::time_factor(double train_seconds) const {
  if (!time_exponent) return 1;
  return std::pow(std::max(train_seconds, time_floor_s.value_or(0)) / kTimeReferenceSeconds,
                  *time_exponent);
}

std::optional<std::string> Objective::precheck(const LayerGraph& graph) const {
  const double params = static_cast<double>(graph.params());
  const double macs = static_cast<double>(graph.macs());
  if (max_params && params > *max_params)
    return "params " + number(params) + " > max_params " + number(*max_params);
  if (max_macs && macs > *max_macs)
    return "MACs " + number(macs) + " > max_macs " + number(*max_macs);
  return std::nullopt;
}

Score Objective::score(const Metrics& m) const {
  Score s;
  s.value = m.val_acc;
  if (max_params && (!m.params || *m.params > *max_params)) s.feasible = false;
  if (max_macs && (!m.macs || *m.macs > *max_macs)) s.feasible = false;
  if (needs_latency() && !m.latency_ms) s.feasible = false;  // cannot be judged
  if (max_latency_ms && m.latency_ms && *m.latency_ms > *max_latency_ms) s.feasible = false;
  if (latency_target_ms && m.latency_ms && *m.latency_ms > 0)
    s.value = m.val_acc * std::pow(*m.latency_ms / *latency_target_ms, latency_weight);
  if (time_exponent) {
    // A trial without a measured time cannot be judged against those with one.
    if (m.train_seconds && *m.train_seconds > 0 && std::isfinite(*m.train_seconds))
      s.value = 1 - (1 - m.val_acc) * time_factor(*m.train_seconds);
    else
      s.feasible = false;
  }
  if (pareto == "latency_ms")
    s.cost = m.latency_ms.value_or(0);
  else if (pareto == "params")
    s.cost = m.params.value_or(0);
  else if (pareto == "macs")
    s.cost = m.macs.value_or(0);
  if (pareto_mode() && !(pareto == "latency_ms" ? m.latency_ms
                         : pareto == "params"   ? m.params
                                                : m.macs))
    s.feasible = false;
  return s;
}

}  // namespace minas
