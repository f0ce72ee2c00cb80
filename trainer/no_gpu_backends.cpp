// The backend registry's GPU entries in a build without the CUDA backend: none.
// trainer/CMakeLists.txt compiles this file exactly when it does not build
// trainer_cuda, whose trainer/cuda/backend_entry.cpp defines them otherwise.
#include "trainer/backends.h"

namespace minas {

std::span<const BackendEntry> gpu_backend_entries() { return {}; }

}  // namespace minas
