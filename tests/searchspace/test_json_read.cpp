// The bounded JSON reader every outside text goes through: limits refused before
// parsing, errors that name the place and quote only a short, escaped excerpt.
#include <doctest/doctest.h>

#include <string>

#include "searchspace/json_excerpt.h"
#include "searchspace/json_read.h"

using minas::Error;
using minas::JsonLimits;
using minas::printable_excerpt;
using minas::read_json;

namespace {
std::string refusal(const std::string& text, const JsonLimits& limits = {}) {
  try {
    read_json(text, "f.json", limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}
}  // namespace

TEST_CASE("json_read: depth is counted outside strings only") {
  CHECK(minas::json_depth("{}", 10) == 1);
  CHECK(minas::json_depth("[[1],[[2]]]", 10) == 3);
  CHECK(minas::json_depth(R"({"a":"[[[[\"[["})", 10) == 1);
  CHECK(minas::json_depth(std::string(1000, '['), 5) == 6);  // stops once past the limit
}

TEST_CASE("json_read: a value nested deeper than the limit is refused with its place") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string msg = refusal(deep);
  CHECK(msg.find("f.json: line 1, column 65: arrays and objects nested more than 64 deep") == 0);
  CHECK(msg.size() < 200);
  JsonLimits tight;
  tight.max_depth = 2;
  CHECK(refusal("{\"a\":\n {\"b\": [1]}}", tight).find("line 2, column 8") != std::string::npos);
  CHECK(refusal("{\"a\": {\"b\": 1}}", tight) == "accepted");
}

TEST_CASE("json_read: size over the limit is refused before parsing") {
  JsonLimits small;
  small.max_bytes = 10;
  CHECK(refusal("[1,2,3,4,5,6]", small).find("13 bytes, more than the 10 allowed") !=
        std::string::npos);
}

TEST_CASE("json_read: a syntax error names line and column and quotes a short excerpt") {
  const std::string msg = refusal("{\n  \"a\": 1,\n  \"b\": \x01\x02" + std::string(5000, 'x') + "}");
  CAPTURE(msg);
  CHECK(msg.find("f.json: line 3, column 8: JSON syntax error") == 0);
  CHECK(msg.find("\\x01") != std::string::npos);
  CHECK(msg.find('\x01') == std::string::npos);
  CHECK(msg.size() < 400);
  CHECK(refusal("[1e400]").find("out of range") != std::string::npos);
  CHECK(refusal("").find("line 1, column 1") != std::string::npos);
  // The token nlohmann quotes may hold "'; " itself (found by bench/fuzz): none of it passes.
  const std::string token = refusal(std::string("{\"b'; \xdf\x01\x00nn\":1}", 12));
  CAPTURE(token);
  CHECK(token.find("expected string literal") != std::string::npos);
  for (const char c : token) CHECK((static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f));
}

TEST_CASE("json_read: printable_excerpt escapes and cuts") {
  CHECK(printable_excerpt("a\nb\x1b[31m") == "a\\nb\\x1b[31m");
  CHECK(printable_excerpt(std::string(100, 'z'), 10) == std::string(10, 'z') + "... (100 bytes)");
  CHECK(printable_excerpt("\xff\xfe") == "\\xff\\xfe");
}

TEST_CASE("json_excerpt: a value is quoted short, escaped and without writing it whole") {
  using minas::json_excerpt;
  using nlohmann::json;
  CHECK(json_excerpt(json(3)) == "3");
  CHECK(json_excerpt(json{{"a", "b"}}) == R"({"a":"b"})");
  // A string of 10 MB: cut, with no more of it written than shows.
  const std::string cut = json_excerpt(json(std::string(10'000'000, 'x')), 20);
  CHECK(cut == "\"xxxxxxxxxxxxxxxxxxx...");
  // Nested 10,000 deep (built, not parsed): written to a fixed depth only.
  json deep = json::array();
  for (int i = 0; i < 10000; ++i) deep = json::array({std::move(deep)});
  const std::string d = json_excerpt(deep, 200);
  CHECK(d.rfind("[[[[[[[[[[[[[[[[[...]]]]]]]]]]]]]]]]]", 0) == 0);
  // Terminal escapes and bytes that are not UTF-8 (command-line text): escaped, never thrown.
  const std::string esc = json_excerpt(json("\x1b]0;owned\x07\xff\xfe"));
  CAPTURE(esc);
  CHECK(esc.find('\x1b') == std::string::npos);
  CHECK(esc.find('\xff') == std::string::npos);
  CHECK(esc == R"("\u001b]0;owned\u0007\ufffd\ufffd")");
}
