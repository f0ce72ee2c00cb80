#include "cli/bench_results.h"

#include <algorithm>

#include "searchspace/space.h"

namespace minas::cli {

SimulatedResults::SimulatedResults(db::Store& store, const std::string& name, int epochs,
                                   uint64_t seed)
    : store_(store), epochs_(epochs), rng_(seed) {
  // What a search would have ready before it records anything: the space's
  // architectures and the workers.
  const Space space = Space::load("nb201");
  for (int i = 0; i < 4096; ++i) {
    const Arch a = space.sample(rng_);
    archs_.emplace_back(space.key(a), space.arch_to_json(a).dump());
  }
  db::ExperimentSpec spec;
  spec.name = name;
  spec.space = space.ref();
  spec.space_json = space.spec();
  spec.dataset = "simulated";
  spec.dataset_fingerprint = "0000000000000000";
  spec.strategy = "evolution";
  spec.recipe = {{"epochs", epochs}};
  spec.objective = "val_acc";
  experiment_ = store.create_experiment(spec, 0.0);
  for (int w = 0; w < 8; ++w)
    workers_.push_back(store.upsert_worker("w" + std::to_string(w), "localhost", {"cpu"}, 0.0));
}

int64_t SimulatedResults::record(db::Writer& writer, int64_t count, int64_t batch) {
  int64_t commits = 0;
  for (int64_t k = 0; k < count; ++k, ++next_) {
    const int64_t i = next_;
    const auto& [key, json] = archs_[static_cast<size_t>(i) % archs_.size()];
    const double now = static_cast<double>(i);
    db::NewTrial nt;
    nt.experiment_id = experiment_;
    nt.arch_key = key;
    nt.arch_hash = fnv1a64(key);
    nt.arch_json = json;
    nt.fidelity = epochs_;
    nt.queued_at = now;
    const int64_t id = writer.add_trial(nt);
    const int64_t worker = workers_[static_cast<size_t>(i) % workers_.size()];
    writer.start_trial(id, 0, worker, "cpu", now);
    const double acc = 0.5 + 0.45 * rng_.uniform();
    for (int e = 1; e <= epochs_; ++e)
      writer.record_epoch(
          {id, 0, e, 1.0 / e, acc * e / epochs_, acc * e / epochs_, 0.1, 1.0, std::nullopt});
    db::TrialResult r;
    r.trial_id = id;
    r.val_acc = acc;
    r.test_acc = acc - 0.01;
    r.latency_ms = 0.2 + 3 * rng_.uniform();
    r.params = 100000 + static_cast<int64_t>(rng_.below(900000));
    r.macs = 1000000 + static_cast<int64_t>(rng_.below(90000000));
    r.train_seconds = 30;
    r.finished_at = now + 1;
    r.worker_id = worker;
    writer.record_result(r);
    if (internals_) {
      store_.add_pool_sample(experiment_, now + 1, static_cast<int>(workers_.size()),
                             static_cast<int>(workers_.size()), static_cast<int>(i % 9), i % 5);
      population_.push_back(acc);
      if (population_.size() > 10) population_.erase(population_.begin());
      if (i + 1 >= next_snapshot_) {
        store_.add_strategy_snapshot(experiment_, i + 1, {{"population", population_}}, now + 1);
        next_snapshot_ = i + 1 + std::max<int64_t>(1, (i + 1) / 100);
      }
    }
    if ((k + 1) % batch == 0) {
      writer.commit();
      ++commits;
    }
  }
  if (writer.pending()) {
    writer.commit();
    ++commits;
  }
  return commits;
}

}  // namespace minas::cli
