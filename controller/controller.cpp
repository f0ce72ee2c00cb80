#include "controller/controller.h"

#include <chrono>
#include <climits>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <zmq.hpp>

#include "controller/core.h"
#include "controller/protocol.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas {

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
  check_range("screen", c.screen, 0, 10'000'000, "architectures screened; 0: off");
  check_range("screen_batch", c.screen_batch, 1, static_cast<int64_t>(proto::kMaxScreenBatch),
              "architectures per screening request");
  if (c.screen > 0 &&
      (c.screen_evaluator.empty() || c.screen_evaluator.size() > proto::kMaxNameBytes))
    throw Error("controller", "screen_evaluator must name an evaluator (synflow, naswot, ...)");
  if (c.screen_order != "score" && c.screen_order != "front")
    throw Error("controller", "screen_order must be score or front");
  if (!(c.trial_fraction >= 0.01 && c.trial_fraction <= 1))
    throw Error("controller", "trial_fraction must be in [0.01, 1] (the share of a trial's "
                              "steps it trains), got " + std::to_string(c.trial_fraction));
  if (c.trial_fraction < 1) {
    // A trial that stops early has no whole-epoch rungs, no last state to
    // inherit, and a schedule planned from its epochs alone.
    if (c.asha)
      throw Error("controller", "trial_fraction below 1 trains each trial as one short run, "
                                "which has no ASHA rungs (minas search: add --no-asha)");
    if (c.inherit)
      throw Error("controller", "trial_fraction below 1 and inherit: a short run leaves no "
                                "epoch's state to inherit");
    const auto& r = c.recipe;
    if (final_epoch(c) < 1 || (r.contains("time_budget_s") && r["time_budget_s"].is_number() &&
                               r["time_budget_s"].get<double>() > 0))
      throw Error("controller", "trial_fraction below 1 needs a number of epochs per trial "
                                "(fidelity, or the recipe's epochs) and a recipe without a "
                                "time budget");
  }
  if (!(c.budget_seconds >= 0) || !std::isfinite(c.budget_seconds))
    throw Error("controller",
                "budget_seconds must be 0 (none) or a positive number of seconds, got " +
                    std::to_string(c.budget_seconds));
}

int final_epoch(const ExperimentConfig& c) {
  if (c.fidelity > 0) return c.fidelity;
  const auto& r = c.recipe;
  const bool timed = r.contains("time_budget_s") && r["time_budget_s"].is_number() &&
                     r["time_budget_s"].get<double>() > 0;
  if (timed || !r.contains("epochs") || !r["epochs"].is_number_integer()) return 0;
  return r["epochs"].get<int>();
}

void check_inherit(const ExperimentConfig& c, const Strategy& strategy) {
  if (!c.inherit) return;
  if (!strategy.possible_parents())
    throw Error("inherit", "needs a strategy whose candidates have parents (evolution), not '" +
                               strategy.name() + "'");
  if (final_epoch(c) < 1)
    throw Error("inherit",
                "needs a fixed number of epochs per trial, whose last state children inherit: "
                "give fidelity (or the recipe's epochs, without a time budget)");
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

// The loop: it waits on the socket, hands each message to the part of the
// controller it concerns (controller/core.h lists them), and between
// messages commits results, sends acknowledgements and heartbeats, finds the
// silent workers, samples the pool and reports progress.
struct Controller::Impl {
  Impl(db::Store& st, const Space& sp, Strategy& sg, ExperimentConfig c, ControllerOptions o,
       ControllerSocket sock)
      : net(std::move(sock.state_)),
        socket(net->socket),
        endpoint(net->endpoint),
        core(st, sp, sg, std::move(c), std::move(o), net->socket) {}

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
      loop::WorkerState* w = core.sessions.find(worker);
      if (!w && m.type != proto::Type::hello)
        throw proto::ProtocolError("unexpected", "say hello first");
      if (w) w->last_heard = loop::Clock::now();
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
    core.log("refused " +
             (type ? std::string("a ") + proto::type_name(*type) : std::string("a message")) +
             " from " + core.sessions.label(worker) + ": " + e.code() + ": " +
             printable_excerpt(e.reason(), 300));
    core.sessions.send(worker, proto::error_reply(e, type));
  }

  void handle(const std::string& worker, const proto::Message& m) {
    switch (m.type) {
      case proto::Type::hello:
        core.screening.lost(worker);  // a process come again: what it screened is not coming
        return core.sessions.on_hello(worker, m.as<proto::Hello>());
      case proto::Type::ready:
        return core.dispatch.on_ready(worker, m.as<proto::Ready>().slot);
      case proto::Type::progress:
        return core.reports.on_progress(worker, m.as<proto::Progress>());
      case proto::Type::result:
        return core.reports.on_result(worker, m.as<proto::Result>());
      case proto::Type::failure:
        return core.reports.on_failure(worker, m.as<proto::Failure>());
      case proto::Type::heartbeat:
        return core.reports.on_heartbeat(worker, m.as<proto::Heartbeat>());
      case proto::Type::bye:
        return on_bye(worker, m.as<proto::Bye>());
      case proto::Type::error: {
        const auto& r = m.as<proto::Refusal>();
        core.log(core.sessions.label(worker) + " refused our " +
                 (r.in_reply_to.empty() ? "message" : printable_excerpt(r.in_reply_to, 40)) + ": " +
                 printable_excerpt(r.code, 40) + ": " + printable_excerpt(r.message, 200));
        return;
      }
      case proto::Type::fetch:
        return core.data.on_fetch(worker, m.as<proto::Fetch>());
      case proto::Type::checkpoint: {
        // The state after the last epoch is a possible parent's; earlier ones are rungs.
        const auto& c = m.as<proto::Checkpoint>();
        if (core.parents.kept() && c.epoch == core.final_epoch())
          return core.parents.on_checkpoint(worker, c);
        return core.states.on_checkpoint(worker, c);
      }
      case proto::Type::rendezvous:
        return core.gangs.on_rendezvous(worker, m.as<proto::Rendezvous>());
      case proto::Type::screen_result:
        return core.screening.on_result(worker, m.as<proto::ScreenResult>());
      default:
        throw proto::ProtocolError(
            "not_allowed", std::string("a worker does not send ") + proto::type_name(m.type));
    }
  }

  void on_bye(const std::string& worker, const proto::Bye& bye) {
    core.log(core.sessions.label(worker) +
             " left: " + (bye.reason.empty() ? "no reason" : printable_excerpt(bye.reason, 200)));
    core.reports.requeue_all(worker, "worker left");
    core.screening.lost(worker);
    core.sessions.account(worker);
    core.sessions.forget(worker);
  }

  // ------------------------------------------------------------ between messages

  void commit_if_due(bool force) {
    db::Writer& writer = core.writer;
    if (writer.pending() == 0) {
      // Nothing written since the last commit: these acks stored nothing (a
      // stale report), and go at once.
      send_acks();
      return;
    }
    const auto now = loop::Clock::now();
    if (!force && writer.pending() < core.opt.commit_every &&
        now - batch_started < std::chrono::milliseconds(core.opt.commit_ms))
      return;
    if (core.strategy_dirty) {
      // Joins the batch: the state lands with exactly the trials and results that changed it.
      core.store.save_strategy_state(core.experiment, core.strategy.save(), loop::unix_now());
      core.strategy_dirty = false;
    }
    writer.commit();
    send_acks();
  }

  void send_acks() {
    for (const loop::Ack& a : core.acks)
      core.sessions.send(a.worker, proto::encode(proto::Type::ack, {{"trial", a.trial},
                                                                    {"attempt", a.attempt},
                                                                    {"counted", a.counted}}));
    core.acks.clear();
    core.screening.send_acks();
  }

  void check_liveness() {
    const auto now = loop::Clock::now();
    core.sessions.heartbeat_if_due(now);
    for (const std::string& worker : core.sessions.silent(now)) {
      core.log(core.sessions.label(worker) + " went silent: its trials go back to the queue");
      core.reports.requeue_all(worker, "worker lost (no heartbeat)");
      core.screening.lost(worker);
      core.sessions.forget(worker);
    }
  }

  void cancel(const std::string& worker, int64_t trial, int attempt, const std::string& why) {
    core.sessions.send(worker,
                       proto::encode(proto::Type::cancel,
                                     {{"trial", trial}, {"attempt", attempt}, {"reason", why}}));
  }

  void begin_stop(const std::string& why) {
    if (core.stopping) return;
    core.stopping = true;
    core.summary.stopped = true;
    core.log("stopping: " + why);
    const TrialBook& book = core.book;
    for (int64_t trial : book.in_flight()) {
      const Trial& t = book.at(trial);
      cancel(t.worker, trial, t.attempt, why);
    }
    for (int64_t trial : book.in_flight()) {
      const Trial& t = book.at(trial);
      for (const auto& p : t.gang) cancel(p.worker, trial, t.attempt, why);
    }
    for (int64_t trial : book.measuring()) {
      const Trial& t = book.at(trial);
      cancel(t.worker, trial, t.attempt, why);
    }
    for (auto& [identity, w] : core.sessions.all()) core.reports.requeue_all(identity, why);
    core.resume.expire_unclaimed(true);
    core.book.give_back_queued();  // still queued in the store: run (or measured) on resume
  }

  bool finished() const {
    const TrialBook& book = core.book;
    return book.in_flight().empty() && book.queued() == 0 && book.measuring().empty() &&
           book.measure_queued() == 0 && book.unclaimed() == 0 &&
           (core.stopping || !core.dispatch.asking_allowed());
  }

  ControllerProgress progress(loop::Clock::time_point started) const {
    ControllerProgress p;
    p.done = core.summary.done;
    p.failed = core.summary.failed;
    p.pruned = core.summary.pruned;
    p.screened = static_cast<int64_t>(core.screening.scored());
    p.screen = core.config.screen;
    p.running = static_cast<int64_t>(core.book.in_flight().size());
    p.queued = static_cast<int64_t>(core.book.queued());
    p.workers = static_cast<int>(core.sessions.all().size());
    p.slots = core.sessions.slots();
    p.slots_busy = core.book.busy_slots();
    p.best_val_acc = core.best_val;
    p.best_arch = core.best_arch;
    p.elapsed_s = std::chrono::duration<double>(loop::Clock::now() - started).count();
    p.budget_s = core.config.budget_seconds;
    return p;
  }

  // ------------------------------------------------------------ the loop

  ControllerSummary run(std::atomic<bool>& stop) {
    core.resume.open_experiment();
    core.screening.open();
    const auto started = loop::Clock::now();
    batch_started = started;
    core.sessions.start_heartbeats(started);
    while (true) {
      if (stop.load()) begin_stop("stop requested");
      if (!core.summary.error.empty())
        begin_stop("the strategy cannot go on: " + core.summary.error);
      if (core.config.budget_seconds > 0 &&
          loop::Clock::now() - started > std::chrono::duration<double>(core.config.budget_seconds))
        begin_stop("time budget spent");
      core.resume.expire_unclaimed(false);
      if (finished()) break;
      if (!poll()) continue;
      const size_t before = core.writer.pending();
      drain();
      if (before == 0 && core.writer.pending() > 0) batch_started = loop::Clock::now();
      core.dispatch.fill_idle();
      check_liveness();
      pool.sample(false);
      commit_if_due(false);
      if (core.opt.on_progress &&
          loop::Clock::now() - last_progress >= std::chrono::milliseconds(core.opt.progress_ms)) {
        last_progress = loop::Clock::now();
        core.opt.on_progress(progress(started));
      }
    }
    return wind_up(started);
  }

  // Waits for messages up to the next commit or heartbeat; false: a signal
  // woke it (the loop sees the stop flag next).
  bool poll() {
    items[0] = {socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(items, 1,
                std::chrono::milliseconds(std::min(core.opt.commit_ms, core.opt.heartbeat_ms)));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      return false;
    }
    return true;
  }

  // Handles what has arrived, but never starves commits and heartbeats.
  void drain() {
    for (int n = 0; n < 10000 && (items[0].revents & ZMQ_POLLIN); ++n) {
      zmq::message_t id, payload;
      if (!socket.recv(id, zmq::recv_flags::dontwait)) break;
      if (!id.more() || !socket.recv(payload, zmq::recv_flags::dontwait)) continue;
      while (payload.more()) {  // a peer sending extra frames: drop them
        zmq::message_t extra;
        if (!socket.recv(extra, zmq::recv_flags::dontwait)) break;
      }
      on_message(id.to_string(), payload.to_string());
      if (core.writer.pending() >= core.opt.commit_every) break;
    }
  }

  // The search is over: the last results made durable, the run recorded, the workers told.
  ControllerSummary wind_up(loop::Clock::time_point started) {
    ControllerSummary& summary = core.summary;
    if (core.opt.on_progress) core.opt.on_progress(progress(started));
    for (const auto& [identity, w] : core.sessions.all()) core.sessions.account(identity);
    // Every trial has ended, and with it its states: nothing is left to keep.
    if (!summary.stopped) {
      core.states.remove_all();
      core.parents.remove_all();
    }
    core.strategy_dirty = true;
    pool.sample(true);
    commit_if_due(true);
    core.writer.commit();
    summary.rejected = core.strategy.rejected();
    core.store.add_seconds_run(core.experiment,
                               std::chrono::duration<double>(loop::Clock::now() - started).count());
    core.store.set_experiment_status(core.experiment, summary.stopped ? "stopped" : "finished",
                                     loop::unix_now());
    for (const auto& [identity, w] : core.sessions.all())
      core.sessions.send(
          identity,
          proto::encode(proto::Type::bye,
                        {{"reason", summary.stopped ? "search stopped" : "search finished"}}));
    // The goodbyes are queued, not sent: closing with linger 0 could drop
    // them, and a worker that never hears one waits for the controller to
    // come back. Up to a second for them to leave.
    socket.set(zmq::sockopt::linger, 1000);
    return summary;
  }

  std::unique_ptr<ControllerSocket::State> net;
  zmq::socket_t& socket;
  std::string endpoint;
  loop::Core core;
  loop::PoolSamples pool{core};
  zmq::pollitem_t items[1] = {};
  loop::Clock::time_point batch_started, last_progress;
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
