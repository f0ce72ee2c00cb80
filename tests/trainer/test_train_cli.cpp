// `minas train`, `minas bench train-ref` and `minas bench evaluators --reuse`
// as a user runs them: bad input gets a clear error and a non-zero exit.
#include <doctest/doctest.h>

#include "tests/support.h"
#include "trainer/network.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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
  std::ofstream(earlier) << "arch,params,ep0.125,ep0.125-tse\n"
                            "32|64|conv_k3|skip|64|conv_k3|skip,1,0.8,-0.9\n"
                            "16|32|conv_k5|skip|64|conv_k3|skip,1,0.7,-1.1\n"
                            "16|32|conv_k3|skip|64|conv_k3|skip,1,0.6,-1.3\n"
                            "16|32|sep_k3|skip|64|conv_k3|skip,1,0.1,-2\n";
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
  CHECK(minas::test::contains(r.out, "ep0.125-tse: 0 architectures trained"));
  CHECK(minas::test::contains(r.out, "3 scores reused"));
  // The scores rank the rows as acc does: tau 1; no cost measured here.
  for (const char* name : {"\nep0.125 ", "\nep0.125-tse "}) {
    const size_t at = r.out.find(name);
    REQUIRE(at != std::string::npos);
    const std::string line = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
    CHECK(minas::test::contains(line, " 3   1.0000   1.0000            -          -"));
  }
  std::ifstream in(out);
  const std::string csv((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Each row's own params (the proxy, computed), the reused scores, and 0 for
  // the instruction set they were trained on: the earlier run did not say.
  CHECK(csv.rfind("arch,params,ep0.125,ep0.125-tse,onednn_isa\n"
                  "16|32|conv_k3|skip|64|conv_k3|skip,24058,0.6,-1.3,0\n",
                  0) == 0);
  CHECK(minas::test::contains(csv, "\n16|32|conv_k5|skip|64|conv_k3|skip,"));
  CHECK(minas::test::contains(csv, ",0.7,-1.1,0\n32|64|conv_k3|skip|64|conv_k3|skip,"));
  REQUIRE(csv.size() > 12);
  CHECK(csv.substr(csv.size() - 12) == ",0.8,-0.9,0\n");

  // Scores that say they were trained on this machine's instruction set are
  // reused and keep saying so; on another set they are trained again (and
  // the empty folder is refused).
  const unsigned here = minas::cpu_isa_code();
  for (const unsigned isa : {here, here == 1 ? 3u : 1u}) {
    CAPTURE(isa);
    const std::string tagged = (dir / "tagged.csv").string();
    const std::string tag = "," + std::to_string(isa) + "\n";
    std::ofstream(tagged) << "arch,ep0.125,ep0.125-tse,onednn_isa\n"
                          << "16|32|conv_k3|skip|64|conv_k3|skip,0.6,-1.3" << tag
                          << "16|32|conv_k5|skip|64|conv_k3|skip,0.7,-1.1" << tag
                          << "32|64|conv_k3|skip|64|conv_k3|skip,0.8,-0.9" << tag;
    const Run again = run(common + " --reuse " + tagged + " --out " + out);
    if (isa == here) {
      CHECK(again.status == 0);
      CHECK(minas::test::contains(again.out, "3 scores reused"));
      std::ifstream tagged_out(out);
      const std::string written((std::istreambuf_iterator<char>(tagged_out)),
                                std::istreambuf_iterator<char>());
      CHECK(minas::test::contains(written, ",0.8,-0.9," + std::to_string(here) + "\n"));
    } else {
      CHECK(again.status != 0);
      CHECK(minas::test::contains(again.out, "trained on another instruction set"));
      CHECK(minas::test::contains(again.out, "in this folder"));
    }
  }

  // An earlier run without the training loss column (before NAME-tse) is not
  // reused: its rows are trained again, and the empty folder is refused.
  const std::string older = (dir / "older.csv").string();
  std::ofstream(older) << "arch,ep0.125\n16|32|conv_k3|skip|64|conv_k3|skip,0.6\n"
                          "16|32|conv_k5|skip|64|conv_k3|skip,0.7\n"
                          "32|64|conv_k3|skip|64|conv_k3|skip,0.8\n";
  // Without --reuse the rows are trained too.
  for (const std::string& args : {common + " --reuse " + older, common}) {
    const Run trained = run(args);
    CAPTURE(args);
    CHECK(trained.status != 0);
    CHECK(minas::test::contains(trained.out, "in this folder"));
  }
  // A score out of its range is refused before any work, naming the file.
  auto refuses = [&](const std::string& name, const std::string& csv, const std::string& expect) {
    const std::string path = (dir / name).string();
    std::ofstream(path) << csv;
    const Run refused = run(common + " --reuse " + path);
    CAPTURE(name);
    CHECK(refused.status != 0);
    CHECK(minas::test::contains(refused.out, expect));
    CHECK_FALSE(minas::test::contains(refused.out, "scoring"));
  };
  refuses("isa.csv",
          "arch,ep0.125,ep0.125-tse,onednn_isa\n16|32|conv_k3|skip|64|conv_k3|skip,0.6,-1.3,2.5\n",
          "isa.csv: onednn_isa of 16|32|conv_k3|skip|64|conv_k3|skip: 2.5 is not oneDNN's number of "
          "an instruction set");
  refuses("bad.csv", "arch,ep0.125\n16|32|conv_k3|skip|64|conv_k3|skip,1.5\n",
          "bad.csv: ep0.125 of 16|32|conv_k3|skip|64|conv_k3|skip: 1.5 is not an accuracy in [0, 1]");
  refuses("positive.csv",
          "arch,ep0.125,ep0.125-tse\n16|32|conv_k3|skip|64|conv_k3|skip,0.6,0.5\n",
          "positive.csv: ep0.125-tse of 16|32|conv_k3|skip|64|conv_k3|skip: 0.5 is not minus a "
          "mean training loss");
}

TEST_CASE("bench evaluators: a short training gives its validation accuracy and minus its mean training loss") {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
    const char* ci = std::getenv("CI");
    if (ci && std::string(ci) == "true") FAIL("dataset-fashion-mnist is not installed");
    MESSAGE("skipped: /usr/share/datasets/fashion-mnist not found");
    return;
  }
  const minas::test::TempDir tmp("evaluators-tse");
  const std::filesystem::path dir = tmp.path;
  const std::string table = (dir / "table.csv").string();
  std::ofstream(table) << "arch,acc\n"
                          "16|32|conv_k3|skip|64|conv_k3|skip,0.91\n"
                          "16|32|conv_k5|skip|64|conv_k3|skip,0.92\n";
  const std::string out = (dir / "scores.csv").string();
  const Run r = run("bench evaluators --space small --table " + table +
                    " --target acc --proxies none --fidelities ep0.125 --combine ep0.125+ep0.125-tse"
                    " --out " + out);
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK(minas::test::contains(r.out, "ep0.125-tse: 2 architectures trained"));
  // An evaluator's seconds per candidate, the report's fifth column.
  auto seconds = [&](const std::string& name) {
    const size_t at = r.out.find("\n" + name + " ");
    REQUIRE(at != std::string::npos);
    std::istringstream line(r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1));
    std::string field;
    for (int i = 0; i < 5; ++i) line >> field;
    return field;
  };
  // A fidelity and its -tse are one training: the pair costs it once.
  CHECK(seconds("ep0.125") != "-");
  CHECK(seconds("ep0.125+ep0.125-tse") == seconds("ep0.125"));
  CHECK(seconds("ep0.125-tse") == seconds("ep0.125"));
  std::ifstream in(out);
  std::string header, row;
  REQUIRE(std::getline(in, header));
  CHECK(header == "arch,ep0.125,ep0.125-tse,onednn_isa");
  int rows = 0;
  while (std::getline(in, row)) {
    ++rows;
    CAPTURE(row);
    // arch,acc,tse,isa: trained here, on this machine's instruction set.
    const size_t a = row.find(','), c = row.rfind(','), b = row.rfind(',', c - 1);
    REQUIRE(a != std::string::npos);
    REQUIRE(b > a);
    REQUIRE(c > b);
    const double acc = std::stod(row.substr(a + 1, b - a - 1));
    const double tse = std::stod(row.substr(b + 1, c - b - 1));
    CHECK(row.substr(c + 1) == std::to_string(minas::cpu_isa_code()));
    CHECK(acc > 0.2);  // an eighth of an epoch learns: chance is 0.1
    CHECK(acc <= 1.0);
    // Minus the mean cross-entropy (label smoothing 0.1) over the run's steps:
    // below the untrained network's ln 10 = 2.30 and above the smoothing's floor.
    CHECK(tse > -2.3);
    CHECK(tse < -0.4);
  }
  CHECK(rows == 2);
}
