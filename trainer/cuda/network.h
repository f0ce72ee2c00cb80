#pragma once
// The GPU network: a Model's layer graph compiled for one batch size and mode
// on one GPU, every op through cuDNN (convolution, batch norm, activations,
// pooling), cuBLAS (linear) or our own kernels (trainer/cuda/ops.h), fp32
// NCHW, with 16-bit copies for bf16 / fp16 convolutions and linear layers.
// Planning, the Network interface and the state transfers are in
// network.cpp; each op's forward and backward in layers.cpp.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trainer/cuda/kernels.h"
#include "trainer/cuda/memory.h"
#include "trainer/network.h"

namespace minas::cuda {

// What one layer needs beyond its output and gradient buffers.
struct ConvState {
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  TensorDesc bias;
  // bf16 / fp16: 16-bit copies of the input, weights, output and their
  // gradients, and their descriptors (the layer's fp32 tensors stay the truth).
  TensorDesc xh, yh;
  Buffer<uint16_t> x16, w16, y16, dy16, dw16, dx16;
};
// A linear layer's 16-bit copies.
struct LinearState {
  Buffer<uint16_t> x16, w16, dy16;
};
struct BnState {
  TensorDesc param;  // 1 x C x 1 x 1
  Buffer<float> save_mean, save_inv_var;
};

class CudaNetwork final : public Network {
 public:
  // Plans every layer (descriptors, algorithms, 16-bit copies, one shared
  // workspace) and allocates every buffer, on `device` with the backend's
  // handles, which run on `stream`.
  CudaNetwork(int device, cudnnHandle_t dnn, cublasHandle_t blas, cudaStream_t stream, Model& model,
              int batch, NetMode mode, const NetworkOptions& opt);
  // Waits for the stream, then destroys the layers' descriptors.
  ~CudaNetwork() override;

  int batch() const override { return n_; }
  NetMode mode() const override { return mode_; }
  void set_step(uint64_t step) override { step_ = step; }

  // ---- training with the model resident on the GPU (the resident engine, trainer/cuda/resident.h)

  // The host model's parameters and statistics to the GPU, or back.
  void upload_state();
  void download_state();
  // Enqueues one step's batch, forward, loss and backward on the stream,
  // nothing from the host: the batch by the plan at *step, the summed loss
  // and correct count added to the device accumulators.
  void enqueue_resident_step(const DeviceData& data, const DevicePlan& plan, const int64_t* step,
                             int64_t per_epoch);
  // Called while a resident step is enqueued, as soon as a layer's backward
  // (and with it its parameter gradients) is on the stream.
  std::function<void(int layer)> on_enqueued;
  // fp16: the device's loss scale, applied to the loss gradient of a resident
  // step (the caller unscales the parameter gradients); null: none.
  const float* loss_scale = nullptr;
  // The device accumulators (summed loss, correct count): zeroed on the
  // stream, or read back once the stream is done.
  void zero_accumulators();
  std::pair<double, int64_t> accumulators();
  // Some dropout layer draws masks (on the host, so a step is not captured).
  bool has_dropout() const;
  // On the device: parameter p's value, buffer b (running statistics),
  // parameter p's gradient; and the stream everything is enqueued on.
  float* param(size_t p) const { return w_[p].get(); }
  float* buffer(size_t b) const { return buf_[b].get(); }
  float* grad(size_t p) const { return gw_[p].get(); }
  cudaStream_t stream() const { return s_; }

  // ---- the Network interface: the host model stays the truth

  // Uploads the batch and the model, runs the step, and writes the gradients
  // and running statistics back (fp32 or bf16; fp16 needs the resident engine).
  StepStats train_step(const float* x, const int32_t* y) override;
  // The forward half of a train step, logits and running statistics back.
  void forward(const float* x, float* logits) override;
  // Backpropagates dlogits after forward(): the gradients back, and the
  // input's to dx when asked.
  void backward(const float* dlogits, float* dx) override;
  // Every layer's output has a buffer of its own, plain NCHW.
  void layer_output(int layer, float* out) override;
  // Eval: uploads the batch and the model, writes the logits; after
  // freeze_state(), the batch alone.
  void infer(const float* x, float* logits) override;
  // Latency: the model's parameters and statistics uploaded once, now; the
  // network then answers for the model as it is (as the CPU's latency
  // network, compiled with the model's batch norms folded), and a timed
  // infer() is the batch's upload and the forward pass, not the weights'.
  void freeze_state();

 private:
  size_t count(int i) const {
    return static_cast<size_t>(n_) * static_cast<size_t>(g_.layer(i).shape.elements());
  }
  cudaDataType_t half_type() const { return brain_ ? CUDA_R_16BF : CUDA_R_16F; }
  bool has_params(int i) const {
    const LayerState& st = model_.state(i);
    return st.weight >= 0 || st.bias >= 0 || st.gamma >= 0 || st.beta >= 0;
  }
  int in(int i, int k = 0) const { return g_.layer(i).inputs.at(static_cast<size_t>(k)); }
  float* W(int p) const { return w_[static_cast<size_t>(p)].get(); }
  float* GW(int p) const { return gw_[static_cast<size_t>(p)].get(); }

  // The batch, and the model's parameters and running statistics, to the GPU.
  void upload(const float* x);
  // The model's parameters and running statistics alone, on the stream.
  void enqueue_state_upload();
  // Back into the host model, on the stream: the running statistics; the
  // parameters' gradients.
  void enqueue_statistics_download();
  void enqueue_gradients_download();
  // Every layer's output gradient to zero (backward accumulates into them).
  void zero_output_gradients();

  // ---- planning (network.cpp): what layer i needs, by its op; workspace
  // grows to the largest convolution workspace.
  void plan(int i, size_t& workspace);
  void plan_conv(int i, size_t& workspace);
  void plan_batch_norm(int i);
  void plan_activation(int i);  // ReLU, ReLU6, sigmoid: a cuDNN activation
  void plan_pool(int i);        // max, average and global average pooling
  void plan_linear(int i);
  void plan_dropout(int i);
  // The first deterministic algorithm of cuDNN's heuristics that works with
  // at most kDeterministicSlack more workspace than the first that works,
  // else the first that works.
  static constexpr size_t kDeterministicSlack = size_t{16} << 20;
  template <class Perf>
  static decltype(Perf::algo) pick(const Perf* perf, int found, const char* what,
                                   const std::string& layer);

  // ---- forward (layers.cpp): layer i's output from its inputs', by its op.
  void forward(int i);
  void conv_forward(int i);
  void batch_norm_forward(int i);
  void activation_forward(int i);  // ReLU, ReLU6, sigmoid
  void hard_swish_forward(int i);
  void hard_sigmoid_forward(int i);
  void pool_forward(int i);  // max, average and global average pooling
  void add_forward(int i);
  void concatenation_forward(int i);
  void multiply_forward(int i);  // squeeze-excitation's x * scale
  void linear_forward(int i);
  void zero_forward(int i);
  void identity_forward(int i);
  void dropout_forward(int i);

  // ---- backward (layers.cpp): layer i's gradient to its inputs' (added) and
  // its parameters' (written).
  void backward(int i);
  void conv_backward(int i);
  void batch_norm_backward(int i);
  void activation_backward(int i);
  void hard_swish_backward(int i);
  void hard_sigmoid_backward(int i);
  void pool_backward(int i);
  void add_backward(int i);
  void concatenation_backward(int i);
  void multiply_backward(int i);
  void linear_backward(int i);
  void identity_backward(int i);
  void dropout_backward(int i);

  const int device_;
  cudnnHandle_t dnn_;
  cublasHandle_t blas_;
  cudaStream_t s_;
  Model& model_;
  const LayerGraph& g_;
  const int n_;
  const NetMode mode_;
  const NetworkOptions opt_;
  const bool half_, brain_;  // 16-bit convolutions and linear layers; bf16 or fp16
  uint64_t step_ = 0;
  bool ran_forward_ = false;       // some forward pass has filled the outputs
  bool frozen_ = false;            // freeze_state(): infer() uploads the batch alone
  bool backward_pending_ = false;  // forward() ran and its backward() has not
  std::map<int, LinearState> linears_;

  std::vector<TensorDesc> desc_;
  std::vector<Buffer<float>> y_, dy_;  // per layer: output, and its gradient (train)
  std::vector<Buffer<float>> w_, gw_;  // per model parameter: value and gradient
  std::vector<Buffer<float>> buf_;     // per model buffer (running statistics)
  Buffer<int32_t> labels_;
  Buffer<double> loss_;
  Buffer<unsigned long long> correct_;
  Buffer<float> ones_;
  Buffer<unsigned char> workspace_;
  std::map<int, ConvState> convs_;
  std::map<int, BnState> bns_;
  std::map<int, cudnnActivationDescriptor_t> acts_;
  std::map<int, cudnnPoolingDescriptor_t> pools_;
  std::map<int, TensorDesc> linear_bias_;
  std::map<int, Buffer<float>> masks_;
  std::map<int, std::vector<float>> host_masks_;
};

}  // namespace minas::cuda
