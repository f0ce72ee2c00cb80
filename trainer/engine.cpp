#include "trainer/engine.h"

#include <algorithm>
#include <string>

#include "searchspace/error.h"
#include "trainer/data_parallel.h"

namespace minas {

std::unique_ptr<StepEngine> Backend::resident_engine(Model&, const EngineSetup&) {
  return nullptr;
}

namespace {

// The host engine: the loader's batches through a compiled network, the
// Optimizer over the model's host tensors, gradients averaged on the host.
class HostEngine final : public StepEngine {
 public:
  HostEngine(Model& model, Backend& backend, const EngineSetup& setup)
      : loader_(*setup.images, setup.indices, setup.loader), opt_(*setup.recipe) {
    NetworkOptions no = setup.network;
    if (setup.comm && setup.comm->size() > 1) {
      reducer_ = std::make_unique<GradientReducer>(model, *setup.comm, setup.bucket_bytes);
      no.on_layer_gradients = [r = reducer_.get()](int layer) { r->layer_ready(layer); };
    }
    net_ = backend.compile(model, setup.loader.batch_size, NetMode::train, no);
    for (Param& p : model.params()) opt_.add_param(p.value.data(), p.grad.data(), p.size(), p.kind);
  }

  uint64_t steps_per_epoch() const override { return loader_.batches_per_epoch(); }
  void use_schedule(const ElasticSchedule& schedule) override { schedule_ = &schedule; }

  void start_epoch(uint64_t epoch) override {
    if (epoch == epoch_ && taken_ == 0) return;
    if (epoch == epoch_ + 1 && taken_ == loader_.batches_per_epoch()) {
      // The loader says the epoch is over once, then goes on with the next.
      data::Batch b;
      if (loader_.next(b)) throw Error("training", "the loader's epoch is longer than planned");
    } else {
      loader_.reset(epoch);
    }
    epoch_ = epoch;
    taken_ = 0;
    sums_ = {};
  }

  std::optional<StepStats> step(uint64_t step) override {
    if (!schedule_) throw Error("training", "a step before the schedule was given");
    data::Batch b;
    if (!loader_.next(b))
      throw Error("training", "epoch " + std::to_string(epoch_ + 1) + " ended after " +
                                  std::to_string(taken_) + " batches");
    ++taken_;
    net_->set_step(step);
    const StepStats st = net_->train_step(b.x, b.y);
    if (reducer_) reducer_->finish();
    opt_.step(schedule_->lr(step), schedule_->momentum(step));
    sums_.loss += st.loss * b.n;
    sums_.correct += st.correct;
    sums_.images += b.n;
    return st;
  }

  StepSums epoch_sums() override { return sums_; }
  void sync_model() override {}  // the model is the truth here
  void share_state() override {
    if (reducer_) reducer_->broadcast_state(0);
  }
  void share_buffers() override {
    if (reducer_) reducer_->broadcast_buffers(0);
  }
  size_t momentum_count() const override { return opt_.size(); }
  std::vector<float> momentum(size_t i) override {
    const auto buf = opt_.momentum_buffer(i);
    return {buf.begin(), buf.end()};
  }
  void set_momentum(size_t i, std::span<const float> values) override {
    auto buf = opt_.momentum_buffer(i);
    if (values.size() != buf.size())
      throw Error("resume", "momentum " + std::to_string(i) + " has " +
                                std::to_string(values.size()) + " values, the network's " +
                                std::to_string(buf.size()));
    std::copy(values.begin(), values.end(), buf.begin());
  }

 private:
  data::BatchLoader loader_;
  Optimizer opt_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<Network> net_;
  const ElasticSchedule* schedule_ = nullptr;
  uint64_t epoch_ = 0;  // the loader's epoch
  uint64_t taken_ = 0;  // its batches taken
  StepSums sums_;       // of the epoch's steps
};

}  // namespace

std::unique_ptr<StepEngine> make_host_engine(Model& model, Backend& backend,
                                             const EngineSetup& setup) {
  if (!setup.recipe || !setup.images) throw Error("training", "an engine needs a recipe and data");
  return std::make_unique<HostEngine>(model, backend, setup);
}

}  // namespace minas
