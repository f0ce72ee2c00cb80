// Data-driven: every case of bad_specs.txt, written to its own file, must be
// refused with its expected error, naming that file.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"

namespace {

struct Case {
  std::string name, expect, text;
};

std::vector<Case> read_cases(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("=== ", 0) == 0) {
      cases.push_back({line.substr(4), "", ""});
    } else if (line.rfind("--- expect: ", 0) == 0) {
      REQUIRE(!cases.empty());
      cases.back().expect = line.substr(12);
    } else if (!cases.empty()) {
      cases.back().text += line + "\n";
    }
  }
  return cases;
}

}  // namespace

TEST_CASE("bad specs: each bad document yields its error, naming the file and the field") {
  const auto cases = read_cases(std::string(MINAS_SOURCE_DIR) + "/tests/searchspace/bad_specs.txt");
  REQUIRE(cases.size() >= 25);
  const minas::test::TempDir tmp("bad-specs");
  const std::filesystem::path dir = tmp.path;
  for (const Case& c : cases) {
    CAPTURE(c.name);
    REQUIRE(!c.expect.empty());
    const std::string path = (dir / (c.name + ".json")).string();
    std::ofstream(path) << c.text;
    try {
      minas::Space::load(path);
      FAIL_CHECK("accepted: " << c.name);
    } catch (const minas::Error& e) {
      const std::string msg = e.what();
      CHECK_MESSAGE(msg.find(c.expect) != std::string::npos, "got: " << msg);
      CHECK_MESSAGE(msg.rfind(path, 0) == 0, "error does not start with the file: " << msg);
    }
  }
}

TEST_CASE("bad specs: a missing file and an unknown name are reported as such") {
  CHECK_THROWS_WITH_AS(minas::Space::load("/nonexistent/space.json"),
                       doctest::Contains("no built-in space or file"), minas::Error);
}
