#pragma once
// Helpers shared by the test binaries.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "searchspace/error.h"

namespace minas::test {

struct Run {
  int status;       // exit status, -1 if the process did not exit normally
  std::string out;  // stdout and stderr together
};

// Runs the minas binary with `args` (shell words) as a user would.
inline Run run_minas(const std::string& args) {
  const std::string cmd = std::string(MINAS_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// The Error that f throws; fails the test if it throws none.
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no minas::Error thrown");
  return Error("", "");
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace minas::test
