// `minas train`, `minas bench train-ref` and `minas bench evaluators --reuse`
// as a user runs them: bad input gets a clear error and a non-zero exit.
#include <doctest/doctest.h>

#include "tests/support.h"

#include <filesystem>
#include <fstream>
#include <string>

namespace {

using minas::test::Run;

Run run(const std::string& args) {
  return minas::test::run_minas(args);
}

}  // namespace

TEST_CASE("train cli: bad data, recipes, architectures and flags are refused clearly") {
  const minas::test::TempDir tmp("train-cli");
  const std::filesystem::path dir = tmp.path;
  std::filesystem::create_directories(dir / "empty");
  const std::string bad_recipe = (dir / "bad.json").string();
  std::ofstream(bad_recipe) << R"({"epochs": 1, "learning_rate": 0.1})";
  const std::string broken = (dir / "broken.json").string();
  std::ofstream(broken) << "{\"epochs\": 1,\n \"lr\": }";
  const std::string garbage = (dir / "garbage").string();
  std::filesystem::create_directories(garbage);
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    std::ofstream(std::filesystem::path(garbage) / f) << "not an idx file at all";
  const std::string arch = "--space small --arch '16|32|conv_k3|skip|64|conv_k3|skip'";
  struct Bad {
    std::string args, expect;
  };
  const Bad cases[] = {
      {arch + " --data " + (dir / "empty").string() + " --epochs 1", "in this folder"},
      {arch + " --data " + garbage + " --epochs 1", "magic"},
      {arch + " --recipe " + bad_recipe, "unknown field 'learning_rate'"},
      {arch + " --recipe " + broken, "broken.json: line 2, column 8: JSON syntax error"},
      {arch + " --recipe " + (dir / "missing.json").string(), "missing.json"},
      {arch + " --set lr=-1", "lr"},
      {arch + " --set nonsense=1", "nonsense"},
      {arch + " --epochs 0", "epochs and time_budget_s are both 0"},
      {"--space small --arch '|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|'",
       "'|'-separated field(s), the space has 7 decisions"},
      {"--space nb201 --arch '|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|' "
       "--epochs 1",
       "images are 1x28x28, the network takes 3x32x32"},
      {"bench train-ref --width 0", "--width"},
  };
  for (const Bad& b : cases) {
    const std::string args = (b.args.rfind("bench", 0) == 0 ? "" : "train ") + b.args;
    CAPTURE(args);
    const Run r = run(args);
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.out.find(b.expect) != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find("error") != std::string::npos, r.out);
  }
}

TEST_CASE("bench evaluators --reuse: an earlier run's reduced-fidelity scores are taken, not trained again") {
  const minas::test::TempDir tmp("evaluators-reuse");
  const std::filesystem::path dir = tmp.path;
  // The table; the earlier run's scores (a row the table lacks is ignored).
  const std::string table = (dir / "table.csv").string();
  std::ofstream(table) << "arch,acc\n"
                          "16|32|conv_k3|skip|64|conv_k3|skip,0.91\n"
                          "16|32|conv_k5|skip|64|conv_k3|skip,0.92\n"
                          "32|64|conv_k3|skip|64|conv_k3|skip,0.93\n";
  const std::string earlier = (dir / "earlier.csv").string();
  std::ofstream(earlier) << "arch,params,ep0.125\n"
                            "32|64|conv_k3|skip|64|conv_k3|skip,1,0.8\n"
                            "16|32|conv_k5|skip|64|conv_k3|skip,1,0.7\n"
                            "16|32|conv_k3|skip|64|conv_k3|skip,1,0.6\n"
                            "16|32|sep_k3|skip|64|conv_k3|skip,1,0.1\n";
  // An empty data folder: training any row, or drawing a minibatch, would fail.
  std::filesystem::create_directories(dir / "empty");
  const std::string out = (dir / "scores.csv").string();
  const std::string common = "bench evaluators --space small --table " + table +
                             " --target acc --proxies params --fidelities ep0.125 "
                             "--combine none --data " + (dir / "empty").string();
  const Run r = run(common + " --reuse " + earlier + " --out " + out);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(minas::test::contains(r.out, "ep0.125: 0 architectures trained"));
  CHECK(minas::test::contains(r.out, "3 scores reused"));
  // The scores rank the rows as acc does: tau 1; no cost measured here.
  const size_t at = r.out.find("\nep0.125 ");
  REQUIRE(at != std::string::npos);
  const std::string line = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
  CHECK(minas::test::contains(line, " 3   1.0000   1.0000            -          -"));
  std::ifstream in(out);
  const std::string csv((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Each row's own params (the proxy, computed), and the reused score.
  CHECK(csv.rfind("arch,params,ep0.125\n16|32|conv_k3|skip|64|conv_k3|skip,24058,0.6\n", 0) == 0);
  CHECK(minas::test::contains(csv, "\n16|32|conv_k5|skip|64|conv_k3|skip,"));
  CHECK(minas::test::contains(csv, ",0.7\n32|64|conv_k3|skip|64|conv_k3|skip,"));
  REQUIRE(csv.size() > 5);
  CHECK(csv.substr(csv.size() - 5) == ",0.8\n");

  // Without --reuse the row is trained: the empty folder is refused.
  const Run fresh = run(common);
  CHECK(fresh.status != 0);
  CHECK(minas::test::contains(fresh.out, "in this folder"));
  // A score that is not an accuracy is refused before any work, naming the file.
  const std::string bad = (dir / "bad.csv").string();
  std::ofstream(bad) << "arch,ep0.125\n16|32|conv_k3|skip|64|conv_k3|skip,1.5\n";
  const Run refused = run(common + " --reuse " + bad);
  CHECK(refused.status != 0);
  CHECK(minas::test::contains(refused.out, "bad.csv: ep0.125 of 16|32|conv_k3|skip|64|conv_k3|skip: 1.5 is not an accuracy in [0, 1]"));
  CHECK_FALSE(minas::test::contains(refused.out, "scoring"));
}
