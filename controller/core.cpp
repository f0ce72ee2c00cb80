#include "controller/core.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>

#include "searchspace/error.h"

namespace minas::loop {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Core::Core(db::Store& st, const Space& sp, Strategy& sg, ExperimentConfig c, ControllerOptions o,
           zmq::socket_t& socket)
    : store(st),
      space(sp),
      strategy(sg),
      config(std::move(c)),
      opt(std::move(o)),
      writer(st),
      book(!config.latency_pool.empty()),
      sessions(*this, socket),
      data(*this),
      states(*this),
      resume(*this),
      dispatch(*this),
      latency(*this),
      gangs(*this),
      reports(*this),
      screening(*this) {
  check_controller_settings(config, opt);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(space.spec().dump())));
  space_id = hex;
  if (config.asha) asha.emplace(*config.asha);
  check_inherit(config, strategy);
}

int Core::final_epoch() const {
  return minas::final_epoch(config);
}

void Core::keep_parents() {
  if (!parents.kept()) return;
  std::set<int64_t> needed;
  for (const auto& [child, parent] : heirs) needed.insert(parent);
  if (const auto keys = strategy.possible_parents())
    for (const std::string& key : *keys)
      if (const auto id = book.latest_with_arch(space.hash(space.parse_key(key))))
        needed.insert(*id);
  for (const int64_t trial : parents.trials()) {
    const Trial* t = book.find(trial);
    // A running trial's final state arrives before its result: not judged yet.
    if (t && !is_ended(t->phase)) continue;
    if (!needed.count(trial)) parents.drop(trial);
  }
}

bool Core::owns(const std::string& worker, int64_t trial, int attempt) {
  const Trial* t = book.find(trial);
  if (t && (t->phase == Phase::running || t->phase == Phase::gang_forming))
    return t->worker == worker && t->attempt == attempt;
  return resume.claim(worker, trial, attempt);
}

void Core::refuse_unless_ran(const std::string& worker, int64_t trial, int attempt) const {
  if (!book.ran_by(worker, trial, attempt) && !book.from_before_restart(trial, attempt))
    throw proto::ProtocolError("not_allowed", "trial " + std::to_string(trial) + " attempt " +
                                                  std::to_string(attempt) +
                                                  " was never sent to this worker");
}

void Core::tell_failure(const std::string& arch) {
  strategy.tell_failure(space.parse_key(arch));
  strategy_dirty = true;
  ++summary.failed;
  snapshot_if_due();
}

void Core::snapshot_if_due() {
  const int64_t results = summary.done + summary.pruned + summary.failed;
  if (results < next_snapshot) return;
  const nlohmann::json snap = strategy.take_snapshot();
  if (!snap.is_null()) store.add_strategy_snapshot(experiment, results, snap, unix_now());
  next_snapshot = results + std::max<int64_t>(1, results / 100);
}

}  // namespace minas::loop
