#include "dashboard/request.h"

#include <cstdint>

namespace minas::dashboard {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `in` into `out` ('+' a space when `plus_is_space`); false
// on a '%' not followed by two hex digits.
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_digit(in[i + 1]), lo = hex_digit(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(plus_is_space && c == '+' ? ' ' : c);
    }
  }
  return true;
}

// Why a decoded piece cannot be used, or empty when it can.
std::string check_piece(const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes)
    return "longer than " + std::to_string(max_bytes) + " bytes (" + std::to_string(text.size()) +
           ")";
  if (!valid_utf8(text)) return "not valid UTF-8";
  if (!printable_utf8(text)) return "holds a control character";
  return "";
}

}  // namespace

bool valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte first, an overlong lead (C0, C1) or beyond F4
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

bool printable_utf8(std::string_view text) {
  if (!valid_utf8(text)) return false;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return false;
  }
  return true;
}

Target decode_target(std::string_view raw) {
  Target t;
  if (raw.size() > kMaxTargetBytes) {
    t.error = "the request target is longer than " + std::to_string(kMaxTargetBytes) + " bytes";
    return t;
  }
  if (raw.empty() || raw.front() != '/') {
    t.error = "the request target does not start with '/'";
    return t;
  }
  const size_t q = raw.find('?');
  const std::string_view path = raw.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? "" : raw.substr(q + 1);
  if (!percent_decode(path, false, t.path)) {
    t.error = "the request path has a '%' not followed by two hex digits";
    return t;
  }
  if (const std::string why = check_piece(t.path, kMaxPathBytes); !why.empty()) {
    t.error = "the request path: " + why;
    return t;
  }
  size_t at = 0;
  while (at <= query.size() && !query.empty()) {
    const size_t amp = std::min(query.find('&', at), query.size());
    const std::string_view piece = query.substr(at, amp - at);
    at = amp + 1;
    if (piece.empty()) continue;  // "a=1&&b=2", a trailing '&'
    if (t.params.size() == kMaxParams) {
      t.error = "more than " + std::to_string(kMaxParams) + " query parameters";
      return t;
    }
    const size_t eq = piece.find('=');
    std::string name, value;
    if (!percent_decode(piece.substr(0, eq), true, name) ||
        (eq != std::string_view::npos && !percent_decode(piece.substr(eq + 1), true, value))) {
      t.error = "a query parameter has a '%' not followed by two hex digits";
      return t;
    }
    if (const std::string why = check_piece(name, kMaxNameBytes); !why.empty()) {
      t.error = "a query parameter's name: " + why;
      return t;
    }
    if (const std::string why = check_piece(value, kMaxValueBytes); !why.empty()) {
      t.error = name + ": " + why;
      return t;
    }
    for (const auto& [seen, v] : t.params)
      if (seen == name) {
        t.error = name + ": given more than once";
        return t;
      }
    t.params.emplace_back(std::move(name), std::move(value));
  }
  return t;
}

std::string json_text(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string json_text(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string error_body(std::string_view message) {
  return json_text(nlohmann::ordered_json{{"error", std::string(message)}});
}

}  // namespace minas::dashboard
