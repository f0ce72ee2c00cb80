// train_on_gpu (trainer/cuda/backend.h): training with the data set, the
// optimizer and the schedule resident on the GPU, a step replayed as a CUDA
// graph, and data parallelism over NCCL (trainer/cuda/device_reducer.h).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "trainer/cuda/backend.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/cuda/device_reducer.h"
#include "trainer/cuda/kernels.h"
#include "trainer/cuda/memory.h"
#include "trainer/cuda/nccl_comm.h"
#include "trainer/cuda/network.h"
#include "trainer/data.h"
#include "trainer/optim.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace minas::cuda {

TrainReport train_on_gpu(Model& model, const Recipe& recipe, const data::TrainTest& data,
                         int device, const GpuTrainOptions& options) {
  using Clock = std::chrono::steady_clock;
  recipe.validate("recipe");
  if (recipe.epochs <= 0 || recipe.time_budget_s > 0)
    throw Error("recipe", "training on the GPU needs an epoch budget (epochs > 0, no time budget)");
  const LayerGraph& g = model.graph();
  TrainSplit sp = train_split(g, recipe, data);
  const int batch = static_cast<int>(recipe.batch);
  NcclCommunicator* comm = options.comm && options.comm->size() > 1 ? options.comm : nullptr;
  const int rank = comm ? comm->rank() : 0;
  if (comm) {
    if (!options.host || options.host->size() != comm->size())
      throw Error("train_on_gpu", "data parallel needs the host group of the same ranks");
    if (comm->device() != device)
      throw Error("train_on_gpu",
                  "rank " + std::to_string(rank) + " trains on cuda:" + std::to_string(device) +
                      " but its communicator is on cuda:" + std::to_string(comm->device()));
    // As train(): every N-th image from the r-th, shards of equal size.
    const size_t ranks = static_cast<size_t>(comm->size()), each = sp.train.size() / ranks;
    std::vector<uint32_t> shard;
    for (size_t k = 0; k < each; ++k)
      shard.push_back(sp.train[k * ranks + static_cast<size_t>(rank)]);
    sp.train = std::move(shard);
    if (sp.train.size() < static_cast<size_t>(batch))
      throw Error("recipe: /batch", "batch " + std::to_string(batch) + " per rank is larger than " +
                                        "the " + std::to_string(sp.train.size()) +
                                        " training images of rank " + std::to_string(rank));
  }
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.augment = {static_cast<int>(recipe.crop_pad), recipe.hflip};
  lo.norm = sp.norm;
  lo.seed = recipe.seed;
  const int64_t per_epoch = static_cast<int64_t>(sp.train.size()) / batch;
  const uint64_t total = static_cast<uint64_t>(recipe.epochs) * static_cast<uint64_t>(per_epoch);
  const LrSchedule schedule(recipe, static_cast<uint64_t>(per_epoch), total);

  CudaBackend backend(device);
  NetworkOptions no;
  no.label_smoothing = static_cast<float>(recipe.label_smoothing);
  no.seed = recipe.seed + static_cast<uint64_t>(rank) * 0x9e3779b97f4a7c15ULL;  // masks per rank
  no.precision = recipe.precision;
  auto net = backend.compile_cuda(model, batch, NetMode::train, no);
  const cudaStream_t s = net->stream();
  net->upload_state();
  std::unique_ptr<DeviceReducer> reducer;
  if (comm) {
    // Every rank starts from rank 0's weights and statistics.
    for (size_t p = 0; p < model.params().size(); ++p)
      comm->broadcast(std::span<float>(net->param(p), model.params()[p].size()), 0);
    for (size_t b = 0; b < model.buffers().size(); ++b)
      comm->broadcast(std::span<float>(net->buffer(b), model.buffers()[b].size()), 0);
    reducer = std::make_unique<DeviceReducer>(*net, model, *comm, options.bucket_bytes);
    net->on_enqueued = [r = reducer.get()](int layer) { r->layer_enqueued(layer); };
  }

  // The data set, its normalization table and the schedule, once.
  const data::Normalizer normalizer(sp.norm, data.train.shape.c);
  std::vector<float> table;
  for (int c = 0; c < data.train.shape.c; ++c)
    table.insert(table.end(), normalizer.table(c), normalizer.table(c) + 256);
  Buffer<uint8_t> pixels = to_device(data.train.pixels, s),
                  labels = to_device(data.train.labels, s);
  Buffer<float> tab = to_device(table, s);
  std::vector<float> lr(total + 1), momentum(total + 1);
  for (uint64_t k = 0; k <= total; ++k) {
    const uint64_t at = std::min(k, total ? total - 1 : 0);
    lr[k] = static_cast<float>(schedule.lr(at));
    momentum[k] = static_cast<float>(schedule.momentum(at));
  }
  Buffer<float> lr_d = to_device(lr, s), mom_d = to_device(momentum, s);
  Buffer<int64_t> step = to_device(std::vector<int64_t>{0}, s);
  data::EpochPlan plan = data::epoch_plan(sp.train, lo, 0);
  Buffer<uint32_t> plan_index = to_device(plan.index, s);
  Buffer<uint8_t> plan_dy = to_device(plan.dy, s), plan_dx = to_device(plan.dx, s),
                  plan_flip = to_device(plan.flip, s);
  const DeviceData dd{pixels.get(),       labels.get(),       data.train.shape.c,
                      data.train.shape.h, data.train.shape.w, tab.get()};
  const DevicePlan dp{plan_index.get(), plan_dy.get(), plan_dx.get(), plan_flip.get(), plan.pad};

  // The optimizer: Optimizer's rules per tensor, its momentum on the device.
  Optimizer reference(recipe);
  std::vector<Buffer<float>> momentum_buf, norms;
  std::vector<DeviceRule> rules;
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
    rules.push_back(d);
    momentum_buf.push_back(to_device(std::vector<float>(param.size(), 0.0f), s));
    norms.emplace_back(2);
  }
  // fp16: dynamic loss scaling on the device (PyTorch's GradScaler: 2^16 to
  // start, halved on an overflow, whose step is skipped, doubled after 2000
  // clean steps).
  const bool scaled = recipe.precision == Precision::fp16;
  Buffer<float> loss_scale = to_device(std::vector<float>{65536.0f}, s);
  Buffer<int> overflow = to_device(std::vector<int>{0}, s),
              good = to_device(std::vector<int>{0}, s);
  if (scaled) net->loss_scale = loss_scale.get();
  auto enqueue = [&] {
    if (scaled) zero_flag(overflow.get(), s);
    net->enqueue_resident_step(dd, dp, step.get(), per_epoch);
    if (reducer) reducer->finish();
    if (scaled)
      for (size_t p = 0; p < rules.size(); ++p)
        unscale_check(net->grad(p), model.params()[p].size(), loss_scale.get(), overflow.get(), s);
    for (size_t p = 0; p < rules.size(); ++p) {
      const size_t n = model.params()[p].size();
      if (rules[p].lars) {
        squared_norms_zero(norms[p].get(), s);
        squared_norms(net->param(p), net->grad(p), n, norms[p].get(), s);
      }
      momentum_update(net->param(p), net->grad(p), momentum_buf[p].get(), n, lr_d.get(),
                      mom_d.get(), step.get(), rules[p], norms[p].get(),
                      scaled ? overflow.get() : nullptr, s);
    }
    if (scaled) update_scale(loss_scale.get(), overflow.get(), good.get(), s);
    advance_step(step.get(), s);
  };
  cudaGraphExec_t exec = nullptr;
  cudaGraph_t graph = nullptr;
  struct GraphGuard {
    cudaGraphExec_t& e;
    cudaGraph_t& g;
    ~GraphGuard() {
      if (e) cudaGraphExecDestroy(e);
      if (g) cudaGraphDestroy(g);
    }
  } guard{exec, graph};
  const bool use_graph = options.graph && !net->has_dropout();
  if (use_graph) {
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s));
    MINAS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaStreamEndCapture(s, &graph);
      throw;
    }
    MINAS_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    MINAS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  }

  TrainReport report;
  report.params = model.parameter_count();
  report.macs = g.macs();
  auto eval_backend = make_cuda_backend(device);
  uint64_t done = 0;
  bool stopped = false;
  for (int epoch = 1; epoch <= recipe.epochs && !stopped; ++epoch) {
    if (epoch > 1) {
      plan = data::epoch_plan(sp.train, lo, static_cast<uint64_t>(epoch - 1));
      rewrite(plan_index, plan.index, s);
      rewrite(plan_dy, plan.dy, s);
      rewrite(plan_dx, plan.dx, s);
      rewrite(plan_flip, plan.flip, s);
    }
    net->zero_accumulators();
    EpochRecord rec;
    rec.epoch = epoch;
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s));
    const auto t0 = Clock::now();
    for (int64_t k = 0; k < per_epoch; ++k) {
      bool stop = options.should_stop && options.should_stop();
      if (comm) {  // the ranks stop together or not at all
        float flag = stop ? 1.0f : 0.0f;
        options.host->all_reduce_sum(std::span<float>(&flag, 1));
        stop = flag > 0;
      }
      if (stop) {
        stopped = true;
        break;
      }
      if (use_graph) {
        MINAS_CUDA_CHECK(cudaGraphLaunch(exec, s));
      } else {
        net->set_step(done);
        enqueue();
      }
      ++done;
      ++rec.steps;
      rec.lr = lr[done - 1];
    }
    auto [loss_sum, correct] = net->accumulators();  // waits for the epoch's steps
    rec.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rec.steps == 0) break;
    double seen = static_cast<double>(rec.steps) * batch;
    if (comm) {  // the epoch's figures over all ranks
      std::array<float, 3> sums{static_cast<float>(loss_sum), static_cast<float>(correct),
                                static_cast<float>(seen)};
      options.host->all_reduce_sum(sums);
      loss_sum = sums[0];
      correct = static_cast<int64_t>(sums[1]);
      seen = sums[2];
      // Rank 0's batch-norm statistics for its evaluation, as train() does.
      for (size_t b = 0; b < model.buffers().size(); ++b)
        comm->broadcast(std::span<float>(net->buffer(b), model.buffers()[b].size()), 0);
    }
    report.train_seconds += rec.seconds;
    rec.train_loss = loss_sum / seen;
    rec.train_acc = static_cast<double>(correct) / seen;
    rec.img_per_s = seen / rec.seconds;
    if (!std::isfinite(rec.train_loss))
      throw Error("training", "diverged in epoch " + std::to_string(epoch) + ": the loss is " +
                                  std::to_string(rec.train_loss));
    net->download_state();
    if (!sp.val.empty() && rank == 0)
      rec.val_acc = evaluate(model, *eval_backend, data.train, sp.val, sp.norm, options.eval_batch);
    report.epochs.push_back(rec);
    if (options.on_epoch && rank == 0) options.on_epoch(rec);
  }
  net->download_state();
  report.steps = static_cast<int64_t>(done);
  report.img_per_s = static_cast<double>(done) * batch / std::max(report.train_seconds, 1e-9);
  report.val_acc = report.epochs.empty() ? report.val_acc : report.epochs.back().val_acc;
  if (options.evaluate_test && rank == 0)
    report.test_acc = evaluate(model, *eval_backend, data.test, data::all_indices(data.test),
                               sp.norm, options.eval_batch);
  if (options.measure_latency && rank == 0)
    report.latency = measure_latency(model, *eval_backend, 30);
  return report;
}

}  // namespace minas::cuda
