// Screening at the start of a search (controller/screening.h): a controller
// and real workers over loopback score the sampled architectures, the store
// keeps each score once, a worker that dies mid-batch loses nothing, a
// resumed search screens only what the store lacks, and the strategy starts
// from the best screened architectures.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "controller/controller.h"
#include "controller/protocol.h"
#include "controller/screening.h"
#include "db/queries.h"
#include "searchspace/rng.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "tests/wait.h"
#include "worker/screener.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

namespace {

// Log lines of a controller, readable while it runs.
class Lines {
 public:
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    };
  }
  bool has(const std::string& part) const {
    std::lock_guard lock(mu_);
    for (const auto& l : lines_)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }
  std::string all() const {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// The proxies' screener, counting the architectures it is asked to score;
// `after` (if set) runs after each request with the count so far.
class CountingScreener final : public Screener {
 public:
  explicit CountingScreener(std::function<void(size_t)> after = nullptr)
      : inner_(make_proxy_screener()), after_(std::move(after)) {}
  std::vector<ScreenedScores> screen(const ScreenRequest& req,
                                     const std::function<bool()>& cancelled) override {
    auto out = inner_->screen(req, cancelled);
    const size_t n = archs += req.archs.size();
    if (after_) after_(n);
    return out;
  }
  std::atomic<size_t> archs{0};

 private:
  std::unique_ptr<Screener> inner_;
  std::function<void(size_t)> after_;
};

// A search of the `small` space (Fashion-MNIST's shapes; synflow needs no
// images), trials answered at once by the instant runner.
struct ScreenSearch : Search {
  ScreenSearch(const std::string& tag, const std::string& experiment)
      : Search(tag, experiment, 5, "evolution") {
    space = Space::load("small");
    settings.population = 4;
    remake();
  }
  ExperimentConfig screening(int64_t n, int batch, int64_t trials) const {
    ExperimentConfig c = config();
    c.screen = n;
    c.screen_batch = batch;
    c.budget_trials = trials;
    return c;
  }
  // Read through a connection of its own: the controller may be writing.
  std::vector<db::ScreeningRow> rows(const std::string& evaluator = "synflow") {
    db::Connection c = db::open_store_readonly(path);
    return db::screening_scores(c, db::find_experiment_id(c, name), evaluator);
  }
  std::vector<std::string> trial_archs() {
    db::Connection c = db::open_store_readonly(path);
    db::Statement s = c.prepare("SELECT arch_key FROM trials ORDER BY number");
    std::vector<std::string> keys;
    while (s.step()) keys.push_back(s.column_text(0));
    return keys;
  }
};

WorkerOptions screening_worker(const std::string& endpoint, const std::string& name,
                               std::shared_ptr<Screener> screener = nullptr) {
  WorkerOptions w =
      worker_options(endpoint, name, std::shared_ptr<TrialRunner>(make_instant_runner()), 1);
  w.screener = std::move(screener);
  return w;
}

// Runs the controller to its end with the given workers (stopped after it).
ControllerSummary run_with(
    ScreenSearch& search, const ExperimentConfig& cfg, Lines& log,
    const std::function<std::vector<WorkerOptions>(const std::string&)>& make,
    std::atomic<Controller*>* out = nullptr) {
  ControllerOptions opt = Search::options();
  opt.log = log.sink();
  return run_workers(search, cfg, make, opt, out);
}

// Every row scored, each architecture once.
void check_all_scored(const std::vector<db::ScreeningRow>& rows, size_t n) {
  CHECK(rows.size() == n);
  std::set<std::string> keys;
  for (const auto& r : rows) {
    CHECK_MESSAGE(r.score.has_value(), r.arch_key << ": " << r.error);
    CHECK(r.error.empty());
    keys.insert(r.arch_key);
  }
  CHECK(keys.size() == n);
}

}  // namespace

TEST_CASE(
    "screening: two workers score every candidate once, and the population starts from the best") {
  ScreenSearch search("screen-loop", "screen");
  Lines log;
  const ControllerSummary s =
      run_with(search, search.screening(40, 8, 6), log, [](const std::string& endpoint) {
        std::vector<WorkerOptions> w;
        w.push_back(screening_worker(endpoint, "a"));
        w.push_back(screening_worker(endpoint, "b"));
        return w;
      });
  INFO(log.all());
  CHECK(s.done == 6);
  const auto rows = search.rows();
  check_all_scored(rows, 40);
  for (const auto& r : rows) {
    CHECK(r.seconds > 0);
    CHECK((r.worker == "a" || r.worker == "b"));
  }
  // The evolution's first asks (its population of 4) are the 4 best, best first.
  const auto trials = search.trial_archs();
  REQUIRE(trials.size() == 6);
  for (size_t i = 0; i < 4; ++i) CHECK(trials[i] == rows[i].arch_key);
  CHECK(log.has("screening done: 40 architectures scored by synflow"));
}

TEST_CASE(
    "screening: a worker that dies holding a batch loses nothing, and its batch is scored again") {
  ScreenSearch search("screen-killed", "killed");
  Lines log;
  ControllerOptions opt = Search::options();
  opt.log = log.sink();
  opt.liveness = 40;  // the dead peer is found after 2 s of silence
  Controller controller(search.store, search.space, *search.strategy, search.screening(24, 6, 2),
                        opt);
  std::thread loop([&] { controller.run(); });
  // The doomed worker speaks by hand: hello, one slot ready, then it takes a batch and is
  // never heard of again (as a process killed with SIGKILL).
  std::vector<std::string> doomed;
  {
    zmq::context_t ctx;
    zmq::socket_t peer(ctx, zmq::socket_type::dealer);
    peer.set(zmq::sockopt::routing_id, "doomed");
    peer.set(zmq::sockopt::linger, 0);
    peer.connect(controller.endpoint());
    auto send = [&](proto::Type t, nlohmann::json f) {
      peer.send(zmq::buffer(proto::encode(t, std::move(f))), zmq::send_flags::none);
    };
    send(proto::Type::hello, {{"name", "doomed"},
                              {"host", "h"},
                              {"pid", 1},
                              {"minas", "0.1.0"},
                              {"slots", nlohmann::json::array({{{"id", "cpu"}}})}});
    send(proto::Type::ready, {{"slot", "cpu"}});
    const auto until = std::chrono::steady_clock::now() + kHangGuard;
    while (doomed.empty() && std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      zmq::message_t m;
      if (!(items[0].revents & ZMQ_POLLIN) || !peer.recv(m, zmq::recv_flags::dontwait)) continue;
      const proto::Message msg = proto::parse(m.to_string());
      if (msg.type == proto::Type::screen) doomed = msg.as<proto::Screen>().archs;
    }
  }
  REQUIRE_MESSAGE(doomed.size() == 6, "no screen reached the doomed worker\n" << log.all());
  Worker survivor(screening_worker(controller.endpoint(), "survivor"));
  std::thread work([&] { survivor.run(); });
  loop.join();
  survivor.request_stop();
  work.join();
  INFO(log.all());
  CHECK(log.has("goes back to the queue"));
  const auto rows = search.rows();
  check_all_scored(rows, 24);
  for (const auto& r : rows) CHECK(r.worker == "survivor");
  std::set<std::string> keys;
  for (const auto& r : rows) keys.insert(r.arch_key);
  for (const auto& k : doomed) CHECK(keys.count(k) == 1);
}

TEST_CASE("screening: the order by score, and by Pareto front of score against MACs") {
  // Five architectures: (score, MACs).
  const std::vector<double> score = {5, 9, 7, 9, 3};
  const std::vector<double> macs = {10, 100, 20, 100, 5};
  const std::vector<std::string> keys = {"a", "b", "c", "d", "e"};
  CHECK(minas::loop::screened_order(score, macs, keys, false) ==
        std::vector<size_t>{1, 3, 2, 0, 4});  // b and d tie in score: by key
  // Fronts: e (cheapest), a, c and b are each the best at their cost, taken
  // cheapest first; d ties b exactly and goes to the next front.
  CHECK(minas::loop::screened_order(score, macs, keys, true) == std::vector<size_t>{4, 0, 2, 1, 3});
  // A point beaten at no more cost waits for the next front, however good.
  const std::vector<double> s2 = {8, 9, 1}, m2 = {10, 5, 1};
  CHECK(minas::loop::screened_order(s2, m2, {"x", "y", "z"}, true) == std::vector<size_t>{2, 1, 0});
  CHECK(minas::loop::screened_order({}, {}, {}, true).empty());
  // Fronts of many points: every point of a front is dominated by none of its
  // own or a later front, and dominated by some point of the front before.
  minas::Rng rng(3);
  std::vector<double> s3, m3;
  std::vector<std::string> k3;
  for (int i = 0; i < 300; ++i) {
    s3.push_back(std::floor(rng.uniform() * 50));
    m3.push_back(std::floor(rng.uniform() * 50));
    k3.push_back("k" + std::to_string(1000 + i));
  }
  const auto order = minas::loop::screened_order(s3, m3, k3, true);
  REQUIRE(order.size() == 300);
  auto dominates = [&](size_t p, size_t q) {
    return s3[p] >= s3[q] && m3[p] <= m3[q] && (s3[p] > s3[q] || m3[p] < m3[q]);
  };
  // Peel the fronts by brute force and compare as sets, in order.
  std::vector<bool> taken(300, false);
  size_t at = 0;
  while (at < order.size()) {
    std::set<size_t> front;
    for (size_t i = 0; i < 300; ++i) {
      if (taken[i]) continue;
      bool dominated = false;
      for (size_t j = 0; j < 300 && !dominated; ++j)
        dominated = !taken[j] && j != i &&
                    (dominates(j, i) || (s3[j] == s3[i] && m3[j] == m3[i] && k3[j] < k3[i]));
      if (!dominated) front.insert(i);
    }
    REQUIRE(!front.empty());
    const std::set<size_t> got(order.begin() + static_cast<long>(at),
                               order.begin() + static_cast<long>(at + front.size()));
    CHECK(got == front);
    for (size_t i : front) taken[i] = true;
    at += front.size();
  }
}

TEST_CASE(
    "screening: answers are checked against their batch, and a second answer counts nothing") {
  ScreenSearch search("screen-answers", "answers");
  Lines log;
  ControllerOptions opt = Search::options();
  opt.log = log.sink();
  Controller controller(search.store, search.space, *search.strategy, search.screening(4, 4, 1),
                        opt);
  std::thread loop([&] { controller.run(); });
  struct Stop {
    Controller& c;
    std::thread& t;
    ~Stop() {
      c.request_stop();
      t.join();
    }
  } stop{controller, loop};
  zmq::context_t ctx;
  zmq::socket_t peer(ctx, zmq::socket_type::dealer);
  peer.set(zmq::sockopt::routing_id, "hand");
  peer.set(zmq::sockopt::linger, 0);
  peer.connect(controller.endpoint());
  auto send = [&](proto::Type t, nlohmann::json f) {
    peer.send(zmq::buffer(proto::encode(t, std::move(f))), zmq::send_flags::none);
  };
  // The next message that is not a heartbeat.
  auto next = [&]() {
    const auto until = std::chrono::steady_clock::now() + kHangGuard;
    while (std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(100));
      zmq::message_t m;
      if (!(items[0].revents & ZMQ_POLLIN) || !peer.recv(m, zmq::recv_flags::dontwait)) continue;
      proto::Message msg = proto::parse(m.to_string());
      if (msg.type != proto::Type::heartbeat) return msg;
    }
    FAIL("no answer from the controller\n" << log.all());
    throw std::logic_error("unreachable");
  };
  send(proto::Type::hello, {{"name", "hand"},
                            {"host", "h"},
                            {"pid", 1},
                            {"minas", "0.1.0"},
                            {"slots", nlohmann::json::array({{{"id", "cpu"}}})}});
  REQUIRE(next().type == proto::Type::welcome);
  send(proto::Type::ready, {{"slot", "cpu"}});
  const proto::Message m = next();
  REQUIRE(m.type == proto::Type::screen);
  const proto::Screen& screen = m.as<proto::Screen>();
  REQUIRE(screen.archs.size() == 4);
  CHECK(screen.evaluators == std::vector<std::string>{"synflow"});
  auto answer = [&](int64_t batch, int attempt, std::vector<std::string> archs) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < archs.size(); ++i)
      list.push_back({{"arch", archs[i]},
                      {"scores", {{"synflow", static_cast<double>(i)}}},
                      {"seconds", 0.01}});
    send(proto::Type::screen_result, {{"batch", batch}, {"attempt", attempt}, {"archs", list}});
  };
  std::vector<std::string> reversed(screen.archs.rbegin(), screen.archs.rend());
  answer(screen.batch, screen.attempt, reversed);
  proto::Message r = next();
  REQUIRE(r.type == proto::Type::error);
  CHECK(r.as<proto::Refusal>().code == "bad_field");
  answer(screen.batch, screen.attempt + 1, screen.archs);  // an attempt it was never sent
  r = next();
  REQUIRE(r.type == proto::Type::error);
  CHECK(r.as<proto::Refusal>().code == "not_allowed");
  answer(screen.batch + 4096, 0, screen.archs);  // a batch of no run of this controller
  r = next();
  REQUIRE(r.type == proto::Type::screen_ack);
  CHECK_FALSE(r.as<proto::ScreenAck>().counted);
  answer(screen.batch, screen.attempt, screen.archs);
  r = next();
  REQUIRE(r.type == proto::Type::screen_ack);
  CHECK(r.as<proto::ScreenAck>().batch == screen.batch);
  CHECK(r.as<proto::ScreenAck>().counted);
  answer(screen.batch, screen.attempt, screen.archs);  // sent again: stored already
  r = next();
  REQUIRE(r.type == proto::Type::screen_ack);
  CHECK_FALSE(r.as<proto::ScreenAck>().counted);
  // Acknowledged once durable: the store holds each score once, the first answer's.
  const auto rows = search.rows();
  REQUIRE(rows.size() == 4);
  for (const auto& row : rows) {
    const auto at = std::find(screen.archs.begin(), screen.archs.end(), row.arch_key);
    REQUIRE(at != screen.archs.end());
    CHECK(row.score == static_cast<double>(at - screen.archs.begin()));
    CHECK(row.worker == "hand");
  }
}

TEST_CASE("screening: a resumed search screens only what the store lacks, then nothing") {
  ScreenSearch search("screen-resume", "resume");
  Lines log;
  // The first run stops as soon as the first batch is scored: some scores are stored,
  // maybe not all of those scored.
  std::atomic<Controller*> running{nullptr};
  auto first = std::make_shared<CountingScreener>([&](size_t) {
    if (Controller* c = running.load()) c->request_stop();
  });
  const ControllerSummary s1 = run_with(
      search, search.screening(30, 5, 4), log,
      [&](const std::string& e) { return std::vector{screening_worker(e, "w", first)}; }, &running);
  CHECK(s1.stopped);
  CHECK(s1.done == 0);  // no trial before screening is done
  const size_t stored = search.rows().size();
  CHECK(stored < 30);
  // The second run scores exactly what is missing, then trains.
  search.remake();
  auto second = std::make_shared<CountingScreener>();
  const ControllerSummary s2 =
      run_with(search, search.screening(30, 5, 4), log,
               [&](const std::string& e) { return std::vector{screening_worker(e, "w", second)}; });
  INFO(log.all());
  CHECK(s2.resumed);
  CHECK(s2.done == 4);
  CHECK(second->archs.load() == 30 - stored);
  const auto rows = search.rows();
  check_all_scored(rows, 30);
  const auto trials = search.trial_archs();
  REQUIRE(trials.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(trials[i] == rows[i].arch_key);
  // A third run (a larger trial budget) scores nothing and starts no worse.
  search.remake();
  auto third = std::make_shared<CountingScreener>();
  const ControllerSummary s3 =
      run_with(search, search.screening(30, 5, 6), log,
               [&](const std::string& e) { return std::vector{screening_worker(e, "w", third)}; });
  CHECK(s3.done == 6);
  CHECK(third->archs.load() == 0);
  CHECK(log.has("30 scored before, 0 to score"));
  CHECK(search.rows().size() == 30);
}

TEST_CASE("screening: a combined evaluator keeps each member's score and orders by rank sums") {
  // Rank sums: ties share their average rank.
  const std::map<std::string, std::vector<double>> scores = {
      {"a", {1.0, 30.0}}, {"b", {2.0, 10.0}}, {"c", {3.0, 20.0}}, {"d", {3.0, 40.0}}};
  CHECK(loop::rank_sums(scores) == std::vector<double>{1 + 3, 2 + 1, 3.5 + 2, 3.5 + 4});

  ScreenSearch search("screen-combined", "combined");
  Lines log;
  ExperimentConfig cfg = search.screening(30, 6, 4);
  cfg.screen_evaluator = "synflow+params";
  // The first run stops after its first batch; the second scores the rest.
  std::atomic<Controller*> running{nullptr};
  auto first = std::make_shared<CountingScreener>([&](size_t) {
    if (Controller* c = running.load()) c->request_stop();
  });
  run_with(
      search, cfg, log,
      [&](const std::string& e) { return std::vector{screening_worker(e, "w", first)}; }, &running);
  const size_t stored = search.rows("params").size();
  CHECK(search.rows("synflow").size() == stored);
  CHECK(stored < 30);
  search.remake();
  auto second = std::make_shared<CountingScreener>();
  const ControllerSummary s = run_with(search, cfg, log, [&](const std::string& e) {
    return std::vector{screening_worker(e, "w", second)};
  });
  INFO(log.all());
  CHECK(s.done == 4);
  CHECK(second->archs.load() == 30 - stored);
  const auto synflow = search.rows("synflow"), params = search.rows("params");
  check_all_scored(synflow, 30);
  check_all_scored(params, 30);
  CHECK(log.has("scored by synflow+params"));
  // The population starts from the best by the sum of the two ranks.
  std::map<std::string, std::vector<double>> both;
  for (const auto& r : synflow) both[r.arch_key].push_back(*r.score);
  for (const auto& r : params) both[r.arch_key].push_back(*r.score);
  std::vector<std::string> keys;
  for (const auto& [k, v] : both) keys.push_back(k);
  const std::vector<double> sums = loop::rank_sums(both);
  const auto order = loop::screened_order(sums, std::vector<double>(sums.size(), 0.0), keys, false);
  const auto trials = search.trial_archs();
  REQUIRE(trials.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(trials[i] == keys[order[i]]);
  // The order by the sum is not synflow's alone (rows come best first).
  std::vector<std::string> by_sum, by_synflow;
  for (size_t i : order) by_sum.push_back(keys[i]);
  for (const auto& r : synflow) by_synflow.push_back(r.arch_key);
  CHECK(by_sum != by_synflow);
}

TEST_CASE("screening: the proxy screener scores each architecture, or says what went wrong") {
  const Space space = Space::load("small");
  Rng rng(3);
  const Arch a = space.sample(rng), b = space.sample(rng);
  ScreenRequest req;
  req.space = space.spec();
  req.archs = {space.key(a), "not|an|arch", space.key(b)};
  req.evaluators = {"synflow", "params"};
  req.data = "simulated";  // neither evaluator reads images
  req.threads = 1;
  auto screener = make_proxy_screener();
  const auto never = [] { return false; };
  const auto out = screener->screen(req, never);
  REQUIRE(out.size() == 3);
  CHECK(out[0].arch == space.key(a));
  CHECK(out[0].scores.at("params") == static_cast<double>(space.lower(a).params()));
  CHECK(out[0].scores.count("synflow") == 1);
  CHECK(out[0].error.empty());
  CHECK(out[1].scores.empty());
  CHECK_FALSE(out[1].error.empty());
  CHECK(out[2].scores.size() == 2);
  // Deterministic for the seed.
  CHECK(screener->screen(req, never)[2].scores.at("synflow") == out[2].scores.at("synflow"));
  // An evaluator this worker does not know fails every architecture, saying which.
  req.evaluators = {"synflow", "accuracy"};
  for (const auto& x : screener->screen(req, never)) {
    CHECK(x.scores.empty());
    CHECK(x.error.find("unknown evaluator 'accuracy'") != std::string::npos);
  }
  // A data set it cannot read fails those that need images.
  req.evaluators = {"naswot"};
  req.data = "no-such-data-set";
  for (const auto& x : screener->screen(req, never)) CHECK_FALSE(x.error.empty());
  // Cancelled: it stops at once.
  req.evaluators = {"params"};
  CHECK(screener->screen(req, [] { return true; }).empty());
}

TEST_CASE("screening: the store keeps one score per architecture and evaluator, best first") {
  const TempDir dir("screen-store");
  db::Store store = db::Store::open(dir.file("minas.db"));
  db::ExperimentSpec spec;
  spec.name = "e";
  spec.space = "small";
  spec.space_json = nlohmann::json::object();
  spec.dataset = "d";
  spec.strategy = "random";
  const int64_t e = store.create_experiment(spec, 1.0);
  db::Writer w(store);
  CHECK(w.record_screen_score({e, "a", "synflow", 1.5, 0.1, "", std::nullopt, 2.0}));
  CHECK(w.record_screen_score({e, "b", "synflow", std::nullopt, 0.1, "-inf", std::nullopt, 2.0}));
  CHECK(w.record_screen_score({e, "c", "synflow", 3.0, 0.1, "", std::nullopt, 2.0}));
  CHECK(w.record_screen_score({e, "a", "params", 10.0, 0.0, "", std::nullopt, 2.0}));
  // Scored again (a batch's late answer): the first score stands.
  CHECK_FALSE(w.record_screen_score({e, "a", "synflow", 9.0, 0.1, "", std::nullopt, 3.0}));
  w.commit();
  const auto rows = db::screening_scores(store.connection(), e, "synflow");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].arch_key == "c");
  CHECK(rows[1].arch_key == "a");
  CHECK(rows[1].score == 1.5);
  CHECK(rows[2].arch_key == "b");
  CHECK_FALSE(rows[2].score);
  CHECK(rows[2].error == "-inf");
  CHECK(db::screening_scores(store.connection(), e).size() == 4);
}
