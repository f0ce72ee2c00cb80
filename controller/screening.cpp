#include "controller/screening.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_set>

#include "controller/core.h"
#include "controller/ranking.h"
#include "db/queries.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/rng.h"

namespace minas::loop {
namespace {

// The candidates' own stream of the experiment's seed, apart from the strategy's.
constexpr uint64_t kScreenSalt = 0x5c4ee11a9d3b7f01ull;
// Images of the minibatch the data-dependent proxies score on (as minas bench screen's default).
constexpr int kMinibatch = 64;

}  // namespace

void Screening::open() {
  const ExperimentConfig& c = core_.config;
  if (c.screen <= 0) return;
  on_ = true;
  const Space& space = core_.space;
  // The experiment's seed decides the candidates, so a resumed run screens the same ones.
  std::vector<std::string> keys;
  const auto size = space.size();
  if (size && *size <= static_cast<uint64_t>(c.screen)) {
    space.enumerate([&](const Arch& a) {
      keys.push_back(space.key(a));
      return true;
    });
  } else {
    Rng rng(c.seed ^ kScreenSalt);
    std::unordered_set<uint64_t> seen;
    for (int64_t tries = 0; static_cast<int64_t>(keys.size()) < c.screen && tries < 64 * c.screen;
         ++tries) {
      const Arch a = space.sample(rng);
      if (seen.insert(space.hash(a)).second) keys.push_back(space.key(a));
    }
  }
  // What the store holds already is not screened again: an architecture
  // every member has a row of (scored, or given up on).
  members_ = screen_members(c.screen_evaluator);
  struct Stored {
    size_t rows = 0;  // members with a row of it
    std::vector<double> scores;
  };
  std::map<std::string, Stored> rows;
  for (const std::string& evaluator : members_)
    for (const db::ScreeningRow& r :
         db::screening_scores(core_.store.connection(), core_.experiment, evaluator)) {
      Stored& st = rows[r.arch_key];
      // Scored by the members before this one too: the member's score, in order.
      if (r.score && st.scores.size() == st.rows) st.scores.push_back(*r.score);
      ++st.rows;
    }
  std::unordered_set<std::string> stored;
  for (auto& [key, st] : rows) {
    if (st.rows < members_.size()) continue;
    stored.insert(key);
    if (st.scores.size() == members_.size()) scores_[key] = std::move(st.scores);
  }
  std::erase_if(scores_, [&](const auto& kv) {
    return std::find(keys.begin(), keys.end(), kv.first) == keys.end();
  });
  // Batch ids are unique to this run of the controller (its start in milliseconds, then a
  // count), so that a result a worker kept from an earlier run is told apart.
  int64_t next = static_cast<int64_t>(unix_now() * 1000) << 10;
  size_t kept = 0;
  ScreenBatch* open_batch = nullptr;
  for (const std::string& key : keys) {
    if (stored.count(key)) {
      ++kept;
      continue;
    }
    if (!open_batch || static_cast<int>(open_batch->archs.size()) >= c.screen_batch) {
      ScreenBatch& b = batches_[next];
      b.id = next++;
      queue_.push_back(b.id);
      open_batch = &b;
    }
    open_batch->archs.push_back(key);
  }
  left_ = batches_.size();
  core_.log("screening " + std::to_string(keys.size()) + " architectures by " + c.screen_evaluator +
            ": " + std::to_string(kept) + " scored before, " + std::to_string(keys.size() - kept) +
            " to score in " + std::to_string(left_) + " batch(es)");
  if (left_ == 0) tell_strategy();
}

void Screening::dispatch(const std::string& worker, WorkerState& w) {
  const ExperimentConfig& c = core_.config;
  while (!w.free.empty() && !queue_.empty()) {
    ScreenBatch& b = batches_.at(queue_.front());
    queue_.pop_front();
    const std::string slot = *w.free.begin();
    w.free.erase(w.free.begin());
    b.phase = BatchPhase::running;
    b.worker = worker;
    b.slot = slot;
    b.started = unix_now();
    if (started_ == 0) started_ = b.started;
    sent_.insert({b.id, b.attempt, worker});
    nlohmann::json m = {{"batch", b.id},
                        {"attempt", b.attempt},
                        {"slot", slot},
                        {"space_id", core_.space_id},
                        {"archs", b.archs},
                        {"evaluators", members_},
                        {"data", {{"name", c.data}, {"fingerprint", c.data_fingerprint}}},
                        {"seed", c.seed},
                        {"batch_size", kMinibatch}};
    if (!w.has_space) {
      m["space"] = core_.space.spec();
      w.has_space = true;
    }
    core_.sessions.send(worker, proto::encode(proto::Type::screen, std::move(m)));
  }
  if (!w.free.empty()) core_.sessions.wait(worker);
}

void Screening::on_result(const std::string& worker, const proto::ScreenResult& r) {
  const auto it = batches_.find(r.batch);
  if (it == batches_.end()) {
    // Of an earlier run of the controller (or never ours): nothing to store, and the
    // worker may let it go.
    acks_.push_back({worker, r.batch, r.attempt, false});
    return;
  }
  ScreenBatch& b = it->second;
  if (!sent_.count({b.id, r.attempt, worker}))
    throw proto::ProtocolError("not_allowed", "screen batch " + std::to_string(b.id) + " attempt " +
                                                  std::to_string(r.attempt) +
                                                  " was never sent to this worker");
  const bool current =
      b.phase == BatchPhase::running && b.worker == worker && b.attempt == r.attempt;
  if (r.archs.empty()) {
    // The worker did not run it (its slot was not free): sent again, elsewhere or later.
    if (current) requeue(b, core_.sessions.label(worker) + " did not run it");
    return;
  }
  bool same = r.archs.size() == b.archs.size();
  for (size_t i = 0; same && i < b.archs.size(); ++i) same = r.archs[i].arch == b.archs[i];
  if (!same)
    throw proto::ProtocolError("bad_field", "screen_result: archs are not those of batch " +
                                                std::to_string(b.id) + ", in its order");
  if (b.phase == BatchPhase::done) {  // scored already (an earlier attempt's answer came late)
    acks_.push_back({worker, b.id, r.attempt, false});
    return;
  }
  const WorkerState* w = core_.sessions.find(worker);
  const double now = unix_now();
  for (const proto::ScreenedArch& a : r.archs) {
    std::vector<double> all;
    for (const std::string& evaluator : members_) {
      db::ScreenScore s;
      s.experiment_id = core_.experiment;
      s.arch_key = a.arch;
      s.evaluator = evaluator;
      if (const auto sc = a.scores.find(evaluator); sc != a.scores.end()) s.score = sc->second;
      // The architecture's seconds, all its evaluators together.
      s.seconds = a.seconds / static_cast<double>(members_.size());
      // What the store keeps of a peer's text: bounded.
      s.error = proto::bounded_text(a.error);
      if (!s.score && s.error.empty()) s.error = "the worker sent no " + evaluator + " score";
      if (w) s.worker_id = w->id;
      s.at = now;
      core_.writer.record_screen_score(s);
      if (s.score) all.push_back(*s.score);
    }
    if (all.size() == members_.size()) scores_[a.arch] = std::move(all);
  }
  screened_now_ += b.archs.size();
  if (b.phase == BatchPhase::queued) queue_.erase(std::find(queue_.begin(), queue_.end(), b.id));
  b.phase = BatchPhase::done;
  b.worker.clear();
  acks_.push_back({worker, b.id, r.attempt, true});
  if (--left_ == 0) tell_strategy();
}

void Screening::lost(const std::string& worker) {
  for (auto& [id, b] : batches_)
    if (b.phase == BatchPhase::running && b.worker == worker)
      requeue(b, core_.sessions.label(worker) + " is gone");
}

void Screening::requeue(ScreenBatch& b, const std::string& why) {
  b.phase = BatchPhase::queued;
  b.worker.clear();
  b.slot.clear();
  if (++b.attempt < core_.opt.max_attempts && !core_.stopping) {
    queue_.push_front(b.id);
    core_.log("screen batch " + std::to_string(b.id) + " goes back to the queue: " + why);
    return;
  }
  if (core_.stopping) return;  // screened on resume: the store has none of its scores
  // Out of attempts: its architectures are recorded unscored, so a resume does not send them
  // round again, and the search goes on without them.
  const std::string error = "screening lost " + std::to_string(b.attempt) +
                            " times (last: " + printable_excerpt(why, 200) + ")";
  const double now = unix_now();
  for (const std::string& key : b.archs)
    for (const std::string& evaluator : members_)
      core_.writer.record_screen_score(
          {core_.experiment, key, evaluator, std::nullopt, 0.0, error, std::nullopt, now});
  b.phase = BatchPhase::done;
  core_.log("screen batch " + std::to_string(b.id) + ": " + error);
  if (--left_ == 0) tell_strategy();
}

std::vector<size_t> screened_order(const std::vector<double>& score,
                                   const std::vector<double>& macs,
                                   const std::vector<std::string>& keys, bool by_front) {
  const size_t n = score.size();
  std::vector<size_t> front(n, 0);
  if (by_front) {
    // In order of MACs (then score, best first), a point joins the first front
    // whose best score so far is below its own: nobody there dominates it
    // (they all cost at most as much). The fronts' best scores fall from one
    // front to the next, so the first such front is found by bisection.
    std::vector<size_t> by_cost(n);
    for (size_t i = 0; i < n; ++i) by_cost[i] = i;
    std::sort(by_cost.begin(), by_cost.end(), [&](size_t a, size_t b) {
      if (macs[a] != macs[b]) return macs[a] < macs[b];
      if (score[a] != score[b]) return score[a] > score[b];
      return keys[a] < keys[b];
    });
    std::vector<double> best;  // per front, its best score so far (descending)
    for (size_t i : by_cost) {
      const auto at =
          std::partition_point(best.begin(), best.end(), [&](double b) { return b >= score[i]; });
      front[i] = static_cast<size_t>(at - best.begin());
      if (at == best.end())
        best.push_back(score[i]);
      else
        *at = score[i];
    }
  }
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  // Within a front, cheapest first: its trials are the quickest, and the
  // search climbs in cost from there instead of starting with the largest
  // networks (by score alone, a front's best is its most expensive point).
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (front[a] != front[b]) return front[a] < front[b];
    if (by_front && macs[a] != macs[b]) return macs[a] < macs[b];
    if (score[a] != score[b]) return score[a] > score[b];
    return keys[a] < keys[b];
  });
  return order;
}

std::vector<double> rank_sums(const std::map<std::string, std::vector<double>>& scores) {
  std::vector<double> sum(scores.size(), 0.0);
  const size_t members = scores.empty() ? 0 : scores.begin()->second.size();
  for (size_t m = 0; m < members; ++m) {
    std::vector<double> v;
    for (const auto& [key, s] : scores) v.push_back(s.at(m));
    const std::vector<double> r = average_ranks(v);
    for (size_t i = 0; i < r.size(); ++i) sum[i] += r[i];
  }
  return sum;
}

void Screening::tell_strategy() {
  told_ = true;
  const Space& space = core_.space;
  const bool by_front = core_.config.screen_order == "front";
  std::vector<double> score, macs;
  std::vector<std::string> keys;
  std::vector<Arch> archs;
  for (const auto& [key, s] : scores_) {
    archs.push_back(space.parse_key(key));
    keys.push_back(key);
    score.push_back(s.front());
    macs.push_back(by_front ? static_cast<double>(space.lower(archs.back()).macs()) : 0.0);
  }
  if (members_.size() > 1) score = rank_sums(scores_);
  std::vector<Screened> best;
  for (size_t i : screened_order(score, macs, keys, by_front)) best.push_back({archs[i], score[i]});
  core_.strategy.screened(best);
  std::string rate;
  if (screened_now_ > 0 && started_ > 0) {
    const double seconds = std::max(1e-9, unix_now() - started_);
    char buf[96];
    std::snprintf(buf, sizeof buf, " (%zu scored in %.2f s: %.0f per minute)", screened_now_,
                  seconds, static_cast<double>(screened_now_) / seconds * 60);
    rate = buf;
  }
  core_.log("screening done: " + std::to_string(best.size()) + " architectures scored by " +
            core_.config.screen_evaluator + rate + "; the strategy has them" +
            (by_front ? ", by Pareto front against MACs" : ""));
}

void Screening::send_acks() {
  for (const Ack& a : acks_)
    core_.sessions.send(a.worker, proto::encode(proto::Type::screen_ack, {{"batch", a.batch},
                                                                          {"attempt", a.attempt},
                                                                          {"counted", a.counted}}));
  acks_.clear();
}

}  // namespace minas::loop
