// Training end to end on the CPU backend: accuracy on real data, determinism,
// checkpoints, BN folding, budgets and the failures a user can cause.
#include <doctest/doctest.h>

#include <chrono>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"

using namespace minas;
using minas::test::synthetic;

namespace {

const char* kReference = "16|32|conv_k3|skip|64|conv_k3|skip";

// Fashion-MNIST cut down to n training and m test images, or nothing when the
// package is not installed (CI installs it, and there its absence fails).
std::optional<data::TrainTest> fashion(size_t n, size_t m) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
    const char* ci = std::getenv("CI");
    if (ci && std::string(ci) == "true") FAIL("dataset-fashion-mnist is not installed");
    MESSAGE("skipped: /usr/share/datasets/fashion-mnist not found");
    return std::nullopt;
  }
  data::TrainTest full = data::load_dataset("fashion-mnist");
  const auto tr = data::subset(data::all_indices(full.train), n, uint64_t{1});
  const auto te = data::subset(data::all_indices(full.test), m, uint64_t{2});
  data::TrainTest cut{data::gather(full.train, tr), data::gather(full.test, te)};
  cut.train.source = cut.test.source = "fashion-mnist";  // keep its normalization
  return cut;
}

Recipe quick(int64_t epochs, int64_t val) {
  Recipe r;
  r.set("epochs", std::to_string(epochs), "test");
  r.set("val_size", std::to_string(val), "test");
  r.set("threads", "1", "test");
  r.validate("test");
  return r;
}

}  // namespace

TEST_CASE("train: one epoch on 5,000 Fashion-MNIST images beats 70% accuracy (75% seen)") {
  const auto data = fashion(5000, 2000);
  if (!data) return;
  const auto space = Space::load("small");
  Model model(space.lower(space.parse_key(kReference)), 0);
  auto backend = make_cpu_backend(2);
  TrainOptions opt;
  opt.measure_latency = false;
  Recipe recipe = quick(1, 500);
  recipe.set("batch", "32", "test");
  const TrainReport r = train(model, recipe, *data, *backend, opt);
  MESSAGE("val " << r.val_acc << " test " << r.test_acc);
  CHECK(r.steps == (5000 - 500) / 32);
  CHECK(r.test_acc > 0.70);
  CHECK(r.val_acc > 0.70);
}

TEST_CASE("train: the same seed and threads give the same weights, another seed others") {
  const auto space = Space::load("mobile:input=1x12x12,stem.channels=8,head.channels=16");
  Rng rng(1);
  const Arch arch = space.sample(rng);
  const auto data = synthetic({1, 12, 12}, 10, 300);
  auto run = [&](uint64_t seed) {
    Recipe r = quick(2, 60);
    r.set("seed", std::to_string(seed), "test");
    r.set("batch", "32", "test");
    r.set("crop_pad", "2", "test");
    r.set("hflip", "true", "test");
    Model model(space.lower(arch), seed);
    auto backend = make_cpu_backend(1);
    TrainOptions opt;
    opt.measure_latency = false;
    const TrainReport rep = train(model, r, data, *backend, opt);
    std::vector<float> all;
    for (const auto* group : {&model.params(), &model.buffers()})
      for (const auto& p : *group) all.insert(all.end(), p.value.begin(), p.value.end());
    return std::make_pair(all, rep.epochs.back().train_loss);
  };
  const auto a = run(3), b = run(3), c = run(4);
  CHECK(a.first == b.first);
  CHECK(a.second == b.second);
  CHECK(a.first != c.first);
}

TEST_CASE("train: a run resumed from its epoch-1 checkpoint ends exactly as the straight run") {
  const auto space = Space::load("mobile:input=1x12x12,stem.channels=8,head.channels=16");
  Rng rng(2);
  const Arch arch = space.sample(rng);
  const auto data = synthetic({1, 12, 12}, 10, 300);
  Recipe r = quick(3, 60);
  r.set("batch", "32", "test");
  r.set("crop_pad", "2", "test");
  r.set("hflip", "true", "test");
  auto weights = [](const Model& m) {
    std::vector<float> all;
    for (const auto* group : {&m.params(), &m.buffers()})
      for (const auto& p : *group) all.insert(all.end(), p.value.begin(), p.value.end());
    return all;
  };
  auto backend = make_cpu_backend(1);
  const test::TempDir dir("train-resume");
  const std::string path = dir.file("epoch1.ckpt");
  Model straight(space.lower(arch), 7);
  TrainOptions opt;
  opt.measure_latency = false;
  opt.checkpoint_epochs = {1};
  int saved = 0;
  opt.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
    ++saved;
    CHECK(info["epoch"] == 1);
    save_checkpoint(path, {space.name(), space.key(arch), info}, tensors);
  };
  const TrainReport a = train(straight, r, data, *backend, opt);
  REQUIRE(saved == 1);

  const Checkpoint ck = load_checkpoint(path);
  Model resumed(space.lower(arch), 99);  // other initial weights: the checkpoint's must win
  TrainOptions ropt;
  ropt.measure_latency = false;
  ropt.resume = &ck;
  const TrainReport b = train(resumed, r, data, *backend, ropt);
  REQUIRE(b.epochs.size() == 2);
  CHECK(b.epochs[0].epoch == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(b.epochs[i].train_loss == a.epochs[i + 1].train_loss);
    CHECK(b.epochs[i].val_acc == a.epochs[i + 1].val_acc);
    CHECK(b.epochs[i].lr == a.epochs[i + 1].lr);
  }
  CHECK(b.steps == a.steps);
  CHECK(weights(resumed) == weights(straight));
  CHECK(b.test_acc == a.test_acc);

  // Another recipe (a longer run) cannot take this state.
  Model other(space.lower(arch), 7);
  CHECK_THROWS_WITH_AS(train(other, quick(4, 60), data, *backend, ropt),
                       doctest::Contains("another recipe or data set"), Error);
}

TEST_CASE("train: folded batch norm (latency mode) computes what eval mode computes") {
  for (const char* ref : {"small", "nb201:cells=1,channels=8,input=1x16x16",
                          "mobile:input=1x16x16,stem.channels=8,head.channels=32"}) {
    CAPTURE(std::string(ref));
    const auto space = Space::load(ref);
    Rng rng(2);
    const Arch arch = space.sample(rng);
    const LayerGraph g = space.lower(arch);
    Model model(g, 1);
    // Running statistics and affine parameters away from their initial values.
    for (auto& p : model.buffers())
      for (float& v : p.value)
        v = p.name.find("var") != std::string::npos ? static_cast<float>(0.5 + rng.uniform())
                                                    : static_cast<float>(rng.uniform() - 0.5);
    for (auto& p : model.params())
      if (p.kind == ParamKind::bn)
        for (float& v : p.value) v += static_cast<float>(0.2 * (rng.uniform() - 0.5));
    auto backend = make_cpu_backend(1);
    const int batch = 4;
    auto eval = backend->compile(model, batch, NetMode::eval, {});
    auto fast = backend->compile(model, batch, NetMode::latency, {});
    std::vector<float> x(static_cast<size_t>(batch * g.input_shape().elements()));
    for (float& v : x) v = static_cast<float>(2 * rng.uniform() - 1);
    std::vector<float> a(static_cast<size_t>(batch * g.classes())), b(a.size());
    eval->infer(x.data(), a.data());
    fast->infer(x.data(), b.data());
    for (size_t i = 0; i < a.size(); ++i)
      CHECK(b[i] == doctest::Approx(a[i]).epsilon(1e-3).scale(std::abs(a[i]) + 1e-2));
  }
}

TEST_CASE("train: a checkpoint round trip gives back the same network") {
  const auto space = Space::load("small:input=1x12x12");
  const Arch arch = space.parse_key(kReference);
  const auto data = synthetic({1, 12, 12}, 10, 400);
  Model model(space.lower(arch), 1);
  auto backend = make_cpu_backend(1);
  TrainOptions opt;
  opt.measure_latency = false;
  train(model, quick(1, 100), data, *backend, opt);
  const minas::test::TempDir dir("train-ckpt");
  const std::string path = dir.file("model.ckpt");
  save_checkpoint(path, {space.name(), space.key(arch), {}}, checkpoint_views(model));

  Checkpoint ck = load_checkpoint(path);
  check_checkpoint(ck, space.name(), space.key(arch), checkpoint_specs(model), path);
  Model back(space.lower(arch), 99);
  load_weights(back, ck);
  const auto idx = data::all_indices(data.test);
  const auto norm = data::compute_normalization(data.train);
  CHECK(evaluate(back, *backend, data.test, idx, norm, 50) ==
        evaluate(model, *backend, data.test, idx, norm, 50));

  const Arch other = space.parse_key("16|32|conv_k5|skip|64|conv_k3|skip");
  CHECK_THROWS_WITH_AS(check_checkpoint(ck, space.name(), space.key(other),
                                        checkpoint_specs(Model(space.lower(other), 1)), path),
                       doctest::Contains(path.c_str()), Error);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  CHECK_THROWS_WITH_AS(load_checkpoint(path), doctest::Contains("truncated"), Error);
}

TEST_CASE("train: a diverging run fails with the epoch and step, a budget stops the run") {
  const auto space = Space::load("small:input=1x12x12");
  const auto data = synthetic({1, 12, 12}, 10, 600);
  auto backend = make_cpu_backend(1);
  TrainOptions opt;
  opt.measure_latency = false;
  {
    Model model(space.lower(space.parse_key(kReference)), 1);
    Recipe r = quick(3, 0);
    r.set("lr", "1e30", "test");
    r.set("schedule", "constant", "test");
    CHECK_THROWS_WITH_AS(train(model, r, data, *backend, opt),
                         doctest::Contains("diverged at epoch"), Error);
  }
  {
    // What one whole epoch takes here now, timed: a 0.3 s budget must stop the run within
    // it (and then some: twice that, for a machine whose load changes).
    Model timed(space.lower(space.parse_key(kReference)), 1);
    const auto start = std::chrono::steady_clock::now();
    train(timed, quick(1, 0), data, *backend, opt);
    const double epoch_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Model model(space.lower(space.parse_key(kReference)), 1);
    Recipe r = quick(1, 0);
    r.set("time_budget_s", "0.3", "test");
    r.set("epochs", "0", "test");
    const TrainReport rep = train(model, r, data, *backend, opt);
    CHECK(rep.steps >= 1);
    CAPTURE(epoch_s);
    CHECK(rep.train_seconds < 0.3 + 2 * epoch_s);
  }
  {
    Model model(space.lower(space.parse_key(kReference)), 1);
    int calls = 0;
    TrainOptions cancel = opt;
    cancel.should_stop = [&] { return ++calls >= 2; };
    cancel.measure_latency = true;
    // A cancelled run returns at once: no partial epoch, test figure or latency.
    const TrainReport rep = train(model, quick(5, 0), data, *backend, cancel);
    CHECK(rep.steps == 2);
    CHECK(rep.epochs.empty());
    CHECK(std::isnan(rep.test_acc));
    CHECK(rep.latency.runs == 0);
  }
}

TEST_CASE("train: data that does not fit the network is refused, naming both") {
  const auto space = Space::load("nb201");  // 3x32x32 inputs
  Model model(space.lower(space.parse_key("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_"
                                          "connect~0|nor_conv_3x3~1|skip_connect~2|")),
              1);
  auto backend = make_cpu_backend(1);
  CHECK_THROWS_WITH_AS(train(model, quick(1, 0), synthetic({1, 28, 28}, 10, 200), *backend),
                       doctest::Contains("images are 1x28x28, the network takes 3x32x32"), Error);
  const auto small = Space::load("small:classes=5");
  Model five(small.lower(small.parse_key(kReference)), 1);
  CHECK_THROWS_WITH_AS(train(five, quick(1, 0), synthetic({1, 28, 28}, 10, 200), *backend),
                       doctest::Contains("10 classes, the network has 5 outputs"), Error);
}
