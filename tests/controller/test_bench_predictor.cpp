// `minas bench predictor`: the ensemble alone against a table, on a small
// synthetic table whose target is a known function of the architecture (and,
// for --feature-columns, a column that is the target itself).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "searchspace/space.h"
#include "tests/support.h"

using minas::test::contains;
using minas::test::run_minas;

namespace {

// 400 architectures of `small` with a target that depends on their decisions,
// a column equal to it, and one of noise.
std::string write_table(const minas::test::TempDir& dir) {
  const minas::Space space = minas::Space::load("small");
  minas::Rng rng(4);
  std::set<std::string> keys;
  const std::string path = dir.file("table.csv");
  std::ofstream out(path);
  out << "arch,target,copy,noise\n";
  while (keys.size() < 400) {
    const minas::Arch a = space.sample(rng);
    if (!keys.insert(space.key(a)).second) continue;
    double v = 50;
    for (size_t d = 0; d < a.choice.size(); ++d) v += std::cos(0.9 * a.choice[d] * (d + 1)) * 3;
    out << space.key(a) << "," << v << "," << v << "," << rng.uniform() << "\n";
  }
  return path;
}

// The figures of one train size's line: tau, rho, within 1 sd, within 2 sd (means).
std::vector<double> line_for(const std::string& out, int size) {
  std::istringstream in(out);
  std::string line;
  static const std::regex num(R"((-?[0-9.]+)±[0-9.]+)");
  while (std::getline(in, line)) {
    std::istringstream words(line);
    int first = 0;
    if (!(words >> first) || first != size) continue;
    std::vector<double> v;
    for (std::sregex_iterator it(line.begin(), line.end(), num), end; it != end; ++it)
      v.push_back(std::stod((*it)[1]));
    return v;
  }
  FAIL("no line for train size " << size << " in:\n" << out);
  return {};
}

}  // namespace

TEST_CASE(
    "bench predictor: ranks a synthetic table better with more data, nearly exactly with the "
    "target as a feature") {
  minas::test::TempDir dir("bench-predictor");
  const std::string table = write_table(dir);
  const std::string base = "bench predictor --space small --table " + table +
                           " --target target --train-sizes 10,200 --repeats 3 --held-out 150";
  const auto r = run_minas(base);
  REQUIRE_MESSAGE(r.status == 0, r.out);
  const auto small = line_for(r.out, 10), large = line_for(r.out, 200);
  REQUIRE(small.size() == 5);
  REQUIRE(large.size() == 5);
  CHECK(large[0] > small[0]);  // Kendall tau grows with the training set
  CHECK(large[0] > 0.6);
  CHECK(large[1] > large[0]);  // Spearman's rho above tau on a good ranking
  for (const auto* v : {&small, &large}) {
    CHECK((*v)[2] >= 0);
    CHECK((*v)[2] <= (*v)[3]);  // within 1 sd is a subset of within 2 sd
    CHECK((*v)[3] <= 1);
  }
  // Deterministic for a seed (all but the seconds).
  const auto again = run_minas(base);
  CHECK(line_for(again.out, 10) == small);
  CHECK(line_for(again.out, 200) == large);
  // The target itself as a feature: the ranking is (nearly) exact.
  const auto f = run_minas(base + " --feature-columns copy,noise");
  REQUIRE_MESSAGE(f.status == 0, f.out);
  CHECK(line_for(f.out, 200)[0] > 0.9);
  CHECK(contains(f.out, "features=one-hot(35)+copy,noise"));
  // A size with nothing left to hold out is said so, not run.
  const auto all = run_minas(base + " --train-sizes 400");
  CHECK(contains(all.out, "skipped"));
}

TEST_CASE("bench predictor: a missing column or a bad row is an error naming it") {
  minas::test::TempDir dir("bench-predictor-bad");
  const std::string table = write_table(dir);
  auto r = run_minas("bench predictor --space small --table " + table + " --target nope");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "no column 'nope' for --target"));
  r = run_minas("bench predictor --space small --table " + table +
                " --target target --feature-columns copy,gone");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "no column 'gone' for --feature-columns"));
  {
    std::ofstream out(table, std::ios::app);
    out << "16|32|conv_k3|skip|64|conv_k3|skip,x,1,2\n";
  }
  r = run_minas("bench predictor --space small --table " + table + " --target target");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "table.csv:402"));
}

TEST_CASE("bench predictor: --features joins a second table's columns by architecture") {
  minas::test::TempDir dir("bench-predictor-join");
  const std::string table = write_table(dir);
  // The copy column moved to a scores file, its rows in reverse order.
  std::ifstream in(table);
  std::string line;
  std::vector<std::string> rows;
  std::getline(in, line);
  while (std::getline(in, line)) rows.push_back(line);
  auto fields = [](const std::string& r) {
    std::vector<std::string> f;
    std::stringstream ss(r);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    return f;  // arch, target, copy, noise
  };
  const std::string main_path = dir.file("main.csv"), scores = dir.file("scores.csv");
  {
    std::ofstream m(main_path), s(scores);
    m << "arch,target,noise\n";
    s << "copy,arch\n";
    for (const std::string& r : rows)
      m << fields(r)[0] << "," << fields(r)[1] << "," << fields(r)[3] << "\n";
    for (auto it = rows.rbegin(); it != rows.rend(); ++it)
      s << fields(*it)[2] << "," << fields(*it)[0] << "\n";
  }
  const std::string base = "bench predictor --space small --table " + main_path +
                           " --target target --train-sizes 200 --repeats 3 --held-out 150";
  auto r = run_minas(base + " --features " + scores + " --feature-columns copy,noise");
  REQUIRE_MESSAGE(r.status == 0, r.out);
  CHECK(line_for(r.out, 200)[0] > 0.9);
  // Without the file, the column is missing from the table, and said so.
  r = run_minas(base + " --feature-columns copy");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "no column 'copy' for --feature-columns"));
  // An architecture the scores file lacks is named.
  {
    std::ofstream s(scores);
    s << "arch,copy\n" << fields(rows[1])[0] << ",1\n";
  }
  r = run_minas(base + " --features " + scores + " --feature-columns copy");
  CHECK(r.status != 0);
  CHECK(contains(r.out, "scores.csv: no row for architecture " + fields(rows[0])[0]));
}
