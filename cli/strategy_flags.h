#pragma once
// The strategy, objective and early-stopping flags that `minas controller`,
// `minas search` and `minas bench strategies` share, and how an experiment
// file's "strategy", "strategy_settings", "objective" and "asha" fields
// combine with them (a flag given overrides the file).
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "controller/asha.h"
#include "controller/strategy.h"

namespace minas::cli {

struct StrategyFlags {
  std::string strategy = "random";
  // The strategies' setting flags (the registry's, controller/strategy_registry.h)
  // write into these members; only those given reach settings().
  StrategySettings values;
  double max_params = 0, max_macs = 0, max_latency_ms = 0, latency_target_ms = 0,
         latency_weight = -0.07, time_exponent = 0;
  std::string pareto;
  bool asha = false;
  double asha_eta = 3;
  std::string asha_rungs;
  // From an experiment file, before flags are applied.
  nlohmann::json file_settings = nlohmann::json::object();  // strategy_settings + objective
  nlohmann::json file_asha;                                 // null: none in the file
  std::string file_asha_where;                              // "FILE: /asha", for errors

  // The one-click search defaults to evolution with ASHA on (--no-asha);
  // the controller to random search without it (--asha).
  void add(CLI::App* app, bool with_asha, const std::string& default_strategy = "random",
           bool asha_by_default = false);
  bool no_asha = false;
  // The settings: the file's, then every flag given on `app`.
  StrategySettings settings(const CLI::App& app, uint64_t seed) const;
  // Early stopping, if asked for; rungs default to 1, eta, eta^2, ... below max_epochs.
  std::optional<AshaSettings> asha_settings(const CLI::App& app, int max_epochs) const;
  // Takes the file's "strategy_settings", "objective" and "asha" fields; false
  // for a field that is not one of these.
  bool read_file_field(const std::string& key, const nlohmann::json& value,
                       const std::string& where);
};

}  // namespace minas::cli
