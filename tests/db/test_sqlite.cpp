// The SQLite layer under the experiment store: values round-trip, statements are reused,
// transactions roll back, every failure names its database, call and SQL, and a reader
// works beside the single writer.
#include <doctest/doctest.h>

#include <sqlite3.h>
#include <unistd.h>
#include "tests/support.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "db/sqlite.h"

namespace {

namespace fs = std::filesystem;
using minas::db::ColumnType;
using minas::db::Connection;
using minas::db::OpenMode;
using minas::db::Options;
using minas::db::SqliteError;
using minas::db::Statement;
using minas::db::Synchronous;
using minas::db::Transaction;

struct TempPath : minas::test::TempDbPath {
  TempPath() : TempDbPath("test-db") {}
};

// The message of the minas::Error that `f` throws.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const minas::Error& e) {
    return e.what();
  }
  FAIL("no error thrown");
  return {};
}

// The extended result code of the SqliteError that `f` throws.
template <class F>
int code_of(F&& f) {
  try {
    f();
  } catch (const SqliteError& e) {
    return e.code();
  }
  FAIL("no SqliteError thrown");
  return 0;
}

int64_t query_int(Connection& c, std::string_view sql) {
  Statement st = c.prepare(sql);
  REQUIRE(st.step());
  return st.column_int64(0);
}

std::string query_text(Connection& c, std::string_view sql) {
  Statement st = c.prepare(sql);
  REQUIRE(st.step());
  return st.column_text(0);
}

std::vector<std::byte> bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

}  // namespace

TEST_CASE("sqlite: every type binds and reads back, by index and by bind_all") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, d REAL, s TEXT, b BLOB, n)");
  const std::string text("a\0b \xc3\xa9", 6);  // an embedded NUL and a two-byte UTF-8 letter
  const std::vector<std::byte> blob = bytes({0, 0xff, 0x10, 0});

  Statement insert = c.prepare("INSERT INTO t (i, d, s, b, n) VALUES (?, ?, ?, ?, ?)");
  insert.bind_int64(1, std::numeric_limits<int64_t>::min())
      .bind_double(2, -1.5e-300)
      .bind_text(3, text)
      .bind_blob(4, blob)
      .bind_null(5);
  CHECK_FALSE(insert.step());
  CHECK(c.changes() == 1);
  CHECK(c.last_insert_rowid() == 1);

  insert.reset();
  // Empty text and an empty blob are values, not NULL.
  insert.bind_all(std::numeric_limits<int64_t>::max(), 0.1, std::string_view(),
                  std::span<const std::byte>(), std::nullopt);
  CHECK_FALSE(insert.step());
  insert.reset();
  // Unsigned values (arch hashes) are stored by their bit pattern.
  insert.bind_all(std::numeric_limits<uint64_t>::max(), 2.5f, "x", blob, std::optional<int64_t>(7));
  CHECK_FALSE(insert.step());
  CHECK(c.last_insert_rowid() == 3);

  Statement select = c.prepare("SELECT i, d, s, b, n FROM t ORDER BY id");
  REQUIRE(select.column_count() == 5);
  CHECK(select.column_name(0) == "i");
  CHECK(select.column_name(4) == "n");

  REQUIRE(select.step());
  CHECK(select.column_type(0) == ColumnType::Integer);
  CHECK(select.column_type(1) == ColumnType::Float);
  CHECK(select.column_type(2) == ColumnType::Text);
  CHECK(select.column_type(3) == ColumnType::Blob);
  CHECK(select.column_type(4) == ColumnType::Null);
  CHECK(select.column_int64(0) == std::numeric_limits<int64_t>::min());
  CHECK(select.column_double(1) == -1.5e-300);
  CHECK(select.column_text(2) == text);
  CHECK(select.column_blob(3) == blob);
  CHECK(select.is_null(4));
  CHECK_FALSE(select.is_null(0));

  REQUIRE(select.step());
  CHECK(select.column_int64(0) == std::numeric_limits<int64_t>::max());
  CHECK(select.column_double(1) == 0.1);
  CHECK(select.column_type(2) == ColumnType::Text);
  CHECK(select.column_text(2).empty());
  CHECK(select.column_type(3) == ColumnType::Blob);
  CHECK(select.column_blob(3).empty());
  CHECK(select.is_null(4));

  REQUIRE(select.step());
  CHECK(static_cast<uint64_t>(select.column_int64(0)) == std::numeric_limits<uint64_t>::max());
  CHECK(select.column_double(1) == 2.5);
  CHECK(select.column_text(2) == "x");
  CHECK(select.column_blob(3) == blob);
  CHECK(select.column_int64(4) == 7);

  CHECK_FALSE(select.step());
}

TEST_CASE("sqlite: one prepared statement is reused 10,000 times inside one transaction") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec("CREATE TABLE trial (id INTEGER PRIMARY KEY, arch TEXT NOT NULL, acc REAL)");
  Statement insert = c.prepare("INSERT INTO trial (arch, acc) VALUES (?, ?)");
  {
    Transaction tx(c);
    for (int i = 0; i < 10000; ++i) {
      insert.bind_all("arch-" + std::to_string(i), i * 0.5);
      if (insert.step()) FAIL("an INSERT returned a row");
      insert.reset();
    }
    tx.commit();
  }
  Statement totals = c.prepare("SELECT count(*), sum(acc), count(DISTINCT arch) FROM trial");
  REQUIRE(totals.step());
  CHECK(totals.column_int64(0) == 10000);
  CHECK(totals.column_double(1) == 0.5 * 9999 * 10000 / 2);
  CHECK(totals.column_int64(2) == 10000);

  // clear_bindings leaves every parameter NULL, which the NOT NULL column refuses.
  insert.clear_bindings();
  CHECK(code_of([&] { insert.step(); }) == SQLITE_CONSTRAINT_NOTNULL);
  CHECK(query_int(c, "SELECT count(*) FROM trial") == 10000);
}

TEST_CASE("sqlite: a transaction destroyed without commit rolls back") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec("CREATE TABLE t (x INTEGER)");
  {
    Transaction tx(c);
    c.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)");
    CHECK(c.in_transaction());
    CHECK(query_int(c, "SELECT count(*) FROM t") == 2);
  }
  CHECK_FALSE(c.in_transaction());
  CHECK(query_int(c, "SELECT count(*) FROM t") == 0);

  // An exception unwinding through the guard rolls back what came before it.
  CHECK_THROWS_AS(
      [&] {
        Transaction tx(c);
        c.exec("INSERT INTO t VALUES (3)");
        c.exec("INSERT INTO missing VALUES (4)");
        tx.commit();
      }(),
      SqliteError);
  CHECK_FALSE(c.in_transaction());
  CHECK(query_int(c, "SELECT count(*) FROM t") == 0);

  {
    Transaction tx(c);
    c.exec("INSERT INTO t VALUES (5)");
    tx.commit();
    CHECK_FALSE(c.in_transaction());
  }
  CHECK(query_int(c, "SELECT sum(x) FROM t") == 5);
  // Transactions do not nest.
  Transaction outer(c);
  CHECK(error_of([&] { Transaction inner(c); }).find("within a transaction") != std::string::npos);
}

TEST_CASE("sqlite: bad SQL and misuse give errors naming the database, the SQL and the call") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec("CREATE TABLE t (x INTEGER)");

  const std::string bad = error_of([&] { c.prepare("SELEC x FROM t"); });
  CAPTURE(bad);
  CHECK(bad.find(tmp.str()) == 0);
  CHECK(bad.find("sqlite3_prepare_v2") != std::string::npos);
  CHECK(bad.find("syntax error") != std::string::npos);
  CHECK(bad.find("SQL: SELEC x FROM t") != std::string::npos);
  CHECK(bad.find("db/sqlite.cpp:") != std::string::npos);
  CHECK(code_of([&] { c.prepare("SELEC x FROM t"); }) == SQLITE_ERROR);

  // In a script the error quotes the failing statement, not those that ran before it.
  const std::string script =
      error_of([&] { c.exec("INSERT INTO t VALUES (1);\nINSERT INTO nowhere VALUES (2);"); });
  CAPTURE(script);
  CHECK(script.find("no such table: nowhere") != std::string::npos);
  CHECK(script.find("SQL: INSERT INTO nowhere VALUES (2);") != std::string::npos);
  CHECK(script.find("VALUES (1)") == std::string::npos);

  CHECK(error_of([&] { c.prepare("SELECT 1; SELECT 2"); }).find("more than one statement") !=
        std::string::npos);
  CHECK(error_of([&] { c.prepare("  -- nothing\n"); }).find("no SQL statement") !=
        std::string::npos);

  Statement insert = c.prepare("INSERT INTO t VALUES (?)");
  CHECK(error_of([&] { insert.bind_int64(2, 1); }).find("parameter 2 out of range") !=
        std::string::npos);
  CHECK(error_of([&] { insert.bind_all(1, 2); }).find("2 values for 1 parameters") !=
        std::string::npos);

  Statement select = c.prepare("SELECT x FROM t");
  CHECK(error_of([&] { select.column_int64(0); }).find("no current row") != std::string::npos);
  REQUIRE(select.step());
  const std::string range = error_of([&] { select.column_text(1); });
  CHECK(range.find("column 1 out of range (the row has 1") != std::string::npos);
  CHECK(range.find("SQL: SELECT x FROM t") != std::string::npos);
  CHECK(error_of([&] { select.column_name(-1); }).find("out of range") != std::string::npos);
}

TEST_CASE("sqlite: a UNIQUE violation is reported and the statement stays usable") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec("CREATE TABLE arch (key TEXT UNIQUE)");
  Statement insert = c.prepare("INSERT INTO arch (key) VALUES (?)");
  CHECK_FALSE(insert.bind_all("conv3x3|skip").step());
  insert.reset();
  insert.bind_all("conv3x3|skip");
  try {
    insert.step();
    FAIL("a duplicate key was inserted");
  } catch (const SqliteError& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.code() == SQLITE_CONSTRAINT_UNIQUE);
    CHECK(e.where() == tmp.str());
    CHECK(msg.find("sqlite3_step") != std::string::npos);
    CHECK(msg.find("UNIQUE constraint failed: arch.key") != std::string::npos);
    CHECK(msg.find("[SQLITE_CONSTRAINT_UNIQUE]") != std::string::npos);
    CHECK(msg.find("SQL: INSERT INTO arch (key) VALUES (?)") != std::string::npos);
  }
  // step() reset the statement after the failure: it binds and runs again at once.
  insert.reset();
  CHECK_FALSE(insert.bind_all("conv1x1|skip").step());
  CHECK(query_int(c, "SELECT count(*) FROM arch") == 2);
}

TEST_CASE("sqlite: a read-only connection refuses writes clearly and nothing changes") {
  TempPath tmp;
  {
    Connection w = Connection::open(tmp.str());
    w.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
    minas::db::set_user_version(w, 4);
  }
  Connection r = Connection::open(tmp.str(), OpenMode::ReadOnly);
  CHECK(r.mode() == OpenMode::ReadOnly);
  const std::string msg = error_of([&] { r.exec("INSERT INTO t VALUES (2)"); });
  CAPTURE(msg);
  CHECK(msg.find(tmp.str()) == 0);
  CHECK(msg.find("attempt to write a readonly database") != std::string::npos);
  CHECK(msg.find("opened read-only") != std::string::npos);
  CHECK(msg.find("SQL: INSERT INTO t VALUES (2)") != std::string::npos);

  Statement update = r.prepare("UPDATE t SET x = 5");
  CHECK((code_of([&] { update.step(); }) & 0xff) == SQLITE_READONLY);
  CHECK((code_of([&] { r.exec("CREATE TABLE u (y)"); }) & 0xff) == SQLITE_READONLY);
  CHECK((code_of([&] { minas::db::set_user_version(r, 9); }) & 0xff) == SQLITE_READONLY);
  {
    Transaction tx(r);
    CHECK((code_of([&] { r.exec("DELETE FROM t"); }) & 0xff) == SQLITE_READONLY);
  }

  CHECK(query_int(r, "SELECT count(*) FROM t") == 1);
  CHECK(minas::db::user_version(r) == 4);
  Connection w = Connection::open(tmp.str());
  CHECK(query_int(w, "SELECT sum(x) FROM t") == 1);
  CHECK(query_int(w, "SELECT count(*) FROM sqlite_master WHERE name = 'u'") == 0);
  CHECK(minas::db::user_version(w) == 4);

  TempPath missing;
  const std::string absent = error_of([&] { Connection::open(missing.str(), OpenMode::ReadOnly); });
  CHECK(absent.find(missing.str() + ": sqlite3_open_v2") == 0);
  CHECK(absent.find("no such file") != std::string::npos);
  CHECK_FALSE(fs::exists(missing.path));
}

TEST_CASE("sqlite: WAL, synchronous, foreign keys and the busy timeout are in effect") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  CHECK(query_text(c, "PRAGMA journal_mode") == "wal");
  CHECK(query_int(c, "PRAGMA synchronous") == 2);  // FULL
  CHECK(query_int(c, "PRAGMA foreign_keys") == 1);
  CHECK(query_int(c, "PRAGMA busy_timeout") == 5000);
  c.set_synchronous(Synchronous::Normal);
  CHECK(query_int(c, "PRAGMA synchronous") == 1);
  c.set_synchronous(Synchronous::Extra);
  CHECK(query_int(c, "PRAGMA synchronous") == 3);

  Connection other = Connection::open(
      tmp.str(), OpenMode::ReadWrite,
      Options{.synchronous = Synchronous::Normal, .busy_timeout = std::chrono::milliseconds(250)});
  CHECK(query_text(other, "PRAGMA journal_mode") == "wal");
  CHECK(query_int(other, "PRAGMA synchronous") == 1);
  CHECK(query_int(other, "PRAGMA busy_timeout") == 250);

  c.exec(
      "CREATE TABLE experiment (id INTEGER PRIMARY KEY);"
      "CREATE TABLE trial (id INTEGER PRIMARY KEY,"
      "                    experiment INTEGER NOT NULL REFERENCES experiment (id))");
  CHECK(code_of([&] { c.exec("INSERT INTO trial (experiment) VALUES (42)"); }) ==
        SQLITE_CONSTRAINT_FOREIGNKEY);
  CHECK(fs::exists(tmp.str() + "-wal"));  // the writes went to the log

  Connection memory = Connection::open("", OpenMode::Memory);
  CHECK(query_text(memory, "PRAGMA journal_mode") == "memory");
  CHECK(query_int(memory, "PRAGMA foreign_keys") == 1);
}

TEST_CASE("sqlite: a reader sees the last commit while the writer holds a transaction") {
  TempPath tmp;
  Connection w = Connection::open(tmp.str());
  w.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");

  // A zero busy timeout: any wait on a lock would fail at once instead of blocking.
  const Options no_wait{.busy_timeout = std::chrono::milliseconds(0)};
  Connection r = Connection::open(tmp.str(), OpenMode::ReadOnly, no_wait);
  Connection w2 = Connection::open(tmp.str(), OpenMode::ReadWrite, no_wait);
  {
    Transaction tx(w);
    w.exec("INSERT INTO t VALUES (2)");
    CHECK(query_int(w, "SELECT count(*) FROM t") == 2);
    CHECK(query_int(r, "SELECT count(*) FROM t") == 1);
    CHECK(query_int(w2, "SELECT count(*) FROM t") == 1);
    // BEGIN IMMEDIATE took the write lock up front: a second writer cannot start.
    CHECK((code_of([&] { Transaction second(w2); }) & 0xff) == SQLITE_BUSY);
    tx.commit();
  }
  CHECK(query_int(r, "SELECT count(*) FROM t") == 2);

  // A read in progress keeps its snapshot while the writer commits beside it.
  Statement scan = r.prepare("SELECT x FROM t ORDER BY x");
  REQUIRE(scan.step());
  w.exec("INSERT INTO t VALUES (3)");
  int rows = 1;
  while (scan.step()) ++rows;
  CHECK(rows == 2);
  CHECK(query_int(r, "SELECT count(*) FROM t") == 3);
}

TEST_CASE("sqlite: integrity_check reports ok") {
  TempPath tmp;
  Connection c = Connection::open(tmp.str());
  c.exec(
      "CREATE TABLE t (x INTEGER PRIMARY KEY, key TEXT UNIQUE);"
      "INSERT INTO t (key) VALUES ('a'), ('b'), ('c')");
  CHECK(minas::db::integrity_check(c) == "ok");
  Connection r = Connection::open(tmp.str(), OpenMode::ReadOnly);
  CHECK(minas::db::integrity_check(r) == "ok");
}

TEST_CASE("sqlite: user_version round-trips and persists") {
  TempPath tmp;
  {
    Connection c = Connection::open(tmp.str());
    CHECK(minas::db::user_version(c) == 0);
    minas::db::set_user_version(c, 7);
    CHECK(minas::db::user_version(c) == 7);
  }
  Connection c = Connection::open(tmp.str());
  CHECK(minas::db::user_version(c) == 7);
  minas::db::set_user_version(c, std::numeric_limits<int32_t>::max());
  CHECK(minas::db::user_version(c) == std::numeric_limits<int32_t>::max());
  minas::db::set_user_version(c, -3);
  CHECK(minas::db::user_version(c) == -3);
}

TEST_CASE("sqlite: a path in a missing directory fails clearly") {
  TempPath tmp;
  const fs::path dir = tmp.path.string() + "-no-such-dir";
  const std::string path = (dir / "store.sqlite").string();
  try {
    Connection::open(path);
    FAIL("opened " << path);
  } catch (const SqliteError& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.where() == path);
    CHECK((e.code() & 0xff) == SQLITE_CANTOPEN);
    CHECK(msg.find("unable to open database file") != std::string::npos);
    CHECK(msg.find("directory " + dir.string() + " does not exist") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir));
}

TEST_CASE("sqlite: a file that is not a database fails clearly and is left as it was") {
  TempPath tmp;
  std::string garbage;
  for (int i = 0; i < 200; ++i) garbage += "not a database, just text " + std::to_string(i) + "\n";
  std::ofstream(tmp.path, std::ios::binary) << garbage;

  for (OpenMode mode : {OpenMode::ReadWrite, OpenMode::ReadOnly}) {
    CAPTURE(static_cast<int>(mode));
    try {
      Connection::open(tmp.str(), mode);
      FAIL("opened a text file as a database");
    } catch (const SqliteError& e) {
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(msg.find(tmp.str()) == 0);
      CHECK(e.code() == SQLITE_NOTADB);
      CHECK(msg.find("file is not a database") != std::string::npos);
    }
  }
  std::ifstream in(tmp.path, std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(after == garbage);
}

TEST_CASE("sqlite: connections and statements move, and a statement may outlive its connection") {
  Connection a = Connection::open("", OpenMode::Memory);
  a.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
  Connection b = std::move(a);
  b.exec("INSERT INTO t VALUES (2)");
  Connection c = Connection::open("", OpenMode::Memory);
  c = std::move(b);
  CHECK(query_int(c, "SELECT sum(x) FROM t") == 3);

  Statement s = c.prepare("SELECT x FROM t ORDER BY x");
  Statement moved = std::move(s);
  REQUIRE(moved.step());
  CHECK(moved.column_int64(0) == 1);
  s = std::move(moved);
  REQUIRE(s.step());
  CHECK(s.column_int64(0) == 2);

  // sqlite3_close_v2 defers closing until the last statement is finalized.
  std::optional<Statement> survivor;
  {
    Connection d = Connection::open("", OpenMode::Memory);
    d.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (42)");
    survivor.emplace(d.prepare("SELECT x FROM t"));
  }
  REQUIRE(survivor->step());
  CHECK(survivor->column_int64(0) == 42);
}
