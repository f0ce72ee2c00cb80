// The CUDA backend (trainer/cuda/cuda_backend.h) and make_cuda_backend.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <memory>
#include <string>

#include "searchspace/error.h"
#include "trainer/cuda/backend.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/cuda/resident.h"

namespace minas::cuda {

CudaBackend::CudaBackend(int device) : device_(device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count)
    throw Error("cuda:" + std::to_string(device),
                "no such GPU (" + std::to_string(count) + " found)");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  MINAS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MINAS_CUDNN_CHECK(cudnnCreate(&dnn_));
  MINAS_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
  MINAS_CUBLAS_CHECK(cublasCreate(&blas_));
  MINAS_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
  // fp32 means fp32: no TF32 in cuBLAS either.
  MINAS_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
  // A workspace of its own, so cuBLAS allocates nothing while a step is
  // being captured in a graph.
  blas_workspace_ = Buffer<unsigned char>(size_t{4} << 20);
  MINAS_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_workspace_.get(), blas_workspace_.size()));
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  cublasDestroy(blas_);
  cudnnDestroy(dnn_);
  cudaStreamDestroy(stream_);
}

std::unique_ptr<CudaNetwork> CudaBackend::compile_cuda(Model& model, int batch, NetMode mode,
                                                       const NetworkOptions& options) {
  return std::make_unique<CudaNetwork>(device_, dnn_, blas_, stream_, model, batch, mode, options);
}

std::unique_ptr<Network> CudaBackend::compile(Model& model, int batch, NetMode mode,
                                              const NetworkOptions& options) {
  // Latency mode runs the eval path (batch norm not folded yet on the GPU),
  // with the model uploaded once: what is timed is the inference alone.
  auto net =
      std::make_unique<CudaNetwork>(device_, dnn_, blas_, stream_, model, batch,
                                    mode == NetMode::latency ? NetMode::eval : mode, options);
  if (mode == NetMode::latency) net->freeze_state();
  return net;
}

std::unique_ptr<StepEngine> CudaBackend::resident_engine(Model& model, const EngineSetup& setup) {
  return make_resident_engine(*this, model, setup);
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

}  // namespace minas::cuda
