#include "db/schema.h"

namespace minas::db {

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> list = {
      {1, "experiments, workers, trials and per-epoch metrics", R"sql(
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  space TEXT NOT NULL,                -- the space reference, overrides included
  space_json TEXT NOT NULL,           -- the resolved space document
  dataset TEXT NOT NULL,              -- name or folder as given
  dataset_fingerprint TEXT NOT NULL,  -- what was trained on, exactly
  strategy TEXT NOT NULL,
  strategy_settings TEXT NOT NULL,    -- JSON
  recipe TEXT NOT NULL,               -- JSON
  recipe_hash TEXT NOT NULL,          -- of the canonical recipe JSON
  objective TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('created', 'running', 'stopped', 'finished', 'failed')),
  created_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL
);
CREATE INDEX experiments_data ON experiments (dataset_fingerprint, recipe_hash);

CREATE TABLE workers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,          -- the worker's identity, e.g. host:pid
  host TEXT NOT NULL,
  devices TEXT NOT NULL,              -- JSON: its device slots
  first_seen REAL NOT NULL,
  last_seen REAL NOT NULL,
  connected_seconds REAL NOT NULL DEFAULT 0,
  busy_seconds REAL NOT NULL DEFAULT 0
);

CREATE TABLE trials (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  number INTEGER NOT NULL,            -- order of creation within the experiment, from 0
  arch_key TEXT NOT NULL,
  arch_hash INTEGER NOT NULL,         -- FNV-1a 64 of the key, as a signed 64-bit pattern
  arch_json TEXT NOT NULL,
  parent_id INTEGER REFERENCES trials (id),
  mutation TEXT,                      -- what changed from the parent
  fidelity INTEGER NOT NULL,          -- training budget of this trial (epochs)
  status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'pruned')),
  attempt INTEGER NOT NULL DEFAULT 0,
  worker_id INTEGER REFERENCES workers (id),
  device TEXT,
  queued_at REAL NOT NULL,
  started_at REAL,
  finished_at REAL,
  val_acc REAL,
  test_acc REAL,
  latency_ms REAL,
  params INTEGER,
  macs INTEGER,
  train_seconds REAL,
  error TEXT,
  UNIQUE (experiment_id, number)
);
CREATE INDEX trials_status ON trials (experiment_id, status);
-- Covers ranking and Pareto fronts over finished trials without touching the table.
CREATE INDEX trials_done ON trials (experiment_id, val_acc DESC, latency_ms, params, macs, test_acc,
                                    train_seconds, number, status) WHERE status = 'done';
CREATE INDEX trials_finished ON trials (experiment_id, finished_at);
CREATE INDEX trials_arch ON trials (arch_hash, fidelity);
CREATE INDEX trials_parent ON trials (parent_id);

CREATE TABLE epochs (
  trial_id INTEGER NOT NULL REFERENCES trials (id),
  attempt INTEGER NOT NULL,
  epoch INTEGER NOT NULL,             -- from 1
  train_loss REAL,
  train_acc REAL,
  val_acc REAL,
  lr REAL,
  seconds REAL,
  PRIMARY KEY (trial_id, attempt, epoch)
) WITHOUT ROWID;
)sql"},
      {2, "strategy state, artifacts and late results", R"sql(
CREATE TABLE strategy_state (
  experiment_id INTEGER PRIMARY KEY REFERENCES experiments (id),
  state TEXT NOT NULL,                -- JSON, the strategy's own
  updated_at REAL NOT NULL
);

CREATE TABLE artifacts (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  trial_id INTEGER REFERENCES trials (id),
  kind TEXT NOT NULL,                 -- checkpoint, onnx, report, ...
  path TEXT NOT NULL,
  checksum TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_at REAL NOT NULL
);
CREATE INDEX artifacts_trial ON artifacts (trial_id);

-- Results that arrived for an attempt the trial had already moved past (an
-- expired lease): kept for the record, never counted.
CREATE TABLE late_results (
  id INTEGER PRIMARY KEY,
  trial_id INTEGER NOT NULL REFERENCES trials (id),
  attempt INTEGER NOT NULL,
  received_at REAL NOT NULL,
  val_acc REAL,
  worker_id INTEGER REFERENCES workers (id)
);
)sql"},
      {3, "seconds each experiment's controller has run", R"sql(
-- Wall-clock seconds the controller has run the experiment over all its
-- runs, added at each clean stop: what a resumed budget subtracts.
ALTER TABLE experiments ADD COLUMN seconds_run REAL NOT NULL DEFAULT 0;
)sql"},
      {4, "customer data sets as validated before any training, with their fingerprints", R"sql(
-- minas adapt: each data set's validation report, kept whether or not the
-- data could be used (an unusable one stops before its experiment exists, so
-- the experiment is named, not referenced), and the fingerprint by which
-- later runs find the most similar data sets for their warm start.
CREATE TABLE data_reports (
  id INTEGER PRIMARY KEY,
  experiment TEXT NOT NULL,   -- the experiment's name
  location TEXT NOT NULL,     -- the data as given (folder, CSV or IDX prefix)
  usable INTEGER NOT NULL CHECK (usable IN (0, 1)),
  fingerprint TEXT NOT NULL,  -- JSON
  report TEXT NOT NULL,       -- JSON
  created_at REAL NOT NULL
);
CREATE INDEX data_reports_experiment ON data_reports (experiment);
)sql"},
      {5, "latency measurements on deployment targets, with the latency model's predictions", R"sql(
-- minas adapt: every network measured at batch 1 on a deployment target
-- (cpu:THREADS or cuda:N of a host), with what the per-target latency model
-- predicted before the measurement (NULL when it had too few measurements to
-- predict). The model of a later run is calibrated from these rows.
CREATE TABLE latency_measurements (
  id INTEGER PRIMARY KEY,
  target TEXT NOT NULL,       -- cpu:THREADS or cuda:N
  host TEXT NOT NULL,         -- the machine it was measured on
  space_ref TEXT NOT NULL,    -- the space (with overrides) the architecture is of
  arch_key TEXT NOT NULL,
  measured_ms REAL NOT NULL,
  predicted_ms REAL,
  experiment TEXT NOT NULL,   -- the experiment's name
  created_at REAL NOT NULL
);
CREATE INDEX latency_measurements_target ON latency_measurements (target, host);
)sql"},
      {6, "a change cursor on trials and per-experiment status counts kept on write", R"sql(
-- The dashboard's live updates: every change to a trial's row (created,
-- started, a result, a failure, a retry) gives it the next number of one
-- store-wide sequence, so a reader asks for what changed since the last
-- number it saw instead of reading everything again. Status counts per
-- experiment are kept up to date by the same triggers, so an overview never
-- counts 100,000 rows.
CREATE TABLE change_seq (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
INSERT INTO change_seq (id, seq) VALUES (1, (SELECT coalesce(max(id), 0) FROM trials));
ALTER TABLE trials ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE trials SET seq = id;
CREATE INDEX trials_seq ON trials (experiment_id, seq);
-- A status's trials in order of number (the dashboard's filtered pages)
-- without walking the others.
DROP INDEX trials_status;
CREATE INDEX trials_status ON trials (experiment_id, status, number);

CREATE TABLE experiment_counts (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  status TEXT NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (experiment_id, status)
) WITHOUT ROWID;
INSERT INTO experiment_counts (experiment_id, status, n)
  SELECT experiment_id, status, count(*) FROM trials GROUP BY experiment_id, status;

CREATE TRIGGER trials_changed_insert AFTER INSERT ON trials BEGIN
  UPDATE change_seq SET seq = seq + 1 WHERE id = 1;
  UPDATE trials SET seq = (SELECT seq FROM change_seq WHERE id = 1) WHERE id = NEW.id;
  INSERT INTO experiment_counts (experiment_id, status, n) VALUES (NEW.experiment_id, NEW.status, 1)
    ON CONFLICT (experiment_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER trials_changed_update AFTER UPDATE OF status, attempt, worker_id, device,
    started_at, finished_at, val_acc, test_acc, latency_ms, params, macs, train_seconds, error
    ON trials BEGIN
  UPDATE change_seq SET seq = seq + 1 WHERE id = 1;
  UPDATE trials SET seq = (SELECT seq FROM change_seq WHERE id = 1) WHERE id = NEW.id;
  UPDATE experiment_counts SET n = n - 1
    WHERE NEW.status != OLD.status AND experiment_id = OLD.experiment_id AND status = OLD.status;
  INSERT INTO experiment_counts (experiment_id, status, n)
    SELECT NEW.experiment_id, NEW.status, 1 WHERE NEW.status != OLD.status
    ON CONFLICT (experiment_id, status) DO UPDATE SET n = n + 1;
END;
)sql"},
      {7, "the best-so-far curve kept on write, strategy snapshots and worker-pool samples", R"sql(
-- The best-so-far curve of validation accuracy, one row per improvement, kept
-- by the trials' update trigger so that an overview reads a few rows instead
-- of every trial: `finished` is how many of the experiment's trials had
-- finished (done, pruned or failed) when it was reached.
CREATE TABLE best_so_far (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  finished INTEGER NOT NULL,
  number INTEGER NOT NULL,            -- the trial that reached it
  val_acc REAL NOT NULL,
  finished_at REAL NOT NULL,
  PRIMARY KEY (experiment_id, finished)
) WITHOUT ROWID;
INSERT INTO best_so_far (experiment_id, finished, number, val_acc, finished_at)
  SELECT experiment_id, k, number, val_acc, finished_at FROM (
    SELECT experiment_id, number, status, val_acc, finished_at,
      row_number() OVER w AS k,
      max(CASE WHEN status = 'done' THEN val_acc END)
        OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM trials WHERE status IN ('done', 'failed', 'pruned') AND finished_at IS NOT NULL
    WINDOW w AS (PARTITION BY experiment_id ORDER BY finished_at, number))
  WHERE status = 'done' AND val_acc IS NOT NULL AND (before IS NULL OR val_acc > before);

-- The update trigger of migration 6 again, with the best-so-far row added
-- last (after the counts it reads are updated).
DROP TRIGGER trials_changed_update;
CREATE TRIGGER trials_changed_update AFTER UPDATE OF status, attempt, worker_id, device,
    started_at, finished_at, val_acc, test_acc, latency_ms, params, macs, train_seconds, error
    ON trials BEGIN
  UPDATE change_seq SET seq = seq + 1 WHERE id = 1;
  UPDATE trials SET seq = (SELECT seq FROM change_seq WHERE id = 1) WHERE id = NEW.id;
  UPDATE experiment_counts SET n = n - 1
    WHERE NEW.status != OLD.status AND experiment_id = OLD.experiment_id AND status = OLD.status;
  INSERT INTO experiment_counts (experiment_id, status, n)
    SELECT NEW.experiment_id, NEW.status, 1 WHERE NEW.status != OLD.status
    ON CONFLICT (experiment_id, status) DO UPDATE SET n = n + 1;
  -- A record: done now, and better than every other done trial (the first
  -- of the covering index of done trials, by accuracy). The comparison reads
  -- trials, not best_so_far: an INSERT reading its own table would copy the
  -- rows to a temporary table first, at every update.
  INSERT OR REPLACE INTO best_so_far (experiment_id, finished, number, val_acc, finished_at)
    SELECT NEW.experiment_id,
           (SELECT coalesce(sum(n), 0) FROM experiment_counts
             WHERE experiment_id = NEW.experiment_id AND status IN ('done', 'failed', 'pruned')),
           NEW.number, NEW.val_acc, NEW.finished_at
    WHERE NEW.status = 'done' AND OLD.status != 'done' AND NEW.val_acc IS NOT NULL
      AND NEW.finished_at IS NOT NULL
      AND NEW.val_acc > coalesce((SELECT val_acc FROM trials INDEXED BY trials_done
                                   WHERE experiment_id = NEW.experiment_id AND status = 'done'
                                     AND id != NEW.id
                                   ORDER BY val_acc DESC LIMIT 1), -1e308);
END;

-- The budget of the experiment's latest controller run, for "budget used":
-- the trials it may create and its wall-clock seconds over all runs (NULL:
-- none), and when that run started (seconds_run grows only at a run's end).
ALTER TABLE experiments ADD COLUMN budget_trials INTEGER;
ALTER TABLE experiments ADD COLUMN budget_seconds REAL;
ALTER TABLE experiments ADD COLUMN run_started_at REAL;

-- A trial's metrics move its change number too: a new epoch of a running
-- trial is a change a live page sees (its learning curve grows).
CREATE TRIGGER epochs_changed AFTER INSERT ON epochs BEGIN
  UPDATE change_seq SET seq = seq + 1 WHERE id = 1;
  UPDATE trials SET seq = (SELECT seq FROM change_seq WHERE id = 1) WHERE id = NEW.trial_id;
END;

-- A worker's pool and tags (minas worker --pool, --tag), as it last said.
ALTER TABLE workers ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE workers ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';

-- What the search strategy's decision state looked like as results came in
-- (evolution: its population's scores; REINFORCE: reward, baseline and the
-- policy's entropy), written by the controller with the results that changed
-- it, densely at first and then once per 1% more results, so an experiment
-- of n results holds about 100 ln(n) rows.
CREATE TABLE strategy_snapshots (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  results INTEGER NOT NULL,           -- results told to the strategy so far
  at REAL NOT NULL,
  state TEXT NOT NULL,                -- JSON, the strategy's own summary
  PRIMARY KEY (experiment_id, results)
) WITHOUT ROWID;

-- The worker pool seen by an experiment's controller: a row whenever the
-- number of workers, their slots, the busy slots or the queue changed (at
-- most one a second), so busy and idle are charted over time.
CREATE TABLE pool_samples (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  at REAL NOT NULL,
  workers INTEGER NOT NULL,
  slots INTEGER NOT NULL,
  busy INTEGER NOT NULL,
  queued INTEGER NOT NULL,
  PRIMARY KEY (experiment_id, at)
) WITHOUT ROWID;
)sql"},
      {8, "validations inside an epoch (ASHA's fractional rungs)", R"sql(
-- A validation made inside an epoch, after `at` epochs of training (0.25:
-- a quarter of the first epoch's steps), for ASHA rungs below an epoch.
-- epochs keeps one row per finished epoch; a trial's learning curve is both
-- tables by `at` (an epoch row's `at` is its epoch).
CREATE TABLE sub_epochs (
  trial_id INTEGER NOT NULL REFERENCES trials (id),
  attempt INTEGER NOT NULL,
  at REAL NOT NULL,                   -- epochs trained, not a whole number
  train_loss REAL,                    -- over the steps of this epoch so far
  train_acc REAL,
  val_acc REAL,
  lr REAL,
  seconds REAL,                       -- of this epoch's steps so far
  PRIMARY KEY (trial_id, attempt, at)
) WITHOUT ROWID;
CREATE TRIGGER sub_epochs_changed AFTER INSERT ON sub_epochs BEGIN
  UPDATE change_seq SET seq = seq + 1 WHERE id = 1;
  UPDATE trials SET seq = (SELECT seq FROM change_seq WHERE id = 1) WHERE id = NEW.trial_id;
END;
)sql"},
      {9, "screening scores: architectures scored at initialization, without training", R"sql(
-- What the workers' screening requests scored (zero-cost proxies, params,
-- MACs; trainer/proxies.h), one row per architecture and evaluator of an
-- experiment: written by the controller before it acknowledges the batch,
-- read by a resumed controller so that nothing is screened twice. A NULL
-- score is an architecture the evaluator could not score (error says why)
-- or scored as not finite.
CREATE TABLE screening_scores (
  experiment_id INTEGER NOT NULL REFERENCES experiments (id),
  arch_key TEXT NOT NULL,
  evaluator TEXT NOT NULL,
  score REAL,
  seconds REAL NOT NULL,              -- the worker's time for this architecture
  error TEXT,
  worker_id INTEGER REFERENCES workers (id),
  at REAL NOT NULL,
  PRIMARY KEY (experiment_id, evaluator, arch_key)
) WITHOUT ROWID;
)sql"},
      {10, "the lineage of weights: what a warm-started trial inherited from its parent", R"sql(
-- A trial trained from its parent's weights (minas search --inherit): the
-- parent trial and the epoch of its state, and how much of the child the
-- mapping filled (trainer/inherit.h): tensors, running statistics included,
-- and trainable parameters. Written with the trial's counted result.
CREATE TABLE weight_inheritance (
  trial_id INTEGER PRIMARY KEY REFERENCES trials (id),
  parent_trial_id INTEGER NOT NULL REFERENCES trials (id),
  parent_epoch INTEGER NOT NULL,
  tensors INTEGER NOT NULL,
  params INTEGER NOT NULL
);
CREATE INDEX weight_inheritance_parent ON weight_inheritance (parent_trial_id);
)sql"},
  };
  return list;
}

}  // namespace minas::db
