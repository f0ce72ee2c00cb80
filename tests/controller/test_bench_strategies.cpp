// `minas bench strategies`: the harness that measures strategies against a
// table, checked on cases whose answer is known exactly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support.h"

using minas::test::contains;
using minas::test::run_minas;

namespace {

std::string last_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s.substr(s.rfind('\n') + 1);
}

// mean and std from the `mean=X std=Y` last line; fails the test otherwise.
std::pair<double, double> figures(const std::string& out) {
  static const std::regex re(R"(^mean=(-?[0-9.]+) std=([0-9.]+)$)");
  std::smatch m;
  const std::string line = last_line(out);
  REQUIRE_MESSAGE(std::regex_match(line, m, re), "last line: " << line);
  return {std::stod(m[1]), std::stod(m[2])};
}

// The NAS-Bench-201 table's rows as fields, header left out.
std::vector<std::vector<std::string>> table_rows() {
  std::ifstream in(minas::test::nb201_table());
  std::string line;
  std::getline(in, line);
  std::vector<std::vector<std::string>> rows;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    rows.push_back(std::move(f));
  }
  return rows;
}

const char* kBench =
    "bench strategies --space nb201 --search-metric cifar10_valid_12ep "
    "--report-metric cifar10_test_200ep --table ";

}  // namespace

TEST_CASE(
    "bench strategies: random over the whole table picks the global best by the search metric") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  // The answer, read straight from the table.
  double best_search = -1, its_report = 0;
  for (const auto& f : table_rows())
    if (std::stod(f[2]) > best_search) best_search = std::stod(f[2]), its_report = std::stod(f[8]);
  const auto r = run_minas(std::string(kBench) + minas::test::nb201_table() +
                           " --queries 15625 --runs 2 --strategy random");
  REQUIRE(r.status == 0);
  const auto [mean, std] = figures(r.out);
  CHECK(mean == doctest::Approx(its_report).epsilon(1e-6));
  CHECK(std == 0.0);
}

TEST_CASE(
    "bench strategies: random search's mean over 500 runs is the exact best-of-100 expectation") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  // E[report of the best-by-search of N distinct uniform draws] over the
  // table sorted by the search metric: the k-th best is the pick exactly when
  // it is drawn and none above it is, C(n-k-1, N-1) / C(n, N).
  std::vector<std::pair<double, double>> rows;  // (search, report)
  for (const auto& f : table_rows()) rows.emplace_back(std::stod(f[2]), std::stod(f[8]));
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first > b.first; });
  const double n = static_cast<double>(rows.size()), N = 100;
  auto lc = [](double a, double b) {
    return std::lgamma(a + 1) - std::lgamma(b + 1) - std::lgamma(a - b + 1);
  };
  double expected = 0;
  for (size_t k = 0; k + N <= rows.size(); ++k)
    expected += rows[k].second * std::exp(lc(n - k - 1, N - 1) - lc(n, N));
  const auto r = run_minas(std::string(kBench) + minas::test::nb201_table() +
                           " --queries 100 --runs 500 --strategy random --seed 7");
  REQUIRE(r.status == 0);
  const auto [mean, std] = figures(r.out);
  INFO("expected " << expected << ", measured " << mean << " +- " << std / std::sqrt(500.0));
  CHECK(std::abs(mean - expected) < 4 * std / std::sqrt(500.0));  // four standard errors
  CHECK(std::abs(mean - 93.70) < 0.1);  // NAS-Bench-201's published random search
}

TEST_CASE("bench strategies: each strategy runs, and searches beat a single random draw") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  double random_one = 0;
  {
    const auto r = run_minas(std::string(kBench) + minas::test::nb201_table() +
                             " --queries 1 --runs 200 --strategy random");
    REQUIRE(r.status == 0);
    random_one = figures(r.out).first;
  }
  for (const std::string s : {"random", "evolution", "reinforce"}) {
    CAPTURE(s);
    const auto r = run_minas(std::string(kBench) + minas::test::nb201_table() +
                             " --queries 60 --runs 40 --workers 4 --strategy " + s);
    REQUIRE(r.status == 0);
    const auto [mean, std] = figures(r.out);
    CHECK(mean > random_one + 1.0);
    CHECK(mean <= 94.3733);  // the table's optimum
    CHECK(contains(r.out, "strategy=" + s));
  }
  const auto p = run_minas(std::string(kBench) + minas::test::nb201_table() +
                           " --queries 50 --runs 5 --strategy evolution --pareto macs");
  REQUIRE(p.status == 0);
  CHECK(contains(p.out, "hypervolume"));
  const auto [hv, hv_std] = figures(p.out);
  CHECK(hv > 0.5);
  CHECK(hv <= 1.0);
}

TEST_CASE("bench strategies: any table with an arch column of the space plugs in") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  // NAS-Bench-201's CIFAR-100 columns under other names and in another order,
  // the report metric last on CRLF lines.
  const minas::test::TempDir dir("bench-strategies-plug");
  const std::string t = dir.file("other.csv");
  std::ofstream out(t);
  out << "arch,score,truth\r\n";
  double best = -1, answer = 0;
  for (const auto& f : table_rows()) {
    out << f[1] << "," << f[4] << "," << f[9] << "\r\n";
    if (std::stod(f[4]) > best) best = std::stod(f[4]), answer = std::stod(f[9]);
  }
  out.close();
  const auto r = run_minas("bench strategies --space nb201 --table " + t +
                           " --search-metric score --report-metric truth --queries 15625 --runs 1");
  REQUIRE(r.status == 0);
  CHECK(figures(r.out).first == doctest::Approx(answer).epsilon(1e-6));
}

TEST_CASE("bench strategies: bad tables and settings are errors that say where") {
  const minas::test::TempDir dir("bench-strategies");
  const std::string t = dir.file("t.csv");
  const std::string a =
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_"
      "3x3~2|";
  const std::string b = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|avg_pool_3x3~2|";
  std::ofstream(t) << "arch,fast,slow\n" << a << ",0.9,77.5\n" << b << ",0.1,10\n";
  const std::string bench = "bench strategies --space nb201 --table " + t + " ";
  // A table must cover what the strategies ask: the whole space.
  auto r = run_minas(bench + "--search-metric fast --report-metric slow --queries 3 --runs 1");
  CHECK(r.status != 0);
  CHECK(contains(r.out, t + ": has no row for"));

  r = run_minas(bench + "--search-metric quick --report-metric slow");
  CHECK(r.status != 0);
  CHECK(contains(r.out, t + ": no column 'quick' for --search-metric (columns: arch, fast, slow)"));

  std::ofstream(t) << "arch,fast,slow\n" << a << ",0.9,77.5\n|conv_9x9~0|+|,0.1,10\n";
  r = run_minas(bench + "--search-metric fast --report-metric slow");
  CHECK(r.status != 0);
  CHECK(contains(r.out, t + ":3: arch is not of space nb201"));

  std::ofstream(t) << "arch,fast,slow\n" << a << ",0.9,n/a\n";
  r = run_minas(bench + "--search-metric fast --report-metric slow");
  CHECK(r.status != 0);
  CHECK(contains(r.out, t + ":2: column slow: 'n/a' is not a number"));

  std::ofstream(t) << "arch,fast,slow\n" << a << ",0.9,1\n";
  r = run_minas(bench + "--search-metric fast --report-metric slow --strategy bayes");
  CHECK(r.status != 0);
  r = run_minas(bench +
                "--search-metric fast --report-metric slow --strategy evolution "
                "--population 3 --tournament 5");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "tournament"));
  r = run_minas(bench + "--search-metric fast --report-metric slow --latency-target-ms 2");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "no measured latency"));
  r = run_minas(bench + "--search-metric fast --report-metric slow --time-exponent 0.2");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "no trial's training time"));
}

TEST_CASE("search: docs/search.md holds the parameter table of minas search's options") {
  const auto r = run_minas("search --params-markdown");
  REQUIRE(r.status == 0);
  std::ifstream in(std::string(MINAS_SOURCE_DIR) + "/docs/search.md");
  const std::string doc((std::istreambuf_iterator<char>(in)), {});
  REQUIRE(doc.size() >= r.out.size());
  CHECK_MESSAGE(doc.compare(doc.size() - r.out.size(), r.out.size(), r.out) == 0,
                "docs/search.md ends with a table that differs from minas search "
                "--params-markdown: regenerate it");
}

TEST_CASE("search: an experiment file's fields are checked as the options check them") {
  const minas::test::TempDir dir("search-file");
  const std::string f = dir.file("exp.json");
  std::ofstream(f) << R"({"budget": "5x"})";
  auto r = run_minas("search --experiment " + f);
  CHECK(r.status != 0);
  CHECK(contains(r.out, "exp.json: /budget"));
  std::ofstream(f) << R"({"final_share": 2})";
  r = run_minas("search --experiment " + f);
  CHECK(r.status != 0);
  CHECK(contains(r.out, "exp.json: /final_share"));
  std::ofstream(f) << R"({"budgett": "5m"})";
  r = run_minas("search --experiment " + f);
  CHECK(r.status != 0);
  CHECK(contains(r.out, "exp.json: /budgett: unknown field 'budgett'"));
  std::ofstream(f) << R"({"objective": {"max_params": "many"}})";
  r = run_minas("search --experiment " + f);
  CHECK(r.status != 0);
  CHECK(contains(r.out, "exp.json: /objective/max_params"));
  std::ofstream(f) << "[1, 2]";
  r = run_minas("search --experiment " + f);
  CHECK(r.status != 0);
  CHECK(contains(r.out, "an experiment file is a JSON object"));
}
