#pragma once
// A small RAII layer over the SQLite C API, the foundation of the experiment store.
//
// Every sqlite3_* return code goes through MINAS_SQLITE, which throws SqliteError naming
// the database, the call, SQLite's message, the SQL and the source line. A Connection or
// a Statement is used by one thread at a time (connections are opened SQLITE_OPEN_NOMUTEX);
// moving one to another thread between uses is fine.
//
// The store has a single writer (the controller) and any number of readers (`minas sql`,
// the dashboard): a ReadWrite connection runs in WAL mode so readers see the last committed
// state without blocking the writer or being blocked by it, and the writer takes its lock
// up front (Transaction is BEGIN IMMEDIATE) so a reader can never fail it mid-transaction.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "searchspace/error.h"

struct sqlite3;
struct sqlite3_stmt;

namespace minas::db {

// A failed SQLite call: where() is the database path, code() SQLite's extended result code
// (SQLITE_CONSTRAINT_UNIQUE, SQLITE_BUSY, ...) for callers that handle some failures.
class SqliteError : public Error {
 public:
  SqliteError(std::string where, std::string what, int code)
      : Error(std::move(where), std::move(what)), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

namespace detail {
// Returns rc when it is SQLITE_OK, SQLITE_ROW or SQLITE_DONE; throws SqliteError otherwise.
// `db` (may be null) supplies the message and the path; `sql` may be empty.
int check(int rc, sqlite3* db, const char* call, std::string_view sql, const char* file, int line);
}  // namespace detail

// The one place SQLite return codes are checked: MINAS_SQLITE(handle, sql, sqlite3_foo(...))
// evaluates the call and throws on failure. Users of the raw API include <sqlite3.h>.
#define MINAS_SQLITE(handle, sql_text, call) \
  ::minas::db::detail::check((call), (handle), #call, (sql_text), __FILE__, __LINE__)

enum class OpenMode {
  ReadWrite,  // creates the file if missing; WAL mode
  ReadOnly,   // SQLITE_OPEN_READONLY: every write fails (`minas sql` opens the store so)
  Memory,     // a private in-memory database; the path is ignored
};

enum class Synchronous { Normal, Full, Extra };  // PRAGMA synchronous (WAL: FULL is durable)

enum class ColumnType { Integer, Float, Text, Blob, Null };

struct Options {
  Synchronous synchronous = Synchronous::Full;
  std::chrono::milliseconds busy_timeout{5000};  // how long a call waits for a lock
};

class Statement;

class Connection {
 public:
  // Opens (ReadWrite: creates) the database and applies the settings: busy timeout,
  // foreign_keys=ON, and for ReadWrite WAL mode and `options.synchronous`. The file's
  // header is read here, so a missing or non-database file fails at open.
  static Connection open(const std::string& path, OpenMode mode = OpenMode::ReadWrite,
                         const Options& options = {});

  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // sqlite3_close_v2: statements still alive keep the database open until they finalize.
  ~Connection();

  // Runs every statement of `sql` in turn, discarding any rows; an error names the
  // statement that failed.
  void exec(std::string_view sql);
  // Compiles exactly one statement (an empty or multi-statement text is an error).
  Statement prepare(std::string_view sql);

  int64_t last_insert_rowid() const;
  int64_t changes() const;  // rows changed by the most recent INSERT, UPDATE or DELETE
  void set_synchronous(Synchronous level);
  bool in_transaction() const;  // false in autocommit mode

  const std::string& path() const { return path_; }
  OpenMode mode() const { return mode_; }

 private:
  friend void repair_interrupted_write(const std::string& path, const Options& options);
  Connection(sqlite3* db, std::string path, OpenMode mode);
  // sqlite3_open_v2 with `flags` (NOMUTEX added), extended result codes and the busy
  // timeout; nothing read, no setting changed. A failed open names `path`.
  static Connection open_handle(const std::string& path, OpenMode mode, int flags,
                                const Options& options);
  void close() noexcept;

  sqlite3* db_ = nullptr;  // null only when moved from
  std::string path_;
  OpenMode mode_;
};

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();  // sqlite3_finalize

  // Parameters are 1-based. Text and blobs are copied, so the argument may die at once.
  Statement& bind_int64(int index, int64_t value);
  Statement& bind_double(int index, double value);
  Statement& bind_text(int index, std::string_view value);            // "" binds '', not NULL
  Statement& bind_blob(int index, std::span<const std::byte> value);  // empty binds x''
  Statement& bind_null(int index);

  // Binds by C++ type: integers and bool (unsigned ones by their bit pattern), floating
  // point, anything convertible to std::string_view, to std::span<const std::byte>,
  // nullptr and std::nullopt as NULL, and std::optional of any of these.
  template <class T>
  Statement& bind(int index, const T& value);
  // Binds parameters 1..N in order; N must equal the statement's parameter count.
  template <class... Args>
  Statement& bind_all(const Args&... args);

  // True when a row is available, false when the statement is done. After an error the
  // statement is already reset, ready to be bound and stepped again.
  bool step();
  // Rewinds to run again; bindings are kept until clear_bindings().
  void reset();
  void clear_bindings();

  // Columns of the current row, 0-based; the index is checked against the row's column
  // count. NULL reads as 0, 0.0, "" or an empty blob.
  int column_count() const;
  std::string column_name(int index) const;
  ColumnType column_type(int index) const;
  bool is_null(int index) const;
  int64_t column_int64(int index) const;
  double column_double(int index) const;
  std::string column_text(int index) const;
  std::vector<std::byte> column_blob(int index) const;

  std::string_view sql() const;  // the text it was prepared from

 private:
  friend class Connection;
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  void check_parameter(int index) const;
  void check_parameter_count(int given) const;  // bind_all's values against the SQL's
  void check_column(int index) const;

  sqlite3_stmt* stmt_ = nullptr;  // null only when moved from
};

// Rewinds a statement when the scope ends, so it holds no read lock and is ready to be bound
// again. sqlite3_reset only repeats the error of a failed step, which step() already threw.
class Rewind {
 public:
  explicit Rewind(Statement& statement) : statement_(statement) {}
  Rewind(const Rewind&) = delete;
  Rewind& operator=(const Rewind&) = delete;
  ~Rewind() {
    try {
      statement_.reset();
    } catch (const std::exception&) {
    }
  }

 private:
  Statement& statement_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless commit() succeeded.
// A rollback that fails is reported on stderr, never thrown (it runs during unwinding).
class Transaction {
 public:
  explicit Transaction(Connection& connection);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  void commit();

 private:
  Connection& connection_;
  bool done_ = false;
};

// Whether `e` says a read-only connection met what a writer killed mid-write left behind:
// a hot rollback journal (SQLITE_READONLY_ROLLBACK) or a WAL index to rebuild
// (SQLITE_READONLY_RECOVERY). Only a read-write connection can repair either.
bool needs_writer_repair(const SqliteError& e);
// Opens an existing `path` read-write, changing none of its settings (not even the journal
// mode), and reads its schema: SQLite then rolls back a hot journal or rebuilds the WAL
// index, returning the file to its last committed state. Throws where the file cannot be
// opened read-write.
void repair_interrupted_write(const std::string& path, const Options& options = {});

// PRAGMA integrity_check: "ok", or the problems found, one per line.
std::string integrity_check(Connection& connection);
// PRAGMA user_version: the schema version that migrations read and advance.
int32_t user_version(Connection& connection);
void set_user_version(Connection& connection, int32_t version);

// ---------------------------------------------------------------------------------------

namespace detail {
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
}  // namespace detail

template <class T>
Statement& Statement::bind(int index, const T& value) {
  using V = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<V, std::nullptr_t> || std::is_same_v<V, std::nullopt_t>) {
    return bind_null(index);
  } else if constexpr (detail::is_optional<V>::value) {
    return value ? bind(index, *value) : bind_null(index);
  } else if constexpr (std::is_integral_v<V>) {
    return bind_int64(index, static_cast<int64_t>(value));
  } else if constexpr (std::is_floating_point_v<V>) {
    return bind_double(index, static_cast<double>(value));
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    return bind_text(index, std::string_view(value));
  } else if constexpr (std::is_convertible_v<const T&, std::span<const std::byte>>) {
    return bind_blob(index, std::span<const std::byte>(value));
  } else {
    static_assert(!sizeof(T), "no SQLite binding for this type");
  }
}

template <class... Args>
Statement& Statement::bind_all(const Args&... args) {
  check_parameter_count(static_cast<int>(sizeof...(Args)));
  int index = 0;
  (bind(++index, args), ...);
  return *this;
}

}  // namespace minas::db
