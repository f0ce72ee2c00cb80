#pragma once
// The GPU backend behind the trainer's Backend interface: every op of the
// layer graph forward and backward through cuDNN (convolution, batch norm,
// activations, pooling) and cuBLAS (linear), with our own kernels
// (trainer/cuda/ops.h, kernels.h) for the rest, fp32 NCHW.
//
// Through the Network interface the host Model stays the truth, as with the
// CPU backend: train_step uploads the parameters and running statistics, runs
// the step on the GPU, and writes the gradients and statistics back; so the
// CPU backend is the oracle of every op (tests/gpu/test_cuda_network.cpp).
// train() on this backend runs through its resident engine instead
// (trainer/cuda/resident.h): the data set, the optimizer and the schedule on
// the GPU and a step captured in a CUDA graph, built on the same network.
#include <memory>

#include "trainer/network.h"

namespace minas::cuda {

// On GPU `device`; throws Error if there is none such.
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace minas::cuda
