#include "searchspace/json_excerpt.h"

namespace minas {
namespace {

// Nesting written before "..." stands for the rest: deeper than any document
// minas writes, and bounded so that writing recurses a fixed number of times.
constexpr int kExcerptDepth = 16;

// Appends `v` as JSON to `out` until `out` holds `limit` bytes.
void append_bounded(const nlohmann::json& v, std::string& out, size_t limit, int depth) {
  using json = nlohmann::json;
  if (out.size() >= limit) return;
  // ASCII only: control characters and every non-ASCII character as \uXXXX,
  // invalid UTF-8 as \ufffd, so the text needs no escaping of its own.
  const auto dump = [](const json& x) {
    return x.dump(-1, ' ', /*ensure_ascii=*/true, json::error_handler_t::replace);
  };
  switch (v.type()) {
    case json::value_t::array:
    case json::value_t::object: {
      const bool array = v.is_array();
      out += array ? '[' : '{';
      if (depth >= kExcerptDepth && !v.empty()) {
        out += "...";
      } else {
        bool first = true;
        for (auto it = v.begin(); it != v.end() && out.size() < limit; ++it) {
          if (!first) out += ',';
          first = false;
          if (!array) out += dump(json(it.key().substr(0, limit - out.size()))) + ':';
          append_bounded(it.value(), out, limit, depth + 1);
        }
        if (out.size() >= limit) return;
      }
      out += array ? ']' : '}';
      return;
    }
    case json::value_t::string: {
      // Only as much of the string as can show; a cut UTF-8 sequence is replaced.
      const std::string& s = v.get_ref<const std::string&>();
      out += dump(json(s.substr(0, limit - out.size() + 1)));
      return;
    }
    default:
      out += dump(v);
  }
}

}  // namespace

std::string json_excerpt(const nlohmann::json& v, size_t max_chars) {
  std::string text;
  append_bounded(v, text, max_chars + 1, 0);
  std::string out = std::move(text);
  if (out.size() > max_chars) {
    out.resize(max_chars);
    out += "...";
  }
  return out;
}

}  // namespace minas
