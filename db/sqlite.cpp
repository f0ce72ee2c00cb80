#include "db/sqlite.h"

#include <sqlite3.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <utility>

namespace minas::db {
namespace {

// Errors quote at most this much SQL, so a failure in a long script stays readable.
constexpr size_t kMaxQuotedSql = 1000;

// SQLite's primary result codes by number (the low byte of an extended code), a stable ABI.
constexpr const char* kCodeNames[] = {
    "SQLITE_OK",       "SQLITE_ERROR",   "SQLITE_INTERNAL", "SQLITE_PERM",     "SQLITE_ABORT",
    "SQLITE_BUSY",     "SQLITE_LOCKED",  "SQLITE_NOMEM",    "SQLITE_READONLY", "SQLITE_INTERRUPT",
    "SQLITE_IOERR",    "SQLITE_CORRUPT", "SQLITE_NOTFOUND", "SQLITE_FULL",     "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL", "SQLITE_EMPTY",   "SQLITE_SCHEMA",   "SQLITE_TOOBIG",   "SQLITE_CONSTRAINT",
    "SQLITE_MISMATCH", "SQLITE_MISUSE",  "SQLITE_NOLFS",    "SQLITE_AUTH",     "SQLITE_FORMAT",
    "SQLITE_RANGE",    "SQLITE_NOTADB",  "SQLITE_NOTICE",   "SQLITE_WARNING"};
static_assert(SQLITE_CONSTRAINT == 19 && SQLITE_NOTADB == 26 && SQLITE_WARNING == 28);

const char* code_name(int rc) {
  // The extended codes a store's users meet, named so an error says which one it was.
  switch (rc) {
    case SQLITE_BUSY_RECOVERY:
      return "SQLITE_BUSY_RECOVERY";
    case SQLITE_BUSY_SNAPSHOT:
      return "SQLITE_BUSY_SNAPSHOT";
    case SQLITE_READONLY_RECOVERY:
      return "SQLITE_READONLY_RECOVERY";
    case SQLITE_READONLY_CANTLOCK:
      return "SQLITE_READONLY_CANTLOCK";
    case SQLITE_READONLY_ROLLBACK:
      return "SQLITE_READONLY_ROLLBACK";
    case SQLITE_READONLY_DBMOVED:
      return "SQLITE_READONLY_DBMOVED";
    case SQLITE_READONLY_CANTINIT:
      return "SQLITE_READONLY_CANTINIT";
    case SQLITE_READONLY_DIRECTORY:
      return "SQLITE_READONLY_DIRECTORY";
    case SQLITE_CANTOPEN_ISDIR:
      return "SQLITE_CANTOPEN_ISDIR";
    case SQLITE_CONSTRAINT_UNIQUE:
      return "SQLITE_CONSTRAINT_UNIQUE";
    case SQLITE_CONSTRAINT_PRIMARYKEY:
      return "SQLITE_CONSTRAINT_PRIMARYKEY";
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return "SQLITE_CONSTRAINT_FOREIGNKEY";
    case SQLITE_CONSTRAINT_CHECK:
      return "SQLITE_CONSTRAINT_CHECK";
    case SQLITE_CONSTRAINT_NOTNULL:
      return "SQLITE_CONSTRAINT_NOTNULL";
    default:
      break;
  }
  const auto primary = static_cast<size_t>(rc & 0xff);
  return primary < std::size(kCodeNames) ? kCodeNames[primary] : "SQLITE_UNKNOWN";
}

// The database a handle is open on, as errors name it.
std::string db_path(sqlite3* db) {
  const char* name = db ? sqlite3_db_filename(db, "main") : nullptr;
  return name && *name ? name : ":memory:";
}

std::string quote_sql(std::string_view sql) {
  const auto first = sql.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  sql = sql.substr(first, sql.find_last_not_of(" \t\r\n") - first + 1);
  if (sql.size() <= kMaxQuotedSql) return std::string(sql);
  return std::string(sql.substr(0, kMaxQuotedSql)) + " ... (" + std::to_string(sql.size()) +
         " bytes)";
}

// "/work/main/db/sqlite.cpp" -> "db/sqlite.cpp": the folder names the module.
std::string_view short_file(std::string_view file) {
  const auto last = file.rfind('/');
  if (last == std::string_view::npos || last == 0) return file;
  const auto before = file.rfind('/', last - 1);
  return before == std::string_view::npos ? file : file.substr(before + 1);
}

int sql_length(sqlite3* db, std::string_view sql) {
  if (sql.size() >= INT_MAX) {
    throw Error(db_path(db), "SQL text of " + std::to_string(sql.size()) + " bytes is too long");
  }
  return static_cast<int>(sql.size());
}

bool blank(std::string_view text) {
  return text.find_first_not_of(" \t\r\n;") == std::string_view::npos;
}

// Why an open failed, where SQLite's "unable to open database file" does not say.
std::string open_hint(const std::string& path, OpenMode mode) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return " (directory " + parent.string() + " does not exist)";
  }
  if (mode == OpenMode::ReadOnly && !fs::exists(path, ec)) return " (no such file)";
  return "";
}

void warn(const std::exception& e) {
  std::cerr << "warning: " << e.what() << '\n';
}

}  // namespace

namespace detail {

int check(int rc, sqlite3* db, const char* call, std::string_view sql, const char* file, int line) {
  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) [[likely]] {
    return rc;
  }
  // sqlite3_errmsg describes the connection's latest error, which is this one when the
  // codes agree; otherwise (no handle, or a call that does not set it) use the generic text.
  const bool own = db && (sqlite3_extended_errcode(db) & 0xff) == (rc & 0xff);
  std::string what(std::string_view(call).substr(0, std::string_view(call).find('(')));
  what += " (" + std::string(short_file(file)) + ":" + std::to_string(line) + "): ";
  what += std::string(own ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) + " [" + code_name(rc) + "]";
  const int extended = own ? sqlite3_extended_errcode(db) : rc;
  if (extended == SQLITE_READONLY_RECOVERY || extended == SQLITE_READONLY_ROLLBACK) {
    what += extended == SQLITE_READONLY_RECOVERY
                ? " (its last writer stopped without closing it, and a read-only reader cannot "
                  "rebuild its WAL index"
                : " (its last writer stopped in the middle of a write, and a read-only reader "
                  "cannot roll back the journal it left";
    what += ": reopen it read-write once, e.g. by restarting the controller, which resumes)";
  } else if ((rc & 0xff) == SQLITE_READONLY && db && sqlite3_db_readonly(db, "main") == 1) {
    what += " (the connection was opened read-only)";
  }
  if (const std::string quoted = quote_sql(sql); !quoted.empty()) {
    what += "; SQL: " + quoted;
#if SQLITE_VERSION_NUMBER >= 3038000
    const int offset = own ? sqlite3_error_offset(db) : -1;
    if (offset >= 0) what += " (at byte " + std::to_string(offset) + ")";
#endif
  }
  throw SqliteError(db_path(db), std::move(what), rc);
}

}  // namespace detail

// ---- Connection ------------------------------------------------------------------------

Connection::Connection(sqlite3* db, std::string path, OpenMode mode)
    : db_(db), path_(std::move(path)), mode_(mode) {}

Connection Connection::open_handle(const std::string& path, OpenMode mode, int flags,
                                   const Options& options) {
  const std::string name = mode == OpenMode::Memory ? ":memory:" : path;
  sqlite3* raw = nullptr;
  // NOMUTEX: a connection is used by one thread at a time, so SQLite's own lock is waste.
  const int rc = sqlite3_open_v2(name.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  // SQLite hands back a handle even when the open fails; the Connection closes it.
  Connection connection(raw, name, mode);
  try {
    detail::check(rc, raw, "sqlite3_open_v2", {}, __FILE__, __LINE__);
  } catch (const SqliteError& e) {
    // The handle of a failed open does not know its file: name it here.
    throw SqliteError(path, e.reason() + open_hint(path, mode), e.code());
  }
  MINAS_SQLITE(raw, "", sqlite3_extended_result_codes(raw, 1));
  const auto timeout = std::clamp<int64_t>(options.busy_timeout.count(), 0, INT_MAX);
  MINAS_SQLITE(raw, "", sqlite3_busy_timeout(raw, static_cast<int>(timeout)));
  return connection;
}

Connection Connection::open(const std::string& path, OpenMode mode, const Options& options) {
  int flags = 0;
  switch (mode) {
    case OpenMode::ReadWrite:
      flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
      break;
    case OpenMode::ReadOnly:
      flags = SQLITE_OPEN_READONLY;
      break;
    case OpenMode::Memory:
      flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY;
      break;
  }
  Connection connection = open_handle(path, mode, flags, options);
  // SQLite reads the file lazily: read the header now so a non-database fails at open.
  connection.exec("SELECT count(*) FROM sqlite_master");
  connection.exec("PRAGMA foreign_keys = ON");
  if (mode == OpenMode::ReadWrite) {
    Statement wal = connection.prepare("PRAGMA journal_mode = WAL");
    const std::string got = wal.step() ? wal.column_text(0) : "";
    // Readers must not block the writer: without WAL the store's design does not hold.
    if (got != "wal") {
      throw Error(connection.path_, "cannot use WAL journal mode (journal_mode is '" + got + "')");
    }
  }
  if (mode != OpenMode::ReadOnly) connection.set_synchronous(options.synchronous);
  return connection;
}

Connection::Connection(Connection&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)), mode_(other.mode_) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    mode_ = other.mode_;
  }
  return *this;
}

Connection::~Connection() {
  close();
}

void Connection::close() noexcept {
  if (!db_) return;
  try {
    MINAS_SQLITE(db_, "", sqlite3_close_v2(db_));
  } catch (const std::exception& e) {
    warn(e);
  }
  db_ = nullptr;
}

void Connection::exec(std::string_view sql) {
  while (!blank(sql)) {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    MINAS_SQLITE(db_, sql, sqlite3_prepare_v2(db_, sql.data(), sql_length(db_, sql), &raw, &tail));
    if (!raw) return;  // only comments were left
    Statement statement(raw);
    while (statement.step()) {
    }
    sql.remove_prefix(static_cast<size_t>(tail - sql.data()));
  }
}

Statement Connection::prepare(std::string_view sql) {
  if (blank(sql)) throw Error(path_, "prepare: no SQL statement in '" + std::string(sql) + "'");
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  MINAS_SQLITE(db_, sql, sqlite3_prepare_v2(db_, sql.data(), sql_length(db_, sql), &raw, &tail));
  if (!raw) throw Error(path_, "prepare: no SQL statement in '" + quote_sql(sql) + "'");
  Statement statement(raw);
  // Anything after the first statement would be silently ignored: refuse it instead.
  const std::string_view rest = sql.substr(static_cast<size_t>(tail - sql.data()));
  if (!blank(rest)) {
    sqlite3_stmt* extra = nullptr;
    MINAS_SQLITE(db_, rest,
                 sqlite3_prepare_v2(db_, rest.data(), sql_length(db_, rest), &extra, nullptr));
    if (extra) {
      Statement discard(extra);
      throw Error(
          path_, "prepare: more than one statement (use exec for scripts); SQL: " + quote_sql(sql));
    }
  }
  return statement;
}

int64_t Connection::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(db_);
}

int64_t Connection::changes() const {
  return sqlite3_changes64(db_);
}

void Connection::set_synchronous(Synchronous level) {
  switch (level) {
    case Synchronous::Normal:
      exec("PRAGMA synchronous = NORMAL");
      break;
    case Synchronous::Full:
      exec("PRAGMA synchronous = FULL");
      break;
    case Synchronous::Extra:
      exec("PRAGMA synchronous = EXTRA");
      break;
  }
}

bool Connection::in_transaction() const {
  return sqlite3_get_autocommit(db_) == 0;
}

// ---- Statement -------------------------------------------------------------------------

Statement::Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

// sqlite3_finalize always frees the statement; its code only repeats the last step's error,
// which step() has already reported.
Statement::~Statement() {
  sqlite3_finalize(stmt_);
}

std::string_view Statement::sql() const {
  const char* text = sqlite3_sql(stmt_);
  return text ? text : "";
}

void Statement::check_parameter(int index) const {
  const int count = sqlite3_bind_parameter_count(stmt_);
  if (index < 1 || index > count) {
    throw Error(db_path(sqlite3_db_handle(stmt_)),
                "bind: parameter " + std::to_string(index) + " out of range (the statement has " +
                    std::to_string(count) + ", numbered from 1); SQL: " + quote_sql(sql()));
  }
}

void Statement::check_parameter_count(int given) const {
  const int count = sqlite3_bind_parameter_count(stmt_);
  if (given != count) {
    throw Error(db_path(sqlite3_db_handle(stmt_)), "bind_all: " + std::to_string(given) +
                                                       " values for " + std::to_string(count) +
                                                       " parameters; SQL: " + quote_sql(sql()));
  }
}

Statement& Statement::bind_int64(int index, int64_t value) {
  check_parameter(index);
  MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bind_double(int index, double value) {
  check_parameter(index);
  MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_bind_double(stmt_, index, value));
  return *this;
}

Statement& Statement::bind_text(int index, std::string_view value) {
  check_parameter(index);
  // A null pointer would bind NULL; an empty view may have one.
  const char* data = value.data() ? value.data() : "";
  MINAS_SQLITE(
      sqlite3_db_handle(stmt_), sql(),
      sqlite3_bind_text64(stmt_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::bind_blob(int index, std::span<const std::byte> value) {
  check_parameter(index);
  // sqlite3_bind_blob binds NULL for a null pointer, which an empty span may have.
  if (value.empty()) {
    MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_bind_zeroblob(stmt_, index, 0));
  } else {
    MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(),
                 sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT));
  }
  return *this;
}

Statement& Statement::bind_null(int index) {
  check_parameter(index);
  MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_bind_null(stmt_, index));
  return *this;
}

bool Statement::step() {
  try {
    return MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_step(stmt_)) == SQLITE_ROW;
  } catch (const SqliteError&) {
    // Reset now so the statement can be reused; its code repeats the error just reported.
    sqlite3_reset(stmt_);
    throw;
  }
}

void Statement::reset() {
  MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_reset(stmt_));
}

void Statement::clear_bindings() {
  MINAS_SQLITE(sqlite3_db_handle(stmt_), sql(), sqlite3_clear_bindings(stmt_));
}

int Statement::column_count() const {
  return sqlite3_column_count(stmt_);
}

void Statement::check_column(int index) const {
  const int count = sqlite3_data_count(stmt_);  // 0 when there is no current row
  if (count == 0) {
    throw Error(
        db_path(sqlite3_db_handle(stmt_)),
        "column " + std::to_string(index) +
            " read with no current row (step() has not returned true); SQL: " + quote_sql(sql()));
  }
  if (index < 0 || index >= count) {
    throw Error(db_path(sqlite3_db_handle(stmt_)),
                "column " + std::to_string(index) + " out of range (the row has " +
                    std::to_string(count) + ", numbered from 0); SQL: " + quote_sql(sql()));
  }
}

std::string Statement::column_name(int index) const {
  const int count = column_count();
  if (index < 0 || index >= count) {
    throw Error(db_path(sqlite3_db_handle(stmt_)),
                "column " + std::to_string(index) + " out of range (the statement has " +
                    std::to_string(count) + ", numbered from 0); SQL: " + quote_sql(sql()));
  }
  const char* name = sqlite3_column_name(stmt_, index);
  if (!name) {
    detail::check(SQLITE_NOMEM, sqlite3_db_handle(stmt_), "sqlite3_column_name", sql(), __FILE__,
                  __LINE__);
  }
  return name;
}

ColumnType Statement::column_type(int index) const {
  check_column(index);
  switch (sqlite3_column_type(stmt_, index)) {
    case SQLITE_INTEGER:
      return ColumnType::Integer;
    case SQLITE_FLOAT:
      return ColumnType::Float;
    case SQLITE_TEXT:
      return ColumnType::Text;
    case SQLITE_BLOB:
      return ColumnType::Blob;
    default:
      return ColumnType::Null;
  }
}

bool Statement::is_null(int index) const {
  return column_type(index) == ColumnType::Null;
}

int64_t Statement::column_int64(int index) const {
  check_column(index);
  return sqlite3_column_int64(stmt_, index);
}

double Statement::column_double(int index) const {
  check_column(index);
  return sqlite3_column_double(stmt_, index);
}

std::string Statement::column_text(int index) const {
  check_column(index);
  // Pointer first, then size: the documented order that makes the size match the text.
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (text) return std::string(text, static_cast<size_t>(size));
  // A null pointer is a NULL value, or an allocation that failed while converting.
  sqlite3* db = sqlite3_db_handle(stmt_);
  if (sqlite3_errcode(db) == SQLITE_NOMEM) {
    detail::check(SQLITE_NOMEM, db, "sqlite3_column_text", sql(), __FILE__, __LINE__);
  }
  return {};
}

std::vector<std::byte> Statement::column_blob(int index) const {
  check_column(index);
  const auto* data = static_cast<const std::byte*>(sqlite3_column_blob(stmt_, index));
  const int size = sqlite3_column_bytes(stmt_, index);
  if (data) return std::vector<std::byte>(data, data + size);
  sqlite3* db = sqlite3_db_handle(stmt_);
  if (sqlite3_errcode(db) == SQLITE_NOMEM) {
    detail::check(SQLITE_NOMEM, db, "sqlite3_column_blob", sql(), __FILE__, __LINE__);
  }
  return {};
}

// ---- Transaction -----------------------------------------------------------------------

Transaction::Transaction(Connection& connection) : connection_(connection) {
  connection_.exec("BEGIN IMMEDIATE");
}

void Transaction::commit() {
  connection_.exec("COMMIT");
  done_ = true;
}

Transaction::~Transaction() {
  // Some errors (a full disk, an I/O error) roll back by themselves: then there is none left.
  if (done_ || !connection_.in_transaction()) return;
  try {
    connection_.exec("ROLLBACK");
  } catch (const std::exception& e) {
    warn(e);
  }
}

// ---- Repair after a killed writer ------------------------------------------------------

bool needs_writer_repair(const SqliteError& e) {
  return e.code() == SQLITE_READONLY_RECOVERY || e.code() == SQLITE_READONLY_ROLLBACK;
}

void repair_interrupted_write(const std::string& path, const Options& options) {
  // Not Connection::open: that switches the file to WAL, and the file is not yet known to
  // be one this build may change. No CREATE: the file must exist.
  Connection connection =
      Connection::open_handle(path, OpenMode::ReadWrite, SQLITE_OPEN_READWRITE, options);
  // The first read takes a shared lock, and with it SQLite finishes what the killed writer
  // left: it plays a hot journal back, or rebuilds the WAL index.
  connection.exec("SELECT count(*) FROM sqlite_master");
}

// ---- Pragmas ---------------------------------------------------------------------------

std::string integrity_check(Connection& connection) {
  Statement check = connection.prepare("PRAGMA integrity_check");
  std::string result;
  while (check.step()) {
    if (!result.empty()) result += '\n';
    result += check.column_text(0);
  }
  return result;
}

int32_t user_version(Connection& connection) {
  Statement pragma = connection.prepare("PRAGMA user_version");
  pragma.step();
  return static_cast<int32_t>(pragma.column_int64(0));
}

void set_user_version(Connection& connection, int32_t version) {
  // PRAGMA takes no bound parameters; an integer formatted here cannot inject anything.
  connection.exec("PRAGMA user_version = " + std::to_string(version));
}

}  // namespace minas::db
