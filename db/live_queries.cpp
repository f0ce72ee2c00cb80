#include "db/live_queries.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "db/read_support.h"

namespace minas::db {

using detail::opt_int;
using detail::opt_real;
using detail::ReadSnapshot;

namespace {

// The columns read_detail reads, in its order.
constexpr std::string_view kDetailSelect =
    "SELECT id, name, space, dataset, dataset_fingerprint, strategy, status, created_at, "
    "strategy_settings, objective, started_at, finished_at, seconds_run, budget_trials, "
    "budget_seconds, run_started_at FROM experiments ";

ExperimentDetail read_detail(const Statement& s) {
  ExperimentDetail d;
  ExperimentRow& r = d.row;
  r.id = s.column_int64(0);
  r.name = s.column_text(1);
  r.space = s.column_text(2);
  r.dataset = s.column_text(3);
  r.dataset_fingerprint = s.column_text(4);
  r.strategy = s.column_text(5);
  r.status = s.column_text(6);
  r.created_at = s.column_double(7);
  d.strategy_settings = s.column_text(8);
  d.objective = s.column_text(9);
  d.started_at = opt_real(s, 10);
  d.finished_at = opt_real(s, 11);
  d.seconds_run = s.column_double(12);
  d.budget_trials = opt_int(s, 13);
  d.budget_seconds = opt_real(s, 14);
  d.run_started_at = opt_real(s, 15);
  return d;
}

TrialChange read_change(const Statement& s) {
  return {detail::read_trial(s), s.column_int64(detail::kTrialColumnCount)};
}

// The sort column, for SQL built here: a fixed name, never user text.
std::string sort_column(TrialSort sort) {
  switch (sort) {
    case TrialSort::number:
      return "t.number";
    case TrialSort::val_acc:
      return "t.val_acc";
    case TrialSort::finished_at:
      return "t.finished_at";
    case TrialSort::seq:
      return "t.seq";
  }
  return "t.number";
}

// The page's SQL: ?1 the experiment, ?2 the status, ?3 and ?4 the cursor's value and
// number, ?5 the rows to read.
std::string page_sql(const TrialPageQuery& q) {
  const bool by_number = q.sort == TrialSort::number;
  const std::string col = sort_column(q.sort);
  std::string sql = detail::trial_select(", t.seq") + "WHERE t.experiment_id = ?1";
  if (q.sort == TrialSort::val_acc) sql += " AND t.status = 'done'";
  if (q.sort == TrialSort::finished_at) sql += " AND t.finished_at IS NOT NULL";
  if (q.status) sql += " AND t.status = ?2";
  const char* past = q.descending ? "<" : ">";
  if (q.after_number) {
    if (by_number)
      sql += std::string(" AND t.number ") + past + " ?4";
    else
      sql +=
          " AND (" + col + " " + past + " ?3 OR (" + col + " = ?3 AND t.number " + past + " ?4))";
  }
  const char* dir = q.descending ? " DESC" : "";
  sql += " ORDER BY " + (by_number ? col : col + dir + ", t.number") + dir + " LIMIT ?5";
  return sql;
}

}  // namespace

// ---- Experiments ---------------------------------------------------------------------------

std::vector<ExperimentDetail> experiment_details(Connection& conn, int64_t limit) {
  ReadSnapshot snapshot(conn);
  std::vector<ExperimentDetail> rows;
  {
    Statement s = conn.prepare(std::string(kDetailSelect) + "ORDER BY id LIMIT ?1");
    s.bind_int64(1, limit);
    while (s.step()) rows.push_back(read_detail(s));
  }
  detail::ExperimentTotals totals(conn);
  for (ExperimentDetail& d : rows) totals.fill(d.row);
  return rows;
}

std::optional<ExperimentDetail> experiment_detail(Connection& conn, int64_t experiment_id) {
  ReadSnapshot snapshot(conn);
  Statement s = conn.prepare(std::string(kDetailSelect) + "WHERE id = ?1");
  s.bind_int64(1, experiment_id);
  if (!s.step()) return std::nullopt;
  ExperimentDetail d = read_detail(s);
  detail::ExperimentTotals(conn).fill(d.row);
  return d;
}

std::optional<std::string> space_json(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare("SELECT space_json FROM experiments WHERE id = ?1");
  s.bind_int64(1, experiment_id);
  if (!s.step()) return std::nullopt;
  return s.column_text(0);
}

// ---- Trials and the change cursor ----------------------------------------------------------

int64_t change_seq(Connection& conn) {
  Statement s = conn.prepare("SELECT seq FROM change_seq WHERE id = 1");
  return s.step() ? s.column_int64(0) : 0;
}

std::vector<TrialChange> changes_since(Connection& conn, int64_t experiment_id, int64_t since,
                                       int64_t limit) {
  // trials_seq (experiment_id, seq) gives them in order.
  Statement s = conn.prepare(detail::trial_select(", t.seq") +
                             "WHERE t.experiment_id = ?1 AND t.seq > ?2 ORDER BY t.seq LIMIT ?3");
  s.bind_int64(1, experiment_id).bind_int64(2, since).bind_int64(3, limit);
  std::vector<TrialChange> rows;
  while (s.step()) rows.push_back(read_change(s));
  return rows;
}

TrialPage trial_page(Connection& conn, int64_t experiment_id, const TrialPageQuery& query) {
  if (query.limit < 1)
    throw Error("", "a page holds at least 1 trial (got " + std::to_string(query.limit) + ")");
  if (query.after_number && query.sort != TrialSort::number && !query.after_value)
    throw Error("", "a page after a trial sorted by value needs that value too");
  Statement s = conn.prepare(page_sql(query));
  s.bind(1, experiment_id).bind(2, query.status).bind(3, query.after_value);
  s.bind(4, query.after_number);
  // One row past the page says whether more follow.
  s.bind(5, query.limit == std::numeric_limits<int64_t>::max() ? query.limit : query.limit + 1);
  TrialPage page;
  while (s.step()) {
    if (static_cast<int64_t>(page.rows.size()) == query.limit) {
      page.more = true;
      break;
    }
    page.rows.push_back(read_change(s));
  }
  return page;
}

// ---- Kept on write -------------------------------------------------------------------------

std::vector<KeptBest> kept_best_so_far(Connection& conn, int64_t experiment_id) {
  Statement s = conn.prepare(
      "SELECT finished, finished_at, val_acc, number FROM best_so_far WHERE experiment_id = ?1 "
      "ORDER BY finished");
  s.bind_int64(1, experiment_id);
  std::vector<KeptBest> rows;
  while (s.step())
    rows.push_back({s.column_int64(0), s.column_double(1), s.column_double(2), s.column_int64(3)});
  return rows;
}

Scatter done_scatter(Connection& conn, int64_t experiment_id, Metric x, int64_t max_points) {
  if (max_points < 1)
    throw Error("", "a scatter holds at least 1 point (got " + std::to_string(max_points) + ")");
  const std::string col(metric_name(x));
  const std::string done =
      " WHERE experiment_id = ?1 AND status = 'done' AND " + col + " IS NOT NULL";
  ReadSnapshot snapshot(conn);
  Scatter out;
  {
    Statement n = conn.prepare("SELECT count(*) FROM trials" + done);
    n.bind_int64(1, experiment_id);
    if (n.step()) out.total = n.column_int64(0);
  }
  const int64_t step = std::max<int64_t>(1, (out.total + max_points - 1) / max_points);
  // In the order of the covering index of done trials (by accuracy): every k-th is an even
  // sample over the accuracies.
  Statement s =
      conn.prepare("SELECT number, val_acc, " + col + " FROM trials INDEXED BY trials_done" + done);
  s.bind_int64(1, experiment_id);
  for (int64_t i = 0; s.step(); ++i)
    if (i % step == 0)
      out.points.push_back({s.column_int64(0), opt_real(s, 1), s.column_double(2)});
  return out;
}

std::vector<StrategySnapshot> strategy_snapshots(Connection& conn, int64_t experiment_id,
                                                 int64_t limit) {
  Statement s = conn.prepare(
      "SELECT results, at, state FROM strategy_snapshots WHERE experiment_id = ?1 ORDER BY "
      "results LIMIT ?2");
  s.bind_int64(1, experiment_id).bind_int64(2, limit);
  std::vector<StrategySnapshot> rows;
  while (s.step()) rows.push_back({s.column_int64(0), s.column_double(1), s.column_text(2)});
  return rows;
}

namespace {

PoolSample read_sample(const Statement& s) {
  return {s.column_double(0), s.column_int64(1), s.column_int64(2), s.column_int64(3),
          s.column_int64(4)};
}

constexpr std::string_view kSampleSelect =
    "SELECT at, workers, slots, busy, queued FROM pool_samples WHERE experiment_id = ?1 ";

// Whether the experiment has no more than `points` samples: a count that stops past them.
bool at_most(Connection& conn, int64_t experiment_id, int64_t points) {
  Statement few = conn.prepare(
      "SELECT count(*) FROM (SELECT 1 FROM pool_samples WHERE experiment_id = ?1 LIMIT ?2)");
  few.bind_int64(1, experiment_id).bind_int64(2, points + 1);
  return few.step() && few.column_int64(0) <= points;
}

}  // namespace

std::vector<PoolSample> pool_over_time(Connection& conn, int64_t experiment_id, int64_t points) {
  if (points < 2)
    throw Error(
        "", "the pool over time needs at least 2 instants (got " + std::to_string(points) + ")");
  ReadSnapshot snapshot(conn);
  std::vector<PoolSample> out;
  Statement range =
      conn.prepare("SELECT min(at), max(at) FROM pool_samples WHERE experiment_id = ?1");
  range.bind_int64(1, experiment_id);
  if (!range.step() || range.is_null(0)) return out;
  const double first = range.column_double(0), last = range.column_double(1);
  if (at_most(conn, experiment_id, points)) {
    Statement every = conn.prepare(std::string(kSampleSelect) + "ORDER BY at");
    every.bind_int64(1, experiment_id);
    while (every.step()) out.push_back(read_sample(every));
    return out;
  }
  // The latest sample at or before each instant.
  Statement at = conn.prepare(std::string(kSampleSelect) + "AND at <= ?2 ORDER BY at DESC LIMIT 1");
  for (int64_t i = 0; i < points; ++i) {
    const double t = i + 1 == points ? last : first + (last - first) * i / (points - 1);
    Rewind rewind(at);
    at.bind_int64(1, experiment_id).bind_double(2, t);
    if (!at.step() || (!out.empty() && at.column_double(0) == out.back().at)) continue;
    out.push_back(read_sample(at));
  }
  return out;
}

// ---- Data reports --------------------------------------------------------------------------

std::vector<DataReportRow> data_report_rows(Connection& conn,
                                            const std::optional<std::string>& experiment,
                                            int64_t limit) {
  // data_reports_experiment serves the filtered list, the primary key the other.
  Statement s = conn.prepare(
      std::string("SELECT experiment, location, usable, fingerprint, report, created_at FROM "
                  "data_reports ") +
      (experiment ? "WHERE experiment = ?2 " : "") + "ORDER BY id DESC LIMIT ?1");
  s.bind_int64(1, limit);
  if (experiment) s.bind_text(2, *experiment);
  std::vector<DataReportRow> rows;
  while (s.step())
    rows.push_back({s.column_text(0), s.column_text(1), s.column_int64(2) != 0, s.column_text(3),
                    s.column_text(4), s.column_double(5)});
  return rows;
}

}  // namespace minas::db
