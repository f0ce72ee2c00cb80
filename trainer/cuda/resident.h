#pragma once
// The GPU's resident engine (trainer/engine.h), which CudaBackend offers to
// train()'s loop: the training images resident on the GPU, each batch
// gathered and augmented there by the epoch's plan (data::epoch_plan: the
// host loader's very batches), the optimizer's update and the schedule on the
// device, fp16 loss scaling there, and one step (batch, forward, loss,
// backward, the gradients' all-reduce over NCCL, update) captured once as a
// CUDA graph and replayed (a network with dropout runs eagerly: its masks
// are drawn on the host, as the CPU's). The host only launches, and reads
// the loss and correct count when the loop asks for the epoch's sums.
#include <memory>

#include "trainer/cuda/cuda_backend.h"
#include "trainer/cuda/nccl_comm.h"
#include "trainer/engine.h"

namespace minas::cuda {

// Null when the setup's ranks (setup.comm) come without their NCCL group
// (setup.device_comm): the host engine averages such ranks' gradients.
// Throws Error for an NCCL communicator of another device or rank.
std::unique_ptr<StepEngine> make_resident_engine(CudaBackend& backend, Model& model,
                                                 const EngineSetup& setup);

}  // namespace minas::cuda
