// `minas train` and `minas bench train-ref` as a user runs them: bad input
// gets a clear error and a non-zero exit.
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
