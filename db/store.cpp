#include "db/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <type_traits>
#include <utility>

#include "db/schema.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"

namespace minas::db {
namespace {

constexpr std::string_view kExperimentStatuses[] = {"created", "running", "stopped", "finished",
                                                    "failed"};

// Error messages list at most this many names.
constexpr size_t kMaxListed = 20;

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  if (names.size() > kMaxListed) {
    out += ", and " + std::to_string(names.size() - kMaxListed) + " more";
  }
  return out;
}

std::string hex32(int32_t value) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(value));
  return buf;
}

// Runs a statement to completion, discarding any rows.
void run(Statement& statement) {
  Rewind rewind(statement);
  while (statement.step()) {
  }
}

// Steps a statement that yields at most one row, hands that row to `read`, and rewinds it.
template <class F>
bool read_row(Statement& statement, F&& read) {
  Rewind rewind(statement);
  if (!statement.step()) return false;
  read(statement);
  return true;
}

int64_t scalar(Connection& connection, std::string_view sql) {
  Statement statement = connection.prepare(sql);
  int64_t value = 0;
  read_row(statement, [&](const Statement& row) { value = row.column_int64(0); });
  return value;
}

// What the file says it is: enough to tell a minas store, an empty database and anything else.
struct Header {
  int32_t application_id = 0;
  int32_t version = 0;
  int64_t objects = 0;              // tables, indexes, views and triggers
  std::vector<std::string> tables;  // their names, for the error message
};

Header read_header(Connection& connection) {
  Header header;
  header.application_id = static_cast<int32_t>(scalar(connection, "PRAGMA application_id"));
  header.version = user_version(connection);
  Statement objects = connection.prepare("SELECT type, name FROM sqlite_master ORDER BY name");
  while (objects.step()) {
    ++header.objects;
    if (objects.column_text(0) == "table") header.tables.push_back(objects.column_text(1));
  }
  return header;
}

// Throws unless `header` is a store this build may open in `mode`: a minas store of a version
// it knows (exactly the current one for ReadOnly), or for ReadWrite an empty database.
void check_header(const Header& header, const std::string& path, OpenMode mode) {
  const int current = current_schema_version();
  if (header.application_id != kApplicationId) {
    if (header.application_id != 0) {
      throw Error(path, "not a minas store: its application_id is " + hex32(header.application_id) +
                            ", a minas store's is " + hex32(kApplicationId) + " ('mnas')");
    }
    if (header.objects > 0 || header.version != 0) {
      throw Error(path, "not a minas store: an SQLite database of another application (" +
                            (header.tables.empty() ? std::string("no tables")
                                                   : "tables: " + join(header.tables)) +
                            "; user_version " + std::to_string(header.version) + ")");
    }
    if (mode == OpenMode::ReadOnly) {
      throw Error(path, "not a minas store: an empty database (a read-write open makes it one)");
    }
    return;  // empty: a read-write open makes it a store
  }
  if (header.version > current) {
    throw Error(path, "store version " + std::to_string(header.version) +
                          " is newer than this minas, which reads up to " +
                          std::to_string(current) + ": upgrade minas");
  }
  if (mode == OpenMode::ReadOnly && header.version < current) {
    throw Error(path, "store version " + std::to_string(header.version) +
                          " needs migrating to version " + std::to_string(current) +
                          " by a read-write open (a read-only open never changes the file)");
  }
}

// Connection::open, with a file that is not a database named as not a store.
Connection open_connection(const std::string& path, OpenMode mode, const Options& options) {
  try {
    return Connection::open(path, mode, options);
  } catch (const SqliteError& e) {
    if ((e.code() & 0xff) != SQLITE_NOTADB) throw;
    throw SqliteError(path, "not a minas store (not an SQLite database): " + e.reason(), e.code());
  }
}

// Runs the migrations from the store's version up to the current one, each in its own
// transaction that also advances user_version. Returns the version reached.
int migrate(Connection& connection) {
  const int current = current_schema_version();
  Header header = read_header(connection);
  check_header(header, connection.path(), connection.mode());
  while (header.version < current) {
    Transaction transaction(connection);
    // Again under the write lock: another process may have migrated it meanwhile.
    header = read_header(connection);
    check_header(header, connection.path(), connection.mode());
    if (header.version >= current) break;
    const Migration& migration = migrations()[static_cast<size_t>(header.version)];
    if (migration.to_version != header.version + 1) {
      throw Error(connection.path(), "schema: migration " + std::to_string(header.version) +
                                         " leads to version " +
                                         std::to_string(migration.to_version) + ", not " +
                                         std::to_string(header.version + 1));
    }
    try {
      // PRAGMA application_id is written in this transaction: a new file becomes a store
      // together with its first tables, or not at all.
      if (header.application_id == 0) {
        connection.exec("PRAGMA application_id = " + std::to_string(kApplicationId));
      }
      connection.exec(migration.sql);
      set_user_version(connection, migration.to_version);
      transaction.commit();
    } catch (const SqliteError& e) {
      throw SqliteError(e.where(),
                        "migrating the store to version " + std::to_string(migration.to_version) +
                            " (" + std::string(migration.description) +
                            ") failed, so it stays at version " + std::to_string(header.version) +
                            ": " + e.reason(),
                        e.code());
    }
    header.version = migration.to_version;
    header.application_id = kApplicationId;
  }
  return header.version;
}

// A JSON column read back: bounded like any JSON from outside the process (a
// store is a file anyone may have written), refused with the place named.
nlohmann::json parse_json(const std::string& text, const std::string& where) {
  return read_json(text, where);
}

constexpr std::string_view kSelectExperiments =
    "SELECT id, name, space, space_json, dataset, dataset_fingerprint, strategy, "
    "strategy_settings, recipe, recipe_hash, objective, status, created_at, started_at, "
    "finished_at, seconds_run FROM experiments";

std::optional<double> optional_double(const Statement& row, int column) {
  if (row.is_null(column)) return std::nullopt;
  return row.column_double(column);
}

Experiment read_experiment(const Statement& row, const std::string& path) {
  Experiment e;
  e.id = row.column_int64(0);
  e.name = row.column_text(1);
  e.space = row.column_text(2);
  e.dataset = row.column_text(4);
  e.dataset_fingerprint = row.column_text(5);
  e.strategy = row.column_text(6);
  e.recipe_hash = row.column_text(9);
  e.objective = row.column_text(10);
  e.status = row.column_text(11);
  e.created_at = row.column_double(12);
  e.started_at = optional_double(row, 13);
  e.finished_at = optional_double(row, 14);
  e.seconds_run = row.column_double(15);
  const std::pair<int, nlohmann::json*> documents[] = {
      {3, &e.space_json}, {7, &e.strategy_settings}, {8, &e.recipe}};
  for (const auto& [column, target] : documents)
    *target = parse_json(row.column_text(column), path + ": experiment '" +
                                                      printable_excerpt(e.name, 60) + "', its " +
                                                      row.column_name(column));
  return e;
}

}  // namespace

std::string recipe_hash(const nlohmann::json& recipe) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(recipe.dump())));
  return hex;
}

// ---- Store -----------------------------------------------------------------------------

Store Store::open(const std::string& path, OpenMode mode, const Options& options) {
  if (mode == OpenMode::ReadWrite) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const bool exists = fs::exists(path, ec);
    // SQLite would quietly open a file it cannot write read-only and fail at the first write.
    if (exists && ::access(path.c_str(), W_OK) != 0) {
      throw Error(path,
                  "the file is not writable: a read-write open needs write permission "
                  "(queries open the store read-only)");
    }
    // A read-write connection switches the file to WAL at once: look at it read-only first,
    // so that a file this build must refuse is left exactly as it was.
    if (exists && fs::file_size(path, ec) > 0 && !ec) {
      auto look = [&] {
        Connection connection = open_connection(path, OpenMode::ReadOnly, options);
        check_header(read_header(connection), path, mode);
      };
      try {
        look();
      } catch (const SqliteError& e) {
        // A writer killed mid-write leaves a hot journal to play back or a WAL index to
        // rebuild, which only a read-write connection can do. Doing only that (any SQLite
        // client would, at its first read) returns the file to its last commit and changes
        // nothing else; then the look decides.
        if (!needs_writer_repair(e)) throw;
        repair_interrupted_write(path, options);
        look();
      }
    }
  }
  Connection connection = open_connection(path, mode, options);
  if (mode == OpenMode::ReadOnly) {
    const Header header = read_header(connection);
    check_header(header, path, mode);
    return Store(std::move(connection), header.version);
  }
  const int version = migrate(connection);
  return Store(std::move(connection), version);
}

Store::Store(Store&& other) noexcept
    : connection_(std::move(other.connection_)),
      version_(other.version_),
      writer_(std::exchange(other.writer_, nullptr)) {
  if (writer_) writer_->store_ = this;
}

Store& Store::operator=(Store&& other) noexcept {
  if (this != &other) {
    if (writer_) writer_->detach();
    connection_ = std::move(other.connection_);
    version_ = other.version_;
    writer_ = std::exchange(other.writer_, nullptr);
    if (writer_) writer_->store_ = this;
  }
  return *this;
}

Store::~Store() {
  if (writer_) writer_->detach();
}

void Store::require_writable(std::string_view call) const {
  if (mode() == OpenMode::ReadOnly) {
    throw Error(path(), std::string(call) +
                            ": the store is open read-only; writing needs a read-write open");
  }
}

void Store::require_experiment(std::string_view call, int64_t experiment) {
  Statement find = connection_.prepare("SELECT 1 FROM experiments WHERE id = ?");
  find.bind_all(experiment);
  if (!read_row(find, [](const Statement&) {})) {
    throw Error(path(),
                std::string(call) + ": no experiment with id " + std::to_string(experiment));
  }
}

template <class F>
auto Store::write(std::string_view call, F&& body) {
  require_writable(call);
  const bool in_batch = writer_ && writer_->open_;
  try {
    if constexpr (std::is_void_v<decltype(body())>) {
      body();
      if (in_batch) ++writer_->pending_;
    } else {
      auto result = body();
      if (in_batch) ++writer_->pending_;
      return result;
    }
  } catch (const SqliteError& e) {
    if (!in_batch) throw SqliteError(e.where(), std::string(call) + ": " + e.reason(), e.code());
    const size_t lost = writer_->pending_;
    writer_->abandon();
    throw SqliteError(e.where(),
                      std::string(call) + ": " + e.reason() +
                          "; it ran inside the Writer's open batch, so the batch of " +
                          std::to_string(lost) + " write(s) since the last commit was rolled back",
                      e.code());
  }
}

int64_t Store::create_experiment(const ExperimentSpec& spec, double now) {
  require_writable("create_experiment");
  if (spec.name.empty()) throw Error(path(), "create_experiment: the experiment name is empty");
  if (find_experiment(spec.name)) {
    throw Error(path(), "create_experiment: an experiment named '" + spec.name +
                            "' already exists; choose another name");
  }
  Statement insert = connection_.prepare(
      "INSERT INTO experiments (name, space, space_json, dataset, dataset_fingerprint, strategy, "
      "strategy_settings, recipe, recipe_hash, objective, status, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'created', ?)");
  insert.bind_all(spec.name, spec.space, spec.space_json.dump(), spec.dataset,
                  spec.dataset_fingerprint, spec.strategy, spec.strategy_settings.dump(),
                  spec.recipe.dump(), recipe_hash(spec.recipe), spec.objective, now);
  return write("create_experiment", [&] {
    run(insert);
    return connection_.last_insert_rowid();
  });
}

std::optional<Experiment> Store::find_experiment(std::string_view name) {
  Statement select = connection_.prepare(std::string(kSelectExperiments) + " WHERE name = ?");
  select.bind_all(name);
  std::optional<Experiment> found;
  read_row(select, [&](const Statement& row) { found = read_experiment(row, path()); });
  return found;
}

Experiment Store::experiment(std::string_view name) {
  if (std::optional<Experiment> found = find_experiment(name)) return std::move(*found);
  std::vector<std::string> names;
  Statement select = connection_.prepare("SELECT name FROM experiments ORDER BY id");
  while (select.step()) names.push_back(select.column_text(0));
  throw Error(path(), "no experiment '" + std::string(name) + "' (" +
                          (names.empty() ? std::string("the store has no experiments yet")
                                         : "experiments: " + join(names)) +
                          ")");
}

std::vector<Experiment> Store::experiments() {
  Statement select = connection_.prepare(std::string(kSelectExperiments) + " ORDER BY id");
  std::vector<Experiment> list;
  while (select.step()) list.push_back(read_experiment(select, path()));
  return list;
}

void Store::set_experiment_status(int64_t id, std::string_view status, double at) {
  require_writable("set_experiment_status");
  if (std::find(std::begin(kExperimentStatuses), std::end(kExperimentStatuses), status) ==
      std::end(kExperimentStatuses)) {
    throw Error(path(), "set_experiment_status: unknown status '" + std::string(status) +
                            "' (created, running, stopped, finished or failed)");
  }
  require_experiment("set_experiment_status", id);
  Statement update = connection_.prepare(
      "UPDATE experiments SET status = ?1, "
      "started_at = CASE WHEN ?1 = 'running' THEN coalesce(started_at, ?2) ELSE started_at END, "
      "finished_at = CASE WHEN ?1 = 'running' THEN NULL "
      "WHEN ?1 IN ('stopped', 'finished', 'failed') THEN ?2 ELSE finished_at END "
      "WHERE id = ?3");
  update.bind_all(status, at, id);
  write("set_experiment_status", [&] { run(update); });
}

void Store::set_experiment_budget(int64_t id, int64_t trials, std::optional<double> seconds,
                                  double run_started_at) {
  require_writable("set_experiment_budget");
  require_experiment("set_experiment_budget", id);
  Statement update = connection_.prepare(
      "UPDATE experiments SET budget_trials = ?1, budget_seconds = ?2, run_started_at = ?3 "
      "WHERE id = ?4");
  update.bind_int64(1, trials).bind_int64(4, id).bind_double(3, run_started_at);
  if (seconds)
    update.bind_double(2, *seconds);
  else
    update.bind_null(2);
  write("set_experiment_budget", [&] { run(update); });
}

void Store::add_seconds_run(int64_t id, double seconds) {
  require_writable("add_seconds_run");
  require_experiment("add_seconds_run", id);
  if (!(seconds >= 0)) throw Error(path(), "add_seconds_run: seconds must be >= 0");
  Statement update =
      connection_.prepare("UPDATE experiments SET seconds_run = seconds_run + ?1 WHERE id = ?2");
  update.bind_all(seconds, id);
  write("add_seconds_run", [&] { run(update); });
}

int64_t Store::upsert_worker(std::string_view name, std::string_view host,
                             const nlohmann::json& devices, double seen_at, std::string_view pool,
                             const nlohmann::json& tags) {
  require_writable("upsert_worker");
  if (name.empty()) throw Error(path(), "upsert_worker: the worker name is empty");
  Statement upsert = connection_.prepare(
      "INSERT INTO workers (name, host, devices, first_seen, last_seen, pool, tags) VALUES (?1, "
      "?2, ?3, ?4, ?4, ?5, ?6) "
      "ON CONFLICT (name) DO UPDATE SET host = excluded.host, devices = excluded.devices, "
      "last_seen = max(last_seen, excluded.last_seen), pool = excluded.pool, tags = excluded.tags "
      "RETURNING id");
  upsert.bind_all(name, host, devices.dump(), seen_at, pool, tags.dump());
  return write("upsert_worker", [&] {
    int64_t id = 0;
    Rewind rewind(upsert);
    while (upsert.step()) id = upsert.column_int64(0);
    return id;
  });
}

void Store::save_strategy_state(int64_t experiment, const nlohmann::json& state, double at) {
  require_writable("save_strategy_state");
  require_experiment("save_strategy_state", experiment);
  Statement upsert = connection_.prepare(
      "INSERT INTO strategy_state (experiment_id, state, updated_at) VALUES (?, ?, ?) "
      "ON CONFLICT (experiment_id) DO UPDATE SET state = excluded.state, "
      "updated_at = excluded.updated_at");
  upsert.bind_all(experiment, state.dump(), at);
  write("save_strategy_state", [&] { run(upsert); });
}

void Store::add_strategy_snapshot(int64_t experiment, int64_t results, const nlohmann::json& state,
                                  double at) {
  require_writable("add_strategy_snapshot");
  require_experiment("add_strategy_snapshot", experiment);
  Statement insert = connection_.prepare(
      "INSERT OR REPLACE INTO strategy_snapshots (experiment_id, results, at, state) "
      "VALUES (?, ?, ?, ?)");
  insert.bind_all(experiment, results, at, state.dump());
  write("add_strategy_snapshot", [&] { run(insert); });
}

void Store::add_pool_sample(int64_t experiment, double at, int workers, int slots, int busy,
                            int64_t queued) {
  require_writable("add_pool_sample");
  require_experiment("add_pool_sample", experiment);
  Statement insert = connection_.prepare(
      "INSERT OR REPLACE INTO pool_samples (experiment_id, at, workers, slots, busy, queued) "
      "VALUES (?, ?, ?, ?, ?, ?)");
  insert.bind_all(experiment, at, workers, slots, busy, queued);
  write("add_pool_sample", [&] { run(insert); });
}

std::optional<nlohmann::json> Store::strategy_state(int64_t experiment) {
  Statement select =
      connection_.prepare("SELECT state FROM strategy_state WHERE experiment_id = ?");
  select.bind_all(experiment);
  std::optional<std::string> text;
  read_row(select, [&](const Statement& row) { text = row.column_text(0); });
  if (!text) return std::nullopt;
  return parse_json(*text,
                    path() + ": the strategy state of experiment " + std::to_string(experiment));
}

int64_t Store::add_data_report(const DataReport& r) {
  require_writable("add_data_report");
  if (r.experiment.empty() || r.location.empty())
    throw Error(path(), "add_data_report: a data report needs an experiment name and a location");
  Statement insert = connection_.prepare(
      "INSERT INTO data_reports (experiment, location, usable, fingerprint, report, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?)");
  insert.bind_all(r.experiment, r.location, int64_t{r.usable ? 1 : 0}, r.fingerprint.dump(),
                  r.report.dump(), r.created_at);
  return write("add_data_report", [&] {
    run(insert);
    return connection_.last_insert_rowid();
  });
}

std::vector<DataReport> Store::data_reports() {
  Statement select = connection_.prepare(
      "SELECT id, experiment, location, usable, fingerprint, report, created_at "
      "FROM data_reports ORDER BY id");
  std::vector<DataReport> out;
  Rewind rewind(select);
  while (select.step()) {
    DataReport r;
    r.id = select.column_int64(0);
    r.experiment = select.column_text(1);
    r.location = select.column_text(2);
    r.usable = select.column_int64(3) != 0;
    const std::string where = path() + ": data report " + std::to_string(r.id);
    r.fingerprint = parse_json(select.column_text(4), where + ", its fingerprint");
    r.report = parse_json(select.column_text(5), where + ", its report");
    r.created_at = select.column_double(6);
    out.push_back(std::move(r));
  }
  return out;
}

int64_t Store::add_latency_measurement(const LatencyMeasurement& m) {
  require_writable("add_latency_measurement");
  if (m.target.empty() || m.host.empty() || m.space_ref.empty() || m.arch_key.empty() ||
      m.experiment.empty())
    throw Error(path(),
                "add_latency_measurement: a measurement needs a target, host, space, "
                "architecture and experiment");
  if (!(m.measured_ms > 0) || !std::isfinite(m.measured_ms))
    throw Error(path(), "add_latency_measurement: the measurement must be a positive number of ms");
  Statement insert = connection_.prepare(
      "INSERT INTO latency_measurements (target, host, space_ref, arch_key, measured_ms, "
      "predicted_ms, experiment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  insert.bind_all(m.target, m.host, m.space_ref, m.arch_key, m.measured_ms, m.predicted_ms,
                  m.experiment, m.created_at);
  return write("add_latency_measurement", [&] {
    run(insert);
    return connection_.last_insert_rowid();
  });
}

std::vector<LatencyMeasurement> Store::latency_measurements(std::string_view target,
                                                            std::string_view host) {
  Statement select = connection_.prepare(
      "SELECT id, target, host, space_ref, arch_key, measured_ms, predicted_ms, experiment, "
      "created_at FROM latency_measurements WHERE target = ? AND host = ? ORDER BY id");
  select.bind_all(target, host);
  std::vector<LatencyMeasurement> out;
  Rewind rewind(select);
  while (select.step()) {
    LatencyMeasurement m;
    m.id = select.column_int64(0);
    m.target = select.column_text(1);
    m.host = select.column_text(2);
    m.space_ref = select.column_text(3);
    m.arch_key = select.column_text(4);
    m.measured_ms = select.column_double(5);
    m.predicted_ms = optional_double(select, 6);
    m.experiment = select.column_text(7);
    m.created_at = select.column_double(8);
    out.push_back(std::move(m));
  }
  return out;
}

int64_t Store::add_artifact(int64_t experiment, std::optional<int64_t> trial, std::string_view kind,
                            std::string_view path, std::string_view checksum, int64_t bytes,
                            double at) {
  require_writable("add_artifact");
  if (kind.empty() || path.empty()) {
    throw Error(this->path(), "add_artifact: an artifact needs a kind and a path");
  }
  if (bytes < 0) {
    throw Error(this->path(), "add_artifact: " + std::string(path) + " has a negative size (" +
                                  std::to_string(bytes) + " bytes)");
  }
  require_experiment("add_artifact", experiment);
  if (trial) {
    Statement owner = connection_.prepare("SELECT experiment_id FROM trials WHERE id = ?");
    owner.bind_all(*trial);
    std::optional<int64_t> owner_id;
    read_row(owner, [&](const Statement& row) { owner_id = row.column_int64(0); });
    if (owner_id != experiment) {
      throw Error(
          this->path(),
          "add_artifact: " +
              (owner_id ? "trial " + std::to_string(*trial) + " belongs to experiment " +
                              std::to_string(*owner_id) + ", not " + std::to_string(experiment)
                        : "no trial with id " + std::to_string(*trial)));
    }
  }
  Statement insert = connection_.prepare(
      "INSERT INTO artifacts (experiment_id, trial_id, kind, path, checksum, bytes, created_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?)");
  insert.bind_all(experiment, trial, kind, path, checksum, bytes, at);
  return write("add_artifact", [&] {
    run(insert);
    return connection_.last_insert_rowid();
  });
}

// ---- Writer ----------------------------------------------------------------------------

namespace {

Connection& writer_connection(Store& store, const Writer* attached) {
  if (store.mode() == OpenMode::ReadOnly) {
    throw Error(store.path(),
                "Writer: the store is open read-only; writing needs a read-write open");
  }
  if (attached) throw Error(store.path(), "Writer: the store already has a Writer (one at a time)");
  return store.connection();
}

}  // namespace

Writer::Writer(Store& store)
    : store_(&store),
      begin_(writer_connection(store, store.writer_).prepare("BEGIN IMMEDIATE")),
      commit_(store.connection().prepare("COMMIT")),
      rollback_(store.connection().prepare("ROLLBACK")),
      next_number_(
          store.connection().prepare("SELECT EXISTS (SELECT 1 FROM experiments WHERE id = ?1), "
                                     "(SELECT max(number) FROM trials WHERE experiment_id = ?1)")),
      trial_state_(store.connection().prepare("SELECT status, attempt FROM trials WHERE id = ?")),
      worker_exists_(store.connection().prepare("SELECT 1 FROM workers WHERE id = ?")),
      insert_trial_(store.connection().prepare(
          "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, parent_id, "
          "mutation, fidelity, status, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)")),
      start_trial_(store.connection().prepare(
          "UPDATE trials SET status = 'running', attempt = ?1, worker_id = ?2, device = ?3, "
          "started_at = ?4 WHERE id = ?5 AND status = 'queued' AND attempt <= ?1")),
      record_result_(store.connection().prepare(
          "UPDATE trials SET status = 'done', val_acc = ?, test_acc = ?, latency_ms = ?, "
          "params = ?, macs = ?, train_seconds = ?, finished_at = ? "
          "WHERE id = ? AND attempt = ? AND status = 'running'")),
      // Idempotent: a report sent again (a worker resends what is unacknowledged at each
      // reconnect) adds no row, neither for a late result kept already nor for the result
      // that counted.
      late_result_(store.connection().prepare(
          "INSERT INTO late_results (trial_id, attempt, received_at, val_acc, worker_id) "
          "SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM late_results WHERE "
          "trial_id = ?1 AND attempt = ?2 AND val_acc IS ?4 AND worker_id IS ?5) "
          "AND NOT EXISTS (SELECT 1 FROM trials WHERE id = ?1 AND attempt = ?2 AND "
          "status = 'done' AND val_acc IS ?4 AND worker_id IS ?5)")),
      // INSERT ... SELECT ... WHERE EXISTS: an unknown trial inserts nothing (and is reported)
      // instead of failing the foreign key, which would cost the whole batch.
      record_epoch_(store.connection().prepare(
          "INSERT OR REPLACE INTO epochs "
          "(trial_id, attempt, epoch, train_loss, train_acc, val_acc, lr, seconds) "
          "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM trials WHERE id = "
          "?1)")),
      record_sub_epoch_(store.connection().prepare(
          "INSERT OR REPLACE INTO sub_epochs "
          "(trial_id, attempt, at, train_loss, train_acc, val_acc, lr, seconds) "
          "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM trials WHERE id = "
          "?1)")),
      record_failure_(store.connection().prepare(
          "UPDATE trials SET status = 'failed', error = ?, finished_at = ? "
          "WHERE id = ? AND attempt = ? AND status IN ('queued', 'running')")),
      requeue_(store.connection().prepare(
          "UPDATE trials SET status = 'queued', attempt = ?1, worker_id = NULL, device = NULL, "
          "queued_at = ?2, started_at = NULL, finished_at = NULL "
          "WHERE id = ?3 AND attempt < ?1 AND status IN ('queued', 'running', 'failed')")),
      mark_pruned_(
          store.connection().prepare("UPDATE trials SET status = 'pruned', finished_at = ? "
                                     "WHERE id = ? AND attempt = ? AND status = 'running'")),
      worker_seen_(store.connection().prepare(
          "UPDATE workers SET last_seen = max(last_seen, ?), "
          "connected_seconds = connected_seconds + ?, busy_seconds = busy_seconds + ? "
          "WHERE id = ?")),
      record_latency_(store.connection().prepare(
          "UPDATE trials SET latency_ms = ?1, params = coalesce(?2, params), "
          "macs = coalesce(?3, macs) WHERE id = ?4 AND status = 'queued'")),
      record_screen_score_(store.connection().prepare(
          "INSERT OR IGNORE INTO screening_scores (experiment_id, arch_key, evaluator, score, "
          "seconds, error, worker_id, at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 "
          "WHERE EXISTS (SELECT 1 FROM experiments WHERE id = ?1)")) {
  store.writer_ = this;
}

Writer::~Writer() {
  if (!store_) return;
  abandon();
  store_->writer_ = nullptr;
}

void Writer::detach() noexcept {
  abandon();
  store_ = nullptr;
}

Error Writer::error(std::string_view call, const std::string& what) const {
  return Error(store_ ? store_->path() : std::string(), std::string(call) + ": " + what);
}

void Writer::begin(std::string_view call) {
  if (!store_) throw Error("", std::string(call) + ": the Writer's store was closed");
  Connection& connection = store_->connection_;
  if (open_) {
    if (connection.in_transaction()) return;
    // Someone ran COMMIT or ROLLBACK on the connection: what followed would not be one batch.
    const size_t lost = pending_;
    open_ = false;
    pending_ = 0;
    next_numbers_.clear();
    throw error(call, "the Writer's transaction was ended outside the Writer, so its " +
                          std::to_string(lost) + " pending write(s) may or may not have landed");
  }
  run(begin_);
  open_ = true;
}

template <class F>
auto Writer::guarded(std::string_view call, F&& body) {
  begin(call);
  try {
    return body();
  } catch (const SqliteError& e) {
    const size_t lost = pending_;
    abandon();
    throw SqliteError(e.where(),
                      std::string(call) + ": " + e.reason() + "; the batch of " +
                          std::to_string(lost) + " write(s) since the last commit was rolled back",
                      e.code());
  }
}

void Writer::abandon() noexcept {
  // Some failures (a full disk, an I/O error) have already rolled the transaction back.
  if (open_ && store_ && store_->connection_.in_transaction()) {
    try {
      run(rollback_);
    } catch (const std::exception& e) {
      std::cerr << "warning: " << e.what() << '\n';
    }
  }
  open_ = false;
  pending_ = 0;
  next_numbers_.clear();
}

void Writer::commit() {
  if (!open_) return;
  begin("commit");  // throws if the transaction was ended behind the Writer's back
  try {
    run(commit_);
  } catch (const SqliteError& e) {
    const size_t lost = pending_;
    abandon();
    throw SqliteError(e.where(),
                      "commit: " + e.reason() + "; the batch of " + std::to_string(lost) +
                          " write(s) since the last commit was rolled back",
                      e.code());
  }
  open_ = false;
  pending_ = 0;
}

void Writer::rollback() {
  if (!open_) return;
  const bool in_transaction = store_ && store_->connection_.in_transaction();
  open_ = false;
  pending_ = 0;
  next_numbers_.clear();
  if (in_transaction) run(rollback_);
}

int64_t Writer::next_number(int64_t experiment) {
  if (const auto it = next_numbers_.find(experiment); it != next_numbers_.end()) return it->second;
  next_number_.bind_all(experiment);
  bool exists = false;
  std::optional<int64_t> max;
  read_row(next_number_, [&](const Statement& row) {
    exists = row.column_int64(0) != 0;
    if (!row.is_null(1)) max = row.column_int64(1);
  });
  if (!exists) throw error("add_trial", "no experiment with id " + std::to_string(experiment));
  const int64_t next = max ? *max + 1 : 0;
  next_numbers_.emplace(experiment, next);
  return next;
}

std::optional<Writer::TrialState> Writer::trial_state(int64_t trial) {
  trial_state_.bind_all(trial);
  std::optional<TrialState> state;
  read_row(trial_state_, [&](const Statement& row) {
    state = TrialState{row.column_text(0), row.column_int64(1)};
  });
  return state;
}

Writer::TrialState Writer::existing_trial(std::string_view call, int64_t trial) {
  std::optional<TrialState> state = trial_state(trial);
  if (!state) throw error(call, "no trial with id " + std::to_string(trial));
  return std::move(*state);
}

int64_t Writer::add_trial(const NewTrial& trial) {
  return guarded("add_trial", [&] {
    const int64_t number = next_number(trial.experiment_id);
    if (trial.parent_id && !trial_state(*trial.parent_id)) {
      throw error("add_trial",
                  "the parent trial " + std::to_string(*trial.parent_id) + " does not exist");
    }
    insert_trial_.bind_all(trial.experiment_id, number, trial.arch_key, trial.arch_hash,
                           trial.arch_json, trial.parent_id, trial.mutation, trial.fidelity,
                           trial.queued_at);
    run(insert_trial_);
    const int64_t id = store_->connection_.last_insert_rowid();
    next_numbers_[trial.experiment_id] = number + 1;
    ++pending_;
    return id;
  });
}

void Writer::start_trial(int64_t trial, int attempt, std::optional<int64_t> worker,
                         std::string_view device, double at) {
  guarded("start_trial", [&] {
    if (worker) {
      worker_exists_.bind_all(*worker);
      if (!read_row(worker_exists_, [](const Statement&) {})) {
        throw error("start_trial", "no worker with id " + std::to_string(*worker));
      }
    }
    start_trial_.bind_all(attempt, worker, device, at, trial);
    run(start_trial_);
    if (store_->connection_.changes() == 0) {
      const TrialState state = existing_trial("start_trial", trial);
      throw error("start_trial", "trial " + std::to_string(trial) + " cannot start attempt " +
                                     std::to_string(attempt) + ": it is " + state.status +
                                     " at attempt " + std::to_string(state.attempt) +
                                     " (a queued trial starts at its attempt or a later one)");
    }
    ++pending_;
  });
}

bool Writer::record_result(const TrialResult& result) {
  return guarded("record_result", [&] {
    record_result_.bind_all(result.val_acc, result.test_acc, result.latency_ms, result.params,
                            result.macs, result.train_seconds, result.finished_at, result.trial_id,
                            result.attempt);
    run(record_result_);
    if (store_->connection_.changes() == 1) {
      ++pending_;
      return true;
    }
    // The trial is past this attempt, or has it already: keep the report, count nothing.
    existing_trial("record_result", result.trial_id);
    late_result_.bind_all(result.trial_id, result.attempt, result.finished_at, result.val_acc,
                          result.worker_id);
    run(late_result_);
    ++pending_;
    return false;
  });
}

void Writer::record_epoch(const EpochMetrics& epoch) {
  guarded("record_epoch", [&] {
    if (epoch.at) {
      record_sub_epoch_.bind_all(epoch.trial_id, epoch.attempt, *epoch.at, epoch.train_loss,
                                 epoch.train_acc, epoch.val_acc, epoch.lr, epoch.seconds);
      run(record_sub_epoch_);
    } else {
      record_epoch_.bind_all(epoch.trial_id, epoch.attempt, epoch.epoch, epoch.train_loss,
                             epoch.train_acc, epoch.val_acc, epoch.lr, epoch.seconds);
      run(record_epoch_);
    }
    if (store_->connection_.changes() == 0) {
      throw error("record_epoch", "no trial with id " + std::to_string(epoch.trial_id));
    }
    ++pending_;
  });
}

bool Writer::record_failure(int64_t trial, int attempt, std::string_view error_text, double at) {
  return guarded("record_failure", [&] {
    record_failure_.bind_all(error_text, at, trial, attempt);
    run(record_failure_);
    if (store_->connection_.changes() == 0) {
      existing_trial("record_failure", trial);
      return false;
    }
    ++pending_;
    return true;
  });
}

bool Writer::requeue(int64_t trial, int next_attempt, double at) {
  return guarded("requeue", [&] {
    requeue_.bind_all(next_attempt, at, trial);
    run(requeue_);
    if (store_->connection_.changes() == 0) {
      existing_trial("requeue", trial);
      return false;
    }
    ++pending_;
    return true;
  });
}

bool Writer::record_latency(int64_t trial, double latency_ms, std::optional<int64_t> params,
                            std::optional<int64_t> macs) {
  return guarded("record_latency", [&] {
    record_latency_.bind_double(1, latency_ms).bind_int64(4, trial);
    if (params)
      record_latency_.bind_int64(2, *params);
    else
      record_latency_.bind_null(2);
    if (macs)
      record_latency_.bind_int64(3, *macs);
    else
      record_latency_.bind_null(3);
    run(record_latency_);
    if (store_->connection_.changes() == 0) {
      existing_trial("record_latency", trial);
      return false;
    }
    ++pending_;
    return true;
  });
}

bool Writer::mark_pruned(int64_t trial, int attempt, double at) {
  return guarded("mark_pruned", [&] {
    mark_pruned_.bind_all(at, trial, attempt);
    run(mark_pruned_);
    if (store_->connection_.changes() == 0) {
      existing_trial("mark_pruned", trial);
      return false;
    }
    ++pending_;
    return true;
  });
}

void Writer::record_inheritance(int64_t trial, int64_t parent_trial, int parent_epoch,
                                int64_t tensors, int64_t params) {
  guarded("record_inheritance", [&] {
    existing_trial("record_inheritance", trial);
    existing_trial("record_inheritance", parent_trial);
    if (!record_inheritance_)
      record_inheritance_.emplace(store_->connection_.prepare(
          "INSERT OR REPLACE INTO weight_inheritance "
          "(trial_id, parent_trial_id, parent_epoch, tensors, params) VALUES (?, ?, ?, ?, ?)"));
    record_inheritance_->bind_all(trial, parent_trial, parent_epoch, tensors, params);
    run(*record_inheritance_);
    ++pending_;
  });
}

void Writer::worker_seen(int64_t worker, double at, double connected_delta, double busy_delta) {
  guarded("worker_seen", [&] {
    worker_seen_.bind_all(at, connected_delta, busy_delta, worker);
    run(worker_seen_);
    if (store_->connection_.changes() == 0) {
      throw error("worker_seen", "no worker with id " + std::to_string(worker));
    }
    ++pending_;
  });
}

bool Writer::record_screen_score(const ScreenScore& x) {
  return guarded("record_screen_score", [&] {
    Statement& s = record_screen_score_;
    s.bind_int64(1, x.experiment_id).bind_text(2, x.arch_key).bind_text(3, x.evaluator);
    if (x.score)
      s.bind_double(4, *x.score);
    else
      s.bind_null(4);
    s.bind_double(5, x.seconds);
    if (x.error.empty())
      s.bind_null(6);
    else
      s.bind_text(6, x.error);
    if (x.worker_id)
      s.bind_int64(7, *x.worker_id);
    else
      s.bind_null(7);
    s.bind_double(8, x.at);
    run(s);
    if (store_->connection_.changes() == 0) return false;
    ++pending_;
    return true;
  });
}

}  // namespace minas::db
