#pragma once
// A backend by device name: "cpu" (oneDNN on `threads` threads, 0: all) or
// "cuda:N" (the GPU backend, in builds with CUDA). Header-only so that it sees
// whether the including target was built with the GPU backend.
#include <memory>
#include <string>

#include "searchspace/error.h"
#include "trainer/network.h"
#ifdef MINAS_WITH_CUDA
#include "trainer/cuda/backend.h"
#endif

namespace minas {

inline std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu" || device.rfind("cpu.", 0) == 0) return make_cpu_backend(threads);
  if (device.rfind("cuda:", 0) == 0) {
    const std::string n = device.substr(5);
    if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
      throw Error("--device " + device, "a GPU is cuda:N, N its number");
#ifdef MINAS_WITH_CUDA
    return cuda::make_cuda_backend(std::stoi(n));
#else
    throw Error("--device " + device,
                "this build has no GPU backend (CUDA, cuDNN or NCCL were not found when it was "
                "configured)");
#endif
  }
  throw Error("--device " + device, "not a device: cpu or cuda:N");
}

}  // namespace minas
