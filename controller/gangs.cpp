#include "controller/gangs.h"

#include <algorithm>

#include "controller/core.h"

namespace minas::loop {

namespace {

// A worker that trains gang ranks: in the training pool, and able to measure
// the experiment's latency unless a latency pool does.
bool trains_gangs(const WorkerState& x, const ExperimentConfig& config) {
  return x.trains && (x.can_measure || !config.latency_pool.empty());
}

}  // namespace

bool Gangs::gang_mode() const {
  const int k = std::max(1, core_.config.gpus_per_trial);
  if (k == 1) return false;
  int most = 0;
  for (const auto& [id, x] : core_.sessions.all())
    if (trains_gangs(x, core_.config)) most = std::max(most, x.slots);
  return most > 0 && most < k;
}

void Gangs::dispatch() {
  const size_t k = static_cast<size_t>(core_.config.gpus_per_trial);
  Sessions& sessions = core_.sessions;
  while (true) {
    std::vector<std::string> avail;
    size_t total = 0;
    for (const auto& [id, x] : sessions.all())
      if (trains_gangs(x, core_.config) && !x.free.empty()) {
        avail.push_back(id);
        total += x.free.size();
      }
    auto wait = [&] {
      for (const auto& id : avail) sessions.wait(id);
    };
    if (total < k) return wait();
    std::stable_sort(avail.begin(), avail.end(), [&](const std::string& a, const std::string& b) {
      return sessions.find(a)->free.size() > sessions.find(b)->free.size();
    });
    const auto trial = core_.dispatch.next_trial();
    if (!trial) return wait();
    std::vector<GangPart> parts;
    size_t remaining = k;
    int rank = 0;
    for (const auto& id : avail) {
      WorkerState& x = *sessions.find(id);
      const size_t n = std::min(remaining, x.free.size());
      std::vector<std::string> slots(x.free.begin(),
                                     std::next(x.free.begin(), static_cast<long>(n)));
      for (const auto& sl : slots) x.free.erase(sl);
      parts.push_back({id, slots, rank});
      rank += static_cast<int>(n);
      remaining -= n;
      if (remaining == 0) break;
    }
    start(*trial, std::move(parts));
  }
}

void Gangs::start(int64_t trial, std::vector<GangPart> parts) {
  Sessions& sessions = core_.sessions;
  TrialBook& book = core_.book;
  const std::string lead_id = parts.front().worker;
  const std::vector<std::string> lead_slots = parts.front().slots;
  WorkerState& lead = *sessions.find(lead_id);
  std::string device;
  for (const auto& p : parts)
    for (const auto& sl : p.slots)
      device += (device.empty() ? "" : ",") + sessions.find(p.worker)->name + ":" + sl;
  const Trial& t = book.at(trial);
  const int attempt = t.attempt, world = core_.config.gpus_per_trial;
  const size_t n = parts.size();
  const double now = unix_now();
  core_.writer.start_trial(trial, attempt, lead.id, device, now);
  for (const auto& p : parts) {
    sessions.find(p.worker)->trials.insert(trial);
    book.sent(trial, attempt, p.worker);
  }
  book.start_gang(trial, std::move(parts), world, now);
  // Rank 0's worker first: it opens the group's hub and says where
  // (rendezvous); the others get their train with that address then. A
  // gang trains from scratch on a retry (its training state is not sent).
  nlohmann::json train = core_.dispatch.train_body(lead, t, lead_slots);
  train["gang"] = {{"world", world}, {"first_rank", 0}};
  sessions.send(lead_id, proto::encode(proto::Type::train, std::move(train)));
  core_.log("trial " + std::to_string(trial) + " attempt " + std::to_string(attempt) + " on " +
            std::to_string(n) + " workers: " + device);
}

void Gangs::on_rendezvous(const std::string& worker, const proto::Rendezvous& r) {
  const int64_t trial = r.trial;
  const int attempt = r.attempt;
  if (!core_.owns(worker, trial, attempt)) return core_.refuse_unless_ran(worker, trial, attempt);
  if (!core_.book.rendezvous(trial)) return;  // not a gang, or told already
  const Trial& t = core_.book.at(trial);
  for (const auto& m : t.gang) {
    WorkerState* w = core_.sessions.find(m.worker);
    if (!w) continue;  // lost meanwhile: requeue_all ends the attempt
    nlohmann::json train = core_.dispatch.train_body(*w, t, m.slots);
    train["gang"] = {{"world", t.world}, {"first_rank", m.first_rank}, {"rendezvous", r.address}};
    core_.sessions.send(m.worker, proto::encode(proto::Type::train, std::move(train)));
  }
}

void Gangs::end(int64_t trial, const std::string& except, const std::string& why) {
  const Trial* t = core_.book.find(trial);
  if (!t || t->gang.empty()) return;
  std::vector<std::string> parts = {t->worker};
  for (const auto& m : t->gang) parts.push_back(m.worker);
  for (const auto& p : parts) {
    if (p == except) continue;
    core_.sessions.send(
        p, proto::encode(proto::Type::cancel,
                         {{"trial", trial}, {"attempt", t->attempt}, {"reason", why}}));
    if (WorkerState* w = core_.sessions.find(p)) w->trials.erase(trial);
  }
}

}  // namespace minas::loop
