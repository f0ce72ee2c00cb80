#include "searchspace/json_read.h"

#include <algorithm>
#include <cstdio>

namespace minas {
namespace {

// "line L, column C" of byte `at` (0-based) in `text`.
std::string position(std::string_view text, size_t at) {
  at = std::min(at, text.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// The excerpt of `text` around byte `at`: what a reader needs to find the place.
std::string excerpt_at(std::string_view text, size_t at) {
  at = std::min(at, text.size());
  const size_t from = at > 30 ? at - 30 : 0;
  std::string out = printable_excerpt(text.substr(from, 60), 60);
  // printable_excerpt says how large the cut piece was; the reader wants the place.
  if (const size_t cut = out.find("... ("); cut != std::string::npos) out.resize(cut);
  return (from > 0 ? "..." : "") + out + (from + 60 < text.size() ? "..." : "");
}

// Where nlohmann's message starts after its "[json.exception.parse_error.101] " tag.
std::string without_tag(const std::string& msg) {
  if (msg.rfind("[json.exception", 0) == 0) {
    const size_t end = msg.find("] ");
    if (end != std::string::npos) return msg.substr(end + 2);
  }
  return msg;
}

}  // namespace

int json_depth(std::string_view text, int stop_at) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // whatever it escapes cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > stop_at) return deepest;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

nlohmann::json read_json(std::string_view text, const std::string& where,
                         const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    throw Error(where, "JSON text of " + std::to_string(text.size()) + " bytes, more than the " +
                           std::to_string(limits.max_bytes) + " allowed");
  if (json_depth(text, limits.max_depth) > limits.max_depth) {
    // Find where the limit is passed, for the message.
    int depth = 0;
    bool in_string = false;
    size_t at = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') in_string = true;
      else if (c == '[' || c == '{') {
        if (++depth > limits.max_depth) {
          at = i;
          break;
        }
      } else if ((c == ']' || c == '}') && depth > 0) {
        --depth;
      }
    }
    throw Error(where, position(text, at) + ": arrays and objects nested more than " +
                           std::to_string(limits.max_depth) + " deep");
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    std::string msg = without_tag(e.what());
    // nlohmann quotes the last token read, which may be long or binary: keep its
    // description only, and quote the place ourselves.
    // The token may itself hold "'; ": nlohmann's own "; expected ..." is the last one.
    if (const size_t last = msg.find("; last read: "); last != std::string::npos) {
      const size_t rest = msg.rfind("'; expected ");
      msg = msg.substr(0, last) +
            (rest == std::string::npos || rest < last ? "" : "; " + msg.substr(rest + 3));
    }
    // Whatever is left is nlohmann's own words; no byte of the input may pass through.
    for (char& c : msg)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    if (const size_t at = msg.find("syntax error while parsing value - "); at != std::string::npos)
      msg = msg.substr(at + 35);
    else if (const size_t at2 = msg.find("syntax error "); at2 != std::string::npos)
      msg = msg.substr(at2);
    const size_t byte = e.byte > 0 ? e.byte - 1 : 0;
    throw Error(where, position(text, byte) + ": JSON syntax error: " +
                           msg.substr(0, 160) + " near '" + excerpt_at(text, byte) + "'");
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number like 1e400
    throw Error(where, "JSON value out of range: " + printable_excerpt(without_tag(e.what()), 160));
  }
}

std::string printable_excerpt(std::string_view text, size_t max_chars) {
  std::string out;
  size_t i = 0;
  for (; i < text.size() && out.size() < max_chars; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out += static_cast<char>(c);
        } else {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        }
    }
  }
  if (i < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

}  // namespace minas
