#pragma once
// Sessions and liveness: the workers connected now (hello, heartbeats, bye),
// their device slots, who waits for work, and the one way to send a peer a
// message. Part of the controller's loop (controller/core.h).
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "controller/protocol.h"

namespace minas::loop {

using Clock = std::chrono::steady_clock;
struct Core;

struct WorkerState {
  int64_t id = 0;
  std::string name;
  int slots = 1;
  std::vector<std::string> slot_ids;  // as declared in its hello
  Clock::time_point last_heard;
  double accounted_at = 0;     // unix seconds up to which connected time is recorded
  std::set<int64_t> trials;    // it trains them (rank 0, or a part of a gang)
  std::set<std::string> free;  // slots that said ready and have no attempt of ours
  bool has_space = false;      // sent the space document on this connection
  // It has the GPU the experiment's latency is measured on (objective's
  // latency_device cuda:N); always true for a CPU latency device or none.
  bool can_measure = true;
  // Its pool (hello's pool) and what the experiment has it do: train
  // (ExperimentConfig::train_pool) and/or measure latency (latency_pool).
  std::string pool = "default";
  bool trains = true, measures = false;
  std::set<int64_t> measuring;  // trials whose latency it measures now
  // Attempts its heartbeats have left out, past the grace after they were sent:
  // when the first such heartbeat came and how many have. See Reports::on_heartbeat.
  struct Missed {
    double first = 0;
    int count = 0;
  };
  std::map<std::pair<int64_t, int>, Missed> missed;
};

class Sessions {
 public:
  Sessions(Core& core, zmq::socket_t& socket) : core_(core), socket_(socket) {}

  // Never blocks: a peer that does not read what it is sent (its queue is
  // full) loses the message, and the loop goes on serving the others.
  void send(const std::string& worker, const std::string& payload);
  // Who a peer is, for a log line: its name once registered, else its ROUTER
  // identity (which a peer chooses: escaped and cut).
  std::string label(const std::string& identity) const;

  WorkerState* find(const std::string& identity);
  const WorkerState* find(const std::string& identity) const;
  std::map<std::string, WorkerState>& all() { return workers_; }
  const std::map<std::string, WorkerState>& all() const { return workers_; }
  int slots() const;  // of every worker connected

  void on_hello(const std::string& identity, const proto::Hello& h);
  // Connected time in slot-seconds, so utilization = busy / connected.
  void account(const std::string& identity);
  // The trial that runs on a worker's slot, if any (trained, part of a gang, or measured).
  std::optional<int64_t> slot_busy(const WorkerState& w, const std::string& identity,
                                   const std::string& slot) const;

  // Workers with free slots and nothing to do wait here for work.
  void wait(const std::string& identity);
  bool any_waiting() const { return !idle_.empty(); }
  std::deque<std::string> take_waiting();
  // A worker gone (left, silent): no more of its session.
  void forget(const std::string& identity);

  // A heartbeat to every worker, once per heartbeat_ms from `start`.
  void start_heartbeats(Clock::time_point start) { last_heartbeat_ = start; }
  void heartbeat_if_due(Clock::time_point now);
  // The workers not heard from for liveness heartbeats.
  std::vector<std::string> silent(Clock::time_point now) const;

 private:
  Core& core_;
  zmq::socket_t& socket_;
  std::map<std::string, WorkerState> workers_;  // by ROUTER identity
  std::deque<std::string> idle_;
  std::set<std::string> deaf_;  // peers whose queue was full at the last send
  Clock::time_point last_heartbeat_;
};

// Samples of the pool (workers, slots, busy slots, queued trials) for the
// dashboard's utilization, written to the store when they change.
class PoolSamples {
 public:
  explicit PoolSamples(Core& core) : core_(core) {}
  // A sample when what the pool looks like changed, at most one a second
  // (force: now, if changed at all). Of the changes a second skips, the
  // busiest is written with its own time before the next sample, so that
  // work which starts and ends between two samples (a short search) still shows.
  void sample(bool force);

 private:
  struct Sample {
    int workers = 0, slots = 0, busy = 0;
    int64_t queued = 0;
    bool operator==(const Sample&) const = default;
  };
  Core& core_;
  Sample last_{-1, -1, -1, -1};
  double last_at_ = 0;
  std::optional<std::pair<Sample, double>> skipped_peak_;  // and when it was seen
};

}  // namespace minas::loop
