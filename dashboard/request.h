#pragma once
// What the dashboard takes from a request before anything else looks at it:
// the request target (path and query) decoded strictly into bounded, valid
// UTF-8 strings, and the one way it writes JSON (never throwing on text that
// is not UTF-8, whatever the store holds).
//
// The target's rules (RFC 3986 percent-escapes, '+' a space in the query as
// browsers write it):
//   - at most kMaxTargetBytes bytes, starting with '/';
//   - every '%' followed by two hex digits;
//   - the decoded path at most kMaxPathBytes, each parameter's name at most
//     kMaxNameBytes and value at most kMaxValueBytes, at most kMaxParams
//     parameters, none given twice;
//   - every decoded piece valid UTF-8 (no overlong forms, no surrogates) with
//     no control characters (NUL to US, DEL).
// Anything else is a 400 whose message names the part, never the raw bytes.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas::dashboard {

inline constexpr size_t kMaxTargetBytes = 4096;
inline constexpr size_t kMaxPathBytes = 256;
inline constexpr size_t kMaxParams = 16;
inline constexpr size_t kMaxNameBytes = 32;
inline constexpr size_t kMaxValueBytes = 1024;

struct Target {
  std::string path;
  std::vector<std::pair<std::string, std::string>> params;  // in the order given
  std::string error;  // empty when the target is good; else why it is not (a 400)
};

Target decode_target(std::string_view raw);

// Whether `text` is valid UTF-8: shortest forms only, no surrogates, nothing
// above U+10FFFF.
bool valid_utf8(std::string_view text);

// Whether `text` is valid UTF-8 without control characters: what a
// parameter's value or a path may hold.
bool printable_utf8(std::string_view text);

// The JSON text of `value`; a string that is not valid UTF-8 (a worker's
// error message, an architecture key from an old store) has its bad bytes
// replaced by U+FFFD instead of throwing.
std::string json_text(const nlohmann::ordered_json& value);
std::string json_text(const nlohmann::json& value);

// {"error": message}: the body of every refusal.
std::string error_body(std::string_view message);

}  // namespace minas::dashboard
