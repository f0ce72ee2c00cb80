#include "trainer/backends.h"

#include <vector>

#include "searchspace/error.h"

namespace minas {
namespace {

std::unique_ptr<Backend> make_cpu(int, int threads) {
  return make_cpu_backend(threads);
}

const BackendEntry kCpu = {.kind = "cpu",
                           .make = make_cpu,
                           .train_data_parallel = nullptr,
                           .make_gang_id = nullptr,
                           .devices = nullptr};

// The GPU's entry (the only kind with a number in its device names), or null
// in builds without it.
const BackendEntry* gpu() {
  return find_backend("cuda");
}

constexpr const char* kNoGpu = "this build has no GPU backend";

}  // namespace

std::span<const BackendEntry> backend_registry() {
  static const std::vector<BackendEntry> registry = [] {
    std::vector<BackendEntry> r{kCpu};
    for (const BackendEntry& e : gpu_backend_entries()) r.push_back(e);
    return r;
  }();
  return registry;
}

const BackendEntry* find_backend(std::string_view kind) {
  for (const BackendEntry& e : backend_registry())
    if (kind == e.kind) return &e;
  return nullptr;
}

int cuda_index(const std::string& device) {
  if (device.rfind("cuda:", 0) != 0) return -1;
  const std::string n = device.substr(
      5, device.find('.') == std::string::npos ? std::string::npos : device.find('.') - 5);
  if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
    throw Error("--device " + device, "a GPU is cuda:N, N its number");
  return std::stoi(n);
}

bool built_with_gpu_backend() {
  return gpu() != nullptr;
}

TrainReport train_on_gpus(const std::vector<int>& gpus, const LayerGraph& graph, Model& model,
                          const Recipe& recipe, const data::TrainTest& data,
                          const TrainOptions& options, const std::function<bool()>& cancelled,
                          const GpuGang* gang) {
  const BackendEntry* g = gpu();
  if (!g || !g->train_data_parallel) throw Error("train on GPUs", kNoGpu);
  return g->train_data_parallel(gpus, graph, model, recipe, data, options, cancelled, gang);
}

std::string make_gang_nccl_id() {
  const BackendEntry* g = gpu();
  if (!g || !g->make_gang_id) throw Error("nccl", kNoGpu);
  return g->make_gang_id();
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu" || device.rfind("cpu.", 0) == 0) return kCpu.make(0, threads);
  if (const int index = cuda_index(device); index >= 0) {
    if (const BackendEntry* g = gpu()) return g->make(index, threads);
    throw Error(
        "--device " + device,
        std::string(kNoGpu) + " (CUDA, cuDNN or NCCL were not found when it was configured)");
  }
  throw Error("--device " + device, "not a device: cpu or cuda:N");
}

}  // namespace minas
