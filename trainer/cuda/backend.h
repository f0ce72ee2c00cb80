#pragma once
// The GPU backend behind the trainer's Backend interface: every op of the
// layer graph forward and backward through cuDNN (convolution, batch norm,
// activations, pooling) and cuBLAS (linear), with our own kernels
// (trainer/cuda/ops.h, kernels.h) for the rest, fp32 NCHW.
//
// Through this interface the host Model stays the truth, as with the CPU
// backend: train_step uploads the parameters and running statistics, runs
// the step on the GPU, and writes the gradients and statistics back; so the
// CPU backend is the oracle of every op (tests/gpu/test_cuda_network.cpp).
// Training with everything resident on the GPU (the data set, the optimizer,
// a step captured in a CUDA graph) builds on the same network.
#include <functional>
#include <memory>

#include "trainer/cuda/nccl_comm.h"
#include "trainer/data.h"
#include "trainer/network.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace minas::cuda {

// On GPU `device`; throws Error if there is none such.
std::unique_ptr<Backend> make_cuda_backend(int device);

struct GpuTrainOptions {
  // Capture one training step in a CUDA graph and replay it (a network with
  // dropout runs eagerly: its masks are drawn on the host, as the CPU's).
  bool graph = true;
  bool evaluate_test = true;
  bool measure_latency = true;
  int eval_batch = 500;
  std::function<void(const EpochRecord&)> on_epoch;  // after each epoch's validation
  std::function<bool()> should_stop;                 // polled before every step
  // Data parallel over the GPUs of a NCCL group (each rank calls train_on_gpu
  // on its own thread with its comm's device): rank r trains on every N-th
  // training image from the r-th; the gradients are all-reduced on the GPU in
  // buckets of bucket_bytes, each started as soon as backward has enqueued
  // its last layer, on the communicator's stream, inside the captured step;
  // `host` (the same ranks, on the host: make_thread_group) decides together
  // each step whether to stop. Only rank 0 evaluates, calls on_epoch and
  // reports validation and test figures.
  NcclCommunicator* comm = nullptr;
  Communicator* host = nullptr;
  size_t bucket_bytes = size_t{4} << 20;
};

// train() with everything on the GPU: the training images resident there,
// each batch gathered and augmented by the epoch's plan (data::epoch_plan:
// the CPU loader's very batches), the optimizer's update and the learning
// rate schedule on the device, and one step (batch, forward, loss, backward,
// update) replayed as a CUDA graph; the host reads the loss once an epoch.
// The split, normalization, recipe and report are train()'s; it needs an
// epoch budget (no time budget). The model is read at the start and written
// at every epoch's end.
TrainReport train_on_gpu(Model& model, const Recipe& recipe, const data::TrainTest& data,
                         int device, const GpuTrainOptions& options = {});

}  // namespace minas::cuda
