// `minas query` and `minas sql` as a user runs them, on the known store of test_queries.cpp:
// every subcommand in every format (JSON and CSV parsed back and compared), the read-only
// guarantee, and every bad input with its message and exit status.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "db/schema.h"
#include "db/sqlite.h"
#include "db/store.h"
#include "tests/support.h"

namespace minas::test {
void write_known_store(const std::string& path);  // test_queries.cpp, the same binary
}  // namespace minas::test

namespace {

namespace fs = std::filesystem;
using minas::test::contains;
using minas::test::run_minas;
using Json = nlohmann::json;

// A store path unique to this case, holding the known data set unless told otherwise.
struct TempStore : minas::test::TempDbPath {
  explicit TempStore(bool known = true) : TempDbPath("test-query-cli") {
    if (known) minas::test::write_known_store(str());
  }
};

// The file's bytes, to prove a refused statement left it exactly as it was.
std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Shell-quoted, for run_minas's command line.
std::string q(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// The run's output as JSON; fails the test when it does not parse.
Json json_of(const minas::test::Run& run) {
  CAPTURE(run.out);
  REQUIRE(run.status == 0);
  Json j = Json::parse(run.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

// RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
    } else {
      field += c;
    }
  }
  if (!field.empty() || !row.empty()) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::vector<std::string>> csv_of(const minas::test::Run& run) {
  CAPTURE(run.out);
  REQUIRE(run.status == 0);
  return parse_csv(run.out);
}

std::string numbers_of(const Json& rows) {
  std::string out;
  for (const Json& r : rows)
    out += (out.empty() ? "" : ",") + std::to_string(r["number"].get<int>());
  return out;
}

// The error line a failing run prints, with its status checked.
std::string error_line(const minas::test::Run& run) {
  CAPTURE(run.out);
  CHECK(run.status != 0);
  return run.out;
}

}  // namespace

TEST_CASE("query cli: experiments in table, csv and json") {
  TempStore store;
  const auto table = run_minas("query --db " + q(store.str()) + " experiments");
  CAPTURE(table.out);
  REQUIRE(table.status == 0);
  CHECK(table.out ==
        "name   space  dataset        strategy   status    created_at           trials  queued  "
        "running  done  failed  pruned  best_val_acc\n"
        "alpha  nb201  cifar10        evolution  running   1970-01-01 00:16:40      13       1  "
        "      1     8       2       1        90.00%\n"
        "beta   nb201  cifar10        random     finished  1970-01-01 00:33:20       4       0  "
        "      0     3       1       0        99.00%\n"
        "gamma  nb201  cifar10        reinforce  finished  1970-01-01 00:50:00       2       0  "
        "      0     2       0       0        95.00%\n"
        "delta  small  fashion-mnist  random     stopped   1970-01-01 01:06:40       1       0  "
        "      0     1       0       0        97.00%\n");

  const Json j = json_of(run_minas("query --db " + q(store.str()) + " experiments --format json"));
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 4);
  CHECK(j[0] == Json::parse(R"({"id": 1, "name": "alpha", "space": "nb201", "dataset": "cifar10",
    "dataset_fingerprint": "fp-cifar", "strategy": "evolution", "status": "running",
    "created_at": 1000.0, "trials": 13, "queued": 1, "running": 1, "done": 8, "failed": 2,
    "pruned": 1, "best_val_acc": 0.9})"));
  CHECK(j[3]["name"] == "delta");

  const auto csv = csv_of(run_minas("query --format csv --db " + q(store.str()) + " experiments"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[0] == std::vector<std::string>{"id", "name", "space", "dataset", "dataset_fingerprint",
                                           "strategy", "status", "created_at", "trials", "queued",
                                           "running", "done", "failed", "pruned", "best_val_acc"});
  CHECK(csv[2] == std::vector<std::string>{"2", "beta", "nb201", "cifar10", "fp-cifar", "random",
                                           "finished", "2000", "4", "0", "0", "3", "1", "0",
                                           "0.99"});
}

TEST_CASE("query cli: top with --k, --metric and --where, in every format") {
  TempStore store;
  const std::string db = "query --db " + q(store.str());
  const auto table = run_minas(db + " top --experiment alpha --k 3");
  CAPTURE(table.out);
  REQUIRE(table.status == 0);
  CHECK(table.out ==
        "number  val_acc  test_acc  latency_ms  params      macs  train_seconds  fidelity  worker  "
        "arch_key\n"
        "     5   90.00%    88.00%       4.000  300000  20000000           60.0        12  w2      "
        "|k5~0|+|k5~1|\n"
        "    11   90.00%    89.00%       4.000  250000  15000000           26.0        12  w1      "
        "a11\n"
        "     9   88.00%    87.00%       2.000  110000   5500000           28.0        12  w2      "
        "k9\n");

  const Json j = json_of(run_minas(db + " top --experiment alpha --format json"));
  CHECK(numbers_of(j) == "5,11,9,1,3,0,12,6");
  CHECK(j[0] == Json::parse(R"({"number": 5, "val_acc": 0.9, "test_acc": 0.88,
    "latency_ms": 4.0, "params": 300000, "macs": 20000000, "train_seconds": 60.0,
    "fidelity": 12, "attempt": 1, "status": "done", "worker": "w2", "device": "cuda:0",
    "queued_at": 1020.0, "started_at": 1051.0, "finished_at": 1111.0, "parent": 3,
    "mutation": "mut c", "error": null, "arch_key": "|k5~0|+|k5~1|"})"));
  CHECK(j[6]["latency_ms"].is_null());

  CHECK(numbers_of(json_of(run_minas(db + " top --experiment alpha --format json --where " +
                                     q("latency_ms<=2,params<=110000")))) == "9,0,6");
  CHECK(numbers_of(json_of(run_minas(
            db + " top --experiment alpha --format json --metric latency_ms --k 2"))) == "6,3");
  CHECK(numbers_of(json_of(run_minas(db + " top --experiment beta --format json --where " +
                                     q("val_acc>=80%")))) == "3,0");

  const auto csv = csv_of(run_minas(db + " top --experiment alpha --format csv --k 2"));
  REQUIRE(csv.size() == 3);
  CHECK(csv[0][0] == "number");
  CHECK(csv[0].back() == "arch_key");
  CHECK(csv[1] == std::vector<std::string>{"5", "0.9", "0.88", "4", "300000", "20000000", "60",
                                           "12", "1", "done", "w2", "cuda:0", "1020", "1051",
                                           "1111", "3", "mut c", "", "|k5~0|+|k5~1|"});
}

TEST_CASE("query cli: pareto, progress and failures print what the library computes") {
  TempStore store;
  const std::string db = "query --db " + q(store.str());
  CHECK(numbers_of(json_of(run_minas(db + " pareto --experiment alpha --format json"))) ==
        "6,3,9,5,11");
  CHECK(numbers_of(json_of(run_minas(
            db + " pareto --experiment alpha --x params --format json"))) == "6,12,0,9,11");
  CHECK(numbers_of(json_of(run_minas(db + " pareto --experiment alpha --format json --where " +
                                     q("params<=200000")))) == "6,3,9");
  const auto pareto_csv = csv_of(run_minas(db + " pareto --experiment alpha --format csv"));
  REQUIRE(pareto_csv.size() == 6);
  CHECK(pareto_csv[1][0] == "6");
  CHECK(pareto_csv[5][0] == "11");

  const Json progress = json_of(run_minas(db + " progress --experiment alpha --format json"));
  CHECK(progress == Json::parse(R"([
    {"trials": 1, "seconds": 31.0, "val_acc": 0.8, "number": 0},
    {"trials": 3, "seconds": 41.0, "val_acc": 0.85, "number": 1},
    {"trials": 7, "seconds": 111.0, "val_acc": 0.9, "number": 5}])"));
  const auto table = run_minas(db + " progress --experiment alpha --metric params");
  CAPTURE(table.out);
  CHECK(table.out ==
        "trials  seconds  params  number\n"
        "     1     31.0  100000       0\n"
        "     6     92.0   50000       6\n");
  CHECK(csv_of(run_minas(db + " progress --experiment alpha --format csv --metric latency_ms")) ==
        std::vector<std::vector<std::string>>{{"trials", "seconds", "latency_ms", "number"},
                                              {"1", "31", "2", "0"},
                                              {"5", "71", "1.5", "3"},
                                              {"6", "92", "1", "6"}});

  const auto failures = run_minas(db + " failures --experiment alpha");
  CAPTURE(failures.out);
  CHECK(
      failures.out ==
      "number  attempt  worker  finished_at          error                                    "
      "          arch_key\n"
      "    10        0  w2      1970-01-01 00:19:05  diverged: loss is NaN                    "
      "          a10\n"
      "     2        2  w1      1970-01-01 00:17:15  CUDA error: out of memory, \"step 3\"\\nretry "
      "2 of 2  a2\n"
      "late results: 1 (arrived after their lease expired; kept, not counted)\n");
  // CSV keeps the error's comma, quotes and line break, quoted.
  const auto csv = csv_of(run_minas(db + " failures --experiment alpha --format csv"));
  REQUIRE(csv.size() == 3);
  CHECK(csv[2] == std::vector<std::string>{"2", "2", "w1", "1035",
                                           "CUDA error: out of memory, \"step 3\"\nretry 2 of 2",
                                           "a2"});
  const Json j = json_of(run_minas(db + " failures --experiment alpha --format json"));
  CHECK(j[1]["error"] == "CUDA error: out of memory, \"step 3\"\nretry 2 of 2");
  CHECK(json_of(run_minas(db + " failures --experiment gamma --format json")) == Json::array());
  const auto none = run_minas(db + " failures --experiment gamma");
  CHECK(contains(none.out, "(no rows)\nlate results: 0"));
}

TEST_CASE("query cli: trial as a table, as json with curve and lineage, as csv of its curve") {
  TempStore store;
  const std::string db = "query --db " + q(store.str());
  const Json j = json_of(run_minas(db + " trial --experiment alpha --trial 5 --format json"));
  CHECK(j["experiment"] == "alpha");
  CHECK(j["trial"]["number"] == 5);
  CHECK(j["trial"]["attempt"] == 1);
  CHECK(j["trial"]["parent"] == 3);
  CHECK(j["curve"] == Json::parse(R"([
    {"number": 5, "attempt": 1, "epoch": 1, "train_loss": 1.9, "train_acc": 0.4, "val_acc": 0.45,
     "lr": 0.1, "seconds": 20.0},
    {"number": 5, "attempt": 1, "epoch": 2, "train_loss": 1.2, "train_acc": 0.6, "val_acc": 0.7,
     "lr": 0.05, "seconds": 20.0},
    {"number": 5, "attempt": 1, "epoch": 3, "train_loss": 0.8, "train_acc": 0.75, "val_acc": 0.9,
     "lr": 0.01, "seconds": 20.0}])"));
  CHECK(j["lineage"] == Json::parse(R"([
    {"experiment": "alpha", "number": 0, "status": "done", "val_acc": 0.8, "mutation": null,
     "arch_key": "a0"},
    {"experiment": "alpha", "number": 1, "status": "done", "val_acc": 0.85, "mutation": "mut a",
     "arch_key": "a1"},
    {"experiment": "alpha", "number": 3, "status": "done", "val_acc": 0.85, "mutation": "mut b",
     "arch_key": "a3"}])"));
  CHECK(j["children"] == Json::array());
  CHECK(json_of(run_minas(db + " trial --experiment alpha --trial 1 --format json"))["children"] ==
        Json::parse("[3, 9]"));

  const auto csv = csv_of(run_minas(db + " trial --experiment alpha --trial 5 --format csv"));
  REQUIRE(csv.size() == 4);
  CHECK(csv[0] == std::vector<std::string>{"number", "attempt", "epoch", "train_loss", "train_acc",
                                           "val_acc", "lr", "seconds"});
  CHECK(csv[3] == std::vector<std::string>{"5", "1", "3", "0.8", "0.75", "0.9", "0.01", "20"});

  const auto table = run_minas(db + " trial --experiment alpha --trial 5");
  CAPTURE(table.out);
  REQUIRE(table.status == 0);
  CHECK(table.out ==
        "trial 5 of experiment 'alpha'\n"
        "  number         5\n"
        "  val_acc        90.00%\n"
        "  test_acc       88.00%\n"
        "  latency_ms     4.000\n"
        "  params         300000\n"
        "  macs           20000000\n"
        "  train_seconds  60.0\n"
        "  fidelity       12\n"
        "  attempt        1\n"
        "  status         done\n"
        "  worker         w2\n"
        "  device         cuda:0\n"
        "  queued_at      1970-01-01 00:17:00\n"
        "  started_at     1970-01-01 00:17:31\n"
        "  finished_at    1970-01-01 00:18:31\n"
        "  parent         3\n"
        "  mutation       mut c\n"
        "  error          -\n"
        "  arch_key       |k5~0|+|k5~1|\n"
        "learning curve (attempt 1)\n"
        "  epoch  train_loss  train_acc  val_acc    lr  seconds\n"
        "      1         1.9     40.00%   45.00%   0.1     20.0\n"
        "      2         1.2     60.00%   70.00%  0.05     20.0\n"
        "      3         0.8     75.00%   90.00%  0.01     20.0\n"
        "lineage (root first, ending with the parent)\n"
        "  experiment  number  status  val_acc  mutation  arch_key\n"
        "  alpha            0  done     80.00%  -         a0\n"
        "  alpha            1  done     85.00%  mut a     a1\n"
        "  alpha            3  done     85.00%  mut b     a3\n"
        "children: none\n");
}

TEST_CASE("query cli: workers, for one experiment or all") {
  TempStore store;
  const std::string db = "query --db " + q(store.str());
  const Json all = json_of(run_minas(db + " workers --format json"));
  REQUIRE(all.size() == 3);
  CHECK(all[1] == Json::parse(R"({"name": "w2", "host": "h2", "devices": ["cuda:0", "cuda:1"],
    "first_seen": 1000.0, "last_seen": 1600.0, "connected_seconds": 500.0, "busy_seconds": 100.0,
    "utilization": 0.2, "trials_done": 5})"));
  CHECK(all[2]["utilization"].is_null());
  const Json alpha = json_of(run_minas(db + " workers --experiment alpha --format json"));
  CHECK(alpha[1]["trials_done"] == 3);
  const auto table = run_minas(db + " workers --experiment alpha");
  CAPTURE(table.out);
  CHECK(table.out ==
        "name  host  devices              first_seen           last_seen            "
        "connected_seconds  busy_seconds  utilization  trials_done\n"
        "w1    h1    [\"cpu\"]              1970-01-01 00:16:40  1970-01-01 00:25:00  "
        "            400.0         300.0        75.0%            5\n"
        "w2    h2    [\"cuda:0\",\"cuda:1\"]  1970-01-01 00:16:40  1970-01-01 00:26:40  "
        "            500.0         100.0        20.0%            3\n"
        "w3    h3    []                   1970-01-01 00:28:20  1970-01-01 00:28:20  "
        "              0.0           0.0            -            0\n");
  CHECK(
      csv_of(run_minas(db + " workers --format csv"))[1] ==
      std::vector<std::string>{"w1", "h1", "[\"cpu\"]", "1000", "1500", "400", "300", "0.75", "5"});
}

TEST_CASE("query cli: the only experiment needs no --experiment, several do") {
  TempStore store(false);
  {
    minas::db::Connection c = minas::db::Connection::open(store.str());
    for (const auto& m : minas::db::migrations()) c.exec(m.sql);
    minas::db::set_user_version(c, minas::db::current_schema_version());
    c.exec("PRAGMA application_id = " + std::to_string(minas::db::kApplicationId));
    c.exec(
        "INSERT INTO experiments (id, name, space, space_json, dataset, dataset_fingerprint, "
        "strategy, strategy_settings, recipe, recipe_hash, objective, status, created_at) "
        "VALUES (1, 'solo', 's', '{}', 'd', 'f', 'random', '{}', '{}', 'r', "
        "'val_acc', 'running', 0);"
        "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
        "status, queued_at, val_acc) VALUES (1, 0, 'k', 0, '{}', 1, 'done', 0, 0.5)");
  }
  CHECK(numbers_of(json_of(run_minas("query --db " + q(store.str()) + " top --format json"))) ==
        "0");
  TempStore known;
  CHECK(error_line(run_minas("query --db " + q(known.str()) + " top")) ==
        "minas: error: " + known.str() +
            ": the store holds 4 experiments; choose one with --experiment NAME (experiments: "
            "alpha, beta, gamma, delta)\n");
}

TEST_CASE("query cli: sql reads in every format and refuses writes, leaving the file as it was") {
  TempStore store;
  const std::string bytes = file_bytes(store.path);
  const auto mtime = fs::last_write_time(store.path);
  const std::string db = "sql --db " + q(store.str()) + " ";
  const auto table = run_minas(
      db + q("SELECT name, count(*) AS n, max(val_acc) AS best FROM experiments e JOIN trials t "
             "ON t.experiment_id = e.id GROUP BY name ORDER BY name"));
  CAPTURE(table.out);
  CHECK(table.out ==
        "name    n  best\n"
        "alpha  13   0.9\n"
        "beta    4  0.99\n"
        "delta   1  0.97\n"
        "gamma   2  0.95\n");
  CHECK(json_of(run_minas(db + "--format json " +
                          q("SELECT number, error, NULL AS missing FROM trials WHERE "
                            "experiment_id = 2 AND status = 'failed'"))) ==
        Json::parse(R"([{"number": 2, "error": "lost worker w1", "missing": null}])"));
  CHECK(csv_of(run_minas(db + "--format csv " + q("SELECT 'a,b' AS x, 1.5 AS y, x'0aff' AS z"))) ==
        std::vector<std::vector<std::string>>{{"x", "y", "z"}, {"a,b", "1.5", "x'0aff'"}});

  for (const char* sql : {"DELETE FROM trials", "UPDATE experiments SET name = 'x'",
                          "DROP TABLE trials", "PRAGMA user_version = 7", "CREATE TABLE t (x)",
                          "INSERT INTO strategy_state VALUES (1, '{}', 0)"}) {
    CAPTURE(sql);
    CHECK(error_line(run_minas(db + q(sql))) ==
          "minas: error: " + store.str() +
              ": refused: minas sql only reads the store (it is opened read-only), and this "
              "statement would write: " +
              sql + "\n");
  }
  CHECK(contains(error_line(run_minas(db + q("ATTACH '" + store.str() + ".x' AS x"))),
                 "ATTACH is not allowed"));
  CHECK_FALSE(fs::exists(store.str() + ".x"));
  CHECK(file_bytes(store.path) == bytes);
  CHECK(fs::last_write_time(store.path) == mtime);
  CHECK(json_of(run_minas(db + "--format json " + q("SELECT count(*) AS n FROM trials"))) ==
        Json::parse(R"([{"n": 20}])"));
}

TEST_CASE("query cli: bad input gets a clear error and a non-zero exit, and creates nothing") {
  TempStore store;
  const std::string db = "query --db " + q(store.str());
  const std::string missing = store.str() + ".missing";
  CHECK(error_line(run_minas("query --db " + q(missing) + " experiments")) ==
        "minas: error: " + missing + ": no such store file (reading never creates one)\n");
  CHECK(error_line(run_minas("sql --db " + q(missing) + " 'SELECT 1'")) ==
        "minas: error: " + missing + ": no such store file (reading never creates one)\n");
  CHECK_FALSE(fs::exists(missing));

  TempStore text(false);
  {
    std::FILE* f = std::fopen(text.str().c_str(), "w");
    REQUIRE(f);
    std::fputs("not a database at all, but long enough to have a header of sorts\n", f);
    std::fclose(f);
  }
  CHECK(error_line(run_minas("query --db " + q(text.str()) + " experiments")) ==
        "minas: error: " + text.str() + ": not a minas store (not an SQLite database)\n");

  TempStore other(false);
  {
    minas::db::Connection c = minas::db::Connection::open(other.str());
    c.exec("CREATE TABLE notes (x)");
  }
  CHECK(error_line(run_minas("sql --db " + q(other.str()) + " 'SELECT 1'")) ==
        "minas: error: " + other.str() +
            ": not a minas store (its application_id is 0x00000000; a minas store's is "
            "0x6d6e6173, 'mnas')\n");

  TempStore newer(false);
  {
    minas::db::Connection c = minas::db::Connection::open(newer.str());
    c.exec("PRAGMA application_id = " + std::to_string(minas::db::kApplicationId));
    minas::db::set_user_version(c, 99);
  }
  CHECK(contains(error_line(run_minas("query --db " + q(newer.str()) + " experiments")),
                 ": schema version 99 is newer than this minas reads"));

  CHECK(error_line(run_minas(db + " top --experiment omega")) ==
        "minas: error: no experiment 'omega' in " + store.str() +
            " (experiments: alpha, beta, gamma, delta)\n");
  CHECK(error_line(run_minas(db + " top --experiment alpha --where 'latency<=2'")) ==
        "minas: error: --where: constraint 'latency<=2': unknown metric 'latency' (metrics: "
        "val_acc, test_acc, latency_ms, params, macs, train_seconds)\n");
  CHECK(error_line(run_minas(db + " top --experiment alpha --where 'params<=lots'")) ==
        "minas: error: --where: constraint 'params<=lots': 'lots' is not a number\n");
  CHECK(error_line(run_minas(db + " top --experiment alpha --metric accuracy")) ==
        "minas: error: --metric: unknown metric 'accuracy' (metrics: val_acc, test_acc, "
        "latency_ms, params, macs, train_seconds)\n");
  CHECK(error_line(run_minas(db + " top --experiment alpha --k 0")) ==
        "minas: error: --k: must be an integer in [1, 1000000000], got '0'\n"
        "Run with --help for more information.\n");
  CHECK(error_line(run_minas(db + " top --experiment alpha --k 99999999999999999999")) ==
        "minas: error: --k: must be an integer in [1, 1000000000], got '99999999999999999999'\n"
        "Run with --help for more information.\n");
  CHECK(error_line(run_minas(db + " pareto --experiment alpha --x val_acc")) ==
        "minas: error: --x: 'val_acc' is not a cost; the x axis is one of latency_ms, params, "
        "macs, train_seconds\n");
  CHECK(error_line(run_minas(db + " pareto --experiment alpha --x params --metric params")) ==
        "minas: error: --metric: the y axis must differ from --x (both params)\n");
  CHECK(error_line(run_minas(db + " experiments --format xml")) ==
        "minas: error: --format: unknown format 'xml' (formats: table, csv, json)\n");
  CHECK(error_line(run_minas(db + " trial --experiment alpha --trial 40")) ==
        "minas: error: no trial 40 in experiment 'alpha' of " + store.str() +
            " (its trials are numbered 0 to 12)\n");
  CHECK(error_line(run_minas(db + " trial --experiment alpha --trial -1")) ==
        "minas: error: --trial: must be an integer in [0, 9223372036854775807], got '-1'\n"
        "Run with --help for more information.\n");
  CHECK(contains(error_line(run_minas(db + " trial --experiment alpha")), "--trial is required"));
  CHECK(contains(error_line(run_minas("query top --experiment alpha")), "--db is required"));
  CHECK(contains(error_line(run_minas(db + " nonsense")), "A subcommand is required"));
  CHECK(error_line(run_minas("sql --db " + q(store.str()) + " 'SELECT * FROM nope'"))
            .starts_with("minas: error: " + store.str() + ": sqlite3_prepare_v2"));
}

TEST_CASE("query cli: stored text written by a hostile peer stays bounded and escaped") {
  TempStore store;
  // A worker row as a hostile peer's hello could have left it: devices nested
  // 60,000 deep (within the 1 MiB frame), a name with terminal escapes and
  // bytes that are not UTF-8.
  const std::string deep = std::string(60000, '[') + std::string(60000, ']');
  const std::string name = "evil\x1b]0;owned\x07\xff\xfe";
  {
    minas::db::Connection c = minas::db::Connection::open(store.str());
    minas::db::Statement s = c.prepare(
        "INSERT INTO workers (name, host, devices, first_seen, last_seen) VALUES (?, 'h', ?, 1, "
        "2)");
    s.bind_all(name, deep);
    while (s.step()) {
    }
  }
  const std::string db = "query --db " + q(store.str());
  // JSON: the document past read_json's nesting limit stays text (it was
  // parsed and indented into gigabytes); invalid UTF-8 is replaced.
  const auto json = run_minas(db + " --format json workers");
  CHECK(json.status == 0);
  CHECK(json.out.size() < 4 * deep.size());
  const Json rows = json_of(json);
  bool found = false;
  for (const Json& r : rows) {
    if (r["devices"].is_string()) {
      CHECK(r["devices"].get<std::string>() == deep);
      found = true;
    }
  }
  CHECK(found);
  // The table for people: no raw escape or control byte reaches the terminal.
  const auto table = run_minas(db + " workers");
  CHECK(table.status == 0);
  CHECK(contains(table.out, "evil\\x1b]0;owned\\x07"));
  CHECK(table.out.find('\x1b') == std::string::npos);
  CHECK(table.out.find('\x07') == std::string::npos);
  // sql --format json over a column that is not UTF-8.
  const auto sql =
      run_minas("sql --format json --db " + q(store.str()) + " 'SELECT name FROM workers'");
  CHECK(sql.status == 0);
  CHECK_FALSE(contains(sql.out, "type_error"));
}

TEST_CASE("query cli: a stored JSON column nested past the limit is refused, naming its place") {
  TempStore store;
  {
    minas::db::Connection c = minas::db::Connection::open(store.str());
    c.exec("UPDATE experiments SET recipe = '" + std::string(100000, '[') +
           std::string(100000, ']') + "' WHERE name = 'alpha'");
  }
  minas::db::Store s = minas::db::Store::open(store.str(), minas::db::OpenMode::ReadOnly);
  const minas::Error e = minas::test::error_of([&] { s.find_experiment("alpha"); });
  CAPTURE(e.what());
  CHECK(contains(e.what(),
                 "experiment 'alpha', its recipe: line 1, column 65: arrays and "
                 "objects nested more than 64 deep"));
  CHECK(std::string(e.what()).size() < 300);
}
