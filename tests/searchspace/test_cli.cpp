// The `minas space` command forms, run as a user runs them.
#include <doctest/doctest.h>

#include "tests/support.h"

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "searchspace/space.h"

namespace {

using minas::test::Run;

Run run(const std::string& args) {
  return minas::test::run_minas(args);
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l)) v.push_back(l);
  return v;
}

const char* kCell =
    "'|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~"
    "2|'";

}  // namespace

TEST_CASE("cli: space info prints name, decisions and size as JSON") {
  const Run r = run("space info --space nb201");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["name"] == "nb201");
  CHECK(j["size"] == 15625);
  CHECK(j["decisions"].size() == 6);
  CHECK(j["decisions"][0]["options"].size() == 5);
  const auto m = nlohmann::json::parse(run("space info --space mobile").out);
  CHECK(m["log10_size"].get<double>() > 18);
}

TEST_CASE("cli: space enumerate lists every key once") {
  const Run r = run("space enumerate --space nb201");
  REQUIRE(r.status == 0);
  const auto keys = lines(r.out);
  CHECK(keys.size() == 15625);
  CHECK(std::set<std::string>(keys.begin(), keys.end()).size() == 15625);
  const Run huge = run("space enumerate --space mobile");
  CHECK(huge.status != 0);
  CHECK(huge.out.find("--limit") != std::string::npos);
  CHECK(lines(run("space enumerate --space mobile --limit 5").out).size() == 5);
}

TEST_CASE("cli: space sample gives N keys, the same for the same seed") {
  const Run a = run("space sample --space nb201 --n 50 --seed 3");
  const Run b = run("space sample --space nb201 --n 50 --seed 3");
  const Run c = run("space sample --space nb201 --n 50 --seed 4");
  REQUIRE(a.status == 0);
  CHECK(lines(a.out).size() == 50);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);
  const auto s = minas::Space::load("nb201");
  for (const auto& k : lines(a.out)) CHECK(s.key(s.parse_key(k)) == k);
}

TEST_CASE("cli: space mutate changes exactly one decision") {
  const auto s = minas::Space::load("nb201");
  std::string key = kCell;
  key = key.substr(1, key.size() - 2);
  for (int seed = 0; seed < 5; ++seed) {
    const Run r = run("space mutate --space nb201 --arch " + std::string(kCell) + " --seed " +
                      std::to_string(seed));
    REQUIRE(r.status == 0);
    const auto out = lines(r.out);
    REQUIRE(out.size() == 1);
    const auto a = s.parse_key(key), b = s.parse_key(out[0]);
    int diff = 0;
    for (size_t i = 0; i < a.choice.size(); ++i) diff += a.choice[i] != b.choice[i];
    CHECK(diff == 1);
  }
}

TEST_CASE("cli: space lower prints the layer graph with params and macs at the top") {
  const Run r = run("space lower --space 'nb201:cells=1,channels=8,input=1x28x28' --arch " +
                    std::string(kCell));
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["params"].get<int64_t>() > 0);
  CHECK(j["macs"].get<int64_t>() > 0);
  CHECK(j["layers"][0]["shape"] == nlohmann::json({1, 28, 28}));
  CHECK(j["layers"].back()["op"] == "linear");
}

TEST_CASE("cli: bad input exits non-zero with an error that says what and where") {
  struct Bad {
    const char* args;
    const char* expect;
  };
  const Bad cases[] = {
      {"space info --space nope", "no built-in space or file"},
      {"space lower --space nb201 --arch '16|32|conv_k3|skip|64|conv_k3|skip'", "arch key"},
      {"space lower --space small --arch '16|32|conv_k9|skip|64|conv_k3|skip'",
       "'conv_k9' is not an option of decision 'stage1.layer1'"},
      {"space mutate --space small --arch x --seed 1", "has 1 '|'-separated field(s)"},
      {"space sample --space 'nb201:cells=-1'", "/skeleton/cells"},
      {"space sample --space small --n 0", "--n"},
      {"space lower --space small", "--arch is required"},
      {"space frobnicate", "A subcommand is required"},
  };
  for (const Bad& b : cases) {
    const std::string args = b.args;
    CAPTURE(args);
    const Run r = run(b.args);
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.out.find(b.expect) != std::string::npos, r.out);
  }
}
