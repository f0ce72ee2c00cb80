// The experiment store's write side: opening, migrating and refusing files; experiments,
// workers, strategy state and artifacts; the Writer's batches, their visibility, rollback,
// idempotent results and a full disk.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/queries.h"
#include "db/schema.h"
#include "db/sqlite.h"
#include "db/store.h"
#include "searchspace/space.h"
#include "tests/support.h"

namespace {

namespace fs = std::filesystem;
using minas::Error;
using minas::db::Connection;
using minas::db::DataReport;
using minas::db::EpochMetrics;
using minas::db::Experiment;
using minas::db::ExperimentSpec;
using minas::db::kApplicationId;
using minas::db::LatencyMeasurement;
using minas::db::NewTrial;
using minas::db::OpenMode;
using minas::db::SqliteError;
using minas::db::Statement;
using minas::db::Store;
using minas::db::TrialResult;
using minas::db::Writer;
using minas::test::contains;
using nlohmann::json;

struct TempPath : minas::test::TempDbPath {
  TempPath() : TempDbPath("test-store") {}
};

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
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

bool is_null(Connection& c, std::string_view sql) {
  Statement st = c.prepare(sql);
  REQUIRE(st.step());
  return st.is_null(0);
}

// The message of the minas::Error `f` throws, which must not be a SqliteError: a refusal
// found before anything was written.
template <class F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const SqliteError& e) {
    FAIL("a SqliteError, not a refusal: " << std::string(e.what()));
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no minas::Error thrown");
  return {};
}

template <class F>
SqliteError sqlite_error(F&& f) {
  try {
    f();
  } catch (const SqliteError& e) {
    return e;
  }
  FAIL("no SqliteError thrown");
  return SqliteError("", "", 0);
}

ExperimentSpec spec(const std::string& name) {
  ExperimentSpec s;
  s.name = name;
  s.space = "nb201";
  s.space_json = {{"kind", "cell"}, {"nodes", 4}};
  s.dataset = "fashion-mnist";
  s.dataset_fingerprint = "00112233aabbccdd";
  s.strategy = "evolution";
  s.strategy_settings = {{"population", 50}, {"sample", 10}};
  s.recipe = {{"epochs", 12}, {"lr", 0.1}};
  s.objective = "val_acc";
  return s;
}

NewTrial new_trial(int64_t experiment, int i) {
  NewTrial t;
  t.experiment_id = experiment;
  t.arch_key = "arch-" + std::to_string(i);
  t.arch_hash = minas::fnv1a64(t.arch_key);
  t.arch_json = R"({"key":")" + t.arch_key + R"("})";
  t.fidelity = 12;
  t.queued_at = 100.0 + i;
  return t;
}

TrialResult result(int64_t trial, int attempt, double val_acc) {
  TrialResult r;
  r.trial_id = trial;
  r.attempt = attempt;
  r.val_acc = val_acc;
  r.test_acc = val_acc - 0.01;
  r.latency_ms = 1.5;
  r.params = 90000;
  r.macs = 12000000;
  r.train_seconds = 41.5;
  r.finished_at = 200.0;
  return r;
}

EpochMetrics epoch(int64_t trial, int attempt, int number, double val_acc) {
  return {trial,   attempt, number, 1.0 / number, 0.5 + number * 0.1,
          val_acc, 0.1,     3.0,    std::nullopt};
}

std::set<std::string> tables(Connection& c) {
  std::set<std::string> names;
  Statement st = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table'");
  while (st.step()) names.insert(st.column_text(0));
  return names;
}

// One row for every table of the schema, inserted into a store built by hand at an old
// version: whatever a migration does, these rows must survive it.
const std::vector<std::pair<std::string, std::string>>& sample_rows() {
  static const std::vector<std::pair<std::string, std::string>> rows = {
      {"experiments",
       "INSERT INTO experiments (id, name, space, space_json, dataset, dataset_fingerprint, "
       "strategy, strategy_settings, recipe, recipe_hash, objective, status, created_at) "
       "VALUES (1, 'old', 'nb201', '{}', 'fmnist', 'fp', 'random', '{}', '{}', 'h', 'val_acc', "
       "'running', 1.0)"},
      {"workers",
       "INSERT INTO workers (id, name, host, devices, first_seen, last_seen) "
       "VALUES (1, 'w1', 'node1', '[\"cpu\"]', 1.0, 2.0)"},
      {"trials",
       "INSERT INTO trials (id, experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
       "status, queued_at, worker_id, val_acc, finished_at) "
       "VALUES (1, 1, 0, 'k', -7, '{}', 12, 'done', 1.0, 1, 0.875, 3.0)"},
      {"epochs", "INSERT INTO epochs (trial_id, attempt, epoch, val_acc) VALUES (1, 0, 1, 0.5)"},
      {"strategy_state",
       "INSERT INTO strategy_state (experiment_id, state, updated_at) VALUES (1, '{\"n\":1}', 2)"},
      {"artifacts",
       "INSERT INTO artifacts (experiment_id, trial_id, kind, path, checksum, bytes, created_at) "
       "VALUES (1, 1, 'checkpoint', 'ck/1.bin', 'abc', 10, 3.0)"},
      {"late_results",
       "INSERT INTO late_results (trial_id, attempt, received_at, val_acc) VALUES (1, 0, 4, 0.1)"},
      {"data_reports",
       "INSERT INTO data_reports (experiment, location, usable, fingerprint, report, created_at) "
       "VALUES ('old', '/data/x', 1, '{}', '{}', 5.0)"},
      {"latency_measurements",
       "INSERT INTO latency_measurements (target, host, space_ref, arch_key, measured_ms, "
       "predicted_ms, experiment, created_at) VALUES ('cpu:1', 'h', 'small', 'k', 0.5, NULL, "
       "'old', 6.0)"},
      // Kept by triggers from the trials (migration 6): these statements
      // change nothing; the migration test checks the derived values.
      {"change_seq", "UPDATE change_seq SET seq = seq WHERE id = 1"},
      {"experiment_counts", "UPDATE experiment_counts SET n = n WHERE experiment_id = 1"},
      // Migration 7 derives the best-so-far curve from the trials of an older store; a store
      // of version 7 or later holds the point its trigger wrote when the sample trial became
      // done (the sample trial above is inserted done, which that trigger does not see).
      {"best_so_far",
       "INSERT OR REPLACE INTO best_so_far (experiment_id, finished, number, val_acc, "
       "finished_at) VALUES (1, 1, 0, 0.875, 3.0)"},
      {"strategy_snapshots",
       "INSERT INTO strategy_snapshots (experiment_id, results, at, state) VALUES (1, 1, 3.0, "
       "'{\"population\":[0.5]}')"},
      {"pool_samples",
       "INSERT INTO pool_samples (experiment_id, at, workers, slots, busy, queued) VALUES (1, "
       "2.5, 1, 2, 1, 0)"},
      {"sub_epochs",
       "INSERT INTO sub_epochs (trial_id, attempt, at, val_acc) VALUES (1, 0, 0.25, 0.375)"},
      {"screening_scores",
       "INSERT INTO screening_scores (experiment_id, arch_key, evaluator, score, seconds, error, "
       "worker_id, at) VALUES (1, 'k', 'synflow', 1.5, 0.01, NULL, 1, 2.0)"},
      // Migration 10: the lineage of weights.
      {"weight_inheritance",
       "INSERT INTO weight_inheritance (trial_id, parent_trial_id, parent_epoch, tensors, params) "
       "VALUES (1, 1, 12, 3, 30)"},
  };
  return rows;
}

// A store at `version` built by hand, as an older minas left it, with a row in every table.
void build_old_store(const std::string& path, int version) {
  Connection c = Connection::open(path);
  c.exec("PRAGMA application_id = " + std::to_string(kApplicationId));
  for (int i = 0; i < version; ++i) c.exec(minas::db::migrations()[i].sql);
  minas::db::set_user_version(c, version);
  const std::set<std::string> present = tables(c);
  for (const auto& [table, insert] : sample_rows()) {
    if (present.count(table)) c.exec(insert);
  }
}

}  // namespace

TEST_CASE("store: migrations are numbered 1..N in order") {
  const auto& list = minas::db::migrations();
  REQUIRE(!list.empty());
  for (size_t i = 0; i < list.size(); ++i) {
    CHECK(list[i].to_version == static_cast<int>(i) + 1);
    CHECK(!list[i].description.empty());
  }
  CHECK(minas::db::current_schema_version() == static_cast<int>(list.size()));
}

TEST_CASE("store: a new store has the current version and the minas application id") {
  TempPath tmp;
  {
    Store store = Store::open(tmp.str());
    CHECK(store.schema_version() == minas::db::current_schema_version());
    CHECK(store.path() == tmp.str());
    Connection& c = store.connection();
    CHECK(query_int(c, "PRAGMA application_id") == kApplicationId);
    CHECK(minas::db::user_version(c) == minas::db::current_schema_version());
    CHECK(query_text(c, "PRAGMA journal_mode") == "wal");
    // Every table of the schema has a sample row for the migration test below.
    std::set<std::string> sampled;
    for (const auto& row : sample_rows()) sampled.insert(row.first);
    CHECK(tables(c) == sampled);
    store.create_experiment(spec("a"), 1.0);
  }
  // Reopening migrates nothing and keeps everything.
  Store again = Store::open(tmp.str());
  CHECK(again.schema_version() == minas::db::current_schema_version());
  CHECK(again.experiments().size() == 1);
  CHECK(minas::db::integrity_check(again.connection()) == "ok");

  // An empty file is a database with nothing in it yet: it becomes a store.
  TempPath empty;
  { std::ofstream(empty.str()); }
  CHECK(Store::open(empty.str()).schema_version() == minas::db::current_schema_version());

  Store memory = Store::open("", OpenMode::Memory);
  CHECK(memory.schema_version() == minas::db::current_schema_version());
  CHECK(memory.create_experiment(spec("m"), 1.0) == 1);
}

TEST_CASE("store: a store of every earlier version migrates and keeps its rows") {
  const int current = minas::db::current_schema_version();
  for (int version = 0; version < current; ++version) {
    CAPTURE(version);
    TempPath tmp;
    build_old_store(tmp.str(), version);
    std::set<std::string> before;
    {
      Connection c = Connection::open(tmp.str(), OpenMode::ReadOnly);
      before = tables(c);
    }

    Store store = Store::open(tmp.str());
    CHECK(store.schema_version() == current);
    Connection& c = store.connection();
    CHECK(minas::db::user_version(c) == current);
    CHECK(query_int(c, "PRAGMA application_id") == kApplicationId);
    CHECK(minas::db::integrity_check(c) == "ok");
    for (const auto& [table, insert] : sample_rows()) {
      CAPTURE(table);
      if (table == "change_seq" || table == "experiment_counts" || table == "best_so_far")
        continue;  // derived, below
      CHECK(query_int(c, "SELECT count(*) FROM " + table) == (before.count(table) ? 1 : 0));
    }
    // The change cursor and the status counts, derived from the trials.
    const int64_t trials = query_int(c, "SELECT count(*) FROM trials");
    CHECK(query_int(c, "SELECT seq FROM change_seq") >= trials);
    CHECK(query_int(c, "SELECT coalesce(sum(n), 0) FROM experiment_counts") == trials);
    if (trials) CHECK(query_int(c, "SELECT min(seq) FROM trials") > 0);
    // The sample trial is done at 0.875: the curve's one point (derived by migration 7 from an
    // older store's trials; a later store holds the sample row written for it).
    CHECK(query_int(c, "SELECT count(*) FROM best_so_far") == trials);
    if (trials)
      CHECK(query_text(c, "SELECT finished || ':' || number || ':' || val_acc FROM best_so_far") ==
            "1:0:0.875");
    if (before.count("trials")) {
      const Experiment old = store.experiment("old");
      CHECK(old.status == "running");
      CHECK(query_int(c, "SELECT arch_hash FROM trials WHERE id = 1") == -7);
      // The writer carries on the old experiment's numbering.
      Writer writer(store);
      const int64_t id = writer.add_trial(new_trial(old.id, 1));
      writer.commit();
      CHECK(query_int(c, "SELECT number FROM trials WHERE id = " + std::to_string(id)) == 1);
    } else {
      const int64_t id = store.create_experiment(spec("new"), 5.0);
      Writer writer(store);
      writer.add_trial(new_trial(id, 0));
      writer.commit();
      CHECK(query_int(c, "SELECT count(*) FROM trials") == 1);
    }
  }
}

TEST_CASE("store: a migration that fails leaves the store at its previous version") {
  REQUIRE(minas::db::current_schema_version() >= 2);
  TempPath tmp;
  build_old_store(tmp.str(), 1);
  {
    // A table in the way of migration 2: it fails midway.
    Connection c = Connection::open(tmp.str());
    c.exec("CREATE TABLE artifacts (x)");
  }
  const SqliteError e = sqlite_error([&] { Store::open(tmp.str()); });
  CHECK(contains(e.what(), tmp.str()));
  CHECK(contains(e.what(), "migrating the store to version 2"));
  CHECK(contains(e.what(), "stays at version 1"));
  CHECK(contains(e.what(), "artifacts already exists"));

  Connection c = Connection::open(tmp.str(), OpenMode::ReadOnly);
  CHECK(minas::db::user_version(c) == 1);
  // strategy_state comes before artifacts in migration 2: rolled back with it.
  CHECK(tables(c).count("strategy_state") == 0);
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 1);
  CHECK(minas::db::integrity_check(c) == "ok");
}

TEST_CASE("store: a store of a newer version is refused and left unchanged") {
  TempPath tmp;
  { Store::open(tmp.str()).create_experiment(spec("a"), 1.0); }
  const int newer = minas::db::current_schema_version() + 1;
  {
    Connection c = Connection::open(tmp.str());
    minas::db::set_user_version(c, newer);
  }
  const std::string bytes = file_bytes(tmp.str());
  const std::string expected = tmp.str() + ": store version " + std::to_string(newer) +
                               " is newer than this minas, which reads up to " +
                               std::to_string(newer - 1) + ": upgrade minas";
  CHECK(refusal([&] { Store::open(tmp.str()); }) == expected);
  CHECK(refusal([&] { Store::open(tmp.str(), OpenMode::ReadOnly); }) == expected);
  CHECK(file_bytes(tmp.str()) == bytes);
}

TEST_CASE("store: a database of another application is refused and left unchanged") {
  SUBCASE("tables and no application id") {
    TempPath tmp;
    {
      Connection c = Connection::open(tmp.str());
      c.exec("PRAGMA journal_mode = DELETE");  // as most applications leave their files
      c.exec(
          "CREATE TABLE people (name TEXT); CREATE TABLE pets (name TEXT);"
          "INSERT INTO people VALUES ('ada')");
    }
    const std::string bytes = file_bytes(tmp.str());
    for (OpenMode mode : {OpenMode::ReadWrite, OpenMode::ReadOnly}) {
      const std::string message = refusal([&] { Store::open(tmp.str(), mode); });
      CHECK(message == tmp.str() +
                           ": not a minas store: an SQLite database of another application "
                           "(tables: people, pets; user_version 0)");
    }
    CHECK(file_bytes(tmp.str()) == bytes);
    CHECK(!fs::exists(tmp.str() + "-wal"));
  }
  SUBCASE("another application id") {
    TempPath tmp;
    {
      Connection c = Connection::open(tmp.str());
      c.exec("PRAGMA application_id = 305419896");  // 0x12345678
    }
    const std::string bytes = file_bytes(tmp.str());
    const std::string message = refusal([&] { Store::open(tmp.str()); });
    CHECK(contains(message, tmp.str() + ": not a minas store"));
    CHECK(contains(message, "0x12345678"));
    CHECK(file_bytes(tmp.str()) == bytes);
  }
}

TEST_CASE("store: a file that is not a database is refused and left unchanged") {
  TempPath tmp;
  {
    std::ofstream out(tmp.str(), std::ios::binary);
    for (int i = 0; i < 200; ++i) out << "this is a text file, line " << i << '\n';
  }
  const std::string bytes = file_bytes(tmp.str());
  for (OpenMode mode : {OpenMode::ReadWrite, OpenMode::ReadOnly}) {
    const SqliteError e = sqlite_error([&] { Store::open(tmp.str(), mode); });
    CHECK((e.code() & 0xff) == SQLITE_NOTADB);
    CHECK(e.where() == tmp.str());
    CHECK(contains(e.what(), "not a minas store (not an SQLite database)"));
  }
  CHECK(file_bytes(tmp.str()) == bytes);
  CHECK(!fs::exists(tmp.str() + "-wal"));
}

// A child process opens `path` in rollback-journal mode, runs `sql` in a transaction that
// spills to the file (a cache of 2 pages) and dies without COMMIT, as a writer killed
// mid-write does: the file holds uncommitted pages and a hot journal to undo them.
void die_mid_write(const std::string& path, const std::string& sql) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) _exit(2);
    const std::string script = "PRAGMA cache_size = 2; BEGIN; " + sql;
    if (sqlite3_exec(db, script.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) _exit(3);
    _exit(0);  // no COMMIT, no close
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  REQUIRE(fs::exists(path + "-journal"));
}

// 200 rows of 4 KiB: far more than 2 pages of cache, so the file itself is overwritten.
const std::string kSpillingWrite =
    "CREATE TABLE spill (b BLOB); "
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
    "INSERT INTO spill SELECT randomblob(4096) FROM n;";

TEST_CASE("store: a writer killed mid-write is rolled back by the next read-write open") {
  SUBCASE("a store: a read-only open says why it cannot, a read-write open repairs and opens") {
    TempPath tmp;
    int64_t experiment = 0;
    {
      Store store = Store::open(tmp.str());
      experiment = store.create_experiment(spec("kept"), 1.0);
      // A store last written in rollback mode: the kill below leaves a hot journal, as a
      // kill while a fresh store turns to WAL does.
      store.connection().exec("PRAGMA journal_mode = DELETE");
    }
    die_mid_write(tmp.str(), kSpillingWrite + "DELETE FROM experiments;");

    const SqliteError e = sqlite_error([&] { Store::open(tmp.str(), OpenMode::ReadOnly); });
    CHECK(e.code() == SQLITE_READONLY_ROLLBACK);
    CHECK(minas::db::needs_writer_repair(e));
    CHECK(contains(e.what(), "[SQLITE_READONLY_ROLLBACK]"));
    CHECK(contains(e.what(), "cannot roll back the journal it left: reopen it read-write once"));

    Store store = Store::open(tmp.str());
    CHECK(!fs::exists(tmp.str() + "-journal"));
    CHECK(minas::db::integrity_check(store.connection()) == "ok");
    const auto found = store.find_experiment("kept");
    REQUIRE(found);
    CHECK(found->id == experiment);
    CHECK(query_int(store.connection(),
                    "SELECT count(*) FROM sqlite_master WHERE name = 'spill'") == 0);
    CHECK(query_text(store.connection(), "PRAGMA journal_mode") == "wal");
  }
  SUBCASE("another application's file: rolled back to its last commit, then refused as it was") {
    TempPath tmp;
    {
      Connection c = Connection::open(tmp.str());
      c.exec("PRAGMA journal_mode = DELETE");
      c.exec("CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('ada')");
    }
    const std::string bytes = file_bytes(tmp.str());
    die_mid_write(tmp.str(), kSpillingWrite + "DELETE FROM people;");
    CHECK(file_bytes(tmp.str()) != bytes);  // the kill left uncommitted pages in the file

    const std::string message = refusal([&] { Store::open(tmp.str()); });
    CHECK(message == tmp.str() +
                         ": not a minas store: an SQLite database of another application "
                         "(tables: people; user_version 0)");
    CHECK(!fs::exists(tmp.str() + "-journal"));
    CHECK(!fs::exists(tmp.str() + "-wal"));
    Connection c = Connection::open(tmp.str(), OpenMode::ReadOnly);
    CHECK(query_text(c, "PRAGMA journal_mode") == "delete");
    CHECK(query_text(c, "SELECT group_concat(name) FROM people") == "ada");
    CHECK(query_int(c, "SELECT count(*) FROM sqlite_master") == 1);
  }
}

TEST_CASE("store: a read-only open reads and refuses every write, leaving the file as it was") {
  TempPath tmp;
  int64_t experiment = 0;
  {
    Store store = Store::open(tmp.str());
    experiment = store.create_experiment(spec("a"), 1.0);
    Writer writer(store);
    writer.add_trial(new_trial(experiment, 0));
    writer.commit();
  }
  const std::string bytes = file_bytes(tmp.str());
  {
    Store store = Store::open(tmp.str(), OpenMode::ReadOnly);
    CHECK(store.mode() == OpenMode::ReadOnly);
    CHECK(store.schema_version() == minas::db::current_schema_version());
    CHECK(store.experiment("a").id == experiment);
    CHECK(query_int(store.connection(), "SELECT count(*) FROM trials") == 1);

    const std::string message = refusal([&] { store.create_experiment(spec("b"), 2.0); });
    CHECK(message == tmp.str() +
                         ": create_experiment: the store is open read-only; writing needs a "
                         "read-write open");
    CHECK(contains(refusal([&] { store.set_experiment_status(experiment, "running", 2.0); }),
                   "read-only"));
    CHECK(
        contains(refusal([&] { store.upsert_worker("w", "h", json::array(), 2.0); }), "read-only"));
    CHECK(contains(refusal([&] { store.save_strategy_state(experiment, json::object(), 2.0); }),
                   "read-only"));
    CHECK(
        contains(refusal([&] { store.add_artifact(experiment, {}, "report", "r.md", "c", 1, 2); }),
                 "read-only"));
    CHECK(contains(refusal([&] { Writer writer(store); }), "Writer: the store is open read-only"));
    // Below the store, SQLite refuses too.
    CHECK(contains(sqlite_error([&] { store.connection().exec("DELETE FROM trials"); }).what(),
                   "read-only"));
  }
  CHECK(file_bytes(tmp.str()) == bytes);

  // Read-only never migrates: an older store must be opened read-write once.
  TempPath old;
  build_old_store(old.str(), 1);
  CHECK(refusal([&] { Store::open(old.str(), OpenMode::ReadOnly); }) ==
        old.str() + ": store version 1 needs migrating to version " +
            std::to_string(minas::db::current_schema_version()) +
            " by a read-write open (a read-only open never changes the file)");

  TempPath empty;
  { std::ofstream(empty.str()); }
  CHECK(contains(refusal([&] { Store::open(empty.str(), OpenMode::ReadOnly); }),
                 "not a minas store: an empty database"));
  CHECK(fs::file_size(empty.str()) == 0);

  TempPath missing;
  CHECK(contains(sqlite_error([&] { Store::open(missing.str(), OpenMode::ReadOnly); }).what(),
                 "no such file"));
  CHECK(!fs::exists(missing.str()));
}

TEST_CASE("store: experiments are created, found, listed and their status kept with times") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t a = store.create_experiment(spec("a"), 10.0);
  ExperimentSpec b_spec = spec("b");
  b_spec.recipe = json::parse(R"({"lr": 0.1, "epochs": 12})");  // keys in another order
  const int64_t b = store.create_experiment(b_spec, 11.0);
  CHECK(a != b);

  const Experiment e = store.experiment("a");
  CHECK(e.id == a);
  CHECK(e.name == "a");
  CHECK(e.space == "nb201");
  CHECK(e.space_json == spec("a").space_json);
  CHECK(e.dataset == "fashion-mnist");
  CHECK(e.dataset_fingerprint == "00112233aabbccdd");
  CHECK(e.strategy == "evolution");
  CHECK(e.strategy_settings == spec("a").strategy_settings);
  CHECK(e.recipe == spec("a").recipe);
  CHECK(e.objective == "val_acc");
  CHECK(e.status == "created");
  CHECK(e.created_at == 10.0);
  CHECK(!e.started_at);
  CHECK(!e.finished_at);
  // FNV-1a 64 of the canonical dump, whatever order the recipe's keys came in.
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(minas::fnv1a64(R"({"epochs":12,"lr":0.1})")));
  CHECK(e.recipe_hash == hex);
  CHECK(minas::db::recipe_hash(spec("a").recipe) == hex);
  CHECK(store.experiment("b").recipe_hash == e.recipe_hash);

  const std::vector<Experiment> all = store.experiments();
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "a");
  CHECK(all[1].name == "b");
  CHECK(!store.find_experiment("c"));
  CHECK(store.find_experiment("b")->id == b);

  store.set_experiment_status(a, "running", 20.0);
  CHECK(store.experiment("a").status == "running");
  CHECK(store.experiment("a").started_at == 20.0);
  CHECK(!store.experiment("a").finished_at);
  store.set_experiment_status(a, "stopped", 30.0);
  CHECK(store.experiment("a").finished_at == 30.0);
  // Resumed: the first start is kept, the stop is no longer the end.
  store.set_experiment_status(a, "running", 40.0);
  CHECK(store.experiment("a").started_at == 20.0);
  CHECK(!store.experiment("a").finished_at);
  store.set_experiment_status(a, "finished", 50.0);
  CHECK(store.experiment("a").status == "finished");
  CHECK(store.experiment("a").finished_at == 50.0);
  store.set_experiment_status(b, "failed", 60.0);
  CHECK(store.experiment("b").finished_at == 60.0);
  CHECK(!store.experiment("b").started_at);
}

TEST_CASE("store: experiment errors name the experiment, the file and what there is") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  CHECK(refusal([&] { store.experiment("x"); }) ==
        tmp.str() + ": no experiment 'x' (the store has no experiments yet)");
  const int64_t a = store.create_experiment(spec("alpha"), 1.0);
  store.create_experiment(spec("beta"), 2.0);
  CHECK(refusal([&] { store.experiment("gamma"); }) ==
        tmp.str() + ": no experiment 'gamma' (experiments: alpha, beta)");
  CHECK(refusal([&] { store.create_experiment(spec("beta"), 3.0); }) ==
        tmp.str() +
            ": create_experiment: an experiment named 'beta' already exists; choose "
            "another name");
  CHECK(contains(refusal([&] { store.create_experiment(spec(""), 3.0); }), "name is empty"));
  CHECK(store.experiments().size() == 2);

  CHECK(refusal([&] { store.set_experiment_status(a, "paused", 4.0); }) ==
        tmp.str() +
            ": set_experiment_status: unknown status 'paused' (created, running, "
            "stopped, finished or failed)");
  CHECK(refusal([&] { store.set_experiment_status(99, "running", 4.0); }) ==
        tmp.str() + ": set_experiment_status: no experiment with id 99");
  CHECK(store.experiment("alpha").status == "created");

  // A long list is cut short.
  for (int i = 0; i < 25; ++i) store.create_experiment(spec("e" + std::to_string(i)), 5.0);
  const std::string many = refusal([&] { store.experiment("nope"); });
  CHECK(contains(many, "experiments: alpha, beta, e0,"));
  CHECK(contains(many, ", and 7 more)"));
}

TEST_CASE("store: workers, strategy state and artifacts") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection& c = store.connection();

  const int64_t w = store.upsert_worker("node1:42", "node1", json::array({"cpu"}), 10.0);
  CHECK(store.upsert_worker("node2:7", "node2", json::array({"cuda:0"}), 11.0) != w);
  // The same name again: the same worker, its devices and last_seen updated.
  CHECK(store.upsert_worker("node1:42", "node1", json::array({"cpu", "cuda:0"}), 12.0) == w);
  const std::string where = " FROM workers WHERE id = " + std::to_string(w);
  CHECK(query_text(c, "SELECT devices" + where) == R"(["cpu","cuda:0"])");
  CHECK(query_int(c, "SELECT first_seen" + where) == 10);
  CHECK(query_int(c, "SELECT last_seen" + where) == 12);
  CHECK(query_int(c, "SELECT count(*) FROM workers") == 2);

  CHECK(!store.strategy_state(e));
  store.save_strategy_state(e, {{"population", {1, 2, 3}}}, 20.0);
  store.save_strategy_state(e, {{"population", {4, 5}}}, 21.0);
  CHECK(store.strategy_state(e) == json{{"population", {4, 5}}});
  CHECK(query_int(c, "SELECT updated_at FROM strategy_state") == 21);
  CHECK(query_int(c, "SELECT count(*) FROM strategy_state") == 1);
  CHECK(refusal([&] { store.save_strategy_state(7, json::object(), 1.0); }) ==
        tmp.str() + ": save_strategy_state: no experiment with id 7");

  Writer writer(store);
  const int64_t t = writer.add_trial(new_trial(e, 0));
  writer.commit();
  const int64_t a1 = store.add_artifact(e, t, "checkpoint", "ck/0.bin", "fnv:12", 4096, 30.0);
  const int64_t a2 = store.add_artifact(e, std::nullopt, "report", "report.md", "fnv:34", 10, 31.0);
  CHECK(a1 != a2);
  CHECK(query_text(c, "SELECT path FROM artifacts WHERE trial_id = " + std::to_string(t)) ==
        "ck/0.bin");
  CHECK(is_null(c, "SELECT trial_id FROM artifacts WHERE id = " + std::to_string(a2)));
  const int64_t other = store.create_experiment(spec("b"), 2.0);
  CHECK(refusal([&] { store.add_artifact(other, t, "checkpoint", "x", "c", 1, 1.0); }) ==
        tmp.str() + ": add_artifact: trial " + std::to_string(t) + " belongs to experiment " +
            std::to_string(e) + ", not " + std::to_string(other));
  CHECK(contains(refusal([&] { store.add_artifact(e, 999, "checkpoint", "x", "c", 1, 1.0); }),
                 "no trial with id 999"));
  CHECK(contains(refusal([&] { store.add_artifact(e, {}, "checkpoint", "x", "c", -1, 1.0); }),
                 "negative size"));
  CHECK(query_int(c, "SELECT count(*) FROM artifacts") == 2);
}

TEST_CASE("store: data reports are kept, usable or not, and listed oldest first") {
  TempPath tmp;
  {
    Store store = Store::open(tmp.str());
    CHECK(store.data_reports().empty());
    DataReport bad;
    bad.experiment = "adapt-1";  // no such experiment: the data stopped it
    bad.location = "/data/customer";
    bad.usable = false;
    bad.report = {{"findings", json::array({{{"kind", "class_too_small"}}})}};
    bad.fingerprint = {{"content_hash", "00ff"}, {"classes", 3}};
    bad.created_at = 5.0;
    const int64_t a = store.add_data_report(bad);
    DataReport good = bad;
    good.experiment = "adapt-2";
    good.usable = true;
    good.created_at = 6.0;
    const int64_t b = store.add_data_report(good);
    CHECK(b > a);
    CHECK(contains(refusal([&] { store.add_data_report(DataReport{}); }),
                   "add_data_report: a data report needs an experiment name and a location"));
  }
  Store ro = Store::open(tmp.str(), OpenMode::ReadOnly);
  const std::vector<DataReport> all = ro.data_reports();
  REQUIRE(all.size() == 2);
  CHECK(all[0].experiment == "adapt-1");
  CHECK_FALSE(all[0].usable);
  CHECK(all[0].report["findings"][0]["kind"] == "class_too_small");
  CHECK(all[0].fingerprint["classes"] == 3);
  CHECK(all[0].created_at == 5.0);
  CHECK(all[1].usable);
  CHECK(contains(refusal([&] { ro.add_data_report(all[0]); }), "read-only"));
}

TEST_CASE("store: latency measurements are kept per target and host, with the prediction") {
  TempPath tmp;
  {
    Store store = Store::open(tmp.str());
    CHECK(store.latency_measurements("cpu:1", "h").empty());
    LatencyMeasurement m;
    m.target = "cpu:1";
    m.host = "h";
    m.space_ref = "small:classes=4";
    m.arch_key = "16|32|conv_k3|skip|64|conv_k3|skip";
    m.measured_ms = 1.5;
    m.experiment = "adapt-1";
    m.created_at = 3.0;
    store.add_latency_measurement(m);  // no prediction yet
    m.predicted_ms = 1.25;
    m.measured_ms = 1.75;
    store.add_latency_measurement(m);
    m.target = "cuda:0";
    store.add_latency_measurement(m);
    m.host = "other";
    m.target = "cpu:1";
    store.add_latency_measurement(m);
    LatencyMeasurement bad = m;
    bad.measured_ms = -1;
    CHECK(contains(refusal([&] { store.add_latency_measurement(bad); }),
                   "the measurement must be a positive number of ms"));
    CHECK(contains(refusal([&] { store.add_latency_measurement(LatencyMeasurement{}); }),
                   "a measurement needs a target"));
  }
  Store ro = Store::open(tmp.str(), OpenMode::ReadOnly);
  const auto rows = ro.latency_measurements("cpu:1", "h");
  REQUIRE(rows.size() == 2);
  CHECK_FALSE(rows[0].predicted_ms);
  CHECK(rows[0].measured_ms == 1.5);
  CHECK(rows[1].predicted_ms == 1.25);
  CHECK(rows[1].space_ref == "small:classes=4");
  CHECK(rows[1].experiment == "adapt-1");
  CHECK(ro.latency_measurements("cuda:0", "h").size() == 1);
  CHECK(ro.latency_measurements("cpu:1", "other").size() == 1);
}

TEST_CASE("store: every change to a trial takes the next change number, counts follow") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("seq"), 1.0);
  Connection& c = store.connection();
  auto seq_of = [&](int64_t id) {
    return query_int(c, "SELECT seq FROM trials WHERE id = " + std::to_string(id));
  };
  auto count_of = [&](const std::string& status) {
    return query_int(
        c, "SELECT coalesce(sum(n), 0) FROM experiment_counts WHERE status = '" + status + "'");
  };
  Writer writer(store);
  const int64_t a = writer.add_trial(new_trial(e, 0));
  const int64_t b = writer.add_trial(new_trial(e, 1));
  writer.commit();
  CHECK(seq_of(b) > seq_of(a));
  CHECK(count_of("queued") == 2);
  const int64_t before = query_int(c, "SELECT seq FROM change_seq");
  c.exec("UPDATE trials SET status = 'running', started_at = 2 WHERE id = " + std::to_string(a));
  CHECK(seq_of(a) == before + 1);
  CHECK(seq_of(a) > seq_of(b));
  CHECK(count_of("queued") == 1);
  CHECK(count_of("running") == 1);
  c.exec("INSERT INTO epochs (trial_id, attempt, epoch, val_acc) VALUES (" + std::to_string(b) +
         ", 0, 1, 0.5)");
  CHECK(seq_of(b) == before + 2);  // a new epoch is a change of its trial (migration 7)
  CHECK(count_of("queued") == 1);  // but not of its status
  c.exec("UPDATE trials SET val_acc = 0.9 WHERE id = " + std::to_string(a));
  CHECK(seq_of(a) == before + 3);
  CHECK(count_of("running") == 1);  // not a change of status
  CHECK(query_int(c, "SELECT seq FROM change_seq") == before + 3);
}

TEST_CASE("store: the best-so-far curve kept on write equals the one computed from the trials") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("curve"), 1.0);
  const int64_t other = store.create_experiment(spec("other"), 1.0);
  Connection& c = store.connection();
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> acc(0.0, 1.0);
  double clock = 200;
  Writer writer(store);
  std::vector<int64_t> retried;  // failed once, requeued, to finish later
  for (int i = 0; i < 400; ++i) {
    const int64_t experiment = i % 5 == 4 ? other : e;
    const int64_t t = writer.add_trial(new_trial(experiment, i));
    writer.start_trial(t, 0, std::nullopt, "cpu", clock += 1);
    TrialResult r = result(t, 0, acc(rng));
    r.finished_at = clock += 1;
    switch (rng() % 6) {
      case 0:
        CHECK(writer.record_failure(t, 0, "out of memory", clock += 1));
        break;
      case 1:
        CHECK(writer.mark_pruned(t, 0, clock += 1));
        break;
      case 2:
        CHECK(writer.record_failure(t, 0, "worker lost", clock += 1));
        CHECK(writer.requeue(t, 1, clock += 1));
        retried.push_back(t);
        break;
      default:
        CHECK(writer.record_result(r));
    }
    if (i % 50 == 49) writer.commit();
  }
  for (int64_t t : retried) {
    writer.start_trial(t, 1, std::nullopt, "cpu", clock += 1);
    TrialResult r = result(t, 1, acc(rng));
    r.finished_at = clock += 1;
    CHECK(writer.record_result(r));
  }
  writer.commit();
  for (int64_t experiment : {e, other}) {
    const auto computed = minas::db::best_so_far(c, experiment, minas::db::Metric::val_acc);
    REQUIRE(computed.size() >= 3);
    Statement kept = c.prepare(
        "SELECT finished, number, val_acc FROM best_so_far WHERE experiment_id = ? ORDER BY "
        "finished");
    kept.bind_all(experiment);
    size_t i = 0;
    for (; kept.step(); ++i) {
      REQUIRE(i < computed.size());
      CHECK(kept.column_int64(0) == computed[i].trials);
      CHECK(kept.column_int64(1) == computed[i].number);
      CHECK(kept.column_double(2) == computed[i].best);
    }
    CHECK(i == computed.size());
  }
}

TEST_CASE("store: a warm-started trial's lineage of weights is kept, once per trial") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("e"), 1.0);
  Writer writer(store);
  const int64_t parent = writer.add_trial(new_trial(e, 0));
  NewTrial c = new_trial(e, 1);
  c.parent_id = parent;
  const int64_t child = writer.add_trial(c);
  writer.record_inheritance(child, parent, 12, 10, 5000);
  writer.record_inheritance(child, parent, 12, 11, 5100);  // a second report replaces the first
  CHECK_THROWS_AS(writer.record_inheritance(child, 999, 12, 1, 1), Error);   // no such parent
  CHECK_THROWS_AS(writer.record_inheritance(999, parent, 12, 1, 1), Error);  // no such trial
  writer.commit();
  Connection& conn = store.connection();
  CHECK(query_int(conn, "SELECT count(*) FROM weight_inheritance") == 1);
  CHECK(query_int(conn, "SELECT parent_trial_id FROM weight_inheritance") == parent);
  CHECK(query_int(conn, "SELECT parent_epoch FROM weight_inheritance") == 12);
  CHECK(query_int(conn, "SELECT tensors FROM weight_inheritance") == 11);
  CHECK(query_int(conn, "SELECT params FROM weight_inheritance") == 5100);
}

TEST_CASE("store: the writer numbers trials from 0 within each experiment") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t a = store.create_experiment(spec("a"), 1.0);
  const int64_t b = store.create_experiment(spec("b"), 1.0);
  Connection& c = store.connection();
  auto number = [&](int64_t id) {
    return query_int(c, "SELECT number FROM trials WHERE id = " + std::to_string(id));
  };
  {
    Writer writer(store);
    CHECK(writer.pending() == 0);
    const int64_t a0 = writer.add_trial(new_trial(a, 0));
    const int64_t b0 = writer.add_trial(new_trial(b, 0));
    const int64_t a1 = writer.add_trial(new_trial(a, 1));
    const int64_t a2 = writer.add_trial(new_trial(a, 2));
    CHECK(writer.pending() == 4);
    // Ids are known inside the open transaction.
    CHECK(number(a0) == 0);
    CHECK(number(a1) == 1);
    CHECK(number(a2) == 2);
    CHECK(number(b0) == 0);
    writer.commit();
    CHECK(writer.pending() == 0);
  }
  // A new writer reads where the experiment stands.
  Writer writer(store);
  CHECK(number(writer.add_trial(new_trial(b, 1))) == 1);
  CHECK(number(writer.add_trial(new_trial(a, 3))) == 3);
  writer.commit();
  // Numbers handed out in a batch that rolled back are free again.
  writer.add_trial(new_trial(a, 4));
  writer.rollback();
  CHECK(writer.pending() == 0);
  CHECK(number(writer.add_trial(new_trial(a, 4))) == 4);
  writer.commit();

  NewTrial child = new_trial(a, 5);
  child.parent_id = writer.add_trial(new_trial(a, 6));
  child.mutation = "op[3]: conv3x3 -> skip";
  const int64_t id = writer.add_trial(child);
  writer.commit();
  const std::string row = " FROM trials WHERE id = " + std::to_string(id);
  CHECK(query_int(c, "SELECT parent_id" + row) == *child.parent_id);
  CHECK(query_text(c, "SELECT mutation" + row) == "op[3]: conv3x3 -> skip");
  CHECK(query_text(c, "SELECT arch_key" + row) == "arch-5");
  CHECK(static_cast<uint64_t>(query_int(c, "SELECT arch_hash" + row)) == minas::fnv1a64("arch-5"));
  CHECK(query_text(c, "SELECT arch_json" + row) == R"({"key":"arch-5"})");
  CHECK(query_int(c, "SELECT fidelity" + row) == 12);
  CHECK(query_text(c, "SELECT status" + row) == "queued");
  CHECK(query_int(c, "SELECT attempt" + row) == 0);
  CHECK(query_int(c, "SELECT queued_at" + row) == 105);
}

TEST_CASE(
    "store: the writer records a trial's life: start, epochs, result, failure, retry, "
    "pruning") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  const int64_t w = store.upsert_worker("node1:1", "node1", json::array({"cpu"}), 1.0);
  Connection& c = store.connection();
  Writer writer(store);
  auto text = [&](int64_t trial, const std::string& column) {
    return query_text(c, "SELECT " + column + " FROM trials WHERE id = " + std::to_string(trial));
  };
  auto number = [&](int64_t trial, const std::string& column) {
    Statement st = c.prepare("SELECT " + column + " FROM trials WHERE id = ?");
    st.bind_all(trial);
    REQUIRE(st.step());
    return st.is_null(0) ? std::optional<double>() : st.column_double(0);
  };

  // Done: start, three epochs (one re-sent), the result.
  const int64_t t1 = writer.add_trial(new_trial(e, 0));
  writer.start_trial(t1, 0, w, "cpu", 2.0);
  CHECK(text(t1, "status") == "running");
  CHECK(number(t1, "worker_id") == w);
  CHECK(text(t1, "device") == "cpu");
  CHECK(number(t1, "started_at") == 2.0);
  writer.record_epoch(epoch(t1, 0, 1, 0.5));
  writer.record_epoch(epoch(t1, 0, 2, 0.6));
  writer.record_epoch(epoch(t1, 0, 2, 0.65));  // re-sent: replaces
  writer.record_epoch(epoch(t1, 0, 3, 0.7));
  CHECK(query_int(c, "SELECT count(*) FROM epochs WHERE trial_id = " + std::to_string(t1)) == 3);
  CHECK(query_text(c,
                   "SELECT group_concat(val_acc, ',') FROM (SELECT val_acc FROM epochs "
                   "WHERE trial_id = " +
                       std::to_string(t1) + " ORDER BY epoch)") == "0.5,0.65,0.7");
  TrialResult r = result(t1, 0, 0.71);
  r.test_acc.reset();
  CHECK(writer.record_result(r));
  CHECK(text(t1, "status") == "done");
  CHECK(number(t1, "val_acc") == 0.71);
  CHECK(!number(t1, "test_acc"));
  CHECK(number(t1, "latency_ms") == 1.5);
  CHECK(number(t1, "params") == 90000);
  CHECK(number(t1, "macs") == 12000000);
  CHECK(number(t1, "train_seconds") == 41.5);
  CHECK(number(t1, "finished_at") == 200.0);

  // Failed, retried as attempt 1, then done.
  const int64_t t2 = writer.add_trial(new_trial(e, 1));
  writer.start_trial(t2, 0, w, "cpu", 3.0);
  CHECK(writer.record_failure(t2, 0, "CUDA out of memory", 4.0));
  CHECK(text(t2, "status") == "failed");
  CHECK(text(t2, "error") == "CUDA out of memory");
  CHECK(number(t2, "finished_at") == 4.0);
  CHECK(writer.requeue(t2, 1, 5.0));
  CHECK(text(t2, "status") == "queued");
  CHECK(number(t2, "attempt") == 1);
  CHECK(!number(t2, "worker_id"));
  CHECK(!number(t2, "device"));
  CHECK(!number(t2, "started_at"));
  CHECK(!number(t2, "finished_at"));
  CHECK(number(t2, "queued_at") == 5.0);
  CHECK(text(t2, "error") == "CUDA out of memory");  // why it took a retry
  CHECK(!writer.requeue(t2, 1, 5.5));                // attempts only move forward
  CHECK(!writer.record_failure(t2, 0, "late failure of attempt 0", 5.6));
  writer.start_trial(t2, 1, std::nullopt, "cuda:0", 6.0);
  CHECK(!number(t2, "worker_id"));
  CHECK(writer.record_result(result(t2, 1, 0.8)));
  CHECK(text(t2, "status") == "done");
  CHECK(*number(t2, "test_acc") == doctest::Approx(0.79));
  // A done trial is never failed, requeued or pruned.
  CHECK(!writer.record_failure(t2, 1, "too late", 7.0));
  CHECK(!writer.requeue(t2, 2, 7.0));
  CHECK(!writer.mark_pruned(t2, 1, 7.0));
  CHECK(text(t2, "status") == "done");

  // Pruned after one epoch.
  const int64_t t3 = writer.add_trial(new_trial(e, 2));
  writer.start_trial(t3, 0, w, "cpu", 8.0);
  writer.record_epoch(epoch(t3, 0, 1, 0.2));
  CHECK(!writer.mark_pruned(t3, 1, 9.0));  // not its attempt
  CHECK(writer.mark_pruned(t3, 0, 9.0));
  CHECK(text(t3, "status") == "pruned");
  CHECK(number(t3, "finished_at") == 9.0);
  CHECK(!writer.mark_pruned(t3, 0, 9.5));
  CHECK(!writer.record_result(result(t3, 0, 0.3)));  // pruned stays pruned
  CHECK(text(t3, "status") == "pruned");

  // Failed before it ever ran (say its architecture does not lower).
  const int64_t t4 = writer.add_trial(new_trial(e, 3));
  CHECK(writer.record_failure(t4, 0, "lowering: kernel larger than input", 10.0));
  CHECK(text(t4, "status") == "failed");

  writer.worker_seen(w, 11.0, 10.0, 6.0);
  writer.worker_seen(w, 12.0, 1.5, 1.0);
  writer.worker_seen(w, 11.5, 0.5, 0.0);  // out of order: last_seen does not go back
  const std::string worker = " FROM workers WHERE id = " + std::to_string(w);
  CHECK(query_int(c, "SELECT last_seen" + worker) == 12);
  CHECK(query_text(c, "SELECT connected_seconds" + worker) == "12.0");
  CHECK(query_text(c, "SELECT busy_seconds" + worker) == "7.0");

  // Every call that wrote counts; refused ones and no-ops do not.
  CHECK(writer.pending() == 23);
  writer.commit();
  CHECK(query_int(c, "SELECT count(*) FROM trials WHERE status = 'done'") == 2);
  CHECK(query_int(c, "SELECT count(*) FROM late_results") == 1);  // t3's result
}

TEST_CASE("store: validations inside an epoch are kept apart and read back in the curve") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection& c = store.connection();
  Writer writer(store);
  const int64_t t = writer.add_trial(new_trial(e, 0));
  writer.start_trial(t, 0, std::nullopt, "cpu", 2.0);
  const int64_t seq = query_int(c, "SELECT seq FROM trials WHERE id = " + std::to_string(t));
  EpochMetrics quarter = epoch(t, 0, 1, 0.3);
  quarter.at = 0.25;
  writer.record_epoch(quarter);
  quarter.val_acc = 0.35;  // re-sent: replaces
  writer.record_epoch(quarter);
  EpochMetrics half = epoch(t, 0, 1, 0.4);
  half.at = 0.5;
  writer.record_epoch(half);
  writer.record_epoch(epoch(t, 0, 1, 0.5));
  EpochMetrics later = epoch(t, 0, 2, 0.55);
  later.at = 1.5;
  writer.record_epoch(later);
  writer.commit();
  // The epochs table keeps one row per whole epoch; the points go to sub_epochs.
  CHECK(query_int(c, "SELECT count(*) FROM epochs") == 1);
  CHECK(query_text(c,
                   "SELECT group_concat(at || ':' || val_acc, ',') FROM (SELECT at, val_acc "
                   "FROM sub_epochs ORDER BY at)") == "0.25:0.35,0.5:0.4,1.5:0.55");
  // A live page sees the trial change with each point.
  CHECK(query_int(c, "SELECT seq FROM trials WHERE id = " + std::to_string(t)) > seq);
  EpochMetrics stray = epoch(999, 0, 1, 0.5);
  stray.at = 0.5;
  CHECK_THROWS_AS(writer.record_epoch(stray), minas::Error);
  writer.rollback();

  auto g = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  Connection r = minas::db::open_store_readonly(tmp.str());
  const auto d = minas::db::find_trial(r, e, 0);
  REQUIRE(d);
  std::string curve;
  for (const auto& p : d->curve) curve += std::to_string(p.epoch) + "@" + g(p.epochs()) + " ";
  CHECK(curve == "1@0.25 1@0.5 1@1 2@1.5 ");
  CHECK(d->curve[0].at == 0.25);
  CHECK_FALSE(d->curve[2].at);
  CHECK(d->curve[0].val_acc == 0.35);
  // ASHA's rungs are rebuilt on resume from the epochs and the points.
  std::string validated;
  for (const auto& v : minas::db::validated_epochs(r, e))
    validated += g(v.epochs) + ":" + g(v.val_acc) + " ";
  CHECK(validated == "0.25:0.35 0.5:0.4 1:0.5 1.5:0.55 ");
}

TEST_CASE("store: a stale or duplicate result goes to late_results and is never counted twice") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  const int64_t w1 = store.upsert_worker("w1", "h1", json::array(), 1.0);
  const int64_t w2 = store.upsert_worker("w2", "h2", json::array(), 1.0);
  Connection& c = store.connection();
  Writer writer(store);
  const int64_t t = writer.add_trial(new_trial(e, 0));
  writer.start_trial(t, 0, w1, "cpu", 2.0);
  // w1's lease expired: the trial went to w2 as attempt 1.
  CHECK(writer.requeue(t, 1, 3.0));
  writer.start_trial(t, 1, w2, "cpu", 4.0);

  TrialResult late = result(t, 0, 0.9);
  late.worker_id = w1;
  CHECK(!writer.record_result(late));
  const std::string row = " FROM trials WHERE id = " + std::to_string(t);
  CHECK(query_text(c, "SELECT status" + row) == "running");
  CHECK(is_null(c, "SELECT val_acc" + row));

  CHECK(writer.record_result(result(t, 1, 0.8)));
  CHECK(!writer.record_result(result(t, 1, 0.95)));  // the same attempt again
  writer.commit();

  CHECK(query_text(c, "SELECT status" + row) == "done");
  CHECK(query_text(c, "SELECT val_acc" + row) == "0.8");
  CHECK(query_int(c, "SELECT count(*) FROM trials WHERE status = 'done'") == 1);
  Statement late_rows =
      c.prepare("SELECT trial_id, attempt, val_acc, worker_id FROM late_results ORDER BY id");
  REQUIRE(late_rows.step());
  CHECK(late_rows.column_int64(0) == t);
  CHECK(late_rows.column_int64(1) == 0);
  CHECK(late_rows.column_double(2) == 0.9);
  CHECK(late_rows.column_int64(3) == w1);
  REQUIRE(late_rows.step());
  CHECK(late_rows.column_int64(1) == 1);
  CHECK(late_rows.column_double(2) == 0.95);
  CHECK(late_rows.is_null(3));
  CHECK_FALSE(late_rows.step());
}

TEST_CASE("store: nothing a batch writes is visible to a reader before commit(), all of it after") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection reader = Connection::open(tmp.str(), OpenMode::ReadOnly);
  Writer writer(store);
  for (int i = 0; i < 3; ++i) {
    const int64_t t = writer.add_trial(new_trial(e, i));
    writer.start_trial(t, 0, std::nullopt, "cpu", 2.0);
    writer.record_epoch(epoch(t, 0, 1, 0.5));
    CHECK(writer.record_result(result(t, 0, 0.5 + i * 0.1)));
  }
  store.save_strategy_state(e, {{"seen", 3}}, 3.0);  // joins the open batch
  CHECK(writer.pending() == 13);
  CHECK(query_int(reader, "SELECT count(*) FROM trials") == 0);
  CHECK(query_int(reader, "SELECT count(*) FROM epochs") == 0);
  CHECK(query_int(reader, "SELECT count(*) FROM strategy_state") == 0);
  writer.commit();
  CHECK(query_int(reader, "SELECT count(*) FROM trials WHERE status = 'done'") == 3);
  CHECK(query_int(reader, "SELECT count(*) FROM epochs") == 3);
  CHECK(query_text(reader, "SELECT state FROM strategy_state") == R"({"seen":3})");
  // commit() with nothing pending is a no-op.
  writer.commit();
  CHECK(writer.pending() == 0);
}

TEST_CASE("store: a writer rolled back or destroyed without commit() leaves nothing") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection& c = store.connection();
  {
    Writer writer(store);
    writer.add_trial(new_trial(e, 0));
    writer.commit();
    const int64_t t = writer.add_trial(new_trial(e, 1));
    writer.start_trial(t, 0, std::nullopt, "cpu", 2.0);
    store.upsert_worker("w", "h", json::array(), 2.0);  // joins the batch, goes with it
    writer.rollback();
    CHECK(writer.pending() == 0);
    CHECK(!c.in_transaction());
    CHECK(query_int(c, "SELECT count(*) FROM trials") == 1);
    CHECK(query_int(c, "SELECT count(*) FROM workers") == 0);
    writer.add_trial(new_trial(e, 2));
    writer.add_trial(new_trial(e, 3));
  }
  CHECK(!c.in_transaction());
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 1);
  // With no batch open, a store write is durable on its own.
  store.upsert_worker("w", "h", json::array(), 3.0);
  Connection reader = Connection::open(tmp.str(), OpenMode::ReadOnly);
  CHECK(query_int(reader, "SELECT count(*) FROM workers") == 1);
}

TEST_CASE("store: a bad call is refused before it writes, and the batch stays open") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection& c = store.connection();
  Writer writer(store);
  const int64_t t = writer.add_trial(new_trial(e, 0));
  const std::string file = tmp.str() + ": ";

  CHECK(refusal([&] { writer.add_trial(new_trial(99, 0)); }) ==
        file + "add_trial: no experiment with id 99");
  NewTrial orphan = new_trial(e, 1);
  orphan.parent_id = 12345;
  CHECK(refusal([&] { writer.add_trial(orphan); }) ==
        file + "add_trial: the parent trial 12345 does not exist");
  CHECK(refusal([&] { writer.start_trial(999, 0, std::nullopt, "cpu", 1.0); }) ==
        file + "start_trial: no trial with id 999");
  CHECK(refusal([&] { writer.start_trial(t, 0, 77, "cpu", 1.0); }) ==
        file + "start_trial: no worker with id 77");
  CHECK(refusal([&] { writer.record_result(result(999, 0, 0.5)); }) ==
        file + "record_result: no trial with id 999");
  CHECK(refusal([&] { writer.record_epoch(epoch(999, 0, 1, 0.5)); }) ==
        file + "record_epoch: no trial with id 999");
  CHECK(refusal([&] { writer.record_failure(999, 0, "x", 1.0); }) ==
        file + "record_failure: no trial with id 999");
  CHECK(refusal([&] { writer.requeue(999, 1, 1.0); }) == file + "requeue: no trial with id 999");
  CHECK(refusal([&] { writer.mark_pruned(999, 0, 1.0); }) ==
        file + "mark_pruned: no trial with id 999");
  CHECK(refusal([&] { writer.worker_seen(999, 1.0, 1.0, 1.0); }) ==
        file + "worker_seen: no worker with id 999");

  writer.start_trial(t, 0, std::nullopt, "cpu", 2.0);
  CHECK(refusal([&] { writer.start_trial(t, 0, std::nullopt, "cpu", 3.0); }) ==
        file + "start_trial: trial " + std::to_string(t) +
            " cannot start attempt 0: it is running at attempt 0 (a queued trial starts at its "
            "attempt or a later one)");
  CHECK(writer.requeue(t, 2, 4.0));
  CHECK(contains(refusal([&] { writer.start_trial(t, 1, std::nullopt, "cpu", 5.0); }),
                 "it is queued at attempt 2"));

  CHECK(contains(refusal([&] { Writer second(store); }), "already has a Writer"));

  // Nothing above cost the batch.
  CHECK(writer.pending() == 3);
  writer.commit();
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 1);
  CHECK(query_int(c, "SELECT attempt FROM trials") == 2);
}

TEST_CASE(
    "store: a full disk fails the batch as a whole, keeps earlier commits and the file "
    "sound") {
  TempPath tmp;
  Store store = Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec("a"), 1.0);
  Connection& c = store.connection();
  Writer writer(store);
  for (int i = 0; i < 10; ++i) writer.add_trial(new_trial(e, i));
  writer.commit();

  // Room for a few more pages only: a batch of large trials cannot fit.
  const int64_t pages = query_int(c, "PRAGMA page_count");
  c.exec("PRAGMA max_page_count = " + std::to_string(pages + 8));
  auto big_batch = [&] {
    for (int i = 10; i < 210; ++i) {
      NewTrial t = new_trial(e, i);
      t.arch_json = std::string(3000, 'x');
      const int64_t id = writer.add_trial(t);
      writer.start_trial(id, 0, std::nullopt, "cpu", 1.0);
    }
  };
  const SqliteError full = sqlite_error(big_batch);
  CHECK((full.code() & 0xff) == SQLITE_FULL);
  CHECK(full.where() == tmp.str());
  CHECK(contains(full.what(), "database or disk is full"));
  CHECK(contains(full.what(), "write(s) since the last commit was rolled back"));
  CHECK(writer.pending() == 0);
  CHECK(!c.in_transaction());
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 10);
  CHECK(minas::db::integrity_check(c) == "ok");
  {
    Connection reader = Connection::open(tmp.str(), OpenMode::ReadOnly);
    CHECK(query_int(reader, "SELECT count(*) FROM trials") == 10);
  }

  // A store write inside the batch that fails takes the batch with it, too.
  writer.add_trial(new_trial(e, 10));
  const SqliteError joined = sqlite_error([&] {
    store.save_strategy_state(e, {{"blob", std::string(200000, 'y')}}, 2.0);
  });
  CHECK((joined.code() & 0xff) == SQLITE_FULL);
  CHECK(contains(joined.what(), "save_strategy_state"));
  CHECK(contains(joined.what(), "inside the Writer's open batch"));
  CHECK(writer.pending() == 0);
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 10);

  // Once there is room again, the same batch goes through, numbered on from the commits.
  c.exec("PRAGMA max_page_count = 1073741823");
  big_batch();
  writer.commit();
  CHECK(query_int(c, "SELECT count(*) FROM trials") == 210);
  CHECK(query_int(c, "SELECT max(number) FROM trials") == 209);
  CHECK(query_int(c, "SELECT count(*) FROM trials WHERE status = 'running'") == 200);
  CHECK(minas::db::integrity_check(c) == "ok");
}

TEST_CASE("store: a writer follows its store when moved and refuses writes once it is closed") {
  TempPath tmp;
  std::optional<Store> store = Store::open(tmp.str());
  const int64_t e = store->create_experiment(spec("a"), 1.0);
  Writer writer(*store);
  writer.add_trial(new_trial(e, 0));
  Store moved = std::move(*store);
  writer.add_trial(new_trial(e, 1));
  writer.commit();
  CHECK(query_int(moved.connection(), "SELECT count(*) FROM trials") == 2);
  CHECK(contains(refusal([&] { Writer second(moved); }), "already has a Writer"));

  writer.add_trial(new_trial(e, 2));
  { Store gone = std::move(moved); }  // closes the file, dropping the open batch
  CHECK(refusal([&] { writer.add_trial(new_trial(e, 3)); }) ==
        "add_trial: the Writer's store was closed");
  CHECK(writer.pending() == 0);
  writer.commit();  // nothing open: a no-op

  Store reopened = Store::open(tmp.str());
  CHECK(query_int(reopened.connection(), "SELECT count(*) FROM trials") == 2);
}
