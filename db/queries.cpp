#include "db/queries.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "db/read_support.h"
#include "db/schema.h"
#include "searchspace/space.h"

namespace minas::db {

using detail::opt_int;
using detail::opt_real;
using detail::opt_text;
using detail::read_trial;
using detail::ReadSnapshot;
using detail::table_exists;
using detail::trial_select;

namespace {

constexpr std::array<Metric, 6> kMetrics = {Metric::val_acc,    Metric::test_acc,
                                            Metric::latency_ms, Metric::params,
                                            Metric::macs,       Metric::train_seconds};

// Error lists of names stop here, so a store with thousands of experiments stays readable.
constexpr size_t kMaxListed = 20;

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

std::string join_listed(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  if (names.size() > kMaxListed) {
    out += ", ... (" + std::to_string(names.size() - kMaxListed) + " more)";
  }
  return out;
}

// The metric's column, for SQL built here: always one of the fixed names, never user text.
std::string col(Metric m) {
  return "t." + std::string(metric_name(m));
}

std::string_view op_text(CompareOp op) {
  switch (op) {
    case CompareOp::le:
      return "<=";
    case CompareOp::lt:
      return "<";
    case CompareOp::ge:
      return ">=";
    case CompareOp::gt:
      return ">";
  }
  return "?";
}

// " AND t.m <= ?N ..." for the constraints, their values bound from parameter `first` on.
std::string constraint_sql(std::span<const Constraint> constraints, int first) {
  std::string sql;
  for (size_t i = 0; i < constraints.size(); ++i) {
    sql += " AND " + col(constraints[i].metric) + " " + std::string(op_text(constraints[i].op)) +
           " ?" + std::to_string(first + static_cast<int>(i));
  }
  return sql;
}

void bind_constraints(Statement& s, std::span<const Constraint> constraints, int first) {
  for (size_t i = 0; i < constraints.size(); ++i) {
    s.bind_double(first + static_cast<int>(i), constraints[i].value);
  }
}

// The columns read_trial reads, in its order, and the joins they need (t is the trial).
constexpr std::string_view kTrialColumns =
    "t.id, t.number, t.arch_key, t.status, t.attempt, t.fidelity, w.name, t.device, t.val_acc, "
    "t.test_acc, t.latency_ms, t.params, t.macs, t.train_seconds, t.queued_at, t.started_at, "
    "t.finished_at, p.number, t.mutation, t.error";
constexpr std::string_view kTrialJoins =
    " LEFT JOIN workers w ON w.id = t.worker_id LEFT JOIN trials p ON p.id = t.parent_id ";

Constraint parse_constraint(std::string_view part) {
  const std::string where = "constraint '" + std::string(part) + "'";
  if (part.empty()) throw Error(where, "empty (a stray comma?)");
  const auto at = part.find_first_of("<>");
  if (at == std::string_view::npos) {
    throw Error(where, "expected METRIC<=NUMBER (or <, >=, >), e.g. latency_ms<=2");
  }
  const std::string_view name = trim(part.substr(0, at));
  Constraint c{};
  try {
    c.metric = parse_metric(name);
  } catch (const Error& e) {
    throw Error(where, e.what());
  }
  const bool less = part[at] == '<';
  const bool or_equal = at + 1 < part.size() && part[at + 1] == '=';
  c.op = less ? (or_equal ? CompareOp::le : CompareOp::lt)
              : (or_equal ? CompareOp::ge : CompareOp::gt);
  std::string_view number = trim(part.substr(at + (or_equal ? 2 : 1)));
  const bool accuracy = c.metric == Metric::val_acc || c.metric == Metric::test_acc;
  const bool percent = accuracy && !number.empty() && number.back() == '%';
  if (percent) number = trim(number.substr(0, number.size() - 1));
  double value = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || ec != std::errc() || end != number.data() + number.size() ||
      !std::isfinite(value)) {
    throw Error(where,
                "'" + std::string(number) + "' is not a number" +
                    (accuracy ? " (an accuracy is a fraction, or a percentage with %)" : ""));
  }
  if (percent) value /= 100;
  if (accuracy && !percent && value > 1) {
    throw Error(where, "accuracies are fractions in [0, 1]; for a percentage write " +
                           std::string(number) + "%");
  }
  c.value = value;
  return c;
}

// What a front member is judged on: both axes turned so that larger is better.
struct FrontPoint {
  double gx, gy;
  int64_t number;
};

// The numbers of the points that no other point dominates, best x first, then by number.
std::vector<int64_t> front_of(std::vector<FrontPoint> points) {
  // Sweep from the best x. Within a group of equal x only the points of the group's best y
  // can be on the front, and only if their y beats every y seen at a strictly better x
  // (equal y at a better x dominates them).
  std::sort(points.begin(), points.end(), [](const FrontPoint& a, const FrontPoint& b) {
    if (a.gx != b.gx) return a.gx > b.gx;
    if (a.gy != b.gy) return a.gy > b.gy;
    return a.number < b.number;
  });
  std::vector<int64_t> front;
  double best_before = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < points.size();) {
    size_t end = i;
    const double group_best = points[i].gy;
    while (end < points.size() && points[end].gx == points[i].gx) {
      if (points[end].gy == group_best && group_best > best_before) {
        front.push_back(points[end].number);
      }
      ++end;
    }
    best_before = std::max(best_before, group_best);
    i = end;
  }
  return front;
}

// ---- raw SQLite handles for run_readonly_sql --------------------------------------------

struct CloseDb {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct FinalizeStmt {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

// Denies ATTACH and DETACH, which sqlite3_stmt_readonly lets through (they change the
// connection, not the file), and records which one so the refusal can say so.
int deny_attach(void* denied, int action, const char*, const char*, const char*, const char*) {
  if (action == SQLITE_ATTACH || action == SQLITE_DETACH) {
    *static_cast<std::string*>(denied) = action == SQLITE_ATTACH ? "ATTACH" : "DETACH";
    return SQLITE_DENY;
  }
  return SQLITE_OK;
}

bool blank_sql(std::string_view sql) {
  return sql.find_first_not_of(" \t\r\n;") == std::string_view::npos;
}

// The statement as a refusal quotes it: trimmed, and cut short when long.
std::string quoted(std::string_view sql) {
  constexpr size_t kMaxQuoted = 300;
  sql = trim(sql);
  if (sql.size() <= kMaxQuoted) return std::string(sql);
  return std::string(sql.substr(0, kMaxQuoted)) + " ... (" + std::to_string(sql.size()) + " bytes)";
}

// The counts per status of the experiment ?1: those kept on write where the store keeps them
// (schema version 6 on), else counted; trials_status (experiment_id, status, number) covers
// the count, so no table rows are read.
std::string counts_sql(Connection& conn) {
  return table_exists(conn, "experiment_counts")
             ? "SELECT status, n FROM experiment_counts WHERE experiment_id = ?1"
             : "SELECT status, count(*) FROM trials WHERE experiment_id = ?1 GROUP BY status";
}

StatusCounts read_counts(Statement& s) {
  Rewind rewind(s);
  StatusCounts c;
  while (s.step()) {
    const std::string status = s.column_text(0);
    const int64_t n = s.column_int64(1);
    if (status == "queued") c.queued = n;
    if (status == "running") c.running = n;
    if (status == "done") c.done = n;
    if (status == "failed") c.failed = n;
    if (status == "pruned") c.pruned = n;
  }
  return c;
}

}  // namespace

// ---- Shared with live_queries.cpp (db/read_support.h) ---------------------------------------

namespace detail {

std::optional<double> opt_real(const Statement& s, int i) {
  if (s.is_null(i)) return std::nullopt;
  return s.column_double(i);
}

std::optional<int64_t> opt_int(const Statement& s, int i) {
  if (s.is_null(i)) return std::nullopt;
  return s.column_int64(i);
}

std::optional<std::string> opt_text(const Statement& s, int i) {
  if (s.is_null(i)) return std::nullopt;
  return s.column_text(i);
}

bool table_exists(Connection& conn, std::string_view name) {
  Statement s = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  s.bind_text(1, name);
  return s.step();
}

TrialRow read_trial(const Statement& s, int c) {
  TrialRow r;
  r.id = s.column_int64(c + 0);
  r.number = s.column_int64(c + 1);
  r.arch_key = s.column_text(c + 2);
  r.status = s.column_text(c + 3);
  r.attempt = s.column_int64(c + 4);
  r.fidelity = s.column_int64(c + 5);
  r.worker = opt_text(s, c + 6);
  r.device = opt_text(s, c + 7);
  r.val_acc = opt_real(s, c + 8);
  r.test_acc = opt_real(s, c + 9);
  r.latency_ms = opt_real(s, c + 10);
  r.params = opt_int(s, c + 11);
  r.macs = opt_int(s, c + 12);
  r.train_seconds = opt_real(s, c + 13);
  r.queued_at = s.column_double(c + 14);
  r.started_at = opt_real(s, c + 15);
  r.finished_at = opt_real(s, c + 16);
  r.parent_number = opt_int(s, c + 17);
  r.mutation = opt_text(s, c + 18);
  r.error = opt_text(s, c + 19);
  static_assert(kTrialColumnCount == 20);
  return r;
}

std::string trial_select(std::string_view extra_columns) {
  return "SELECT " + std::string(kTrialColumns) + std::string(extra_columns) + " FROM trials t" +
         std::string(kTrialJoins);
}

// max() over the partial index trials_done is one index probe per experiment.
ExperimentTotals::ExperimentTotals(Connection& conn)
    : counts_(conn.prepare(counts_sql(conn))),
      best_(conn.prepare(
          "SELECT max(val_acc) FROM trials WHERE experiment_id = ?1 AND status = 'done'")) {}

StatusCounts ExperimentTotals::counts(int64_t experiment_id) {
  counts_.bind_int64(1, experiment_id);
  return read_counts(counts_);
}

void ExperimentTotals::fill(ExperimentRow& row) {
  row.counts = counts(row.id);
  Rewind rewind(best_);
  best_.bind_int64(1, row.id);
  if (best_.step()) row.best_val_acc = opt_real(best_, 0);
}

}  // namespace detail

// ---- Opening ---------------------------------------------------------------------------

int check_store(Connection& conn) {
  Statement app = conn.prepare("PRAGMA application_id");
  const int64_t id = app.step() ? app.column_int64(0) : 0;
  if (id != kApplicationId) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%08llx", static_cast<unsigned long long>(id & 0xffffffff));
    throw Error(conn.path(), std::string("not a minas store (its application_id is ") + hex +
                                 "; a minas store's is 0x6d6e6173, 'mnas')");
  }
  const int version = user_version(conn);
  if (version > current_schema_version()) {
    throw Error(conn.path(), "schema version " + std::to_string(version) +
                                 " is newer than this minas reads (up to " +
                                 std::to_string(current_schema_version()) + "); use a newer minas");
  }
  if (version < 1) {
    throw Error(conn.path(), "minas store without a schema (version " + std::to_string(version) +
                                 "): it was never initialized");
  }
  return version;
}

Connection open_store_readonly(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory) throw Error(path, ec.message());
    throw Error(path, "no such store file (reading never creates one)");
  }
  if (fs::is_directory(st)) throw Error(path, "is a directory, not a minas store");
  std::optional<Connection> conn;
  try {
    conn.emplace(Connection::open(path, OpenMode::ReadOnly));
  } catch (const SqliteError& e) {
    if ((e.code() & 0xff) == SQLITE_NOTADB) {
      throw Error(path, "not a minas store (not an SQLite database)");
    }
    throw;
  }
  check_store(*conn);
  return std::move(*conn);
}

// ---- Metrics and constraints ------------------------------------------------------------

std::span<const Metric> all_metrics() {
  return kMetrics;
}

std::string_view metric_name(Metric m) {
  switch (m) {
    case Metric::val_acc:
      return "val_acc";
    case Metric::test_acc:
      return "test_acc";
    case Metric::latency_ms:
      return "latency_ms";
    case Metric::params:
      return "params";
    case Metric::macs:
      return "macs";
    case Metric::train_seconds:
      return "train_seconds";
  }
  return "?";
}

std::string metric_names() {
  std::string out;
  for (Metric m : kMetrics) {
    if (!out.empty()) out += ", ";
    out += metric_name(m);
  }
  return out;
}

Metric parse_metric(std::string_view name) {
  for (Metric m : kMetrics) {
    if (metric_name(m) == name) return m;
  }
  throw Error("", "unknown metric '" + std::string(name) + "' (metrics: " + metric_names() + ")");
}

bool higher_is_better(Metric m) {
  return m == Metric::val_acc || m == Metric::test_acc;
}

bool Constraint::holds(double x) const {
  switch (op) {
    case CompareOp::le:
      return x <= value;
    case CompareOp::lt:
      return x < value;
    case CompareOp::ge:
      return x >= value;
    case CompareOp::gt:
      return x > value;
  }
  return false;
}

std::string Constraint::to_string() const {
  // Plain notation where it is short (200000, not 2e+05); both forms read back exactly.
  char number[64];
  const double magnitude = std::fabs(value);
  const bool plain = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16);
  const auto [end, ec] =
      plain ? std::to_chars(number, number + sizeof number, value, std::chars_format::fixed)
            : std::to_chars(number, number + sizeof number, value);
  return std::string(metric_name(metric)) + std::string(op_text(op)) +
         std::string(number, ec == std::errc() ? end : number);
}

std::vector<Constraint> parse_constraints(std::string_view text) {
  std::vector<Constraint> out;
  if (trim(text).empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string_view part = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    out.push_back(parse_constraint(trim(part)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::optional<double> TrialRow::value(Metric m) const {
  switch (m) {
    case Metric::val_acc:
      return val_acc;
    case Metric::test_acc:
      return test_acc;
    case Metric::latency_ms:
      return latency_ms;
    case Metric::params:
      return params ? std::optional<double>(static_cast<double>(*params)) : std::nullopt;
    case Metric::macs:
      return macs ? std::optional<double>(static_cast<double>(*macs)) : std::nullopt;
    case Metric::train_seconds:
      return train_seconds;
  }
  return std::nullopt;
}

// ---- Experiments ---------------------------------------------------------------------------

StatusCounts status_counts(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare(counts_sql(conn));
  s.bind_int64(1, experiment_id);
  return read_counts(s);
}

std::vector<ExperimentRow> experiments(Connection& conn, int64_t limit) {
  ReadSnapshot snapshot(conn);
  std::vector<ExperimentRow> rows;
  {
    Statement s = conn.prepare(
        "SELECT id, name, space, dataset, dataset_fingerprint, strategy, status, created_at "
        "FROM experiments ORDER BY id LIMIT ?1");
    s.bind_int64(1, limit);
    while (s.step()) {
      ExperimentRow r;
      r.id = s.column_int64(0);
      r.name = s.column_text(1);
      r.space = s.column_text(2);
      r.dataset = s.column_text(3);
      r.dataset_fingerprint = s.column_text(4);
      r.strategy = s.column_text(5);
      r.status = s.column_text(6);
      r.created_at = s.column_double(7);
      rows.push_back(std::move(r));
    }
  }
  detail::ExperimentTotals totals(conn);
  for (ExperimentRow& r : rows) totals.fill(r);
  return rows;
}

std::optional<int64_t> experiment_id(Connection& conn, std::string_view name) {
  Statement s = conn.prepare("SELECT id FROM experiments WHERE name = ?1");
  s.bind_text(1, name);
  if (!s.step()) return std::nullopt;
  return s.column_int64(0);
}

int64_t find_experiment_id(Connection& conn, const std::optional<std::string>& name) {
  if (name) {
    if (const auto id = experiment_id(conn, *name)) return *id;
  }
  std::vector<std::string> names;
  int64_t only = 0;
  {
    Statement s = conn.prepare("SELECT id, name FROM experiments ORDER BY id");
    while (s.step()) {
      only = s.column_int64(0);
      names.push_back(s.column_text(1));
    }
  }
  if (name) {
    throw Error("", "no experiment '" + *name + "' in " + conn.path() +
                        " (experiments: " + join_listed(names) + ")");
  }
  if (names.size() == 1) return only;
  if (names.empty()) throw Error(conn.path(), "the store holds no experiments yet");
  throw Error(conn.path(), "the store holds " + std::to_string(names.size()) +
                               " experiments; choose one with --experiment NAME (experiments: " +
                               join_listed(names) + ")");
}

std::string experiment_name(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare("SELECT name FROM experiments WHERE id = ?1");
  s.bind_int64(1, experiment_id);
  if (!s.step()) {
    throw Error(conn.path(), "no experiment with id " + std::to_string(experiment_id));
  }
  return s.column_text(0);
}

// ---- Rankings --------------------------------------------------------------------------------

std::vector<TrialRow> top_k(Connection& conn, int64_t experiment_id, Metric metric, int64_t k,
                            std::span<const Constraint> constraints) {
  if (k < 1) throw Error("", "k must be at least 1 (got " + std::to_string(k) + ")");
  const std::string m = col(metric);
  const std::string done = "t.experiment_id = ?1 AND t.status = 'done' AND " + m + " IS NOT NULL";
  const std::string order =
      " ORDER BY " + m + (higher_is_better(metric) ? " DESC" : " ASC") + ", t.number";
  ReadSnapshot snapshot(conn);
  // The ranking picks ids alone; the joins run for the k winners, not for every candidate.
  std::vector<int64_t> ids;
  bool ranked = false;
  if (metric == Metric::val_acc) {
    // The partial index trials_done (status = 'done' in the WHERE clause lets it apply)
    // gives the trials in rank order: walk it, test the constraints on each, stop after k.
    // Each trial walked costs a rowid probe (1.5 us), so after kMaxRejected trials that fail
    // the constraints (6 ms, a fifth of a scan of 100,000 trials) the scan below, whose cost
    // is bounded, takes over: selective constraints then cost at most that much more.
    constexpr int64_t kMaxRejected = 4000;
    const std::string meets = "1" + constraint_sql(constraints, 2);
    Statement walk =
        conn.prepare("SELECT t.id, coalesce(" + meets + ", 0) FROM trials t WHERE " + done + order);
    walk.bind_int64(1, experiment_id);
    bind_constraints(walk, constraints, 2);
    int64_t rejected = 0;
    while (static_cast<int64_t>(ids.size()) < k && rejected <= kMaxRejected) {
      if (!walk.step()) break;
      if (walk.column_int64(1)) {
        ids.push_back(walk.column_int64(0));
      } else {
        ++rejected;
      }
    }
    ranked = rejected <= kMaxRejected;
  }
  if (!ranked) {
    // Other metrics, or a walk that gave up: one pass over the done trials (trials_done
    // covers it) and the sorter keeps the best k.
    ids.clear();
    Statement scan = conn.prepare(("SELECT t.id FROM trials t WHERE " + done +
                                   constraint_sql(constraints, 3) + order + " LIMIT ?2"));
    scan.bind_int64(1, experiment_id).bind_int64(2, k);
    bind_constraints(scan, constraints, 3);
    while (scan.step()) ids.push_back(scan.column_int64(0));
  }
  Statement row = conn.prepare(trial_select() + "WHERE t.id = ?1");
  std::vector<TrialRow> rows;
  rows.reserve(ids.size());
  for (int64_t id : ids) {
    row.reset();
    row.bind_int64(1, id);
    if (row.step()) rows.push_back(read_trial(row));
  }
  return rows;
}

std::vector<TrialRow> pareto(Connection& conn, int64_t experiment_id, Metric x, Metric y,
                             std::span<const Constraint> constraints) {
  if (higher_is_better(x)) {
    throw Error("",
                "the Pareto front's x axis is a cost to minimize (latency_ms, params, macs or "
                "train_seconds), not " +
                    std::string(metric_name(x)));
  }
  if (x == y) {
    throw Error("", "the Pareto front needs two different metrics (both are " +
                        std::string(metric_name(x)) + ")");
  }
  ReadSnapshot snapshot(conn);
  std::vector<FrontPoint> points;
  {
    // One pass over the done trials (trials_done covers it) and the front found here.
    Statement s = conn.prepare(
        ("SELECT t.number, " + col(x) + ", " + col(y) +
         " FROM trials t WHERE t.experiment_id = ?1 AND t.status = 'done' AND " + col(x) +
         " IS NOT NULL AND " + col(y) + " IS NOT NULL" + constraint_sql(constraints, 2)));
    s.bind_int64(1, experiment_id);
    bind_constraints(s, constraints, 2);
    const double sy = higher_is_better(y) ? 1.0 : -1.0;
    while (s.step())
      points.push_back({-s.column_double(1), sy * s.column_double(2), s.column_int64(0)});
  }
  const std::vector<int64_t> front = front_of(std::move(points));
  Statement row = conn.prepare(trial_select() + "WHERE t.experiment_id = ?1 AND t.number = ?2");
  std::vector<TrialRow> rows;
  rows.reserve(front.size());
  for (int64_t number : front) {
    row.reset();
    row.bind_int64(1, experiment_id).bind_int64(2, number);
    if (row.step()) rows.push_back(read_trial(row));
  }
  return rows;
}

std::vector<ProgressPoint> best_so_far(Connection& conn, int64_t experiment_id, Metric metric) {
  ReadSnapshot snapshot(conn);
  // One pass over all the experiment's trials: the origin is the first queued_at of any of
  // them, finished or not. Sorting here beats the finished_at index, which would fetch every
  // row by rowid in that order.
  Statement s = conn.prepare(("SELECT t.number, t.status, " + col(metric) +
                              ", t.finished_at, t.queued_at FROM trials t "
                              "WHERE t.experiment_id = ?1"));
  s.bind_int64(1, experiment_id);
  struct Finished {
    double at;
    int64_t number;
    std::optional<double> value;  // set for done trials with the metric
  };
  std::vector<Finished> finished;
  double origin = std::numeric_limits<double>::infinity();
  while (s.step()) {
    origin = std::min(origin, s.column_double(4));
    const std::string status = s.column_text(1);
    if (s.is_null(3) || (status != "done" && status != "failed" && status != "pruned")) continue;
    finished.push_back(
        {s.column_double(3), s.column_int64(0), status == "done" ? opt_real(s, 2) : std::nullopt});
  }
  std::sort(finished.begin(), finished.end(), [](const Finished& a, const Finished& b) {
    return a.at != b.at ? a.at < b.at : a.number < b.number;
  });
  const bool higher = higher_is_better(metric);
  std::vector<ProgressPoint> points;
  for (size_t i = 0; i < finished.size(); ++i) {
    if (!finished[i].value) continue;
    const double v = *finished[i].value;
    if (!points.empty() && !(higher ? v > points.back().best : v < points.back().best)) continue;
    points.push_back({static_cast<int64_t>(i + 1), finished[i].at - origin, v, finished[i].number});
  }
  return points;
}

// ---- One trial -----------------------------------------------------------------------------

TrialDetail trial(Connection& conn, int64_t experiment_id, int64_t number) {
  ReadSnapshot snapshot(conn);
  if (std::optional<TrialDetail> d = find_trial(conn, experiment_id, number)) return std::move(*d);
  Statement last = conn.prepare("SELECT max(number) FROM trials WHERE experiment_id = ?1");
  last.bind_int64(1, experiment_id);
  const std::optional<int64_t> max = last.step() ? opt_int(last, 0) : std::nullopt;
  throw Error("", "no trial " + std::to_string(number) + " in experiment '" +
                      experiment_name(conn, experiment_id) + "' of " + conn.path() +
                      (max ? " (its trials are numbered 0 to " + std::to_string(*max) + ")"
                           : " (it has no trials yet)"));
}

std::optional<TrialDetail> find_trial(Connection& conn, int64_t experiment_id, int64_t number) {
  ReadSnapshot snapshot(conn);
  TrialDetail d;
  {
    Statement s = conn.prepare(trial_select() + "WHERE t.experiment_id = ?1 AND t.number = ?2");
    s.bind_int64(1, experiment_id).bind_int64(2, number);
    if (!s.step()) return std::nullopt;
    d.trial = read_trial(s);
  }
  {
    Statement s = conn.prepare(
        "SELECT epoch, train_loss, train_acc, val_acc, lr, seconds FROM epochs "
        "WHERE trial_id = ?1 AND attempt = ?2 ORDER BY epoch");
    s.bind_int64(1, d.trial.id).bind_int64(2, d.trial.attempt);
    while (s.step()) {
      d.curve.push_back({s.column_int64(0), opt_real(s, 1), opt_real(s, 2), opt_real(s, 3),
                         opt_real(s, 4), opt_real(s, 5), std::nullopt});
    }
  }
  // Stores before schema version 8 have no validations inside an epoch.
  if (table_exists(conn, "sub_epochs")) {
    Statement s = conn.prepare(
        "SELECT at, train_loss, train_acc, val_acc, lr, seconds FROM sub_epochs "
        "WHERE trial_id = ?1 AND attempt = ?2 ORDER BY at");
    s.bind_int64(1, d.trial.id).bind_int64(2, d.trial.attempt);
    while (s.step()) {
      EpochRow r{static_cast<int64_t>(std::floor(s.column_double(0))) + 1,
                 opt_real(s, 1),
                 opt_real(s, 2),
                 opt_real(s, 3),
                 opt_real(s, 4),
                 opt_real(s, 5),
                 s.column_double(0)};
      d.curve.push_back(r);
    }
    std::stable_sort(d.curve.begin(), d.curve.end(),
                     [](const EpochRow& a, const EpochRow& b) { return a.epochs() < b.epochs(); });
  }
  {
    // Parents are walked one primary-key probe at a time; the visited set turns a cycle
    // (only a corrupt store has one) into an error instead of a hang.
    Statement parent_of = conn.prepare("SELECT parent_id FROM trials WHERE id = ?1");
    Statement step = conn.prepare(
        "SELECT e.name, t.number, t.arch_key, t.status, t.val_acc, t.mutation, t.parent_id "
        "FROM trials t JOIN experiments e ON e.id = t.experiment_id WHERE t.id = ?1");
    parent_of.bind_int64(1, d.trial.id);
    std::optional<int64_t> next = parent_of.step() ? opt_int(parent_of, 0) : std::nullopt;
    std::unordered_set<int64_t> seen{d.trial.id};
    while (next) {
      if (!seen.insert(*next).second) {
        throw Error(conn.path(), "trial " + std::to_string(number) +
                                     "'s lineage has a cycle through trial id " +
                                     std::to_string(*next) + " (the store is corrupt)");
      }
      step.reset();
      step.bind_int64(1, *next);
      if (!step.step()) {
        throw Error(conn.path(), "trial " + std::to_string(number) +
                                     "'s lineage names a missing trial id " +
                                     std::to_string(*next) + " (the store is corrupt)");
      }
      d.lineage.push_back({step.column_text(0), step.column_int64(1), step.column_text(2),
                           step.column_text(3), opt_real(step, 4), opt_text(step, 5)});
      next = opt_int(step, 6);
    }
    std::reverse(d.lineage.begin(), d.lineage.end());
  }
  {
    // Without INDEXED BY the planner walks the whole experiment in number order to skip a
    // sort of a handful of rows.
    Statement s = conn.prepare(
        "SELECT number FROM trials INDEXED BY trials_parent WHERE parent_id = ?1 AND "
        "experiment_id = ?2 ORDER BY number");
    s.bind_int64(1, d.trial.id).bind_int64(2, experiment_id);
    while (s.step()) d.children.push_back(s.column_int64(0));
  }
  return d;
}

// ---- Failures and workers ------------------------------------------------------------------

Failures failures(Connection& conn, int64_t experiment_id, int64_t limit) {
  ReadSnapshot snapshot(conn);
  Failures f;
  {
    // INDEXED BY: left alone, the planner walks all the experiment's trials through
    // trials_finished to skip sorting the few failed ones.
    Statement s = conn.prepare(
        "SELECT t.number, t.arch_key, t.attempt, w.name, t.error, t.finished_at "
        "FROM trials t INDEXED BY trials_status LEFT JOIN workers w ON w.id = t.worker_id "
        "WHERE t.experiment_id = ?1 AND t.status = 'failed' "
        "ORDER BY t.finished_at DESC NULLS LAST, t.number DESC LIMIT ?2");
    s.bind_int64(1, experiment_id).bind_int64(2, limit);
    while (s.step()) {
      f.rows.push_back({s.column_int64(0), s.column_text(1), s.column_int64(2), opt_text(s, 3),
                        opt_text(s, 4), opt_real(s, 5)});
    }
  }
  // Stores of schema version 1 predate late_results: they have none.
  if (table_exists(conn, "late_results")) {
    Statement s = conn.prepare(
        "SELECT count(*) FROM late_results l JOIN trials t ON t.id = l.trial_id "
        "WHERE t.experiment_id = ?1");
    s.bind_int64(1, experiment_id);
    if (s.step()) f.late_results = s.column_int64(0);
  }
  return f;
}

std::vector<WorkerRow> workers(Connection& conn, std::optional<int64_t> experiment_id) {
  // One grouped pass over the trials, joined to the workers: a correlated count per worker
  // would scan the trials once per worker (there is no index on worker_id).
  const std::string sql =
      "SELECT w.name, w.host, w.devices, w.first_seen, w.last_seen, w.connected_seconds, "
      "w.busy_seconds, coalesce(c.n, 0), w.pool, w.tags FROM workers w LEFT JOIN (SELECT "
      "t.worker_id, "
      "count(*) AS n FROM trials t WHERE t.status = 'done'" +
      std::string(experiment_id ? " AND t.experiment_id = ?1" : "") +
      " GROUP BY t.worker_id) c ON c.worker_id = w.id ORDER BY w.name";
  Statement s = conn.prepare((sql));
  if (experiment_id) s.bind_int64(1, *experiment_id);
  std::vector<WorkerRow> rows;
  while (s.step()) {
    WorkerRow r;
    r.name = s.column_text(0);
    r.host = s.column_text(1);
    r.devices = s.column_text(2);
    r.first_seen = s.column_double(3);
    r.last_seen = s.column_double(4);
    r.connected_seconds = s.column_double(5);
    r.busy_seconds = s.column_double(6);
    if (r.connected_seconds > 0) r.utilization = r.busy_seconds / r.connected_seconds;
    r.trials_done = s.column_int64(7);
    r.pool = s.column_text(8);
    r.tags = s.column_text(9);
    rows.push_back(std::move(r));
  }
  return rows;
}

// ---- Across experiments --------------------------------------------------------------------

std::optional<CachedResult> cached_result(Connection& conn, std::string_view arch_key,
                                          std::string_view dataset_fingerprint,
                                          std::string_view recipe_hash, int64_t fidelity) {
  // CROSS JOIN keeps trials as the outer loop, probed through trials_arch (arch_hash,
  // fidelity); the key itself is compared too, since different keys may share a hash.
  Statement s = conn.prepare(
      "SELECT e.name, " + std::string(kTrialColumns) + " FROM trials t CROSS JOIN experiments e" +
      std::string(kTrialJoins) +
      "WHERE t.arch_hash = ?1 AND t.fidelity = ?2 AND t.arch_key = ?3 AND t.status = 'done' "
      "AND t.val_acc IS NOT NULL AND e.id = t.experiment_id AND e.dataset_fingerprint = ?4 "
      "AND e.recipe_hash = ?5 ORDER BY t.val_acc DESC, e.id, t.number LIMIT 1");
  s.bind_int64(1, static_cast<int64_t>(fnv1a64(arch_key)))
      .bind_int64(2, fidelity)
      .bind_text(3, arch_key)
      .bind_text(4, dataset_fingerprint)
      .bind_text(5, recipe_hash);
  if (!s.step()) return std::nullopt;
  return CachedResult{s.column_text(0), read_trial(s, 1)};
}

std::vector<BestArch> best_for_dataset(Connection& conn, std::string_view dataset_fingerprint,
                                       int64_t k) {
  if (k < 1) throw Error("", "k must be at least 1 (got " + std::to_string(k) + ")");
  ReadSnapshot snapshot(conn);
  struct Source {
    int64_t id;
    std::string name, recipe_hash;
  };
  std::vector<Source> sources;
  {
    Statement s = conn.prepare(
        "SELECT id, name, recipe_hash FROM experiments WHERE dataset_fingerprint = ?1 "
        "ORDER BY id");
    s.bind_text(1, dataset_fingerprint);
    while (s.step()) sources.push_back({s.column_int64(0), s.column_text(1), s.column_text(2)});
  }
  // Each experiment's done trials come best first through trials_done, so the first row
  // of a key is its best there, and only an experiment's first k distinct keys can be in the
  // overall top k (any key below them ranks below k keys that rank above it everywhere).
  // Walking experiments by id and replacing only on a strictly better val_acc keeps the
  // tie order: val_acc, then experiment id, then number.
  struct Candidate {
    BestArch row;
    int64_t experiment_id;
  };
  std::unordered_map<std::string, Candidate> best;
  Statement walk = conn.prepare(
      "SELECT t.arch_key, t.val_acc, t.test_acc, t.fidelity, t.number FROM trials t "
      "WHERE t.experiment_id = ?1 AND t.status = 'done' AND t.val_acc IS NOT NULL "
      "ORDER BY t.val_acc DESC, t.number");
  for (const Source& source : sources) {
    walk.reset();
    walk.bind_int64(1, source.id);
    std::unordered_set<std::string> seen;
    while (static_cast<int64_t>(seen.size()) < k && walk.step()) {
      std::string key = walk.column_text(0);
      if (!seen.insert(key).second) continue;
      Candidate c{{key, walk.column_double(1), opt_real(walk, 2), walk.column_int64(3),
                   source.recipe_hash, source.name, walk.column_int64(4)},
                  source.id};
      auto [it, inserted] = best.try_emplace(std::move(key), c);
      if (!inserted && c.row.val_acc > it->second.row.val_acc) it->second = std::move(c);
    }
  }
  std::vector<Candidate> ranked;
  ranked.reserve(best.size());
  for (auto& entry : best) ranked.push_back(std::move(entry.second));
  std::sort(ranked.begin(), ranked.end(), [](const Candidate& a, const Candidate& b) {
    if (a.row.val_acc != b.row.val_acc) return a.row.val_acc > b.row.val_acc;
    if (a.experiment_id != b.experiment_id) return a.experiment_id < b.experiment_id;
    return a.row.number < b.row.number;
  });
  if (static_cast<int64_t>(ranked.size()) > k) ranked.resize(static_cast<size_t>(k));
  std::vector<BestArch> rows;
  rows.reserve(ranked.size());
  for (Candidate& c : ranked) rows.push_back(std::move(c.row));
  return rows;
}

// ---- Raw SQL -------------------------------------------------------------------------------

SqlResult run_readonly_sql(const std::string& path, std::string_view sql) {
  if (blank_sql(sql)) throw Error("", "no SQL statement given");
  if (sql.size() >= static_cast<size_t>(std::numeric_limits<int>::max())) {
    throw Error("", "SQL text of " + std::to_string(sql.size()) + " bytes is too long");
  }
  // The checks and their messages of every reader; this connection stays open, so the file
  // the statement runs on is the one checked.
  Connection checked = open_store_readonly(path);

  // The statement runs on a raw handle of its own, since Connection does not expose
  // sqlite3_stmt_readonly or an authorizer. It is read-only too: SQLite would fail any
  // write anyway; the checks below refuse one before it runs, with a clearer message.
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<sqlite3, CloseDb> db(raw);
  MINAS_SQLITE(raw, "", rc);
  MINAS_SQLITE(raw, "", sqlite3_extended_result_codes(raw, 1));
  MINAS_SQLITE(raw, "", sqlite3_busy_timeout(raw, 5000));
  std::string denied;
  MINAS_SQLITE(raw, "", sqlite3_set_authorizer(raw, deny_attach, &denied));

  const std::string refused = "refused: minas sql only reads the store (it is opened read-only)";
  sqlite3_stmt* prepared = nullptr;
  const char* tail = nullptr;
  try {
    MINAS_SQLITE(
        raw, sql,
        sqlite3_prepare_v2(raw, sql.data(), static_cast<int>(sql.size()), &prepared, &tail));
  } catch (const SqliteError&) {
    // The authorizer's denial fails the prepare with SQLITE_AUTH: say why instead.
    if (!denied.empty()) throw Error(path, refused + ", and " + denied + " is not allowed");
    throw;
  }
  std::unique_ptr<sqlite3_stmt, FinalizeStmt> stmt(prepared);
  if (!stmt) throw Error("", "no SQL statement given (only comments)");
  const std::string_view rest = sql.substr(static_cast<size_t>(tail - sql.data()));
  if (!blank_sql(rest)) {
    // Text after the statement must be comments only: anything else, even text that does
    // not compile, would otherwise be dropped without a word.
    sqlite3_stmt* extra = nullptr;
    const int erc =
        sqlite3_prepare_v2(raw, rest.data(), static_cast<int>(rest.size()), &extra, nullptr);
    std::unique_ptr<sqlite3_stmt, FinalizeStmt> discard(extra);
    if (erc != SQLITE_OK || extra) {
      throw Error("", "one SQL statement at a time, got more: " + quoted(sql));
    }
  }
  if (!sqlite3_stmt_readonly(stmt.get())) {
    throw Error(path, refused + ", and this statement would write: " + quoted(sql));
  }

  SqlResult result;
  const int columns = sqlite3_column_count(stmt.get());
  for (int i = 0; i < columns; ++i) {
    const char* name = sqlite3_column_name(stmt.get(), i);
    result.columns.push_back(name ? name : "");
  }
  while (MINAS_SQLITE(raw, sql, sqlite3_step(stmt.get())) == SQLITE_ROW) {
    std::vector<SqlValue>& row = result.rows.emplace_back();
    row.reserve(static_cast<size_t>(columns));
    for (int i = 0; i < columns; ++i) {
      sqlite3_stmt* s = stmt.get();
      switch (sqlite3_column_type(s, i)) {
        case SQLITE_INTEGER:
          row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(s, i)));
          break;
        case SQLITE_FLOAT:
          row.emplace_back(sqlite3_column_double(s, i));
          break;
        case SQLITE_TEXT: {
          const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
          row.emplace_back(std::string(text ? text : "", sqlite3_column_bytes(s, i)));
          break;
        }
        case SQLITE_BLOB: {
          const auto* data = static_cast<const std::byte*>(sqlite3_column_blob(s, i));
          row.emplace_back(std::vector<std::byte>(data, data + sqlite3_column_bytes(s, i)));
          break;
        }
        default:
          row.emplace_back(std::monostate{});
      }
    }
  }
  return result;
}

// ---- What a resumed controller reads

std::vector<ResumedTrial> resumed_trials(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare(
      "SELECT id, arch_key, status, attempt, val_acc, latency_ms, params, macs, worker_id, "
      "device, parent_id, train_seconds FROM trials WHERE experiment_id = ?1 ORDER BY number");
  s.bind_int64(1, experiment_id);
  auto real = [&](int c) -> std::optional<double> {
    if (s.is_null(c)) return std::nullopt;
    return s.column_double(c);
  };
  std::vector<ResumedTrial> rows;
  while (s.step()) {
    ResumedTrial t;
    t.id = s.column_int64(0);
    t.arch_key = s.column_text(1);
    t.status = s.column_text(2);
    t.attempt = static_cast<int>(s.column_int64(3));
    t.val_acc = real(4);
    t.latency_ms = real(5);
    t.params = real(6);
    t.macs = real(7);
    if (!s.is_null(8)) t.worker_id = s.column_int64(8);
    if (!s.is_null(9)) t.device = s.column_text(9);
    if (!s.is_null(10)) t.parent_id = s.column_int64(10);
    t.train_seconds = real(11);
    rows.push_back(std::move(t));
  }
  return rows;
}

std::vector<ScreeningRow> screening_scores(Connection& conn, int64_t experiment_id,
                                           std::string_view evaluator) {
  Statement s = conn.prepare(
      "SELECT s.arch_key, s.evaluator, s.score, s.seconds, s.error, w.name, s.at "
      "FROM screening_scores s LEFT JOIN workers w ON w.id = s.worker_id "
      "WHERE s.experiment_id = ?1 AND (?2 = '' OR s.evaluator = ?2) "
      "ORDER BY s.evaluator, s.score IS NULL, s.score DESC, s.arch_key");
  s.bind_int64(1, experiment_id).bind_text(2, evaluator);
  std::vector<ScreeningRow> rows;
  while (s.step()) {
    ScreeningRow r;
    r.arch_key = s.column_text(0);
    r.evaluator = s.column_text(1);
    if (!s.is_null(2)) r.score = s.column_double(2);
    r.seconds = s.column_double(3);
    if (!s.is_null(4)) r.error = s.column_text(4);
    if (!s.is_null(5)) r.worker = s.column_text(5);
    r.at = s.column_double(6);
    rows.push_back(std::move(r));
  }
  return rows;
}

std::optional<PruneCut> prune_cut(Connection& conn, const TrialRow& trial) {
  if (trial.status != "pruned") return std::nullopt;
  Statement s = conn.prepare(
      std::string("SELECT at, val_acc FROM (SELECT epoch AS at, val_acc FROM epochs "
                  "WHERE trial_id = ?1 AND attempt = ?2 AND val_acc IS NOT NULL ") +
      // Stores before schema version 8 have no validations inside an epoch.
      (table_exists(conn, "sub_epochs")
           ? "UNION ALL SELECT at, val_acc FROM sub_epochs "
             "WHERE trial_id = ?1 AND attempt = ?2 AND val_acc IS NOT NULL "
           : "") +
      ") ORDER BY at DESC LIMIT 1");
  s.bind_int64(1, trial.id).bind_int64(2, trial.attempt);
  if (!s.step()) return std::nullopt;
  return PruneCut{s.column_double(0), s.column_double(1)};
}

std::vector<ValidatedEpoch> validated_epochs(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare(
      std::string("SELECT e.trial_id, e.epoch AS at, e.val_acc, t.number, e.attempt FROM epochs e "
                  "JOIN trials t ON t.id = e.trial_id "
                  "WHERE t.experiment_id = ?1 AND e.val_acc IS NOT NULL ") +
      // Stores before schema version 8 have no validations inside an epoch.
      (table_exists(conn, "sub_epochs")
           ? "UNION ALL SELECT p.trial_id, p.at, p.val_acc, t.number, p.attempt FROM sub_epochs p "
             "JOIN trials t ON t.id = p.trial_id "
             "WHERE t.experiment_id = ?1 AND p.val_acc IS NOT NULL "
           : "") +
      "ORDER BY 4, 5, 2");
  s.bind_int64(1, experiment_id);
  std::vector<ValidatedEpoch> rows;
  while (s.step()) rows.push_back({s.column_int64(0), s.column_double(1), s.column_double(2)});
  return rows;
}

}  // namespace minas::db
