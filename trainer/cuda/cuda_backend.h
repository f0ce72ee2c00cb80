#pragma once
// The CUDA backend (make_cuda_backend, trainer/cuda/backend.h) as a class:
// one GPU's stream, cuDNN and cuBLAS handles, shared by every network it
// compiles; compile_cuda gives the CudaNetwork itself, for the resident
// engine it offers train() (trainer/cuda/resident.h).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <memory>
#include <string>

#include "trainer/cuda/memory.h"
#include "trainer/cuda/network.h"
#include "trainer/network.h"

namespace minas::cuda {

class CudaBackend final : public Backend {
 public:
  // On GPU `device`; throws Error if there is none such. Creates the stream
  // (non-blocking) and the cuDNN and cuBLAS handles on it.
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  int threads() const override { return 1; }
  int device() const { return device_; }
  // compile() without the Network interface in between.
  std::unique_ptr<CudaNetwork> compile_cuda(Model& model, int batch, NetMode mode,
                                            const NetworkOptions& options);
  std::unique_ptr<Network> compile(Model& model, int batch, NetMode mode,
                                   const NetworkOptions& options) override;
  std::unique_ptr<StepEngine> resident_engine(Model& model, const EngineSetup& setup) override;

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  Buffer<unsigned char> blas_workspace_;
};

}  // namespace minas::cuda
