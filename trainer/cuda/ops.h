#pragma once
// Elementwise kernels of the GPU network for what cuDNN and cuBLAS do not
// cover (hard swish and sigmoid, channel concatenation, the squeeze-excitation
// product, gradient accumulation, dropout by a host-drawn mask). Backward
// kernels accumulate into the input gradient (dx += ...), as every gradient
// of the network is a sum over the consumers of a tensor.
#include <cuda_runtime.h>

#include <cstddef>

namespace minas::cuda {

void hswish_forward(const float* x, float* y, size_t n, cudaStream_t s);
void hswish_backward(const float* x, const float* dy, float* dx, size_t n, cudaStream_t s);
void hsigmoid_forward(const float* x, float* y, size_t n, cudaStream_t s);
void hsigmoid_backward(const float* x, const float* dy, float* dx, size_t n, cudaStream_t s);
// dst += src
void accumulate(const float* src, float* dst, size_t n, cudaStream_t s);
// Channel concatenation: input k of c_k channels at channel offset `offset`
// of an output of c channels, planes of hw values, batch n.
void concat_forward(const float* x, int n, int ck, int offset, int c, int hw, float* y,
                    cudaStream_t s);
void concat_backward(const float* dy, int n, int ck, int offset, int c, int hw, float* dx,
                     cudaStream_t s);
// y = x * scale[n][c] over planes of hw; backward: dx += dy * scale,
// dscale[n][c] += sum over the plane of dy * x.
void mul_forward(const float* x, const float* scale, int n, int c, int hw, float* y,
                 cudaStream_t s);
void mul_backward(const float* x, const float* scale, const float* dy, int n, int c, int hw,
                  float* dx, float* dscale, cudaStream_t s);
// y = x * mask; backward dx += dy * mask.
void mask_forward(const float* x, const float* mask, float* y, size_t n, cudaStream_t s);
void mask_backward(const float* dy, const float* mask, float* dx, size_t n, cudaStream_t s);
// fp32 to 16-bit floats (bf16 when brain, else IEEE fp16) and back; from_half
// adds into out when accumulate.
void to_half(const float* x, void* out, size_t n, bool brain, cudaStream_t s);
void from_half(const void* x, float* out, size_t n, bool brain, bool accumulate, cudaStream_t s);
// The same casts with a layout change: NCHW fp32 to NHWC 16-bit and back
// (n, c, h, w of the NCHW side; for weights OIHW to OHWI, o as n and i as c).
void to_half_nhwc(const float* x, void* out, int n, int c, int h, int w, bool brain,
                  cudaStream_t s);
void from_half_nhwc(const void* x, float* out, int n, int c, int h, int w, bool brain,
                    bool accumulate, cudaStream_t s);
// x *= factor
void scale(float* x, float factor, size_t n, cudaStream_t s);
// out[j] = sum over rows of x (rows x cols, row-major): a bias gradient.
void column_sums(const float* x, int rows, int cols, float* out, cudaStream_t s);

}  // namespace minas::cuda
