// A table of architectures of one search space, one row each: the CSV that
// `minas bench table` writes, NAS-Bench-201's (shared/benchmarks), and the
// scores `minas bench evaluators --out` writes: a CSV table
// (searchspace/csv_table.h) with an `arch` column of keys, each parsed by the
// space and canonicalized, the other columns numbers.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "searchspace/csv_table.h"
#include "searchspace/space.h"

namespace minas::cli {

class ArchTable {
 public:
  // A column the caller needs, and what for (the flag that names it): a
  // table without it is refused from its header.
  using Needed = CsvNeeded;
  // Reads the whole file. Refuses a file without an `arch` column, a needed
  // one or rows, more than 2 million rows, and an architecture that appears
  // twice.
  static ArchTable read(const std::string& path, const Space& space,
                        const std::vector<Needed>& needed = {});

  const std::string& path() const { return csv_.path; }
  size_t size() const { return rows_.size(); }
  const std::vector<std::string>& header() const { return csv_.header; }

  // The column's index; nullopt when there is none.
  std::optional<size_t> find(const std::string& name) const { return csv_.find(name); }
  // The column's index, else an Error "no column 'NAME' for PURPOSE (columns: ...)".
  size_t column(const std::string& name, const std::string& purpose) const {
    return csv_.column(name, purpose);
  }

  const std::string& key(size_t row) const { return rows_[row].key; }  // canonical
  const Arch& arch(size_t row) const { return rows_[row].arch; }
  // The row of an architecture by its canonical key.
  std::optional<size_t> row_of(const std::string& key) const;
  // The field as a finite number, else an Error naming path:line and the column.
  double number(size_t row, size_t column) const { return csv_.number(row, column); }

 private:
  struct Row {
    std::string key;
    Arch arch;
  };
  CsvTable csv_;
  std::vector<Row> rows_;  // csv_'s, in order
  std::unordered_map<std::string, size_t> by_key_;
};

}  // namespace minas::cli
