#include "worker/devices.h"

#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "trainer/backends.h"
#include "trainer/network.h"

namespace minas {
namespace {

int affinity_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  const unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  return "cpu";
}

size_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(size) : 0;
}

}  // namespace

std::vector<DeviceSlot> detect_slots() {
  std::vector<DeviceSlot> slots;
  // The model name alone does not tell two generations apart ("AMD EPYC");
  // the instruction set oneDNN runs does, and it decides the rounding.
  slots.push_back(
      {"cpu", cpu_model() + " (oneDNN " + cpu_isa() + ")", affinity_threads(), physical_memory()});
  // Then each backend's devices: the GPUs, in builds with the GPU backend.
  for (const BackendEntry& b : backend_registry())
    if (b.devices)
      for (const BackendDevice& d : b.devices()) slots.push_back({d.id, d.name, 0, d.memory_bytes});
  return slots;
}

nlohmann::json to_json(const std::vector<DeviceSlot>& slots) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& s : slots) {
    nlohmann::json j = {{"id", s.id}, {"name", s.name}, {"memory_bytes", s.memory_bytes}};
    if (s.id == "cpu") j["threads"] = s.threads;
    a.push_back(std::move(j));
  }
  return a;
}

bool built_with_cuda() { return built_with_gpu_backend(); }

}  // namespace minas
