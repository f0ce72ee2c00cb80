#include "controller/controller.h"

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <zmq.hpp>

#include "controller/protocol.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas {
namespace {

using Clock = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A trial attempt waiting for a slot.
struct Queued {
  int64_t trial;
  int attempt;
  std::string arch;
};

// A trial attempt on a worker.
struct Flight {
  std::string worker;  // ROUTER identity
  int attempt;
  std::vector<std::string> slots;  // gpus_per_trial of them
  std::string arch;
  double started;  // unix seconds
};

// One worker's part of a gang: its slots are ranks first_rank, first_rank + 1, ...
struct GangPart {
  std::string worker;  // ROUTER identity
  std::vector<std::string> slots;
  int first_rank = 0;
};

// A trial spread over several workers: its flight is rank 0's part; these are the others.
struct Gang {
  int world = 0;
  std::vector<GangPart> members;
  bool started = false;  // the members were sent their train (after rank 0's rendezvous)
};

struct WorkerState {
  int64_t id = 0;
  std::string name;
  int slots = 1;
  std::vector<std::string> slot_ids;  // as declared in its hello
  Clock::time_point last_heard;
  double accounted_at = 0;  // unix seconds up to which connected time is recorded
  std::set<int64_t> trials;
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
};

// A trial's latency as the latency pool measured it.
struct Measured {
  double latency_ms;
  std::optional<int64_t> params, macs;
};

// After a restart, a trial the store shows running, until its worker takes it back.
struct Unclaimed {
  int attempt = 0;
  int64_t worker_id = 0;  // who ran it, as the store says
  std::string device;     // its slots, comma-separated
  std::string arch;
  std::optional<Measured> measured;  // its latency from the latency pool, if any
};

struct Ack {
  std::string worker;
  int64_t trial;
  int attempt;
  bool counted;
};

}  // namespace

namespace {

void check_range(const char* what, int64_t v, int64_t lo, int64_t hi, const char* why = "") {
  if (v < lo || v > hi)
    throw Error("controller", std::string(what) + " must be from " + std::to_string(lo) + " to " +
                                  std::to_string(hi) + ", got " + std::to_string(v) +
                                  (*why ? std::string(" (") + why + ")" : std::string()));
}

void check_options(const ControllerOptions& o) {
  check_range("heartbeat_ms", o.heartbeat_ms, 1, 3'600'000, "0 would busy-loop");
  check_range("liveness", o.liveness, 1, proto::kMaxAttempt,
              "heartbeats missed before a peer counts as lost");
  check_range("max_attempts", o.max_attempts, 1, proto::kMaxAttempt, "a trial runs at least once");
  if (o.commit_every < 1) throw Error("controller", "commit_every must be at least 1");
  check_range("commit_ms", o.commit_ms, 1, 3'600'000, "0 would busy-loop");
  check_range("progress_ms", o.progress_ms, 1, 3'600'000);
}

}  // namespace

void check_controller_settings(const ExperimentConfig& c, const ControllerOptions& o) {
  check_options(o);
  if (c.name.empty()) throw Error("controller", "the experiment needs a name");
  check_range("fidelity", c.fidelity, 0, proto::kMaxAttempt, "epochs per trial; 0: the recipe's");
  check_range("gpus_per_trial", c.gpus_per_trial, 1, 1 << 16);
  check_range("budget_trials", c.budget_trials, 0, INT64_MAX);
  if (!(c.budget_seconds >= 0) || !std::isfinite(c.budget_seconds))
    throw Error("controller",
                "budget_seconds must be 0 (none) or a positive number of seconds, got " +
                    std::to_string(c.budget_seconds));
}

struct ControllerSocket::State {
  zmq::context_t ctx;
  std::unique_ptr<auth::ZapHandler> zap;  // after ctx, before socket: destroyed after the socket
  zmq::socket_t socket{ctx, zmq::socket_type::router};
  std::unique_ptr<auth::HandshakeMonitor> monitor;  // destroyed first: it watches the socket
  std::string endpoint;
};

ControllerSocket::ControllerSocket(const ControllerOptions& opt)
    : state_(std::make_unique<State>()) {
  check_options(opt);
  if (!opt.curve_key && !auth::is_loopback_endpoint(opt.bind))
    throw Error("controller --bind " + opt.bind,
                "binding beyond loopback needs CURVE: give --key (the controller's key pair) and "
                "--allow (the workers' public keys); make keys with minas keygen");
  zmq::socket_t& socket = state_->socket;
  try {
    socket.set(zmq::sockopt::router_handover, 1);   // a reconnecting worker takes its identity back
    socket.set(zmq::sockopt::router_mandatory, 1);  // sending to a gone peer fails loudly
    socket.set(zmq::sockopt::linger, 0);
    // Up to kMaxFrameBytes is read, so that a frame over kMaxMessageBytes gets its error reply.
    socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxFrameBytes));
  } catch (const zmq::error_t& e) {
    throw Error("controller socket", std::string("cannot set its options: ") + e.what());
  }
  if (opt.curve_key) {
    auth::require_curve();
    auto log = opt.log;
    // The handler must be in place before the first connection can arrive.
    state_->zap = std::make_unique<auth::ZapHandler>(
        state_->ctx, opt.allowed_workers,
        [log](const std::string& address, const std::string& key) {
          if (log)
            log("refused a worker from " + address + ": key " + key + " is not on the allow-list");
        });
    auth::make_curve_server(socket, *opt.curve_key);
    // Refused before ZAP is asked: no key, or another server's key.
    state_->monitor = std::make_unique<auth::HandshakeMonitor>(
        state_->ctx, socket, [log](const std::string& address, const std::string& why) {
          if (log)
            log("refused a worker from " + (address.empty() ? "an address already gone" : address) +
                ": " + why);
        });
  }
  try {
    socket.bind(opt.bind);
  } catch (const zmq::error_t& e) {
    throw Error("controller --bind " + opt.bind, std::string("cannot bind: ") + e.what());
  }
  state_->endpoint = socket.get(zmq::sockopt::last_endpoint);
}

ControllerSocket::~ControllerSocket() = default;
ControllerSocket::ControllerSocket(ControllerSocket&&) noexcept = default;
ControllerSocket& ControllerSocket::operator=(ControllerSocket&&) noexcept = default;

std::string ControllerSocket::endpoint() const {
  return state_->endpoint;
}

struct Controller::Impl {
  Impl(db::Store& st, const Space& sp, Strategy& sg, ExperimentConfig c, ControllerOptions o,
       ControllerSocket sock)
      : store(st),
        space(sp),
        strategy(sg),
        config(std::move(c)),
        opt(std::move(o)),
        writer(st),
        net(std::move(sock.state_)),
        socket(net->socket),
        endpoint(net->endpoint) {
    check_controller_settings(config, opt);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(fnv1a64(space.spec().dump())));
    space_id = hex;
    if (config.asha) asha.emplace(*config.asha);
  }

  void log(const std::string& line) const {
    if (opt.log) opt.log(line);
  }

  // Never blocks: a peer that does not read what it is sent (its queue is
  // full) loses the message, and the loop goes on serving the others.
  void send(const std::string& worker, const std::string& payload) {
    try {
      if (socket.send(zmq::buffer(worker), zmq::send_flags::sndmore | zmq::send_flags::dontwait) &&
          socket.send(zmq::buffer(payload), zmq::send_flags::dontwait)) {
        deaf.erase(worker);
        return;
      }
      if (deaf.size() > 4096) deaf.clear();  // bounded, whoever connects
      if (deaf.insert(worker).second)        // once until it reads again
        log(worker_label(worker) + " does not read what it is sent: messages to it are dropped");
    } catch (const zmq::error_t& e) {
      // EHOSTUNREACH: the peer went away; its trials come back through liveness.
      log("send to " + worker_label(worker) + " failed: " + e.what());
    }
  }

  // Who a peer is, for a log line: its name once registered, else its ROUTER
  // identity (which a peer chooses: escaped and cut).
  std::string worker_label(const std::string& identity) const {
    auto it = workers.find(identity);
    return it == workers.end()
               ? "an unregistered peer (identity '" + printable_excerpt(identity, 40) + "')"
               : "worker " + printable_excerpt(it->second.name, 80);
  }

  // ------------------------------------------------------------ setup and resume

  void open_experiment() {
    db::ExperimentSpec spec;
    spec.name = config.name;
    spec.space = space.ref().empty() ? space.name() : space.ref();
    spec.space_json = space.spec();
    spec.dataset = config.data;
    spec.dataset_fingerprint = config.data_fingerprint;
    spec.strategy = strategy.name();
    spec.strategy_settings = config.strategy_settings.is_null()
                                 ? nlohmann::json{{"name", strategy.name()}, {"seed", config.seed}}
                                 : config.strategy_settings;
    if (config.asha) spec.strategy_settings["asha"] = config.asha->to_json();
    spec.recipe = config.recipe;
    spec.objective = config.objective.pareto_mode() ? "pareto:val_acc," + config.objective.pareto
                     : config.objective.latency_target_ms ? "val_acc*latency^w"
                                                          : "val_acc";
    if (auto e = store.find_experiment(config.name)) {
      if (e->space_json != spec.space_json)
        throw Error("experiment '" + config.name + "'",
                    "exists in " + store.path() + " with another search space; pick a new name");
      if (e->strategy_settings != spec.strategy_settings)
        throw Error("experiment '" + config.name + "'",
                    "exists in " + store.path() + " with strategy settings " +
                        e->strategy_settings.dump() + ", not " + spec.strategy_settings.dump() +
                        "; resume it with the same ones or pick a new name");
      experiment = e->id;
      summary.resumed = true;
      resume();
    } else {
      experiment = store.create_experiment(spec, unix_now());
    }
    // The files are read now, beside their fingerprint, so what a worker is
    // sent later is what was fingerprinted even if the folder changes.
    for (const std::string& path : config.data_files) {
      std::ifstream in(path, std::ios::binary);
      if (!in) throw Error(path, "cannot read the data set file");
      data_bytes.emplace_back(std::filesystem::path(path).filename().string(),
                              std::string(std::istreambuf_iterator<char>(in), {}));
    }
    store.set_experiment_status(experiment, "running", unix_now());
    const double spent = store.experiment(config.name).seconds_run;
    store.set_experiment_budget(experiment, config.budget_trials,
                                config.budget_seconds > 0
                                    ? std::optional<double>(spent + config.budget_seconds)
                                    : std::nullopt,
                                unix_now());
    open_states();
  }

  // ------------------------------------------------------------ training states

  void open_states() {
    namespace fs = std::filesystem;
    if (!asha) return;  // only ASHA's rungs are checkpointed
    if (!opt.state_dir.empty())
      states_dir = opt.state_dir;
    else if (!store.path().empty() && store.path() != ":memory:")
      states_dir = fs::path(store.path() + ".states") / std::to_string(experiment);
    if (states_dir.empty()) return;
    std::error_code ec;
    fs::create_directories(states_dir, ec);
    if (ec) {
      log("training states cannot be kept in " + states_dir.string() + " (" + ec.message() +
          "): retried trials start over");
      states_dir.clear();
      return;
    }
    // What a previous run of the controller kept: trial-ID-epoch-K.state.
    for (const auto& entry : fs::directory_iterator(states_dir, ec)) {
      long long trial = 0;
      int epoch = 0;
      if (std::sscanf(entry.path().filename().c_str(), "trial-%lld-epoch-%d.state", &trial,
                      &epoch) == 2)
        state_epoch[trial] = std::max(state_epoch[trial], epoch);
    }
  }

  std::filesystem::path state_file(int64_t trial, int epoch) const {
    return states_dir /
           ("trial-" + std::to_string(trial) + "-epoch-" + std::to_string(epoch) + ".state");
  }

  // The trial has ended: its states are of no more use.
  void drop_states(int64_t trial) {
    incoming.erase(trial);
    auto it = state_epoch.find(trial);
    if (it == state_epoch.end()) return;
    std::error_code ec;
    for (int e = 0; e <= it->second; ++e) std::filesystem::remove(state_file(trial, e), ec);
    state_epoch.erase(it);
  }

  // A chunk of a running attempt's training state after a rung.
  void on_checkpoint(const std::string& worker, const proto::Checkpoint& c) {
    const int64_t trial = c.trial;
    const int attempt = c.attempt, epoch = c.epoch;
    if (!owns(worker, trial, attempt)) return refuse_unless_ran(worker, trial, attempt);
    if (states_dir.empty()) return;  // not kept here
    const int64_t offset = c.offset, size = c.size;
    Incoming& in = incoming[trial];
    if (offset == 0) in = {attempt, epoch, {}};
    const auto bytes = proto::base64_decode(c.bytes);
    if (!bytes || in.attempt != attempt || in.epoch != epoch ||
        offset != static_cast<int64_t>(in.bytes.size()) || size > kMaxStateBytes ||
        static_cast<int64_t>(in.bytes.size() + bytes->size()) > size) {
      log("the training state of trial " + std::to_string(trial) + " after epoch " +
          std::to_string(epoch) + " arrived damaged; not kept");
      incoming.erase(trial);
      return;
    }
    in.bytes += *bytes;
    if (!c.last) return;
    if (static_cast<int64_t>(in.bytes.size()) != size) {
      log("the training state of trial " + std::to_string(trial) + " is short; not kept");
      incoming.erase(trial);
      return;
    }
    const auto path = state_file(trial, epoch);
    const auto tmp = path.string() + ".part";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(in.bytes.data(), static_cast<std::streamsize>(in.bytes.size()));
      if (!out) {
        log("cannot write " + tmp + ": the training state of trial " + std::to_string(trial) +
            " is not kept");
        incoming.erase(trial);
        return;
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
      log("cannot keep " + path.string() + ": " + ec.message());
      incoming.erase(trial);
      return;
    }
    const auto before = state_epoch.find(trial);
    if (before != state_epoch.end() && before->second != epoch)
      std::filesystem::remove(state_file(trial, before->second), ec);
    state_epoch[trial] = epoch;
    incoming.erase(trial);
  }

  void resume() {
    if (auto state = store.strategy_state(experiment)) strategy.restore(*state);
    db::Statement s = store.connection().prepare(
        "SELECT id, arch_key, status, attempt, val_acc, latency_ms, params, macs, worker_id, "
        "device FROM trials WHERE experiment_id = ?1 ORDER BY number");
    s.bind_int64(1, experiment);
    const double now = unix_now();
    while (s.step()) {
      const int64_t id = s.column_int64(0);
      const std::string key = s.column_text(1), status = s.column_text(2);
      const int attempt = static_cast<int>(s.column_int64(3));
      resumed_attempt[id] = attempt;
      const Arch arch = space.parse_key(key);
      trial_of[space.hash(arch)] = id;
      ++created;
      if (status == "done") {
        ++summary.done;
        Metrics m;
        m.val_acc = s.column_double(4);
        auto opt = [&](int c) -> std::optional<double> {
          if (s.is_null(c)) return std::nullopt;
          return s.column_double(c);
        };
        m.latency_ms = opt(5);
        m.params = opt(6);
        m.macs = opt(7);
        const Score sc = config.objective.score(m);
        if (sc.feasible && m.val_acc > best_val) {
          best_val = m.val_acc;
          best_arch = key;
        }
        strategy.replay(arch, sc);
      } else if (status == "failed" || status == "pruned") {
        ++(status == "failed" ? summary.failed : summary.pruned);
        strategy.replay(arch, std::nullopt);
      } else {
        strategy.replay(arch, std::nullopt);
        Unclaimed u{attempt, 0, {}, key, std::nullopt};
        if (!config.latency_pool.empty() && !s.is_null(5)) {
          Measured x{s.column_double(5), std::nullopt, std::nullopt};
          if (!s.is_null(6)) x.params = s.column_int64(6);
          if (!s.is_null(7)) x.macs = s.column_int64(7);
          u.measured = x;
        }
        if (status == "running" && !s.is_null(8)) {
          // Running when the last controller stopped: its worker may still
          // run it, or hold its result. It has the grace period to say so.
          u.worker_id = s.column_int64(8);
          u.device = s.is_null(9) ? std::string() : s.column_text(9);
          unclaimed[id] = std::move(u);
        } else {
          requeue_resumed(id, status == "running" ? attempt + 1 : attempt, u, now);
        }
      }
    }
    writer.commit();
    // A worker that took this controller for lost reconnects within its own
    // liveness time plus its backoff; twice the liveness time covers both.
    grace_end =
        Clock::now() + 2 * std::chrono::milliseconds(int64_t{opt.heartbeat_ms} * opt.liveness);
    if (asha) {
      // The rungs as the trials reached them: every attempt's epoch at a rung.
      db::Statement r = store.connection().prepare(
          "SELECT e.trial_id, e.epoch, e.val_acc FROM epochs e JOIN trials t ON t.id = e.trial_id "
          "WHERE t.experiment_id = ?1 AND e.val_acc IS NOT NULL ORDER BY t.number, e.attempt");
      r.bind_int64(1, experiment);
      while (r.step())
        asha->report(r.column_int64(0), static_cast<int>(r.column_int64(1)), r.column_double(2));
    }
    log("resumed '" + config.name + "': " + std::to_string(summary.done) + " done, " +
        std::to_string(summary.failed) + " failed, " + std::to_string(summary.pruned) +
        " pruned, " + std::to_string(queue.size()) + " back in the queue, " +
        std::to_string(unclaimed.size()) + " running (their workers may take them back)");
  }

  // A trial of the resumed experiment back in the queue (or in the latency
  // pool's) at attempt `next`.
  void requeue_resumed(int64_t id, int next, const Unclaimed& u, double now) {
    if (next != u.attempt) writer.requeue(id, next, now);
    if (!config.latency_pool.empty() && !u.measured) {
      measure_queue.push_back({id, next, u.arch});  // its latency is still to measure
    } else {
      if (u.measured) measured[id] = *u.measured;
      queue.push_back({id, next, u.arch});
    }
    ++summary.requeued;
  }

  // After a restart, `worker` says it runs (or ran) the attempt the store
  // shows running on it: the attempt is its flight again, on the slots the
  // store names, which must be the worker's own. False if not its to take.
  bool claim(const std::string& worker, int64_t trial, int attempt) {
    auto u = unclaimed.find(trial);
    auto w = workers.find(worker);
    if (u == unclaimed.end() || w == workers.end() || u->second.attempt != attempt ||
        u->second.worker_id != w->second.id)
      return false;
    std::vector<std::string> slots;
    std::stringstream device(u->second.device);
    for (std::string sl; std::getline(device, sl, ',');) {
      const auto& own = w->second.slot_ids;
      // A gang's device names its workers: not taken back, it trains again.
      if (std::find(own.begin(), own.end(), sl) == own.end() || slot_busy(w->second, worker, sl))
        return false;
      slots.push_back(sl);
    }
    if (slots.empty()) return false;
    for (const auto& sl : slots) w->second.free.erase(sl);
    flights[trial] = {worker, attempt, slots, u->second.arch, unix_now()};
    w->second.trials.insert(trial);
    sent(trial, attempt, worker);
    unclaimed.erase(u);
    log(worker_label(worker) + " took back trial " + std::to_string(trial) + " attempt " +
        std::to_string(attempt) + ", which it ran before the controller restarted");
    return true;
  }

  // The grace period is over: what nobody took back trains again.
  void expire_unclaimed(bool now_anyway) {
    if (unclaimed.empty() || (!now_anyway && Clock::now() < grace_end)) return;
    const double now = unix_now();
    for (const auto& [id, u] : unclaimed) {
      if (stopping) {
        writer.requeue(id, u.attempt + 1, now);  // given back for a resume to run
        continue;
      }
      requeue_resumed(id, u.attempt + 1, u, now);
    }
    log(std::to_string(unclaimed.size()) + " trial(s) running before the restart were not taken " +
        "back by their workers: they train again");
    unclaimed.clear();
  }

  // ------------------------------------------------------------ dispatch

  bool asking_allowed() const {
    return !no_more_archs && created < config.budget_trials && !stopping;
  }

  // A trial attempt for a free slot: a re-queued one first, else a new one
  // (with a latency pool, new ones are measured first: new_trial() there).
  std::optional<Queued> next_trial() {
    if (!queue.empty()) {
      Queued q = queue.front();
      queue.pop_front();
      return q;
    }
    if (!config.latency_pool.empty()) return std::nullopt;
    return new_trial();
  }

  // A new trial from the strategy, recorded; nullopt when there is none to ask.
  std::optional<Queued> new_trial() {
    if (!asking_allowed()) return std::nullopt;
    std::optional<Candidate> c;
    try {
      c = strategy.ask();
    } catch (const db::SqliteError&) {
      throw;
    } catch (const Error& e) {
      // The strategy cannot go on (constraints that leave nothing, say): the
      // search stops as for its budget, keeping every result, and says why.
      summary.error = e.what();
      no_more_archs = true;
      return std::nullopt;
    }
    strategy_dirty = true;
    if (!c) {
      no_more_archs = true;
      return std::nullopt;
    }
    db::NewTrial t;
    t.experiment_id = experiment;
    t.arch_key = space.key(c->arch);
    t.arch_hash = space.hash(c->arch);
    t.arch_json = space.arch_to_json(c->arch).dump();
    if (c->parent) {
      if (auto p = trial_of.find(space.hash(*c->parent)); p != trial_of.end())
        t.parent_id = p->second;
      t.mutation = c->mutation;
    }
    t.fidelity = config.fidelity;
    t.queued_at = unix_now();
    const int64_t id = writer.add_trial(t);
    trial_of[t.arch_hash] = id;
    ++created;
    return Queued{id, 0, t.arch_key};
  }

  // A slot said ready. It must be one the worker declared in its hello, and
  // not one that runs an attempt of ours: a worker that lost an attempt is
  // found by its heartbeat (on_heartbeat), which frees the slot.
  void on_ready(const std::string& worker, const std::string& slot) {
    auto w = workers.find(worker);
    if (w == workers.end()) return;
    const auto& declared = w->second.slot_ids;
    if (std::find(declared.begin(), declared.end(), slot) == declared.end())
      throw proto::ProtocolError("not_allowed", "slot '" + printable_excerpt(slot, 40) +
                                                    "' was not declared in this worker's hello");
    if (const auto busy = slot_busy(w->second, worker, slot))
      throw proto::ProtocolError("not_allowed", "slot '" + printable_excerpt(slot, 40) +
                                                    "' runs trial " + std::to_string(*busy) +
                                                    ": it is not free");
    w->second.free.insert(slot);
    dispatch(worker);
  }

  // The trial that runs on a worker's slot, if any (trained, part of a gang, or measured).
  std::optional<int64_t> slot_busy(const WorkerState& w, const std::string& worker,
                                   const std::string& slot) const {
    for (int64_t t : w.trials) {
      if (auto f = flights.find(t);
          f != flights.end() && f->second.worker == worker &&
          std::count(f->second.slots.begin(), f->second.slots.end(), slot))
        return t;
      if (auto g = gangs.find(t); g != gangs.end())
        for (const auto& p : g->second.members)
          if (p.worker == worker && std::count(p.slots.begin(), p.slots.end(), slot)) return t;
    }
    for (int64_t t : w.measuring)
      if (auto m = measuring.find(t); m != measuring.end() && m->second.slots.front() == slot)
        return t;
    return std::nullopt;
  }

  // Trials for a worker's free slots, gpus_per_trial at a time (a data-
  // parallel trial runs on all of its slots of one worker).
  void dispatch(const std::string& worker) {
    auto w = workers.find(worker);
    if (w == workers.end()) return;
    const size_t k = static_cast<size_t>(std::max(1, config.gpus_per_trial));
    if (w->second.measures && w->second.can_measure) dispatch_measures(w);
    if (!w->second.trains) return;
    if (!w->second.can_measure && config.latency_pool.empty()) return;
    if (gang_mode()) return dispatch_gangs();
    while (w->second.free.size() >= k) {
      const auto q = next_trial();
      if (!q) {
        if (std::find(idle.begin(), idle.end(), worker) == idle.end()) idle.push_back(worker);
        return;
      }
      std::vector<std::string> slots(w->second.free.begin(),
                                     std::next(w->second.free.begin(), static_cast<long>(k)));
      for (const auto& sl : slots) w->second.free.erase(sl);
      start(w, *q, slots);
    }
  }

  // The latency pool: a free slot measures the next trial waiting for it, or
  // a new one while the trials measured and waiting for training, with those
  // being measured, are fewer than the training slots (measuring runs ahead
  // of training by about one round, not further).
  void dispatch_measures(std::map<std::string, WorkerState>::iterator w) {
    const std::string& worker = w->first;
    while (!w->second.free.empty()) {
      int train_slots = 0;
      for (const auto& [id, x] : workers)
        if (x.trains) train_slots += x.slots / std::max(1, config.gpus_per_trial);
      std::optional<Queued> q;
      if (!measure_queue.empty()) {
        q = measure_queue.front();
        measure_queue.pop_front();
      } else if (static_cast<int>(queue.size() + measuring.size()) < std::max(1, train_slots)) {
        q = new_trial();
      }
      if (!q) {
        if (std::find(idle.begin(), idle.end(), worker) == idle.end()) idle.push_back(worker);
        return;
      }
      const std::string slot = *w->second.free.begin();
      w->second.free.erase(w->second.free.begin());
      measuring[q->trial] = {worker, q->attempt, {slot}, q->arch, unix_now()};
      w->second.measuring.insert(q->trial);
      sent(q->trial, q->attempt, worker);
      nlohmann::json m = {
          {"trial", q->trial},
          {"attempt", q->attempt},
          {"slots", {slot}},
          {"space_id", space_id},
          {"arch", q->arch},
          {"recipe", config.recipe},
          {"data", {{"name", config.data}, {"fingerprint", config.data_fingerprint}}},
          {"fidelity", config.fidelity},
          {"measure_only", true}};
      if (!config.objective.latency_device.empty())
        m["latency_device"] = config.objective.latency_device;
      if (!w->second.has_space) {
        m["space"] = space.spec();
        w->second.has_space = true;
      }
      send(worker, proto::encode(proto::Type::train, std::move(m)));
    }
  }

  // A latency pool's answer: the trial's latency, params and MACs go to its
  // row, and the trial to the training queue.
  void on_measured(const std::string& worker, const proto::Result& r) {
    auto f = measuring.find(r.trial);
    if (f == measuring.end() || f->second.worker != worker || f->second.attempt != r.attempt) {
      refuse_unless_ran(worker, r.trial, r.attempt);
      acks.push_back({worker, r.trial, r.attempt, false});  // a duplicate or a stale one
      return;
    }
    const Flight flight = f->second;
    measuring.erase(f);
    if (auto w = workers.find(worker); w != workers.end()) w->second.measuring.erase(r.trial);
    if (!r.latency_ms) {
      log("trial " + std::to_string(r.trial) + ": " + worker_label(worker) +
          " measured no latency; measured again elsewhere");
      measure_queue.push_back({r.trial, r.attempt, flight.arch});
    } else {
      writer.record_latency(r.trial, *r.latency_ms, r.params, r.macs);
      measured[r.trial] = {*r.latency_ms, r.params, r.macs};
      queue.push_back({r.trial, r.attempt, flight.arch});
    }
    acks.push_back({worker, r.trial, r.attempt, true});
  }

  // The train message of one worker's part of an attempt (the space document
  // once per connection: it is the bulk of a train, and a worker keeps it).
  nlohmann::json train_body(WorkerState& ws, const Queued& q,
                            const std::vector<std::string>& slots) {
    nlohmann::json train = {
        {"trial", q.trial},
        {"attempt", q.attempt},
        {"slots", slots},
        {"space_id", space_id},
        {"arch", q.arch},
        {"recipe", config.recipe},
        {"data", {{"name", config.data}, {"fingerprint", config.data_fingerprint}}},
        {"fidelity", config.fidelity}};
    if (!config.objective.latency_device.empty() && config.latency_pool.empty())
      train["latency_device"] = config.objective.latency_device;
    if (!ws.has_space) {
      train["space"] = space.spec();
      ws.has_space = true;
    }
    return train;
  }

  // ------------------------------------------------------------ gangs

  // A trial of gpus_per_trial slots when no training worker has that many:
  // its ranks are spread over several workers (a gang).
  bool gang_mode() const {
    const int k = std::max(1, config.gpus_per_trial);
    if (k == 1) return false;
    int most = 0;
    for (const auto& [id, x] : workers)
      if (x.trains && (x.can_measure || !config.latency_pool.empty()))
        most = std::max(most, x.slots);
    return most > 0 && most < k;
  }

  // Gangs from the free slots of the training workers: the workers with the
  // most free slots first, so a trial spans as few as it can; rank 0 on the
  // first. Workers that cannot make one now wait in `idle`.
  void dispatch_gangs() {
    const size_t k = static_cast<size_t>(config.gpus_per_trial);
    while (true) {
      std::vector<std::string> avail;
      size_t total = 0;
      for (const auto& [id, x] : workers)
        if (x.trains && (x.can_measure || !config.latency_pool.empty()) && !x.free.empty()) {
          avail.push_back(id);
          total += x.free.size();
        }
      auto wait = [&] {
        for (const auto& id : avail)
          if (std::find(idle.begin(), idle.end(), id) == idle.end()) idle.push_back(id);
      };
      if (total < k) return wait();
      std::stable_sort(avail.begin(), avail.end(), [&](const std::string& a, const std::string& b) {
        return workers.at(a).free.size() > workers.at(b).free.size();
      });
      const auto q = next_trial();
      if (!q) return wait();
      std::vector<GangPart> parts;
      size_t remaining = k;
      int rank = 0;
      for (const auto& id : avail) {
        WorkerState& x = workers.at(id);
        const size_t n = std::min(remaining, x.free.size());
        std::vector<std::string> slots(x.free.begin(),
                                       std::next(x.free.begin(), static_cast<long>(n)));
        for (const auto& sl : slots) x.free.erase(sl);
        parts.push_back({id, slots, rank});
        rank += static_cast<int>(n);
        remaining -= n;
        if (remaining == 0) break;
      }
      start_gang(*q, parts);
    }
  }

  void start_gang(const Queued& q, const std::vector<GangPart>& parts) {
    auto lead = workers.find(parts.front().worker);
    std::string device;
    for (const auto& p : parts)
      for (const auto& sl : p.slots)
        device += (device.empty() ? "" : ",") + workers.at(p.worker).name + ":" + sl;
    const double now = unix_now();
    writer.start_trial(q.trial, q.attempt, lead->second.id, device, now);
    flights[q.trial] = {lead->first, q.attempt, parts.front().slots, q.arch, now};
    Gang g{static_cast<int>(config.gpus_per_trial), {parts.begin() + 1, parts.end()}, false};
    for (const auto& p : parts) {
      workers.at(p.worker).trials.insert(q.trial);
      sent(q.trial, q.attempt, p.worker);
    }
    gangs[q.trial] = g;
    // Rank 0's worker first: it opens the group's hub and says where
    // (rendezvous); the others get their train with that address then. A
    // gang trains from scratch on a retry (its training state is not sent).
    nlohmann::json train = train_body(lead->second, q, parts.front().slots);
    train["gang"] = {{"world", g.world}, {"first_rank", 0}};
    send(lead->first, proto::encode(proto::Type::train, std::move(train)));
    log("trial " + std::to_string(q.trial) + " attempt " + std::to_string(q.attempt) + " on " +
        std::to_string(parts.size()) + " workers: " + device);
  }

  void on_rendezvous(const std::string& worker, const proto::Rendezvous& r) {
    const int64_t trial = r.trial;
    const int attempt = r.attempt;
    if (!owns(worker, trial, attempt)) return refuse_unless_ran(worker, trial, attempt);
    auto g = gangs.find(trial);
    auto f = flights.find(trial);
    if (g == gangs.end() || g->second.started) return;  // not a gang, or told already
    g->second.started = true;
    const Queued q{trial, attempt, f->second.arch};
    for (const auto& m : g->second.members) {
      auto w = workers.find(m.worker);
      if (w == workers.end()) continue;  // lost meanwhile: requeue_all ends the attempt
      nlohmann::json train = train_body(w->second, q, m.slots);
      train["gang"] = {
          {"world", g->second.world}, {"first_rank", m.first_rank}, {"rendezvous", r.address}};
      send(m.worker, proto::encode(proto::Type::train, std::move(train)));
    }
  }

  // The attempt is over for every part (a rank lost or failed, a stop): the
  // parts other than `except` are cancelled and let go.
  void end_gang(int64_t trial, const std::string& except, const std::string& why) {
    auto g = gangs.find(trial);
    if (g == gangs.end()) return;
    std::vector<std::string> parts;
    int attempt = 0;
    if (auto f = flights.find(trial); f != flights.end()) {
      parts.push_back(f->second.worker);
      attempt = f->second.attempt;
    }
    for (const auto& m : g->second.members) parts.push_back(m.worker);
    for (const auto& p : parts) {
      if (p == except) continue;
      send(p, proto::encode(proto::Type::cancel,
                            {{"trial", trial}, {"attempt", attempt}, {"reason", why}}));
      if (auto w = workers.find(p); w != workers.end()) w->second.trials.erase(trial);
    }
    gangs.erase(g);
  }

  void start(std::map<std::string, WorkerState>::iterator w, const Queued& queued,
             const std::vector<std::string>& slots) {
    const std::string& worker = w->first;
    const Queued* q = &queued;
    std::string device;
    for (const auto& sl : slots) device += (device.empty() ? "" : ",") + sl;
    const double now = unix_now();
    writer.start_trial(q->trial, q->attempt, w->second.id, device, now);
    flights[q->trial] = {worker, q->attempt, slots, q->arch, now};
    w->second.trials.insert(q->trial);
    sent(q->trial, q->attempt, worker);
    nlohmann::json train = train_body(w->second, *q, slots);
    if (!states_dir.empty()) train["checkpoint_epochs"] = asha->settings().rungs;
    // A retried attempt of a trial that passed a rung continues from there.
    std::string state;
    int resume_epoch = 0;
    if (auto s = state_epoch.find(q->trial); s != state_epoch.end() && q->attempt > 0) {
      std::ifstream in(state_file(q->trial, s->second), std::ios::binary);
      if (in) {
        state.assign(std::istreambuf_iterator<char>(in), {});
        resume_epoch = s->second;
        train["resume_epoch"] = resume_epoch;
      }
    }
    const bool resuming = train.contains("resume_epoch");
    send(worker, proto::encode(proto::Type::train, std::move(train)));
    if (!resuming) return;
    for (const std::string& chunk :
         proto::encode_checkpoint(q->trial, q->attempt, resume_epoch, state))
      send(worker, chunk);
    log("trial " + std::to_string(q->trial) + " attempt " + std::to_string(q->attempt) +
        " continues after epoch " + std::to_string(resume_epoch) + " on " + worker_label(worker));
  }

  // Hands queued work to workers whose slots were free when there was none.
  // Each idle worker is tried once per call: with a latency pool a training
  // worker can find nothing while new trials may still be asked (they are
  // being measured), and it waits in `idle` again.
  void fill_idle() {
    if (idle.empty() || (queue.empty() && measure_queue.empty() && !asking_allowed())) return;
    std::deque<std::string> waiting;
    waiting.swap(idle);
    for (const std::string& worker : waiting) {
      try {
        dispatch(worker);
      } catch (const db::SqliteError&) {
        throw;
      } catch (const Error& e) {
        log("could not dispatch to " + worker_label(worker) + ": " + e.what());
      }
    }
  }

  // The attempts a worker was running go back to the queue with the attempt
  // number raised, or fail for good at the cap.
  void requeue_all(const std::string& worker, const std::string& why) {
    auto w = workers.find(worker);
    if (w == workers.end()) return;
    const double now = unix_now();
    const std::set<int64_t> trials = w->second.trials;
    for (int64_t trial : trials) {
      auto f = flights.find(trial);
      if (f == flights.end()) continue;
      // A gang is lost whole when any of its workers is: the others stop.
      end_gang(trial, worker, why);
      if (auto lead = workers.find(f->second.worker); lead != workers.end())
        lead->second.trials.erase(trial);
      retry_or_fail(trial, f->second, why, now);
      flights.erase(f);
    }
    w->second.trials.clear();
    // Measurements change nothing in the store: measured again by another.
    for (int64_t trial : w->second.measuring) {
      auto m = measuring.find(trial);
      if (m == measuring.end()) continue;
      if (!stopping) measure_queue.push_front({trial, m->second.attempt, m->second.arch});
      measuring.erase(m);
    }
    w->second.measuring.clear();
  }

  void retry_or_fail(int64_t trial, const Flight& f, const std::string& why, double now) {
    if (f.attempt + 1 < opt.max_attempts && !stopping) {
      writer.requeue(trial, f.attempt + 1, now);
      queue.push_back({trial, f.attempt + 1, f.arch});
      ++summary.requeued;
    } else if (stopping) {
      // Budget or stop: the attempt is given back for a resume to run.
      writer.requeue(trial, f.attempt + 1, now);
    } else {
      writer.record_failure(trial, f.attempt,
                            why + " (after " + std::to_string(f.attempt + 1) + " attempts)", now);
      drop_states(trial);
      strategy.tell_failure(space.parse_key(f.arch));
      strategy_dirty = true;
      ++summary.failed;
      snapshot_if_due();
    }
  }

  // ------------------------------------------------------------ messages

  // Every message from a peer goes through here: parsed into its typed
  // content with every value bounded (proto::parse), refused with an `error`
  // and one log line when it is malformed, out of turn or not the peer's to
  // send. Nothing a peer sends makes an exception leave the loop, except the
  // store failing (then the batch is rolled back and the controller stops).
  void on_message(const std::string& worker, const std::string& payload) {
    std::optional<proto::Type> type;
    try {
      const proto::Message m = proto::parse(payload);
      type = m.type;
      auto w = workers.find(worker);
      if (w == workers.end() && m.type != proto::Type::hello)
        throw proto::ProtocolError("unexpected", "say hello first");
      if (w != workers.end()) w->second.last_heard = Clock::now();
      handle(worker, m);
    } catch (const proto::ProtocolError& e) {
      refuse(worker, e, type);
    } catch (const db::SqliteError&) {
      throw;  // the store failed: the batch is rolled back; stop rather than lose results
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      // A case the checks above missed: still the peer's message that is refused, not the loop.
      refuse(worker, proto::ProtocolError("bad_field", e.what()), type);
    }
  }

  void refuse(const std::string& worker, const proto::ProtocolError& e,
              std::optional<proto::Type> type) {
    log("refused " +
        (type ? std::string("a ") + proto::type_name(*type) : std::string("a message")) + " from " +
        worker_label(worker) + ": " + e.code() + ": " + printable_excerpt(e.reason(), 300));
    send(worker, proto::error_reply(e, type));
  }

  void handle(const std::string& worker, const proto::Message& m) {
    switch (m.type) {
      case proto::Type::hello:
        return on_hello(worker, m.as<proto::Hello>());
      case proto::Type::ready:
        return on_ready(worker, m.as<proto::Ready>().slot);
      case proto::Type::progress:
        return on_progress(worker, m.as<proto::Progress>());
      case proto::Type::result:
        return on_result(worker, m.as<proto::Result>());
      case proto::Type::failure:
        return on_failure(worker, m.as<proto::Failure>());
      case proto::Type::heartbeat:
        return on_heartbeat(worker, m.as<proto::Heartbeat>());
      case proto::Type::bye: {
        const std::string& reason = m.as<proto::Bye>().reason;
        log(worker_label(worker) +
            " left: " + (reason.empty() ? "no reason" : printable_excerpt(reason, 200)));
        requeue_all(worker, "worker left");
        account(worker);
        std::erase_if(idle, [&](const std::string& s) { return s == worker; });
        workers.erase(worker);
        return;
      }
      case proto::Type::error: {
        const auto& r = m.as<proto::Refusal>();
        log(worker_label(worker) + " refused our " +
            (r.in_reply_to.empty() ? "message" : printable_excerpt(r.in_reply_to, 40)) + ": " +
            printable_excerpt(r.code, 40) + ": " + printable_excerpt(r.message, 200));
        return;
      }
      case proto::Type::fetch:
        return send_data(worker, m.as<proto::Fetch>());
      case proto::Type::checkpoint:
        return on_checkpoint(worker, m.as<proto::Checkpoint>());
      case proto::Type::rendezvous:
        return on_rendezvous(worker, m.as<proto::Rendezvous>());
      default:
        throw proto::ProtocolError(
            "not_allowed", std::string("a worker does not send ") + proto::type_name(m.type));
    }
  }

  // ------------------------------------------------------------ who may report what

  // Every attempt sent out is remembered with the workers it went to (rank
  // 0's and the other parts of a gang, a latency measurement), so that a
  // report about it can be told apart: from its current owner (it counts),
  // from a worker that ran it once (a stale report: acknowledged, not
  // counted), or from anyone else (refused, nothing changes).
  void sent(int64_t trial, int attempt, const std::string& worker) {
    ran[{trial, attempt}].insert(worker);
  }

  bool ran_by(const std::string& worker, int64_t trial, int attempt) const {
    auto it = ran.find({trial, attempt});
    return it != ran.end() && it->second.count(worker) > 0;
  }

  // True if `worker` runs (trial, attempt) as its trained attempt now (rank
  // 0's worker for a gang). After a restart, the attempt the store shows it
  // running is taken back by it here while the grace period lasts.
  bool owns(const std::string& worker, int64_t trial, int attempt) {
    auto f = flights.find(trial);
    if (f != flights.end()) return f->second.worker == worker && f->second.attempt == attempt;
    return claim(worker, trial, attempt);
  }

  // A report about an attempt from before the controller restarted that no
  // worker took back: whose it was cannot be told any more, so it is
  // acknowledged as not counted (its worker lets it go) and nothing is stored.
  bool from_before_restart(int64_t trial, int attempt) const {
    auto r = resumed_attempt.find(trial);
    return r != resumed_attempt.end() && attempt <= r->second && !ran.count({trial, attempt});
  }

  void refuse_unless_ran(const std::string& worker, int64_t trial, int attempt) const {
    if (!ran_by(worker, trial, attempt) && !from_before_restart(trial, attempt))
      throw proto::ProtocolError("not_allowed", "trial " + std::to_string(trial) + " attempt " +
                                                    std::to_string(attempt) +
                                                    " was never sent to this worker");
  }

  // A worker lacks the experiment's data set: send it its files in chunks.
  void send_data(const std::string& worker, const proto::Fetch& f) {
    const std::string& fp = f.fingerprint;
    if (fp != config.data_fingerprint || config.data_files.empty())
      throw proto::ProtocolError("not_allowed", "this controller serves only data set " +
                                                    config.data + " (" + config.data_fingerprint +
                                                    "), and only if it can read it");
    log("sending data set " + config.data + " to " + worker_label(worker));
    for (size_t i = 0; i < data_bytes.size(); ++i) {
      const auto& [name, bytes] = data_bytes[i];
      for (size_t at = 0; at < bytes.size() || at == 0; at += proto::kDataChunkBytes) {
        const size_t n = std::min(proto::kDataChunkBytes, bytes.size() - at);
        const bool last = i + 1 == data_bytes.size() && at + n >= bytes.size();
        send(worker,
             proto::encode(proto::Type::data,
                           {{"fingerprint", fp},
                            {"name", config.data},
                            {"file", name},
                            {"offset", static_cast<int64_t>(at)},
                            {"size", static_cast<int64_t>(bytes.size())},
                            {"bytes", proto::base64_encode(std::string_view(bytes).substr(at, n))},
                            {"last", last}}));
        if (bytes.empty()) break;
      }
    }
  }

  void on_hello(const std::string& identity, const proto::Hello& h) {
    for (const auto& [other, x] : workers)
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
    const int64_t id = store.upsert_worker(h.name, h.host, devices, now, h.pool, tags);
    WorkerState& w = workers[identity];
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
    log(who + " of pool " + printable_excerpt(w.pool, 80) + " joined with " +
        std::to_string(w.slots) + " slot(s)" +
        (w.trains && w.measures ? ": trains and measures latency"
         : w.measures           ? ": measures latency"
         : w.trains             ? ""
                                : ": in neither the training pool (" + config.train_pool +
                          ") nor the latency pool: it gets no trials"));
    if (w.slots < config.gpus_per_trial && w.trains)
      log(who + " has " + std::to_string(w.slots) + " slot(s) and a trial needs " +
          std::to_string(config.gpus_per_trial) +
          ": while no training worker has that many, trials are spread over several workers; "
          "otherwise it gets none");
    // Latency on a GPU target is measured by a worker that has that GPU.
    const std::string& gpu = config.objective.latency_device;
    w.can_measure = gpu.rfind("cuda:", 0) != 0;
    for (const auto& sl : h.slots) w.can_measure |= sl.id == gpu || sl.id.rfind(gpu + ".", 0) == 0;
    if (!w.can_measure && (w.measures || config.latency_pool.empty()))
      log(who + " has no " + gpu + ", where this experiment measures latency: it " +
          (w.measures && w.trains ? "only trains" : "gets no trials"));
    send(identity, proto::encode(proto::Type::welcome, {{"worker_id", id},
                                                        {"heartbeat_ms", opt.heartbeat_ms},
                                                        {"liveness", opt.liveness}}));
  }

  void on_progress(const std::string& worker, const proto::Progress& p) {
    // A stale attempt's epoch, or one from a gang's other rank: nothing to record.
    if (!owns(worker, p.trial, p.attempt)) return refuse_unless_ran(worker, p.trial, p.attempt);
    writer.record_epoch({p.trial, p.attempt, p.epoch, p.train_loss.value_or(0),
                         p.train_acc.value_or(0), p.val_acc.value_or(0), p.lr.value_or(0),
                         p.seconds.value_or(0)});
    if (asha && p.val_acc && !asha->report(p.trial, p.epoch, *p.val_acc))
      prune(p.trial, p.epoch, *p.val_acc);
  }

  // Below the rung's cut: the attempt is cancelled on its worker and the
  // trial recorded as pruned; the strategy hears of it at its low fidelity.
  void prune(int64_t trial, int epoch, double val_acc) {
    auto f = flights.find(trial);
    if (f == flights.end()) return;
    const Flight flight = f->second;
    const double now = unix_now();
    send(flight.worker, proto::encode(proto::Type::cancel,
                                      {{"trial", trial},
                                       {"attempt", flight.attempt},
                                       {"reason", "pruned at epoch " + std::to_string(epoch)}}));
    writer.mark_pruned(trial, flight.attempt, now);
    drop_states(trial);
    finish_flight(flight.worker, trial, flight.started, now);
    Score score;
    score.value = val_acc;
    score.pruned = true;
    strategy.tell(space.parse_key(flight.arch), score);
    strategy_dirty = true;
    ++summary.pruned;
    snapshot_if_due();
  }

  // True if `worker` runs a part past rank 0 of the gang of (trial, attempt) now.
  bool gang_member(const std::string& worker, int64_t trial, int attempt) const {
    auto f = flights.find(trial);
    auto g = gangs.find(trial);
    return f != flights.end() && f->second.attempt == attempt && g != gangs.end() &&
           std::any_of(g->second.members.begin(), g->second.members.end(),
                       [&](const GangPart& p) { return p.worker == worker; });
  }

  void on_result(const std::string& worker, const proto::Result& m) {
    const int64_t trial = m.trial;
    const int attempt = m.attempt;
    if (m.measure_only) return on_measured(worker, m);
    if (m.gang_member) {
      // A rank past 0 of a gang is done; rank 0's worker reports the trial.
      if (gang_member(worker, trial, attempt)) {
        if (auto w = workers.find(worker); w != workers.end()) w->second.trials.erase(trial);
      } else {
        refuse_unless_ran(worker, trial, attempt);
      }
      acks.push_back({worker, trial, attempt, false});
      return;
    }
    const bool current = owns(worker, trial, attempt);
    if (!current) {
      refuse_unless_ran(worker, trial, attempt);
      if (!ran_by(worker, trial, attempt)) {  // from before a restart: nothing to keep
        ++summary.late;
        acks.push_back({worker, trial, attempt, false});
        return;
      }
      // Else a late one of its own: kept, not counted.
    }
    db::TrialResult r;
    r.trial_id = trial;
    r.attempt = attempt;
    r.val_acc = m.val_acc.value_or(0.0);
    r.test_acc = m.test_acc;
    r.latency_ms = m.latency_ms;
    r.params = m.params;
    r.macs = m.macs;
    const Objective& o = config.objective;
    if (current && (o.max_params || o.max_macs || o.pareto == "params" || o.pareto == "macs") &&
        (!r.params || !r.macs)) {
      // Exact functions of the layer graph: what the worker left out (a
      // simulated one does) is computed here when the objective needs it.
      const LayerGraph g = space.lower(space.parse_key(flights.at(trial).arch));
      if (!r.params) r.params = g.params();
      if (!r.macs) r.macs = g.macs();
    }
    if (auto x = measured.find(trial); x != measured.end()) {
      // Measured by the latency pool before training: that latency counts,
      // not the training device's.
      r.latency_ms = x->second.latency_ms;
      if (x->second.params) r.params = x->second.params;
      if (x->second.macs) r.macs = x->second.macs;
    }
    r.train_seconds = m.train_seconds.value_or(0.0);
    r.finished_at = unix_now();
    if (!m.resume_refused.empty())
      log("trial " + std::to_string(trial) + " trained from scratch: its training state was " +
          "refused (" + printable_excerpt(m.resume_refused, 200) + ")");
    r.worker_id = workers.at(worker).id;
    bool counted = false;
    try {
      counted = writer.record_result(r) && current;
    } catch (const db::SqliteError&) {
      throw;
    } catch (const Error& e) {
      // A trial this store does not know (another controller's): acknowledged
      // as not counted so the worker lets it go.
      log("result from " + worker_label(worker) + " not recorded: " + e.what());
    }
    if (counted) {
      const Flight& f = flights.at(trial);
      ++summary.done;
      Metrics metrics;
      metrics.val_acc = r.val_acc;
      metrics.latency_ms = r.latency_ms;
      if (r.params) metrics.params = static_cast<double>(*r.params);
      if (r.macs) metrics.macs = static_cast<double>(*r.macs);
      const Score sc = config.objective.score(metrics);
      if (sc.feasible && r.val_acc > best_val) {
        best_val = r.val_acc;
        best_arch = f.arch;
      }
      strategy.tell(space.parse_key(f.arch), sc);
      gangs.erase(trial);  // its other ranks end with it and report as members
      measured.erase(trial);
      drop_states(trial);
      strategy_dirty = true;
      snapshot_if_due();
      finish_flight(worker, trial, f.started, r.finished_at);
    } else {
      ++summary.late;
    }
    acks.push_back({worker, trial, attempt, counted});
  }

  void on_failure(const std::string& worker, const proto::Failure& m) {
    const int64_t trial = m.trial;
    const int attempt = m.attempt;
    // What the store keeps and the log shows of a peer's reason: bounded, and escaped in the log.
    const std::string reason = proto::bounded_text(m.reason);
    if (auto x = measuring.find(trial);
        x != measuring.end() && x->second.worker == worker && x->second.attempt == attempt) {
      // A latency measurement that failed: another worker of the pool tries
      // (up to --max-attempts in all), unless it would fail the same way.
      const Flight flight = x->second;
      measuring.erase(x);
      if (auto w = workers.find(worker); w != workers.end()) w->second.measuring.erase(trial);
      const std::string why = "latency measurement: " + reason;
      if (m.retryable && ++measure_failures[trial] < opt.max_attempts && !stopping) {
        measure_queue.push_back({trial, attempt, flight.arch});
      } else if (!stopping) {
        writer.record_failure(trial, attempt, why, unix_now());
        strategy.tell_failure(space.parse_key(flight.arch));
        strategy_dirty = true;
        ++summary.failed;
        snapshot_if_due();
        log("trial " + std::to_string(trial) + " failed: " + printable_excerpt(why, 200));
      }
      acks.push_back({worker, trial, attempt, true});
      return;
    }
    const bool current = owns(worker, trial, attempt);
    // A rank past 0 of a gang that failed ends the whole attempt, rank 0's part included.
    const bool member = !current && gang_member(worker, trial, attempt);
    if (!current && !member) {
      refuse_unless_ran(worker, trial, attempt);  // else a stale attempt's: nothing to do
      acks.push_back({worker, trial, attempt, false});
      return;
    }
    if (auto w = workers.find(worker); member && w != workers.end()) w->second.trials.erase(trial);
    end_gang(trial, worker, reason);
    const Flight flight = flights.at(trial);
    finish_flight(flight.worker, trial, flight.started, unix_now());
    if (m.retryable) {
      retry_or_fail(trial, flight, reason, unix_now());
    } else {
      writer.record_failure(trial, attempt, reason, unix_now());
      drop_states(trial);
      strategy.tell_failure(space.parse_key(flight.arch));
      strategy_dirty = true;
      ++summary.failed;
      snapshot_if_due();
    }
    acks.push_back({worker, trial, attempt, true});
  }

  void finish_flight(const std::string& worker, int64_t trial, double started, double ended) {
    auto f = flights.find(trial);
    const double slots = f == flights.end() ? 1.0 : static_cast<double>(f->second.slots.size());
    if (f != flights.end()) flights.erase(f);
    auto w = workers.find(worker);
    if (w == workers.end()) return;
    w->second.trials.erase(trial);
    // Busy time in slot-seconds, as connected time is counted.
    writer.worker_seen(w->second.id, ended, 0.0, std::max(0.0, ended - started) * slots);
  }

  // A worker's heartbeat lists the attempts it runs. One of ours missing from
  // it for longer than a message could be on its way (a worker process
  // restarted under the same name) is lost: retried like a lost worker's.
  void on_heartbeat(const std::string& worker, const proto::Heartbeat& h) {
    account(worker);
    auto w = workers.find(worker);
    if (w == workers.end() || !h.running) return;
    const std::set<std::pair<int64_t, int>> running(h.running->begin(), h.running->end());
    // After a restart: the attempts it still runs are its again.
    for (const auto& [t, a] : running)
      if (!flights.count(t)) claim(worker, t, a);
    const double now = unix_now(), grace = 3.0 * opt.heartbeat_ms / 1000.0;
    std::vector<int64_t> lost;
    for (int64_t t : w->second.trials) {
      auto f = flights.find(t);
      // A gang's other parts start after rank 0's rendezvous: only rank 0's is checked here.
      if (f != flights.end() && f->second.worker == worker &&
          !running.count({t, f->second.attempt}) && now - f->second.started > grace)
        lost.push_back(t);
    }
    for (int64_t t : lost) {
      const Flight flight = flights.at(t);
      end_gang(t, worker, "the worker of its rank 0 lost the attempt");
      log(worker_label(worker) + " no longer runs trial " + std::to_string(t) +
          ": it goes back to the queue");
      flights.erase(t);
      w->second.trials.erase(t);
      retry_or_fail(t, flight, "the worker lost the attempt", now);
      // Its `ready` for those slots was refused while they ran the attempt: they are free.
      for (const auto& sl : flight.slots) w->second.free.insert(sl);
      if (std::find(idle.begin(), idle.end(), worker) == idle.end()) idle.push_back(worker);
    }
  }

  // Connected time in slot-seconds, so utilization = busy / connected.
  void account(const std::string& worker) {
    auto w = workers.find(worker);
    if (w == workers.end()) return;
    const double now = unix_now();
    writer.worker_seen(w->second.id, now, (now - w->second.accounted_at) * w->second.slots, 0.0);
    w->second.accounted_at = now;
  }

  // ------------------------------------------------------------ the loop

  // After a result, prune or failure told to the strategy: its summary for the
  // dashboard, joining the batch of that result, at every result at first and
  // then once per 1% more results.
  void snapshot_if_due() {
    const int64_t results = summary.done + summary.pruned + summary.failed;
    if (results < next_snapshot) return;
    const nlohmann::json snap = strategy.take_snapshot();
    if (!snap.is_null()) store.add_strategy_snapshot(experiment, results, snap, unix_now());
    next_snapshot = results + std::max<int64_t>(1, results / 100);
  }

  void commit_if_due(bool force) {
    if (writer.pending() == 0) {
      // Nothing written since the last commit: these acks stored nothing (a
      // stale report), and go at once.
      send_acks();
      return;
    }
    const auto now = Clock::now();
    if (!force && writer.pending() < opt.commit_every &&
        now - batch_started < std::chrono::milliseconds(opt.commit_ms))
      return;
    if (strategy_dirty) {
      // Joins the batch: the state lands with exactly the trials and results that changed it.
      store.save_strategy_state(experiment, strategy.save(), unix_now());
      strategy_dirty = false;
    }
    writer.commit();
    send_acks();
  }

  void send_acks() {
    for (const Ack& a : acks)
      send(a.worker,
           proto::encode(proto::Type::ack,
                         {{"trial", a.trial}, {"attempt", a.attempt}, {"counted", a.counted}}));
    acks.clear();
  }

  // A pool sample when what the pool looks like changed, at most one a second
  // (force: now, if changed at all). Of the changes a second skips, the busiest
  // is written with its own time before the next sample, so that work which
  // starts and ends between two samples (a short search) still shows.
  void sample_pool(bool force) {
    PoolSample p;
    p.workers = static_cast<int>(workers.size());
    for (const auto& [id, w] : workers) p.slots += w.slots;
    for (const auto& [t, f] : flights) p.busy += static_cast<int>(f.slots.size());
    p.busy += static_cast<int>(measuring.size());
    for (const auto& [t, g] : gangs)
      for (const auto& m : g.members) p.busy += static_cast<int>(m.slots.size());
    p.queued = static_cast<int64_t>(queue.size() + measure_queue.size());
    const double now = unix_now();
    if (!force && now - last_pool_at < 1.0) {
      if (p != last_pool && (!skipped_peak || p.busy > skipped_peak->first.busy))
        skipped_peak = {p, now};
      return;
    }
    if (skipped_peak && skipped_peak->first.busy > p.busy && skipped_peak->first != last_pool) {
      const auto& [peak, at] = *skipped_peak;
      store.add_pool_sample(experiment, at, peak.workers, peak.slots, peak.busy, peak.queued);
      last_pool = peak;
    }
    skipped_peak.reset();
    if (p == last_pool) return;
    store.add_pool_sample(experiment, now, p.workers, p.slots, p.busy, p.queued);
    last_pool = p;
    last_pool_at = now;
  }

  void check_liveness() {
    const auto now = Clock::now();
    if (now - last_heartbeat >= std::chrono::milliseconds(opt.heartbeat_ms)) {
      for (const auto& [identity, w] : workers)
        send(identity, proto::encode(proto::Type::heartbeat));
      last_heartbeat = now;
    }
    const auto limit =
        std::chrono::milliseconds(static_cast<int64_t>(opt.heartbeat_ms) * opt.liveness);
    for (auto it = workers.begin(); it != workers.end();) {
      if (now - it->second.last_heard > limit) {
        log(worker_label(it->first) + " went silent: its trials go back to the queue");
        requeue_all(it->first, "worker lost (no heartbeat)");
        std::erase_if(idle, [&](const std::string& s) { return s == it->first; });
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
  }

  void begin_stop(const std::string& why) {
    if (stopping) return;
    stopping = true;
    summary.stopped = true;
    log("stopping: " + why);
    for (auto& [trial, f] : flights)
      send(f.worker, proto::encode(proto::Type::cancel,
                                   {{"trial", trial}, {"attempt", f.attempt}, {"reason", why}}));
    for (auto& [trial, g] : gangs)
      for (const auto& p : g.members)
        if (auto f = flights.find(trial); f != flights.end())
          send(p.worker,
               proto::encode(proto::Type::cancel,
                             {{"trial", trial}, {"attempt", f->second.attempt}, {"reason", why}}));
    for (auto& [trial, f] : measuring)
      send(f.worker, proto::encode(proto::Type::cancel,
                                   {{"trial", trial}, {"attempt", f.attempt}, {"reason", why}}));
    for (auto& [identity, w] : workers) requeue_all(identity, why);
    expire_unclaimed(true);
    queue.clear();
    measure_queue.clear();  // still queued in the store: measured on resume
  }

  bool finished() const {
    return flights.empty() && queue.empty() && measuring.empty() && measure_queue.empty() &&
           unclaimed.empty() && (stopping || !asking_allowed());
  }

  ControllerSummary run(std::atomic<bool>& stop) {
    open_experiment();
    const auto started = Clock::now();
    batch_started = last_heartbeat = Clock::now();
    while (true) {
      if (stop.load()) begin_stop("stop requested");
      if (!summary.error.empty()) begin_stop("the strategy cannot go on: " + summary.error);
      if (config.budget_seconds > 0 &&
          Clock::now() - started > std::chrono::duration<double>(config.budget_seconds))
        begin_stop("time budget spent");
      expire_unclaimed(false);
      if (finished()) break;
      zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 1, std::chrono::milliseconds(std::min(opt.commit_ms, opt.heartbeat_ms)));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;  // a signal: the loop sees the stop flag next
        continue;
      }
      const size_t before = writer.pending();
      // Drain what has arrived, but never starve commits and heartbeats.
      for (int n = 0; n < 10000 && (items[0].revents & ZMQ_POLLIN); ++n) {
        zmq::message_t id, payload;
        if (!socket.recv(id, zmq::recv_flags::dontwait)) break;
        if (!id.more() || !socket.recv(payload, zmq::recv_flags::dontwait)) continue;
        while (payload.more()) {  // a peer sending extra frames: drop them
          zmq::message_t extra;
          if (!socket.recv(extra, zmq::recv_flags::dontwait)) break;
        }
        on_message(id.to_string(), payload.to_string());
        if (writer.pending() >= opt.commit_every) break;
      }
      if (before == 0 && writer.pending() > 0) batch_started = Clock::now();
      fill_idle();
      check_liveness();
      sample_pool(false);
      commit_if_due(false);
      if (opt.on_progress &&
          Clock::now() - last_progress >= std::chrono::milliseconds(opt.progress_ms)) {
        last_progress = Clock::now();
        opt.on_progress(progress(started));
      }
    }
    if (opt.on_progress) opt.on_progress(progress(started));
    for (const auto& [identity, w] : workers) account(identity);
    if (!summary.stopped && !states_dir.empty()) {
      // Every trial has ended, and with it its states: nothing is left to keep.
      std::error_code ec;
      std::filesystem::remove_all(states_dir, ec);
      std::filesystem::remove(states_dir.parent_path(), ec);  // only if empty
    }
    strategy_dirty = true;
    sample_pool(true);
    commit_if_due(true);
    writer.commit();
    summary.rejected = strategy.rejected();
    store.add_seconds_run(experiment,
                          std::chrono::duration<double>(Clock::now() - started).count());
    store.set_experiment_status(experiment, summary.stopped ? "stopped" : "finished", unix_now());
    for (const auto& [identity, w] : workers)
      send(identity,
           proto::encode(proto::Type::bye,
                         {{"reason", summary.stopped ? "search stopped" : "search finished"}}));
    // The goodbyes are queued, not sent: closing with linger 0 could drop
    // them, and a worker that never hears one waits for the controller to
    // come back. Up to a second for them to leave.
    socket.set(zmq::sockopt::linger, 1000);
    return summary;
  }

  db::Store& store;
  const Space& space;
  Strategy& strategy;
  ExperimentConfig config;
  ControllerOptions opt;
  db::Writer writer;
  std::unique_ptr<ControllerSocket::State> net;
  zmq::socket_t& socket;
  std::string endpoint;
  std::string space_id;
  std::vector<std::pair<std::string, std::string>> data_bytes;  // (file name, bytes), read once

  int64_t experiment = 0;
  int64_t created = 0;
  bool no_more_archs = false;
  bool strategy_dirty = false;  // asked or told since the state was last saved
  int64_t next_snapshot = 1;    // results at which the next strategy snapshot is due
  struct PoolSample {
    int workers = 0, slots = 0, busy = 0;
    int64_t queued = 0;
    bool operator==(const PoolSample&) const = default;
  };
  PoolSample last_pool{-1, -1, -1, -1};
  double last_pool_at = 0;
  std::optional<std::pair<PoolSample, double>> skipped_peak;  // and when it was seen
  std::optional<Asha> asha;
  std::unordered_map<uint64_t, int64_t> trial_of;  // arch hash -> its latest trial, for lineage
  // Training states: where they are kept (empty: not kept), the latest epoch
  // kept per trial, and those arriving.
  static constexpr int64_t kMaxStateBytes = int64_t{1} << 30;
  std::filesystem::path states_dir;
  std::map<int64_t, int> state_epoch;
  struct Incoming {
    int attempt = 0, epoch = 0;
    std::string bytes;
  };
  std::map<int64_t, Incoming> incoming;
  bool stopping = false;
  std::deque<Queued> queue;
  // The latency pool: trials waiting to be measured, those being measured,
  // what was measured (merged into the training result), failed measurements.
  std::deque<Queued> measure_queue;
  std::map<int64_t, Flight> measuring;
  std::map<int64_t, Measured> measured;
  std::map<int64_t, int> measure_failures;
  std::deque<std::string> idle;  // workers with free slots and nothing to do
  std::map<int64_t, Flight> flights;
  std::map<int64_t, Gang> gangs;  // trials spread over several workers, by trial
  // Every attempt sent out, with the workers (ROUTER identities) it went to.
  std::map<std::pair<int64_t, int>, std::set<std::string>> ran;
  // After a restart: trials the store shows running, until their worker
  // takes them back (claim) or the grace period ends (expire_unclaimed).
  std::map<int64_t, Unclaimed> unclaimed;
  std::map<int64_t, int> resumed_attempt;  // each trial's attempt when the experiment resumed
  Clock::time_point grace_end;
  std::map<std::string, WorkerState> workers;
  std::set<std::string> deaf;  // peers whose queue was full at the last send
  std::vector<Ack> acks;
  Clock::time_point batch_started, last_heartbeat, last_progress;
  double best_val = -1;
  std::string best_arch;

  ControllerProgress progress(Clock::time_point started) const {
    ControllerProgress p;
    p.done = summary.done;
    p.failed = summary.failed;
    p.pruned = summary.pruned;
    p.running = static_cast<int64_t>(flights.size());
    p.queued = static_cast<int64_t>(queue.size());
    p.workers = static_cast<int>(workers.size());
    for (const auto& [id, w] : workers) p.slots += w.slots;
    for (const auto& [t, f] : flights) p.slots_busy += static_cast<int>(f.slots.size());
    p.slots_busy += static_cast<int>(measuring.size());
    for (const auto& [t, g] : gangs)
      for (const auto& m : g.members) p.slots_busy += static_cast<int>(m.slots.size());
    p.best_val_acc = best_val;
    p.best_arch = best_arch;
    p.elapsed_s = std::chrono::duration<double>(Clock::now() - started).count();
    p.budget_s = config.budget_seconds;
    return p;
  }
  ControllerSummary summary;
};

Controller::Controller(db::Store& store, const Space& space, Strategy& strategy,
                       ExperimentConfig config, ControllerOptions options)
    : Controller(store, space, strategy, config, options, ControllerSocket(options)) {}

Controller::Controller(db::Store& store, const Space& space, Strategy& strategy,
                       ExperimentConfig config, ControllerOptions options, ControllerSocket socket)
    : impl_(std::make_unique<Impl>(store, space, strategy, std::move(config), std::move(options),
                                   std::move(socket))) {}

Controller::~Controller() = default;

ControllerSummary Controller::run() {
  return impl_->run(stop_);
}

std::string Controller::endpoint() const {
  return impl_->endpoint;
}

}  // namespace minas
