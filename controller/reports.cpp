#include "controller/reports.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "controller/core.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::loop {

namespace {

// "3" for a whole epoch, "0.25" for a point inside one.
std::string epochs_text(double epochs) {
  return std::trunc(epochs) == epochs ? std::to_string(static_cast<long long>(epochs))
                                      : nlohmann::json(epochs).dump();
}

bool in_flight(const Trial* t) {
  return t && (t->phase == Phase::running || t->phase == Phase::gang_forming);
}

}  // namespace

void Reports::on_progress(const std::string& worker, const proto::Progress& p) {
  // A stale attempt's epoch, or one from a gang's other rank: nothing to record.
  if (!core_.owns(worker, p.trial, p.attempt))
    return core_.refuse_unless_ran(worker, p.trial, p.attempt);
  core_.writer.record_epoch({p.trial, p.attempt, p.epoch, p.train_loss.value_or(0),
                             p.train_acc.value_or(0), p.val_acc.value_or(0), p.lr.value_or(0),
                             p.seconds.value_or(0), p.at});
  // A validation inside an epoch is judged at its fraction (ASHA's rungs
  // below an epoch), a whole epoch at its number.
  const double epochs = p.at.value_or(p.epoch);
  if (core_.asha && p.val_acc && !core_.asha->report(p.trial, epochs, *p.val_acc))
    prune(p.trial, epochs, *p.val_acc);
}

void Reports::prune(int64_t trial, double epochs, double val_acc) {
  const Trial* t = core_.book.find(trial);
  if (!in_flight(t)) return;
  const Trial flight = *t;
  const double now = unix_now();
  core_.sessions.send(
      flight.worker,
      proto::encode(proto::Type::cancel, {{"trial", trial},
                                          {"attempt", flight.attempt},
                                          {"reason", "pruned at epoch " + epochs_text(epochs)}}));
  core_.writer.mark_pruned(trial, flight.attempt, now);
  core_.states.drop(trial);
  core_.heirs.erase(trial);
  let_go(flight.worker, trial, flight.started, now, flight.slots.size());
  core_.book.prune(trial);
  Score score;
  score.value = val_acc;
  score.pruned = true;
  core_.strategy.tell(core_.space.parse_key(flight.arch), score);
  core_.strategy_dirty = true;
  ++core_.summary.pruned;
  core_.keep_parents();
  core_.snapshot_if_due();
}

void Reports::on_result(const std::string& worker, const proto::Result& m) {
  const int64_t trial = m.trial;
  const int attempt = m.attempt;
  if (m.measure_only) return core_.latency.on_measured(worker, m);
  if (m.gang_member) {
    // A rank past 0 of a gang is done; rank 0's worker reports the trial.
    if (core_.book.gang_member(worker, trial, attempt)) {
      if (WorkerState* w = core_.sessions.find(worker)) w->trials.erase(trial);
    } else {
      core_.refuse_unless_ran(worker, trial, attempt);
    }
    core_.ack(worker, trial, attempt, false);
    return;
  }
  const bool current = core_.owns(worker, trial, attempt);
  if (!current) {
    core_.refuse_unless_ran(worker, trial, attempt);
    if (!core_.book.ran_by(worker, trial, attempt)) {  // from before a restart: nothing to keep
      ++core_.summary.late;
      core_.ack(worker, trial, attempt, false);
      return;
    }
    // Else a late one of its own: kept, not counted.
  }
  const db::TrialResult r = result_row(worker, m, current);
  bool counted = false;
  try {
    counted = core_.writer.record_result(r) && current;
  } catch (const db::SqliteError&) {
    throw;
  } catch (const Error& e) {
    // A trial this store does not know (another controller's): acknowledged
    // as not counted so the worker lets it go.
    core_.log("result from " + core_.sessions.label(worker) + " not recorded: " + e.what());
  }
  if (counted && m.inherited_from) record_inheritance(m);
  if (!m.inherit_refused.empty())
    core_.log("trial " + std::to_string(trial) + " trained from scratch: its parent's state " +
              "was refused (" + printable_excerpt(m.inherit_refused, 200) + ")");
  if (counted)
    done(worker, r);
  else
    ++core_.summary.late;
  core_.ack(worker, trial, attempt, counted);
}

void Reports::record_inheritance(const proto::Result& m) {
  // Only what the controller sent counts: the lineage is of the store's own trials.
  const auto heir = core_.heirs.find(m.trial);
  if (heir == core_.heirs.end() || heir->second != *m.inherited_from) {
    core_.log("trial " + std::to_string(m.trial) + " says it inherited from trial " +
              std::to_string(*m.inherited_from) + ", which it was not sent: not recorded");
    return;
  }
  core_.writer.record_inheritance(m.trial, *m.inherited_from, m.inherited_epoch,
                                  m.inherited_tensors, m.inherited_params);
}

db::TrialResult Reports::result_row(const std::string& worker, const proto::Result& m,
                                    bool current) const {
  db::TrialResult r;
  r.trial_id = m.trial;
  r.attempt = m.attempt;
  r.val_acc = m.val_acc.value_or(0.0);
  r.test_acc = m.test_acc;
  r.latency_ms = m.latency_ms;
  r.params = m.params;
  r.macs = m.macs;
  const Objective& o = core_.config.objective;
  const Trial* t = core_.book.find(m.trial);
  if (current && (o.max_params || o.max_macs || o.pareto == "params" || o.pareto == "macs") &&
      (!r.params || !r.macs)) {
    // Exact functions of the layer graph: what the worker left out (a
    // simulated one does) is computed here when the objective needs it.
    const LayerGraph g = core_.space.lower(core_.space.parse_key(t->arch));
    if (!r.params) r.params = g.params();
    if (!r.macs) r.macs = g.macs();
  }
  if (t && t->measured) {
    // Measured by the latency pool before training: that latency counts,
    // not the training device's.
    r.latency_ms = t->measured->latency_ms;
    if (t->measured->params) r.params = t->measured->params;
    if (t->measured->macs) r.macs = t->measured->macs;
  }
  r.train_seconds = m.train_seconds.value_or(0.0);
  r.finished_at = unix_now();
  if (!m.resume_refused.empty())
    core_.log("trial " + std::to_string(m.trial) +
              " trained from scratch: its training state was refused (" +
              printable_excerpt(m.resume_refused, 200) + ")");
  r.worker_id = core_.sessions.find(worker)->id;
  return r;
}

void Reports::done(const std::string& worker, const db::TrialResult& r) {
  const Trial f = core_.book.at(r.trial_id);
  ++core_.summary.done;
  Metrics metrics;
  metrics.val_acc = r.val_acc;
  metrics.latency_ms = r.latency_ms;
  if (r.params) metrics.params = static_cast<double>(*r.params);
  if (r.macs) metrics.macs = static_cast<double>(*r.macs);
  if (r.train_seconds > 0) metrics.train_seconds = r.train_seconds;
  const Score sc = core_.config.objective.score(metrics);
  if (sc.feasible && r.val_acc > core_.best_val) {
    core_.best_val = r.val_acc;
    core_.best_arch = f.arch;
  }
  core_.strategy.tell(core_.space.parse_key(f.arch), sc);
  core_.book.finish(r.trial_id);  // its other ranks end with it and report as members
  core_.states.drop(r.trial_id);
  core_.heirs.erase(r.trial_id);
  core_.keep_parents();  // after tell: the population it may have left or joined
  core_.strategy_dirty = true;
  core_.snapshot_if_due();
  let_go(worker, r.trial_id, f.started, r.finished_at, f.slots.size());
}

void Reports::on_failure(const std::string& worker, const proto::Failure& m) {
  if (core_.latency.on_failure(worker, m)) return;  // a latency measurement's
  const int64_t trial = m.trial;
  const int attempt = m.attempt;
  // What the store keeps and the log shows of a peer's reason: bounded, and escaped in the log.
  const std::string reason = proto::bounded_text(m.reason);
  const bool current = core_.owns(worker, trial, attempt);
  // A rank past 0 of a gang that failed ends the whole attempt, rank 0's part included.
  const bool member = !current && core_.book.gang_member(worker, trial, attempt);
  if (!current && !member) {
    core_.refuse_unless_ran(worker, trial, attempt);  // else a stale attempt's: nothing to do
    core_.ack(worker, trial, attempt, false);
    return;
  }
  if (WorkerState* w = core_.sessions.find(worker); member && w) w->trials.erase(trial);
  core_.gangs.end(trial, worker, reason);
  const Trial flight = core_.book.at(trial);
  let_go(flight.worker, trial, flight.started, unix_now(), flight.slots.size());
  if (m.retryable) {
    retry_or_fail(trial, reason, unix_now());
  } else {
    core_.book.fail(trial);
    failed(trial, attempt, flight.arch, reason, unix_now());
  }
  core_.ack(worker, trial, attempt, true);
}

void Reports::let_go(const std::string& worker, int64_t trial, double started, double ended,
                     size_t slots) {
  WorkerState* w = core_.sessions.find(worker);
  if (!w) return;
  w->trials.erase(trial);
  // Busy time in slot-seconds, as connected time is counted.
  core_.writer.worker_seen(w->id, ended, 0.0,
                           std::max(0.0, ended - started) * static_cast<double>(slots));
}

void Reports::failed(int64_t trial, int attempt, const std::string& arch, const std::string& why,
                     double now) {
  core_.writer.record_failure(trial, attempt, why, now);
  core_.states.drop(trial);
  core_.heirs.erase(trial);
  core_.tell_failure(arch);
  core_.keep_parents();
}

void Reports::retry_or_fail(int64_t trial, const std::string& why, double now) {
  const Trial& t = core_.book.at(trial);
  const int attempt = t.attempt;
  const std::string arch = t.arch;
  switch (core_.book.lose(trial, core_.opt.max_attempts, core_.stopping)) {
    case AttemptEnd::requeued:
      core_.writer.requeue(trial, attempt + 1, now);
      ++core_.summary.requeued;
      break;
    case AttemptEnd::given_back:  // budget or stop: the attempt is given back for a resume to run
      core_.writer.requeue(trial, attempt + 1, now);
      break;
    case AttemptEnd::failed:
      failed(trial, attempt, arch, why + " (after " + std::to_string(attempt + 1) + " attempts)",
             now);
      break;
  }
}

void Reports::on_heartbeat(const std::string& worker, const proto::Heartbeat& h) {
  core_.sessions.account(worker);
  WorkerState* w = core_.sessions.find(worker);
  if (!w || !h.running) return;
  const std::set<std::pair<int64_t, int>> running(h.running->begin(), h.running->end());
  // After a restart: the attempts it still runs are its again.
  for (const auto& [t, a] : running)
    if (!in_flight(core_.book.find(t))) core_.resume.claim(worker, t, a);
  const double now = unix_now(), beat = core_.opt.heartbeat_ms / 1000.0, grace = 3.0 * beat;
  // A heartbeat without an attempt may have left the worker before the attempt
  // reached it: when this process or the worker's was not scheduled for a while
  // (a loaded machine), several such heartbeats are read here at once, long
  // after the attempt was sent. So an attempt is lost only when heartbeats
  // spread over two intervals of the controller's own reading leave it out:
  // three of them, the last two intervals after the first.
  std::vector<int64_t> lost;
  std::map<std::pair<int64_t, int>, WorkerState::Missed> missed;
  for (int64_t id : w->trials) {
    const Trial* t = core_.book.find(id);
    // A gang's other parts start after rank 0's rendezvous: only rank 0's is checked here.
    if (!in_flight(t) || t->worker != worker || running.count({id, t->attempt}) ||
        now - t->started <= grace)
      continue;
    const std::pair<int64_t, int> key{id, t->attempt};
    WorkerState::Missed m = w->missed.count(key) ? w->missed.at(key) : WorkerState::Missed{now, 0};
    if (++m.count >= 3 && now - m.first >= 2 * beat)
      lost.push_back(id);
    else
      missed[key] = m;
  }
  w->missed = std::move(missed);  // what it listed, or no longer runs, starts over
  for (int64_t id : lost) {
    const std::vector<std::string> slots = core_.book.at(id).slots;
    core_.gangs.end(id, worker, "the worker of its rank 0 lost the attempt");
    core_.log(core_.sessions.label(worker) + " no longer runs trial " + std::to_string(id) +
              ": it goes back to the queue");
    w->trials.erase(id);
    retry_or_fail(id, "the worker lost the attempt", now);
    // Its `ready` for those slots was refused while they ran the attempt: they are free.
    for (const auto& sl : slots) w->free.insert(sl);
    core_.sessions.wait(worker);
  }
}

void Reports::requeue_all(const std::string& worker, const std::string& why) {
  WorkerState* w = core_.sessions.find(worker);
  if (!w) return;
  const double now = unix_now();
  const std::set<int64_t> trials = w->trials;
  for (int64_t trial : trials) {
    const Trial* t = core_.book.find(trial);
    if (!in_flight(t)) continue;
    // A gang is lost whole when any of its workers is: the others stop.
    core_.gangs.end(trial, worker, why);
    if (WorkerState* lead = core_.sessions.find(t->worker)) lead->trials.erase(trial);
    retry_or_fail(trial, why, now);
  }
  w->trials.clear();
  core_.latency.lost(*w);
}

}  // namespace minas::loop
