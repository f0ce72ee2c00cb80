#include "controller/latency_pool.h"

#include <algorithm>

#include "controller/core.h"
#include "searchspace/json_read.h"

namespace minas::loop {

void LatencyPool::dispatch(const std::string& worker, WorkerState& w) {
  const ExperimentConfig& config = core_.config;
  TrialBook& book = core_.book;
  while (!w.free.empty()) {
    int train_slots = 0;
    for (const auto& [id, x] : core_.sessions.all())
      if (x.trains) train_slots += x.slots / std::max(1, config.gpus_per_trial);
    std::optional<int64_t> trial = book.next_to_measure();
    if (!trial &&
        static_cast<int>(book.queued() + book.measuring().size()) < std::max(1, train_slots))
      trial = core_.dispatch.new_trial();
    if (!trial) return core_.sessions.wait(worker);
    const std::string slot = *w.free.begin();
    w.free.erase(w.free.begin());
    book.start_measuring(*trial, worker, slot, unix_now());
    const Trial& t = book.at(*trial);
    w.measuring.insert(t.id);
    book.sent(t.id, t.attempt, worker);
    nlohmann::json m = {{"trial", t.id},
                        {"attempt", t.attempt},
                        {"slots", {slot}},
                        {"space_id", core_.space_id},
                        {"arch", t.arch},
                        {"recipe", config.recipe},
                        {"data", {{"name", config.data}, {"fingerprint", config.data_fingerprint}}},
                        {"fidelity", config.fidelity},
                        {"measure_only", true}};
    if (!config.objective.latency_device.empty())
      m["latency_device"] = config.objective.latency_device;
    if (!w.has_space) {
      m["space"] = core_.space.spec();
      w.has_space = true;
    }
    core_.sessions.send(worker, proto::encode(proto::Type::train, std::move(m)));
  }
}

void LatencyPool::on_measured(const std::string& worker, const proto::Result& r) {
  if (!core_.book.measures(worker, r.trial, r.attempt)) {
    core_.refuse_unless_ran(worker, r.trial, r.attempt);
    core_.ack(worker, r.trial, r.attempt, false);  // a duplicate or a stale one
    return;
  }
  if (WorkerState* w = core_.sessions.find(worker)) w->measuring.erase(r.trial);
  if (!r.latency_ms) {
    core_.log("trial " + std::to_string(r.trial) + ": " + core_.sessions.label(worker) +
              " measured no latency; measured again elsewhere");
    core_.book.measured(r.trial, std::nullopt);
  } else {
    core_.writer.record_latency(r.trial, *r.latency_ms, r.params, r.macs);
    core_.book.measured(r.trial, Measured{*r.latency_ms, r.params, r.macs});
  }
  core_.ack(worker, r.trial, r.attempt, true);
}

bool LatencyPool::on_failure(const std::string& worker, const proto::Failure& m) {
  const int64_t trial = m.trial;
  const int attempt = m.attempt;
  if (!core_.book.measures(worker, trial, attempt)) return false;
  // What the store keeps and the log shows of a peer's reason: bounded, and escaped in the log.
  const std::string why = "latency measurement: " + proto::bounded_text(m.reason);
  const std::string arch = core_.book.at(trial).arch;
  if (WorkerState* w = core_.sessions.find(worker)) w->measuring.erase(trial);
  // Another worker of the pool tries (up to --max-attempts in all), unless it
  // would fail the same way.
  if (core_.book.measure_failed(trial, m.retryable, core_.opt.max_attempts, core_.stopping) ==
      AttemptEnd::failed) {
    core_.writer.record_failure(trial, attempt, why, unix_now());
    core_.tell_failure(arch);
    core_.log("trial " + std::to_string(trial) + " failed: " + printable_excerpt(why, 200));
  }
  core_.ack(worker, trial, attempt, true);
  return true;
}

void LatencyPool::lost(WorkerState& w) {
  // Measurements change nothing in the store: measured again by another.
  for (int64_t trial : w.measuring)
    if (core_.book.phase(trial) == Phase::measuring)
      core_.book.measuring_lost(trial, core_.stopping);
  w.measuring.clear();
}

}  // namespace minas::loop
