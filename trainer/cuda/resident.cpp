// The GPU's resident engine (trainer/cuda/resident.h): the steps of train()'s
// one loop with the data set, the optimizer and the schedule on the GPU, a
// step replayed as a CUDA graph, and the gradients averaged over NCCL
// (trainer/cuda/device_reducer.h).
#include "trainer/cuda/resident.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/device_reducer.h"
#include "trainer/cuda/kernels.h"
#include "trainer/cuda/memory.h"
#include "trainer/cuda/network.h"
#include "trainer/data.h"
#include "trainer/optim.h"

namespace minas::cuda {
namespace {

class ResidentEngine final : public StepEngine {
 public:
  ResidentEngine(CudaBackend& backend, Model& model, const EngineSetup& setup,
                 NcclCommunicator* nccl)
      : model_(model),
        setup_(setup),
        nccl_(nccl),
        batch_(setup.loader.batch_size),
        per_epoch_(static_cast<int64_t>(setup.indices.size()) / setup.loader.batch_size) {
    if (per_epoch_ < 1)
      throw Error("recipe: /batch", "batch " + std::to_string(batch_) + " is larger than the " +
                                        std::to_string(setup.indices.size()) + " training images");
    net_ = backend.compile_cuda(model, batch_, NetMode::train, setup.network);
    s_ = net_->stream();
    net_->upload_state();
    if (nccl_) {
      reducer_ = std::make_unique<DeviceReducer>(*net_, model, *nccl_, setup.bucket_bytes);
      net_->on_enqueued = [r = reducer_.get()](int layer) { r->layer_enqueued(layer); };
    }

    // The data set and its normalization table, once; the plan of epoch 0.
    const data::Dataset& images = *setup.images;
    const data::Normalizer normalizer(setup.loader.norm, images.shape.c);
    std::vector<float> table;
    for (int c = 0; c < images.shape.c; ++c)
      table.insert(table.end(), normalizer.table(c), normalizer.table(c) + 256);
    pixels_ = to_device(images.pixels, s_);
    labels_ = to_device(images.labels, s_);
    table_ = to_device(table, s_);
    const data::EpochPlan plan = data::epoch_plan(setup_.indices, setup_.loader, 0);
    plan_index_ = to_device(plan.index, s_);
    plan_dy_ = to_device(plan.dy, s_);
    plan_dx_ = to_device(plan.dx, s_);
    plan_flip_ = to_device(plan.flip, s_);
    data_ = {pixels_.get(),  labels_.get(),  images.shape.c,
             images.shape.h, images.shape.w, table_.get()};
    device_plan_ = {plan_index_.get(), plan_dy_.get(), plan_dx_.get(), plan_flip_.get(), plan.pad};
    step_ = to_device(std::vector<int64_t>{0}, s_);

    // The optimizer: Optimizer's rules per tensor, its momentum on the device.
    const Recipe& recipe = *setup.recipe;
    Optimizer reference(recipe);
    for (size_t p = 0; p < model.params().size(); ++p) {
      const Param& param = model.params()[p];
      reference.add_param(nullptr, nullptr, 0, param.kind);
      const UpdateRule r = reference.rule(p, 1.0, 0.0);  // lr 1: shrink = 1 - wd when decoupled
      DeviceRule d;
      d.l2 = r.l2;
      d.decoupled_wd = 1.0f - r.shrink;
      d.nesterov = r.nesterov;
      d.lars = recipe.optimizer == OptimizerKind::lars && param.kind == ParamKind::weight;
      d.lars_eta = static_cast<float>(recipe.lars_eta);
      d.weight_decay = d.l2 + d.decoupled_wd;
      rules_.push_back(d);
      momentum_.push_back(to_device(std::vector<float>(param.size(), 0.0f), s_));
      norms_.emplace_back(kNormFloats);
    }
    // fp16: dynamic loss scaling on the device (PyTorch's GradScaler: 2^16 to
    // start, halved on an overflow, whose step is skipped, doubled after 2000
    // clean steps).
    scaled_ = recipe.precision == Precision::fp16;
    loss_scale_ = to_device(std::vector<float>{65536.0f}, s_);
    overflow_ = to_device(std::vector<int>{0}, s_);
    good_ = to_device(std::vector<int>{0}, s_);
    if (scaled_) net_->loss_scale = loss_scale_.get();
    use_graph_ = setup.capture_graph && !net_->has_dropout();
    for (cudaEvent_t& e : ahead_)
      MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    net_->zero_accumulators();
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }

  ~ResidentEngine() override {
    cudaStreamSynchronize(s_);
    drop_graph();
    for (cudaEvent_t e : ahead_)
      if (e) cudaEventDestroy(e);
  }

  uint64_t steps_per_epoch() const override { return static_cast<uint64_t>(per_epoch_); }

  // The rate and momentum of every step up to the plan's end, on the device:
  // a step reads them at its own number, so a replayed graph needs nothing
  // from the host. Rewritten in place when they fit (the steps already
  // issued have read theirs: a copy from pageable memory waits for them);
  // a longer plan needs new tables, and the graph that read the old ones is
  // captured again.
  void use_schedule(const ElasticSchedule& schedule) override {
    const uint64_t total = schedule.total_steps();
    std::vector<float> lr(total + 1), momentum(total + 1);
    for (uint64_t k = 0; k <= total; ++k) {
      const uint64_t at = std::min(k, total ? total - 1 : 0);
      lr[k] = static_cast<float>(schedule.lr(at));
      momentum[k] = static_cast<float>(schedule.momentum(at));
    }
    if (lr.size() > lr_.size()) {
      MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
      drop_graph();
      const size_t capacity = std::max(lr.size(), 2 * lr_.size());
      lr_ = Buffer<float>(capacity);
      mom_ = Buffer<float>(capacity);
    }
    MINAS_CUDA_CHECK(cudaMemcpyAsync(lr_.get(), lr.data(), lr.size() * sizeof(float),
                                     cudaMemcpyHostToDevice, s_));
    MINAS_CUDA_CHECK(cudaMemcpyAsync(mom_.get(), momentum.data(), momentum.size() * sizeof(float),
                                     cudaMemcpyHostToDevice, s_));
    last_step_ = total;
  }

  void start_epoch(uint64_t epoch) override {
    if (epoch != plan_epoch_) {
      // Copies from pageable memory: the steps of the last epoch finish first.
      const data::EpochPlan plan = data::epoch_plan(setup_.indices, setup_.loader, epoch);
      rewrite(plan_index_, plan.index, s_);
      rewrite(plan_dy_, plan.dy, s_);
      rewrite(plan_dx_, plan.dx, s_);
      rewrite(plan_flip_, plan.flip, s_);
      plan_epoch_ = epoch;
    }
    net_->zero_accumulators();
    epoch_steps_ = 0;
  }

  std::optional<StepStats> step(uint64_t step) override {
    if (!lr_.get() || step >= last_step_)
      throw Error("training", "step " + std::to_string(step) + " is outside the schedule's " +
                                  std::to_string(last_step_) + " steps");
    if (step != next_step_) {  // the first step, or a resumed run's
      const int64_t at = static_cast<int64_t>(step);
      MINAS_CUDA_CHECK(cudaMemcpyAsync(step_.get(), &at, sizeof at, cudaMemcpyHostToDevice, s_));
      MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    }
    // The first step runs eagerly even when steps are replayed: cuDNN's and
    // cuBLAS's first calls may set themselves up (load kernels, plan), which
    // is no work to capture. The same kernels in the same order, so the same
    // step either way. The graph is captured right after it, so the first
    // step carries every one-time cost (a time plan's probe times the steps
    // after the first).
    if (use_graph_ && warmed_) {
      if (!exec_) capture();
      MINAS_CUDA_CHECK(cudaGraphLaunch(exec_, s_));
    } else {
      net_->set_step(step);
      enqueue();
      warmed_ = true;
      if (use_graph_) capture();
    }
    next_step_ = step + 1;
    ++epoch_steps_;
    // The host runs at most kAhead steps ahead of the GPU, so its clock (the
    // time budget, the time plan, cancelling) tracks the GPU's work.
    if (next_step_ % kEvery == 0) {
      cudaEvent_t& e = ahead_[(next_step_ / kEvery) % ahead_.size()];
      MINAS_CUDA_CHECK(cudaEventSynchronize(e));  // recorded kAhead steps ago (or never)
      MINAS_CUDA_CHECK(cudaEventRecord(e, s_));
    }
    return std::nullopt;
  }

  StepSums epoch_sums() override {
    const auto [loss, correct] = net_->accumulators();  // waits for the steps
    return {loss, correct, static_cast<int64_t>(epoch_steps_) * batch_};
  }

  void sync_model() override { net_->download_state(); }

  void share_state() override {
    if (!nccl_) return;
    for (size_t p = 0; p < model_.params().size(); ++p)
      nccl_->broadcast(std::span<float>(net_->param(p), model_.params()[p].size()), 0);
    share_buffers();
  }
  void share_buffers() override {
    if (!nccl_) return;
    for (size_t b = 0; b < model_.buffers().size(); ++b)
      nccl_->broadcast(std::span<float>(net_->buffer(b), model_.buffers()[b].size()), 0);
  }

  size_t momentum_count() const override { return momentum_.size(); }
  std::vector<float> momentum(size_t i) override {
    std::vector<float> out(model_.params().at(i).size());
    MINAS_CUDA_CHECK(cudaMemcpyAsync(out.data(), momentum_.at(i).get(), out.size() * sizeof(float),
                                     cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    return out;
  }
  void set_momentum(size_t i, std::span<const float> values) override {
    if (values.size() != model_.params().at(i).size())
      throw Error("resume", "momentum " + std::to_string(i) + " has " +
                                std::to_string(values.size()) + " values, the network's " +
                                std::to_string(model_.params()[i].size()));
    MINAS_CUDA_CHECK(cudaMemcpyAsync(momentum_[i].get(), values.data(),
                                     values.size() * sizeof(float), cudaMemcpyHostToDevice, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  std::vector<float> loss_scaler() override {
    if (!scaled_) return {};
    float scale = 0;
    int good = 0;
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(&scale, loss_scale_.get(), sizeof scale, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaMemcpyAsync(&good, good_.get(), sizeof good, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    return {scale, static_cast<float>(good)};
  }
  void set_loss_scaler(std::span<const float> state) override {
    if (!scaled_) return;
    if (state.size() != 2 || !(state[0] >= 1) || !(state[1] >= 0) ||
        !(state[1] < kScaleGrowthSteps) || state[1] != std::floor(state[1]))
      throw Error("resume",
                  "the loss scaler's state is not a scale of at least 1 and a count "
                  "of clean steps below " +
                      std::to_string(kScaleGrowthSteps));
    const float scale = state[0];
    const int good = static_cast<int>(state[1]);
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(loss_scale_.get(), &scale, sizeof scale, cudaMemcpyHostToDevice, s_));
    MINAS_CUDA_CHECK(cudaMemcpyAsync(good_.get(), &good, sizeof good, cudaMemcpyHostToDevice, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }

 private:
  static constexpr uint64_t kEvery = 16;  // steps between run-ahead marks
  static constexpr size_t kMarks = 4;     // so at most 64 steps ahead

  // One step on the stream: batch, forward, loss, backward, the gradients'
  // all-reduce, the update, the step counter. Nothing from the host.
  void enqueue() {
    if (scaled_) zero_flag(overflow_.get(), s_);
    net_->enqueue_resident_step(data_, device_plan_, step_.get(), per_epoch_);
    if (reducer_) reducer_->finish();
    if (scaled_)
      for (size_t p = 0; p < rules_.size(); ++p)
        unscale_check(net_->grad(p), model_.params()[p].size(), loss_scale_.get(), overflow_.get(),
                      s_);
    for (size_t p = 0; p < rules_.size(); ++p) {
      const size_t n = model_.params()[p].size();
      if (rules_[p].lars) {
        squared_norms(net_->param(p), net_->grad(p), n, norms_[p].get(), s_);
      }
      momentum_update(net_->param(p), net_->grad(p), momentum_[p].get(), n, lr_.get(), mom_.get(),
                      step_.get(), rules_[p], norms_[p].get(), scaled_ ? overflow_.get() : nullptr,
                      s_);
    }
    if (scaled_) update_scale(loss_scale_.get(), overflow_.get(), good_.get(), s_);
    advance_step(step_.get(), s_);
  }

  // Captures one step without running it.
  void capture() {
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    MINAS_CUDA_CHECK(cudaStreamBeginCapture(s_, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(s_, &broken);
      if (broken) cudaGraphDestroy(broken);
      throw;
    }
    MINAS_CUDA_CHECK(cudaStreamEndCapture(s_, &graph_));
    MINAS_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  void drop_graph() {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
    exec_ = nullptr;
    graph_ = nullptr;
  }

  Model& model_;
  const EngineSetup setup_;
  NcclCommunicator* nccl_;
  const int batch_;
  const int64_t per_epoch_;
  std::unique_ptr<CudaNetwork> net_;
  cudaStream_t s_ = nullptr;
  std::unique_ptr<DeviceReducer> reducer_;
  Buffer<uint8_t> pixels_, labels_;
  Buffer<float> table_;
  Buffer<uint32_t> plan_index_;
  Buffer<uint8_t> plan_dy_, plan_dx_, plan_flip_;
  uint64_t plan_epoch_ = 0;  // the epoch whose plan the buffers hold
  DeviceData data_;
  DevicePlan device_plan_;
  Buffer<int64_t> step_;      // the device's step counter
  uint64_t next_step_ = 0;    // what it holds once the issued steps have run
  uint64_t epoch_steps_ = 0;  // steps issued since start_epoch
  Buffer<float> lr_, mom_;    // the schedule, per step
  uint64_t last_step_ = 0;    // its length
  std::vector<DeviceRule> rules_;
  std::vector<Buffer<float>> momentum_, norms_;
  bool scaled_ = false;
  Buffer<float> loss_scale_;
  Buffer<int> overflow_, good_;
  bool use_graph_ = false;
  bool warmed_ = false;  // a step has run eagerly
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  std::array<cudaEvent_t, kMarks> ahead_{};
};

}  // namespace

std::unique_ptr<StepEngine> make_resident_engine(CudaBackend& backend, Model& model,
                                                 const EngineSetup& setup) {
  NcclCommunicator* nccl = nullptr;
  if (setup.comm && setup.comm->size() > 1) {
    // Ranks without their NCCL group average on the host: the host engine.
    nccl = dynamic_cast<NcclCommunicator*>(setup.device_comm);
    if (!nccl) return nullptr;
    if (nccl->device() != backend.device() || nccl->size() != setup.comm->size() ||
        nccl->rank() != setup.comm->rank())
      throw Error("train on " + backend.name(),
                  "rank " + std::to_string(setup.comm->rank()) + " of " +
                      std::to_string(setup.comm->size()) + "'s NCCL communicator is rank " +
                      std::to_string(nccl->rank()) + " of " + std::to_string(nccl->size()) +
                      " on cuda:" + std::to_string(nccl->device()));
  }
  return std::make_unique<ResidentEngine>(backend, model, setup, nccl);
}

}  // namespace minas::cuda
