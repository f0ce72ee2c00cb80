#pragma once
// JSON from outside the process (a file, a peer's message, an HTTP request) is
// parsed only through read_json(): it refuses text over a size or nesting
// limit before nlohmann sees it (its dump and comparison recurse, so a value
// nested 100,000 deep would overflow the stack later, anywhere), and its errors
// quote at most a short, escaped excerpt of the text, never the whole of it.
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "searchspace/error.h"

namespace minas {

struct JsonLimits {
  // Arrays and objects inside one another: the deepest document minas writes
  // (a space with a skeleton of choices) is under 10.
  int max_depth = 64;
  size_t max_bytes = size_t{64} << 20;
};

// The parsed value, or an Error naming `where`, the line and column, and what
// is wrong (syntax, too deep, too large, a number out of range), with an
// excerpt of at most kExcerptChars characters around the place.
nlohmann::json read_json(std::string_view text, const std::string& where,
                         const JsonLimits& limits = {});

// The deepest nesting of arrays and objects in `text`, counted without parsing
// it; stops counting (and returns a value above `stop_at`) once it passes
// `stop_at`. Strings are skipped, escapes included.
int json_depth(std::string_view text, int stop_at);

// At most `max_chars` characters of `text` for a log line or an error message:
// control characters, backslashes and bytes that are not printable
// ASCII written as escapes (\n, \x1b, ...), and "... (N bytes)" when cut.
inline constexpr size_t kExcerptChars = 80;
std::string printable_excerpt(std::string_view text, size_t max_chars = kExcerptChars);

}  // namespace minas
