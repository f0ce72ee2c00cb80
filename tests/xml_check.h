#pragma once
// A well-formedness check of an XML document (what a browser's XML parser
// refuses with an error page instead of drawing an SVG): valid UTF-8, one
// root element, every element closed in order, attribute values quoted and
// unique per element, and '&' only as a known entity or a character
// reference. Returns "" when the document is well formed, else what is wrong
// and at which byte. Also counts each element name, for tests that check what
// a picture holds.
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace minas::test {

struct XmlCheck {
  std::string error;                   // "" when well formed
  std::string root;                    // the root element's name
  std::map<std::string, int> elements;  // name -> how many
};

inline XmlCheck check_xml(const std::string& doc) {
  XmlCheck r;
  auto fail = [&](size_t at, const std::string& what) {
    if (r.error.empty()) r.error = "byte " + std::to_string(at) + ": " + what;
    return r;
  };
  // UTF-8 first: a parser refuses a document that is not.
  for (size_t i = 0; i < doc.size();) {
    const auto c = static_cast<unsigned char>(doc[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > doc.size()) return fail(i, "not UTF-8");
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(doc[i + k]) >> 6) != 2) return fail(i, "not UTF-8");
    if (n == 1 && c < 0x20 && c != '\n' && c != '\r' && c != '\t')
      return fail(i, "a control character");
    i += n;
  }
  auto entity_ok = [&](size_t at) {  // doc[at] == '&'
    const size_t end = doc.find(';', at);
    if (end == std::string::npos || end - at > 10) return false;
    const std::string e = doc.substr(at + 1, end - at - 1);
    if (e == "amp" || e == "lt" || e == "gt" || e == "quot" || e == "apos") return true;
    if (e.size() >= 2 && e[0] == '#') {
      const bool hex = e[1] == 'x';
      if (e.size() < (hex ? 3u : 2u)) return false;
      for (size_t k = hex ? 2 : 1; k < e.size(); ++k)
        if (!(hex ? std::isxdigit(static_cast<unsigned char>(e[k]))
                  : std::isdigit(static_cast<unsigned char>(e[k]))))
          return false;
      return true;
    }
    return false;
  };
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' ||
           c == '.' || static_cast<unsigned char>(c) >= 0x80;
  };
  std::vector<std::string> open;
  size_t i = 0;
  if (doc.compare(0, 5, "<?xml") == 0) {
    i = doc.find("?>");
    if (i == std::string::npos) return fail(0, "unterminated XML declaration");
    i += 2;
  }
  int roots = 0;
  while (i < doc.size()) {
    if (doc[i] != '<') {
      if (doc[i] == '&' && !entity_ok(i)) return fail(i, "'&' that is not an entity");
      if (open.empty() && !std::isspace(static_cast<unsigned char>(doc[i])))
        return fail(i, "text outside the root element");
      ++i;
      continue;
    }
    if (doc.compare(i, 4, "<!--") == 0) {
      const size_t end = doc.find("-->", i + 4);
      if (end == std::string::npos) return fail(i, "unterminated comment");
      i = end + 3;
      continue;
    }
    const bool closing = i + 1 < doc.size() && doc[i + 1] == '/';
    size_t k = i + (closing ? 2 : 1);
    const size_t name_start = k;
    while (k < doc.size() && name_char(doc[k])) ++k;
    const std::string name = doc.substr(name_start, k - name_start);
    if (name.empty()) return fail(i, "a tag without a name");
    if (closing) {
      while (k < doc.size() && std::isspace(static_cast<unsigned char>(doc[k]))) ++k;
      if (k >= doc.size() || doc[k] != '>') return fail(k, "a malformed closing tag");
      if (open.empty() || open.back() != name)
        return fail(i, "</" + name + "> closes " + (open.empty() ? "nothing" : "<" + open.back() + ">"));
      open.pop_back();
      i = k + 1;
      continue;
    }
    if (open.empty() && ++roots > 1) return fail(i, "a second root element <" + name + ">");
    if (open.empty()) r.root = name;
    ++r.elements[name];
    std::set<std::string> attrs;
    while (true) {
      while (k < doc.size() && std::isspace(static_cast<unsigned char>(doc[k]))) ++k;
      if (k >= doc.size()) return fail(i, "unterminated <" + name + ">");
      if (doc[k] == '>') {
        open.push_back(name);
        i = k + 1;
        break;
      }
      if (doc.compare(k, 2, "/>") == 0) {
        i = k + 2;
        break;
      }
      const size_t a = k;
      while (k < doc.size() && name_char(doc[k])) ++k;
      const std::string attr = doc.substr(a, k - a);
      if (attr.empty()) return fail(k, "a bad attribute in <" + name + ">");
      if (!attrs.insert(attr).second) return fail(a, "attribute " + attr + " twice in <" + name + ">");
      if (k >= doc.size() || doc[k] != '=') return fail(k, "attribute " + attr + " without a value");
      ++k;
      if (k >= doc.size() || (doc[k] != '"' && doc[k] != '\'')) return fail(k, "an unquoted value");
      const char q = doc[k];
      const size_t end = doc.find(q, k + 1);
      if (end == std::string::npos) return fail(k, "an unterminated value");
      for (size_t v = k + 1; v < end; ++v) {
        if (doc[v] == '<') return fail(v, "'<' in an attribute value");
        if (doc[v] == '&' && !entity_ok(v)) return fail(v, "'&' that is not an entity");
      }
      k = end + 1;
    }
  }
  if (!open.empty()) return fail(doc.size(), "<" + open.back() + "> is never closed");
  if (roots == 0) return fail(0, "no root element");
  return r;
}

}  // namespace minas::test
