#pragma once
// Training one candidate: the one training loop of every backend (it drives
// a StepEngine, trainer/engine.h), validation each epoch, then the test
// figure and the inference latency.
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/checkpoint.h"
#include "trainer/comm.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/recipe.h"

namespace minas {

// An epoch's figures, or (with `at` set) a validation inside an epoch and
// the epoch's figures up to it.
struct EpochRecord {
  int epoch = 0;             // from 1
  std::optional<double> at;  // a point of TrainOptions::validate_at: epochs trained then
  int64_t steps = 0;         // optimizer steps in this epoch
  double train_loss = 0;     // mean over the epoch's steps
  double train_acc = 0;      // on the augmented training batches
  double val_acc = std::numeric_limits<double>::quiet_NaN();  // NaN without a validation split
  double lr = 0;                                              // at the epoch's last step
  double seconds = 0;                                         // wall time of the epoch's steps
  double img_per_s = 0;
};

struct Latency {
  double batch1_ms = 0, batch64_ms = 0;  // medians, batch norm folded
  int threads = 0;
  int runs = 0;  // timed runs of each, after warm-up
};

struct TrainReport {
  double val_acc = std::numeric_limits<double>::quiet_NaN();
  double test_acc = std::numeric_limits<double>::quiet_NaN();
  int64_t params = 0, macs = 0;
  Latency latency;
  double train_seconds = 0;  // the step loop alone: no evaluation, no setup
  double img_per_s = 0;      // training images per second of train_seconds
  int64_t steps = 0;
  // The schedule's length at the end: the epochs' steps, or with a time
  // budget the last plan (steps may stop short of it at the budget), and how
  // many times that plan was made again as the run measured its speed.
  int64_t planned_steps = 0;
  int replans = 0;
  std::vector<EpochRecord> epochs;
  std::vector<EpochRecord> points;  // the validations inside epochs (validate_at) reached
  nlohmann::json to_json() const;
};

struct TrainOptions {
  bool evaluate_test = true;  // the test set is touched only for this final figure
  bool measure_latency = true;
  int latency_runs = 30;
  int eval_batch = 500;
  std::function<void(const EpochRecord&)> on_epoch;  // after each epoch's validation
  // Points inside epochs, in epochs, ascending and none whole (0.25: after a
  // quarter of the first epoch's steps, rounded to the nearest step inside
  // that epoch; ASHA's fractional rungs), where the run validates too and
  // calls on_point. Validating changes nothing of the training itself.
  // Points past the run's end or before a resumed run's start are not reached.
  std::vector<double> validate_at;
  std::function<void(const EpochRecord&)> on_point;
  // Polled every step: a cancel. The run stops after that step and returns
  // at once: no validation of the partial epoch, no test figure, no latency.
  std::function<bool()> should_stop;
  // The training state after each epoch listed (after on_epoch): the
  // network's tensors (checkpoint_views) and the optimizer's momentum
  // ("optimizer.momentum.I"), with info {"epoch", "step", "steps_per_epoch",
  // "total_steps"} (with a time budget, the plan of the moment); saved as a
  // checkpoint, it is what `resume` takes.
  std::vector<int> checkpoint_epochs;
  std::function<void(const nlohmann::json& info, std::span<const TensorView> tensors)>
      on_checkpoint;
  // Continue a run from such a checkpoint of the same network, recipe and
  // data: training goes on after its epoch exactly as if it had never
  // stopped (same batches, augmentation, learning rate and momentum), and the
  // report holds the epochs after it. Needs an epoch budget, not a time one.
  const Checkpoint* resume = nullptr;
  // Data parallel over the communicator's ranks (each rank calls train() on
  // its own thread or process, with the same model seed, recipe and data):
  // rank r trains on every N-th training image from the r-th, recipe.batch
  // images a step, and the gradients are averaged over the ranks in buckets of
  // bucket_bytes while backward runs. Every rank ends with the same weights
  // and rank 0's batch-norm statistics and reports the same epochs; only rank
  // 0 evaluates the test set and measures latency. Null or one rank: alone.
  Communicator* comm = nullptr;
  size_t bucket_bytes = size_t{4} << 20;
  // Data parallel on devices: the same ranks as `comm` over the devices'
  // memory (NCCL), which a resident engine averages its gradients over
  // (train_on_gpus sets it). Without it such ranks train through the host engine.
  Communicator* device_comm = nullptr;
  // The steps run through the backend's resident engine when it offers one
  // (Backend::resident_engine; the GPU's keeps the data set, the optimizer and
  // the schedule on the device); false: through the host engine on any
  // backend, the oracle a resident engine is tested against.
  bool resident = true;
  // A resident engine may capture its step in a graph and replay it; false:
  // every step is issued afresh (eager).
  bool capture_graph = true;
  // A time budget (recipe.time_budget_s) counts from this instant, by default
  // the call's: a caller that must finish by a deadline passes when it began.
  std::optional<std::chrono::steady_clock::time_point> budget_start;
  // For tests of the time plan: takes the probe's measured seconds per step
  // and returns the figure the first plan is made from (a probe made slow or
  // fast). Rank 0's is the one used.
  std::function<double(double)> probe_filter;
};

// Trains `model` with `recipe` on `data`. The validation split (recipe.val_size
// images, stratified, seeded) is held out of the training set; with
// recipe.subset_* a stratified, seeded sample of the rest is trained on; with
// recipe.run_fraction below 1 the run stops after that share of its steps
// (recipe.fraction_schedule says over which length the schedule is planned). Throws Error
// for data that does not fit the network and for a diverging run (a loss that
// is not finite), naming the epoch and step.
TrainReport train(Model& model, const Recipe& recipe, const data::TrainTest& data, Backend& backend,
                  const TrainOptions& options = {});

// What train() trains and validates on: the recipe's stratified, seeded
// validation split of the training set (none when val_size is 0), the
// training images (what the split leaves, or the recipe's subset of it:
// class by class in proportion, seeded apart from the split) and the
// normalization (Fashion-MNIST's published one for it, else the training
// images' own). Throws Error for data that does not fit the network, naming
// both, for a subset larger than the training images and for a batch larger
// than the training images.
struct TrainSplit {
  std::vector<uint32_t> train, val;
  data::Normalization norm;
};
TrainSplit train_split(const LayerGraph& g, const Recipe& recipe, const data::TrainTest& data);

// Accuracy of the model on the given images, in eval mode.
double evaluate(Model& model, Backend& backend, const data::Dataset& ds,
                std::span<const uint32_t> indices, const data::Normalization& norm, int batch);

// Median inference time at batch 1 and 64 with batch norm folded, after
// warm-up; without batch64, batch 1 alone (batch64_ms stays 0): the
// deployment figure, at a 64th of the cost.
Latency measure_latency(Model& model, Backend& backend, int runs, bool batch64 = true);

// The model's parameters and running statistics as checkpoint tensors.
std::vector<TensorView> checkpoint_views(const Model& model);
std::vector<TensorSpec> checkpoint_specs(const Model& model);
// Copies a checked checkpoint's tensors into the model.
void load_weights(Model& model, const Checkpoint& checkpoint);

}  // namespace minas
