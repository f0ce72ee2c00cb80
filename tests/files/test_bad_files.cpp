// The fuzz corpora of the file readers and the numeric flags, run through the
// real minas binary as a user (or a hostile file) would: every case must be
// refused, by a process that exits on its own with a non-zero status, with the
// expected message naming the file (or flag), in a bounded message with no raw
// binary bytes, and with nothing left on disk. Corpora: tests/files/*.txt and
// tests/searchspace/bad_specs.txt; the format is in tests/corpus.h.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "tests/corpus.h"
#include "tests/support.h"

namespace {

namespace fs = std::filesystem;
using minas::test::Corpus;
using minas::test::CorpusCase;

// Longer than any refusal needs: a message quoting a whole value is the bug.
constexpr size_t kMaxOutput = 2000;

struct Outcome {
  bool signaled = false;
  int signal = 0;
  int code = 0;
  std::string out;  // stdout and stderr together
};

std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// minas with `args` (shell words), started in `cwd`.
Outcome run_in(const fs::path& cwd, const std::string& args) {
  const std::string cmd = "cd " + shell_quoted(cwd.string()) + " && exec " + MINAS_BINARY + " " +
                          args + " 2>&1 </dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  Outcome o;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.out.append(buf.data(), n);
  const int st = pclose(p);
  o.signaled = WIFSIGNALED(st);
  o.signal = o.signaled ? WTERMSIG(st) : 0;
  o.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

// Every path under `dir`, with each file's size: what a run may not change.
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> all;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::error_code ec;
    const auto size = e.is_regular_file(ec) ? e.file_size(ec) : 0;
    all.insert(fs::relative(e.path(), dir).string() + " " + std::to_string(size));
  }
  return all;
}

// The first byte that is not printable ASCII, a newline or a tab; npos if none.
size_t raw_byte(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (!((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t')) return i;
  }
  return std::string::npos;
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

// Runs every case of the corpus at `relative` (under the source tree); the
// number of cases, for the report.
size_t run_corpus(const std::string& relative, size_t at_least) {
  const Corpus corpus = minas::test::read_corpus(std::string(MINAS_SOURCE_DIR) + "/" + relative);
  REQUIRE_MESSAGE(corpus.cases.size() >= at_least, relative << " lost cases");
  for (const CorpusCase& c : corpus.cases) {
    CAPTURE(relative);
    CAPTURE(c.name);
    REQUIRE_MESSAGE(!c.expect.empty(), "a case without --- expect");
    REQUIRE_MESSAGE(!c.run.empty(), "a case without a command (@run or --- run)");
    const minas::test::TempDir tmp("bad-files");
    const fs::path dir = tmp.path;
    fs::create_directories(dir / "cwd");  // where minas runs: it must stay empty
    // Content may name the case's folder ({dir}), e.g. a path in an experiment file.
    CorpusCase here = c;
    std::set<std::string> own;
    for (size_t i = 0; i < here.files.size(); ++i) {
      here.files[i].text = replaced(here.files[i].text, "{dir}", dir.string());
      own.insert(here.files[i].name);
      std::ofstream(dir / here.files[i].name, std::ios::binary) << minas::test::file_bytes(here, i);
    }
    for (const auto& b : corpus.base)
      if (!own.count(b.name))
        std::ofstream(dir / b.name, std::ios::binary)
            << minas::test::expand(replaced(b.text, "{dir}", dir.string()));
    const std::string main_path = c.files.empty() ? "" : (dir / c.files[0].name).string();
    std::string args = replaced(c.run, "{file}", shell_quoted(main_path));
    args = minas::test::expand(replaced(args, "{dir}", shell_quoted(dir.string())));
    const auto before = listing(dir);

    const Outcome r = run_in(dir / "cwd", args);
    CAPTURE(minas::test::expand(c.run).substr(0, 200));
    CAPTURE(r.out.substr(0, 3000));
    CHECK_MESSAGE(!r.signaled, "killed by signal " << r.signal);
    CHECK_MESSAGE(r.code > 0, "exit status " << r.code);
    CHECK_MESSAGE(r.code != 127, "the shell found no minas");
    CHECK_MESSAGE(minas::test::contains(r.out, c.expect), "expected: " << c.expect);
    const std::string named =
        c.names.empty() ? main_path : replaced(c.names, "{dir}", dir.string());
    if (named != "-")
      CHECK_MESSAGE(minas::test::contains(r.out, named), "the refusal does not name " << named);
    CHECK_MESSAGE(r.out.size() <= kMaxOutput, "an answer of " << r.out.size() << " bytes");
    const size_t raw = raw_byte(r.out);
    CHECK_MESSAGE(raw == std::string::npos, "a raw byte at " << raw);
    CHECK_MESSAGE(listing(dir) == before, "the run left or changed files");
  }
  return corpus.cases.size();
}

}  // namespace

TEST_CASE("bad files: space documents (bad_specs.txt) refused by minas space info") {
  MESSAGE(run_corpus("tests/searchspace/bad_specs.txt", 45) << " cases");
}

TEST_CASE("bad files: recipes refused by minas train") {
  MESSAGE(run_corpus("tests/files/recipes.txt", 15) << " cases");
}

TEST_CASE("bad files: experiment files refused by minas controller and minas search") {
  MESSAGE(run_corpus("tests/files/experiments.txt", 20) << " cases");
}

TEST_CASE("bad files: IDX data files refused by minas train") {
  MESSAGE(run_corpus("tests/files/idx.txt", 15) << " cases");
}

TEST_CASE("bad files: checkpoints and model descriptions refused by minas predict") {
  MESSAGE(run_corpus("tests/files/checkpoints.txt", 20) << " cases");
}

TEST_CASE("bad files: --table files refused by minas worker and minas bench strategies") {
  MESSAGE(run_corpus("tests/files/tables.txt", 26) << " cases");
}

TEST_CASE("bad flags: every numeric flag out of range or overflowing is refused, naming it") {
  MESSAGE(run_corpus("tests/files/flags.txt", 60) << " cases");
}
