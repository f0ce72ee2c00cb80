#pragma once
// Device memory and cuDNN tensor descriptors owned by RAII handles, and the
// copies of host vectors to the device that GPU-resident training uploads.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "trainer/cuda/check.h"

namespace minas::cuda {

// Device memory of n floats (or bytes for the workspace), freed with it.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) : n_(n) {
    if (n_) MINAS_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  ~Buffer() {
    if (p_) cudaFree(p_);
  }
  Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { MINAS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  TensorDesc(int n, int c, int h, int w, cudnnDataType_t type = CUDNN_DATA_FLOAT,
             cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW)
      : TensorDesc() {
    MINAS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, format, type, n, c, h, w));
  }
  ~TensorDesc() {
    if (d) cudnnDestroyTensorDescriptor(d);
  }
  TensorDesc(TensorDesc&& o) noexcept : d(o.d) { o.d = nullptr; }
  TensorDesc& operator=(TensorDesc&& o) noexcept {
    std::swap(d, o.d);
    return *this;
  }
};

// A host vector's device copy, rewritable in place (same size) so a captured
// graph that reads it sees new contents.
template <class T>
Buffer<T> to_device(const std::vector<T>& host, cudaStream_t s) {
  Buffer<T> b(std::max<size_t>(host.size(), 1));
  if (!host.empty())
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(b.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  return b;
}
template <class T>
void rewrite(Buffer<T>& b, const std::vector<T>& host, cudaStream_t s) {
  if (!host.empty())
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(b.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
}

}  // namespace minas::cuda
