#include "controller/resume.h"

#include <algorithm>
#include <sstream>

#include "controller/core.h"
#include "searchspace/error.h"

namespace minas::loop {

void Resume::open_experiment() {
  const ExperimentConfig& config = core_.config;
  const Space& space = core_.space;
  db::Store& store = core_.store;
  db::ExperimentSpec spec;
  spec.name = config.name;
  spec.space = space.ref().empty() ? space.name() : space.ref();
  spec.space_json = space.spec();
  spec.dataset = config.data;
  spec.dataset_fingerprint = config.data_fingerprint;
  spec.strategy = core_.strategy.name();
  spec.strategy_settings =
      config.strategy_settings.is_null()
          ? nlohmann::json{{"name", core_.strategy.name()}, {"seed", config.seed}}
          : config.strategy_settings;
  if (config.asha) spec.strategy_settings["asha"] = config.asha->to_json();
  if (config.inherit) spec.strategy_settings["inherit"] = true;
  spec.recipe = config.recipe;
  spec.objective = config.objective.pareto_mode() ? "pareto:val_acc," + config.objective.pareto
                   : config.objective.latency_target_ms ? "val_acc*latency^w"
                   : config.objective.time_exponent     ? "1-(1-val_acc)*train_seconds^a"
                                                        : "val_acc";
  if (auto e = store.find_experiment(config.name)) {
    if (e->space_json != spec.space_json)
      throw Error("experiment '" + config.name + "'",
                  "exists in " + store.path() + " with another search space; pick a new name");
    if (e->strategy_settings != spec.strategy_settings)
      throw Error("experiment '" + config.name + "'",
                  "exists in " + store.path() + " with strategy settings " +
                      e->strategy_settings.dump() + ", not " + spec.strategy_settings.dump() +
                      "; resume it with the same ones or pick a new name");
    core_.experiment = e->id;
    core_.summary.resumed = true;
    resume();
  } else {
    core_.experiment = store.create_experiment(spec, unix_now());
  }
  core_.data.load();
  store.set_experiment_status(core_.experiment, "running", unix_now());
  const double spent = store.experiment(config.name).seconds_run;
  store.set_experiment_budget(core_.experiment, config.budget_trials,
                              config.budget_seconds > 0
                                  ? std::optional<double>(spent + config.budget_seconds)
                                  : std::nullopt,
                              unix_now());
  core_.states.open();
  core_.parents.open();
  core_.keep_parents();  // what a previous run kept and no child can inherit any more
}

void Resume::resume() {
  const ControllerSummary& summary = core_.summary;
  if (auto state = core_.store.strategy_state(core_.experiment)) core_.strategy.restore(*state);
  const double now = unix_now();
  for (const db::ResumedTrial& t : db::resumed_trials(core_.store.connection(), core_.experiment))
    add_trial(t, now);
  core_.writer.commit();
  // A worker that took this controller for lost reconnects within its own
  // liveness time plus its backoff; twice the liveness time covers both.
  grace_end_ = Clock::now() +
               2 * std::chrono::milliseconds(int64_t{core_.opt.heartbeat_ms} * core_.opt.liveness);
  if (core_.asha) {
    // The rungs as the trials reached them: every attempt's epoch, or point
    // inside one, at a rung.
    for (const db::ValidatedEpoch& e :
         db::validated_epochs(core_.store.connection(), core_.experiment))
      core_.asha->report(e.trial_id, e.epochs, e.val_acc);
  }
  core_.log("resumed '" + core_.config.name + "': " + std::to_string(summary.done) + " done, " +
            std::to_string(summary.failed) + " failed, " + std::to_string(summary.pruned) +
            " pruned, " + std::to_string(core_.book.queued()) + " back in the queue, " +
            std::to_string(core_.book.unclaimed()) + " running (their workers may take them back)");
}

void Resume::add_trial(const db::ResumedTrial& t, double now) {
  ControllerSummary& summary = core_.summary;
  TrialBook& book = core_.book;
  const int64_t id = t.id;
  const std::string& key = t.arch_key;
  const std::string& status = t.status;
  const int attempt = t.attempt;
  const Arch arch = core_.space.parse_key(key);
  book.note_arch(core_.space.hash(arch), id);
  core_.dispatch.count_existing();
  if (status == "done") {
    ++summary.done;
    book.add_ended(id, Phase::done, attempt);
    Metrics m;
    m.val_acc = t.val_acc.value_or(0.0);
    m.latency_ms = t.latency_ms;
    m.params = t.params;
    m.macs = t.macs;
    m.train_seconds = t.train_seconds;
    const Score sc = core_.config.objective.score(m);
    if (sc.feasible && m.val_acc > core_.best_val) {
      core_.best_val = m.val_acc;
      core_.best_arch = key;
    }
    core_.strategy.replay(arch, sc);
    return;
  }
  if (status == "failed" || status == "pruned") {
    ++(status == "failed" ? summary.failed : summary.pruned);
    book.add_ended(id, status == "failed" ? Phase::failed : Phase::pruned, attempt);
    core_.strategy.replay(arch, std::nullopt);
    return;
  }
  core_.strategy.replay(arch, std::nullopt);
  if (core_.config.inherit && t.parent_id) core_.heirs[id] = *t.parent_id;
  std::optional<Measured> measured;
  if (!core_.config.latency_pool.empty() && t.latency_ms) {
    Measured x{*t.latency_ms, std::nullopt, std::nullopt};
    if (t.params) x.params = static_cast<int64_t>(*t.params);
    if (t.macs) x.macs = static_cast<int64_t>(*t.macs);
    measured = x;
  }
  if (status == "running" && t.worker_id) {
    // Running when the last controller stopped: its worker may still run
    // it, or hold its result. It has the grace period to say so.
    book.add_unclaimed(id, key, attempt, measured, *t.worker_id, t.device.value_or(""));
  } else {
    requeue(id, key, attempt, status == "running" ? attempt + 1 : attempt, measured, now);
  }
}

void Resume::requeue(int64_t id, const std::string& arch, int attempt, int next,
                     std::optional<Measured> measured, double now) {
  if (next != attempt) core_.writer.requeue(id, next, now);
  core_.book.add_resumed(id, arch, attempt, next, measured);
  ++core_.summary.requeued;
}

bool Resume::claim(const std::string& worker, int64_t trial, int attempt) {
  const Trial* u = core_.book.find(trial);
  WorkerState* w = core_.sessions.find(worker);
  if (!u || u->phase != Phase::unclaimed || !w || u->attempt != attempt ||
      u->claim_worker_id != w->id)
    return false;
  std::vector<std::string> slots;
  std::stringstream device(u->claim_device);
  for (std::string sl; std::getline(device, sl, ',');) {
    const auto& own = w->slot_ids;
    // A gang's device names its workers: not taken back, it trains again.
    if (std::find(own.begin(), own.end(), sl) == own.end() ||
        core_.sessions.slot_busy(*w, worker, sl))
      return false;
    slots.push_back(sl);
  }
  if (slots.empty()) return false;
  for (const auto& sl : slots) w->free.erase(sl);
  core_.book.claim(trial, worker, std::move(slots), unix_now());
  w->trials.insert(trial);
  core_.book.sent(trial, attempt, worker);
  core_.log(core_.sessions.label(worker) + " took back trial " + std::to_string(trial) +
            " attempt " + std::to_string(attempt) +
            ", which it ran before the controller restarted");
  return true;
}

void Resume::expire_unclaimed(bool now_anyway) {
  TrialBook& book = core_.book;
  if (book.unclaimed() == 0 || (!now_anyway && Clock::now() < grace_end_)) return;
  const double now = unix_now();
  const size_t n = book.unclaimed();
  // At a stop, given back for a resume to run; else they train again.
  for (const auto& [id, next] : book.expire_unclaimed(core_.stopping)) {
    core_.writer.requeue(id, next, now);
    if (!core_.stopping) ++core_.summary.requeued;
  }
  core_.log(std::to_string(n) + " trial(s) running before the restart were not taken " +
            "back by their workers: they train again");
}

}  // namespace minas::loop
