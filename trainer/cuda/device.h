#pragma once
// The GPUs of this machine, as a worker advertises them, and the versions of
// the GPU libraries minas was built and runs with.
#include <cstddef>
#include <string>
#include <vector>

namespace minas::cuda {

struct DeviceInfo {
  int index = 0;            // the CUDA device ordinal: slot "cuda:<index>"
  std::string name;         // e.g. "NVIDIA H100 80GB HBM3"
  size_t memory_bytes = 0;  // total global memory
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
};

// Every visible GPU; empty (not an error) when there is no GPU or no driver.
std::vector<DeviceInfo> devices();

// "cuda runtime 13000 driver 13000 cudnn 91000 nccl 22703": runtime values
// where a driver is present, the build's where it is not.
std::string library_versions();

// Adds two vectors on device `device` and returns the sum: a check that
// kernels compiled for this GPU load and run (used by the GPU tests).
std::vector<float> add_on_device(int device, const std::vector<float>& a,
                                 const std::vector<float>& b);

}  // namespace minas::cuda
