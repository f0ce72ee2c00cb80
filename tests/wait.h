#pragma once
// Waiting in tests: for an event, never for a fixed time. A test polls for what it waits for
// (a row in the store, a line in a log, a process state) and gives up only at a hang guard: a
// bound far above what the event takes on a loaded machine, so that reaching it means the
// event will not come, and the test fails saying what it awaited.
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace minas::test {

// A hang guard for events that take seconds at most on an idle machine.
inline constexpr std::chrono::seconds kHangGuard{120};

// Polls `done` until it holds; false if `limit` passed first. `every` is how often it looks,
// which bounds how late the event is seen, not whether it is.
template <class Done>
bool eventually(Done&& done, std::chrono::milliseconds limit = kHangGuard,
                std::chrono::milliseconds every = std::chrono::milliseconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

// What the file holds now; empty if it is not there (yet).
inline std::string file_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline double seconds_of(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace minas::test
