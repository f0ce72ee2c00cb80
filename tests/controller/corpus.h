#pragma once
// The hostile-message corpus, tests/controller/bad_messages.txt: one case a
// line, "CODE NAME<TAB>PAYLOAD". CODE is what the case must get:
//
//   malformed, too_large, bad_version, unknown_type, bad_field
//       refused by proto::parse itself, whoever sends it;
//   unexpected   refused as sent by a peer that never said hello;
//   not_allowed  refused as sent by a registered worker that may not say it;
//   accepted     taken without an error reply (what it must not change is checked);
//   welcome      a hello that is taken: answered by welcome.
//
// The payload may use placeholders, expanded by expand(): $NAME (a JSON value
// the test gives: $OWN_TRIAL, $FOREIGN_TRIAL, ..., deliberately unquoted, so
// that a line read without expanding is not JSON and cannot be a valid hello),
// and generators for what a line cannot hold: $REPEAT(N,TEXT) (TEXT, up to the
// next ')', N times), $HEX(HEXDIGITS) (raw bytes) and $KEYS(N) (N distinct
// "kI":"v" members, comma-separated).
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace minas::test {

struct CorpusCase {
  std::string code, name, payload;  // payload as written, placeholders unexpanded
  int line = 0;
};

inline std::vector<CorpusCase> read_corpus() {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/tests/controller/bad_messages.txt";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::vector<CorpusCase> out;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.empty() || text[0] == '#') continue;
    const size_t tab = text.find('\t'), space = text.find(' ');
    REQUIRE_MESSAGE(tab != std::string::npos, path << ":" << line << ": no tab");
    REQUIRE_MESSAGE(space < tab, path << ":" << line << ": no case name before the tab");
    out.push_back({text.substr(0, space), text.substr(space + 1, tab - space - 1),
                   text.substr(tab + 1), line});
  }
  return out;
}

// The payload with its placeholders and generators expanded; an unknown
// placeholder fails the test (a typo in the corpus would otherwise test nothing).
inline std::string expand(const std::string& raw, const std::map<std::string, std::string>& vars) {
  std::string out;
  size_t i = 0;
  auto argument = [&](size_t from, char stop) {
    const size_t end = raw.find(stop, from);
    REQUIRE_MESSAGE(end != std::string::npos, "unclosed generator in: " << raw.substr(0, 80));
    return end;
  };
  while (i < raw.size()) {
    if (raw[i] != '$') {
      out += raw[i++];
      continue;
    }
    size_t j = i + 1;
    while (j < raw.size() && (std::isupper(static_cast<unsigned char>(raw[j])) || raw[j] == '_'))
      ++j;
    const std::string word = raw.substr(i + 1, j - i - 1);
    if (j < raw.size() && raw[j] == '(') {
      if (word == "REPEAT") {
        const size_t comma = argument(j + 1, ','), close = argument(comma + 1, ')');
        const long n = std::stol(raw.substr(j + 1, comma - j - 1));
        const std::string piece = raw.substr(comma + 1, close - comma - 1);
        for (long k = 0; k < n; ++k) out += piece;
        i = close + 1;
      } else if (word == "HEX") {
        const size_t close = argument(j + 1, ')');
        for (size_t k = j + 1; k + 1 < close; k += 2)
          out += static_cast<char>(std::stoi(raw.substr(k, 2), nullptr, 16));
        i = close + 1;
      } else if (word == "KEYS") {
        const size_t close = argument(j + 1, ')');
        const long n = std::stol(raw.substr(j + 1, close - j - 1));
        for (long k = 0; k < n; ++k)
          out += (k ? "," : "") + ("\"k" + std::to_string(k) + "\":\"v\"");
        i = close + 1;
      } else {
        FAIL("unknown generator $" << word);
      }
      continue;
    }
    const auto v = vars.find(word);
    REQUIRE_MESSAGE(v != vars.end(), "unknown placeholder $" << word);
    out += v->second;
    i = j;
  }
  return out;
}

}  // namespace minas::test
