#pragma once
// The write side of the experiment store: opening (and migrating) a store file, experiments,
// workers, strategy state and artifacts (Store), and the controller's batched trial writes
// (Writer). The controller is the only writer; readers open the file read-only beside it.
//
// Timestamps are REAL unix seconds passed in by the caller: the store never reads a clock,
// so what it writes is exactly what it was given.
//
// Durability: Store's write calls are each one statement. With no Writer batch open, each is
// its own transaction and durable on return (WAL, synchronous=FULL). While a Writer batch is
// open they join it and land, or roll back, with it (one that fails rolls the batch back):
// that lets the controller save the strategy state in the same transaction as the results it
// reflects.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/sqlite.h"

namespace minas::db {

// What an experiment is run with: the columns of `experiments` that the caller supplies.
struct ExperimentSpec {
  std::string name;                 // unique within the store
  std::string space;                // the space reference as given, overrides included
  nlohmann::json space_json;        // the resolved space document
  std::string dataset;              // name or folder as given
  std::string dataset_fingerprint;  // what was trained on, exactly
  std::string strategy;
  nlohmann::json strategy_settings = nlohmann::json::object();
  nlohmann::json recipe = nlohmann::json::object();
  std::string objective;
};

// One row of `experiments`.
struct Experiment : ExperimentSpec {
  int64_t id = 0;
  std::string recipe_hash;  // recipe_hash(recipe), computed by the store
  std::string status;       // created, running, stopped, finished or failed
  double created_at = 0;
  std::optional<double> started_at;   // first time it ran
  std::optional<double> finished_at;  // when it last stopped, finished or failed
  double seconds_run = 0;             // wall-clock seconds its controller ran, over all runs
};

// One row of `data_reports`: a customer data set as validated before any training.
struct DataReport {
  int64_t id = 0;          // set by the store
  std::string experiment;  // the experiment's name (it may not exist: the data stopped it)
  std::string location;    // the data as given
  bool usable = false;
  nlohmann::json fingerprint = nlohmann::json::object();
  nlohmann::json report = nlohmann::json::object();
  double created_at = 0;
};

// One row of `latency_measurements`: a network's batch-1 latency on a deployment target.
struct LatencyMeasurement {
  int64_t id = 0;  // set by the store
  std::string target, host, space_ref, arch_key;
  double measured_ms = 0;
  std::optional<double> predicted_ms;  // the latency model's, before the measurement
  std::string experiment;
  double created_at = 0;
};

// FNV-1a 64 of recipe.dump() as 16 lowercase hex digits. dump() writes object keys sorted,
// so equal recipes hash equal however their files ordered them.
std::string recipe_hash(const nlohmann::json& recipe);

class Writer;

class Store {
 public:
  // ReadWrite creates a missing file and migrates an older store to the current schema, one
  // migration per BEGIN IMMEDIATE transaction that also advances user_version, so a crash
  // leaves the last completed version. ReadOnly needs a store of exactly the current version.
  // Refused without writing a byte: a file that is not a minas store (another application's
  // SQLite database, or not a database: SqliteError), a store newer than this build. Memory
  // opens a private in-memory store (the path is ignored).
  static Store open(const std::string& path, OpenMode mode = OpenMode::ReadWrite,
                    const Options& options = {});

  Store(Store&& other) noexcept;
  Store& operator=(Store&& other) noexcept;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  // An attached Writer is detached: its open batch is rolled back, and it refuses new writes.
  ~Store();

  int schema_version() const { return version_; }
  const std::string& path() const { return connection_.path(); }
  OpenMode mode() const { return connection_.mode(); }
  Connection& connection() { return connection_; }

  // ---- experiments ----
  // Status 'created'. A name already taken is an Error naming it.
  int64_t create_experiment(const ExperimentSpec& spec, double now);
  std::optional<Experiment> find_experiment(std::string_view name);
  // Like find_experiment, but a missing name is an Error that lists the experiments there are.
  Experiment experiment(std::string_view name);
  std::vector<Experiment> experiments();  // in order of creation
  // running: sets started_at the first time and clears finished_at (a resumed experiment);
  // stopped, finished, failed: sets finished_at; created: only the status.
  void set_experiment_status(int64_t id, std::string_view status, double at);
  // Adds to seconds_run: a controller run's wall-clock time, at its clean end.
  void add_seconds_run(int64_t id, double seconds);
  // At a controller run's start: the trials it may create, its wall-clock budget over all
  // runs (nullopt: none) and when it started.
  void set_experiment_budget(int64_t id, int64_t trials, std::optional<double> seconds,
                             double run_started_at);

  // ---- workers ----
  // Inserts the worker `name`, or updates its host, devices and last_seen: its id either way.
  int64_t upsert_worker(std::string_view name, std::string_view host, const nlohmann::json& devices,
                        double seen_at, std::string_view pool = "default",
                        const nlohmann::json& tags = nlohmann::json::object());

  // ---- strategy state ----
  void save_strategy_state(int64_t experiment, const nlohmann::json& state, double at);
  std::optional<nlohmann::json> strategy_state(int64_t experiment);  // nullopt: never saved
  // The strategy's summary after `results` results (the dashboard's search internals); a
  // second one at the same count replaces the first.
  void add_strategy_snapshot(int64_t experiment, int64_t results, const nlohmann::json& state,
                             double at);

  // ---- worker pool over time ----
  // What the controller saw at `at`: workers, their slots, busy slots, queued trials.
  void add_pool_sample(int64_t experiment, double at, int workers, int slots, int busy,
                       int64_t queued);

  // ---- data reports ----
  int64_t add_data_report(const DataReport& report);  // its id; report.id is ignored
  std::vector<DataReport> data_reports();             // oldest first

  // ---- latency measurements on deployment targets (minas adapt) ----
  int64_t add_latency_measurement(const LatencyMeasurement& m);  // its id; m.id is ignored
  // Those of one target on one host, oldest first.
  std::vector<LatencyMeasurement> latency_measurements(std::string_view target,
                                                       std::string_view host);

  // ---- artifacts ----
  // A checkpoint, export or report of the experiment (of one of its trials when `trial`).
  int64_t add_artifact(int64_t experiment, std::optional<int64_t> trial, std::string_view kind,
                       std::string_view path, std::string_view checksum, int64_t bytes, double at);

 private:
  friend class Writer;
  Store(Connection connection, int version)
      : connection_(std::move(connection)), version_(version) {}
  void require_writable(std::string_view call) const;
  void require_experiment(std::string_view call, int64_t experiment);
  // Runs `body`, which writes; a SqliteError from it rolls back the Writer's open batch, if
  // any, since the write was part of it.
  template <class F>
  auto write(std::string_view call, F&& body);

  Connection connection_;
  int version_ = 0;
  Writer* writer_ = nullptr;  // the attached Writer, at most one
};

// A trial as the strategy made it, before it runs.
struct NewTrial {
  int64_t experiment_id = 0;
  std::string arch_key;
  uint64_t arch_hash = 0;  // stored as the int64 of the same bit pattern
  std::string arch_json;   // the architecture's JSON text
  std::optional<int64_t> parent_id;
  std::optional<std::string> mutation;  // what changed from the parent
  int fidelity = 0;                     // training budget (epochs)
  double queued_at = 0;
};

// What a worker reports for a finished attempt of a trial.
struct TrialResult {
  int64_t trial_id = 0;
  int attempt = 0;
  double val_acc = 0;
  // Absent (NULL in the store) when the worker did not measure it: a simulated
  // worker reports only val_acc.
  std::optional<double> test_acc;
  std::optional<double> latency_ms;
  std::optional<int64_t> params;
  std::optional<int64_t> macs;
  double train_seconds = 0;
  double finished_at = 0;
  std::optional<int64_t> worker_id;  // who sent it: kept with a late result
};

// One epoch of one attempt of a trial, or a validation inside one.
struct EpochMetrics {
  int64_t trial_id = 0;
  int attempt = 0;
  int epoch = 0;  // from 1
  double train_loss = 0;
  double train_acc = 0;
  double val_acc = 0;
  double lr = 0;
  double seconds = 0;
  // Set: a validation inside `epoch` after `at` epochs (0.25), kept in
  // sub_epochs with the epoch's figures so far; unset: the whole epoch.
  std::optional<double> at;
};

// One architecture's score by one evaluator, as a worker's screening request produced it.
struct ScreenScore {
  int64_t experiment_id = 0;
  std::string arch_key, evaluator;
  std::optional<double> score;  // absent: not scored (error says why), or not finite
  double seconds = 0;
  std::string error;
  std::optional<int64_t> worker_id;
  double at = 0;
};

// Group commit for the controller's hot path. The first write after a commit opens one
// BEGIN IMMEDIATE transaction; commit() makes everything since durable at once. Acknowledge
// results to workers only after commit() returned.
//
// Failures, and what is left:
// - A SqliteError from any write (a full disk, an I/O error) rolls back the whole batch
//   before it propagates: nothing since the last commit() lands, and the caller may retry
//   once the cause is fixed.
// - A minas::Error that is not a SqliteError (an unknown trial, a trial that cannot start) is
//   found before anything is written: the call did nothing and the batch stays open.
// - A report that the trial has moved past (a late result from an expired lease, a duplicate)
//   is not an error: the call returns false and changes no trial.
//
// Statements are prepared once here and reused. A Writer borrows its Store (which may move
// meanwhile); a Store has one Writer at a time.
class Writer {
 public:
  explicit Writer(Store& store);
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  ~Writer();  // rolls back what was not committed; never throws

  // Status queued, attempt 0; `number` is the next within the experiment (from 0). Returns the
  // trial's id at once, usable in the same batch.
  int64_t add_trial(const NewTrial& trial);
  // A queued trial starts its `attempt` (never below its current one) on `worker`'s `device`.
  void start_trial(int64_t trial, int attempt, std::optional<int64_t> worker,
                   std::string_view device, double at);
  // Status done with the metrics, if the trial is running `result.attempt`. Otherwise the
  // result is kept in late_results and false returned: a result counts once per trial.
  bool record_result(const TrialResult& result);
  // Keyed by (trial, attempt, epoch), or (trial, attempt, at) for a point
  // inside an epoch: a re-sent one replaces the first.
  void record_epoch(const EpochMetrics& epoch);
  // Status failed with the error text, if the trial is queued or running `attempt` (else
  // false: a stale report).
  bool record_failure(int64_t trial, int attempt, std::string_view error, double at);
  // Queued again as `next_attempt` (above the current one), off its worker, for a retry;
  // refused (false) once the trial is done or pruned. Keeps the last error text.
  bool requeue(int64_t trial, int next_attempt, double at);
  // A queued trial's latency, params and MACs as an experiment's latency pool measured them
  // before training (params and MACs kept when nullopt); false if it is not queued.
  bool record_latency(int64_t trial, double latency_ms, std::optional<int64_t> params,
                      std::optional<int64_t> macs);
  // Status pruned, if the trial is running `attempt`.
  bool mark_pruned(int64_t trial, int attempt, double at);
  // Sets last_seen and adds to the worker's connected and busy seconds.
  void worker_seen(int64_t worker, double at, double connected_delta, double busy_delta);
  // A screening score, unless the experiment holds one for that architecture and evaluator
  // already (false: a batch scored twice counts once).
  bool record_screen_score(const ScreenScore& score);
  // What a warm-started trial inherited (weight_inheritance), written with its counted
  // result; a second call for the trial replaces the first. Unknown trials are an Error.
  void record_inheritance(int64_t trial, int64_t parent_trial, int parent_epoch, int64_t tensors,
                          int64_t params);

  size_t pending() const { return pending_; }  // write calls since the last commit
  void commit();                               // a no-op when no batch is open
  void rollback();                             // drops the batch

 private:
  friend class Store;
  struct TrialState {
    std::string status;
    int64_t attempt;
  };
  void begin(std::string_view call);
  template <class F>
  auto guarded(std::string_view call, F&& body);
  void abandon() noexcept;  // rolls back after a failure; the caller reports it
  void detach() noexcept;   // the Store is going away
  int64_t next_number(int64_t experiment);
  std::optional<TrialState> trial_state(int64_t trial);
  TrialState existing_trial(std::string_view call, int64_t trial);
  Error error(std::string_view call, const std::string& what) const;

  Store* store_;  // null once the Store is gone
  Statement begin_, commit_, rollback_;
  Statement next_number_, trial_state_, worker_exists_;
  Statement insert_trial_, start_trial_, record_result_, late_result_, record_epoch_,
      record_sub_epoch_;
  Statement record_failure_, requeue_, mark_pruned_, worker_seen_, record_latency_;
  Statement record_screen_score_;
  std::optional<Statement> record_inheritance_;  // prepared at its first use
  bool open_ = false;                            // this Writer's transaction is open
  size_t pending_ = 0;
  // The next trial number per experiment, read once from MAX(number); valid because this is
  // the only writer, and forgotten on rollback (the numbers it handed out are free again).
  std::unordered_map<int64_t, int64_t> next_numbers_;
};

}  // namespace minas::db
