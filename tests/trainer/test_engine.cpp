// train()'s one loop over an engine that runs ahead of the host, as the GPU's
// resident engine does: its steps are only queued when the loop issues them
// and run when the loop waits for them (the epoch's sums, the model, the
// momentum, a shared state), and it reports no per-step figures. Run on the
// CPU, it must train exactly as the host engine does: the same steps, the
// same figures, the same weights. So the loop is shown to wait wherever it
// reads what the steps wrote, on every path a GPU run takes (validations
// inside and after epochs, re-plans of a time budget, checkpoints and resume,
// data parallel ranks), without a GPU.
#include <doctest/doctest.h>

#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/comm.h"
#include "trainer/engine.h"
#include "trainer/train.h"

using namespace minas;
using minas::test::synthetic;

namespace {

// The host engine with its steps deferred: at most `ahead` queued, run when
// the loop waits for them.
class DeferredEngine final : public StepEngine {
 public:
  DeferredEngine(std::unique_ptr<StepEngine> inner, size_t ahead)
      : inner_(std::move(inner)), ahead_(ahead) {}
  uint64_t steps_per_epoch() const override { return inner_->steps_per_epoch(); }
  // Deliberately not a wait: a schedule re-planned under queued steps would
  // give them the new plan's rates, which the loop must not let happen.
  void use_schedule(const ElasticSchedule& s) override { inner_->use_schedule(s); }
  void start_epoch(uint64_t epoch) override {
    run();
    inner_->start_epoch(epoch);
  }
  std::optional<StepStats> step(uint64_t step) override {
    queued_.push_back(step);
    if (queued_.size() > ahead_) run();
    return std::nullopt;
  }
  StepSums epoch_sums() override {
    run();
    return inner_->epoch_sums();
  }
  void sync_model() override {
    run();
    inner_->sync_model();
  }
  void share_state() override {
    run();
    inner_->share_state();
  }
  void share_buffers() override {
    run();
    inner_->share_buffers();
  }
  size_t momentum_count() const override { return inner_->momentum_count(); }
  std::vector<float> momentum(size_t i) override {
    run();
    return inner_->momentum(i);
  }
  void set_momentum(size_t i, std::span<const float> v) override {
    run();
    inner_->set_momentum(i, v);
  }
  // With `scales`, a stand-in for the GPU's fp16 loss scaler: its state
  // moves with every step from where it stands (doubling after 7 clean
  // steps), so only a restored state resumes where a run left off.
  std::vector<float> loss_scaler() override {
    run();
    return scales_ ? std::vector<float>{scale_, static_cast<float>(clean_)} : std::vector<float>{};
  }
  void set_loss_scaler(std::span<const float> state) override {
    run();
    if (!scales_) return;
    if (state.size() != 2 || state[0] < 1) throw Error("resume", "not a scaler's state");
    scale_ = state[0];
    clean_ = static_cast<int>(state[1]);
  }
  bool scales_ = false;

 private:
  void run() {
    for (uint64_t s : queued_) {
      inner_->step(s);
      if (++clean_ == 7) {
        scale_ *= 2;
        clean_ = 0;
      }
    }
    queued_.clear();
  }
  std::unique_ptr<StepEngine> inner_;
  size_t ahead_;
  std::vector<uint64_t> queued_;
  float scale_ = 1024;
  int clean_ = 0;
};

// The CPU backend offering the deferred engine as its resident one.
class DeferringBackend final : public Backend {
 public:
  explicit DeferringBackend(size_t ahead) : cpu_(make_cpu_backend(1)), ahead_(ahead) {}
  std::string name() const override { return "deferring-cpu"; }
  int threads() const override { return cpu_->threads(); }
  std::unique_ptr<Network> compile(Model& model, int batch, NetMode mode,
                                   const NetworkOptions& options) override {
    return cpu_->compile(model, batch, mode, options);
  }
  std::unique_ptr<StepEngine> resident_engine(Model& model, const EngineSetup& setup) override {
    ++offered;
    // The inner engine compiles on the CPU backend itself, not on this one.
    auto engine = std::make_unique<DeferredEngine>(make_host_engine(model, *cpu_, setup), ahead_);
    engine->scales_ = scales;
    return engine;
  }
  int offered = 0;
  bool scales = false;  // its engines have a loss scaler

 private:
  std::unique_ptr<Backend> cpu_;
  size_t ahead_;
};

const char* kSpace = "small:input=1x12x12";
const char* kArch = "16|32|conv_k3|skip|64|sep_k3|conv_k3";

// 300 synthetic images, 60 held out: 240 to train on, 15 steps of 16 an epoch.
Recipe recipe(int epochs) {
  Recipe r;
  r.set("epochs", std::to_string(epochs), "test");
  r.set("val_size", "60", "test");
  r.set("batch", "16", "test");
  r.set("threads", "1", "test");
  r.set("crop_pad", "2", "test");
  r.set("hflip", "true", "test");
  return r;
}

Model model_of(uint64_t seed) {
  const Space space = Space::load(kSpace);
  return Model(space.lower(space.parse_key(kArch)), seed);
}

std::vector<float> weights(const Model& m) {
  std::vector<float> all;
  for (const auto* group : {&m.params(), &m.buffers()})
    for (const auto& p : *group) all.insert(all.end(), p.value.begin(), p.value.end());
  return all;
}

void same_epochs(const std::vector<EpochRecord>& a, const std::vector<EpochRecord>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i].epoch == b[i].epoch);
    CHECK(a[i].at == b[i].at);
    CHECK(a[i].steps == b[i].steps);
    CHECK(a[i].train_loss == b[i].train_loss);
    CHECK(a[i].train_acc == b[i].train_acc);
    CHECK(a[i].val_acc == b[i].val_acc);
    CHECK(a[i].lr == b[i].lr);
  }
}

}  // namespace

TEST_CASE("engine: steps run ahead of the loop train exactly as the host engine's") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  for (size_t ahead : {size_t{0}, size_t{4}, size_t{100}}) {
    CAPTURE(ahead);
    TrainOptions opt;
    opt.measure_latency = false;
    opt.validate_at = {0.25, 1.5};
    auto cpu = make_cpu_backend(1);
    Model host = model_of(3);
    const TrainReport a = train(host, recipe(3), data, *cpu, opt);

    DeferringBackend deferring(ahead);
    Model deferred = model_of(3);
    // on_epoch sees the model as the epoch left it, whichever engine ran it.
    std::vector<std::vector<float>> seen;
    opt.on_epoch = [&](const EpochRecord&) { seen.push_back(weights(deferred)); };
    const TrainReport b = train(deferred, recipe(3), data, deferring, opt);
    CHECK(deferring.offered == 1);
    CHECK(b.steps == a.steps);
    same_epochs(a.epochs, b.epochs);
    same_epochs(a.points, b.points);
    CHECK(b.test_acc == a.test_acc);
    CHECK(weights(deferred) == weights(host));
    REQUIRE(seen.size() == 3);
    CHECK(seen.back() == weights(host));
  }
}

TEST_CASE("engine: resident = false trains through the host engine on any backend") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  DeferringBackend deferring(100);
  TrainOptions opt;
  opt.measure_latency = false;
  opt.evaluate_test = false;
  opt.resident = false;
  Model m = model_of(3);
  train(m, recipe(1), data, deferring, opt);
  CHECK(deferring.offered == 0);
}

TEST_CASE(
    "engine: a checkpoint of a run ahead of the loop resumes to the bits of one never stopped") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  DeferringBackend deferring(100);
  const Space space = Space::load(kSpace);
  Checkpoint ck;
  TrainOptions opt;
  opt.measure_latency = false;
  opt.checkpoint_epochs = {1};
  opt.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
    ck.meta = {space.name(), kArch, info};
    for (const TensorView& t : tensors)
      ck.tensors.push_back({t.name, t.shape, {t.data.begin(), t.data.end()}});
  };
  Model straight = model_of(7);
  const TrainReport a = train(straight, recipe(3), data, deferring, opt);
  REQUIRE(!ck.tensors.empty());
  // The momentum in the checkpoint is the host engine's after epoch 1.
  Model host = model_of(7);
  auto cpu = make_cpu_backend(1);
  Checkpoint host_ck;
  opt.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
    host_ck.meta = {space.name(), kArch, info};
    for (const TensorView& t : tensors)
      host_ck.tensors.push_back({t.name, t.shape, {t.data.begin(), t.data.end()}});
  };
  train(host, recipe(3), data, *cpu, opt);
  CHECK(ck.tensors == host_ck.tensors);
  CHECK(ck.meta.info == host_ck.meta.info);

  Model resumed = model_of(99);  // the checkpoint's weights must win
  TrainOptions ropt;
  ropt.measure_latency = false;
  ropt.resume = &ck;
  const TrainReport b = train(resumed, recipe(3), data, deferring, ropt);
  REQUIRE(b.epochs.size() == 2);
  CHECK(b.epochs[0].epoch == 2);
  CHECK(b.epochs[1].train_loss == a.epochs[2].train_loss);
  CHECK(b.epochs[1].val_acc == a.epochs[2].val_acc);
  CHECK(weights(resumed) == weights(straight));
}

TEST_CASE("engine: a loss scaler's state goes into checkpoints and comes back on resume") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  DeferringBackend deferring(100);
  deferring.scales = true;
  const Space space = Space::load(kSpace);
  Checkpoint ck;
  std::vector<float> at_end;
  TrainOptions opt;
  opt.measure_latency = false;
  opt.checkpoint_epochs = {1, 3};
  opt.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
    if (info.at("epoch") == 3) {  // the scaler at the end, for the resumed run to match
      for (const TensorView& t : tensors)
        if (t.name == "optimizer.loss_scaler") at_end.assign(t.data.begin(), t.data.end());
      return;
    }
    ck.meta = {space.name(), kArch, info};
    for (const TensorView& t : tensors)
      ck.tensors.push_back({t.name, t.shape, {t.data.begin(), t.data.end()}});
  };
  Model straight = model_of(7);
  train(straight, recipe(3), data, deferring, opt);
  // After epoch 1's 15 steps: doubled twice from 1024, one clean step since.
  const CheckpointTensor* saved = ck.find("optimizer.loss_scaler");
  REQUIRE(saved != nullptr);
  CHECK(saved->data == std::vector<float>{4096, 1});
  REQUIRE(at_end.size() == 2);

  Model resumed = model_of(99);
  TrainOptions ropt;
  ropt.measure_latency = false;
  ropt.resume = &ck;
  ropt.checkpoint_epochs = {3};
  std::vector<float> resumed_end;
  ropt.on_checkpoint = [&](const nlohmann::json&, std::span<const TensorView> tensors) {
    for (const TensorView& t : tensors)
      if (t.name == "optimizer.loss_scaler") resumed_end.assign(t.data.begin(), t.data.end());
  };
  train(resumed, recipe(3), data, deferring, ropt);
  CHECK(at_end == std::vector<float>{65536, 3});  // 45 steps from 1024
  CHECK(resumed_end == at_end);                   // not 30 steps' worth from 1024
  CHECK(weights(resumed) == weights(straight));

  // A checkpoint is a file from outside: a scale that is not finite is refused.
  for (CheckpointTensor& t : ck.tensors)
    if (t.name == "optimizer.loss_scaler") t.data[0] = std::numeric_limits<float>::quiet_NaN();
  Model refused = model_of(99);
  const Error e = test::error_of([&] { train(refused, recipe(3), data, deferring, ropt); });
  CHECK(std::string(e.what()).find("'optimizer.loss_scaler' is not 2 finite values") !=
        std::string::npos);
}

TEST_CASE("engine: a run ahead of the loop that diverges is stopped at the epoch's sums") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  Recipe r = recipe(2);
  r.set("lr", "1e30", "test");
  r.set("schedule", "constant", "test");
  DeferringBackend deferring(100);
  TrainOptions opt;
  opt.measure_latency = false;
  Model m = model_of(3);
  CHECK_THROWS_WITH_AS(train(m, r, data, deferring, opt), doctest::Contains("diverged in epoch 1"),
                       Error);
  // The host engine has the loss of each step and stops at the first.
  auto cpu = make_cpu_backend(1);
  Model h = model_of(3);
  CHECK_THROWS_WITH_AS(train(h, r, data, *cpu, opt), doctest::Contains("diverged at epoch 1, step"),
                       Error);
}

TEST_CASE("engine: a time budget re-plans a run ahead of the loop and completes its schedule") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  // A budget of a few epochs as this machine runs them now.
  auto cpu = make_cpu_backend(1);
  Model probe = model_of(3);
  TrainOptions po;
  po.measure_latency = false;
  po.evaluate_test = false;
  const TrainReport one = train(probe, recipe(1), data, *cpu, po);
  const double epoch_s = one.train_seconds;
  // A budget of a fraction of a second is shorter than what a loaded
  // machine may take from the process at once: a stall longer than the time
  // left ends the run by its budget before a re-plan can shorten it. So a
  // run stopped that way is tried again with twice the budget (at most 4
  // tries), until the machine's noise is small beside it.
  TrainReport rep;
  int offered = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    Recipe r = recipe(1);
    r.set("time_budget_s", std::to_string((4 * epoch_s + 0.05) * (1 << attempt)), "test");
    r.set("epochs", "0", "test");
    DeferringBackend deferring(8);
    Model m = model_of(3);
    TrainOptions opt;
    opt.measure_latency = false;
    rep = train(m, r, data, deferring, opt);
    offered = deferring.offered;
    MESSAGE("try " << attempt + 1 << ": " << rep.epochs.size() << " epochs, " << rep.steps << " of "
                   << rep.planned_steps << " planned steps, " << rep.replans << " re-plans");
    if (rep.steps == rep.planned_steps) break;
  }
  CHECK(offered == 2);  // the probe's engine and the run's
  CHECK(rep.steps > 0);
  CHECK(rep.steps == rep.planned_steps);
  CHECK(!rep.epochs.empty());
}

TEST_CASE("engine: data-parallel ranks ahead of the loop train as host-engine ranks do") {
  const auto data = synthetic({1, 12, 12}, 10, 300);
  auto train_ranks = [&](bool deferred) {
    auto group = make_thread_group(2);
    std::vector<Model> models{model_of(1), model_of(2)};  // rank 0's weights are broadcast
    std::vector<TrainReport> reports(2);
    std::vector<std::thread> ranks;
    for (int k = 0; k < 2; ++k)
      ranks.emplace_back([&, k] {
        DeferringBackend deferring(5);
        auto cpu = make_cpu_backend(1);
        TrainOptions o;
        o.measure_latency = false;
        o.comm = group[static_cast<size_t>(k)].get();
        o.bucket_bytes = 4096;
        Backend& b = deferred ? static_cast<Backend&>(deferring) : *cpu;
        reports[static_cast<size_t>(k)] =
            train(models[static_cast<size_t>(k)], recipe(2), data, b, o);
      });
    for (auto& t : ranks) t.join();
    CHECK(weights(models[0]) == weights(models[1]));
    return std::make_pair(reports[0], weights(models[0]));
  };
  const auto [a, wa] = train_ranks(false);
  const auto [b, wb] = train_ranks(true);
  same_epochs(a.epochs, b.epochs);
  CHECK(wa == wb);
}
