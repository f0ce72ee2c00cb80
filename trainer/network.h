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

struct EngineSetup;
class StepEngine;

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
  // Train: backward() also writes the gradient of the input batch. The
  // input-Jacobian proxies (trainer/proxies.h) need it; training does not.
  bool input_gradient = false;
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
  // Train mode, for proxies at initialization (trainer/proxies.h): the
  // forward half of a train step (batch statistics, running statistics
  // updated, the step advanced), writing batch x classes logits.
  virtual void forward(const float* x, float* logits) = 0;
  // Train mode, once after each forward(): backpropagates `dlogits` (batch x
  // classes: the gradient of any scalar of the logits) in place of the loss's
  // gradient. Overwrites the model's gradients; writes the input batch's
  // gradient (batch x C x H x W) to dx when it is given, which needs
  // NetworkOptions::input_gradient.
  virtual void backward(const float* dlogits, float* dx) = 0;
  // After a forward pass (train_step, forward or infer): the output of layer
  // `layer` as batch x C x H x W floats (NCHW). Throws Error for a layer
  // whose output the network does not keep (the CPU backend stores a batch
  // norm fused with its ReLU as the ReLU's output, and in latency mode a conv
  // with the batch norm folded into it).
  virtual void layer_output(int layer, float* out) = 0;
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
  // A training engine (trainer/engine.h) that keeps the run on this
  // backend's device (the data set, the optimizer, the schedule; a captured
  // step), when the backend offers one for this setup; null (the default):
  // train() drives the host engine, which works through compile().
  virtual std::unique_ptr<StepEngine> resident_engine(Model& model, const EngineSetup& setup);
};

// oneDNN on `threads` CPU threads (0: all the process may use).
std::unique_ptr<Backend> make_cpu_backend(int threads);

// The instruction set whose kernels oneDNN runs on this machine, as oneDNN
// names it ("avx2", "avx512_core_bf16", ...): the host's best, or the cap
// set by the environment variable ONEDNN_MAX_CPU_ISA. Kernels for different
// sets sum in different orders, so the same training on two machines whose
// sets differ ends a few rounding steps apart, and its accuracy by tenths
// of a point; with one set, it repeats to the last digit.
std::string cpu_isa();
// The same set as oneDNN numbers it (dnnl_cpu_isa_t, never 0), for files
// that record which set a training ran on.
unsigned cpu_isa_code();

}  // namespace minas
