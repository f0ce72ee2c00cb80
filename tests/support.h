#pragma once
// Helpers shared by the test binaries.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "searchspace/error.h"

extern char** environ;

namespace minas::test {

// Starts `program` with `args`, its stdout and stderr appended to the file `log`; found on
// PATH when `search_path`. Returns -1 when it cannot start, so cleanup paths never throw.
inline pid_t spawn_logged(const std::string& program, const std::vector<std::string>& args,
                          const std::string& log, bool search_path = false) {
  std::vector<std::string> all{program};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa) != 0) return -1;
  pid_t pid = 0;
  int rc = posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (rc == 0)
    rc = search_path ? posix_spawnp(&pid, program.c_str(), &fa, nullptr, argv.data(), environ)
                     : posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

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

// A fresh folder under the system temp dir, unique per process and instance,
// removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "test") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("minas-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// shared/ beside the repository (MINAS_SHARED_DIR elsewhere): the benchmark
// tables and reference scripts, read from there and never copied in.
inline std::string shared_file(const std::string& relative) {
  const char* d = std::getenv("MINAS_SHARED_DIR");
  return (d ? std::string(d) : std::string(MINAS_SOURCE_DIR) + "/../shared") + "/" + relative;
}

inline std::string nb201_table() {
  return shared_file("benchmarks/nas-bench-201.csv");
}

// Whether a file the repository does not hold is there. CI has it, and there
// its absence fails the test; elsewhere the test says it is skipped.
inline bool have_external(const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  const char* ci = std::getenv("CI");
  if (ci && std::string(ci) == "true") FAIL("missing " << path);
  MESSAGE("skipped: " << path << " not found (set MINAS_SHARED_DIR)");
  return false;
}

// A database path unique to this process and instance (CTest runs cases in
// parallel); the file and its WAL and journal companions go at scope exit.
struct TempDbPath {
  std::filesystem::path path;
  explicit TempDbPath(const std::string& tag = "db") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("minas-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
            ".sqlite");
    remove();
  }
  ~TempDbPath() { remove(); }
  TempDbPath(const TempDbPath&) = delete;
  TempDbPath& operator=(const TempDbPath&) = delete;
  std::string str() const { return path.string(); }

 private:
  void remove() const {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      std::filesystem::remove(path.string() + suffix, ec);
  }
};

}  // namespace minas::test
