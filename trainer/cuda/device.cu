#include "trainer/cuda/check.h"
#include "trainer/cuda/device.h"

namespace minas::cuda {
namespace {

__global__ void add_kernel(const float* a, const float* b, float* c, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

// Frees a device allocation on every path out of a scope.
struct DeviceBuffer {
  float* p = nullptr;
  explicit DeviceBuffer(size_t n) { MINAS_CUDA_CHECK(cudaMalloc(&p, n * sizeof(float))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

std::vector<DeviceInfo> devices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorInitializationError) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return {};
  }
  MINAS_CUDA_CHECK(err);
  std::vector<DeviceInfo> out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    MINAS_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    out.push_back({i, p.name, p.totalGlobalMem, p.major, p.minor, p.multiProcessorCount});
  }
  return out;
}

std::string library_versions() {
  int runtime = CUDART_VERSION, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  int nccl = NCCL_VERSION_CODE;
  ncclGetVersion(&nccl);
  return "cuda runtime " + std::to_string(runtime) + " driver " + std::to_string(driver) +
         " cudnn " + std::to_string(cudnnGetVersion()) + " nccl " + std::to_string(nccl);
}

std::vector<float> add_on_device(int device, const std::vector<float>& a,
                                 const std::vector<float>& b) {
  if (a.size() != b.size()) throw Error("add_on_device", "vectors of different lengths");
  MINAS_CUDA_CHECK(cudaSetDevice(device));
  const size_t n = a.size();
  DeviceBuffer da(n), db(n), dc(n);
  MINAS_CUDA_CHECK(cudaMemcpy(da.p, a.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  MINAS_CUDA_CHECK(cudaMemcpy(db.p, b.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  const int threads = 256, blocks = static_cast<int>((n + threads - 1) / threads);
  add_kernel<<<blocks, threads>>>(da.p, db.p, dc.p, static_cast<int>(n));
  MINAS_CUDA_CHECK(cudaGetLastError());
  std::vector<float> c(n);
  MINAS_CUDA_CHECK(cudaMemcpy(c.data(), dc.p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return c;
}

}  // namespace minas::cuda
