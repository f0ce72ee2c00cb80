#pragma once
// A backend by device name: "cpu" (oneDNN on `threads` threads, 0: all) or
// "cuda:N" (the GPU backend, in builds with CUDA). Header-only so that it sees
// whether the including target was built with the GPU backend.
#include <memory>
#include <string>

#include "searchspace/error.h"
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
