#pragma once
// What every fuzz target checks besides "no crash, no sanitizer report": bad input is refused
// with a minas::Error (any other exception is a finding), and the refusal quotes at most a
// short excerpt of the input, never the whole of it.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <string_view>

#include "searchspace/error.h"

namespace minas::fuzz {

// Far above any honest message (an error names the place and quotes under 100 characters),
// far below an input echoed back.
inline constexpr size_t kMaxErrorBytes = 1024;

inline std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A broken rule that leaves the process sound (a refusal too long, a value that does not read
// back): said once per kind and process, its first input kept in $MINAS_FUZZ_CRASHES as
// TARGET-KIND (run.sh sets both), and the run goes on, so one known fault does not stop the
// search for others. Crashes and sanitizer reports stop the run; libFuzzer keeps their input.
inline void finding(const std::string& kind, const char* detail, std::string_view input) {
  static std::set<std::string> said;
  if (!said.insert(kind).second) return;
  std::fprintf(stderr, "FINDING: %s: %.300s\n", kind.c_str(), detail);
  const char* dir = std::getenv("MINAS_FUZZ_CRASHES");
  const char* target = std::getenv("MINAS_FUZZ_TARGET");
  if (!dir || !target) return;
  std::string name = std::string(dir) + "/" + target + "-";
  for (const char c : kind.substr(0, 80))
    name += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  if (FILE* f = std::fopen(name.c_str(), "wb")) {
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
    std::fprintf(stderr, "FINDING input: %s\n", name.c_str());
  }
}

// The kind of an exception other than minas::Error, for finding(): nlohmann's tag
// ("[json.exception.out_of_range.406]"), else the what() itself, cut short.
inline std::string kind_of(const std::exception& e) {
  const std::string_view what = e.what();
  const size_t end = what.find(']');
  return "an exception other than minas::Error " +
         std::string(what.substr(0, what.starts_with('[') && end != what.npos ? end + 1 : 60));
}

// Runs `read`; a minas::Error is a refusal, checked for its size. Any other exception is a
// finding: the commands that read such input would end with it (or, caught as std::exception,
// say what nlohmann says, not what and where).
template <class Read>
void refused_or_read(std::string_view input, Read&& read) {
  try {
    read();
  } catch (const Error& e) {
    if (std::strlen(e.what()) > kMaxErrorBytes)
      finding("an error longer than 1 KiB", e.what(), input);
  } catch (const std::exception& e) {
    finding(kind_of(e), e.what(), input);
  }
}

}  // namespace minas::fuzz
