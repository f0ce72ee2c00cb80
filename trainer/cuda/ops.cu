#include "trainer/cuda/ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "trainer/cuda/check.h"

namespace minas::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535u * 64u ? (b ? b : 1) : 65535u * 64u);
}

#define MINAS_GRID_LOOP(i, n)                                                          \
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<size_t>(gridDim.x) * blockDim.x)

__device__ float relu6(float v) {
  return fminf(fmaxf(v, 0.0f), 6.0f);
}

__global__ void hswish_f(const float* x, float* y, size_t n) {
  MINAS_GRID_LOOP(i, n) y[i] = x[i] * relu6(x[i] + 3.0f) / 6.0f;
}
__global__ void hswish_b(const float* x, const float* dy, float* dx, size_t n) {
  // d/dx x * relu6(x + 3) / 6: 0 below -3, 1 above 3, (2x + 3) / 6 between.
  MINAS_GRID_LOOP(i, n) {
    const float v = x[i];
    const float g = v < -3.0f ? 0.0f : v > 3.0f ? 1.0f : (2.0f * v + 3.0f) / 6.0f;
    dx[i] += dy[i] * g;
  }
}
__global__ void hsigmoid_f(const float* x, float* y, size_t n) {
  MINAS_GRID_LOOP(i, n) y[i] = relu6(x[i] + 3.0f) / 6.0f;
}
__global__ void hsigmoid_b(const float* x, const float* dy, float* dx, size_t n) {
  MINAS_GRID_LOOP(i, n) {
    const float v = x[i];
    dx[i] += v > -3.0f && v < 3.0f ? dy[i] / 6.0f : 0.0f;
  }
}
__global__ void acc(const float* src, float* dst, size_t n) {
  MINAS_GRID_LOOP(i, n) dst[i] += src[i];
}
__global__ void concat_f(const float* x, int n, int ck, int offset, int c, int hw, float* y) {
  const size_t total = static_cast<size_t>(n) * ck * hw;
  MINAS_GRID_LOOP(i, total) {
    const size_t b = i / (static_cast<size_t>(ck) * hw), rest = i % (static_cast<size_t>(ck) * hw);
    y[(b * c + offset) * hw + rest] = x[i];
  }
}
__global__ void concat_b(const float* dy, int n, int ck, int offset, int c, int hw, float* dx) {
  const size_t total = static_cast<size_t>(n) * ck * hw;
  MINAS_GRID_LOOP(i, total) {
    const size_t b = i / (static_cast<size_t>(ck) * hw), rest = i % (static_cast<size_t>(ck) * hw);
    dx[i] += dy[(b * c + offset) * hw + rest];
  }
}
__global__ void mul_f(const float* x, const float* scale, int n, int c, int hw, float* y) {
  const size_t total = static_cast<size_t>(n) * c * hw;
  MINAS_GRID_LOOP(i, total) y[i] = x[i] * scale[i / hw];
}
// One block per (sample, channel): dx for its plane and the reduction for dscale.
__global__ void mul_b(const float* x, const float* scale, const float* dy, int hw, float* dx,
                      float* dscale) {
  const size_t plane = blockIdx.x;
  const float s = scale[plane];
  __shared__ float part[kThreads];
  float sum = 0;
  for (int j = threadIdx.x; j < hw; j += blockDim.x) {
    const size_t k = plane * hw + j;
    dx[k] += dy[k] * s;
    sum += dy[k] * x[k];
  }
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) part[threadIdx.x] += part[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) dscale[plane] += part[0];
}
__global__ void mask_f(const float* x, const float* m, float* y, size_t n) {
  MINAS_GRID_LOOP(i, n) y[i] = x[i] * m[i];
}
__global__ void mask_b(const float* dy, const float* m, float* dx, size_t n) {
  MINAS_GRID_LOOP(i, n) dx[i] += dy[i] * m[i];
}
__global__ void to_bf16(const float* x, __nv_bfloat16* y, size_t n) {
  MINAS_GRID_LOOP(i, n) y[i] = __float2bfloat16(x[i]);
}
__global__ void to_fp16(const float* x, __half* y, size_t n) {
  MINAS_GRID_LOOP(i, n) y[i] = __float2half(x[i]);
}
__global__ void from_bf16(const __nv_bfloat16* x, float* y, size_t n, bool acc) {
  MINAS_GRID_LOOP(i, n) y[i] = (acc ? y[i] : 0.0f) + __bfloat162float(x[i]);
}
__global__ void from_fp16(const __half* x, float* y, size_t n, bool acc) {
  MINAS_GRID_LOOP(i, n) y[i] = (acc ? y[i] : 0.0f) + __half2float(x[i]);
}
// One thread per element, indexed in NCHW order: the 16-bit side is NHWC.
template <class T>
__global__ void to_nhwc(const float* x, T* y, int n, int c, int h, int w) {
  const size_t total = static_cast<size_t>(n) * c * h * w, hw = static_cast<size_t>(h) * w;
  MINAS_GRID_LOOP(i, total) {
    const size_t b = i / (c * hw), ch = (i / hw) % c, p = i % hw;
    y[(b * hw + p) * c + ch] = T(x[i]);
  }
}
template <class T>
__global__ void from_nhwc(const T* x, float* y, int n, int c, int h, int w, bool acc) {
  const size_t total = static_cast<size_t>(n) * c * h * w, hw = static_cast<size_t>(h) * w;
  MINAS_GRID_LOOP(i, total) {
    const size_t b = i / (c * hw), ch = (i / hw) % c, p = i % hw;
    const float v = static_cast<float>(x[(b * hw + p) * c + ch]);
    y[i] = acc ? y[i] + v : v;
  }
}
__global__ void scale_k(float* x, float f, size_t n) {
  MINAS_GRID_LOOP(i, n) x[i] *= f;
}
__global__ void colsum(const float* x, int rows, int cols, float* out) {
  MINAS_GRID_LOOP(j, static_cast<size_t>(cols)) {
    float s = 0;
    for (int r = 0; r < rows; ++r) s += x[static_cast<size_t>(r) * cols + j];
    out[j] = s;
  }
}

}  // namespace

#define MINAS_LAUNCH(kernel, n, s, ...)                 \
  do {                                                  \
    if ((n) == 0) break;                                \
    kernel<<<blocks(n), kThreads, 0, s>>>(__VA_ARGS__); \
    MINAS_CUDA_CHECK(cudaGetLastError());               \
  } while (0)

void hswish_forward(const float* x, float* y, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(hswish_f, n, s, x, y, n);
}
void hswish_backward(const float* x, const float* dy, float* dx, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(hswish_b, n, s, x, dy, dx, n);
}
void hsigmoid_forward(const float* x, float* y, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(hsigmoid_f, n, s, x, y, n);
}
void hsigmoid_backward(const float* x, const float* dy, float* dx, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(hsigmoid_b, n, s, x, dy, dx, n);
}
void accumulate(const float* src, float* dst, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(acc, n, s, src, dst, n);
}
void concat_forward(const float* x, int n, int ck, int offset, int c, int hw, float* y,
                    cudaStream_t s) {
  MINAS_LAUNCH(concat_f, static_cast<size_t>(n) * ck * hw, s, x, n, ck, offset, c, hw, y);
}
void concat_backward(const float* dy, int n, int ck, int offset, int c, int hw, float* dx,
                     cudaStream_t s) {
  MINAS_LAUNCH(concat_b, static_cast<size_t>(n) * ck * hw, s, dy, n, ck, offset, c, hw, dx);
}
void mul_forward(const float* x, const float* scale, int n, int c, int hw, float* y,
                 cudaStream_t s) {
  MINAS_LAUNCH(mul_f, static_cast<size_t>(n) * c * hw, s, x, scale, n, c, hw, y);
}
void mul_backward(const float* x, const float* scale, const float* dy, int n, int c, int hw,
                  float* dx, float* dscale, cudaStream_t s) {
  if (n * c == 0) return;
  mul_b<<<static_cast<unsigned>(n * c), kThreads, 0, s>>>(x, scale, dy, hw, dx, dscale);
  MINAS_CUDA_CHECK(cudaGetLastError());
}
void mask_forward(const float* x, const float* mask, float* y, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(mask_f, n, s, x, mask, y, n);
}
void mask_backward(const float* dy, const float* mask, float* dx, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(mask_b, n, s, dy, mask, dx, n);
}
void to_half(const float* x, void* out, size_t n, bool brain, cudaStream_t s) {
  if (brain)
    MINAS_LAUNCH(to_bf16, n, s, x, static_cast<__nv_bfloat16*>(out), n);
  else
    MINAS_LAUNCH(to_fp16, n, s, x, static_cast<__half*>(out), n);
}
void from_half(const void* x, float* out, size_t n, bool brain, bool accumulate, cudaStream_t s) {
  if (brain)
    MINAS_LAUNCH(from_bf16, n, s, static_cast<const __nv_bfloat16*>(x), out, n, accumulate);
  else
    MINAS_LAUNCH(from_fp16, n, s, static_cast<const __half*>(x), out, n, accumulate);
}
void to_half_nhwc(const float* x, void* out, int n, int c, int h, int w, bool brain,
                  cudaStream_t s) {
  const size_t total = static_cast<size_t>(n) * c * h * w;
  if (brain)
    MINAS_LAUNCH(to_nhwc<__nv_bfloat16>, total, s, x, static_cast<__nv_bfloat16*>(out), n, c, h, w);
  else
    MINAS_LAUNCH(to_nhwc<__half>, total, s, x, static_cast<__half*>(out), n, c, h, w);
}
void from_half_nhwc(const void* x, float* out, int n, int c, int h, int w, bool brain,
                    bool accumulate, cudaStream_t s) {
  const size_t total = static_cast<size_t>(n) * c * h * w;
  if (brain)
    MINAS_LAUNCH(from_nhwc<__nv_bfloat16>, total, s, static_cast<const __nv_bfloat16*>(x), out, n,
                 c, h, w, accumulate);
  else
    MINAS_LAUNCH(from_nhwc<__half>, total, s, static_cast<const __half*>(x), out, n, c, h, w,
                 accumulate);
}
void scale(float* x, float factor, size_t n, cudaStream_t s) {
  MINAS_LAUNCH(scale_k, n, s, x, factor, n);
}
void column_sums(const float* x, int rows, int cols, float* out, cudaStream_t s) {
  MINAS_LAUNCH(colsum, static_cast<size_t>(cols), s, x, rows, cols, out);
}

}  // namespace minas::cuda
