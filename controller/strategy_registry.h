#pragma once
// The search strategies as one table: each strategy's name, a one-line help,
// its settings and its factory, in the order they are listed everywhere. The
// CLI's --strategy and setting flags (cli/strategy_flags.*), an experiment
// file's "strategy" and "strategy_settings" (StrategySettings::from_json),
// make_strategy, `minas bench strategies` and the docs (docs/strategies.md,
// checked against strategies_markdown() by a test) all read it. A new strategy
// is its class and one row here.
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "controller/strategy.h"

namespace minas {

// A numeric setting of one strategy: a member of StrategySettings (whose
// initializer is its default), a field of an experiment file's
// "strategy_settings" object, and a flag.
struct StrategySetting {
  const char* field;  // "population": the file's field
  const char* flag;   // "--population"
  const char* help;   // "population size P"; the flag's help is "STRATEGY: " + help
  // The member: exactly one of the two is set.
  int StrategySettings::*integer = nullptr;
  double StrategySettings::*real = nullptr;
  // An experiment file's value: an integer >= file_lo, or a number in [file_lo, file_hi].
  double file_lo = 0, file_hi = 0;
  // The flag's value: in [flag_lo, flag_hi], or (flag_lo, flag_hi] when flag_lo_open.
  // (The flag's value then meets the file's check too, as part of the settings.)
  double flag_lo = 0, flag_hi = 0;
  bool flag_lo_open = false;
};

struct StrategyEntry {
  const char* name;  // --strategy NAME, an experiment's "strategy", Strategy::name()
  const char* help;  // one line, for the docs
  std::vector<StrategySetting> settings;
  bool pareto;  // searches in Pareto mode (objective.pareto)
  // The strategy alone; make_strategy adds the warm start and the constraints.
  std::unique_ptr<Strategy> (*make)(const Space& space, const StrategySettings& settings);
};

// Every strategy, in listing order.
std::span<const StrategyEntry> strategy_registry();

// The entry named `name`; throws Error(where, "unknown strategy 'NAME' (random, evolution,
// reinforce)") listing every registered name.
const StrategyEntry& find_strategy(const std::string& name, const std::string& where);
// The entry named `name`, or null.
const StrategyEntry* strategy_entry(std::string_view name);

// The names in listing order.
std::vector<std::string> strategy_names();
// The names for people: "random, evolution, reinforce", or with `last` before
// the final one: "random, evolution or reinforce".
std::string strategy_names_text(std::string_view last = ", ");

// The setting of that experiment-file field (of any strategy), or null.
const StrategySetting* strategy_setting(std::string_view field);

// The table of docs/strategies.md: each strategy with its help, then each
// setting with its flag, file field and default.
std::string strategies_markdown();

}  // namespace minas
