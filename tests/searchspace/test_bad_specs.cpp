// Data-driven: every case of bad_specs.txt, written to its own file, must be
// refused with its expected error, naming that file.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/corpus.h"
#include "tests/support.h"

TEST_CASE("bad specs: each bad document yields its error, naming the file and the field") {
  const auto cases =
      minas::test::read_corpus(std::string(MINAS_SOURCE_DIR) + "/tests/searchspace/bad_specs.txt")
          .cases;
  REQUIRE(cases.size() >= 25);
  const minas::test::TempDir tmp("bad-specs");
  const std::filesystem::path dir = tmp.path;
  for (const minas::test::CorpusCase& c : cases) {
    CAPTURE(c.name);
    REQUIRE(!c.expect.empty());
    REQUIRE(c.files.size() == 1);
    const std::string path = (dir / (c.name + ".json")).string();
    std::ofstream(path, std::ios::binary) << minas::test::expand(c.files[0].text);
    try {
      minas::Space::load(path);
      FAIL_CHECK("accepted: " << c.name);
    } catch (const minas::Error& e) {
      const std::string msg = e.what();
      CHECK_MESSAGE(msg.find(c.expect) != std::string::npos, "got: " << msg);
      CHECK_MESSAGE(msg.size() < 1000, "a refusal of " << msg.size() << " bytes");
      CHECK_MESSAGE(msg.rfind(path, 0) == 0, "error does not start with the file: " << msg);
    }
  }
}

TEST_CASE("bad specs: a missing file and an unknown name are reported as such") {
  CHECK_THROWS_WITH_AS(minas::Space::load("/nonexistent/space.json"),
                       doctest::Contains("no built-in space or file"), minas::Error);
}
