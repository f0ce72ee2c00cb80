#pragma once
// Screening: with ExperimentConfig::screen N, the search starts by scoring N
// sampled architectures at initialization, without training (a zero-cost
// proxy, params or MACs), in batches sent to the workers' free slots as
// `screen` requests. Each batch's scores are stored (screening_scores)
// before the worker is acknowledged; once every batch is in, the strategy
// hears of the scores (Strategy::screened) and only then is asked for
// trials. A resumed experiment screens only what the store lacks. Part of
// the controller's loop (controller/core.h).
//
// A batch is in one phase: queued, running on one worker's slot, or done.
// A batch whose worker leaves, goes silent or says hello again (a restarted
// process) is queued again at the next attempt; its scores, stored by
// (experiment, evaluator, arch), count once however many times it is scored.
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "controller/protocol.h"
#include "controller/sessions.h"
#include "controller/strategy.h"

namespace minas::loop {

struct Core;

// A combined evaluator's scores (screen_members): per architecture, in the
// map's order, the sum of its ranks (ties averaged) under each member.
std::vector<double> rank_sums(const std::map<std::string, std::vector<double>>& scores);

// The order of screened architectures for the strategy, as indices into the
// lists. by_front false: by score, best first. by_front true: by Pareto front
// of score (higher is better) against MACs (lower is better), the first
// front holding every architecture no other scores at least as well at no
// more MACs (and better in one; of an exact tie in both, the later in key
// order goes to the next front), then the front of the rest, and so on;
// within a front, by MACs (cheapest first), then score. Ties after that by
// key, so the order is the same in every run. O(n log n). The lists are of
// equal length.
std::vector<size_t> screened_order(const std::vector<double>& score,
                                   const std::vector<double>& macs,
                                   const std::vector<std::string>& keys, bool by_front);

enum class BatchPhase { queued, running, done };

struct ScreenBatch {
  int64_t id = 0;
  int attempt = 0;
  BatchPhase phase = BatchPhase::queued;
  std::vector<std::string> archs;  // canonical keys
  std::string worker, slot;        // running: where
  double started = 0;
};

class Screening {
 public:
  explicit Screening(Core& core) : core_(core) {}
  // After the experiment is opened (and a resumed strategy restored): the
  // architectures to screen, sampled from the experiment's seed, and those
  // the store has no score for, in batches. With nothing left to screen the
  // strategy hears of the stored scores at once.
  void open();
  // Screening holds the trials back: it is on, and not every batch is in.
  bool pending() const { return on_ && !told_; }
  // Architectures of the experiment scored so far, by every run (unscorable ones not counted).
  size_t scored() const { return scores_.size(); }
  // Gives `worker`'s free slots a queued batch each; the worker waits for
  // work when there is none left to send.
  void dispatch(const std::string& worker, WorkerState& w);
  // A worker's answer: the scores into the store (acknowledged once durable).
  void on_result(const std::string& worker, const proto::ScreenResult& r);
  // A worker gone, or come again under the same identity: its batches are queued again.
  void lost(const std::string& worker);
  // The acknowledgements of the scores stored since the last commit; called after it.
  void send_acks();

 private:
  void requeue(ScreenBatch& b, const std::string& why);
  // Every batch is in: the strategy hears of the scores, best first.
  void tell_strategy();

  struct Ack {
    std::string worker;
    int64_t batch;
    int attempt;
    bool counted;
  };
  Core& core_;
  bool on_ = false, told_ = false;
  std::map<int64_t, ScreenBatch> batches_;
  std::deque<int64_t> queue_;
  std::set<std::tuple<int64_t, int, std::string>> sent_;  // (batch, attempt, worker)
  std::vector<std::string> members_;                      // screen_members(screen_evaluator)
  // arch key -> its score by each member, in members_' order
  std::map<std::string, std::vector<double>> scores_;
  size_t left_ = 0;          // batches not done
  size_t screened_now_ = 0;  // architectures this run scored
  double started_ = 0;       // when this run's first batch was sent
  std::vector<Ack> acks_;
};

}  // namespace minas::loop
