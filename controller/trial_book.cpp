#include "controller/trial_book.h"

#include <algorithm>
#include <stdexcept>

namespace minas {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::measure_queued:
      return "measure_queued";
    case Phase::measuring:
      return "measuring";
    case Phase::queued:
      return "queued";
    case Phase::gang_forming:
      return "gang_forming";
    case Phase::running:
      return "running";
    case Phase::unclaimed:
      return "unclaimed";
    case Phase::done:
      return "done";
    case Phase::failed:
      return "failed";
    case Phase::pruned:
      return "pruned";
    case Phase::given_back:
      return "given_back";
  }
  return "?";
}

bool is_ended(Phase p) {
  return p == Phase::done || p == Phase::failed || p == Phase::pruned;
}

// ------------------------------------------------------------ bookkeeping

Trial& TrialBook::expect(int64_t id, const char* transition, std::initializer_list<Phase> from) {
  auto it = trials_.find(id);
  if (it == trials_.end())
    throw std::logic_error(std::string("trial book: ") + transition + " of trial " +
                           std::to_string(id) + ", which the book does not hold");
  if (std::find(from.begin(), from.end(), it->second.phase) == from.end())
    throw std::logic_error(std::string("trial book: ") + transition + " of trial " +
                           std::to_string(id) + " from phase " + phase_name(it->second.phase));
  return it->second;
}

Trial& TrialBook::insert(int64_t id, Phase phase, int attempt) {
  auto [it, fresh] = trials_.try_emplace(id);
  if (!fresh) throw std::logic_error("trial book: trial " + std::to_string(id) + " added twice");
  Trial& t = it->second;
  t.id = id;
  t.attempt = attempt;
  t.phase = Phase::given_back;  // in no index until it enters its phase
  enter(t, phase);
  return t;
}

void TrialBook::leave(Trial& t) {
  auto drop = [&](std::deque<int64_t>& q) { q.erase(std::find(q.begin(), q.end(), t.id)); };
  switch (t.phase) {
    case Phase::queued:
      drop(queue_);
      break;
    case Phase::measure_queued:
      drop(measure_queue_);
      break;
    case Phase::gang_forming:
    case Phase::running:
      in_flight_.erase(t.id);
      break;
    case Phase::measuring:
      measuring_.erase(t.id);
      break;
    case Phase::unclaimed:
      unclaimed_.erase(t.id);
      break;
    default:
      break;
  }
}

void TrialBook::enter(Trial& t, Phase p, bool front) {
  t.phase = p;
  switch (p) {
    case Phase::queued:
      front ? queue_.push_front(t.id) : queue_.push_back(t.id);
      break;
    case Phase::measure_queued:
      front ? measure_queue_.push_front(t.id) : measure_queue_.push_back(t.id);
      break;
    case Phase::gang_forming:
    case Phase::running:
      in_flight_.insert(t.id);
      break;
    case Phase::measuring:
      measuring_.insert(t.id);
      break;
    case Phase::unclaimed:
      unclaimed_.insert(t.id);
      break;
    default:
      break;
  }
  if (p != Phase::gang_forming && p != Phase::running && p != Phase::measuring) {
    // Off its slots: where it ran is of no more use.
    t.worker.clear();
    t.slots.clear();
    t.gang.clear();
    t.world = 0;
  }
}

// ------------------------------------------------------------ arrivals

void TrialBook::add(int64_t id, std::string arch) {
  insert(id, measure_first_ ? Phase::measure_queued : Phase::queued, 0).arch = std::move(arch);
}

void TrialBook::add_ended(int64_t id, Phase ended, int attempt) {
  if (!is_ended(ended))
    throw std::logic_error("trial book: trial " + std::to_string(id) + " added as ended in phase " +
                           phase_name(ended));
  insert(id, ended, attempt);
  resumed_attempt_[id] = attempt;
}

void TrialBook::add_resumed(int64_t id, std::string arch, int attempt, int next,
                            std::optional<Measured> measured) {
  Trial& t = insert(id, measure_first_ && !measured ? Phase::measure_queued : Phase::queued, next);
  t.arch = std::move(arch);
  t.measured = measured;
  resumed_attempt_[id] = attempt;
}

void TrialBook::add_unclaimed(int64_t id, std::string arch, int attempt,
                              std::optional<Measured> measured, int64_t worker_id,
                              std::string device) {
  Trial& t = insert(id, Phase::unclaimed, attempt);
  t.arch = std::move(arch);
  t.measured = measured;
  t.claim_worker_id = worker_id;
  t.claim_device = std::move(device);
  resumed_attempt_[id] = attempt;
}

// ------------------------------------------------------------ training

void TrialBook::start(int64_t id, const std::string& worker, std::vector<std::string> slots,
                      double now) {
  Trial& t = expect(id, "start", {Phase::queued});
  leave(t);
  enter(t, Phase::running);
  t.worker = worker;
  t.slots = std::move(slots);
  t.started = now;
}

void TrialBook::start_gang(int64_t id, std::vector<GangPart> parts, int world, double now) {
  if (parts.size() < 2)
    throw std::logic_error("trial book: a gang of trial " + std::to_string(id) +
                           " needs two parts or more");
  Trial& t = expect(id, "start_gang", {Phase::queued});
  leave(t);
  enter(t, Phase::gang_forming);
  t.worker = parts.front().worker;
  t.slots = parts.front().slots;
  t.started = now;
  t.gang.assign(std::make_move_iterator(parts.begin() + 1), std::make_move_iterator(parts.end()));
  t.world = world;
}

bool TrialBook::rendezvous(int64_t id) {
  Trial& t = expect(id, "rendezvous", {Phase::gang_forming, Phase::running});
  if (t.phase == Phase::running) return false;
  t.phase = Phase::running;  // the same index: in flight
  return true;
}

void TrialBook::claim(int64_t id, const std::string& worker, std::vector<std::string> slots,
                      double now) {
  Trial& t = expect(id, "claim", {Phase::unclaimed});
  leave(t);
  enter(t, Phase::running);
  t.worker = worker;
  t.slots = std::move(slots);
  t.started = now;
  t.claim_worker_id = 0;
  t.claim_device.clear();
  // Its latency from before the restart is not carried into the attempt
  // taken back: its result's own latency counts (as before the book).
  t.measured.reset();
}

void TrialBook::finish(int64_t id) {
  Trial& t = expect(id, "finish", {Phase::gang_forming, Phase::running});
  leave(t);
  enter(t, Phase::done);
  t.measured.reset();
}

void TrialBook::prune(int64_t id) {
  Trial& t = expect(id, "prune", {Phase::gang_forming, Phase::running});
  leave(t);
  enter(t, Phase::pruned);
}

void TrialBook::fail(int64_t id) {
  Trial& t = expect(id, "fail", {Phase::gang_forming, Phase::running});
  leave(t);
  enter(t, Phase::failed);
}

AttemptEnd TrialBook::lose(int64_t id, int max_attempts, bool stopping) {
  Trial& t = expect(id, "lose", {Phase::gang_forming, Phase::running});
  leave(t);
  if (t.attempt + 1 < max_attempts && !stopping) {
    ++t.attempt;
    enter(t, Phase::queued);
    return AttemptEnd::requeued;
  }
  if (stopping) {
    ++t.attempt;  // the store gets it queued at the next attempt
    enter(t, Phase::given_back);
    return AttemptEnd::given_back;
  }
  enter(t, Phase::failed);
  return AttemptEnd::failed;
}

// ------------------------------------------------------------ the latency pool

void TrialBook::start_measuring(int64_t id, const std::string& worker, const std::string& slot,
                                double now) {
  Trial& t = expect(id, "start_measuring", {Phase::measure_queued});
  leave(t);
  enter(t, Phase::measuring);
  t.worker = worker;
  t.slots = {slot};
  t.started = now;
}

void TrialBook::measured(int64_t id, std::optional<Measured> m) {
  Trial& t = expect(id, "measured", {Phase::measuring});
  leave(t);
  if (!m) return enter(t, Phase::measure_queued);
  t.measured = m;
  enter(t, Phase::queued);
}

AttemptEnd TrialBook::measure_failed(int64_t id, bool retryable, int max_attempts, bool stopping) {
  Trial& t = expect(id, "measure_failed", {Phase::measuring});
  leave(t);
  // Counted only when retryable: a failure that would repeat ends the trial at once.
  if (retryable && ++t.measure_failures < max_attempts && !stopping) {
    enter(t, Phase::measure_queued);
    return AttemptEnd::requeued;
  }
  if (stopping) {
    enter(t, Phase::given_back);  // still queued in the store: measured on resume
    return AttemptEnd::given_back;
  }
  enter(t, Phase::failed);
  return AttemptEnd::failed;
}

void TrialBook::measuring_lost(int64_t id, bool stopping) {
  Trial& t = expect(id, "measuring_lost", {Phase::measuring});
  leave(t);
  // Measurements change nothing in the store: measured again by another, first.
  enter(t, stopping ? Phase::given_back : Phase::measure_queued, true);
}

// ------------------------------------------------------------ resume and stop

std::vector<std::pair<int64_t, int>> TrialBook::expire_unclaimed(bool stopping) {
  std::vector<std::pair<int64_t, int>> expired;
  const std::set<int64_t> ids = unclaimed_;
  for (int64_t id : ids) {
    Trial& t = trials_.at(id);
    leave(t);
    ++t.attempt;
    t.claim_worker_id = 0;
    t.claim_device.clear();
    enter(t, stopping                        ? Phase::given_back
             : measure_first_ && !t.measured ? Phase::measure_queued
                                             : Phase::queued);
    expired.emplace_back(id, t.attempt);
  }
  return expired;
}

void TrialBook::give_back_queued() {
  for (auto* q : {&queue_, &measure_queue_}) {
    for (int64_t id : *q) trials_.at(id).phase = Phase::given_back;
    q->clear();
  }
}

// ------------------------------------------------------------ who may report what

void TrialBook::sent(int64_t id, int attempt, const std::string& worker) {
  ran_[{id, attempt}].insert(worker);
}

bool TrialBook::ran_by(const std::string& worker, int64_t id, int attempt) const {
  auto it = ran_.find({id, attempt});
  return it != ran_.end() && it->second.count(worker) > 0;
}

bool TrialBook::from_before_restart(int64_t id, int attempt) const {
  auto r = resumed_attempt_.find(id);
  return r != resumed_attempt_.end() && attempt <= r->second && !ran_.count({id, attempt});
}

bool TrialBook::runs(const std::string& worker, int64_t id, int attempt) const {
  const Trial* t = find(id);
  return t && (t->phase == Phase::running || t->phase == Phase::gang_forming) &&
         t->worker == worker && t->attempt == attempt;
}

bool TrialBook::gang_member(const std::string& worker, int64_t id, int attempt) const {
  const Trial* t = find(id);
  return t && (t->phase == Phase::running || t->phase == Phase::gang_forming) &&
         t->attempt == attempt &&
         std::any_of(t->gang.begin(), t->gang.end(),
                     [&](const GangPart& p) { return p.worker == worker; });
}

bool TrialBook::measures(const std::string& worker, int64_t id, int attempt) const {
  const Trial* t = find(id);
  return t && t->phase == Phase::measuring && t->worker == worker && t->attempt == attempt;
}

// ------------------------------------------------------------ reading

const Trial* TrialBook::find(int64_t id) const {
  auto it = trials_.find(id);
  return it == trials_.end() ? nullptr : &it->second;
}

const Trial& TrialBook::at(int64_t id) const {
  const Trial* t = find(id);
  if (!t) throw std::logic_error("trial book: no trial " + std::to_string(id));
  return *t;
}

std::optional<Phase> TrialBook::phase(int64_t id) const {
  const Trial* t = find(id);
  if (!t) return std::nullopt;
  return t->phase;
}

std::optional<int64_t> TrialBook::next_queued() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.front();
}

std::optional<int64_t> TrialBook::next_to_measure() const {
  if (measure_queue_.empty()) return std::nullopt;
  return measure_queue_.front();
}

int TrialBook::busy_slots() const {
  int busy = static_cast<int>(measuring_.size());
  for (int64_t id : in_flight_) {
    const Trial& t = trials_.at(id);
    busy += static_cast<int>(t.slots.size());
    for (const auto& p : t.gang) busy += static_cast<int>(p.slots.size());
  }
  return busy;
}

std::optional<int64_t> TrialBook::latest_with_arch(uint64_t hash) const {
  auto it = by_arch_.find(hash);
  if (it == by_arch_.end()) return std::nullopt;
  return it->second;
}

}  // namespace minas
