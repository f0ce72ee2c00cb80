#include "trainer/cuda/kernels.h"

#include <cmath>

#include "trainer/cuda/check.h"

namespace minas::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 64 ? b : 65535 * 64);
}

// One thread per output value of the batch (sample, channel, y, x).
__global__ void gather_kernel(DeviceData data, DevicePlan plan, const int64_t* step,
                              int64_t per_epoch, int n, float* x, int32_t* y) {
  const int64_t first = (*step % per_epoch) * n;
  const size_t plane = static_cast<size_t>(data.h) * data.w;
  const size_t image = plane * data.c;
  const size_t total = image * n;
  for (size_t o = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(o / image);
    const size_t rest = o % image;
    const int c = static_cast<int>(rest / plane);
    const int yy = static_cast<int>((rest % plane) / data.w);
    const int xo = static_cast<int>(rest % data.w);
    const int64_t k = first + i;
    const uint32_t index = plan.index[k];
    const float* table = data.table + c * 256;
    // Output column xo holds source column x of the unflipped crop, x = w-1-xo when flipped.
    const int xc = plan.flip[k] ? data.w - 1 - xo : xo;
    const int sy = yy + plan.dy[k] - plan.pad, sx = xc + plan.dx[k] - plan.pad;
    float v = table[0];  // raw pixel 0: padding, as on the CPU
    if (sy >= 0 && sy < data.h && sx >= 0 && sx < data.w)
      v = table[data.pixels[index * image + c * plane + static_cast<size_t>(sy) * data.w + sx]];
    x[o] = v;
    if (rest == 0) y[i] = data.labels[index];
  }
}

// One block per row: the row's maximum, log-sum-exp, loss and gradient.
__global__ void xent_kernel(const float* logits, const int32_t* labels, int n, int k,
                            float smoothing, float* dlogits, double* loss_sum,
                            unsigned long long* correct) {
  const int row = blockIdx.x;
  if (row >= n) return;
  const float* z = logits + static_cast<size_t>(row) * k;
  __shared__ double s_sum;
  __shared__ int s_best;
  if (threadIdx.x == 0) {
    // First maximum, as the CPU's argmax: k is small (the classes).
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += exp(static_cast<double>(z[j] - z[best]));
    s_sum = sum;
    s_best = best;
  }
  __syncthreads();
  const int best = s_best;
  const double log_sum = log(s_sum) + z[best];
  const double off = static_cast<double>(smoothing) / k, on = 1.0 - smoothing + off;
  const int label = labels[row];
  double part = 0;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    const double q = j == label ? on : off;
    part -= q * (z[j] - log_sum);
    if (dlogits)
      dlogits[static_cast<size_t>(row) * k + j] = static_cast<float>((exp(z[j] - log_sum) - q) / n);
  }
  atomicAdd(loss_sum, part);
  if (threadIdx.x == 0 && best == label) atomicAdd(correct, 1ULL);
}

// Each of kNormBlocks blocks sums a fixed share of the tensor in a fixed
// tree into its own pair of partials; one thread then adds the pairs in
// block order. So the norms (and the LARS step) come out the same at every
// run; atomics across blocks would add in arrival order.
__global__ void norms_kernel(const float* w, const float* g, size_t n, float* partials) {
  __shared__ float sw[kThreads], sg[kThreads];
  float a = 0, b = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    a += w[i] * w[i];
    b += g[i] * g[i];
  }
  sw[threadIdx.x] = a;
  sg[threadIdx.x] = b;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sw[threadIdx.x] += sw[threadIdx.x + s];
      sg[threadIdx.x] += sg[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = sw[0];
    partials[2 * blockIdx.x + 1] = sg[0];
  }
}

__global__ void norms_total_kernel(const float* partials, int blocks, float* norms) {
  float a = 0, b = 0;
  for (int k = 0; k < blocks; ++k) {
    a += partials[2 * k];
    b += partials[2 * k + 1];
  }
  norms[0] = a;
  norms[1] = b;
}

__global__ void update_kernel(float* w, const float* g, float* buf, size_t n, const float* lr_table,
                              const float* mom_table, const int64_t* step, DeviceRule rule,
                              const float* norms, const int* skip) {
  if (skip && *skip) return;
  const float lr = lr_table[*step], mu = mom_table[*step];
  float ratio = 1.0f;
  if (rule.lars) {
    // lars_trust_ratio(): 1 when ||w|| or the denominator is 0.
    const float w_norm = sqrtf(norms[0]), g_norm = sqrtf(norms[1]);
    const float denominator = g_norm + rule.weight_decay * w_norm;
    if (w_norm > 0 && denominator > 0 && isfinite(denominator))
      ratio = rule.lars_eta * w_norm / denominator;
  }
  const float shrink = 1.0f - lr * rule.decoupled_wd;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float d = ratio * (g[i] + rule.l2 * w[i]);
    const float b = mu * buf[i] + d;
    buf[i] = b;
    w[i] = shrink * w[i] - lr * (rule.nesterov ? d + mu * b : b);
  }
}

__global__ void advance_kernel(int64_t* step) {
  *step += 1;
}

__global__ void scale_by_kernel(float* x, size_t n, const float* scale) {
  const float f = *scale;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    x[i] *= f;
}

__global__ void unscale_kernel(float* g, size_t n, const float* scale, int* overflow) {
  const float inv = 1.0f / *scale;
  bool bad = false;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float v = g[i] * inv;
    bad = bad || !isfinite(v);
    g[i] = v;
  }
  if (bad) *overflow = 1;
}

__global__ void zero_flag_kernel(int* flag) {
  *flag = 0;
}

__global__ void update_scale_kernel(float* scale, const int* overflow, int* good) {
  if (*overflow) {
    *scale = fmaxf(*scale * 0.5f, 1.0f);
    *good = 0;
  } else if (++*good >= kScaleGrowthSteps) {
    *scale *= 2.0f;
    *good = 0;
  }
}

}  // namespace

void gather_batch(const DeviceData& data, const DevicePlan& plan, const int64_t* step,
                  int64_t per_epoch, int n, float* x, int32_t* y, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(n) * data.c * data.h * data.w;
  gather_kernel<<<blocks_for(total), kThreads, 0, stream>>>(data, plan, step, per_epoch, n, x, y);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void softmax_xent(const float* logits, const int32_t* labels, int n, int k, float smoothing,
                  float* dlogits, double* loss_sum, unsigned long long* correct,
                  cudaStream_t stream) {
  if (n <= 0) return;
  xent_kernel<<<n, 32, 0, stream>>>(logits, labels, n, k, smoothing, dlogits, loss_sum, correct);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void squared_norms(const float* w, const float* g, size_t n, float* norms, cudaStream_t stream) {
  norms_kernel<<<kNormBlocks, kThreads, 0, stream>>>(w, g, n, norms + 2);
  MINAS_CUDA_CHECK(cudaGetLastError());
  norms_total_kernel<<<1, 1, 0, stream>>>(norms + 2, kNormBlocks, norms);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void momentum_update(float* w, const float* g, float* buf, size_t n, const float* lr,
                     const float* momentum, const int64_t* step, const DeviceRule& rule,
                     const float* norms, const int* skip, cudaStream_t stream) {
  if (n == 0) return;
  update_kernel<<<blocks_for(n), kThreads, 0, stream>>>(w, g, buf, n, lr, momentum, step, rule,
                                                        norms, skip);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void scale_by(float* x, size_t n, const float* scale, cudaStream_t stream) {
  if (n == 0) return;
  scale_by_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, scale);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void unscale_check(float* g, size_t n, const float* scale, int* overflow, cudaStream_t stream) {
  if (n == 0) return;
  unscale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(g, n, scale, overflow);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void zero_flag(int* flag, cudaStream_t stream) {
  zero_flag_kernel<<<1, 1, 0, stream>>>(flag);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void update_scale(float* scale, const int* overflow, int* good_steps, cudaStream_t stream) {
  update_scale_kernel<<<1, 1, 0, stream>>>(scale, overflow, good_steps);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

void advance_step(int64_t* step, cudaStream_t stream) {
  advance_kernel<<<1, 1, 0, stream>>>(step);
  MINAS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace minas::cuda
