#include "cli/strategy_flags.h"

#include <cmath>
#include <optional>
#include <sstream>

#include "cli/flag_ranges.h"
#include "controller/strategy_registry.h"
#include "searchspace/error.h"
#include "searchspace/json_excerpt.h"

namespace minas::cli {

void StrategyFlags::add(CLI::App* app, bool with_asha, const std::string& default_strategy,
                        bool asha_by_default) {
  strategy = default_strategy;
  app->add_option("--strategy", strategy, "Search strategy: " + strategy_names_text(" or "))
      ->default_val(default_strategy)
      ->check(CLI::IsMember(strategy_names()));
  // Each strategy's settings, from the registry: "evolution: population size P".
  const StrategySettings defaults;
  for (const StrategyEntry& e : strategy_registry())
    for (const StrategySetting& s : e.settings) {
      const std::string help = std::string(e.name) + ": " + s.help;
      if (s.integer) {
        app->add_option(s.flag, values.*(s.integer), help)
            ->default_val(defaults.*(s.integer))
            ->check(in_range(static_cast<int>(s.flag_lo), static_cast<int>(s.flag_hi)));
      } else {
        app->add_option(s.flag, values.*(s.real), help)
            ->default_val(defaults.*(s.real))
            ->check(s.flag_lo_open ? above(s.flag_lo, s.flag_hi) : in_range(s.flag_lo, s.flag_hi));
      }
    }
  app->add_option("--max-params", max_params, "Constraint: parameters (checked before training)")
      ->check(above(0.0, 1e15));
  app->add_option("--max-macs", max_macs, "Constraint: MACs per sample (checked before training)")
      ->check(above(0.0, 1e18));
  app->add_option("--max-latency-ms", max_latency_ms, "Constraint: measured latency in ms")
      ->check(above(0.0, 1e9));
  app->add_option("--latency-target-ms", latency_target_ms,
                  "Soft latency-aware reward acc * (latency / target)^w (MnasNet)")
      ->check(above(0.0, 1e9));
  // Objective::from_json refuses w >= 0 with its own message; the range here
  // keeps nan, inf and overflow out.
  app->add_option("--latency-weight", latency_weight, "The reward's exponent w (< 0)")
      ->default_val(-0.07)
      ->check(in_range(-100.0, 100.0));
  app->add_option("--time-exponent", time_exponent,
                  "Time-aware reward: a trial's error scaled by (its training seconds / 10)^a, "
                  "which orders trials as the accuracy each reaches in one fixed time under a "
                  "learning curve err ~ epochs^-a")
      ->check(above(0.0, 2.0));
  app->add_option("--pareto", pareto,
                  "Pareto mode: accuracy against latency_ms, params or macs (evolution: NSGA-II "
                  "selection)")
      ->check(CLI::IsMember({"latency_ms", "params", "macs"}));
  if (with_asha && asha_by_default) {
    asha = true;
    app->add_flag("--no-asha", no_asha, "No early stopping (ASHA is on by default)");
  }
  if (with_asha) {
    app->add_flag("--asha", asha, "Early stopping by asynchronous successive halving");
    app->add_option("--asha-eta", asha_eta, "ASHA: reduction factor (implies --asha)")
        ->default_val(3)
        ->check(above(1.0, 1000.0));
    app->add_option("--asha-rungs", asha_rungs,
                    "ASHA: the epochs trials are judged at, e.g. 1,3,9, or fractions of one, "
                    "e.g. 0.25,0.5,1,3 (validated mid-epoch; implies --asha; default 1, eta, "
                    "eta^2, ... below the trial's epochs)");
  }
}

bool StrategyFlags::read_file_field(const std::string& key, const nlohmann::json& value,
                                    const std::string& where) {
  if (key == "strategy_settings") {
    if (!value.is_object()) throw Error(where, "must be an object, got " + json_excerpt(value));
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (it.key() == "name" || it.key() == "seed" || it.key() == "objective")
        throw Error(where + "/" + printable_excerpt(it.key(), 40),
                    "is set by the experiment's own \"" + it.key() + "\" field, not here");
      file_settings[it.key()] = it.value();
    }
    StrategySettings::from_json(file_settings, where);  // checked now, named by the file
    return true;
  }
  if (key == "objective") {
    Objective::from_json(value, where);
    file_settings["objective"] = value;
    return true;
  }
  if (key == "asha") {
    if (!value.is_object()) throw Error(where, "must be an object, got " + json_excerpt(value));
    file_asha = value;
    file_asha_where = where;
    return true;
  }
  return false;
}

StrategySettings StrategyFlags::settings(const CLI::App& app, uint64_t seed) const {
  nlohmann::json j = file_settings;
  j["name"] = strategy;
  j["seed"] = seed;
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  for (const StrategyEntry& e : strategy_registry())
    for (const StrategySetting& s : e.settings)
      if (given(s.flag)) {
        if (s.integer)
          j[s.field] = values.*(s.integer);
        else
          j[s.field] = values.*(s.real);
      }
  nlohmann::json& o = j["objective"];
  if (o.is_null()) o = nlohmann::json::object();
  if (given("--max-params")) o["max_params"] = max_params;
  if (given("--max-macs")) o["max_macs"] = max_macs;
  if (given("--max-latency-ms")) o["max_latency_ms"] = max_latency_ms;
  if (given("--latency-target-ms")) o["latency_target_ms"] = latency_target_ms;
  if (given("--latency-weight")) {
    if (!o.contains("latency_target_ms"))
      throw Error("--latency-weight", "needs --latency-target-ms (the reward's latency target)");
    o["latency_weight"] = latency_weight;
  }
  if (given("--time-exponent")) o["time_exponent"] = time_exponent;
  if (given("--pareto")) o["pareto"] = pareto;
  StrategySettings s = StrategySettings::from_json(j, "strategy settings");
  if (s.objective.pareto_mode() && !find_strategy(s.name, "--strategy").pareto)
    throw Error("--pareto", "Pareto mode is for evolution (NSGA-II selection) and random search");
  return s;
}

std::optional<AshaSettings> StrategyFlags::asha_settings(const CLI::App& app,
                                                         int max_epochs) const {
  const bool eta_given = app.count("--asha-eta") > 0, rungs_given = app.count("--asha-rungs") > 0;
  if (no_asha) {
    if (eta_given || rungs_given)
      throw Error("--no-asha", "and --asha-eta/--asha-rungs exclude each other");
    return std::nullopt;
  }
  if (!asha && !eta_given && !rungs_given && file_asha.is_null()) return std::nullopt;
  nlohmann::json j = file_asha.is_null() ? nlohmann::json::object() : file_asha;
  if (eta_given || !j.contains("eta")) j["eta"] = asha_eta;
  if (rungs_given) {
    j["rungs"] = nlohmann::json::array();
    std::stringstream ss(asha_rungs);
    std::string item;
    while (std::getline(ss, item, ',')) {
      // Whole epochs or fractions of one (0.25); AshaSettings checks the values.
      const std::optional<double> e = detail::strict_number<double>(item);
      if (!e)
        throw Error("--asha-rungs " + printable_excerpt(asha_rungs, 40),
                    "'" + printable_excerpt(item, 40) + "' is not a number of epochs");
      if (std::trunc(*e) == *e && std::fabs(*e) < 1e9)
        j["rungs"].push_back(static_cast<int64_t>(*e));
      else
        j["rungs"].push_back(*e);
    }
  } else if (!j.contains("rungs")) {
    if (!j["eta"].is_number() || !(j["eta"].get<double>() > 1))
      throw Error(eta_given || file_asha.is_null() ? "--asha-eta" : file_asha_where + "/eta",
                  "must be a number > 1, got " + json_excerpt(j["eta"]));
    j["rungs"] = AshaSettings::geometric(1, j["eta"].get<double>(), max_epochs);
    if (j["rungs"].empty())
      throw Error("--asha", "trials of " + std::to_string(max_epochs) +
                                " epoch(s) leave no rung below them; raise --fidelity");
  }
  const std::string where = file_asha.is_null() ? "--asha" : file_asha_where;
  AshaSettings s = AshaSettings::from_json(j, where);
  if (s.rungs.empty() || s.rungs.back() >= max_epochs)
    throw Error(where, "every rung must lie below the trials' " + std::to_string(max_epochs) +
                           " epochs (rungs " + json_excerpt(j["rungs"]) +
                           "); raise --fidelity or lower the rungs");
  return s;
}

}  // namespace minas::cli
