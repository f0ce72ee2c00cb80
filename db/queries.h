#pragma once
// The read side of the experiment store: every query that `minas query`, `minas sql` and the
// dashboard need, each a function of a Connection.
//
// They are plain SELECTs, so they run on a ReadOnly connection while the controller writes
// (WAL: a reader sees the last committed state and never blocks the writer). A function that
// runs several statements runs them in one read transaction, so its parts agree with each
// other even when the writer commits in between; inside a transaction the caller opened,
// it joins that one.
//
// Conventions: accuracies are fractions in [0, 1]; times are Unix seconds; a metric that is
// NULL in the store is std::nullopt here, never satisfies a constraint and never enters a
// ranking. Rankings and fronts consider only trials with status 'done'. Experiment ids are
// experiments.id; trial numbers are per experiment (trials.number, from 0).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "db/sqlite.h"

namespace minas::db {

// ---- Opening a store for reading --------------------------------------------------------

// Opens `path` ReadOnly and checks that it is a minas store this build can read. A missing
// file is an error (reading never creates a store), as are a directory, a file that is not
// an SQLite database, another application's database and a newer schema version.
Connection open_store_readonly(const std::string& path);
// The store checks of open_store_readonly on an open connection: application_id must be
// kApplicationId and user_version in 1..current_schema_version(). Returns the version.
int check_store(Connection& conn);

// ---- Metrics and constraints -------------------------------------------------------------

// The trial metrics a query can rank, filter or plot; each is a column of trials.
enum class Metric { val_acc, test_acc, latency_ms, params, macs, train_seconds };

std::span<const Metric> all_metrics();
std::string_view metric_name(Metric m);  // the column name, which parse_metric reads
std::string metric_names();              // "val_acc, test_acc, ...": for error messages
// Throws Error naming the text and listing the metrics.
Metric parse_metric(std::string_view name);
// Accuracies are maximized; latency, size, MACs and training time are costs, minimized.
bool higher_is_better(Metric m);

enum class CompareOp { le, lt, ge, gt };

struct Constraint {
  Metric metric;
  CompareOp op;
  double value;

  bool holds(double x) const;
  std::string to_string() const;  // "latency_ms<=2", as parse_constraints reads it
};

// "latency_ms<=2,params<=200000": comma-separated METRIC OP NUMBER with OP one of <= < >= >,
// blanks allowed around each part. An accuracy's value is a fraction, or a percentage with
// '%' ("val_acc>=93%"); a bare accuracy above 1 is refused as the likely percentage slip.
// Empty text gives no constraints. Throws Error quoting the bad part.
std::vector<Constraint> parse_constraints(std::string_view text);

// ---- Rows ----------------------------------------------------------------------------------

struct StatusCounts {
  int64_t queued = 0, running = 0, done = 0, failed = 0, pruned = 0;
  int64_t total() const { return queued + running + done + failed + pruned; }
  bool operator==(const StatusCounts&) const = default;
};

struct ExperimentRow {
  int64_t id = 0;
  std::string name, space, dataset, dataset_fingerprint, strategy, status;
  double created_at = 0;
  StatusCounts counts;
  std::optional<double> best_val_acc;  // over done trials
};

struct TrialRow {
  int64_t id = 0;      // trials.id, unique across experiments
  int64_t number = 0;  // within its experiment
  std::string arch_key;
  std::string status;  // queued, running, done, failed, pruned
  int64_t attempt = 0;
  int64_t fidelity = 0;
  std::optional<std::string> worker;  // workers.name
  std::optional<std::string> device;
  std::optional<double> val_acc, test_acc, latency_ms;
  std::optional<int64_t> params, macs;
  std::optional<double> train_seconds;
  double queued_at = 0;
  std::optional<double> started_at, finished_at;
  // The parent's number in its own experiment (lineage names the experiment when a parent
  // lies outside this one), and what the mutation from it changed.
  std::optional<int64_t> parent_number;
  std::optional<std::string> mutation;
  std::optional<std::string> error;

  std::optional<double> value(Metric m) const;  // params and macs as doubles
};

struct EpochRow {
  int64_t epoch = 0;  // from 1
  std::optional<double> train_loss, train_acc, val_acc, lr, seconds;
  // Set: a validation inside `epoch` after `at` epochs (0.25; ASHA's
  // fractional rungs), with the epoch's figures so far; unset: the whole epoch.
  std::optional<double> at;
  double epochs() const { return at ? *at : static_cast<double>(epoch); }
};

// One ancestor of a trial.
struct LineageStep {
  std::string experiment;  // its experiment's name
  int64_t number = 0;
  std::string arch_key;
  std::string status;
  std::optional<double> val_acc;
  std::optional<std::string> mutation;  // how it was made from its own parent; none at the root
};

struct TrialDetail {
  TrialRow trial;
  std::vector<EpochRow> curve;       // the current attempt's epochs and points inside, by epochs()
  std::vector<LineageStep> lineage;  // ancestors, root first, ending with the parent
  std::vector<int64_t> children;     // numbers of the trials made from it in its experiment
};

// A point of the best-so-far curve: where the best value improved.
struct ProgressPoint {
  int64_t trials = 0;  // trials finished (done, failed or pruned) up to and including this one
  double seconds = 0;  // finished_at minus the experiment's first queued_at
  double best = 0;     // the best value of the metric over done trials so far
  int64_t number = 0;  // the trial that set it
};

struct FailureRow {
  int64_t number = 0;
  std::string arch_key;
  int64_t attempt = 0;
  std::optional<std::string> worker;
  std::optional<std::string> error;
  std::optional<double> finished_at;
};

struct Failures {
  // Failed trials, the latest failure first: by finished_at descending (a failure without a
  // finish time last), then by number descending.
  std::vector<FailureRow> rows;
  int64_t late_results = 0;  // results that came after their lease expired (not counted)
};

struct WorkerRow {
  std::string name, host;
  std::string devices;  // JSON text, as the worker advertised its device slots
  double first_seen = 0, last_seen = 0;
  double connected_seconds = 0, busy_seconds = 0;
  std::optional<double> utilization;  // busy / connected; none before any connected time
  int64_t trials_done = 0;            // in the experiment asked about, or in all
  std::string pool = "default";       // minas worker --pool
  std::string tags = "{}";            // JSON text: --tag labels, and "device"
};

struct CachedResult {
  std::string experiment;  // where the trial ran
  TrialRow trial;
};

struct BestArch {
  std::string arch_key;
  double val_acc = 0;
  std::optional<double> test_acc;
  int64_t fidelity = 0;
  std::string recipe_hash;
  std::string experiment;
  int64_t number = 0;  // the trial that reached val_acc
};

// ---- Queries -------------------------------------------------------------------------------

// The experiments by id (at most `limit`), with trial counts per status and the best val_acc.
std::vector<ExperimentRow> experiments(Connection& conn,
                                       int64_t limit = std::numeric_limits<int64_t>::max());

// The id of the experiment called `name`; nullopt when there is none.
std::optional<int64_t> experiment_id(Connection& conn, std::string_view name);

// The id of the experiment called `name`. Without a name, the store's only experiment; with
// none or several, an error asking for --experiment and listing them. An unknown name gives
// "no experiment 'X' in FILE (experiments: a, b)".
int64_t find_experiment_id(Connection& conn, const std::optional<std::string>& name);
std::string experiment_name(Connection& conn, int64_t experiment_id);

// The k best done trials by `metric` (in its direction; ties by number) that meet every
// constraint. val_acc walks the trials_done index and stops after k matches; other
// metrics, and constraints too selective for that walk, read all the experiment's done
// trials once (see the timings in db/queries.cpp).
std::vector<TrialRow> top_k(Connection& conn, int64_t experiment_id, Metric metric, int64_t k,
                            std::span<const Constraint> constraints = {});

// The done trials that meet the constraints and that no other such trial dominates on
// (x, y): one is dominated when another is at least as good on both axes and better on one.
// Each axis counts in its metric's direction; x must be a cost (latency_ms, params, macs,
// train_seconds) and differ from y. Trials equal on both axes are all kept. Sorted by x from
// best, then by number.
std::vector<TrialRow> pareto(Connection& conn, int64_t experiment_id, Metric x,
                             Metric y = Metric::val_acc,
                             std::span<const Constraint> constraints = {});

// Where a pruned trial was cut: the last validated point of its current
// attempt (the rung ASHA judged it at, in epochs: 0.25 inside the first) and
// the accuracy it had there. nullopt for a trial not pruned, or pruned with no
// validation stored.
struct PruneCut {
  double at = 0;
  double val_acc = 0;
};
std::optional<PruneCut> prune_cut(Connection& conn, const TrialRow& trial);

// The best-so-far curve of `metric`: one point per improvement, walking finished trials in
// order of finished_at (ties by number). Plot `best` against `trials` or against `seconds`.
std::vector<ProgressPoint> best_so_far(Connection& conn, int64_t experiment_id, Metric metric);

// One trial with its learning curve, lineage and children; an error if there is no trial
// `number` in the experiment.
TrialDetail trial(Connection& conn, int64_t experiment_id, int64_t number);
// The same, or nullopt when there is no such trial.
std::optional<TrialDetail> find_trial(Connection& conn, int64_t experiment_id, int64_t number);

// The counts the store keeps on write (experiment_counts, updated by the trials' triggers in
// the writer's transaction, so always equal to counting the trials); a store from before
// they were kept (schema version 5 or older) has its trials counted.
StatusCounts status_counts(Connection& conn, int64_t experiment_id);
// The failed trials in the order of Failures::rows, at most `limit` of them.
Failures failures(Connection& conn, int64_t experiment_id,
                  int64_t limit = std::numeric_limits<int64_t>::max());

// Every worker by name; trials_done counts its done trials in `experiment_id`, or in all
// experiments without one. Workers are not tied to one experiment, so all are listed.
std::vector<WorkerRow> workers(Connection& conn, std::optional<int64_t> experiment_id = {});

// Across experiments: the best done trial (by val_acc, then oldest experiment, then number)
// of exactly this architecture, trained on this data set with this recipe at this fidelity.
std::optional<CachedResult> cached_result(Connection& conn, std::string_view arch_key,
                                          std::string_view dataset_fingerprint,
                                          std::string_view recipe_hash, int64_t fidelity);

// Across experiments: the k best distinct architectures ever trained on this data set (any
// recipe, any fidelity), each at its best val_acc; ties by experiment id, then number.
std::vector<BestArch> best_for_dataset(Connection& conn, std::string_view dataset_fingerprint,
                                       int64_t k);

// ---- What a resumed controller reads -------------------------------------------------------

// One trial of an experiment as the controller that resumes it needs it.
struct ResumedTrial {
  int64_t id = 0;
  std::string arch_key, status;
  int attempt = 0;
  std::optional<double> val_acc, latency_ms, params, macs, train_seconds;
  std::optional<int64_t> worker_id;
  std::optional<std::string> device;
  std::optional<int64_t> parent_id;
};
// Every trial of the experiment, in number order.
std::vector<ResumedTrial> resumed_trials(Connection& conn, int64_t experiment_id);

// A point some attempt of a trial was validated at (ASHA's rungs are rebuilt from them).
struct ValidatedEpoch {
  int64_t trial_id = 0;
  double epochs = 0;  // a whole epoch, or a fraction for a point inside one (0.25)
  double val_acc = 0;
};
// Every validated epoch and point inside one of the experiment's trials, by trial number,
// then attempt, then epochs.
std::vector<ValidatedEpoch> validated_epochs(Connection& conn, int64_t experiment_id);

// ---- Screening scores ----------------------------------------------------------------------

// One architecture's score by one evaluator at initialization (screening_scores).
struct ScreeningRow {
  std::string arch_key, evaluator;
  std::optional<double> score;  // absent: not scored (error says why), or not finite
  double seconds = 0;
  std::string error;
  std::string worker;  // the worker's name; empty when unknown
  double at = 0;
};
// The experiment's screening scores by `evaluator` (empty: every evaluator): by evaluator,
// then best score first, those without a score last, ties by architecture key.
std::vector<ScreeningRow> screening_scores(Connection& conn, int64_t experiment_id,
                                           std::string_view evaluator = {});

// ---- Raw SQL -------------------------------------------------------------------------------

using SqlValue = std::variant<std::monostate, int64_t, double, std::string, std::vector<std::byte>>;

struct SqlResult {
  std::vector<std::string> columns;
  std::vector<std::vector<SqlValue>> rows;
};

// Runs one SQL statement on the store at `path`, opened read-only (after the checks of
// open_store_readonly). A statement that would write (sqlite3_stmt_readonly false: INSERT,
// UPDATE, DELETE, CREATE, DROP, VACUUM, writing PRAGMAs ...) or ATTACH or DETACH another
// file is refused before it runs, as is more than one statement.
SqlResult run_readonly_sql(const std::string& path, std::string_view sql);

}  // namespace minas::db
