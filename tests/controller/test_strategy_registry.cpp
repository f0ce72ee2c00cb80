// The strategy registry (controller/strategy_registry.h) against everything
// that reads it: make_strategy builds every row, an unknown name is refused
// with the known ones listed, the CLI accepts exactly the table's names and
// settings, an experiment file's settings round-trip, and docs/strategies.md
// holds the table as the code defines it.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/strategy_flags.h"
#include "controller/strategy.h"
#include "controller/strategy_registry.h"
#include "searchspace/error.h"

using namespace minas;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The message of the Error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Parses `args` (after the program name) into a fresh app with the strategy flags.
struct FlagsApp {
  CLI::App app{"test"};
  cli::StrategyFlags flags;
  FlagsApp() { flags.add(&app, true); }
  // "" when CLI11 accepts the line, else its message.
  std::string parse(std::vector<std::string> args) {
    std::vector<const char*> argv{"test"};
    for (const auto& a : args) argv.push_back(a.c_str());
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      return e.what();
    }
    return "";
  }
};

}  // namespace

TEST_SUITE_BEGIN("strategy registry");

TEST_CASE("strategy registry: every registered name creates its strategy") {
  const Space space = Space::load("small");
  REQUIRE(!strategy_registry().empty());
  std::set<std::string> names;
  for (const StrategyEntry& e : strategy_registry()) {
    CAPTURE(e.name);
    CHECK(names.insert(e.name).second);  // no name twice
    CHECK(std::string(e.help).find('\n') == std::string::npos);
    CHECK(strategy_entry(e.name) == &e);
    CHECK(&find_strategy(e.name, "x") == &e);
    StrategySettings st;
    st.name = e.name;
    st.seed = 7;
    const auto s = make_strategy(space, st);
    REQUIRE(s);
    CHECK(s->name() == e.name);
    CHECK(s->ask().has_value());
    // The settings an experiment stores are the row's own, and read back.
    const nlohmann::json j = st.to_json();
    for (const StrategySetting& set : e.settings) CHECK(j.contains(set.field));
    CHECK(StrategySettings::from_json(j, "s").to_json() == j);
  }
  CHECK(strategy_names().size() == names.size());
  CHECK(strategy_names().front() == "random");  // listing order: the default first
  CHECK(strategy_names_text() == "random, evolution, reinforce, predictor, stratified");
  CHECK(strategy_names_text(" or ") == "random, evolution, reinforce, predictor or stratified");
}

TEST_CASE("strategy registry: each setting belongs to one strategy and has one member") {
  std::set<std::string> fields, flags;
  for (const StrategyEntry& e : strategy_registry())
    for (const StrategySetting& s : e.settings) {
      CAPTURE(s.field);
      CHECK(fields.insert(s.field).second);
      CHECK(flags.insert(s.flag).second);
      CHECK((s.integer == nullptr) != (s.real == nullptr));
      CHECK(strategy_setting(s.field) == &s);
      // The flag is the field with dashes.
      std::string dashed = s.field;
      for (char& c : dashed)
        if (c == '_') c = '-';
      CHECK(std::string(s.flag) == "--" + dashed);
    }
  CHECK(strategy_setting("name") == nullptr);
  CHECK(strategy_setting("bayes") == nullptr);
}

TEST_CASE("strategy registry: unknown names are refused, listing the known ones") {
  const Space space = Space::load("small");
  const std::string known = "(random, evolution, reinforce, predictor, stratified)";
  std::string e = error_of([] { find_strategy("bayes", "here"); });
  CHECK(contains(e, "here"));
  CHECK(contains(e, "unknown strategy 'bayes' " + known));
  CHECK(strategy_entry("bayes") == nullptr);
  CHECK(strategy_entry("Random") == nullptr);
  e = error_of([] { StrategySettings::from_json({{"name", "bayes"}}, "exp.json: /strategy"); });
  CHECK(contains(e, "exp.json: /strategy/name"));
  CHECK(contains(e, "unknown strategy 'bayes' " + known));
  StrategySettings st;
  st.name = "bayes";
  e = error_of([&] { make_strategy(space, st); });
  CHECK(contains(e, "unknown strategy 'bayes' " + known));
  // An unknown settings field names every field, the registry's among them.
  e = error_of([] { StrategySettings::from_json({{"populaton", 3}}, "s"); });
  CHECK(contains(e,
                 "unknown field 'populaton' (fields: name, seed, population, tournament, "
                 "learning_rate, baseline_decay, entropy_weight, initial_samples, candidates, "
                 "ensemble_size, fit_epochs, sample_size, objective, initial)"));
}

TEST_CASE("strategy registry: the CLI accepts exactly the table's names and settings") {
  for (const StrategyEntry& e : strategy_registry()) {
    CAPTURE(e.name);
    FlagsApp a;
    CHECK(a.parse({"--strategy", e.name}) == "");
    CHECK(a.flags.strategy == e.name);
    CHECK(a.flags.settings(a.app, 1).name == e.name);
  }
  for (const std::string bad : {"bayes", "Random", "", "random "}) {
    FlagsApp a;
    CHECK_MESSAGE(a.parse({"--strategy", bad}) != "", bad);
  }
  // The help lists the names; the validator's set is the table's.
  FlagsApp a;
  const CLI::Option* opt = a.app.get_option("--strategy");
  CHECK(opt->get_description() == "Search strategy: " + strategy_names_text(" or "));
  std::string set = "{";
  for (const std::string& n : strategy_names()) set += (set.size() > 1 ? "," : "") + n;
  CHECK(contains(a.app.help(), set + "}"));
  // Every setting is a flag with the row's help and the member's default, and
  // reaches the settings only when given.
  const StrategySettings defaults;
  for (const StrategyEntry& e : strategy_registry())
    for (const StrategySetting& s : e.settings) {
      CAPTURE(s.flag);
      const CLI::Option* f = a.app.get_option_no_throw(s.flag);
      REQUIRE(f);
      CHECK(f->get_description() == std::string(e.name) + ": " + s.help);
      std::ostringstream d;
      if (s.integer)
        d << defaults.*(s.integer);
      else
        d << defaults.*(s.real);
      CHECK(f->get_default_str() == d.str());
    }
  FlagsApp b;
  REQUIRE(b.parse({"--strategy", "evolution", "--population", "7"}) == "");
  const StrategySettings st = b.flags.settings(b.app, 3);
  CHECK(st.population == 7);
  CHECK(st.tournament == defaults.tournament);
  CHECK(st.to_json().at("population") == 7);
  FlagsApp c;
  CHECK(c.parse({"--population", "1"}) != "");  // the flag's range
  FlagsApp r;
  REQUIRE(r.parse({"--strategy", "reinforce", "--pareto", "macs"}) == "");
  CHECK(contains(error_of([&] { r.flags.settings(r.app, 0); }), "Pareto mode is for"));
}

TEST_CASE("strategy registry: docs/strategies.md holds the table as the code defines it") {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/docs/strategies.md";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const std::string begin = "<!-- strategies table: begin -->\n",
                    end = "<!-- strategies table: end -->";
  const size_t b = doc.find(begin), e = doc.find(end);
  REQUIRE_MESSAGE(b != std::string::npos, path << " has no '" << begin << "'");
  REQUIRE_MESSAGE(e != std::string::npos, path << " has no '" << end << "'");
  REQUIRE(e >= b + begin.size());
  const std::string table = doc.substr(b + begin.size(), e - b - begin.size());
  CHECK_MESSAGE(table == strategies_markdown(),
                path << " holds a strategies table that differs from strategies_markdown(): "
                        "regenerate it from the code:\n"
                     << strategies_markdown());
}

TEST_SUITE_END();
