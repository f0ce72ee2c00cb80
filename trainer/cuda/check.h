#pragma once
// One checking macro per GPU library: each names the call, the library's own
// error text, and the file and line, and throws minas::Error.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include <string>

#include "searchspace/error.h"

namespace minas::cuda {

[[noreturn]] inline void fail(const char* lib, const char* call, const std::string& why,
                              const char* file, int line) {
  throw Error(std::string(lib) + ": " + call + " (" + file + ":" + std::to_string(line) + ")", why);
}

}  // namespace minas::cuda

#define MINAS_CUDA_CHECK(call)                                                               \
  do {                                                                                       \
    const cudaError_t minas_err_ = (call);                                                   \
    if (minas_err_ != cudaSuccess)                                                           \
      ::minas::cuda::fail(                                                                   \
          "cuda", #call,                                                                     \
          std::string(cudaGetErrorName(minas_err_)) + ": " + cudaGetErrorString(minas_err_), \
          __FILE__, __LINE__);                                                               \
  } while (0)

#define MINAS_CUDNN_CHECK(call)                                                                \
  do {                                                                                         \
    const cudnnStatus_t minas_st_ = (call);                                                    \
    if (minas_st_ != CUDNN_STATUS_SUCCESS)                                                     \
      ::minas::cuda::fail("cudnn", #call, cudnnGetErrorString(minas_st_), __FILE__, __LINE__); \
  } while (0)

#define MINAS_NCCL_CHECK(call)                                                               \
  do {                                                                                       \
    const ncclResult_t minas_nr_ = (call);                                                   \
    if (minas_nr_ != ncclSuccess)                                                            \
      ::minas::cuda::fail("nccl", #call, ncclGetErrorString(minas_nr_), __FILE__, __LINE__); \
  } while (0)

#define MINAS_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                            \
    const cublasStatus_t minas_bs_ = (call);                                                      \
    if (minas_bs_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::minas::cuda::fail("cublas", #call, cublasGetStatusString(minas_bs_), __FILE__, __LINE__); \
  } while (0)
