#pragma once
// The GPU trainer's own kernels: the pieces no library op covers. Each is the
// device twin of a CPU function that is its specification and test oracle
// (tests/gpu/test_cuda_kernels.cpp): batches by an epoch plan
// (data::epoch_plan + data::transform_image), softmax cross entropy
// (trainer/loss.h), the momentum update and LARS (trainer/optim.h).
//
// Inside a training step nothing is read from the host: what changes from
// step to step (the step number, the learning rate and momentum of that step)
// is in device memory, so a step captured once in a CUDA graph replays as is.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace minas::cuda {

// ---- data ---------------------------------------------------------------------------------

// A data set resident on the GPU and one epoch's plan for it.
struct DeviceData {
  const uint8_t* pixels = nullptr;  // images x C x H x W
  const uint8_t* labels = nullptr;  // images
  int c = 0, h = 0, w = 0;
  const float* table = nullptr;  // C x 256 normalized values (data::Normalizer's table)
};
struct DevicePlan {
  const uint32_t* index = nullptr;  // per position of the epoch
  const uint8_t* dy = nullptr;
  const uint8_t* dx = nullptr;
  const uint8_t* flip = nullptr;
  int pad = 0;
};

// Batch `*step % per_epoch` of the epoch (positions batch * n ...): x gets n
// normalized, cropped and flipped images (NCHW floats), y their labels.
void gather_batch(const DeviceData& data, const DevicePlan& plan, const int64_t* step,
                  int64_t per_epoch, int n, float* x, int32_t* y, cudaStream_t stream);

// ---- loss ---------------------------------------------------------------------------------

// Softmax cross entropy with label smoothing over n rows of k logits, as
// softmax_cross_entropy(): dlogits (optional) gets the gradient of the mean;
// the batch's summed loss and number of rows whose argmax is the label are
// added to *loss_sum and *correct (device accumulators, read once an epoch).
void softmax_xent(const float* logits, const int32_t* labels, int n, int k, float smoothing,
                  float* dlogits, double* loss_sum, unsigned long long* correct,
                  cudaStream_t stream);

// ---- optimizer ----------------------------------------------------------------------------

// One tensor's update rule apart from the step's learning rate and momentum,
// which are read from lr[*step] and momentum[*step] (the whole schedule,
// uploaded once).
struct DeviceRule {
  float l2 = 0;            // coupled weight decay
  float decoupled_wd = 0;  // decoupled: w *= 1 - lr * decoupled_wd
  bool nesterov = false;
  bool lars = false;  // trust ratio from norms[0..1] = ||w||^2, ||g||^2
  float lars_eta = 0.001f;
  float weight_decay = 0;  // LARS's denominator term
};

// norms[0] = sum w^2, norms[1] = sum g^2 of one tensor (for LARS), summed
// in the same order at every call; norms has room for kNormFloats floats
// (the rest holds the blocks' partial sums).
inline constexpr int kNormBlocks = 64;
inline constexpr size_t kNormFloats = 2 + 2 * kNormBlocks;
void squared_norms(const float* w, const float* g, size_t n, float* norms, cudaStream_t stream);

// momentum_update() of one tensor of n elements; nothing when *skip (a
// loss-scaled step whose gradients overflowed; skip may be null).
void momentum_update(float* w, const float* g, float* buf, size_t n, const float* lr,
                     const float* momentum, const int64_t* step, const DeviceRule& rule,
                     const float* norms, const int* skip, cudaStream_t stream);

// ---- dynamic loss scaling (fp16) ----------------------------------------------------------

// x *= *scale (the loss gradient, before backward).
void scale_by(float* x, size_t n, const float* scale, cudaStream_t stream);
// g /= *scale; *overflow = 1 if any element is not finite (zero it first).
void unscale_check(float* g, size_t n, const float* scale, int* overflow, cudaStream_t stream);
void zero_flag(int* flag, cudaStream_t stream);
// After the step: an overflow halves the scale; kScaleGrowthSteps steps in a
// row without one double it (PyTorch's GradScaler defaults).
inline constexpr int kScaleGrowthSteps = 2000;
void update_scale(float* scale, const int* overflow, int* good_steps, cudaStream_t stream);

// *step += 1: the last kernel of a captured step.
void advance_step(int64_t* step, cudaStream_t stream);

}  // namespace minas::cuda
