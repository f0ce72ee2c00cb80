#pragma once
// A backend by device name: "cpu" (oneDNN on `threads` threads, 0: all) or
// "cuda:N" (the GPU backend, in builds with CUDA). Header-only so that it sees
// whether the including target was built with the GPU backend.
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "searchspace/error.h"
#include "trainer/comm.h"
#include "trainer/network.h"
#include "trainer/train.h"
#ifdef MINAS_WITH_CUDA
#include "trainer/cuda/backend.h"
#endif

namespace minas {

// The N of "cuda:N" (or of "cuda:N.K", a worker's K-th extra slot on GPU N),
// or -1 for any other device.
inline int cuda_index(const std::string& device) {
  if (device.rfind("cuda:", 0) != 0) return -1;
  const std::string n = device.substr(
      5, device.find('.') == std::string::npos ? std::string::npos : device.find('.') - 5);
  if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
    throw Error("--device " + device, "a GPU is cuda:N, N its number");
  return std::stoi(n);
}

// Trains as train() does, on the GPU when the device is one (train_on_gpu:
// everything resident there, a captured step replayed), else on `backend`.
// GPU training takes the epoch callbacks and the cancel; the other options
// (resume, checkpoints, data parallel) go through train() on `backend`.
inline TrainReport train_on(const std::string& device, Model& model, const Recipe& recipe,
                            const data::TrainTest& data, Backend& backend,
                            const TrainOptions& options) {
#ifdef MINAS_WITH_CUDA
  const int gpu = cuda_index(device);
  if (gpu >= 0 && !options.resume && !options.on_checkpoint &&
      !(options.comm && options.comm->size() > 1) && recipe.time_budget_s <= 0) {
    cuda::GpuTrainOptions g;
    g.evaluate_test = options.evaluate_test;
    g.measure_latency = options.measure_latency;
    g.eval_batch = options.eval_batch;
    g.on_epoch = options.on_epoch;
    g.should_stop = options.should_stop;
    return cuda::train_on_gpu(model, recipe, data, gpu, g);
  }
#endif
  (void)device;
  return train(model, recipe, data, backend, options);
}

inline bool built_with_gpu_backend() {
#ifdef MINAS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// One trial data parallel over distinct GPUs (train_on_gpu with NCCL), rank 0
// on `model` with the options' callbacks, the others on threads of their own
// with copies of `graph`; `cancelled` stops every rank. Builds without the GPU
// backend refuse.
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

inline TrainReport train_on_gpus(const std::vector<int>& gpus, const LayerGraph& graph,
                                 Model& model, const Recipe& recipe, const data::TrainTest& data,
                                 const TrainOptions& options,
                                 const std::function<bool()>& cancelled,
                                 const GpuGang* gang = nullptr) {
#ifdef MINAS_WITH_CUDA
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
  auto run = [&](size_t k, Model& m) {
    cuda::GpuTrainOptions g;
    g.comm = nccl[k].get();
    g.host = host[k];
    g.evaluate_test = options.evaluate_test;
    g.measure_latency = options.measure_latency;
    g.eval_batch = options.eval_batch;
    if (k == 0) {
      g.on_epoch = options.on_epoch;
      g.should_stop = options.should_stop;
    } else {
      g.should_stop = cancelled;
    }
    return cuda::train_on_gpu(m, recipe, data, gpus[k], g);
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
#else
  (void)gpus, (void)graph, (void)model, (void)recipe, (void)data, (void)options, (void)cancelled;
  (void)gang;
  throw Error("train on GPUs", "this build has no GPU backend");
#endif
}

// The NCCL unique id a gang's GPUs meet by, made on rank 0's host (bytes).
inline std::string make_gang_nccl_id() {
#ifdef MINAS_WITH_CUDA
  return cuda::make_nccl_unique_id();
#else
  throw Error("nccl", "this build has no GPU backend");
#endif
}

inline std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
  if (device == "cpu" || device.rfind("cpu.", 0) == 0) return make_cpu_backend(threads);
  if (const int gpu = cuda_index(device); gpu >= 0) {
#ifdef MINAS_WITH_CUDA
    return cuda::make_cuda_backend(gpu);
#else
    throw Error("--device " + device,
                "this build has no GPU backend (CUDA, cuDNN or NCCL were not found when it was "
                "configured)");
#endif
  }
  throw Error("--device " + device, "not a device: cpu or cuda:N");
}

}  // namespace minas
