#pragma once
// A backend by device name: "cpu" (oneDNN on `threads` threads, 0: all) or
// "cuda:N" (the GPU backend, in builds with CUDA), and the trainings that need
// a particular backend. Compiled (trainer/backends.cpp, the trainer_backends
// library) over a registry of backends: the CPU's always, the GPU's when the
// build has the CUDA backend. Nothing here depends on a macro, so every target
// that includes this header sees the same functions.
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "searchspace/layer_graph.h"
#include "trainer/comm.h"
#include "trainer/network.h"
#include "trainer/train.h"

namespace minas {

// The N of "cuda:N" (or of "cuda:N.K", a worker's K-th extra slot on GPU N),
// or -1 for any other device.
int cuda_index(const std::string& device);

// Whether this build has the GPU backend.
bool built_with_gpu_backend();

// One trial data parallel over distinct GPUs: train() on each GPU's resident
// engine, the gradients averaged over NCCL; rank 0 on `model` with the
// options' callbacks, the others on threads of their own with copies of
// `graph`; `cancelled` stops every rank. Builds without the GPU backend refuse.
//
// A gang (`gang` set): these GPUs are ranks first_rank, ... of a trial spread
// over several hosts: NCCL joins them under the unique id made on rank 0's
// host, and the host-side collectives go over the given communicators (the
// socket group's ranks, one per GPU here).
struct GpuGang {
  int world = 0;
  int first_rank = 0;
  std::string nccl_id;              // make_nccl_unique_id()'s bytes, from rank 0's host
  std::vector<Communicator*> host;  // this process's ranks of the socket group
};

TrainReport train_on_gpus(const std::vector<int>& gpus, const LayerGraph& graph, Model& model,
                          const Recipe& recipe, const data::TrainTest& data,
                          const TrainOptions& options, const std::function<bool()>& cancelled,
                          const GpuGang* gang = nullptr);

// The NCCL unique id a gang's GPUs meet by, made on rank 0's host (bytes).
std::string make_gang_nccl_id();

std::unique_ptr<Backend> make_backend(const std::string& device, int threads);

// ------------------------------------------------------------ the registry

// A device of a backend's kind on this machine, as a worker advertises it.
struct BackendDevice {
  std::string id;    // "cuda:0"
  std::string name;  // "NVIDIA H100 80GB HBM3"
  size_t memory_bytes = 0;
};

// One backend: the device names it takes and what it can do. A member the
// backend has no use for is null; the functions above say what then happens.
struct BackendEntry {
  const char* kind;  // "cpu" (cpu, cpu.K) or "cuda" (cuda:N, cuda:N.K)
  // The backend on device `index` (cuda:N's N; 0 for the CPU) with `threads`
  // CPU threads (0: all).
  std::unique_ptr<Backend> (*make)(int index, int threads);
  // One trial data parallel over devices of this kind (train_on_gpus).
  TrainReport (*train_data_parallel)(const std::vector<int>& devices, const LayerGraph& graph,
                                     Model& model, const Recipe& recipe,
                                     const data::TrainTest& data, const TrainOptions& options,
                                     const std::function<bool()>& cancelled, const GpuGang* gang);
  // The id a gang's devices meet by, made on rank 0's host (make_gang_nccl_id).
  std::string (*make_gang_id)();
  // The devices of this kind on this machine; empty (not an error) when there
  // are none. Null for the CPU, whose slot the worker describes itself.
  std::vector<BackendDevice> (*devices)();
};

// Every backend of this build: the CPU's first, then gpu_backend_entries().
std::span<const BackendEntry> backend_registry();
// The entry of that kind, or null when this build has none.
const BackendEntry* find_backend(std::string_view kind);

// The entries this build adds beside the CPU's. Defined once per build by the
// library that knows whether the CUDA backend is built: trainer_cuda
// (trainer/cuda/backend_entry.cpp) when it is, trainer/no_gpu_backends.cpp in
// trainer_backends when it is not (trainer/CMakeLists.txt picks).
std::span<const BackendEntry> gpu_backend_entries();

}  // namespace minas
