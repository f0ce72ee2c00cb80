#include "searchspace/csv_table.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <string_view>
#include <system_error>

#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/text_file.h"

namespace minas {
namespace {

// One line's fields; a trailing comma ends in an empty field.
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

std::optional<size_t> CsvTable::find(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  return std::nullopt;
}

size_t CsvTable::column(const std::string& name, const std::string& purpose) const {
  if (const auto c = find(name)) return *c;
  std::string names;
  for (const auto& h : header) names += (names.empty() ? "" : ", ") + h;
  throw Error(path, "no column '" + printable_excerpt(name, 40) + "'" +
                        (purpose.empty() ? std::string() : " for " + purpose) +
                        " (columns: " + printable_excerpt(names, 200) + ")");
}

std::string CsvTable::where(size_t r) const {
  return path + ":" + std::to_string(rows.at(r).line);
}

double CsvTable::number(size_t r, size_t c) const {
  const std::string& s = rows.at(r).fields.at(c);
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
    throw Error(where(r), "column " + printable_excerpt(header.at(c), 40) + ": '" +
                              printable_excerpt(s, 40) + "' is not a number");
  return v;
}

CsvTable read_csv_table(const std::string& path, size_t max_rows,
                        const std::vector<CsvNeeded>& needed) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read the table");
  CsvTable t;
  t.path = path;
  std::string line;
  if (!std::getline(in, line)) throw Error(path, "empty table");
  // Each line is checked for binary bytes before its fields are used: a file
  // that is not a table gets that said, and none of its bytes quoted raw.
  auto text_line = [&](size_t n) {
    if (const std::string bad = binary_in_line(line); !bad.empty())
      throw Error(path + ":" + std::to_string(n), bad + ": not a CSV table");
  };
  text_line(1);
  t.header = split(line);
  for (const CsvNeeded& n : needed) t.column(n.name, n.purpose);
  for (size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    const std::string where = path + ":" + std::to_string(n);
    text_line(n);
    if (t.rows.size() == max_rows)
      throw Error(where, "more than " + std::to_string(max_rows) + " rows");
    CsvTable::Row r{split(line), n};
    if (r.fields.size() != t.header.size())
      throw Error(where, "has " + std::to_string(r.fields.size()) + " fields, the header " +
                             std::to_string(t.header.size()));
    t.rows.push_back(std::move(r));
  }
  if (in.bad()) throw Error(path, "cannot read the table");
  if (t.rows.empty()) throw Error(path, "no rows");
  return t;
}

}  // namespace minas
