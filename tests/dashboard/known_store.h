#pragma once
// The store the dashboard's tests serve: known rows, exact answers.
#include <string>

#include "db/store.h"
#include "tests/support.h"

namespace minas::test {

// A store with one experiment "e" of 7 trials: 0..4 done (val_acc 0.50,
// 0.90, 0.70, 0.90, 0.60; params 100..500), 5 failed, 6 running; trial 3
// the child of trial 1.
struct KnownStore {
  test::TempDir dir{"dashboard"};
  std::string path = dir.file("minas.db");
  KnownStore() {
    db::Store store = db::Store::open(path);
    db::ExperimentSpec s;
    s.name = "e";
    s.space = "small";
    s.space_json = {{"kind", "chain"}};
    s.dataset = "fashion-mnist";
    s.dataset_fingerprint = "00112233aabbccdd";
    s.strategy = "evolution";
    s.strategy_settings = {{"name", "evolution"}};
    s.recipe = {{"epochs", 3}};
    s.objective = "val_acc";
    const int64_t e = store.create_experiment(s, 10.0);
    db::Connection& c = store.connection();
    c.exec(
        "INSERT INTO workers (id, name, host, devices, first_seen, last_seen, pool, tags) "
        "VALUES (1, 'w1', 'node1', '[{\"id\":\"cpu\"}]', 10, 20, 'gpu', '{\"gpu\":\"h100\"}')");
    const double acc[] = {0.5, 0.9, 0.7, 0.9, 0.6};
    for (int i = 0; i < 7; ++i) {
      const std::string n = std::to_string(i);
      c.exec(
          "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
          "status, queued_at, parent_id, mutation) VALUES (" +
          std::to_string(e) + ", " + n + ", 'a" + n + "', " + n + ", '{}', 3, 'queued', " +
          std::to_string(11 + i) + (i == 3 ? ", 2, 'op: x -> y')" : ", NULL, NULL)"));
    }
    for (int i = 0; i < 5; ++i) {
      const std::string n = std::to_string(i);
      c.exec("UPDATE trials SET status = 'done', worker_id = 1, device = 'cpu', started_at = " +
             std::to_string(20 + i) + ", finished_at = " + std::to_string(30 + i) +
             ", val_acc = " + std::to_string(acc[i]) +
             ", params = " + std::to_string(100 * (i + 1)) + " WHERE number = " + n);
      for (int ep = 1; ep <= 3; ++ep)
        c.exec("INSERT INTO epochs (trial_id, attempt, epoch, val_acc, train_loss) VALUES (" +
               std::to_string(i + 1) + ", 0, " + std::to_string(ep) + ", " +
               std::to_string(acc[i] * ep / 3) + ", " + std::to_string(1.0 / ep) + ")");
    }
    c.exec(
        "UPDATE trials SET status = 'failed', worker_id = 1, error = 'out of memory', "
        "finished_at = 40 WHERE number = 5");
    c.exec(
        "UPDATE trials SET status = 'running', worker_id = 1, device = 'cpu', started_at = 41 "
        "WHERE number = 6");
    // The pool: one worker of two slots from 12, busy 1 then 2; the strategy:
    // two snapshots of evolution's population.
    c.exec(
        "INSERT INTO pool_samples (experiment_id, at, workers, slots, busy, queued) VALUES "
        "(1, 12, 1, 2, 1, 5), (1, 13.5, 1, 2, 2, 4), (1, 41, 1, 2, 1, 0)");
    c.exec(
        "INSERT INTO strategy_snapshots (experiment_id, results, at, state) VALUES "
        "(1, 1, 30, '{\"population\":[0.5]}'), (1, 5, 34.5, '{\"population\":[0.5,0.9,0.7]}')");
  }
};

}  // namespace minas::test
