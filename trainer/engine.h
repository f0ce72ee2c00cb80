#pragma once
// The steps of one training run, as a backend carries them out: train()
// (trainer/train.h) is the only training loop, and it drives a StepEngine.
// The loop owns everything a run decides (epochs, the time plan and its
// re-plans, validations, checkpoints, resume, cancelling, the ranks' common
// decisions); the engine owns where the work happens: where the batches come
// from, where the network and the optimizer run, how gradients are averaged
// over the ranks.
//
// Every backend can train through the host engine (make_host_engine): the
// data loader and the optimizer on the host, the network's steps through
// Backend::compile. A backend may offer more (Backend::resident_engine): the
// GPU's keeps the data set, the optimizer and the schedule on the device and
// replays a step captured in a CUDA graph, so the host only launches.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "trainer/comm.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/optim.h"
#include "trainer/recipe.h"

namespace minas {

// What an engine is built for: this rank's training images and how they are
// batched, the network's options, and the ranks it trains with.
struct EngineSetup {
  const Recipe* recipe = nullptr;
  const data::Dataset* images = nullptr;  // the training set the indices are into
  std::vector<uint32_t> indices;          // this rank's training images
  data::LoaderOptions loader;             // batch, shuffle, augmentation, normalization, seed
  NetworkOptions network;                 // label smoothing, dropout seed, precision
  // Data parallel: the ranks on the host (null alone). An engine whose
  // gradients live on a device averages them over `device_comm` (the same
  // ranks over device memory, e.g. NCCL) when it is given.
  Communicator* comm = nullptr;
  Communicator* device_comm = nullptr;
  size_t bucket_bytes = size_t{4} << 20;
  // A resident engine may capture its step (a CUDA graph) and replay it.
  bool capture_graph = true;
};

// The sums of an epoch's steps.
struct StepSums {
  double loss = 0;      // the summed per-image loss (label smoothing included)
  int64_t correct = 0;  // images whose argmax was their label
  int64_t images = 0;
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;
  // Steps in one epoch of this rank's images (full batches only).
  virtual uint64_t steps_per_epoch() const = 0;
  // The schedule the steps follow; called before the first step and again
  // whenever the loop re-plans it. The engine may keep a reference.
  virtual void use_schedule(const ElasticSchedule& schedule) = 0;
  // The next steps take their batches from epoch `epoch` (0-based: the
  // loader's order, augmentation and flips of that epoch), from its first.
  virtual void start_epoch(uint64_t epoch) = 0;
  // Step number `step` (0-based over the run): its batch, forward, loss,
  // backward, the gradients averaged over the ranks, the optimizer's update
  // with the schedule's rate and momentum at `step`. Returns the step's loss
  // (mean over the batch) and correct count when the engine has them at once
  // (the host engine); an engine that runs ahead of the host returns nothing,
  // and its figures come with epoch_sums().
  virtual std::optional<StepStats> step(uint64_t step) = 0;
  // Waits for every step issued and returns the sums of the steps since
  // start_epoch().
  virtual StepSums epoch_sums() = 0;
  // Waits for every step issued and brings the model's host copy (its
  // parameters and running statistics) up to date: before an evaluation, a
  // checkpoint or the end.
  virtual void sync_model() = 0;
  // Every rank's parameters and running statistics become rank 0's (once,
  // before the first step), or the running statistics alone (before an
  // evaluation, so every rank reports the same). Nothing alone.
  virtual void share_state() = 0;
  virtual void share_buffers() = 0;
  // The optimizer's momentum buffers, one per model parameter, for
  // checkpoints and resume.
  virtual size_t momentum_count() const = 0;
  virtual std::vector<float> momentum(size_t i) = 0;
  virtual void set_momentum(size_t i, std::span<const float> values) = 0;
  // Engines that scale the loss (fp16): the scaler's state, {scale, clean
  // steps since it last changed}, for checkpoints and resume, so a resumed
  // run goes on at the scale it had; empty (the default) where there is none.
  // set_loss_scaler throws Error for a state the scaler cannot have.
  virtual std::vector<float> loss_scaler() { return {}; }
  virtual void set_loss_scaler(std::span<const float> state) {}
};

// The engine every backend has: batches from data::BatchLoader, steps through
// backend.compile(model, batch, NetMode::train, setup.network), the host's
// Optimizer, gradients averaged by a GradientReducer over setup.comm.
std::unique_ptr<StepEngine> make_host_engine(Model& model, Backend& backend,
                                             const EngineSetup& setup);

}  // namespace minas
