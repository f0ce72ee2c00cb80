#pragma once
// What a search maximizes and what it must respect. A trial's metrics become
// a Score: one value to maximize (the metric, or MnasNet's latency-aware
// reward), a cost for Pareto mode, and whether every hard constraint held.
// Constraints computable from the layer graph (params, MACs) are checked on
// the candidate before any training (precheck); latency is measured, so it is
// checked on the result.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "searchspace/layer_graph.h"

namespace minas {

// What a finished trial measured. Params and MACs are exact functions of the
// layer graph; latency is measured on a worker.
struct Metrics {
  double val_acc = 0;  // the search metric, a fraction in [0, 1]
  std::optional<double> latency_ms;
  std::optional<double> params;
  std::optional<double> macs;
  std::optional<double> train_seconds;  // the trial's training, as its worker measured it
};

struct Score {
  double value = 0;      // higher is better
  double cost = 0;       // Pareto mode: the second objective, lower is better
  bool feasible = true;  // every hard constraint held
  bool pruned = false;   // stopped early: value is at a lower fidelity than the others
};

// A latency device's backend: "cpu" with `threads` (1 to 4096), or "cuda:N"
// (N 0 to 999, written without leading zeros). "cpu" alone is one thread;
// nullopt for anything else.
struct LatencyDevice {
  std::string device;
  int threads = 0;
};
std::optional<LatencyDevice> parse_latency_device(const std::string& text);

struct Objective {
  // Hard constraints; absent: none.
  std::optional<double> max_latency_ms, max_params, max_macs;
  // MnasNet's soft reward acc * (latency / target)^w, w < 0, when a target is set.
  std::optional<double> latency_target_ms;
  double latency_weight = -0.07;
  // Time-aware reward, when set (a > 0): the error is scaled by the trial's
  // training time, value = 1 - (1 - acc) * (train_seconds / kTimeReferenceSeconds)^a.
  // With a learning curve err(E) = err(F) * (E / F)^-a, that orders trials as
  // the accuracy each would reach in one fixed time (the final training's),
  // its epochs being inversely proportional to its seconds per trial
  // (pipeline/final_choice.h); the reference only sets the scale.
  std::optional<double> time_exponent;
  static constexpr double kTimeReferenceSeconds = 10;
  // With a time exponent: trials faster than this count as this fast. A
  // final training of at most N epochs gains nothing from a network fast
  // enough for more; `minas search` sets it from its budget (the trial time
  // of a network whose N epochs fill the final training's time).
  std::optional<double> time_floor_s;
  // Pareto mode: accuracy against this cost (latency_ms, params or macs);
  // empty: a single objective.
  std::string pareto;
  // Where latency is measured: "cpu:THREADS" (this many CPU threads, batch
  // 1) or "cuda:N"; the worker measures the trained network there whatever
  // it trained on. Empty: on the trial's own training device and threads.
  std::string latency_device;

  // Throws Error naming `where` and the field for anything unknown or out of range.
  static Objective from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;

  bool pareto_mode() const { return !pareto.empty(); }
  // Whether scoring needs a measured latency (a constraint, target or cost on it).
  bool needs_latency() const;
  // What a trial's training time scales its error by (1 without a time exponent).
  double time_factor(double train_seconds) const;
  // The constraint a candidate breaks before training, or nullopt.
  std::optional<std::string> precheck(const LayerGraph& graph) const;
  // The score of a result; infeasible when a constraint is broken or a metric
  // it needs was not measured.
  Score score(const Metrics& m) const;
};

}  // namespace minas
