#pragma once
// A CSV table of text, read whole: the tables of known results that minas
// reads (a ground-truth table, NAS-Bench-201's, proxy scores, a simulated
// worker's table). No quoting; a CRLF line end is dropped. The file is
// hostile until read: a line holding binary bytes is refused as such (its
// path and line named, none of its bytes quoted raw), a row whose field
// count is not the header's is refused, a number is only a finite decimal,
// and more than max_rows rows are refused before they fill memory. Every
// error names the file, its line and the column, and quotes at most a short
// excerpt of what it found.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace minas {

struct CsvTable {
  struct Row {
    std::vector<std::string> fields;  // as many as the header's
    size_t line = 0;                  // in the file, from 1 (the header's)
  };
  std::string path;
  std::vector<std::string> header;
  std::vector<Row> rows;  // empty lines skipped; never empty

  // The column's index; nullopt when there is none.
  std::optional<size_t> find(const std::string& name) const;
  // The column's index, else an Error "no column 'NAME' for PURPOSE (columns:
  // ...)" (without " for PURPOSE" when purpose is empty).
  size_t column(const std::string& name, const std::string& purpose = {}) const;
  // Row r's field in column c as a finite number, else an Error
  // "PATH:LINE: column NAME: 'TEXT' is not a number".
  double number(size_t r, size_t c) const;
  // "PATH:LINE" of row r, for a caller's own error.
  std::string where(size_t r) const;
};

// A column the caller needs, and what for (the flag that names it; may be empty).
struct CsvNeeded {
  std::string name, purpose;
};

// Refuses a file that cannot be read or is empty, one without a needed
// column (checked from the header, before any row), and one with no rows or
// more than max_rows, as above.
CsvTable read_csv_table(const std::string& path, size_t max_rows,
                        const std::vector<CsvNeeded>& needed = {});

}  // namespace minas
