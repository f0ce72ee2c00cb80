#include "controller/sessions.h"

#include <algorithm>

#include "controller/core.h"
#include "searchspace/json_read.h"

namespace minas::loop {

void Sessions::send(const std::string& worker, const std::string& payload) {
  try {
    if (socket_.send(zmq::buffer(worker), zmq::send_flags::sndmore | zmq::send_flags::dontwait) &&
        socket_.send(zmq::buffer(payload), zmq::send_flags::dontwait)) {
      deaf_.erase(worker);
      return;
    }
    if (deaf_.size() > 4096) deaf_.clear();  // bounded, whoever connects
    if (deaf_.insert(worker).second)         // once until it reads again
      core_.log(label(worker) + " does not read what it is sent: messages to it are dropped");
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: the peer went away; its trials come back through liveness.
    core_.log("send to " + label(worker) + " failed: " + e.what());
  }
}

std::string Sessions::label(const std::string& identity) const {
  auto it = workers_.find(identity);
  return it == workers_.end()
             ? "an unregistered peer (identity '" + printable_excerpt(identity, 40) + "')"
             : "worker " + printable_excerpt(it->second.name, 80);
}

WorkerState* Sessions::find(const std::string& identity) {
  auto it = workers_.find(identity);
  return it == workers_.end() ? nullptr : &it->second;
}

const WorkerState* Sessions::find(const std::string& identity) const {
  auto it = workers_.find(identity);
  return it == workers_.end() ? nullptr : &it->second;
}

int Sessions::slots() const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w.slots;
  return n;
}

void Sessions::on_hello(const std::string& identity, const proto::Hello& h) {
  const ExperimentConfig& config = core_.config;
  for (const auto& [other, x] : workers_)
    if (other != identity && x.name == h.name)
      throw proto::ProtocolError("not_allowed", "the name '" + printable_excerpt(h.name, 80) +
                                                    "' is in use by another connected worker");
  const double now = unix_now();
  // What the store keeps is rebuilt from the checked fields, never the peer's JSON.
  nlohmann::json devices = nlohmann::json::array(), tags = nlohmann::json::object();
  for (const auto& sl : h.slots) {
    nlohmann::json d = {{"id", sl.id}, {"name", sl.name}};
    if (sl.threads) d["threads"] = *sl.threads;
    if (sl.memory_bytes) d["memory_bytes"] = *sl.memory_bytes;
    devices.push_back(std::move(d));
  }
  for (const auto& [k, v] : h.tags) tags[k] = v;
  const int64_t id = core_.store.upsert_worker(h.name, h.host, devices, now, h.pool, tags);
  WorkerState& w = workers_[identity];
  w.has_space = false;  // a new connection, maybe a new process: send the space again
  w.id = id;
  w.name = h.name;
  w.slot_ids.clear();
  for (const auto& sl : h.slots) w.slot_ids.push_back(sl.id);
  w.slots = static_cast<int>(h.slots.size());
  w.free.clear();  // it says ready again for each free slot
  w.last_heard = Clock::now();
  w.accounted_at = now;
  w.pool = h.pool;
  w.measures = !config.latency_pool.empty() && w.pool == config.latency_pool;
  w.trains = config.train_pool.empty()
                 ? config.latency_pool.empty() || w.pool != config.latency_pool
                 : w.pool == config.train_pool;
  const std::string who = "worker " + printable_excerpt(w.name, 80);
  core_.log(who + " of pool " + printable_excerpt(w.pool, 80) + " joined with " +
            std::to_string(w.slots) + " slot(s)" +
            (w.trains && w.measures ? ": trains and measures latency"
             : w.measures           ? ": measures latency"
             : w.trains             ? ""
                                    : ": in neither the training pool (" + config.train_pool +
                              ") nor the latency pool: it gets no trials"));
  if (w.slots < config.gpus_per_trial && w.trains)
    core_.log(who + " has " + std::to_string(w.slots) + " slot(s) and a trial needs " +
              std::to_string(config.gpus_per_trial) +
              ": while no training worker has that many, trials are spread over several "
              "workers; otherwise it gets none");
  // Latency on a GPU target is measured by a worker that has that GPU.
  const std::string& gpu = config.objective.latency_device;
  w.can_measure = gpu.rfind("cuda:", 0) != 0;
  for (const auto& sl : h.slots) w.can_measure |= sl.id == gpu || sl.id.rfind(gpu + ".", 0) == 0;
  if (!w.can_measure && (w.measures || config.latency_pool.empty()))
    core_.log(who + " has no " + gpu + ", where this experiment measures latency: it " +
              (w.measures && w.trains ? "only trains" : "gets no trials"));
  send(identity, proto::encode(proto::Type::welcome, {{"worker_id", id},
                                                      {"heartbeat_ms", core_.opt.heartbeat_ms},
                                                      {"liveness", core_.opt.liveness}}));
}

void Sessions::account(const std::string& identity) {
  WorkerState* w = find(identity);
  if (!w) return;
  const double now = unix_now();
  core_.writer.worker_seen(w->id, now, (now - w->accounted_at) * w->slots, 0.0);
  w->accounted_at = now;
}

std::optional<int64_t> Sessions::slot_busy(const WorkerState& w, const std::string& identity,
                                           const std::string& slot) const {
  const TrialBook& book = core_.book;
  for (int64_t id : w.trials) {
    const Trial* t = book.find(id);
    if (!t || (t->phase != Phase::running && t->phase != Phase::gang_forming)) continue;
    if (t->worker == identity && std::count(t->slots.begin(), t->slots.end(), slot)) return id;
    for (const auto& p : t->gang)
      if (p.worker == identity && std::count(p.slots.begin(), p.slots.end(), slot)) return id;
  }
  for (int64_t id : w.measuring)
    if (const Trial* t = book.find(id);
        t && t->phase == Phase::measuring && t->slots.front() == slot)
      return id;
  return std::nullopt;
}

void Sessions::wait(const std::string& identity) {
  if (std::find(idle_.begin(), idle_.end(), identity) == idle_.end()) idle_.push_back(identity);
}

std::deque<std::string> Sessions::take_waiting() {
  std::deque<std::string> waiting;
  waiting.swap(idle_);
  return waiting;
}

void Sessions::forget(const std::string& identity) {
  std::erase_if(idle_, [&](const std::string& s) { return s == identity; });
  workers_.erase(identity);
}

void Sessions::heartbeat_if_due(Clock::time_point now) {
  if (now - last_heartbeat_ < std::chrono::milliseconds(core_.opt.heartbeat_ms)) return;
  for (const auto& [identity, w] : workers_) send(identity, proto::encode(proto::Type::heartbeat));
  last_heartbeat_ = now;
}

std::vector<std::string> Sessions::silent(Clock::time_point now) const {
  const auto limit =
      std::chrono::milliseconds(static_cast<int64_t>(core_.opt.heartbeat_ms) * core_.opt.liveness);
  std::vector<std::string> gone;
  for (const auto& [identity, w] : workers_)
    if (now - w.last_heard > limit) gone.push_back(identity);
  return gone;
}

void PoolSamples::sample(bool force) {
  Sample p;
  p.workers = static_cast<int>(core_.sessions.all().size());
  p.slots = core_.sessions.slots();
  p.busy = core_.book.busy_slots();
  p.queued = static_cast<int64_t>(core_.book.queued() + core_.book.measure_queued());
  const double now = unix_now();
  if (!force && now - last_at_ < 1.0) {
    if (p != last_ && (!skipped_peak_ || p.busy > skipped_peak_->first.busy))
      skipped_peak_ = {p, now};
    return;
  }
  if (skipped_peak_ && skipped_peak_->first.busy > p.busy && skipped_peak_->first != last_) {
    const auto& [peak, at] = *skipped_peak_;
    core_.store.add_pool_sample(core_.experiment, at, peak.workers, peak.slots, peak.busy,
                                peak.queued);
    last_ = peak;
  }
  skipped_peak_.reset();
  if (p == last_) return;
  core_.store.add_pool_sample(core_.experiment, now, p.workers, p.slots, p.busy, p.queued);
  last_ = p;
  last_at_ = now;
}

}  // namespace minas::loop
