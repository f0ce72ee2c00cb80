#pragma once
// The read side of what the store keeps on write for a live view (schema migrations 6 and 7):
// the change cursor, keyset pages of trials, the best-so-far curve, the strategy's snapshots,
// the worker pool's samples and a run's budget. The dashboard asks these. The questions it
// shares with `minas query` (counts, experiments, rankings, fronts, one trial, failures,
// workers) are in db/queries.h, so that both get the same answer from the same function.
//
// Conventions as in queries.h: read-only connections, times in Unix seconds, NULL as
// std::nullopt. These read tables and columns of schema version 7: an older store fails
// with SQLite's "no such table" or "no such column".
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "db/queries.h"
#include "db/sqlite.h"

namespace minas::db {

// ---- Experiments ---------------------------------------------------------------------------

// One experiment as an overview shows it: its row as experiments() lists it, what it runs
// with, and the budget of its latest controller run.
struct ExperimentDetail {
  ExperimentRow row;              // with its counts and best val_acc
  std::string strategy_settings;  // JSON text, as stored
  std::string objective;
  std::optional<double> started_at;      // its first start
  std::optional<double> finished_at;     // when it last stopped, finished or failed
  double seconds_run = 0;                // over all controller runs that ended
  std::optional<int64_t> budget_trials;  // the trials the latest run may create; none: unset
  std::optional<double> budget_seconds;  // wall-clock seconds over all runs; none: unbounded
  std::optional<double> run_started_at;  // when the latest run started

  // Where its time axes start: its first start, or its creation if it never ran.
  double origin() const { return started_at.value_or(row.created_at); }
};

// The experiments by id, at most `limit`.
std::vector<ExperimentDetail> experiment_details(Connection& conn, int64_t limit);
// One experiment; nullopt when there is no experiment `experiment_id`.
std::optional<ExperimentDetail> experiment_detail(Connection& conn, int64_t experiment_id);

// The space document the experiment searches (experiments.space_json); nullopt when there is
// no experiment `experiment_id`.
std::optional<std::string> space_json(Connection& conn, int64_t experiment_id);

// ---- Trials and the change cursor ----------------------------------------------------------

// The store-wide change number reached: every change to a trial's row, and every epoch it
// reports, takes the next one (change_seq).
int64_t change_seq(Connection& conn);

// A trial with the change number of its latest change.
struct TrialChange {
  TrialRow trial;
  int64_t seq = 0;
};

// The trials changed after change number `since`, oldest change first, at most `limit`.
std::vector<TrialChange> changes_since(Connection& conn, int64_t experiment_id, int64_t since,
                                       int64_t limit);

enum class TrialSort { number, val_acc, finished_at, seq };

// A page of trials by keyset: sorted on an indexed column, ties in the same direction by
// number. Sorting by val_acc lists done trials only, by finished_at finished ones only.
struct TrialPageQuery {
  TrialSort sort = TrialSort::number;
  bool descending = false;
  std::optional<std::string> status;  // only trials of this status
  // The last row of the previous page: its sort value (unused when sorting by number) and
  // its number. The page starts after it.
  std::optional<double> after_value;
  std::optional<int64_t> after_number;
  int64_t limit = 100;
};

struct TrialPage {
  std::vector<TrialChange> rows;
  bool more = false;  // trials follow the last row
};

TrialPage trial_page(Connection& conn, int64_t experiment_id, const TrialPageQuery& query);

// ---- Kept on write -------------------------------------------------------------------------

// A row of best_so_far: where the best val_acc improved, as the trials' trigger saw it.
struct KeptBest {
  int64_t finished = 0;  // trials finished (done, failed or pruned) when it was reached
  double finished_at = 0;
  double val_acc = 0;
  int64_t number = 0;  // the trial that reached it
};

// The best-so-far curve of val_acc kept on write, by `finished`: a few rows however many
// trials there are. best_so_far() in queries.h computes a curve of any metric from the trials.
std::vector<KeptBest> kept_best_so_far(Connection& conn, int64_t experiment_id);

// Done trials with a value of `x`, sampled for a scatter plot against val_acc.
struct ScatterPoint {
  int64_t number = 0;
  std::optional<double> val_acc;
  double x = 0;  // params and macs as doubles
};

struct Scatter {
  int64_t total = 0;  // the done trials with a value of x
  // At most `max_points` of them, every k-th in the order of the covering index of done
  // trials (by val_acc): an even sample over the accuracies.
  std::vector<ScatterPoint> points;
};

Scatter done_scatter(Connection& conn, int64_t experiment_id, Metric x, int64_t max_points);

// What the search strategy's decision state looked like after `results` results.
struct StrategySnapshot {
  int64_t results = 0;
  double at = 0;
  std::string state;  // JSON text, the strategy's own summary
};

// The snapshots by results, at most `limit` (the controller keeps about 100 ln(results)).
std::vector<StrategySnapshot> strategy_snapshots(Connection& conn, int64_t experiment_id,
                                                 int64_t limit);

// The worker pool as the experiment's controller saw it at `at`.
struct PoolSample {
  double at = 0;
  int64_t workers = 0, slots = 0, busy = 0, queued = 0;
};

// The pool's state at `points` (>= 2) evenly spaced instants from the first sample to the
// last, an index seek each, however many samples there are (an instant that finds the same
// sample as the one before adds nothing); every sample when there are no more than `points`.
std::vector<PoolSample> pool_over_time(Connection& conn, int64_t experiment_id, int64_t points);

// ---- Data reports --------------------------------------------------------------------------

// A row of data_reports as stored: the JSON columns as text.
struct DataReportRow {
  std::string experiment;  // the experiment's name (it may not exist: the data stopped it)
  std::string location;
  bool usable = false;
  std::string fingerprint, report;  // JSON text
  double created_at = 0;
};

// The latest reports first, at most `limit`; those of the experiment `experiment` when given.
std::vector<DataReportRow> data_report_rows(Connection& conn,
                                            const std::optional<std::string>& experiment,
                                            int64_t limit);

}  // namespace minas::db
