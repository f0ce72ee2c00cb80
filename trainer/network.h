#pragma once
// The backend interface. A backend compiles a Model's layer graph for one
// batch size and mode into a Network: memory planned and every primitive
// created once, so a step allocates nothing. The CPU backend (oneDNN) is the
// reference every other backend is tested against.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "trainer/model.h"

namespace minas {

enum class NetMode {
  train,    // forward with batch statistics, loss, backward
  eval,     // forward with running statistics
  latency,  // eval with batch norm folded into convolutions and activations fused: deployment
};

struct StepStats {
  double loss = 0;      // mean over the batch, label smoothing included
  int64_t correct = 0;  // argmax of the logits equal to the label
};

struct NetworkOptions {
  float label_smoothing = 0;  // train: softmax cross entropy against (1-e) one-hot + e/K
  uint64_t seed = 0;          // train: dropout masks
  // Train: called during train_step as soon as backward has written the
  // gradients of a layer with parameters, layers in backward order (the same
  // order every step): data-parallel training starts averaging them then.
  std::function<void(int layer)> on_layer_gradients;
  // GPU: convolutions and linear layers in bf16 or fp16 (tensor cores, fp32
  // accumulation and master weights); the CPU backend computes in fp32.
  Precision precision = Precision::fp32;
};

class Network {
 public:
  virtual ~Network() = default;
  virtual int batch() const = 0;
  virtual NetMode mode() const = 0;
  // Train mode: x is batch x C x H x W floats (NCHW), y batch labels. Sets the
  // model's gradients (overwriting them) and updates its running statistics.
  virtual StepStats train_step(const float* x, const int32_t* y) = 0;
  // Eval and latency modes: writes batch x classes logits.
  virtual void infer(const float* x, float* logits) = 0;
  // Train mode: the number of the next step, which seeds its dropout masks
  // (each train_step advances it), so a resumed run draws the same masks.
  virtual void set_step(uint64_t step) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual int threads() const = 0;       // CPU threads the backend computes with
  // The model must outlive the network; the network reads its parameters at
  // every step, so optimizer updates are seen without recompiling.
  virtual std::unique_ptr<Network> compile(Model& model, int batch, NetMode mode,
                                           const NetworkOptions& options) = 0;
};

// oneDNN on `threads` CPU threads (0: all the process may use).
std::unique_ptr<Backend> make_cpu_backend(int threads);

}  // namespace minas
