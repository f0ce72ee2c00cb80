// The CSV tables minas reads (searchspace/csv_table.h): fields, line numbers,
// numbers, needed columns and the row bound. The refusals of whole commands
// are in tests/files/tables.txt.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "searchspace/csv_table.h"
#include "searchspace/error.h"
#include "tests/support.h"

namespace {

std::string write(const minas::test::TempDir& dir, const std::string& text) {
  const std::string path = dir.file("t.csv");
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string error_of(const std::string& path, size_t max_rows,
                     const std::vector<minas::CsvNeeded>& needed = {}) {
  try {
    minas::read_csv_table(path, max_rows, needed);
  } catch (const minas::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("csv table: fields, line numbers past empty lines, CRLF, numbers and their errors") {
  const minas::test::TempDir dir("csv-table");
  const std::string path = write(dir, "arch,acc,note\r\na,0.5,\r\n\r\nb,93.25,x\n\nc,1e-3,y");
  const minas::CsvTable t = minas::read_csv_table(path, 10, {{"acc", "--metric"}});
  REQUIRE(t.rows.size() == 3);
  CHECK(t.header == std::vector<std::string>{"arch", "acc", "note"});
  CHECK(t.rows[0].fields == std::vector<std::string>{"a", "0.5", ""});  // a trailing comma
  CHECK(t.rows[1].line == 4);
  CHECK(t.rows[2].line == 6);
  CHECK(t.where(1) == path + ":4");
  CHECK(t.number(1, 1) == 93.25);
  CHECK(t.number(2, 1) == 0.001);
  CHECK(t.find("note") == size_t{2});
  CHECK_FALSE(t.find("nope"));
  CHECK_THROWS_WITH_AS(t.number(0, 2), doctest::Contains(":2: column note: '' is not a number"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(t.number(1, 2), doctest::Contains(":4: column note: 'x' is not a number"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(t.column("top1", "--report-metric"),
                       doctest::Contains("no column 'top1' for --report-metric (columns: arch, "
                                         "acc, note)"),
                       minas::Error);
}

TEST_CASE("csv table: refusals name the file and line") {
  const minas::test::TempDir dir("csv-table-bad");
  CHECK(error_of(dir.file("missing.csv"), 10) ==
        dir.file("missing.csv") + ": cannot read the table");
  CHECK(error_of(write(dir, ""), 10) == dir.file("t.csv") + ": empty table");
  // A needed column is checked from the header, before the rows.
  CHECK(error_of(write(dir, "arch,acc\n"), 10, {{"top1", ""}}) ==
        dir.file("t.csv") + ": no column 'top1' (columns: arch, acc)");
  CHECK(error_of(write(dir, "arch,acc\n"), 10) == dir.file("t.csv") + ": no rows");
  CHECK(error_of(write(dir, "arch,acc\na,1\nb\n"), 10) ==
        dir.file("t.csv") + ":3: has 1 fields, the header 2");
  CHECK(error_of(write(dir, "arch,acc\na,1,2\n"), 10) ==
        dir.file("t.csv") + ":2: has 3 fields, the header 2");
  CHECK(error_of(write(dir, std::string("arch,acc\na\x1b[2J,1\n")), 10) ==
        dir.file("t.csv") + ":2: binary data (byte 0x1b at column 2): not a CSV table");
  CHECK(error_of(write(dir, "arch,acc\na,1\nb,2\nc,3\n"), 2) ==
        dir.file("t.csv") + ":4: more than 2 rows");
  CHECK(error_of(write(dir, "arch,acc\na,1\nb,2\n"), 2).empty());
}
