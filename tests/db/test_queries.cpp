// The read side of the store: every query on a known small data set with exact expected rows,
// on a read-only connection, beside a writer. The data set (write_known_store) is shared with
// test_query_cli.cpp, which checks the same answers through `minas query`.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "db/queries.h"
#include "db/schema.h"
#include "searchspace/space.h"
#include "tests/support.h"

namespace minas::test {

// Four experiments. alpha (13 trials: done, failed, pruned, running, queued; ties, a NULL
// latency, lineage 0 -> 1 -> 3 -> 5, a retried trial with curves of two attempts), beta and
// gamma trained on the same data set as alpha (cache hits, a hash collision, another recipe),
// delta on another data set. Three workers, two late results.
void write_known_store(const std::string& path) {
  db::Connection c = db::Connection::open(path);
  db::Transaction tx(c);
  for (const db::Migration& m : db::migrations()) c.exec(m.sql);
  db::set_user_version(c, db::current_schema_version());
  c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
  c.exec(R"sql(
INSERT INTO experiments (id, name, space, space_json, dataset, dataset_fingerprint, strategy,
  strategy_settings, recipe, recipe_hash, objective, status, created_at) VALUES
  (1, 'alpha', 'nb201', '{}', 'cifar10', 'fp-cifar', 'evolution', '{}', '{}', 'r1', 'val_acc',
   'running', 1000),
  (2, 'beta', 'nb201', '{}', 'cifar10', 'fp-cifar', 'random', '{}', '{}', 'r1', 'val_acc',
   'finished', 2000),
  (3, 'gamma', 'nb201', '{}', 'cifar10', 'fp-cifar', 'reinforce', '{}', '{}', 'r2', 'val_acc',
   'finished', 3000),
  (4, 'delta', 'small', '{}', 'fashion-mnist', 'fp-fashion', 'random', '{}', '{}', 'r1',
   'val_acc', 'stopped', 4000);
INSERT INTO workers (id, name, host, devices, first_seen, last_seen, connected_seconds,
  busy_seconds) VALUES
  (1, 'w1', 'h1', '["cpu"]', 1000, 1500, 400, 300),
  (2, 'w2', 'h2', '["cuda:0","cuda:1"]', 1000, 1600, 500, 100),
  (3, 'w3', 'h3', '[]', 1700, 1700, 0, 0);
INSERT INTO trials (id, experiment_id, number, arch_key, arch_hash, arch_json, parent_id,
  mutation, fidelity, status, attempt, worker_id, device, queued_at, started_at, finished_at,
  val_acc, test_acc, latency_ms, params, macs, train_seconds, error) VALUES
  (1, 1, 0, 'a0', 0, '{}', NULL, NULL, 12, 'done', 0, 1, 'cpu', 1000, 1001, 1031,
   0.80, 0.79, 2.0, 100000, 5000000, 30.0, NULL),
  (2, 1, 1, 'a1', 0, '{}', 1, 'mut a', 12, 'done', 0, 2, 'cuda:0', 1000, 1001, 1041,
   0.85, 0.84, 3.0, 150000, 8000000, 40.0, NULL),
  (3, 1, 2, 'a2', 0, '{}', NULL, NULL, 12, 'failed', 2, 1, 'cpu', 1000, 1032, 1035,
   NULL, NULL, NULL, NULL, NULL, NULL,
   'CUDA error: out of memory, "step 3"' || char(10) || 'retry 2 of 2'),
  (4, 1, 3, 'a3', 0, '{}', 2, 'mut b', 12, 'done', 0, 1, 'cpu', 1010, 1036, 1071,
   0.85, 0.86, 1.5, 120000, 6000000, 35.0, NULL),
  (5, 1, 4, 'a4', 0, '{}', NULL, NULL, 4, 'pruned', 0, 2, 'cuda:1', 1010, 1042, 1050,
   0.60, NULL, NULL, 90000, NULL, 8.0, NULL),
  (6, 1, 5, '|k5~0|+|k5~1|', 0, '{}', 4, 'mut c', 12, 'done', 1, 2, 'cuda:0', 1020, 1051, 1111,
   0.90, 0.88, 4.0, 300000, 20000000, 60.0, NULL),
  (7, 1, 6, 'a6', 0, '{}', NULL, NULL, 12, 'done', 0, 1, 'cpu', 1020, 1072, 1092,
   0.70, 0.69, 1.0, 50000, 2000000, 20.0, NULL),
  (8, 1, 7, 'a7', 0, '{}', NULL, NULL, 12, 'running', 0, 1, 'cpu', 1030, 1093, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (9, 1, 8, 'a8', 0, '{}', NULL, NULL, 12, 'queued', 0, NULL, NULL, 1040, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (10, 1, 9, 'k9', 0, '{}', 2, 'mut d', 12, 'done', 0, 2, 'cuda:1', 1030, 1112, 1140,
   0.88, 0.87, 2.0, 110000, 5500000, 28.0, NULL),
  (11, 1, 10, 'a10', 0, '{}', NULL, NULL, 12, 'failed', 0, 2, 'cuda:0', 1030, 1141, 1145,
   NULL, NULL, NULL, NULL, NULL, NULL, 'diverged: loss is NaN'),
  (12, 1, 11, 'a11', 0, '{}', NULL, NULL, 12, 'done', 0, 1, 'cpu', 1040, 1094, 1120,
   0.90, 0.89, 4.0, 250000, 15000000, 26.0, NULL),
  (13, 1, 12, 'a12', 0, '{}', NULL, NULL, 12, 'done', 0, 1, 'cpu', 1040, 1121, 1150,
   0.75, 0.74, NULL, 80000, 3000000, 29.0, NULL),
  (20, 2, 0, '|k5~0|+|k5~1|', 0, '{}', NULL, NULL, 12, 'done', 0, 2, 'cuda:0', 2000, 2001, 2050,
   0.91, 0.90, 4.1, 300000, 20000000, 49.0, NULL),
  (21, 2, 1, 'k9', 0, '{}', NULL, NULL, 12, 'done', 0, 2, 'cuda:1', 2000, 2001, 2040,
   0.70, 0.71, 2.1, 110000, 5500000, 39.0, NULL),
  (22, 2, 2, 'b2', 0, '{}', NULL, NULL, 12, 'failed', 1, 1, 'cpu', 2000, 2041, 2045,
   NULL, NULL, NULL, NULL, NULL, NULL, 'lost worker w1'),
  (23, 2, 3, 'collider', 0, '{}', NULL, NULL, 12, 'done', 0, NULL, NULL, 2010, 2051, 2060,
   0.99, NULL, NULL, NULL, NULL, NULL, NULL),
  (30, 3, 0, '|k5~0|+|k5~1|', 0, '{}', NULL, NULL, 12, 'done', 0, NULL, NULL, 3000, 3001, 3030,
   0.95, 0.94, 4.0, 300000, 20000000, 29.0, NULL),
  (31, 3, 1, 'gx', 0, '{}', NULL, NULL, 12, 'done', 0, NULL, NULL, 3000, 3001, 3040,
   0.50, 0.50, 1.0, 1000, 1000, 1.0, NULL),
  (40, 4, 0, '|k5~0|+|k5~1|', 0, '{}', NULL, NULL, 12, 'done', 0, NULL, NULL, 4000, 4001, 4030,
   0.97, 0.96, 4.0, 300000, 20000000, 29.0, NULL);
INSERT INTO epochs (trial_id, attempt, epoch, train_loss, train_acc, val_acc, lr, seconds) VALUES
  (6, 1, 3, 0.8, 0.75, 0.90, 0.01, 20.0),
  (6, 0, 1, 2.0, 0.30, 0.35, 0.1, 5.0),
  (6, 1, 1, 1.9, 0.40, 0.45, 0.1, 20.0),
  (6, 0, 2, 1.5, 0.45, 0.50, 0.1, 5.0),
  (6, 1, 2, 1.2, 0.60, 0.70, 0.05, 20.0),
  (1, 0, 1, 1.0, 0.70, NULL, 0.1, 30.0);
INSERT INTO late_results (trial_id, attempt, received_at, val_acc, worker_id) VALUES
  (6, 0, 1100, 0.5, 1),
  (22, 0, 2100, NULL, 1);
)sql");
  // Hashes as the writer stores them; 'collider' shares k5's hash to prove keys are compared.
  db::Statement hash = c.prepare("UPDATE trials SET arch_hash = ?1 WHERE arch_key = ?2");
  for (const char* key : {"a0", "a1", "a2", "a3", "a4", "|k5~0|+|k5~1|", "a6", "a7", "a8", "k9",
                          "a10", "a11", "a12", "b2", "gx"}) {
    hash.reset();
    hash.bind_all(fnv1a64(key), key).step();
  }
  hash.reset();
  hash.bind_all(fnv1a64("|k5~0|+|k5~1|"), "collider").step();
  tx.commit();
}

}  // namespace minas::test

namespace {

namespace fs = std::filesystem;
namespace db = minas::db;
using minas::test::contains;
using minas::test::error_of;

constexpr const char* kK5 = "|k5~0|+|k5~1|";

// A store path unique to this case, holding the known data set unless told otherwise.
struct TempStore : minas::test::TempDbPath {
  explicit TempStore(bool known = true) : TempDbPath("test-queries") {
    if (known) minas::test::write_known_store(str());
  }
};

// The file's bytes, to prove a refused statement left it exactly as it was.
std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string num(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  return std::string(buf, end);
}
template <class T>
std::string opt(const std::optional<T>& v) {
  if (!v) return "-";
  if constexpr (std::is_same_v<T, std::string>) {
    return *v;
  } else {
    return num(static_cast<double>(*v));
  }
}

// A trial as one line, every field, for exact comparisons with readable failures.
std::string line(const db::TrialRow& r) {
  return std::to_string(r.number) + " " + r.arch_key + " " + r.status + " a" +
         std::to_string(r.attempt) + " f" + std::to_string(r.fidelity) + " " + opt(r.worker) + " " +
         opt(r.device) + " val=" + opt(r.val_acc) + " test=" + opt(r.test_acc) +
         " lat=" + opt(r.latency_ms) + " params=" + opt(r.params) + " macs=" + opt(r.macs) +
         " train=" + opt(r.train_seconds) + " t=" + num(r.queued_at) + "/" + opt(r.started_at) +
         "/" + opt(r.finished_at) + " parent=" + opt(r.parent_number) + " mut=" + opt(r.mutation) +
         " err=" + opt(r.error);
}

std::vector<int64_t> numbers(const std::vector<db::TrialRow>& rows) {
  std::vector<int64_t> out;
  for (const auto& r : rows) out.push_back(r.number);
  return out;
}

std::string joined(const std::vector<int64_t>& v) {
  std::string out;
  for (int64_t x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

std::vector<db::Constraint> where(std::string_view text) {
  return db::parse_constraints(text);
}

}  // namespace

TEST_CASE("queries: metrics parse by name, with their direction, and list themselves on error") {
  for (db::Metric m : db::all_metrics()) CHECK(db::parse_metric(db::metric_name(m)) == m);
  CHECK(db::higher_is_better(db::Metric::val_acc));
  CHECK(db::higher_is_better(db::Metric::test_acc));
  CHECK_FALSE(db::higher_is_better(db::Metric::latency_ms));
  CHECK_FALSE(db::higher_is_better(db::Metric::params));
  CHECK_FALSE(db::higher_is_better(db::Metric::macs));
  CHECK_FALSE(db::higher_is_better(db::Metric::train_seconds));
  CHECK(std::string(error_of([] { db::parse_metric("latency"); }).what()) ==
        "unknown metric 'latency' (metrics: val_acc, test_acc, latency_ms, params, macs, "
        "train_seconds)");
}

TEST_CASE("queries: constraints parse, hold, print, and name the bad part") {
  const auto cs = where(" latency_ms<=2 , params<200000,val_acc>=93.5%,test_acc>0.5,macs>=1e6");
  REQUIRE(cs.size() == 5);
  CHECK(cs[0].to_string() == "latency_ms<=2");
  CHECK(cs[1].to_string() == "params<200000");
  CHECK(cs[2].metric == db::Metric::val_acc);
  CHECK(cs[2].op == db::CompareOp::ge);
  CHECK(cs[2].value == doctest::Approx(0.935));
  CHECK(cs[3].to_string() == "test_acc>0.5");
  CHECK(cs[4].to_string() == "macs>=1000000");
  CHECK(cs[0].holds(2));
  CHECK_FALSE(cs[1].holds(200000));
  CHECK(cs[1].holds(199999));
  CHECK_FALSE(cs[3].holds(0.5));
  CHECK(where("").empty());
  CHECK(where("  ").empty());

  auto message = [](std::string_view text) {
    return std::string(error_of([&] { db::parse_constraints(text); }).what());
  };
  CHECK(message("latency_ms<=2,latency<=3") ==
        "constraint 'latency<=3': unknown metric 'latency' (metrics: val_acc, test_acc, "
        "latency_ms, params, macs, train_seconds)");
  CHECK(message("latency_ms=2") ==
        "constraint 'latency_ms=2': expected METRIC<=NUMBER (or <, >=, >), e.g. latency_ms<=2");
  CHECK(message("params<=2k") == "constraint 'params<=2k': '2k' is not a number");
  CHECK(message("params<=") == "constraint 'params<=': '' is not a number");
  CHECK(message("params<=5%") == "constraint 'params<=5%': '5%' is not a number");
  CHECK(message("val_acc>=93") ==
        "constraint 'val_acc>=93': accuracies are fractions in [0, 1]; for a percentage write "
        "93%");
  CHECK(message("params<=1,,macs<=2") == "constraint '': empty (a stray comma?)");
  CHECK(message("params<=inf") == "constraint 'params<=inf': 'inf' is not a number");
}

TEST_CASE("queries: the store opens read-only and is checked, bad files are refused unchanged") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  CHECK(conn.mode() == db::OpenMode::ReadOnly);
  CHECK(db::check_store(conn) == db::current_schema_version());
  CHECK(contains(error_of([&] { conn.exec("DELETE FROM trials"); }).what(), "read-only"));

  const std::string missing = store.str() + ".missing";
  CHECK(std::string(error_of([&] { db::open_store_readonly(missing); }).what()) ==
        missing + ": no such store file (reading never creates one)");
  CHECK_FALSE(fs::exists(missing));

  CHECK(std::string(error_of([] { db::open_store_readonly("/"); }).what()) ==
        "/: is a directory, not a minas store");

  TempStore text(false);
  {
    std::FILE* f = std::fopen(text.str().c_str(), "w");
    REQUIRE(f);
    std::fputs("name,val_acc\nx,0.5\n", f);
    std::fclose(f);
  }
  CHECK(std::string(error_of([&] { db::open_store_readonly(text.str()); }).what()) ==
        text.str() + ": not a minas store (not an SQLite database)");
  CHECK(fs::file_size(text.path) == 19);  // untouched

  TempStore other(false);
  {
    db::Connection c = db::Connection::open(other.str());
    c.exec("CREATE TABLE t (x); PRAGMA application_id = 42");
  }
  CHECK(std::string(error_of([&] { db::open_store_readonly(other.str()); }).what()) ==
        other.str() +
            ": not a minas store (its application_id is 0x0000002a; a minas store's is "
            "0x6d6e6173, 'mnas')");

  TempStore newer(false);
  {
    db::Connection c = db::Connection::open(newer.str());
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
    db::set_user_version(c, db::current_schema_version() + 1);
  }
  CHECK(std::string(error_of([&] { db::open_store_readonly(newer.str()); }).what()) ==
        newer.str() + ": schema version " + std::to_string(db::current_schema_version() + 1) +
            " is newer than this minas reads (up to " +
            std::to_string(db::current_schema_version()) + "); use a newer minas");

  TempStore empty(false);
  {
    db::Connection c = db::Connection::open(empty.str());
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
  }
  CHECK(std::string(error_of([&] { db::open_store_readonly(empty.str()); }).what()) ==
        empty.str() + ": minas store without a schema (version 0): it was never initialized");
}

TEST_CASE("queries: experiments list with counts per status and the best val_acc") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  const auto rows = db::experiments(conn);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].id == 1);
  CHECK(rows[0].name == "alpha");
  CHECK(rows[0].space == "nb201");
  CHECK(rows[0].dataset == "cifar10");
  CHECK(rows[0].dataset_fingerprint == "fp-cifar");
  CHECK(rows[0].strategy == "evolution");
  CHECK(rows[0].status == "running");
  CHECK(rows[0].created_at == 1000);
  CHECK(rows[0].counts == db::StatusCounts{1, 1, 8, 2, 1});
  CHECK(rows[0].counts.total() == 13);
  CHECK(rows[0].best_val_acc == 0.90);
  CHECK(rows[1].name == "beta");
  CHECK(rows[1].counts == db::StatusCounts{0, 0, 3, 1, 0});
  CHECK(rows[1].best_val_acc == 0.99);
  CHECK(rows[2].name == "gamma");
  CHECK(rows[2].counts == db::StatusCounts{0, 0, 2, 0, 0});
  CHECK(rows[2].best_val_acc == 0.95);
  CHECK(rows[3].name == "delta");
  CHECK(rows[3].status == "stopped");
  CHECK(rows[3].best_val_acc == 0.97);
  CHECK(db::status_counts(conn, 1) == db::StatusCounts{1, 1, 8, 2, 1});
  CHECK(db::status_counts(conn, 99) == db::StatusCounts{});
}

TEST_CASE("queries: find_experiment_id by name, the only one by default, or a clear error") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  CHECK(db::find_experiment_id(conn, "gamma") == 3);
  CHECK(db::experiment_name(conn, 3) == "gamma");
  CHECK(std::string(error_of([&] { db::find_experiment_id(conn, "omega"); }).what()) ==
        "no experiment 'omega' in " + store.str() + " (experiments: alpha, beta, gamma, delta)");
  CHECK(std::string(error_of([&] { db::find_experiment_id(conn, std::nullopt); }).what()) ==
        store.str() +
            ": the store holds 4 experiments; choose one with --experiment NAME (experiments: "
            "alpha, beta, gamma, delta)");

  TempStore one(false);
  {
    db::Connection c = db::Connection::open(one.str());
    for (const db::Migration& m : db::migrations()) c.exec(m.sql);
    db::set_user_version(c, db::current_schema_version());
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
  }
  db::Connection none = db::open_store_readonly(one.str());
  CHECK(std::string(error_of([&] { db::find_experiment_id(none, std::nullopt); }).what()) ==
        one.str() + ": the store holds no experiments yet");
  CHECK(std::string(error_of([&] { db::find_experiment_id(none, "x"); }).what()) ==
        "no experiment 'x' in " + one.str() + " (experiments: none)");
  {
    db::Connection c = db::Connection::open(one.str());
    c.exec(
        "INSERT INTO experiments (name, space, space_json, dataset, dataset_fingerprint, "
        "strategy, strategy_settings, recipe, recipe_hash, objective, status, created_at) "
        "VALUES ('solo', 's', '{}', 'd', 'f', 'random', '{}', '{}', 'r', 'val_acc', 'created', 1)");
  }
  db::Connection single = db::open_store_readonly(one.str());
  CHECK(db::find_experiment_id(single, std::nullopt) == 1);
}

TEST_CASE("queries: top_k ranks done trials by the metric's direction, ties by number") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  const auto top = db::top_k(conn, 1, db::Metric::val_acc, 10);
  // Pruned trial 4 (0.60) and the unfinished ones never rank.
  CHECK(joined(numbers(top)) == "5,11,9,1,3,0,12,6");
  REQUIRE(top.size() == 8);
  CHECK(line(top[0]) ==
        "5 |k5~0|+|k5~1| done a1 f12 w2 cuda:0 val=0.9 test=0.88 lat=4 params=300000 "
        "macs=20000000 train=60 t=1020/1051/1111 parent=3 mut=mut c err=-");
  CHECK(line(top[6]) ==
        "12 a12 done a0 f12 w1 cpu val=0.75 test=0.74 lat=- params=80000 macs=3000000 train=29 "
        "t=1040/1121/1150 parent=- mut=- err=-");
  CHECK(top[0].value(db::Metric::params) == 300000.0);

  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::val_acc, 3))) == "5,11,9");
  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::test_acc, 3))) == "11,5,9");
  // Costs rank lowest first; trial 12 has no latency and is left out of that ranking.
  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::latency_ms, 10))) == "6,3,0,9,1,5,11");
  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::params, 4))) == "6,12,0,9");
  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::macs, 2))) == "6,12");
  CHECK(joined(numbers(db::top_k(conn, 1, db::Metric::train_seconds, 3))) == "6,11,9");
  CHECK(joined(numbers(db::top_k(conn, 2, db::Metric::val_acc, 10))) == "3,0,1");
  CHECK(db::top_k(conn, 99, db::Metric::val_acc, 10).empty());
  CHECK(std::string(error_of([&] { db::top_k(conn, 1, db::Metric::val_acc, 0); }).what()) ==
        "k must be at least 1 (got 0)");
}

TEST_CASE("queries: top_k keeps only trials that meet every constraint") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  auto top = [&](std::string_view w, int64_t k = 10) {
    return joined(numbers(db::top_k(conn, 1, db::Metric::val_acc, k, where(w))));
  };
  CHECK(top("latency_ms<=2") == "9,3,0,6");
  CHECK(top("latency_ms<2") == "3,6");
  CHECK(top("latency_ms<=2,params<=110000") == "9,0,6");
  CHECK(top("latency_ms<=2,params<=110000", 2) == "9,0");
  CHECK(top("val_acc>=85%") == "5,11,9,1,3");
  CHECK(top("val_acc>0.85") == "5,11,9");
  // A NULL never satisfies a constraint: trial 12 has no latency.
  CHECK(top("latency_ms>=0") == "5,11,9,1,3,0,6");
  CHECK(top("params>1e9").empty());
}

TEST_CASE("queries: pareto keeps the non-dominated done trials, sorted by the cost") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  // (latency, val_acc): 6 (1.0, .70), 3 (1.5, .85), 0 (2.0, .80), 9 (2.0, .88), 1 (3.0, .85),
  // 5 (4.0, .90), 11 (4.0, .90). 0 loses to 9 at equal latency, 1 to 3 at equal accuracy;
  // 5 and 11 are equal, so both stay. 12 has no latency.
  const auto front = db::pareto(conn, 1, db::Metric::latency_ms);
  CHECK(joined(numbers(front)) == "6,3,9,5,11");
  REQUIRE(front.size() == 5);
  CHECK(line(front[2]) ==
        "9 k9 done a0 f12 w2 cuda:1 val=0.88 test=0.87 lat=2 params=110000 macs=5500000 "
        "train=28 t=1030/1112/1140 parent=1 mut=mut d err=-");
  CHECK(joined(numbers(db::pareto(conn, 1, db::Metric::latency_ms, db::Metric::val_acc,
                                  where("params<=200000")))) == "6,3,9");
  // (params, val_acc): 6 50k .70, 12 80k .75, 0 100k .80, 9 110k .88, 3 120k .85,
  // 1 150k .85, 11 250k .90, 5 300k .90.
  CHECK(joined(numbers(db::pareto(conn, 1, db::Metric::params))) == "6,12,0,9,11");
  CHECK(joined(numbers(db::pareto(conn, 1, db::Metric::macs, db::Metric::test_acc))) ==
        "6,12,0,9,11");
  // Two costs: (latency, params), both minimized.
  CHECK(joined(numbers(db::pareto(conn, 1, db::Metric::latency_ms, db::Metric::params))) == "6");
  CHECK(db::pareto(conn, 1, db::Metric::latency_ms, db::Metric::val_acc, where("params>1e9"))
            .empty());
  CHECK(contains(error_of([&] { db::pareto(conn, 1, db::Metric::val_acc); }).what(),
                 "x axis is a cost to minimize"));
  CHECK(contains(
      error_of([&] { db::pareto(conn, 1, db::Metric::params, db::Metric::params); }).what(),
      "two different metrics"));
}

// The front by its definition, O(n^2): x minimized, y maximized; sorted by x, then number.
std::vector<int64_t> brute_front(const std::vector<db::TrialRow>& all, db::Metric x, db::Metric y) {
  std::vector<const db::TrialRow*> front;
  for (const auto& p : all) {
    const double px = *p.value(x), py = *p.value(y);
    bool dominated = false;
    for (const auto& q : all) {
      const double qx = *q.value(x), qy = *q.value(y);
      dominated = dominated || (qx <= px && qy >= py && (qx < px || qy > py));
    }
    if (!dominated) front.push_back(&p);
  }
  std::sort(front.begin(), front.end(), [&](const auto* a, const auto* b) {
    return std::pair(*a->value(x), a->number) < std::pair(*b->value(x), b->number);
  });
  std::vector<int64_t> out;
  for (const auto* r : front) out.push_back(r->number);
  return out;
}

TEST_CASE("queries: pareto and constrained top_k agree with their definitions on random data") {
  // 1 'coarse': few distinct values, so ties on each axis and equal points abound. 2 'fine':
  // accuracy rising with latency plus noise, 6,000 trials (the table scan; past the walk's
  // budget for selective constraints). 3 'line': every point on the front. 4 'small': under
  // an eighth of the table, read through the index instead of the scan.
  TempStore store(false);
  {
    db::Connection c = db::Connection::open(store.str());
    db::Transaction tx(c);
    for (const db::Migration& m : db::migrations()) c.exec(m.sql);
    db::set_user_version(c, db::current_schema_version());
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
    db::Statement exp = c.prepare(
        "INSERT INTO experiments VALUES (?1, ?2, 's', '{}', 'd', 'f', 'random', '{}', '{}', "
        "'r', 'val_acc', 'running', 0, NULL, NULL, 0, NULL, NULL, NULL)");
    db::Statement ins = c.prepare(
        "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
        "status, queued_at, val_acc, latency_ms, params) VALUES (?1, ?2, 'k', 0, '{}', 1, "
        "'done', 0, ?3, ?4, ?5)");
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> u(0, 1);
    auto add = [&](int e, int n, auto point) {
      exp.reset();
      exp.bind_all(e, "e" + std::to_string(e));
      exp.step();
      for (int i = 0; i < n; ++i) {
        const auto [acc, lat, params] = point(i);
        ins.reset();
        ins.bind_all(e, i, acc, lat, params);
        ins.step();
      }
    };
    add(1, 3000, [&](int) {
      return std::tuple(static_cast<int>(rng() % 20) / 20.0, static_cast<int>(rng() % 15) / 2.0,
                        static_cast<int64_t>(rng() % 30));
    });
    add(2, 6000, [&](int) {
      const double lat = u(rng);
      return std::tuple(std::min(1.0, 0.5 * lat + 0.5 * u(rng)), lat,
                        static_cast<int64_t>(rng() % 1000000));
    });
    add(3, 1200, [&](int i) { return std::tuple(i / 1200.0, 1.0 + i, int64_t{1000} - i); });
    add(4, 400, [&](int) { return std::tuple(u(rng), u(rng), static_cast<int64_t>(rng() % 50)); });
    tx.commit();
  }
  db::Connection conn = db::open_store_readonly(store.str());
  for (int64_t e = 1; e <= 4; ++e) {
    CAPTURE(e);
    const auto all = db::top_k(conn, e, db::Metric::val_acc, 100000);
    for (db::Metric x : {db::Metric::latency_ms, db::Metric::params}) {
      CAPTURE(db::metric_name(x));
      CHECK(joined(numbers(db::pareto(conn, e, x))) ==
            joined(brute_front(all, x, db::Metric::val_acc)));
    }
  }
  CHECK(db::pareto(conn, 3, db::Metric::latency_ms).size() == 1200);

  // Constrained rankings, by their definition: the walk for a loose constraint, the scan after
  // the walk gives up for a selective one, and the scan for a metric with no index.
  const auto all = db::top_k(conn, 2, db::Metric::val_acc, 100000);
  REQUIRE(all.size() == 6000);
  for (const char* w : {"latency_ms<=0.9", "latency_ms<=0.02", "latency_ms<0", "params>=999000"}) {
    CAPTURE(w);
    const auto cs = where(w);
    std::vector<int64_t> expected;
    for (const auto& r : all) {  // all is in rank order already
      if (cs[0].holds(*r.value(cs[0].metric)) && expected.size() < 15) expected.push_back(r.number);
    }
    CHECK(joined(numbers(db::top_k(conn, 2, db::Metric::val_acc, 15, cs))) == joined(expected));
  }
  std::vector<db::TrialRow> by_latency = all;
  std::sort(by_latency.begin(), by_latency.end(), [](const auto& a, const auto& b) {
    return std::pair(*a.latency_ms, a.number) < std::pair(*b.latency_ms, b.number);
  });
  by_latency.resize(20);
  CHECK(joined(numbers(db::top_k(conn, 2, db::Metric::latency_ms, 20))) ==
        joined(numbers(by_latency)));
}

TEST_CASE("queries: best_so_far has a point at each improvement, by finish time") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  auto text = [&](db::Metric m) {
    std::string out;
    for (const auto& p : db::best_so_far(conn, 1, m)) {
      out += std::to_string(p.trials) + "@" + num(p.seconds) + ":" + num(p.best) + "#" +
             std::to_string(p.number) + " ";
    }
    return out;
  };
  // Finish order: 0 2(failed) 1 4(pruned) 3 6 5 11 9 10(failed) 12; seconds from 1000, the
  // first queued_at. Equal values (3 after 1, 11 after 5) are not improvements.
  CHECK(text(db::Metric::val_acc) == "1@31:0.8#0 3@41:0.85#1 7@111:0.9#5 ");
  CHECK(text(db::Metric::latency_ms) == "1@31:2#0 5@71:1.5#3 6@92:1#6 ");
  CHECK(text(db::Metric::test_acc) ==
        "1@31:0.79#0 3@41:0.84#1 5@71:0.86#3 7@111:0.88#5 "
        "8@120:0.89#11 ");
  CHECK(db::best_so_far(conn, 99, db::Metric::val_acc).empty());
}

TEST_CASE("queries: trial gives the row, the current attempt's curve, lineage and children") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  const db::TrialDetail d = db::trial(conn, 1, 5);
  CHECK(line(d.trial) ==
        "5 |k5~0|+|k5~1| done a1 f12 w2 cuda:0 val=0.9 test=0.88 lat=4 params=300000 "
        "macs=20000000 train=60 t=1020/1051/1111 parent=3 mut=mut c err=-");
  REQUIRE(d.curve.size() == 3);  // attempt 1 only; attempt 0's two epochs are history
  std::string curve;
  for (const auto& e : d.curve) {
    curve += std::to_string(e.epoch) + ":" + opt(e.train_loss) + "," + opt(e.train_acc) + "," +
             opt(e.val_acc) + "," + opt(e.lr) + "," + opt(e.seconds) + " ";
  }
  CHECK(curve == "1:1.9,0.4,0.45,0.1,20 2:1.2,0.6,0.7,0.05,20 3:0.8,0.75,0.9,0.01,20 ");
  REQUIRE(d.lineage.size() == 3);
  std::string lineage;
  for (const auto& s : d.lineage) {
    lineage += s.experiment + "#" + std::to_string(s.number) + " " + s.arch_key + " " + s.status +
               " " + opt(s.val_acc) + " " + opt(s.mutation) + "; ";
  }
  CHECK(lineage ==
        "alpha#0 a0 done 0.8 -; alpha#1 a1 done 0.85 mut a; alpha#3 a3 done 0.85 "
        "mut b; ");
  CHECK(d.children.empty());

  const db::TrialDetail one = db::trial(conn, 1, 1);
  CHECK(joined(one.children) == "3,9");
  REQUIRE(one.lineage.size() == 1);
  CHECK(one.lineage[0].number == 0);

  const db::TrialDetail root = db::trial(conn, 1, 0);
  CHECK(root.lineage.empty());
  CHECK(joined(root.children) == "1");
  REQUIRE(root.curve.size() == 1);
  CHECK_FALSE(root.curve[0].val_acc);

  const db::TrialDetail failed = db::trial(conn, 1, 2);
  CHECK(failed.trial.error == std::optional<std::string>("CUDA error: out of memory, \"step 3\"\n"
                                                         "retry 2 of 2"));
  CHECK(failed.curve.empty());

  CHECK(std::string(error_of([&] { db::trial(conn, 1, 13); }).what()) ==
        "no trial 13 in experiment 'alpha' of " + store.str() +
            " (its trials are numbered 0 to 12)");
}

TEST_CASE("queries: failures newest first with reasons, and the late results count") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  const db::Failures f = db::failures(conn, 1);
  REQUIRE(f.rows.size() == 2);
  CHECK(f.rows[0].number == 10);
  CHECK(f.rows[0].arch_key == "a10");
  CHECK(f.rows[0].attempt == 0);
  CHECK(f.rows[0].worker == std::optional<std::string>("w2"));
  CHECK(f.rows[0].error == std::optional<std::string>("diverged: loss is NaN"));
  CHECK(f.rows[0].finished_at == 1145.0);
  CHECK(f.rows[1].number == 2);
  CHECK(f.rows[1].attempt == 2);
  CHECK(f.rows[1].worker == std::optional<std::string>("w1"));
  CHECK(f.rows[1].finished_at == 1035.0);
  CHECK(f.late_results == 1);
  const db::Failures beta = db::failures(conn, 2);
  REQUIRE(beta.rows.size() == 1);
  CHECK(beta.rows[0].error == std::optional<std::string>("lost worker w1"));
  CHECK(beta.late_results == 1);
  CHECK(db::failures(conn, 3).rows.empty());
  CHECK(db::failures(conn, 3).late_results == 0);
}

TEST_CASE("queries: workers with utilization and trials done per experiment or overall") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  auto text = [](const std::vector<db::WorkerRow>& rows) {
    std::string out;
    for (const auto& w : rows) {
      out += w.name + " " + w.host + " " + w.devices + " " + num(w.first_seen) + "-" +
             num(w.last_seen) + " " + num(w.connected_seconds) + "/" + num(w.busy_seconds) +
             " u=" + opt(w.utilization) + " done=" + std::to_string(w.trials_done) + "; ";
    }
    return out;
  };
  CHECK(text(db::workers(conn, 1)) ==
        "w1 h1 [\"cpu\"] 1000-1500 400/300 u=0.75 done=5; "
        "w2 h2 [\"cuda:0\",\"cuda:1\"] 1000-1600 500/100 u=0.2 done=3; "
        "w3 h3 [] 1700-1700 0/0 u=- done=0; ");
  CHECK(text(db::workers(conn)) ==
        "w1 h1 [\"cpu\"] 1000-1500 400/300 u=0.75 done=5; "
        "w2 h2 [\"cuda:0\",\"cuda:1\"] 1000-1600 500/100 u=0.2 done=5; "
        "w3 h3 [] 1700-1700 0/0 u=- done=0; ");
}

TEST_CASE(
    "queries: cached_result finds the best done trial of exactly that key across "
    "experiments") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  // k5 ran in alpha (0.90), beta (0.91) with recipe r1, gamma (0.95) with r2, and delta (0.97)
  // on another data set; 'collider' in beta shares k5's hash with 0.99.
  auto hit = db::cached_result(conn, kK5, "fp-cifar", "r1", 12);
  REQUIRE(hit);
  CHECK(hit->experiment == "beta");
  CHECK(hit->trial.number == 0);
  CHECK(hit->trial.val_acc == 0.91);
  CHECK(hit->trial.arch_key == kK5);
  hit = db::cached_result(conn, kK5, "fp-cifar", "r2", 12);
  REQUIRE(hit);
  CHECK(hit->experiment == "gamma");
  CHECK(hit->trial.val_acc == 0.95);
  hit = db::cached_result(conn, kK5, "fp-fashion", "r1", 12);
  REQUIRE(hit);
  CHECK(hit->experiment == "delta");
  hit = db::cached_result(conn, "k9", "fp-cifar", "r1", 12);
  REQUIRE(hit);
  CHECK(hit->experiment == "alpha");
  CHECK(hit->trial.number == 9);
  CHECK(line(hit->trial) ==
        "9 k9 done a0 f12 w2 cuda:1 val=0.88 test=0.87 lat=2 params=110000 macs=5500000 "
        "train=28 t=1030/1112/1140 parent=1 mut=mut d err=-");
  CHECK_FALSE(db::cached_result(conn, kK5, "fp-cifar", "r1", 4));    // other fidelity
  CHECK_FALSE(db::cached_result(conn, kK5, "fp-none", "r1", 12));    // other data set
  CHECK_FALSE(db::cached_result(conn, "a4", "fp-cifar", "r1", 4));   // pruned, not done
  CHECK_FALSE(db::cached_result(conn, "a2", "fp-cifar", "r1", 12));  // failed
  CHECK_FALSE(db::cached_result(conn, "nope", "fp-cifar", "r1", 12));
}

TEST_CASE("queries: best_for_dataset gives distinct architectures at their best, any recipe") {
  TempStore store;
  db::Connection conn = db::open_store_readonly(store.str());
  std::string out;
  for (const auto& b : db::best_for_dataset(conn, "fp-cifar", 100)) {
    out += b.arch_key + " " + num(b.val_acc) + " " + opt(b.test_acc) + " f" +
           std::to_string(b.fidelity) + " " + b.recipe_hash + " " + b.experiment + "#" +
           std::to_string(b.number) + "; ";
  }
  CHECK(out ==
        "collider 0.99 - f12 r1 beta#3; |k5~0|+|k5~1| 0.95 0.94 f12 r2 gamma#0; "
        "a11 0.9 0.89 f12 r1 alpha#11; k9 0.88 0.87 f12 r1 alpha#9; a1 0.85 0.84 f12 r1 alpha#1; "
        "a3 0.85 0.86 f12 r1 alpha#3; a0 0.8 0.79 f12 r1 alpha#0; a12 0.75 0.74 f12 r1 alpha#12; "
        "a6 0.7 0.69 f12 r1 alpha#6; gx 0.5 0.5 f12 r2 gamma#1; ");
  const auto top2 = db::best_for_dataset(conn, "fp-cifar", 2);
  REQUIRE(top2.size() == 2);
  CHECK(top2[1].arch_key == kK5);
  const auto fashion = db::best_for_dataset(conn, "fp-fashion", 5);
  REQUIRE(fashion.size() == 1);
  CHECK(fashion[0].experiment == "delta");
  CHECK(db::best_for_dataset(conn, "fp-none", 5).empty());
}

TEST_CASE("queries: a reader sees only committed trials and never blocks the writer") {
  TempStore store;
  db::Connection writer = db::Connection::open(store.str());
  db::Connection reader = db::open_store_readonly(store.str());
  db::Transaction tx(writer);
  writer.exec(
      "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
      "status, queued_at, finished_at, val_acc) VALUES (1, 13, 'new', 0, '{}', 12, 'done', "
      "1200, 1200, 0.999)");
  CHECK(db::top_k(reader, 1, db::Metric::val_acc, 1)[0].number == 5);
  const db::TrialDetail d = db::trial(reader, 1, 5);  // its own read transaction, ended
  CHECK_FALSE(reader.in_transaction());
  tx.commit();
  CHECK(db::top_k(reader, 1, db::Metric::val_acc, 1)[0].number == 13);
  CHECK(db::status_counts(reader, 1).done == 9);
  // Inside the caller's transaction the queries join it instead of nesting.
  writer.exec("BEGIN");
  CHECK(db::experiments(writer).size() == 4);
  CHECK(db::trial(writer, 1, 13).trial.val_acc == 0.999);
  CHECK(writer.in_transaction());
  writer.exec("COMMIT");
}

TEST_CASE("queries: a schema version 1 store reads, with no late results") {
  TempStore store(false);
  {
    db::Connection c = db::Connection::open(store.str());
    c.exec(db::migrations()[0].sql);
    db::set_user_version(c, 1);
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
    c.exec(
        "INSERT INTO experiments VALUES (1, 'old', 's', '{}', 'd', 'f', 'random', '{}', '{}', "
        "'r', 'val_acc', 'running', 0, NULL, NULL);"
        "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
        "status, queued_at, finished_at, error) VALUES (1, 0, 'k', 0, '{}', 1, 'failed', 0, 1, "
        "'boom')");
  }
  db::Connection conn = db::open_store_readonly(store.str());
  CHECK(db::check_store(conn) == 1);
  const db::Failures f = db::failures(conn, db::find_experiment_id(conn, std::nullopt));
  REQUIRE(f.rows.size() == 1);
  CHECK(f.late_results == 0);
}

TEST_CASE("queries: run_readonly_sql reads, and refuses writes before they run") {
  TempStore store;
  const std::string before = file_bytes(store.path);
  const auto before_time = fs::last_write_time(store.path);

  const db::SqlResult r = db::run_readonly_sql(
      store.str(),
      "SELECT number, arch_key, val_acc, params, error, x'00ff' AS b FROM trials "
      "WHERE experiment_id = 1 AND number IN (2, 5) ORDER BY number");
  CHECK(r.columns ==
        std::vector<std::string>{"number", "arch_key", "val_acc", "params", "error", "b"});
  REQUIRE(r.rows.size() == 2);
  CHECK(std::get<int64_t>(r.rows[0][0]) == 2);
  CHECK(std::holds_alternative<std::monostate>(r.rows[0][2]));
  CHECK(std::get<std::string>(r.rows[0][4]) ==
        "CUDA error: out of memory, \"step 3\"\nretry 2 of 2");
  CHECK(std::get<std::string>(r.rows[1][1]) == kK5);
  CHECK(std::get<double>(r.rows[1][2]) == 0.90);
  CHECK(std::get<int64_t>(r.rows[1][3]) == 300000);
  CHECK(std::get<std::vector<std::byte>>(r.rows[1][5]) ==
        std::vector<std::byte>{std::byte{0}, std::byte{0xff}});
  CHECK(db::run_readonly_sql(store.str(), "SELECT 1 WHERE 0").rows.empty());
  CHECK(db::run_readonly_sql(store.str(), "SELECT 1; -- trailing comment").rows.size() == 1);

  const std::string scratch = store.str() + ".vacuumed";
  for (const std::string& sql : std::vector<std::string>{
           "DELETE FROM trials", "UPDATE trials SET val_acc = 1",
           "INSERT INTO workers (name, host, "
           "devices, first_seen, last_seen) VALUES ('x', 'h', '[]', 0, 0)",
           "CREATE TABLE t (x)", "DROP TABLE epochs", "CREATE TEMP TABLE t (x)",
           "PRAGMA user_version = 99", "PRAGMA journal_mode = DELETE", "VACUUM",
           "VACUUM INTO '" + scratch + "'", "REINDEX", "ANALYZE",
           "WITH x AS (SELECT 1) DELETE FROM trials",
           "REPLACE INTO strategy_state VALUES (1, '', 0)"}) {
    CAPTURE(sql);
    const std::string message = error_of([&] { db::run_readonly_sql(store.str(), sql); }).what();
    CHECK(message == store.str() +
                         ": refused: minas sql only reads the store (it is opened read-only), and "
                         "this statement would write: " +
                         sql);
  }
  CHECK(std::string(error_of([&] {
                      db::run_readonly_sql(store.str(), "ATTACH '" + scratch + "' AS other");
                    }).what()) ==
        store.str() +
            ": refused: minas sql only reads the store (it is opened read-only), and ATTACH is "
            "not allowed");
  CHECK(contains(error_of([&] { db::run_readonly_sql(store.str(), "DETACH main"); }).what(),
                 "DETACH is not allowed"));
  CHECK(std::string(error_of([&] {
                      db::run_readonly_sql(store.str(), "SELECT 1; DELETE FROM trials");
                    }).what()) ==
        "one SQL statement at a time, got more: SELECT 1; DELETE FROM trials");
  CHECK(contains(error_of([&] { db::run_readonly_sql(store.str(), "SELECT 1; nonsense"); }).what(),
                 "one SQL statement at a time"));
  CHECK(std::string(error_of([&] { db::run_readonly_sql(store.str(), " ;"); }).what()) ==
        "no SQL statement given");
  CHECK(std::string(error_of([&] { db::run_readonly_sql(store.str(), "-- only"); }).what()) ==
        "no SQL statement given (only comments)");
  CHECK(contains(error_of([&] { db::run_readonly_sql(store.str(), "SELEC 1"); }).what(),
                 "syntax error"));
  CHECK(contains(error_of([&] { db::run_readonly_sql(store.str(), "SELECT * FROM nope"); }).what(),
                 "no such table: nope"));
  CHECK_FALSE(fs::exists(scratch));
  CHECK(file_bytes(store.path) == before);
  CHECK(fs::last_write_time(store.path) == before_time);
  db::Connection check = db::open_store_readonly(store.str());
  CHECK(db::status_counts(check, 1).total() == 13);
  CHECK(db::user_version(check) == db::current_schema_version());

  const std::string missing = store.str() + ".missing";
  CHECK(std::string(error_of([&] { db::run_readonly_sql(missing, "SELECT 1"); }).what()) ==
        missing + ": no such store file (reading never creates one)");
  CHECK_FALSE(fs::exists(missing));
}
