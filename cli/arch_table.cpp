#include "cli/arch_table.h"

#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::cli {
namespace {

// More rows than any table of a space we search (NAS-Bench-201 has 15,625):
// a file past it is not such a table, and is refused before it fills memory.
constexpr size_t kMaxRows = 2'000'000;

}  // namespace

ArchTable ArchTable::read(const std::string& path, const Space& space,
                          const std::vector<Needed>& needed) {
  ArchTable t;
  std::vector<Needed> columns = {{"arch", "the architectures"}};
  columns.insert(columns.end(), needed.begin(), needed.end());
  t.csv_ = read_csv_table(path, kMaxRows, columns);
  const size_t key = t.csv_.column("arch", "the architectures");
  for (size_t i = 0; i < t.csv_.rows.size(); ++i) {
    const std::string& text = t.csv_.rows[i].fields[key];
    Row r;
    try {
      r.arch = space.parse_key(text);
    } catch (const Error& e) {
      throw Error(t.csv_.where(i), "arch is not of space " + space.name() + ": " + e.what());
    }
    r.key = space.key(r.arch);
    if (!t.by_key_.emplace(r.key, t.rows_.size()).second)
      throw Error(t.csv_.where(i),
                  "architecture " + printable_excerpt(text, 120) + " appears twice");
    t.rows_.push_back(std::move(r));
  }
  return t;
}

std::optional<size_t> ArchTable::row_of(const std::string& key) const {
  const auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

}  // namespace minas::cli
