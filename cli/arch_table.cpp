#include "cli/arch_table.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <system_error>

#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/text_file.h"

namespace minas::cli {
namespace {

// More rows than any table of a space we search (NAS-Bench-201 has 15,625):
// a file past it is not such a table, and is refused before it fills memory.
constexpr size_t kMaxRows = 2'000'000;

// One CSV line's fields (no quoting in these tables); a CRLF line end is
// dropped, and a trailing comma ends in an empty field.
std::vector<std::string> split(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    out.emplace_back(
        line.substr(start, comma == std::string_view::npos ? line.npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

ArchTable ArchTable::read(const std::string& path, const Space& space,
                          const std::vector<Needed>& needed) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read the table");
  ArchTable t;
  t.path_ = path;
  std::string line;
  if (!std::getline(in, line)) throw Error(path, "empty table");
  // Each line is checked for binary bytes before its fields are used: a file
  // that is not a table gets that said, and none of its bytes quoted raw.
  auto text_line = [&](size_t n) {
    if (const std::string bad = binary_in_line(line); !bad.empty())
      throw Error(path + ":" + std::to_string(n), bad + ": not a CSV table");
  };
  text_line(1);
  t.header_ = split(line);
  const size_t key = t.column("arch", "the architectures");
  for (const Needed& n : needed) t.column(n.name, n.purpose);
  for (size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    const std::string where = path + ":" + std::to_string(n);
    text_line(n);
    if (t.rows_.size() == kMaxRows)
      throw Error(where, "more than " + std::to_string(kMaxRows) + " rows: not a table of a space");
    Row r;
    r.fields = split(line);
    r.line = n;
    if (r.fields.size() != t.header_.size())
      throw Error(where, "has " + std::to_string(r.fields.size()) + " fields, the header " +
                             std::to_string(t.header_.size()));
    try {
      r.arch = space.parse_key(r.fields[key]);
    } catch (const Error& e) {
      throw Error(where, "arch is not of space " + space.name() + ": " + e.what());
    }
    r.key = space.key(r.arch);
    if (!t.by_key_.emplace(r.key, t.rows_.size()).second)
      throw Error(where,
                  "architecture " + printable_excerpt(r.fields[key], 120) + " appears twice");
    t.rows_.push_back(std::move(r));
  }
  if (in.bad()) throw Error(path, "cannot read the table");
  if (t.rows_.empty()) throw Error(path, "no rows");
  return t;
}

std::optional<size_t> ArchTable::find(const std::string& name) const {
  for (size_t i = 0; i < header_.size(); ++i)
    if (header_[i] == name) return i;
  return std::nullopt;
}

size_t ArchTable::column(const std::string& name, const std::string& purpose) const {
  if (const auto c = find(name)) return *c;
  std::string names;
  for (const auto& h : header_) names += (names.empty() ? "" : ", ") + h;
  throw Error(path_, "no column '" + printable_excerpt(name, 40) + "' for " + purpose +
                         " (columns: " + printable_excerpt(names, 200) + ")");
}

std::optional<size_t> ArchTable::row_of(const std::string& key) const {
  const auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

double ArchTable::number(size_t row, size_t column) const {
  const Row& r = rows_.at(row);
  const std::string& s = r.fields.at(column);
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
    throw Error(path_ + ":" + std::to_string(r.line),
                "column " + printable_excerpt(header_[column], 40) + ": '" +
                    printable_excerpt(s, 40) + "' is not a number");
  return v;
}

}  // namespace minas::cli
