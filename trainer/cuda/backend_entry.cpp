// The CUDA backend's entry in the backend registry (trainer/backends.h).
// Compiled into trainer_cuda, so a build holds it exactly when it holds the
// GPU backend; trainer_backends links it through gpu_backend_entries(), an
// explicit call the linker cannot drop.
#include <exception>
#include <thread>

#include "searchspace/error.h"
#include "trainer/backends.h"
#include "trainer/cuda/backend.h"
#include "trainer/cuda/device.h"
#include "trainer/cuda/nccl_comm.h"

namespace minas {
namespace {

std::unique_ptr<Backend> make(int gpu, int) { return cuda::make_cuda_backend(gpu); }

TrainReport train_data_parallel(const std::vector<int>& gpus, const LayerGraph& graph,
                                Model& model, const Recipe& recipe, const data::TrainTest& data,
                                const TrainOptions& options,
                                const std::function<bool()>& cancelled, const GpuGang* gang) {
  auto nccl = gang ? cuda::make_nccl_ranks(gpus, gang->world, gang->first_rank, gang->nccl_id)
                   : cuda::make_nccl_group(gpus);
  std::vector<std::unique_ptr<Communicator>> owned;
  std::vector<Communicator*> host;
  if (gang) {
    if (gang->host.size() != gpus.size())
      throw Error("train on GPUs", "a gang needs one host communicator per GPU");
    host = gang->host;
  } else {
    owned = make_thread_group(static_cast<int>(gpus.size()));
    for (auto& c : owned) host.push_back(c.get());
  }
  std::vector<std::exception_ptr> errors(gpus.size());
  std::vector<std::thread> others;
  // Each rank trains through train()'s loop on its GPU's resident engine,
  // gradients averaged over NCCL; rank 0 with the caller's callbacks.
  auto run = [&](size_t k, Model& m) {
    auto backend = cuda::make_cuda_backend(gpus[k]);
    TrainOptions o = options;
    o.comm = host[k];
    o.device_comm = nccl[k].get();
    if (k > 0) {
      o.on_epoch = nullptr;
      o.on_point = nullptr;
      o.on_checkpoint = nullptr;
      o.should_stop = cancelled;
    }
    return train(m, recipe, data, *backend, o);
  };
  for (size_t k = 1; k < gpus.size(); ++k)
    others.emplace_back([&, k] {
      try {
        Model m(graph, recipe.seed);
        run(k, m);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    });
  TrainReport r;
  try {
    r = run(0, model);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : others) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return r;
}

std::string make_gang_id() { return cuda::make_nccl_unique_id(); }

std::vector<BackendDevice> devices() {
  std::vector<BackendDevice> out;
  for (const cuda::DeviceInfo& d : cuda::devices())
    out.push_back({"cuda:" + std::to_string(d.index), d.name, d.memory_bytes});
  return out;
}

const BackendEntry kEntries[] = {{.kind = "cuda",
                                  .make = make,
                                  .train_data_parallel = train_data_parallel,
                                  .make_gang_id = make_gang_id,
                                  .devices = devices}};

}  // namespace

std::span<const BackendEntry> gpu_backend_entries() { return kEntries; }

}  // namespace minas
