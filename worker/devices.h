#pragma once
// The device slots a worker advertises to the controller: one `cpu` slot
// with the threads this process may use, and one `cuda:i` slot per GPU.
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace minas {

struct DeviceSlot {
  std::string id;           // "cpu" or "cuda:<ordinal>"
  std::string name;         // CPU model or GPU name
  int threads = 0;          // cpu: threads the process may run on
  size_t memory_bytes = 0;  // cuda: total device memory; cpu: physical memory
};

// The slots of this machine. The CPU thread count is that of the process's
// affinity mask (what taskset, cgroups or Slurm left us), not the machine's.
std::vector<DeviceSlot> detect_slots();

nlohmann::json to_json(const std::vector<DeviceSlot>& slots);

// Whether this build has the CUDA backend.
bool built_with_cuda();

}  // namespace minas
