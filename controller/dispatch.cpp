#include "controller/dispatch.h"

#include <algorithm>

#include "controller/core.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::loop {

bool Dispatch::asking_allowed() const {
  return !no_more_archs_ && created_ < core_.config.budget_trials && !core_.stopping;
}

std::optional<int64_t> Dispatch::next_trial() {
  if (auto id = core_.book.next_queued()) return id;
  if (!core_.config.latency_pool.empty()) return std::nullopt;
  return new_trial();
}

std::optional<int64_t> Dispatch::new_trial() {
  // The strategy is asked once it has the screening scores to start from.
  if (!asking_allowed() || core_.screening.pending()) return std::nullopt;
  std::optional<Candidate> c;
  try {
    c = core_.strategy.ask();
  } catch (const db::SqliteError&) {
    throw;
  } catch (const Error& e) {
    // The strategy cannot go on (constraints that leave nothing, say): the
    // search stops as for its budget, keeping every result, and says why.
    core_.summary.error = e.what();
    no_more_archs_ = true;
    return std::nullopt;
  }
  core_.strategy_dirty = true;
  if (!c) {
    no_more_archs_ = true;
    return std::nullopt;
  }
  const Space& space = core_.space;
  db::NewTrial t;
  t.experiment_id = core_.experiment;
  t.arch_key = space.key(c->arch);
  t.arch_hash = space.hash(c->arch);
  t.arch_json = space.arch_to_json(c->arch).dump();
  if (c->parent) {
    if (auto p = core_.book.latest_with_arch(space.hash(*c->parent))) t.parent_id = *p;
    t.mutation = c->mutation;
  }
  t.fidelity = core_.config.fidelity;
  t.queued_at = unix_now();
  const int64_t id = core_.writer.add_trial(t);
  if (core_.parents.kept() && t.parent_id) core_.heirs[id] = *t.parent_id;
  core_.book.note_arch(t.arch_hash, id);
  core_.book.add(id, t.arch_key);
  ++created_;
  return id;
}

void Dispatch::on_ready(const std::string& worker, const std::string& slot) {
  WorkerState* w = core_.sessions.find(worker);
  if (!w) return;
  const auto& declared = w->slot_ids;
  if (std::find(declared.begin(), declared.end(), slot) == declared.end())
    throw proto::ProtocolError("not_allowed", "slot '" + printable_excerpt(slot, 40) +
                                                  "' was not declared in this worker's hello");
  if (const auto busy = core_.sessions.slot_busy(*w, worker, slot))
    throw proto::ProtocolError("not_allowed", "slot '" + printable_excerpt(slot, 40) +
                                                  "' runs trial " + std::to_string(*busy) +
                                                  ": it is not free");
  w->free.insert(slot);
  dispatch(worker);
}

void Dispatch::dispatch(const std::string& worker) {
  WorkerState* w = core_.sessions.find(worker);
  if (!w) return;
  if (core_.screening.pending()) return core_.screening.dispatch(worker, *w);
  const size_t k = static_cast<size_t>(std::max(1, core_.config.gpus_per_trial));
  if (w->measures && w->can_measure) core_.latency.dispatch(worker, *w);
  if (!w->trains) return;
  if (!w->can_measure && core_.config.latency_pool.empty()) return;
  if (core_.gangs.gang_mode()) return core_.gangs.dispatch();
  while (w->free.size() >= k) {
    const auto trial = next_trial();
    if (!trial) return core_.sessions.wait(worker);
    std::vector<std::string> slots(w->free.begin(),
                                   std::next(w->free.begin(), static_cast<long>(k)));
    for (const auto& sl : slots) w->free.erase(sl);
    start(*w, worker, *trial, slots);
  }
}

nlohmann::json Dispatch::train_body(WorkerState& ws, const Trial& t,
                                    const std::vector<std::string>& slots) {
  const ExperimentConfig& config = core_.config;
  nlohmann::json train = {
      {"trial", t.id},
      {"attempt", t.attempt},
      {"slots", slots},
      {"space_id", core_.space_id},
      {"arch", t.arch},
      {"recipe", config.recipe},
      {"data", {{"name", config.data}, {"fingerprint", config.data_fingerprint}}},
      {"fidelity", config.fidelity}};
  if (!config.objective.latency_device.empty() && config.latency_pool.empty())
    train["latency_device"] = config.objective.latency_device;
  // ASHA's rungs inside an epoch: validations the trainer makes mid-epoch.
  if (core_.asha && !core_.asha->settings().fractional_rungs().empty())
    train["validate_at"] = core_.asha->settings().fractional_rungs();
  if (!ws.has_space) {
    train["space"] = core_.space.spec();
    ws.has_space = true;
  }
  return train;
}

void Dispatch::start(WorkerState& w, const std::string& worker, int64_t trial,
                     const std::vector<std::string>& slots) {
  const Trial& t = core_.book.at(trial);
  const int attempt = t.attempt;
  std::string device;
  for (const auto& sl : slots) device += (device.empty() ? "" : ",") + sl;
  const double now = unix_now();
  core_.writer.start_trial(trial, attempt, w.id, device, now);
  core_.book.start(trial, worker, slots, now);
  w.trials.insert(trial);
  core_.book.sent(trial, attempt, worker);
  nlohmann::json train = train_body(w, t, slots);
  // States are kept at whole-epoch rungs only: a run resumes at an epoch boundary.
  std::vector<int> epochs;
  if (core_.states.kept()) epochs = core_.asha->settings().whole_rungs();
  if (core_.parents.kept()) epochs.push_back(core_.final_epoch());  // it may become a parent
  if (!epochs.empty()) train["checkpoint_epochs"] = epochs;
  // A retried attempt of a trial that passed a rung continues from there.
  std::optional<std::pair<int, std::string>> state;
  if (attempt > 0) state = core_.states.latest(trial);
  if (state) train["resume_epoch"] = state->first;
  // A child starts from its parent's final weights, unless it resumes: its
  // own state holds what it inherited.
  std::optional<std::pair<int, std::string>> inherited;
  const auto heir = core_.heirs.find(trial);
  if (!state && heir != core_.heirs.end()) {
    inherited = core_.parents.latest(heir->second);
    if (inherited)
      train["inherit"] = {{"trial", heir->second}, {"epoch", inherited->first}};
    else
      core_.log("trial " + std::to_string(trial) + " trains from scratch: no final state of " +
                "its parent trial " + std::to_string(heir->second) + " is kept");
  }
  core_.sessions.send(worker, proto::encode(proto::Type::train, std::move(train)));
  if (inherited)
    for (const std::string& chunk :
         proto::encode_checkpoint(trial, attempt, inherited->first, inherited->second))
      core_.sessions.send(worker, chunk);
  if (!state) return;
  for (const std::string& chunk :
       proto::encode_checkpoint(trial, attempt, state->first, state->second))
    core_.sessions.send(worker, chunk);
  core_.log("trial " + std::to_string(trial) + " attempt " + std::to_string(attempt) +
            " continues after epoch " + std::to_string(state->first) + " on " +
            core_.sessions.label(worker));
}

// Each idle worker is tried once per call: with a latency pool a training
// worker can find nothing while new trials may still be asked (they are
// being measured), and it waits again.
void Dispatch::fill_idle() {
  const TrialBook& book = core_.book;
  if (!core_.sessions.any_waiting() ||
      (book.queued() == 0 && book.measure_queued() == 0 && !asking_allowed()))
    return;
  for (const std::string& worker : core_.sessions.take_waiting()) {
    try {
      dispatch(worker);
    } catch (const db::SqliteError&) {
      throw;
    } catch (const Error& e) {
      core_.log("could not dispatch to " + core_.sessions.label(worker) + ": " + e.what());
    }
  }
}

}  // namespace minas::loop
