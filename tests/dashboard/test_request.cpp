// The dashboard's strict decoding of a request target and its UTF-8 checks,
// at the edges of every rule.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "dashboard/request.h"
#include "tests/support.h"

using namespace minas;
using dashboard::decode_target;

TEST_CASE("dashboard request: UTF-8 is valid in its shortest forms only") {
  using dashboard::valid_utf8;
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain"));
  CHECK(valid_utf8("\xc3\xa9t\xc3\xa9"));     // two bytes
  CHECK(valid_utf8("\xe2\x82\xac"));          // three: the euro sign
  CHECK(valid_utf8("\xf0\x9f\x98\x80"));      // four: an emoji
  CHECK(valid_utf8("\xf4\x8f\xbf\xbf"));      // U+10FFFF, the last
  CHECK(valid_utf8("\xed\x9f\xbf"));          // U+D7FF, before the surrogates
  CHECK(valid_utf8("\xee\x80\x80"));          // U+E000, after them
  CHECK(valid_utf8(std::string("a\0b", 3)));  // NUL is UTF-8 (printable_utf8 refuses it)
  CHECK_FALSE(valid_utf8("\xff"));
  CHECK_FALSE(valid_utf8("\x80"));              // a continuation byte alone
  CHECK_FALSE(valid_utf8("\xc3"));              // cut short
  CHECK_FALSE(valid_utf8("\xe2\x82"));          // cut short
  CHECK_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(valid_utf8("\xc1\xbf"));          // overlong
  CHECK_FALSE(valid_utf8("\xe0\x80\xaf"));      // overlong, three bytes
  CHECK_FALSE(valid_utf8("\xf0\x80\x80\xaf"));  // overlong, four bytes
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));      // U+D800, a surrogate
  CHECK_FALSE(valid_utf8("\xed\xbf\xbf"));      // U+DFFF
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // U+110000
  CHECK_FALSE(valid_utf8("\xf5\x80\x80\x80"));  // a lead byte beyond F4
  CHECK_FALSE(valid_utf8("\xc3\x28"));          // a lead byte, then no continuation
  CHECK(dashboard::printable_utf8("caf\xc3\xa9 1"));
  CHECK_FALSE(dashboard::printable_utf8(std::string("a\0b", 3)));
  CHECK_FALSE(dashboard::printable_utf8("a\x1b[2J"));
  CHECK_FALSE(dashboard::printable_utf8("a\x7f"));
  CHECK_FALSE(dashboard::printable_utf8("a\nb"));
}

TEST_CASE("dashboard request: a target decodes into a path and parameters, or says why not") {
  auto t = decode_target("/api/trials?experiment=caf%C3%A9+1&sort=val_acc&&limit=5&flag");
  CHECK(t.error.empty());
  CHECK(t.path == "/api/trials");
  REQUIRE(t.params.size() == 4);
  CHECK(t.params[0] == std::pair<std::string, std::string>{"experiment", "caf\xc3\xa9 1"});
  CHECK(t.params[2] == std::pair<std::string, std::string>{"limit", "5"});
  CHECK(t.params[3] == std::pair<std::string, std::string>{"flag", ""});
  CHECK(decode_target("/a+b").path == "/a+b");  // '+' is a space in the query only
  CHECK(decode_target("/%41%2f").path == "/A/");
  CHECK(decode_target("/").error.empty());

  struct Bad {
    std::string target, says;
  };
  for (const Bad& b : std::vector<Bad>{
           {"", "does not start with '/'"},
           {"api", "does not start with '/'"},
           {"/%FF", "path: not valid UTF-8"},
           {"/%", "path has a '%'"},
           {"/%4", "path has a '%'"},
           {"/%4g", "path has a '%'"},
           {"/%00", "path: holds a control character"},
           {"/" + std::string(256, 'a'), "path: longer than 256 bytes"},
           {"/" + std::string(5000, 'a'), "longer than 4096 bytes"},
           {"/?a=%FF", "a: not valid UTF-8"},
           {"/?a=%", "'%' not followed by two hex digits"},
           {"/?%FF=1", "name: not valid UTF-8"},
           {"/?" + std::string(33, 'n') + "=1", "name: longer than 32 bytes"},
           {"/?a=" + std::string(1025, 'v'), "a: longer than 1024 bytes"},
           {"/?a=%0A", "a: holds a control character"},
           {"/?a=1&a=2", "a: given more than once"},
           {"/?a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1&k=1&l=1&m=1&n=1&o=1&p=1&q=1",
            "more than 16 query parameters"},
       }) {
    INFO(b.target.substr(0, 60));
    const auto t2 = decode_target(b.target);
    CHECK_MESSAGE(test::contains(t2.error, b.says), t2.error);
    // The message quotes nothing of the target's bytes beyond a checked name.
    CHECK(t2.error.size() < 120);
  }
  CHECK(decode_target("/" + std::string(255, 'a')).error.empty());
  CHECK(decode_target("/?a=" + std::string(1024, 'v')).error.empty());
}

TEST_CASE("dashboard request: JSON text never throws on text that is not UTF-8") {
  nlohmann::ordered_json j = {{"error", "oom\xff\xfe"}, {"ok", "caf\xc3\xa9"}};
  CHECK_THROWS(j.dump());
  const std::string text = dashboard::json_text(j);
  CHECK(text == "{\"error\":\"oom\xef\xbf\xbd\xef\xbf\xbd\",\"ok\":\"caf\xc3\xa9\"}");
  CHECK_NOTHROW(nlohmann::json::parse(text));
  CHECK(dashboard::error_body("a \"quote\"") == R"({"error":"a \"quote\""})");
}
