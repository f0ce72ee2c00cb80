#pragma once
// The trial book: every trial this run of the controller knows, each in one
// named phase, changed only through the transitions below, each of which
// checks the phase it starts from. It holds no socket, no store and no
// clock: times come in as arguments, and the caller does what a transition
// calls for outside (the store's writes, the messages to workers).
//
// A transition from the wrong phase is a programmer error: the caller checks
// a peer's report against the book first (runs, gang_member, measures,
// ran_by) and refuses it there, so the book throws std::logic_error, before
// changing anything, only when the controller itself is wrong.
//
// The phases are the enum below; docs/architecture.md draws their diagram,
// and tests/controller/test_trial_book.cpp walks its transitions.
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace minas {

enum class Phase {
  measure_queued,  // waits for a slot of the latency pool
  measuring,       // its latency is measured on a latency-pool slot
  queued,          // waits for training slots (measured first where there is a latency pool)
  gang_forming,    // rank 0's part of a gang is sent; the other ranks wait for its rendezvous
  running,         // trains on its slots (every rank of a gang sent)
  unclaimed,       // after a restart the store shows it running; its worker may take it back
  done,            // ended with a counted result
  failed,          // ended without one: out of attempts, or a failure not worth retrying
  pruned,          // ended early below an ASHA rung's cut
  given_back,      // not ended, let go at a stop: the store keeps it queued for a resume
  // (given_back stays last: the tests walk the phases up to it)
};

const char* phase_name(Phase p);
bool is_ended(Phase p);  // done, failed or pruned

// A trial's latency as the latency pool measured it.
struct Measured {
  double latency_ms = 0;
  std::optional<int64_t> params, macs;
};

// One worker's part of a gang: its slots are ranks first_rank, first_rank + 1, ...
struct GangPart {
  std::string worker;  // ROUTER identity
  std::vector<std::string> slots;
  int first_rank = 0;
};

struct Trial {
  int64_t id = 0;
  Phase phase = Phase::queued;
  int attempt = 0;   // the current attempt (the next one to run, while queued)
  std::string arch;  // canonical key; empty for a trial that ended before a resume
  // Where the attempt runs (gang_forming, running: rank 0's part; measuring:
  // the latency slot) and since when (unix seconds).
  std::string worker;  // ROUTER identity
  std::vector<std::string> slots;
  double started = 0;
  // A gang: its ranks past 0 (empty: not a gang), and how many ranks in all.
  std::vector<GangPart> gang;
  int world = 0;
  std::optional<Measured> measured;  // from the latency pool; counts over the training device's
  int measure_failures = 0;          // retryable failed measurements so far
  // unclaimed: who ran it as the store says (worker id) and on which slots.
  int64_t claim_worker_id = 0;
  std::string claim_device;  // its slots, comma-separated
};

// What became of an attempt that ended without a result.
enum class AttemptEnd {
  requeued,    // back in a queue at the next attempt
  given_back,  // a stop: left for a resume (the store gets the next attempt queued)
  failed,      // out of attempts or not retryable: the trial has failed
};

class TrialBook {
 public:
  // measure_first: there is a latency pool, and a trial is measured there
  // before it trains (unless it was measured before a restart).
  explicit TrialBook(bool measure_first = false) : measure_first_(measure_first) {}

  // ---- arrivals
  // A new trial at attempt 0, at the back of the latency pool's queue or of the training queue.
  void add(int64_t id, std::string arch);
  // A trial of a resumed experiment that had ended (done, failed, pruned) at `attempt`.
  void add_ended(int64_t id, Phase ended, int attempt);
  // A trial of a resumed experiment that had not ended: queued again at
  // `next` (for the latency pool if not measured). `attempt` is what the store
  // showed; reports about attempts up to it from before the restart are let go.
  void add_resumed(int64_t id, std::string arch, int attempt, int next,
                   std::optional<Measured> measured);
  // A trial the store shows running on worker `worker_id`, on slots `device`.
  void add_unclaimed(int64_t id, std::string arch, int attempt, std::optional<Measured> measured,
                     int64_t worker_id, std::string device);

  // ---- training
  // queued -> running on `worker`'s slots (anywhere in the queue, usually its front).
  void start(int64_t id, const std::string& worker, std::vector<std::string> slots, double now);
  // queued -> gang_forming: parts.front() is rank 0's part, the others its gang.
  void start_gang(int64_t id, std::vector<GangPart> parts, int world, double now);
  // gang_forming -> running. False for a trial already running (not a gang,
  // or its ranks told already): nothing changes.
  bool rendezvous(int64_t id);
  // unclaimed -> running: its worker took it back on `slots` (its latency
  // from the latency pool, if any, is dropped: the result's counts).
  void claim(int64_t id, const std::string& worker, std::vector<std::string> slots, double now);
  // gang_forming | running -> done, pruned, failed (a failure not worth retrying).
  void finish(int64_t id);
  void prune(int64_t id);
  void fail(int64_t id);
  // gang_forming | running -> the attempt is lost or failed and may be retried:
  // queued at the next attempt while attempts are left, given_back when
  // stopping, failed at max_attempts.
  AttemptEnd lose(int64_t id, int max_attempts, bool stopping);

  // ---- the latency pool
  // measure_queued -> measuring on `worker`'s `slot`.
  void start_measuring(int64_t id, const std::string& worker, const std::string& slot, double now);
  // measuring -> queued for training with its latency; without one (the
  // worker measured none) back to the end of the measure queue.
  void measured(int64_t id, std::optional<Measured> m);
  // measuring -> the measurement failed: measured again elsewhere while
  // retryable and under max_attempts failures, given_back when stopping, else failed.
  AttemptEnd measure_failed(int64_t id, bool retryable, int max_attempts, bool stopping);
  // measuring -> its worker is gone: first in the measure queue again, or given_back when stopping.
  void measuring_lost(int64_t id, bool stopping);

  // ---- resume and stop
  // Every unclaimed trial -> queued at its next attempt (measure_queued when
  // its latency is still to measure), or given_back when stopping. Returns
  // them with that attempt, in trial order.
  std::vector<std::pair<int64_t, int>> expire_unclaimed(bool stopping);
  // Every queued and measure_queued trial -> given_back.
  void give_back_queued();

  // ---- who may report what
  // Every attempt sent out is remembered with the workers it went to (rank
  // 0's and the other parts of a gang, a latency measurement).
  void sent(int64_t id, int attempt, const std::string& worker);
  bool ran_by(const std::string& worker, int64_t id, int attempt) const;
  // An attempt from before the controller restarted that no worker of this run was sent.
  bool from_before_restart(int64_t id, int attempt) const;
  // `worker` trains (id, attempt) as rank 0 now.
  bool runs(const std::string& worker, int64_t id, int attempt) const;
  // `worker` trains a part past rank 0 of the gang of (id, attempt) now.
  bool gang_member(const std::string& worker, int64_t id, int attempt) const;
  // `worker` measures (id, attempt) now.
  bool measures(const std::string& worker, int64_t id, int attempt) const;

  // ---- reading
  const Trial* find(int64_t id) const;
  const Trial& at(int64_t id) const;  // throws std::logic_error for an unknown trial
  std::optional<Phase> phase(int64_t id) const;
  std::optional<int64_t> next_queued() const;      // the front of the training queue
  std::optional<int64_t> next_to_measure() const;  // the front of the measure queue
  size_t queued() const { return queue_.size(); }
  size_t measure_queued() const { return measure_queue_.size(); }
  const std::set<int64_t>& in_flight() const { return in_flight_; }  // gang_forming, running
  const std::set<int64_t>& measuring() const { return measuring_; }
  size_t unclaimed() const { return unclaimed_.size(); }
  // Slots that run an attempt: every training part's, one per measurement.
  int busy_slots() const;

  // The latest trial of an architecture (by its hash), for lineage.
  void note_arch(uint64_t hash, int64_t id) { by_arch_[hash] = id; }
  std::optional<int64_t> latest_with_arch(uint64_t hash) const;

 private:
  Trial& expect(int64_t id, const char* transition, std::initializer_list<Phase> from);
  Trial& insert(int64_t id, Phase phase, int attempt);
  void leave(Trial& t);  // out of its phase's index
  void enter(Trial& t, Phase p, bool front = false);

  bool measure_first_;
  std::unordered_map<int64_t, Trial> trials_;
  // Indexes of the phases the loop walks, in the order it walks them.
  std::deque<int64_t> queue_, measure_queue_;
  std::set<int64_t> in_flight_, measuring_, unclaimed_;
  std::map<std::pair<int64_t, int>, std::set<std::string>> ran_;
  std::unordered_map<int64_t, int> resumed_attempt_;  // each trial's attempt when resumed
  std::unordered_map<uint64_t, int64_t> by_arch_;
};

}  // namespace minas
