// The controller and workers together, in one process over real sockets:
// every trial of the budget lands in the store exactly once.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "controller/controller.h"
#include "controller/protocol.h"
#include "db/queries.h"
#include "tests/controller/loop_support.h"
#include "tests/support.h"
#include "worker/worker.h"

using namespace minas;
using namespace minas::test;

TEST_CASE("search loop: two workers with three slots finish the whole budget, each trial once") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  Search search("loop", "loop", 1);
  const std::string& path = search.path;
  const Space& space = search.space;
  db::Store& store = search.store;
  Strategy& strategy = *search.strategy;
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 300;
  ControllerOptions opt = search.options();
  Controller controller(store, space, strategy, cfg, opt);
  auto sim = std::shared_ptr<TrialRunner>(
      make_sim_runner(minas::test::nb201_table(), "cifar10_valid_12ep", 0.001));
  Worker a(worker_options(controller.endpoint(), "a", sim, 2));
  Worker b(worker_options(controller.endpoint(), "b", sim, 1));
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); });
  const ControllerSummary s = controller.run();
  ta.join();
  tb.join();
  CHECK(s.done == 300);
  CHECK(s.failed == 0);
  const Counts n = count(path);
  CHECK(n.trials == 300);
  CHECK(n.done == 300);
  CHECK(n.distinct == 300);
}

TEST_CASE(
    "search loop: a worker stopped mid-trial has its trial re-queued and finished by another") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  Search search("loop-lost", "lost", 2);
  const std::string& path = search.path;
  const Space& space = search.space;
  db::Store& store = search.store;
  Strategy& strategy = *search.strategy;
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 40;
  ControllerOptions opt = search.options();
  opt.liveness = 4;
  Controller controller(store, space, strategy, cfg, opt);
  // Worker "slow" takes a trial, then is stopped (SIGTERM in a real worker):
  // it cancels the attempt and says bye, and the controller re-queues it.
  auto slow_runner = std::make_shared<WatchedRunner>(std::shared_ptr<TrialRunner>(
      make_sim_runner(minas::test::nb201_table(), "cifar10_valid_12ep", 3600.0)));
  auto fast_runner = std::shared_ptr<TrialRunner>(
      make_sim_runner(minas::test::nb201_table(), "cifar10_valid_12ep", 0.002));
  std::thread tc([&] { controller.run(); });
  {
    auto slow =
        std::make_unique<Worker>(worker_options(controller.endpoint(), "slow", slow_runner, 1));
    std::thread ts([&] { slow->run(); });
    const bool started = slow_runner->await_started(1);
    slow->request_stop();
    ts.join();
    REQUIRE_MESSAGE(started,
                    "waited " << kHangGuard.count() << " s for worker slow to start a trial");
  }
  Worker fast(worker_options(controller.endpoint(), "fast", fast_runner, 1));
  std::thread tf([&] { fast.run(); });
  tc.join();
  tf.join();
  const Counts n = count(path);
  CHECK(n.done == 40);
  CHECK(n.trials == 40);
}

TEST_CASE("search loop: with CURVE, an unlisted worker is refused and a listed one works") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  Search search("loop-curve", "curve", 3);
  const std::string& path = search.path;
  const Space& space = search.space;
  db::Store& store = search.store;
  Strategy& strategy = *search.strategy;
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 20;
  const auth::KeyPair server = auth::generate_keypair(), listed = auth::generate_keypair(),
                      stranger = auth::generate_keypair();
  ControllerOptions opt = search.options();
  opt.curve_key = server;
  opt.allowed_workers = {listed.public_key};
  std::atomic<int> refusals{0};
  opt.log = [&](const std::string& line) {
    if (line.find("refused a worker") != std::string::npos) ++refusals;
  };
  Controller controller(store, space, strategy, cfg, opt);
  auto sim = std::shared_ptr<TrialRunner>(
      make_sim_runner(minas::test::nb201_table(), "cifar10_valid_12ep", 0.001));
  std::thread tc([&] { controller.run(); });

  WorkerOptions bad = worker_options(controller.endpoint(), "stranger", sim, 1);
  bad.curve_key = stranger;
  bad.server_public_key = server.public_key;
  Worker intruder(bad);
  std::thread ti([&] { intruder.run(); });
  const bool refused = eventually([&] { return refusals.load() >= 1; });
  intruder.request_stop();
  ti.join();
  CHECK_MESSAGE(refused, "waited " << kHangGuard.count() << " s for the controller to log "
                                   << "'refused a worker'");
  {
    db::Connection c = db::open_store_readonly(path);
    db::Statement s = c.prepare("SELECT count(*) FROM workers");
    REQUIRE(s.step());
    CHECK(s.column_int64(0) == 0);  // it never got as far as hello
  }

  WorkerOptions good = worker_options(controller.endpoint(), "listed", sim, 1);
  good.curve_key = listed;
  good.server_public_key = server.public_key;
  Worker member(good);
  std::thread tm([&] { member.run(); });
  tc.join();
  tm.join();
  CHECK(count(path).done == 20);
}

TEST_CASE("search loop: the controller answers every malformed message with an error and goes on") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  Search search("loop-fuzz", "fuzz", 4);
  const std::string& path = search.path;
  const Space& space = search.space;
  db::Store& store = search.store;
  Strategy& strategy = *search.strategy;
  ExperimentConfig cfg = search.config();
  cfg.budget_trials = 10;
  ControllerOptions opt = search.options();
  Controller controller(store, space, strategy, cfg, opt);
  std::thread tc([&] { controller.run(); });

  std::vector<std::string> corpus;
  {
    std::ifstream in(std::string(MINAS_SOURCE_DIR) + "/tests/controller/bad_messages.txt");
    std::string line;
    while (std::getline(in, line))
      if (!line.empty() && line[0] != '#') corpus.push_back(line.substr(line.find('\t') + 1));
  }
  // Valid messages out of order: a result before hello, a controller's own message.
  corpus.push_back(proto::encode(proto::Type::result,
                                 {{"trial", 1}, {"attempt", 0}, {"metrics", {{"val_acc", 1}}}}));
  corpus.push_back(proto::encode(proto::Type::train, {{"trial", 1},
                                                      {"attempt", 0},
                                                      {"slots", {"cpu"}},
                                                      {"space_id", "x"},
                                                      {"arch", "x"},
                                                      {"recipe", {{"a", 1}}},
                                                      {"data", {{"name", "x"}}},
                                                      {"fidelity", 1}}));
  REQUIRE(corpus.size() >= 32);
  zmq::context_t ctx;
  zmq::socket_t peer(ctx, zmq::socket_type::dealer);
  peer.set(zmq::sockopt::linger, 0);
  peer.connect(controller.endpoint());
  int errors = 0;
  for (const std::string& payload : corpus) {
    peer.send(zmq::buffer(payload), zmq::send_flags::none);
    zmq::pollitem_t items[] = {{peer.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(kHangGuard));
    REQUIRE_MESSAGE((items[0].revents & ZMQ_POLLIN), "no answer to: " << payload);
    zmq::message_t reply;
    REQUIRE(peer.recv(reply, zmq::recv_flags::none));
    const proto::Message m = proto::parse(reply.to_string());
    CHECK(m.type == proto::Type::error);
    errors += m.type == proto::Type::error;
  }
  CHECK(errors == static_cast<int>(corpus.size()));
  // Still serving: a real worker finishes the search.
  auto sim = std::shared_ptr<TrialRunner>(
      make_sim_runner(minas::test::nb201_table(), "cifar10_valid_12ep", 0.001));
  Worker w(worker_options(controller.endpoint(), "after", sim, 1));
  std::thread tw([&] { w.run(); });
  tc.join();
  tw.join();
  CHECK(count(path).done == 10);
}
