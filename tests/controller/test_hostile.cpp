// Hostile peers and hostile restarts: every case of the corpus
// (tests/controller/bad_messages.txt) sent to a running controller gets the
// refusal it names and changes nothing it must not; a refused start leaves no
// store; CURVE clients refused before ZAP are logged; a controller killed
// while its workers hold running attempts and results retrains none of them.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "controller/controller.h"
#include "controller/protocol.h"
#include "db/queries.h"
#include "searchspace/json_read.h"
#include "tests/controller/corpus.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "worker/worker.h"

extern char** environ;

using namespace minas;
using namespace minas::test;
using Clock = std::chrono::steady_clock;

namespace {

// How long a test waits for something that must happen before it calls it a
// hang: a guard only, never a timing assumption.
constexpr auto kHang = std::chrono::seconds(60);

// A controller on a thread of its own for the length of a test case: stopped
// and joined when the case ends, however it ends.
class Running {
 public:
  Running(Search& search, const ExperimentConfig& cfg, const ControllerOptions& opt)
      : controller(search.store, search.space, *search.strategy, cfg, opt),
        thread_([this] { controller.run(); }) {}
  ~Running() { stop(); }
  // Stops the controller and waits for its loop to end (its store closed for writing).
  void stop() {
    controller.request_stop();
    if (thread_.joinable()) thread_.join();
  }
  Controller controller;

 private:
  std::thread thread_;
};

// Log lines from the controller (its loop, its ZAP and monitor threads).
class Log {
 public:
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    };
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return lines_.size();
  }
  bool has(const std::string& part) const {
    for (const auto& l : lines())
      if (contains(l, part)) return true;
    return false;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// Waits for pred (checked again after each short nap) until the hang guard.
template <class F>
bool wait_until(F pred) {
  const auto until = Clock::now() + kHang;
  while (!pred()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A peer that speaks the protocol by hand: a DEALER with the identity it picks.
class Peer {
 public:
  Peer(zmq::context_t& ctx, const std::string& endpoint, const std::string& identity)
      : s_(ctx, zmq::socket_type::dealer) {
    s_.set(zmq::sockopt::routing_id, identity);
    s_.set(zmq::sockopt::linger, 0);
    s_.connect(endpoint);
  }
  void send(const std::string& payload) { s_.send(zmq::buffer(payload), zmq::send_flags::none); }
  void send(proto::Type t, nlohmann::json fields) { send(proto::encode(t, std::move(fields))); }

  // The next answer to something it sent (an error, a welcome, a train):
  // heartbeats pass, acks are kept in `acks`, cancels in `cancels`.
  proto::Message answer() {
    while (true) {
      proto::Message m = next();
      if (m.type == proto::Type::heartbeat) continue;
      if (m.type == proto::Type::ack) {
        acks.push_back(m.as<proto::Ack>());
        continue;
      }
      if (m.type == proto::Type::cancel) {
        ++cancels;
        continue;
      }
      return m;
    }
  }

  // The next ack (what else arrives meanwhile: heartbeats only).
  proto::Ack ack() {
    while (true) {
      proto::Message m = next();
      if (m.type == proto::Type::ack) return m.as<proto::Ack>();
      REQUIRE_MESSAGE(m.type == proto::Type::heartbeat, "unexpected " << proto::type_name(m.type));
    }
  }

  proto::Message next() {
    const auto until = Clock::now() + kHang;
    while (true) {
      zmq::pollitem_t items[] = {{s_.handle(), 0, ZMQ_POLLIN, 0}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      REQUIRE_MESSAGE(left.count() > 0, "no answer from the controller");
      zmq::poll(items, 1, left);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t m;
      REQUIRE(s_.recv(m, zmq::recv_flags::none));
      return proto::parse(m.to_string());  // what the controller sends parses
    }
  }

  std::vector<proto::Ack> acks;
  int cancels = 0;

 private:
  zmq::socket_t s_;
};

nlohmann::json hello(const std::string& name) {
  return {{"name", name},
          {"host", "h"},
          {"pid", 1},
          {"minas", "0.1.0"},
          {"slots", nlohmann::json::array({{{"id", "cpu"}}})}};
}

// The hostile worker: registered as "mallory" with one slot, "cpu", on which
// it runs one attempt of its own (so that it has something to be owner of).
struct Mallory {
  Peer peer;
  int64_t trial = 0;
  int attempt = 0;

  void registers() {
    peer.send(proto::Type::hello, hello("mallory"));
    const proto::Message m = peer.answer();
    REQUIRE(m.type == proto::Type::welcome);
  }
  // After a case that may have ended its attempt: a ready for its slot gets
  // a new train, or is refused because the slot still runs its attempt.
  void owns_one() {
    peer.send(proto::Type::ready, {{"slot", "cpu"}});
    const proto::Message m = peer.answer();
    if (m.type == proto::Type::train) {
      trial = m.as<proto::Train>().trial;
      attempt = m.as<proto::Train>().attempt;
      return;
    }
    REQUIRE(m.type == proto::Type::error);
    CHECK(m.as<proto::Refusal>().code == "not_allowed");
    CHECK(contains(m.as<proto::Refusal>().message, "runs trial " + std::to_string(trial)));
  }
};

bool printable_line(const std::string& line) {
  for (unsigned char c : line)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

int64_t query_int(db::Connection& c, const std::string& sql) {
  db::Statement s = c.prepare(sql);
  REQUIRE(s.step());
  return s.is_null(0) ? -1 : s.column_int64(0);
}

std::string query_text(db::Connection& c, const std::string& sql) {
  db::Statement s = c.prepare(sql);
  REQUIRE(s.step());
  return s.is_null(0) ? std::string() : s.column_text(0);
}

}  // namespace

TEST_CASE(
    "hostile: every corpus case sent to a running controller gets its answer, and it goes on") {
  Search search("hostile", "hostile", 5);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 1000000;  // never reached: the test stops it
  ControllerOptions opt = Search::options();
  opt.heartbeat_ms = 200;
  opt.liveness = 1000;  // nobody is judged lost by silence while the cases run
  Log log;
  opt.log = log.sink();
  Running running_controller(search, cfg, opt);
  Controller& controller = running_controller.controller;
  const std::string endpoint = controller.endpoint();
  zmq::context_t ctx;

  // An honest worker runs a trial the hostile one will try to take over.
  Peer honest(ctx, endpoint, "honest");
  honest.send(proto::Type::hello, hello("honest"));
  REQUIRE(honest.answer().type == proto::Type::welcome);
  honest.send(proto::Type::ready, {{"slot", "cpu"}});
  const proto::Message given = honest.answer();
  REQUIRE(given.type == proto::Type::train);
  const proto::Train foreign = given.as<proto::Train>();

  Mallory x{Peer(ctx, endpoint, "mallory")};
  x.registers();
  x.owns_one();
  REQUIRE(x.trial != 0);
  REQUIRE(x.trial != foreign.trial);

  std::map<std::string, int> by_code;
  int n = 0;
  for (const CorpusCase& c : read_corpus()) {
    CAPTURE(c.line);
    CAPTURE(c.name);
    ++by_code[c.code];
    const std::map<std::string, std::string> vars = {
        {"OWN_TRIAL", std::to_string(x.trial)},
        {"OWN_ATTEMPT", std::to_string(x.attempt)},
        {"OWN_NEXT_ATTEMPT", std::to_string(x.attempt + 1)},
        {"FOREIGN_TRIAL", std::to_string(foreign.trial)},
        {"FOREIGN_ATTEMPT", std::to_string(foreign.attempt)},
        {"HONEST_NAME", "\"honest\""},
        {"PID", "4242"}};
    const std::string payload = expand(c.payload, vars);
    // `unexpected` cases come from a peer that never said hello.
    const bool stranger = c.code == "unexpected";
    std::unique_ptr<Peer> other;
    if (stranger) other = std::make_unique<Peer>(ctx, endpoint, "stranger-" + std::to_string(n));
    Peer& p = stranger ? *other : x.peer;
    p.send(payload);
    // Then a legitimate request with a known answer: the controller still
    // serves, and what came before it was the case's answer.
    p.send(proto::Type::fetch,
           {{"name", "probe"}, {"fingerprint", "probe-" + std::to_string(n++)}});
    const bool answered = c.code != "accepted";
    std::vector<proto::Message> got;
    for (int k = 0; k <= static_cast<int>(answered); ++k) got.push_back(p.answer());
    const proto::Message& probe = got.back();
    REQUIRE(probe.type == proto::Type::error);
    REQUIRE(probe.as<proto::Refusal>().in_reply_to == "fetch");
    if (answered) {
      const proto::Message& a = got.front();
      if (c.code == "welcome") {
        CHECK(a.type == proto::Type::welcome);
      } else {
        REQUIRE(a.type == proto::Type::error);
        CHECK(a.as<proto::Refusal>().code == c.code);
        CHECK(a.as<proto::Refusal>().message.size() <= 2100);
      }
    }
    const std::string& probe_code = probe.as<proto::Refusal>().code;
    if (stranger) {
      CHECK(probe_code == "unexpected");
      continue;
    }
    if (answered && c.code != "welcome") CHECK(probe_code == "not_allowed");  // still registered
    // A bye unregisters it, a welcome case registers it under another name.
    if (probe_code == "unexpected" || c.code == "welcome") x.registers();
    if (!answered || c.code == "welcome") x.owns_one();
  }
  MESSAGE(n << " cases sent: " << [&] {
    std::string s;
    for (const auto& [code, k] : by_code) s += code + " " + std::to_string(k) + ", ";
    return s;
  }());
  CHECK(n >= 130);

  // A one-slot worker asking for 20 slots it never declared gets none of them.
  for (int i = 1; i <= 20; ++i)
    x.peer.send(proto::Type::ready, {{"slot", "cpu." + std::to_string(i)}});
  for (int i = 1; i <= 20; ++i) {
    const proto::Message m = x.peer.answer();
    REQUIRE(m.type == proto::Type::error);
    CHECK(m.as<proto::Refusal>().code == "not_allowed");
  }

  // The honest result of the trial everyone tried to take counts.
  honest.send(
      proto::Type::result,
      {{"trial", foreign.trial}, {"attempt", foreign.attempt}, {"metrics", {{"val_acc", 0.5}}}});
  const proto::Ack ack = honest.ack();
  CHECK(ack.trial == foreign.trial);
  CHECK(ack.counted);

  running_controller.stop();

  db::Connection c = db::open_store_readonly(search.path);
  CHECK(query_text(c, "PRAGMA integrity_check") == "ok");
  const std::string t = " WHERE trial_id = " + std::to_string(foreign.trial);
  const std::string row = " FROM trials WHERE id = " + std::to_string(foreign.trial);
  CHECK(query_text(c, "SELECT status" + row) == "done");
  CHECK(query_text(c, "SELECT val_acc" + row) == "0.5");
  CHECK(query_int(c, "SELECT attempt" + row) == foreign.attempt);
  CHECK(query_text(
            c, "SELECT w.name FROM trials t JOIN workers w ON w.id = t.worker_id WHERE t.id = " +
                   std::to_string(foreign.trial)) == "honest");
  CHECK(query_int(c, "SELECT count(*) FROM late_results" + t) == 0);
  CHECK(query_int(c, "SELECT count(*) FROM epochs" + t) == 0);
  // What the store keeps of a peer's words is bounded.
  CHECK(query_int(c, "SELECT max(length(name)) FROM workers") <= 256);
  CHECK(query_int(c, "SELECT max(length(devices) + length(tags)) FROM workers") < 64 * 1024);
  CHECK(query_int(c, "SELECT coalesce(max(length(error)), 0) FROM trials") <= 2100);
  // And every line of the log is one printable line of bounded length.
  const auto lines = log.lines();
  CHECK(lines.size() >= 100);
  for (const auto& l : lines) {
    CAPTURE(l.substr(0, 200));
    CHECK(printable_line(l));
    CHECK(l.size() < 1200);
  }
  CHECK(log.has("refused a result from worker mallory: not_allowed"));
}

TEST_CASE(
    "hostile: a peer that floods the controller and never reads, or sends 16 MiB, cannot stall "
    "it") {
  Search search("hostile-flood", "flood", 6);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 1000000;
  ControllerOptions opt = Search::options();
  Log log;
  opt.log = log.sink();
  Running running_controller(search, cfg, opt);
  Controller& controller = running_controller.controller;
  zmq::context_t ctx;
  zmq::socket_t flood(ctx, zmq::socket_type::dealer);
  flood.set(zmq::sockopt::linger, 0);
  flood.set(zmq::sockopt::rcvhwm, 1);
  flood.connect(controller.endpoint());
  // More errors than the socket buffers between them hold (the flooder's
  // queue holds one), sent as fast as the controller takes them.
  int sent = 0;
  const auto until = Clock::now() + kHang;
  while (sent < 300000 && Clock::now() < until) {
    if (flood.send(zmq::str_buffer("{"), zmq::send_flags::dontwait))
      ++sent;
    else
      std::this_thread::yield();
  }
  // A frame beyond what is read at all (libzmq drops its connection unread).
  zmq::socket_t huge(ctx, zmq::socket_type::dealer);
  huge.set(zmq::sockopt::linger, 0);
  REQUIRE(zmq_socket_monitor(huge.handle(), "inproc://huge", ZMQ_EVENT_DISCONNECTED) == 0);
  zmq::socket_t events(ctx, zmq::socket_type::pair);
  events.set(zmq::sockopt::linger, 0);
  events.connect("inproc://huge");
  huge.connect(controller.endpoint());
  const std::string blob(proto::kMaxFrameBytes + 1, '[');
  (void)huge.send(zmq::buffer(blob), zmq::send_flags::dontwait);
  zmq::pollitem_t dropped[] = {{events.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(dropped, 1, std::chrono::duration_cast<std::chrono::milliseconds>(kHang));
  CHECK((dropped[0].revents & ZMQ_POLLIN));  // the controller closed that connection
  // Every one of the flood is refused (one log line each) with an error it
  // never reads, and someone else is still served after.
  CHECK(wait_until([&] { return log.size() >= static_cast<size_t>(sent); }));
  Peer next(ctx, controller.endpoint(), "next");
  next.send(proto::Type::hello, hello("next"));
  CHECK(next.answer().type == proto::Type::welcome);
  MESSAGE(sent << " malformed messages sent unread");
  CHECK(wait_until([&] { return log.has("does not read what it is sent"); }));
}

TEST_CASE("hostile: a controller start refused for its address or settings leaves no store") {
  const TempDir dir("hostile-start");
  zmq::context_t ctx;
  zmq::socket_t holder(ctx, zmq::socket_type::router);
  holder.set(zmq::sockopt::linger, 0);
  holder.bind("tcp://127.0.0.1:*");
  const std::string busy = holder.get(zmq::sockopt::last_endpoint);
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"--bind " + busy, "Address already in use"},
      {"--bind tcp://127.0.0.1:notaport", "cannot bind"},
      {"--bind tcp://0.0.0.0:5555", "needs CURVE"},
      {"--heartbeat-ms 0", "heartbeat"},
      {"--liveness 0", "liveness"},
      {"--max-attempts 0", "max"},
      {"--fidelity -3", "fidelity"},
      {"--seconds -5", "seconds"}};
  for (const auto& [flags, why] : refused) {
    CAPTURE(flags);
    const std::string store = dir.file("s.db");
    const Run r = run_minas("controller --name x --data simulated --db " + store + " " + flags);
    CHECK(r.status != 0);
    CHECK_MESSAGE(contains(r.out, why), r.out);
    CHECK_FALSE(std::filesystem::exists(store));
    CHECK_FALSE(std::filesystem::exists(store + "-wal"));
  }
  // The library refuses them as well, whoever calls it.
  ControllerOptions o;
  o.bind = "tcp://127.0.0.1:*";
  ExperimentConfig cfg;
  cfg.name = "x";
  auto refused_by = [&](auto change, const std::string& what) {
    ControllerOptions oo = o;
    ExperimentConfig cc = cfg;
    change(oo, cc);
    CHECK(contains(error_of([&] { check_controller_settings(cc, oo); }).what(), what));
  };
  refused_by([](auto& oo, auto&) { oo.heartbeat_ms = 0; }, "heartbeat_ms");
  refused_by([](auto& oo, auto&) { oo.heartbeat_ms = -5; }, "heartbeat_ms");
  refused_by([](auto& oo, auto&) { oo.liveness = 0; }, "liveness");
  refused_by([](auto& oo, auto&) { oo.max_attempts = 0; }, "max_attempts");
  refused_by([](auto& oo, auto&) { oo.commit_ms = 0; }, "commit_ms");
  refused_by([](auto&, auto& cc) { cc.fidelity = -3; }, "fidelity");
  refused_by([](auto&, auto& cc) { cc.budget_seconds = -5; }, "budget_seconds");
  refused_by([](auto&, auto& cc) { cc.budget_trials = -1; }, "budget_trials");
  refused_by([](auto&, auto& cc) { cc.gpus_per_trial = 0; }, "gpus_per_trial");
  CHECK_NOTHROW(check_controller_settings(cfg, o));
  ControllerOptions bad = o;
  bad.heartbeat_ms = 0;
  CHECK_THROWS_AS(ControllerSocket{bad}, Error);
}

TEST_CASE("hostile: CURVE clients refused before ZAP (no key, another server key) are logged") {
  const auth::KeyPair server = auth::generate_keypair(), worker = auth::generate_keypair();
  ControllerOptions opt;
  opt.bind = "tcp://127.0.0.1:*";
  opt.curve_key = server;
  opt.allowed_workers = {worker.public_key};
  Log log;
  opt.log = log.sink();
  ControllerSocket socket(opt);

  zmq::context_t ctx;
  zmq::socket_t plain(ctx, zmq::socket_type::dealer);
  plain.set(zmq::sockopt::linger, 0);
  plain.connect(socket.endpoint());
  (void)plain.send(zmq::str_buffer("no keys"), zmq::send_flags::dontwait);
  CHECK(wait_until([&] { return log.has("offered no CURVE key"); }));

  zmq::socket_t misled(ctx, zmq::socket_type::dealer);
  misled.set(zmq::sockopt::linger, 0);
  auth::make_curve_client(misled, worker, auth::generate_keypair().public_key);
  misled.connect(socket.endpoint());
  (void)misled.send(zmq::str_buffer("wrong server"), zmq::send_flags::dontwait);
  CHECK(wait_until([&] { return log.has("expects another server key"); }));
  for (const auto& l : log.lines()) {
    CAPTURE(l);
    CHECK(contains(l, "refused a worker from 127.0.0.1:") !=
          contains(l, "an address already gone"));
  }
}

namespace {

// Starts the minas binary with args, its output appended to `log`.
pid_t spawn_minas(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = minas::test::spawn_logged(MINAS_BINARY, args, log);
  REQUIRE(pid > 0);
  return pid;
}

// The exit status of a process, or -1 (killed) if it had not ended by the hang guard.
int wait_exit(pid_t pid) {
  int status = 0;
  if (!wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; })) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int count_of(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// Holds its first attempt until open() (or a cancel), answers the others at
// once, and counts the attempts of each trial it ran.
class GatedRunner final : public TrialRunner {
 public:
  bool needs_data() const override { return false; }
  TrialOutcome run(const TrialRequest& req, const std::function<void(int, const nlohmann::json&)>&,
                   const std::function<bool()>& cancelled) override {
    std::unique_lock lock(mu_);
    ++runs_[req.trial];
    const bool held = !holding_;
    holding_ = true;
    while (held && !open_ && !cancelled()) cv_.wait_for(lock, std::chrono::milliseconds(5));
    TrialOutcome out;
    if (held && !open_) {
      out.kind = TrialOutcome::Kind::cancelled;
      return out;
    }
    out.kind = TrialOutcome::Kind::done;
    out.metrics = {{"val_acc", 0.5}, {"train_seconds", 0.0}};
    return out;
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool holding() {
    std::lock_guard lock(mu_);
    return holding_;
  }
  std::map<int64_t, int> runs() {
    std::lock_guard lock(mu_);
    return runs_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool holding_ = false, open_ = false;
  std::map<int64_t, int> runs_;
};

}  // namespace

TEST_CASE("hostile: a controller killed while workers hold attempts and results retrains none") {
  const TempDir dir("hostile-resume");
  const std::string store = dir.file("s.db"), endpoint_file = dir.file("endpoint"),
                    log_a = dir.file("a.log"), log_b = dir.file("b.log");
  constexpr int kTrials = 6;
  auto controller_args = [&](const std::string& bind) {
    return std::vector<std::string>{"controller",
                                    "--name",
                                    "resume",
                                    "--data",
                                    "simulated",
                                    "--db",
                                    store,
                                    "--bind",
                                    bind,
                                    "--endpoint-file",
                                    endpoint_file,
                                    "--trials",
                                    std::to_string(kTrials),
                                    "--heartbeat-ms",
                                    "100",
                                    "--liveness",
                                    "50"};
  };
  const pid_t a = spawn_minas(controller_args("tcp://127.0.0.1:*"), log_a);
  REQUIRE(wait_until([&] { return std::filesystem::exists(endpoint_file); }));
  std::string endpoint = read_file(endpoint_file);
  endpoint.erase(endpoint.find_last_not_of(" \n") + 1);

  // Two workers, each holding its first attempt.
  auto r1 = std::make_shared<GatedRunner>(), r2 = std::make_shared<GatedRunner>();
  Log w1_log, w2_log;
  WorkerOptions o1 = worker_options(endpoint, "w1", r1, 1),
                o2 = worker_options(endpoint, "w2", r2, 1);
  o1.log = w1_log.sink();
  o2.log = w2_log.sink();
  o1.max_backoff_s = o2.max_backoff_s = 0.2;
  Worker w1(o1), w2(o2);
  std::thread t1([&] { w1.run(); }), t2([&] { w2.run(); });
  struct Stop {
    Worker &w1, &w2;
    std::thread &t1, &t2;
    ~Stop() {
      w1.request_stop();
      w2.request_stop();
      if (t1.joinable()) t1.join();
      if (t2.joinable()) t2.join();
    }
  } stop{w1, w2, t1, t2};
  REQUIRE(wait_until([&] { return r1->holding() && r2->holding(); }));
  // Both attempts durable as running, then the controller dies without a word.
  REQUIRE(wait_until([&] {
    db::Connection c = db::open_store_readonly(store);
    return query_int(c, "SELECT count(*) FROM trials WHERE status = 'running'") == 2;
  }));
  kill(a, SIGKILL);
  REQUIRE(wait_exit(a) == -1);

  // w1 finishes while no controller runs: it holds the result; w2 goes on.
  r1->open();
  const pid_t b = spawn_minas(controller_args(endpoint), log_b);
  // w2 reports its running attempt in a heartbeat and takes it back; then it finishes.
  REQUIRE(wait_until([&] { return count_of(read_file(log_b), "worker w2 took back trial") == 1; }));
  r2->open();
  CHECK(wait_exit(b) == 0);
  t1.join();
  t2.join();

  const std::string out = read_file(log_b);
  CAPTURE(out);
  CHECK(count_of(out, "took back trial") == 2);
  CHECK(count_of(out, "not taken back") == 0);
  db::Connection c = db::open_store_readonly(store);
  CHECK(query_text(c, "PRAGMA integrity_check") == "ok");
  CHECK(query_int(c, "SELECT count(*) FROM trials") == kTrials);
  CHECK(query_int(c, "SELECT count(*) FROM trials WHERE status = 'done'") == kTrials);
  CHECK(query_int(c, "SELECT count(DISTINCT arch_key) FROM trials") == kTrials);
  CHECK(query_int(c, "SELECT max(attempt) FROM trials") == 0);  // nothing ran twice
  CHECK(query_int(c, "SELECT count(*) FROM late_results") == 0);
  std::map<int64_t, int> runs = r1->runs();
  for (const auto& [trial, n] : r2->runs()) runs[trial] += n;
  CHECK(runs.size() == static_cast<size_t>(kTrials));
  for (const auto& [trial, n] : runs) {
    CAPTURE(trial);
    CHECK(n == 1);
  }
  // Each worker was welcomed once per controller, not once per message it had queued.
  for (const Log* log : {&w1_log, &w2_log}) {
    int welcomes = 0;
    for (const auto& l : log->lines()) welcomes += contains(l, "connected to ");
    CHECK(welcomes == 2);
  }
}

TEST_CASE("hostile: a late result sent again adds no second late_results row") {
  const TempDir dir("hostile-late");
  db::Store store = db::Store::open(dir.file("s.db"));
  db::ExperimentSpec spec;
  spec.name = "late";
  spec.space = "small";
  spec.space_json = {{"kind", "cell"}};
  spec.dataset = "simulated";
  spec.strategy = "random";
  spec.strategy_settings = {{"seed", 0}};
  spec.recipe = nlohmann::json::object();
  spec.objective = "val_acc";
  const int64_t e = store.create_experiment(spec, 1.0);
  const int64_t w = store.upsert_worker("w", "h", nlohmann::json::array(), 1.0);
  db::Writer writer(store);
  db::NewTrial t;
  t.experiment_id = e;
  t.arch_key = "a";
  t.arch_hash = 1;
  t.arch_json = "{}";
  const int64_t id = writer.add_trial(t);
  writer.start_trial(id, 0, w, "cpu", 2.0);
  CHECK(writer.requeue(id, 1, 3.0));
  writer.start_trial(id, 1, w, "cpu", 4.0);
  db::TrialResult late;
  late.trial_id = id;
  late.attempt = 0;
  late.val_acc = 0.7;
  late.worker_id = w;
  for (int i = 0; i < 5; ++i) CHECK_FALSE(writer.record_result(late));  // resent at each reconnect
  db::TrialResult counted = late;
  counted.attempt = 1;
  counted.val_acc = 0.8;
  CHECK(writer.record_result(counted));
  for (int i = 0; i < 3; ++i) CHECK_FALSE(writer.record_result(counted));  // its ack was lost
  db::TrialResult other = counted;
  other.val_acc = 0.9;  // the same attempt with another value is kept for the record
  CHECK_FALSE(writer.record_result(other));
  writer.commit();
  db::Connection& c = store.connection();
  CHECK(query_int(c, "SELECT count(*) FROM late_results") == 2);
  CHECK(query_int(c, "SELECT count(*) FROM late_results WHERE attempt = 0 AND val_acc = 0.7") == 1);
  CHECK(query_int(c, "SELECT count(*) FROM late_results WHERE attempt = 1 AND val_acc = 0.9") == 1);
}

TEST_CASE("hostile: a worker refuses a garbled controller's messages and goes on") {
  // A fake controller: a ROUTER this test drives by hand.
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  auto runner = std::shared_ptr<TrialRunner>(make_instant_runner());
  WorkerOptions o = worker_options(endpoint, "target", runner, 1);
  o.heartbeat_ms = 1000;
  o.liveness = 600;  // it never takes the fake controller for lost while the cases run
  Log log;
  o.log = log.sink();
  Worker worker(o);
  std::atomic<bool> returned{false};
  std::thread tw([&] {
    worker.run();
    returned = true;
  });
  struct Stop {
    Worker& w;
    std::thread& t;
    ~Stop() {
      w.request_stop();
      if (t.joinable()) t.join();
    }
  } stop{worker, tw};

  std::string identity;
  // The next message from the worker other than a heartbeat.
  auto from_worker = [&]() -> proto::Message {
    const auto until = Clock::now() + kHang;
    while (true) {
      zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      REQUIRE_MESSAGE(left.count() > 0, "no word from the worker");
      zmq::poll(items, 1, left);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t id, payload;
      REQUIRE(router.recv(id, zmq::recv_flags::none));
      REQUIRE(router.recv(payload, zmq::recv_flags::none));
      identity = id.to_string();
      proto::Message m = proto::parse(payload.to_string());
      if (m.type != proto::Type::heartbeat) return m;
    }
  };
  auto to_worker = [&](const std::string& payload) {
    router.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    router.send(zmq::buffer(payload), zmq::send_flags::none);
  };
  REQUIRE(from_worker().type == proto::Type::hello);

  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string train =
      R"({"v":1,"type":"train","trial":1,"attempt":0,"space_id":"s","arch":"a","recipe":{},)"
      R"("fidelity":1,)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"malformed", "{"},
      {"malformed", "$HEX(ff)"},
      {"too_large", std::string(2 << 20, ' ')},
      {"bad_field", R"({"v":1,"type":"welcome","worker_id":1,"heartbeat_ms":0,"liveness":5})"},
      {"bad_field", R"({"v":1,"type":"welcome","worker_id":1,"heartbeat_ms":100,"liveness":-1})"},
      {"too_large", train + R"("slots":)" + deep + R"(,"data":{}})"},
      {"bad_field", train + R"("slots":["cpu"],"data":{"name":5}})"},
      {"bad_field", train + R"("slots":["cpu"],"data":{"evil":"x"}})"},
      {"bad_field", train + R"("slots":["cpu"],"data":{},"gang":{"world":2,"first_rank":5}})"},
      {"bad_field", train + R"("slots":[],"data":{}})"},
      {"bad_field", R"({"v":1,"type":"cancel","trial":"x","attempt":0})"},
      {"bad_field",
       R"({"v":1,"type":"data","fingerprint":"f","name":"d","file":"x","offset":-1,"size":1,"bytes":"YQ==","last":true})"},
      {"bad_field", R"({"v":1,"type":"ack","trial":1,"attempt":4294967296,"counted":true})"},
      {"not_allowed", proto::encode(proto::Type::hello, hello("x"))},
      {"not_allowed", proto::encode(proto::Type::ready, {{"slot", "cpu"}})},
      {"accepted",
       R"({"v":1,"type":"checkpoint","trial":9,"attempt":0,"epoch":1,"offset":0,"size":1,"bytes":"!!","last":true})"},
      {"accepted", R"({"v":1,"type":"error","code":"x","message":"\u001b[31mred\nFAKE LINE"})"},
      {"accepted", R"({"v":1,"type":"cancel","trial":12345,"attempt":0,"reason":"\r\n"})"},
  };
  int n = 0;
  for (const auto& [code, raw] : cases) {
    CAPTURE(n);
    CAPTURE(code);
    to_worker(expand(raw, {}));
    to_worker("probe " +
              std::to_string(n++));  // answered with malformed: what came before was the case's
    if (code != "accepted") {
      const proto::Message a = from_worker();
      REQUIRE(a.type == proto::Type::error);
      CHECK(a.as<proto::Refusal>().code == code);
    }
    const proto::Message probe = from_worker();
    REQUIRE(probe.type == proto::Type::error);
    CHECK(probe.as<proto::Refusal>().code == "malformed");
  }
  CHECK_FALSE(returned.load());
  for (const auto& l : log.lines()) {
    CAPTURE(l);
    CHECK(printable_line(l));
  }

  // Still a worker: welcomed, it offers its slot, and a train for a slot it
  // does not have is answered with a failure, not a crash.
  to_worker(proto::encode(proto::Type::welcome,
                          {{"worker_id", 1}, {"heartbeat_ms", 1000}, {"liveness", 600}}));
  proto::Message m = from_worker();
  REQUIRE(m.type == proto::Type::ready);
  to_worker(proto::encode(proto::Type::train, {{"trial", 5},
                                               {"attempt", 0},
                                               {"slots", {"cuda:9"}},
                                               {"space_id", "s"},
                                               {"space", {{"k", 1}}},
                                               {"arch", "a"},
                                               {"recipe", nlohmann::json::object()},
                                               {"data", nlohmann::json::object()},
                                               {"fidelity", 1}}));
  m = from_worker();
  REQUIRE(m.type == proto::Type::failure);
  CHECK(contains(m.as<proto::Failure>().reason, "not free here"));
  to_worker(proto::encode(proto::Type::bye, {{"reason", "done"}}));
  CHECK(wait_until([&] { return returned.load(); }));
}

TEST_CASE(
    "hostile: after a restart, a report of an attempt given up before it is let go unstored") {
  Search search("hostile-before", "before", 7);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 1000000;
  ControllerOptions opt = Search::options();
  opt.heartbeat_ms = 200;
  opt.liveness = 1000;
  zmq::context_t ctx;
  proto::Train given;
  {
    // A worker takes a trial; the search stops, giving the attempt back.
    Controller a(search.store, search.space, *search.strategy, cfg, opt);
    std::thread ta([&] { a.run(); });
    Peer w(ctx, a.endpoint(), "w");
    w.send(proto::Type::hello, hello("w"));
    REQUIRE(w.answer().type == proto::Type::welcome);
    w.send(proto::Type::ready, {{"slot", "cpu"}});
    const proto::Message m = w.answer();
    REQUIRE(m.type == proto::Type::train);
    given = m.as<proto::Train>();
    a.request_stop();
    ta.join();
  }
  search.remake();
  Running running_b(search, cfg, opt);
  Controller& b = running_b.controller;
  Peer w(ctx, b.endpoint(), "w");
  w.send(proto::Type::hello, hello("w"));
  REQUIRE(w.answer().type == proto::Type::welcome);
  // Its result of the given-up attempt, held across the restart: let go, not counted.
  w.send(proto::Type::result,
         {{"trial", given.trial}, {"attempt", given.attempt}, {"metrics", {{"val_acc", 0.9}}}});
  const proto::Ack ack = w.ack();
  CHECK(ack.trial == given.trial);
  CHECK_FALSE(ack.counted);
  // An attempt that never existed is still refused.
  w.send(proto::Type::result,
         {{"trial", given.trial}, {"attempt", given.attempt + 5}, {"metrics", {{"val_acc", 0.9}}}});
  const proto::Message m = w.answer();
  REQUIRE(m.type == proto::Type::error);
  CHECK(m.as<proto::Refusal>().code == "not_allowed");
  running_b.stop();
  db::Connection c = db::open_store_readonly(search.path);
  CHECK(query_int(c, "SELECT count(*) FROM late_results") == 0);
  CHECK(query_text(c, "SELECT status FROM trials WHERE id = " + std::to_string(given.trial)) ==
        "queued");
}

TEST_CASE("hostile: heartbeats read in a burst, sent before an attempt arrived, do not lose it") {
  // On a loaded machine the controller may read at once several heartbeats a
  // worker sent before the attempt reached it, long after the attempt was
  // sent. They must not take the attempt back: only heartbeats that leave it
  // out over two intervals of the controller's reading do.
  Search search("stale-beats", "stale-beats", 5);
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 1000000;  // never reached: the test stops it
  ControllerOptions opt = Search::options();
  opt.heartbeat_ms = 1000;  // a burst read within 2 s counts as one look
  opt.liveness = 1000;      // nobody is judged lost by silence here
  Log log;
  opt.log = log.sink();
  Running running_controller(search, cfg, opt);
  Controller& controller = running_controller.controller;
  zmq::context_t ctx;
  Peer w(ctx, controller.endpoint(), "w");
  w.send(proto::Type::hello, hello("w"));
  REQUIRE(w.answer().type == proto::Type::welcome);
  w.send(proto::Type::ready, {{"slot", "cpu"}});
  const proto::Message given = w.answer();
  REQUIRE(given.type == proto::Type::train);
  const proto::Train train = given.as<proto::Train>();
  // Past the grace the controller gives a new attempt (3 heartbeats), then the stale burst.
  std::this_thread::sleep_for(std::chrono::milliseconds(4 * opt.heartbeat_ms));
  const nlohmann::json none = {{"running", nlohmann::json::array()}};
  for (int i = 0; i < 10; ++i) w.send(proto::Type::heartbeat, none);
  w.send(proto::Type::heartbeat,
         {{"running", nlohmann::json::array(
                          {{{"trial", train.trial}, {"attempt", train.attempt}}})}});
  // The slot still runs the attempt: a ready for it is refused.
  w.send(proto::Type::ready, {{"slot", "cpu"}});
  const proto::Message m = w.answer();
  REQUIRE(m.type == proto::Type::error);
  CHECK(m.as<proto::Refusal>().code == "not_allowed");
  CHECK(contains(m.as<proto::Refusal>().message, "runs trial " + std::to_string(train.trial)));
  for (const std::string& l : log.lines()) CHECK_FALSE(contains(l, "no longer runs"));
}
