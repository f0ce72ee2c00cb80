// Data-parallel training over the in-process communicator (ranks as
// threads): the collectives, the gradient buckets, gradient averaging checked
// against each rank's own gradients, and whole runs that stay in step.
#include <doctest/doctest.h>

#include <thread>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/comm.h"
#include "trainer/data_parallel.h"
#include "trainer/socket_comm.h"
#include "trainer/train.h"

using namespace minas;
using minas::test::synthetic;

namespace {

// Runs f(rank) on one thread per rank and rethrows the first failure.
template <class F>
void on_ranks(int n, F f) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        f(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

const char* kSpace = "mobile:input=1x12x12,stem.channels=8,head.channels=16";

std::vector<float> state_of(const Model& m) {
  std::vector<float> all;
  for (const auto* group : {&m.params(), &m.buffers()})
    for (const auto& p : *group) all.insert(all.end(), p.value.begin(), p.value.end());
  return all;
}

}  // namespace

TEST_CASE("comm: all-reduce sums in rank order, the same bits on every rank, broadcast, order") {
  for (int n : {1, 2, 3, 4}) {
    CAPTURE(n);
    auto group = make_thread_group(n);
    std::vector<std::vector<float>> data(static_cast<size_t>(n)), small(static_cast<size_t>(n));
    Rng rng(7);
    for (auto& d : data) {
      d.resize(1001);
      for (float& x : d) x = static_cast<float>(rng.uniform() * 2 - 1);
    }
    std::vector<float> expected(1001, 0.0f);
    for (size_t j = 0; j < expected.size(); ++j)
      for (int r = 0; r < n; ++r) expected[j] += data[static_cast<size_t>(r)][j];
    on_ranks(n, [&](int r) {
      Communicator& c = *group[static_cast<size_t>(r)];
      CHECK(c.rank() == r);
      CHECK(c.size() == n);
      auto& mine = data[static_cast<size_t>(r)];
      // Two in flight at once finish in issue order.
      small[static_cast<size_t>(r)] = {static_cast<float>(r), 1.0f};
      auto first = c.all_reduce_sum_async(mine);
      auto second = c.broadcast_async(small[static_cast<size_t>(r)], n - 1);
      second->wait();
      first->wait();
    });
    for (int r = 0; r < n; ++r) {
      CHECK(data[static_cast<size_t>(r)] == expected);  // bit for bit
      CHECK(small[static_cast<size_t>(r)] == std::vector<float>{static_cast<float>(n - 1), 1.0f});
    }
  }
  // Ranks that disagree on a collective's size all get an error, none hangs.
  auto group = make_thread_group(2);
  int errors = 0;
  std::mutex mu;
  on_ranks(2, [&](int r) {
    std::vector<float> v(static_cast<size_t>(3 + r));
    try {
      group[static_cast<size_t>(r)]->all_reduce_sum(v);
    } catch (const Error& e) {
      std::lock_guard lock(mu);
      errors += test::contains(e.what(), "elements");
    }
  });
  CHECK(errors == 2);
  CHECK_THROWS_AS(make_thread_group(0), Error);
}

TEST_CASE("data parallel: buckets hold every parameter once, in backward order, within the cap") {
  const auto space = Space::load(kSpace);
  Rng rng(3);
  Model model(space.lower(space.sample(rng)), 1);
  auto group = make_thread_group(1);
  for (size_t cap : {size_t{1}, size_t{4096}, size_t{1} << 30}) {
    CAPTURE(cap);
    GradientReducer reducer(model, *group[0], cap);
    std::vector<int> seen(model.params().size(), 0);
    int last_layer = model.graph().size();
    for (const auto& b : reducer.buckets()) {
      size_t elements = 0;
      for (int p : b.params) {
        ++seen[static_cast<size_t>(p)];
        elements += model.params()[static_cast<size_t>(p)].size();
      }
      CHECK(elements == b.elements);
      CHECK((b.elements * sizeof(float) <= cap || b.layers.size() == 1));
      for (int l : b.layers) {
        CHECK(l < last_layer);
        last_layer = l;
      }
    }
    for (int s : seen) CHECK(s == 1);
    if (cap == 1) CHECK(reducer.buckets().size() > 5);
    if (cap == (size_t{1} << 30)) CHECK(reducer.buckets().size() == 1);
  }
}

TEST_CASE("data parallel: averaged gradients are the mean of each rank's own, to the bit") {
  const auto space = Space::load(kSpace);
  Rng rng(4);
  const LayerGraph graph = space.lower(space.sample(rng));
  const int n = 3, batch = 8;
  // Each rank's batch of random images and labels.
  std::vector<std::vector<float>> x(n);
  std::vector<std::vector<int32_t>> y(n);
  for (int r = 0; r < n; ++r) {
    x[static_cast<size_t>(r)].resize(static_cast<size_t>(batch) * 144);
    for (float& v : x[static_cast<size_t>(r)]) v = static_cast<float>(rng.uniform() * 2 - 1);
    for (int i = 0; i < batch; ++i)
      y[static_cast<size_t>(r)].push_back(static_cast<int32_t>(rng.below(10)));
  }
  auto backend = make_cpu_backend(1);
  // Each rank's own gradients, one network at a time.
  std::vector<std::vector<std::vector<float>>> own(n);
  for (int r = 0; r < n; ++r) {
    Model m(graph, 9);
    auto net = backend->compile(m, batch, NetMode::train, {});
    net->train_step(x[static_cast<size_t>(r)].data(), y[static_cast<size_t>(r)].data());
    for (const auto& p : m.params()) own[static_cast<size_t>(r)].push_back(p.grad);
  }
  // The same three batches through data-parallel ranks, small buckets so
  // several all-reduces overlap the backward pass.
  auto group = make_thread_group(n);
  std::vector<std::unique_ptr<Model>> models;
  for (int r = 0; r < n; ++r) models.push_back(std::make_unique<Model>(graph, 9));
  std::vector<int> reported(n, 0);
  on_ranks(n, [&](int r) {
    Model& m = *models[static_cast<size_t>(r)];
    auto be = make_cpu_backend(1);
    GradientReducer reducer(m, *group[static_cast<size_t>(r)], 2048);
    NetworkOptions no;
    no.on_layer_gradients = [&](int layer) {
      ++reported[static_cast<size_t>(r)];
      reducer.layer_ready(layer);
    };
    auto net = be->compile(m, batch, NetMode::train, no);
    net->train_step(x[static_cast<size_t>(r)].data(), y[static_cast<size_t>(r)].data());
    reducer.finish();
  });
  size_t layers_with_params = 0;
  for (int i = 0; i < graph.size(); ++i) {
    const LayerState& st = models[0]->state(i);
    layers_with_params += st.weight >= 0 || st.bias >= 0 || st.gamma >= 0 || st.beta >= 0;
  }
  CHECK(static_cast<size_t>(reported[0]) == layers_with_params);
  size_t compared = 0, differ = 0;
  for (int r = 0; r < n; ++r)
    for (size_t p = 0; p < models[0]->params().size(); ++p) {
      const auto& got = models[static_cast<size_t>(r)]->params()[p].grad;
      for (size_t j = 0; j < got.size(); ++j, ++compared)
        differ += got[j] != (own[0][p][j] + own[1][p][j] + own[2][p][j]) / 3.0f;
    }
  CHECK(compared > 1000);
  CHECK(differ == 0);
}

TEST_CASE("data parallel: ranks train in step, report alike, and stop together") {
  const auto space = Space::load(kSpace);
  Rng rng(2);
  const LayerGraph graph = space.lower(space.sample(rng));
  const auto data = synthetic({1, 12, 12}, 10, 400);
  for (const std::string optimizer : {"sgd", "lars"}) {
    CAPTURE(optimizer);
    const int n = optimizer == "sgd" ? 2 : 3;
    Recipe recipe;
    recipe.set("epochs", "2", "test");
    recipe.set("val_size", "40", "test");
    recipe.set("batch", "16", "test");
    recipe.set("crop_pad", "2", "test");
    recipe.set("optimizer", optimizer, "test");
    auto group = make_thread_group(n);
    std::vector<std::unique_ptr<Model>> models;
    // Different initial weights: rank 0's are broadcast at the start.
    for (int r = 0; r < n; ++r) models.push_back(std::make_unique<Model>(graph, 100 + r));
    std::vector<TrainReport> reports(static_cast<size_t>(n));
    on_ranks(n, [&](int r) {
      auto be = make_cpu_backend(1);
      TrainOptions opt;
      opt.measure_latency = false;
      opt.comm = group[static_cast<size_t>(r)].get();
      opt.bucket_bytes = 4096;
      reports[static_cast<size_t>(r)] =
          train(*models[static_cast<size_t>(r)], recipe, data, *be, opt);
    });
    // 360 training images: 360 / n each, batches of 16.
    CHECK(reports[0].steps == 2 * static_cast<int64_t>((360 / n) / 16));
    for (int r = 1; r < n; ++r) {
      CHECK(state_of(*models[static_cast<size_t>(r)]) == state_of(*models[0]));
      CHECK(reports[static_cast<size_t>(r)].steps == reports[0].steps);
      for (size_t e = 0; e < 2; ++e) {
        CHECK(reports[static_cast<size_t>(r)].epochs[e].val_acc == reports[0].epochs[e].val_acc);
        CHECK(reports[static_cast<size_t>(r)].epochs[e].train_loss ==
              reports[0].epochs[e].train_loss);
      }
    }
    CHECK(std::isfinite(reports[0].test_acc));
    CHECK(std::isnan(reports[1].test_acc));  // only rank 0 evaluates the test set
  }
  // A cancel seen by one rank stops every rank at the same step.
  auto group = make_thread_group(2);
  Recipe recipe;
  recipe.set("epochs", "3", "test");
  recipe.set("val_size", "40", "test");
  recipe.set("batch", "16", "test");
  std::vector<int64_t> steps(2);
  on_ranks(2, [&](int r) {
    Model m(graph, 1);
    auto be = make_cpu_backend(1);
    TrainOptions opt;
    opt.measure_latency = false;
    opt.evaluate_test = false;
    opt.comm = group[static_cast<size_t>(r)].get();
    int polls = 0;
    opt.should_stop = [&] { return r == 1 && ++polls > 4; };
    steps[static_cast<size_t>(r)] = train(m, recipe, data, *be, opt).steps;
  });
  CHECK(steps[0] == 5);
  CHECK(steps[1] == 5);
}

// ---- Across processes: the socket group ----------------------------------------------------

namespace {

// A socket group of n ranks in this process, as the gang of a trial would
// make one per worker: rank 0's group with its listener, the others from the
// rendezvous (`split`: how many ranks the first "worker" holds).
std::vector<std::unique_ptr<Communicator>> socket_ranks(int n, int split,
                                                        std::function<void()>* abort = nullptr) {
  auto listener = std::make_shared<SocketListener>();
  const std::string at = listener->rendezvous("127.0.0.1");
  SocketGroup first = make_socket_group(n, 0, split, listener, at);
  std::vector<std::unique_ptr<Communicator>> all = std::move(first.ranks);
  if (split < n) {
    SocketGroup rest = make_socket_group(n, split, n - split, nullptr, at);
    for (auto& r : rest.ranks) all.push_back(std::move(r));
  }
  if (abort) *abort = first.abort;
  return all;
}

}  // namespace

TEST_CASE("socket comm: the same sums and broadcasts as the in-process group, to the bit") {
  for (int n : {1, 2, 3}) {
    CAPTURE(n);
    auto threads = make_thread_group(n);
    auto sockets = socket_ranks(n, n == 3 ? 2 : 1);
    Rng rng(9);
    std::vector<std::vector<float>> a(static_cast<size_t>(n)), b(static_cast<size_t>(n)),
        small(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      a[static_cast<size_t>(r)].resize(5000);
      for (float& x : a[static_cast<size_t>(r)]) x = static_cast<float>(rng.uniform() * 2 - 1);
      b[static_cast<size_t>(r)] = a[static_cast<size_t>(r)];
      small[static_cast<size_t>(r)] = {static_cast<float>(r), 2.0f};
    }
    on_ranks(n, [&](int r) {
      threads[static_cast<size_t>(r)]->all_reduce_sum(a[static_cast<size_t>(r)]);
      Communicator& c = *sockets[static_cast<size_t>(r)];
      CHECK(c.rank() == r);
      CHECK(c.size() == n);
      auto sum = c.all_reduce_sum_async(b[static_cast<size_t>(r)]);
      auto bcast = c.broadcast_async(small[static_cast<size_t>(r)], n - 1);
      bcast->wait();
      sum->wait();
    });
    for (int r = 0; r < n; ++r) {
      CHECK(b[static_cast<size_t>(r)] == a[0]);  // bit for bit, on every rank
      CHECK(small[static_cast<size_t>(r)] == std::vector<float>{static_cast<float>(n - 1), 2.0f});
    }
  }
}

TEST_CASE(
    "socket comm: data-parallel training over sockets ends with the in-process group's weights") {
  const auto space = Space::load(kSpace);
  Rng rng(3);
  const LayerGraph graph = space.lower(space.sample(rng));
  const auto data = synthetic({1, 12, 12}, 10, 300);
  Recipe recipe;
  recipe.set("epochs", "1", "test");
  recipe.set("val_size", "40", "test");
  recipe.set("batch", "16", "test");
  std::vector<std::vector<float>> final_state;
  for (const bool over_sockets : {false, true}) {
    auto group = over_sockets ? socket_ranks(2, 1) : make_thread_group(2);
    std::vector<std::unique_ptr<Model>> models;
    for (int r = 0; r < 2; ++r) models.push_back(std::make_unique<Model>(graph, 100 + r));
    on_ranks(2, [&](int r) {
      auto be = make_cpu_backend(1);
      TrainOptions opt;
      opt.measure_latency = false;
      opt.evaluate_test = false;
      opt.comm = group[static_cast<size_t>(r)].get();
      opt.bucket_bytes = 4096;
      train(*models[static_cast<size_t>(r)], recipe, data, *be, opt);
    });
    CHECK(state_of(*models[1]) == state_of(*models[0]));
    final_state.push_back(state_of(*models[0]));
  }
  CHECK(final_state[1] == final_state[0]);
}

TEST_CASE("socket comm: a rank that never comes, a rank that leaves, and abort fail the others") {
  using namespace std::chrono_literals;
  {
    // Rank 1 never connects: rank 0's first collective fails after the timeout.
    auto listener = std::make_shared<SocketListener>();
    SocketGroup g = make_socket_group(2, 0, 1, listener, "", 300ms);
    std::vector<float> v(4);
    CHECK_THROWS_WITH_AS(g.ranks[0]->all_reduce_sum(v), doctest::Contains("heard from 0 of 1"),
                         Error);
  }
  {
    // Rank 1 does one collective and leaves: rank 0's next one names it.
    auto listener = std::make_shared<SocketListener>();
    const std::string at = listener->rendezvous("127.0.0.1");
    SocketGroup hub = make_socket_group(2, 0, 1, listener, at);
    std::vector<float> v(8, 1.0f), w(8, 2.0f);
    std::thread leaver([&] {
      SocketGroup one = make_socket_group(2, 1, 1, nullptr, at);
      one.ranks[0]->all_reduce_sum(w);
    });  // its group is destroyed: the socket closes
    hub.ranks[0]->all_reduce_sum(v);
    leaver.join();
    CHECK(v == std::vector<float>(8, 3.0f));
    CHECK_THROWS_WITH_AS(hub.ranks[0]->all_reduce_sum(v), doctest::Contains("rank 1 is gone"),
                         Error);
  }
  {
    // A peer that is silent forever (a host cut off): abort() ends the wait at once, long
    // before the group's timeout (the default, 120 s) would.
    std::function<void()> abort;
    auto ranks = socket_ranks(2, 1, &abort);
    // One collective both ranks issue, timed: the group is connected, and what a collective
    // takes here is known.
    std::vector<float> v(8, 1.0f), w(8, 2.0f);
    const auto t_sum = std::chrono::steady_clock::now();
    on_ranks(2, [&](int r) { ranks[static_cast<size_t>(r)]->all_reduce_sum(r == 0 ? v : w); });
    const auto one_sum = std::chrono::steady_clock::now() - t_sum;
    CHECK(v == std::vector<float>(8, 3.0f));
    auto pending = ranks[0]->all_reduce_sum_async(v);  // rank 1 never issues its part
    // Ten times a whole collective: by then rank 0 is surely waiting for rank 1's part (an
    // abort that came earlier must fail it all the same).
    std::this_thread::sleep_for(10 * one_sum);
    const auto t0 = std::chrono::steady_clock::now();
    abort();
    CHECK_THROWS_AS(pending->wait(), Error);
    CHECK(std::chrono::steady_clock::now() - t0 < 30s);
    // Rank 1's queue is empty; its group goes with `ranks`.
  }
  CHECK_THROWS_AS(make_socket_group(2, 1, 1, nullptr, ""), Error);
  CHECK_THROWS_AS(make_socket_group(2, 0, 1, nullptr, ""), Error);
  CHECK_THROWS_AS(make_socket_group(2, 1, 2, nullptr, "tcp://127.0.0.1:1"), Error);
}
