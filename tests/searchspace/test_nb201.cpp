// The nb201 space against the NAS-Bench-201 table in ../shared/benchmarks/,
// and its equivalence key.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "searchspace/space.h"
#include "tests/support.h"

namespace {

// The `arch` column of the table, or nothing when the table is absent (it is
// not part of the repository; CI has it, and there its absence fails).
std::vector<std::string> table_archs() {
  const std::string path = minas::test::nb201_table();
  if (!minas::test::have_external(path)) return {};
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) header.push_back(f);
  }
  const auto col = std::find(header.begin(), header.end(), "arch") - header.begin();
  REQUIRE(col < static_cast<long>(header.size()));
  std::vector<std::string> archs;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string f;
    for (long i = 0; i <= col; ++i) std::getline(ss, f, ',');
    archs.push_back(f);
  }
  return archs;
}

// NAS-Bench-201's own unique-cell string (to_unique_str with consider_zero),
// written from its description: skip passes its source's string through, none
// or a zero source gives '#', a node is the sorted '+'-join of its terms.
std::string nb201_unique_str(const std::string& key) {
  std::vector<std::string> node{"0"};
  std::stringstream groups(key);
  std::string g;
  while (std::getline(groups, g, '+')) {
    std::vector<std::string> terms;
    std::stringstream items(g);
    std::string item;
    while (std::getline(items, item, '|')) {
      if (item.empty()) continue;
      const auto tilde = item.find('~');
      const std::string op = item.substr(0, tilde);
      const std::string& in = node[std::stoul(item.substr(tilde + 1))];
      if (op == "none" || in == "#")
        terms.push_back("#");
      else if (op == "skip_connect")
        terms.push_back(in);
      else
        terms.push_back("(" + in + ")@" + op);
    }
    std::sort(terms.begin(), terms.end());
    std::string s;
    for (const auto& t : terms) s += (s.empty() ? "" : "+") + t;
    node.push_back(s);
  }
  return node.back();
}

}  // namespace

TEST_CASE("nb201: enumerates exactly the 15,625 cells of the benchmark table") {
  const auto archs = table_archs();
  if (archs.empty()) return;
  REQUIRE(archs.size() == 15625);
  const auto s = minas::Space::load("nb201");
  std::set<std::string> ours;
  s.enumerate([&](const minas::Arch& a) {
    ours.insert(s.key(a));
    return true;
  });
  CHECK(ours.size() == 15625);
  CHECK(ours == std::set<std::string>(archs.begin(), archs.end()));
  for (const auto& k : archs) CHECK(s.key(s.parse_key(k)) == k);
}

TEST_CASE(
    "nb201: the equivalence key merges only cells the benchmark's own string merges or finer") {
  const auto s = minas::Space::load("nb201");
  std::map<std::string, std::string> oracle_of_class;  // ours -> one oracle string
  std::set<std::string> oracle_classes, our_classes;
  std::map<std::string, std::set<std::string>> ours_of_oracle;
  s.enumerate([&](const minas::Arch& a) {
    const std::string key = s.key(a);
    const std::string o = nb201_unique_str(key), e = s.equivalence_key(a);
    oracle_classes.insert(o);
    our_classes.insert(e);
    ours_of_oracle[o].insert(e);
    return true;
  });
  // The oracle reproduces the paper's count of unique cells, so it is the
  // benchmark's rule; ours never splits what it merges (each of its classes
  // maps to one of ours) and merges more (nested sums, zeros in sums).
  CHECK(oracle_classes.size() == 6466);
  for (const auto& [o, ours] : ours_of_oracle) CHECK_MESSAGE(ours.size() == 1, o);
  CHECK(our_classes.size() == 4930);
}

TEST_CASE("nb201: equivalence survives relabelling and ignores dead edges") {
  const auto s = minas::Space::load("nb201");
  auto eq = [&](const char* a, const char* b) {
    return s.equivalence_key(s.parse_key(a)) == s.equivalence_key(s.parse_key(b));
  };
  // Nodes 1 and 2 swapped: 1 <- conv3(0), 2 <- pool(0); out <- 1 + 2.
  CHECK(eq("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
           "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|"));
  // Node 2 never reaches the output: its edges are dead whatever they are.
  CHECK(
      eq("|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|nor_conv_1x1~0|skip_connect~1|none~2|",
         "|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_1x1~0|skip_connect~1|none~2|"));
  // Node 1 is zero: edges from it add nothing.
  CHECK(eq("|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
           "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"));
  // A cell whose output is always zero.
  CHECK(s.equivalence_key(s.parse_key("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")) ==
        "zero");
  // Different functions stay apart.
  CHECK_FALSE(eq("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
                 "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"));
  CHECK_FALSE(
      eq("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
         "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|"));
}
