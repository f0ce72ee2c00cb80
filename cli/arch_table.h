// A table of architectures of one search space, one row each: the CSV that
// `minas bench table` writes, NAS-Bench-201's (shared/benchmarks), and the
// scores `minas bench evaluators --out` writes. An `arch` column of keys,
// the other columns numbers; no quoting. The file is hostile until read: a
// line holding binary bytes is refused as such, every field count is checked,
// every key is parsed by the space (and canonicalized), and a number is only
// a finite decimal; every error names the file, its line and the column, and
// quotes at most a short excerpt of what it found.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "searchspace/space.h"

namespace minas::cli {

class ArchTable {
 public:
  // A column the caller needs, and what for (the flag that names it): a
  // table without it is refused from its header, before any row is read.
  struct Needed {
    std::string name, purpose;
  };
  // Reads the whole file. Refuses a file without an `arch` column, a needed
  // one or rows, more than 2 million rows, and an architecture that appears
  // twice.
  static ArchTable read(const std::string& path, const Space& space,
                        const std::vector<Needed>& needed = {});

  const std::string& path() const { return path_; }
  size_t size() const { return rows_.size(); }
  const std::vector<std::string>& header() const { return header_; }

  // The column's index; nullopt when there is none.
  std::optional<size_t> find(const std::string& name) const;
  // The column's index, else an Error "no column 'NAME' for PURPOSE (columns: ...)".
  size_t column(const std::string& name, const std::string& purpose) const;

  const std::string& key(size_t row) const { return rows_[row].key; }  // canonical
  const Arch& arch(size_t row) const { return rows_[row].arch; }
  // The row of an architecture by its canonical key.
  std::optional<size_t> row_of(const std::string& key) const;
  // The field as a finite number, else an Error naming path:line and the column.
  double number(size_t row, size_t column) const;

 private:
  struct Row {
    std::string key;
    Arch arch;
    std::vector<std::string> fields;
    size_t line = 0;
  };
  std::string path_;
  std::vector<std::string> header_;
  std::vector<Row> rows_;
  std::unordered_map<std::string, size_t> by_key_;
};

}  // namespace minas::cli
