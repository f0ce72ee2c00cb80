#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/cuda/backend.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/kernels.h"
#include "trainer/cuda/nccl_comm.h"
#include "trainer/cuda/ops.h"
#include "trainer/data_parallel.h"
#include "trainer/optim.h"
#include "trainer/train.h"

#define MINAS_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                            \
    const cublasStatus_t minas_bs_ = (call);                                                      \
    if (minas_bs_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::minas::cuda::fail("cublas", #call, cublasGetStatusString(minas_bs_), __FILE__, __LINE__); \
  } while (0)

namespace minas::cuda {
namespace {

// Device memory of n floats (or bytes for the workspace), freed with it.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) : n_(n) {
    if (n_) MINAS_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  ~Buffer() {
    if (p_) cudaFree(p_);
  }
  Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { MINAS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  TensorDesc(int n, int c, int h, int w, cudnnDataType_t type = CUDNN_DATA_FLOAT,
             cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW)
      : TensorDesc() {
    MINAS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, format, type, n, c, h, w));
  }
  ~TensorDesc() {
    if (d) cudnnDestroyTensorDescriptor(d);
  }
  TensorDesc(TensorDesc&& o) noexcept : d(o.d) { o.d = nullptr; }
  TensorDesc& operator=(TensorDesc&& o) noexcept {
    std::swap(d, o.d);
    return *this;
  }
};

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
  CudaNetwork(int device, cudnnHandle_t dnn, cublasHandle_t blas, cudaStream_t stream, Model& model,
              int batch, NetMode mode, const NetworkOptions& opt)
      : device_(device),
        dnn_(dnn),
        blas_(blas),
        s_(stream),
        model_(model),
        g_(model.graph()),
        n_(batch),
        mode_(mode),
        opt_(opt),
        half_(opt.precision != Precision::fp32),
        brain_(opt.precision == Precision::bf16) {
    if (batch < 1) throw Error("network", "batch must be at least 1");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    const size_t layers = static_cast<size_t>(g_.size());
    desc_.resize(layers);
    y_.resize(layers);
    dy_.resize(layers);
    for (int i = 0; i < g_.size(); ++i) {
      const Shape s = g_.layer(i).shape;
      desc_[i] = TensorDesc(n_, s.c, s.h, s.w);
      y_[i] = Buffer<float>(count(i));
      if (mode_ == NetMode::train) dy_[i] = Buffer<float>(count(i));
    }
    for (const Param& p : model_.params()) {
      w_.emplace_back(p.size());
      gw_.emplace_back(p.size());
    }
    for (const Param& b : model_.buffers()) buf_.emplace_back(b.size());
    labels_ = Buffer<int32_t>(static_cast<size_t>(n_));
    loss_ = Buffer<double>(1);
    correct_ = Buffer<unsigned long long>(1);
    ones_ = Buffer<float>(static_cast<size_t>(n_));
    std::vector<float> ones(static_cast<size_t>(n_), 1.0f);
    MINAS_CUDA_CHECK(
        cudaMemcpy(ones_.get(), ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
    size_t workspace = 0;
    for (int i = 1; i < g_.size(); ++i) plan(i, workspace);
    workspace_ = Buffer<unsigned char>(workspace);
  }

  ~CudaNetwork() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(s_);
    for (auto& [i, c] : convs_) {
      if (c.w) cudnnDestroyFilterDescriptor(c.w);
      if (c.conv) cudnnDestroyConvolutionDescriptor(c.conv);
    }
    for (auto& [i, a] : acts_) cudnnDestroyActivationDescriptor(a);
    for (auto& [i, p] : pools_) cudnnDestroyPoolingDescriptor(p);
  }

  int batch() const override { return n_; }
  NetMode mode() const override { return mode_; }
  void set_step(uint64_t step) override { step_ = step; }

  // ---- training with the model resident on the GPU (train_on_gpu)

  // The host model's parameters and statistics to the GPU, or back.
  void upload_state() {
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    for (size_t p = 0; p < w_.size(); ++p)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(w_[p].get(), model_.params()[p].value.data(),
                                       w_[p].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
    for (size_t b = 0; b < buf_.size(); ++b)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(buf_[b].get(), model_.buffers()[b].value.data(),
                                       buf_[b].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  void download_state() {
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    for (size_t p = 0; p < w_.size(); ++p)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.params()[p].value.data(), w_[p].get(),
                                       w_[p].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    for (size_t b = 0; b < buf_.size(); ++b)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.buffers()[b].value.data(), buf_[b].get(),
                                       buf_[b].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  // Enqueues one step's batch, forward, loss and backward on the stream,
  // nothing from the host: the batch by the plan at *step, the summed loss
  // and correct count added to the device accumulators.
  void enqueue_resident_step(const DeviceData& data, const DevicePlan& plan, const int64_t* step,
                             int64_t per_epoch) {
    gather_batch(data, plan, step, per_epoch, n_, y_[0].get(), labels_.get(), s_);
    for (int i = 1; i < g_.size(); ++i) forward(i);
    for (int i = 0; i < g_.size(); ++i)
      MINAS_CUDA_CHECK(cudaMemsetAsync(dy_[i].get(), 0, count(i) * sizeof(float), s_));
    const int out = g_.output();
    softmax_xent(y_[out].get(), labels_.get(), n_, g_.layer(out).shape.c, opt_.label_smoothing,
                 dy_[out].get(), loss_.get(), correct_.get(), s_);
    if (loss_scale) scale_by(dy_[out].get(), count(out), loss_scale, s_);
    for (int i = g_.size() - 1; i >= 1; --i) {
      backward(i);
      if (on_enqueued && has_params(i)) on_enqueued(i);
    }
  }
  // Called while a resident step is enqueued, as soon as a layer's backward
  // (and with it its parameter gradients) is on the stream.
  std::function<void(int layer)> on_enqueued;
  // fp16: the device's loss scale, applied to the loss gradient of a resident
  // step (the caller unscales the parameter gradients); null: none.
  const float* loss_scale = nullptr;
  void zero_accumulators() {
    MINAS_CUDA_CHECK(cudaMemsetAsync(loss_.get(), 0, sizeof(double), s_));
    MINAS_CUDA_CHECK(cudaMemsetAsync(correct_.get(), 0, sizeof(unsigned long long), s_));
  }
  std::pair<double, int64_t> accumulators() {
    double loss = 0;
    unsigned long long correct = 0;
    MINAS_CUDA_CHECK(cudaMemcpyAsync(&loss, loss_.get(), sizeof loss, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(&correct, correct_.get(), sizeof correct, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    return {loss, static_cast<int64_t>(correct)};
  }
  bool has_dropout() const {
    for (const Layer& l : g_.layers())
      if (l.op == Op::Dropout && l.p > 0) return true;
    return false;
  }
  float* param(size_t p) const { return w_[p].get(); }
  float* buffer(size_t b) const { return buf_[b].get(); }
  float* grad(size_t p) const { return gw_[p].get(); }
  cudaStream_t stream() const { return s_; }

  StepStats train_step(const float* x, const int32_t* y) override {
    if (mode_ != NetMode::train)
      throw Error("network", "train_step on a network compiled for inference");
    if (half_ && !brain_)
      throw Error("recipe: /precision",
                  "fp16 needs loss scaling, which GPU-resident training does (train_on_gpu); "
                  "this path (resume, ASHA states, CPU-hosted steps) takes fp32 or bf16");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    upload(x);
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(labels_.get(), y, sizeof(int32_t) * n_, cudaMemcpyHostToDevice, s_));
    for (int i = 1; i < g_.size(); ++i) forward(i);
    MINAS_CUDA_CHECK(cudaMemsetAsync(loss_.get(), 0, sizeof(double), s_));
    MINAS_CUDA_CHECK(cudaMemsetAsync(correct_.get(), 0, sizeof(unsigned long long), s_));
    for (int i = 0; i < g_.size(); ++i)
      MINAS_CUDA_CHECK(cudaMemsetAsync(dy_[i].get(), 0, count(i) * sizeof(float), s_));
    const int out = g_.output();
    softmax_xent(y_[out].get(), labels_.get(), n_, g_.layer(out).shape.c, opt_.label_smoothing,
                 dy_[out].get(), loss_.get(), correct_.get(), s_);
    for (int i = g_.size() - 1; i >= 1; --i) backward(i);
    // The gradients and running statistics back into the host model.
    for (size_t p = 0; p < gw_.size(); ++p)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.params()[p].grad.data(), gw_[p].get(),
                                       gw_[p].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    for (size_t b = 0; b < buf_.size(); ++b)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.buffers()[b].value.data(), buf_[b].get(),
                                       buf_[b].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    double loss = 0;
    unsigned long long correct = 0;
    MINAS_CUDA_CHECK(cudaMemcpyAsync(&loss, loss_.get(), sizeof loss, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(&correct, correct_.get(), sizeof correct, cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    if (opt_.on_layer_gradients)
      for (int i = g_.size() - 1; i >= 1; --i)
        if (has_params(i)) opt_.on_layer_gradients(i);
    ++step_;
    ran_forward_ = true;
    backward_pending_ = false;
    return {loss / n_, static_cast<int64_t>(correct)};
  }

  void forward(const float* x, float* logits) override {
    if (mode_ != NetMode::train)
      throw Error("network", "forward on a network compiled for inference: use infer");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    upload(x);
    for (int i = 1; i < g_.size(); ++i) forward(i);
    const int out = g_.output();
    MINAS_CUDA_CHECK(cudaMemcpyAsync(logits, y_[out].get(), count(out) * sizeof(float),
                                     cudaMemcpyDeviceToHost, s_));
    for (size_t b = 0; b < buf_.size(); ++b)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.buffers()[b].value.data(), buf_[b].get(),
                                       buf_[b].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    ++step_;
    ran_forward_ = backward_pending_ = true;
  }

  void backward(const float* dlogits, float* dx) override {
    if (mode_ != NetMode::train)
      throw Error("network", "backward on a network compiled for inference");
    if (!backward_pending_)
      throw Error("network", "backward needs a forward before it (one backward per forward)");
    if (dx && !opt_.input_gradient)
      throw Error("network", "the input gradient needs a network compiled with input_gradient");
    if (half_ && !brain_)
      throw Error("recipe: /precision", "fp16 needs loss scaling: backward() takes fp32 or bf16");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    for (int i = 0; i < g_.size(); ++i)
      MINAS_CUDA_CHECK(cudaMemsetAsync(dy_[i].get(), 0, count(i) * sizeof(float), s_));
    const int out = g_.output();
    MINAS_CUDA_CHECK(cudaMemcpyAsync(dy_[out].get(), dlogits, count(out) * sizeof(float),
                                     cudaMemcpyHostToDevice, s_));
    for (int i = g_.size() - 1; i >= 1; --i) backward(i);
    for (size_t p = 0; p < gw_.size(); ++p)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.params()[p].grad.data(), gw_[p].get(),
                                       gw_[p].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
    if (dx)
      MINAS_CUDA_CHECK(
          cudaMemcpyAsync(dx, dy_[0].get(), count(0) * sizeof(float), cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    backward_pending_ = false;
    if (opt_.on_layer_gradients)
      for (int i = g_.size() - 1; i >= 1; --i)
        if (has_params(i)) opt_.on_layer_gradients(i);
  }

  // Every layer's output has a buffer of its own, plain NCHW.
  void layer_output(int layer, float* out) override {
    if (layer < 0 || layer >= g_.size())
      throw Error("network", "no layer " + std::to_string(layer) + " in a graph of " +
                                 std::to_string(g_.size()));
    if (!ran_forward_) throw Error("network", "layer output before any forward pass");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_CUDA_CHECK(cudaMemcpyAsync(out, y_[layer].get(), count(layer) * sizeof(float),
                                     cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  }

  void infer(const float* x, float* logits) override {
    if (mode_ == NetMode::train) throw Error("network", "infer on a network compiled for training");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    upload(x);
    for (int i = 1; i < g_.size(); ++i) forward(i);
    const int out = g_.output();
    MINAS_CUDA_CHECK(cudaMemcpyAsync(logits, y_[out].get(), count(out) * sizeof(float),
                                     cudaMemcpyDeviceToHost, s_));
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
    ran_forward_ = true;
  }

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
  void upload(const float* x) {
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(y_[0].get(), x, count(0) * sizeof(float), cudaMemcpyHostToDevice, s_));
    for (size_t p = 0; p < w_.size(); ++p)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(w_[p].get(), model_.params()[p].value.data(),
                                       w_[p].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
    for (size_t b = 0; b < buf_.size(); ++b)
      MINAS_CUDA_CHECK(cudaMemcpyAsync(buf_[b].get(), model_.buffers()[b].value.data(),
                                       buf_[b].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
  }

  // ------------------------------------------------------------ planning

  void plan(int i, size_t& workspace) {
    const Layer& l = g_.layer(i);
    switch (l.op) {
      case Op::Conv:
        plan_conv(i, workspace);
        break;
      case Op::BatchNorm: {
        BnState& b = bns_[i];
        b.param = TensorDesc(1, l.shape.c, 1, 1);
        b.save_mean = Buffer<float>(static_cast<size_t>(l.shape.c));
        b.save_inv_var = Buffer<float>(static_cast<size_t>(l.shape.c));
        break;
      }
      case Op::Relu:
      case Op::Relu6:
      case Op::Sigmoid: {
        cudnnActivationDescriptor_t a;
        MINAS_CUDNN_CHECK(cudnnCreateActivationDescriptor(&a));
        acts_[i] = a;
        const cudnnActivationMode_t m = l.op == Op::Relu    ? CUDNN_ACTIVATION_RELU
                                        : l.op == Op::Relu6 ? CUDNN_ACTIVATION_CLIPPED_RELU
                                                            : CUDNN_ACTIVATION_SIGMOID;
        // coef: ReLU6's clip; for the others an upper bound no value reaches
        // (some cuDNN versions read it as a ceiling for plain ReLU too).
        const double coef =
            l.op == Op::Relu6 ? 6.0 : static_cast<double>(std::numeric_limits<float>::max());
        MINAS_CUDNN_CHECK(cudnnSetActivationDescriptor(a, m, CUDNN_NOT_PROPAGATE_NAN, coef));
        break;
      }
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool: {
        cudnnPoolingDescriptor_t p;
        MINAS_CUDNN_CHECK(cudnnCreatePoolingDescriptor(&p));
        pools_[i] = p;
        const Shape s = g_.layer(in(i)).shape;
        const cudnnPoolingMode_t m = l.op == Op::MaxPool ? CUDNN_POOLING_MAX
                                     : l.op == Op::AvgPool && !l.count_include_pad
                                         ? CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING
                                         : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING;
        if (l.op == Op::GlobalAvgPool)
          MINAS_CUDNN_CHECK(
              cudnnSetPooling2dDescriptor(p, m, CUDNN_NOT_PROPAGATE_NAN, s.h, s.w, 0, 0, 1, 1));
        else
          MINAS_CUDNN_CHECK(cudnnSetPooling2dDescriptor(
              p, m, CUDNN_NOT_PROPAGATE_NAN, l.kernel, l.kernel, l.pad, l.pad, l.stride, l.stride));
        break;
      }
      case Op::Linear: {
        if (l.bias) linear_bias_[i] = TensorDesc(1, l.shape.c, 1, 1);
        if (half_) {
          LinearState& ls = linears_[i];
          const size_t features = static_cast<size_t>(g_.layer(in(i)).shape.elements());
          ls.x16 = Buffer<uint16_t>(count(in(i)));
          ls.w16 = Buffer<uint16_t>(features * static_cast<size_t>(l.shape.c));
          if (mode_ == NetMode::train) ls.dy16 = Buffer<uint16_t>(count(i));
        }
        break;
      }
      case Op::Dropout:
        masks_[i] = Buffer<float>(count(i));
        break;
      default:
        break;
    }
  }

  void plan_conv(int i, size_t& workspace) {
    const Layer& l = g_.layer(i);
    const Shape s = g_.layer(in(i)).shape;
    ConvState& c = convs_[i];
    const cudnnDataType_t type = !half_   ? CUDNN_DATA_FLOAT
                                 : brain_ ? CUDNN_DATA_BFLOAT16
                                          : CUDNN_DATA_HALF;
    MINAS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&c.w));
    // 16-bit convolutions run NHWC, the tensor cores' own layout; the casts
    // to and from the fp32 NCHW tensors transpose on the way.
    const cudnnTensorFormat_t format = half_ ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    MINAS_CUDNN_CHECK(cudnnSetFilter4dDescriptor(c.w, type, format, l.shape.c, s.c / l.groups,
                                                 l.kernel, l.kernel));
    MINAS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c.conv));
    // Accumulation in fp32 whatever the storage.
    MINAS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        c.conv, l.pad, l.pad, l.stride, l.stride, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MINAS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(c.conv, l.groups));
    // fp32 means fp32: FMA only, no TF32 tensor cores (DEFAULT_MATH would allow
    // them); 16-bit storage runs on tensor cores.
    MINAS_CUDNN_CHECK(
        cudnnSetConvolutionMathType(c.conv, half_ ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    if (l.bias) c.bias = TensorDesc(1, l.shape.c, 1, 1);
    cudnnTensorDescriptor_t x = desc_[in(i)].d, y = desc_[i].d;
    if (half_) {
      c.xh = TensorDesc(n_, s.c, s.h, s.w, type, CUDNN_TENSOR_NHWC);
      c.yh = TensorDesc(n_, l.shape.c, l.shape.h, l.shape.w, type, CUDNN_TENSOR_NHWC);
      x = c.xh.d;
      y = c.yh.d;
      const size_t weights =
          static_cast<size_t>(l.shape.c) * (s.c / l.groups) * l.kernel * l.kernel;
      c.x16 = Buffer<uint16_t>(count(in(i)));
      c.w16 = Buffer<uint16_t>(weights);
      c.y16 = Buffer<uint16_t>(count(i));
      if (mode_ == NetMode::train) {
        c.dy16 = Buffer<uint16_t>(count(i));
        c.dw16 = Buffer<uint16_t>(weights);
        c.dx16 = Buffer<uint16_t>(count(in(i)));
      }
    }
    // The heuristics' first algorithm that works, and its workspace.
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[8];
    MINAS_CUDNN_CHECK(
        cudnnGetConvolutionForwardAlgorithm_v7(dnn_, x, c.w, c.conv, y, 8, &found, fwd));
    c.fwd = pick(fwd, found, "forward", l.name);
    size_t need = 0;
    MINAS_CUDNN_CHECK(
        cudnnGetConvolutionForwardWorkspaceSize(dnn_, x, c.w, c.conv, y, c.fwd, &need));
    workspace = std::max(workspace, need);
    if (mode_ != NetMode::train) return;
    cudnnConvolutionBwdDataAlgoPerf_t bd[8];
    MINAS_CUDNN_CHECK(
        cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn_, c.w, y, c.conv, x, 8, &found, bd));
    c.bwd_data = pick(bd, found, "backward data", l.name);
    MINAS_CUDNN_CHECK(
        cudnnGetConvolutionBackwardDataWorkspaceSize(dnn_, c.w, y, c.conv, x, c.bwd_data, &need));
    workspace = std::max(workspace, need);
    cudnnConvolutionBwdFilterAlgoPerf_t bf[8];
    MINAS_CUDNN_CHECK(
        cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn_, x, y, c.conv, c.w, 8, &found, bf));
    c.bwd_filter = pick(bf, found, "backward filter", l.name);
    MINAS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn_, x, y, c.conv, c.w,
                                                                     c.bwd_filter, &need));
    workspace = std::max(workspace, need);
  }

  template <class Perf>
  static decltype(Perf::algo) pick(const Perf* perf, int found, const char* what,
                                   const std::string& layer) {
    for (int k = 0; k < found; ++k)
      if (perf[k].status == CUDNN_STATUS_SUCCESS) return perf[k].algo;
    throw Error("cudnn", std::string("no ") + what + " convolution algorithm for layer " + layer);
  }

  // ------------------------------------------------------------ forward

  void forward(int i) {
    const Layer& l = g_.layer(i);
    const float one = 1.0f, zero = 0.0f;
    float* y = y_[i].get();
    const size_t n = count(i);
    switch (l.op) {
      case Op::Input:
        break;
      case Op::Conv: {
        const ConvState& c = convs_.at(i);
        const LayerState& st = model_.state(i);
        if (half_) {
          const Shape sx = g_.layer(in(i)).shape;
          to_half_nhwc(y_[in(i)].get(), c.x16.get(), n_, sx.c, sx.h, sx.w, brain_, s_);
          to_half_nhwc(W(st.weight), c.w16.get(), l.shape.c, sx.c / l.groups, l.kernel, l.kernel,
                       brain_, s_);
          MINAS_CUDNN_CHECK(cudnnConvolutionForward(dnn_, &one, c.xh.d, c.x16.get(), c.w,
                                                    c.w16.get(), c.conv, c.fwd, workspace_.get(),
                                                    workspace_.size(), &zero, c.yh.d, c.y16.get()));
          from_half_nhwc(c.y16.get(), y, n_, l.shape.c, l.shape.h, l.shape.w, brain_, false, s_);
        } else {
          MINAS_CUDNN_CHECK(cudnnConvolutionForward(
              dnn_, &one, desc_[in(i)].d, y_[in(i)].get(), c.w, W(st.weight), c.conv, c.fwd,
              workspace_.get(), workspace_.size(), &zero, desc_[i].d, y));
        }
        if (l.bias)
          MINAS_CUDNN_CHECK(cudnnAddTensor(dnn_, &one, c.bias.d, W(st.bias), &one, desc_[i].d, y));
        break;
      }
      case Op::BatchNorm: {
        BnState& b = bns_.at(i);
        const LayerState& st = model_.state(i);
        float* mean = buf_[static_cast<size_t>(st.running_mean)].get();
        float* var = buf_[static_cast<size_t>(st.running_var)].get();
        if (mode_ == NetMode::train)
          MINAS_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
              dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, desc_[in(i)].d, y_[in(i)].get(),
              desc_[i].d, y, b.param.d, W(st.gamma), W(st.beta), l.momentum, mean, var, l.eps,
              b.save_mean.get(), b.save_inv_var.get()));
        else
          MINAS_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
              dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, desc_[in(i)].d, y_[in(i)].get(),
              desc_[i].d, y, b.param.d, W(st.gamma), W(st.beta), mean, var, l.eps));
        break;
      }
      case Op::Relu:
      case Op::Relu6:
      case Op::Sigmoid:
        MINAS_CUDNN_CHECK(cudnnActivationForward(dnn_, acts_.at(i), &one, desc_[in(i)].d,
                                                 y_[in(i)].get(), &zero, desc_[i].d, y));
        break;
      case Op::HSwish:
        hswish_forward(y_[in(i)].get(), y, n, s_);
        break;
      case Op::HSigmoid:
        hsigmoid_forward(y_[in(i)].get(), y, n, s_);
        break;
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool:
        MINAS_CUDNN_CHECK(cudnnPoolingForward(dnn_, pools_.at(i), &one, desc_[in(i)].d,
                                              y_[in(i)].get(), &zero, desc_[i].d, y));
        break;
      case Op::Add:
        MINAS_CUDA_CHECK(
            cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
        for (size_t k = 1; k < l.inputs.size(); ++k)
          accumulate(y_[in(i, static_cast<int>(k))].get(), y, n, s_);
        break;
      case Op::Concat: {
        int offset = 0;
        for (size_t k = 0; k < l.inputs.size(); ++k) {
          const int r = in(i, static_cast<int>(k));
          const Shape s = g_.layer(r).shape;
          concat_forward(y_[r].get(), n_, s.c, offset, l.shape.c, s.h * s.w, y, s_);
          offset += s.c;
        }
        break;
      }
      case Op::Mul:
        mul_forward(y_[in(i, 0)].get(), y_[in(i, 1)].get(), n_, l.shape.c, l.shape.h * l.shape.w, y,
                    s_);
        break;
      case Op::Linear: {
        const int r = in(i);
        const int features = static_cast<int>(g_.layer(r).shape.elements()), out = l.shape.c;
        const LayerState& st = model_.state(i);
        // Row-major y (n, out) = x (n, in) W^T: column-major y^T = W^T' x^T.
        if (half_) {
          LinearState& ls = linears_.at(i);
          to_half(y_[r].get(), ls.x16.get(), ls.x16.size(), brain_, s_);
          to_half(W(st.weight), ls.w16.get(), ls.w16.size(), brain_, s_);
          MINAS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n_, features, &one,
                                          ls.w16.get(), half_type(), features, ls.x16.get(),
                                          half_type(), features, &zero, y, CUDA_R_32F, out,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        } else {
          MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n_, features, &one,
                                         W(st.weight), features, y_[r].get(), features, &zero, y,
                                         out));
        }
        if (l.bias)
          MINAS_CUDNN_CHECK(
              cudnnAddTensor(dnn_, &one, linear_bias_.at(i).d, W(st.bias), &one, desc_[i].d, y));
        break;
      }
      case Op::Zero:
        MINAS_CUDA_CHECK(cudaMemsetAsync(y, 0, n * sizeof(float), s_));
        break;
      case Op::Identity:
        MINAS_CUDA_CHECK(
            cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
        break;
      case Op::Dropout: {
        if (mode_ != NetMode::train || l.p <= 0) {
          MINAS_CUDA_CHECK(
              cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
          break;
        }
        // The CPU network's mask, drawn the same way from (seed, layer, step).
        std::vector<float>& host = host_masks_[i];
        host.assign(n, 0.0f);
        const float keep = 1.0f / (1.0f - l.p);
        Rng rng((opt_.seed ^ (uint64_t(i) << 40)) + step_);
        for (float& m : host) m = rng.uniform() < l.p ? 0.0f : keep;
        MINAS_CUDA_CHECK(cudaMemcpyAsync(masks_.at(i).get(), host.data(), n * sizeof(float),
                                         cudaMemcpyHostToDevice, s_));
        mask_forward(y_[in(i)].get(), masks_.at(i).get(), y, n, s_);
        break;
      }
    }
  }

  // ------------------------------------------------------------ backward
  // Every input gradient accumulates (beta = 1, or +=): a tensor's gradient is
  // the sum over its consumers; parameter gradients are written once.

  void backward(int i) {
    const Layer& l = g_.layer(i);
    const float one = 1.0f, zero = 0.0f;
    const float* dy = dy_[i].get();
    const size_t n = count(i);
    switch (l.op) {
      case Op::Input:
      case Op::Zero:
        break;
      case Op::Conv: {
        const ConvState& c = convs_.at(i);
        const LayerState& st = model_.state(i);
        const int r = in(i);
        if (half_) {
          // The forward's 16-bit input and weights; the gradients back in fp32.
          const Shape sx = g_.layer(r).shape;
          to_half_nhwc(dy, c.dy16.get(), n_, l.shape.c, l.shape.h, l.shape.w, brain_, s_);
          MINAS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
              dnn_, &one, c.xh.d, c.x16.get(), c.yh.d, c.dy16.get(), c.conv, c.bwd_filter,
              workspace_.get(), workspace_.size(), &zero, c.w, c.dw16.get()));
          from_half_nhwc(c.dw16.get(), GW(st.weight), l.shape.c, sx.c / l.groups, l.kernel,
                         l.kernel, brain_, false, s_);
          if (l.bias)
            MINAS_CUDNN_CHECK(cudnnConvolutionBackwardBias(dnn_, &one, desc_[i].d, dy, &zero,
                                                           c.bias.d, GW(st.bias)));
          if (r > 0 || opt_.input_gradient) {
            MINAS_CUDNN_CHECK(cudnnConvolutionBackwardData(
                dnn_, &one, c.w, c.w16.get(), c.yh.d, c.dy16.get(), c.conv, c.bwd_data,
                workspace_.get(), workspace_.size(), &zero, c.xh.d, c.dx16.get()));
            from_half_nhwc(c.dx16.get(), dy_[r].get(), n_, sx.c, sx.h, sx.w, brain_, true, s_);
          }
          break;
        }
        MINAS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
            dnn_, &one, desc_[r].d, y_[r].get(), desc_[i].d, dy, c.conv, c.bwd_filter,
            workspace_.get(), workspace_.size(), &zero, c.w, GW(st.weight)));
        if (l.bias)
          MINAS_CUDNN_CHECK(cudnnConvolutionBackwardBias(dnn_, &one, desc_[i].d, dy, &zero,
                                                         c.bias.d, GW(st.bias)));
        if (r > 0 || opt_.input_gradient)
          MINAS_CUDNN_CHECK(cudnnConvolutionBackwardData(
              dnn_, &one, c.w, W(st.weight), desc_[i].d, dy, c.conv, c.bwd_data, workspace_.get(),
              workspace_.size(), &one, desc_[r].d, dy_[r].get()));
        break;
      }
      case Op::BatchNorm: {
        BnState& b = bns_.at(i);
        const LayerState& st = model_.state(i);
        const int r = in(i);
        MINAS_CUDNN_CHECK(cudnnBatchNormalizationBackward(
            dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &one, &one, &zero, desc_[r].d, y_[r].get(),
            desc_[i].d, dy, desc_[r].d, dy_[r].get(), b.param.d, W(st.gamma), GW(st.gamma),
            GW(st.beta), l.eps, b.save_mean.get(), b.save_inv_var.get()));
        break;
      }
      case Op::Relu:
      case Op::Relu6:
      case Op::Sigmoid: {
        const int r = in(i);
        MINAS_CUDNN_CHECK(cudnnActivationBackward(dnn_, acts_.at(i), &one, desc_[i].d, y_[i].get(),
                                                  desc_[i].d, dy, desc_[r].d, y_[r].get(), &one,
                                                  desc_[r].d, dy_[r].get()));
        break;
      }
      case Op::HSwish:
        hswish_backward(y_[in(i)].get(), dy, dy_[in(i)].get(), n, s_);
        break;
      case Op::HSigmoid:
        hsigmoid_backward(y_[in(i)].get(), dy, dy_[in(i)].get(), n, s_);
        break;
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool: {
        const int r = in(i);
        MINAS_CUDNN_CHECK(cudnnPoolingBackward(dnn_, pools_.at(i), &one, desc_[i].d, y_[i].get(),
                                               desc_[i].d, dy, desc_[r].d, y_[r].get(), &one,
                                               desc_[r].d, dy_[r].get()));
        break;
      }
      case Op::Add:
        for (size_t k = 0; k < l.inputs.size(); ++k)
          accumulate(dy, dy_[in(i, static_cast<int>(k))].get(), n, s_);
        break;
      case Op::Concat: {
        int offset = 0;
        for (size_t k = 0; k < l.inputs.size(); ++k) {
          const int r = in(i, static_cast<int>(k));
          const Shape s = g_.layer(r).shape;
          concat_backward(dy, n_, s.c, offset, l.shape.c, s.h * s.w, dy_[r].get(), s_);
          offset += s.c;
        }
        break;
      }
      case Op::Mul:
        mul_backward(y_[in(i, 0)].get(), y_[in(i, 1)].get(), dy, n_, l.shape.c,
                     l.shape.h * l.shape.w, dy_[in(i, 0)].get(), dy_[in(i, 1)].get(), s_);
        break;
      case Op::Linear: {
        const int r = in(i);
        const int features = static_cast<int>(g_.layer(r).shape.elements()), out = l.shape.c;
        const LayerState& st = model_.state(i);
        if (half_) {
          LinearState& ls = linears_.at(i);
          to_half(dy, ls.dy16.get(), ls.dy16.size(), brain_, s_);
          MINAS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, features, out, n_, &one,
                                          ls.x16.get(), half_type(), features, ls.dy16.get(),
                                          half_type(), out, &zero, GW(st.weight), CUDA_R_32F,
                                          features, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          if (l.bias)
            MINAS_CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, out, n_, &one, dy, out, ones_.get(),
                                           1, &zero, GW(st.bias), 1));
          if (r > 0 || opt_.input_gradient)
            MINAS_CUBLAS_CHECK(cublasGemmEx(
                blas_, CUBLAS_OP_N, CUBLAS_OP_N, features, n_, out, &one, ls.w16.get(), half_type(),
                features, ls.dy16.get(), half_type(), out, &one, dy_[r].get(), CUDA_R_32F, features,
                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          break;
        }
        // dW (out, in) = dy^T x: column-major dW^T (in x out) = x^T' dy.
        MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, features, out, n_, &one,
                                       y_[r].get(), features, dy, out, &zero, GW(st.weight),
                                       features));
        if (l.bias)  // db = dy^T 1
          MINAS_CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, out, n_, &one, dy, out, ones_.get(), 1,
                                         &zero, GW(st.bias), 1));
        if (r > 0 || opt_.input_gradient)  // dx (n, in) += dy W: column-major dx^T += W^T' dy^T.
          MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, features, n_, out, &one,
                                         W(st.weight), features, dy, out, &one, dy_[r].get(),
                                         features));
        break;
      }
      case Op::Identity:
        accumulate(dy, dy_[in(i)].get(), n, s_);
        break;
      case Op::Dropout:
        if (l.p <= 0)
          accumulate(dy, dy_[in(i)].get(), n, s_);
        else
          mask_backward(dy, masks_.at(i).get(), dy_[in(i)].get(), n, s_);
        break;
    }
  }

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

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count)
      throw Error("cuda:" + std::to_string(device),
                  "no such GPU (" + std::to_string(count) + " found)");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MINAS_CUDNN_CHECK(cudnnCreate(&dnn_));
    MINAS_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
    MINAS_CUBLAS_CHECK(cublasCreate(&blas_));
    MINAS_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // fp32 means fp32: no TF32 in cuBLAS either.
    MINAS_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    // A workspace of its own, so cuBLAS allocates nothing while a step is
    // being captured in a graph.
    blas_workspace_ = Buffer<unsigned char>(size_t{4} << 20);
    MINAS_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_workspace_.get(), blas_workspace_.size()));
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cublasDestroy(blas_);
    cudnnDestroy(dnn_);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  int threads() const override { return 1; }
  int device() const { return device_; }
  std::unique_ptr<CudaNetwork> compile_cuda(Model& model, int batch, NetMode mode,
                                            const NetworkOptions& options) {
    return std::make_unique<CudaNetwork>(device_, dnn_, blas_, stream_, model, batch, mode,
                                         options);
  }
  std::unique_ptr<Network> compile(Model& model, int batch, NetMode mode,
                                   const NetworkOptions& options) override {
    // Latency mode runs the eval path (batch norm not folded yet on the GPU).
    return std::make_unique<CudaNetwork>(device_, dnn_, blas_, stream_, model, batch,
                                         mode == NetMode::latency ? NetMode::eval : mode, options);
  }

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  Buffer<unsigned char> blas_workspace_;
};

// A host vector's device copy, rewritable in place (same size) so a captured
// graph that reads it sees new contents.
template <class T>
Buffer<T> to_device(const std::vector<T>& host, cudaStream_t s) {
  Buffer<T> b(std::max<size_t>(host.size(), 1));
  if (!host.empty())
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(b.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
  return b;
}
template <class T>
void rewrite(Buffer<T>& b, const std::vector<T>& host, cudaStream_t s) {
  if (!host.empty())
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(b.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, s));
}

// GradientReducer's buckets on the GPU: a bucket's gradients are copied into
// its flat buffer on the compute stream as soon as backward has enqueued its
// last layer; the communicator's stream waits for that, sums the bucket over
// the ranks, scales it to the mean and copies it back; the compute stream
// waits for every bucket before the optimizer. All stream-ordered, so a
// captured step holds the all-reduces overlapping backward.
class DeviceReducer {
 public:
  DeviceReducer(CudaNetwork& net, const Model& model, NcclCommunicator& comm, size_t bucket_bytes)
      : net_(net), model_(model), comm_(comm) {
    for (GradientBucket& plan : plan_buckets(model, bucket_bytes, bucket_of_layer_)) {
      Bucket& b = buckets_.emplace_back();
      b.layers = plan.layers.size();
      b.params = std::move(plan.params);
      b.elements = plan.elements;
    }
    for (Bucket& b : buckets_) {
      b.flat = Buffer<float>(b.elements);
      MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&b.ready, cudaEventDisableTiming));
      MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
      b.remaining = b.layers;
    }
  }
  ~DeviceReducer() {
    for (Bucket& b : buckets_) {
      if (b.ready) cudaEventDestroy(b.ready);
      if (b.done) cudaEventDestroy(b.done);
    }
  }
  DeviceReducer(const DeviceReducer&) = delete;
  DeviceReducer& operator=(const DeviceReducer&) = delete;

  void layer_enqueued(int layer) {
    const int b = bucket_of_layer_.at(static_cast<size_t>(layer));
    if (b < 0 || buckets_[static_cast<size_t>(b)].remaining == 0) return;
    if (--buckets_[static_cast<size_t>(b)].remaining == 0) launch(buckets_[static_cast<size_t>(b)]);
  }

  // After the step's backward is enqueued: what is left starts, and the
  // compute stream waits for every bucket.
  void finish() {
    for (Bucket& b : buckets_)
      if (!b.launched) launch(b);
    for (Bucket& b : buckets_) {
      MINAS_CUDA_CHECK(cudaStreamWaitEvent(net_.stream(), b.done, 0));
      b.launched = false;
      b.remaining = b.layers;
    }
  }

 private:
  struct Bucket {
    size_t layers = 0, remaining = 0, elements = 0;
    std::vector<int> params;
    Buffer<float> flat;
    cudaEvent_t ready = nullptr, done = nullptr;
    bool launched = false;
  };

  void launch(Bucket& b) {
    const cudaStream_t compute = net_.stream(), comm = comm_.stream();
    size_t at = 0;
    for (int p : b.params) {
      const size_t n = model_.params()[static_cast<size_t>(p)].size();
      MINAS_CUDA_CHECK(cudaMemcpyAsync(b.flat.get() + at, net_.grad(static_cast<size_t>(p)),
                                       n * sizeof(float), cudaMemcpyDeviceToDevice, compute));
      at += n;
    }
    MINAS_CUDA_CHECK(cudaEventRecord(b.ready, compute));
    MINAS_CUDA_CHECK(cudaStreamWaitEvent(comm, b.ready, 0));
    comm_.enqueue_all_reduce_sum(std::span<float>(b.flat.get(), b.elements));
    scale(b.flat.get(), 1.0f / static_cast<float>(comm_.size()), b.elements, comm);
    at = 0;
    for (int p : b.params) {
      const size_t n = model_.params()[static_cast<size_t>(p)].size();
      MINAS_CUDA_CHECK(cudaMemcpyAsync(net_.grad(static_cast<size_t>(p)), b.flat.get() + at,
                                       n * sizeof(float), cudaMemcpyDeviceToDevice, comm));
      at += n;
    }
    MINAS_CUDA_CHECK(cudaEventRecord(b.done, comm));
    b.launched = true;
  }

  CudaNetwork& net_;
  const Model& model_;
  NcclCommunicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_layer_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

TrainReport train_on_gpu(Model& model, const Recipe& recipe, const data::TrainTest& data,
                         int device, const GpuTrainOptions& options) {
  using Clock = std::chrono::steady_clock;
  recipe.validate("recipe");
  if (recipe.epochs <= 0 || recipe.time_budget_s > 0)
    throw Error("recipe", "training on the GPU needs an epoch budget (epochs > 0, no time budget)");
  const LayerGraph& g = model.graph();
  TrainSplit sp = train_split(g, recipe, data);
  const int batch = static_cast<int>(recipe.batch);
  NcclCommunicator* comm = options.comm && options.comm->size() > 1 ? options.comm : nullptr;
  const int rank = comm ? comm->rank() : 0;
  if (comm) {
    if (!options.host || options.host->size() != comm->size())
      throw Error("train_on_gpu", "data parallel needs the host group of the same ranks");
    if (comm->device() != device)
      throw Error("train_on_gpu",
                  "rank " + std::to_string(rank) + " trains on cuda:" + std::to_string(device) +
                      " but its communicator is on cuda:" + std::to_string(comm->device()));
    // As train(): every N-th image from the r-th, shards of equal size.
    const size_t ranks = static_cast<size_t>(comm->size()), each = sp.train.size() / ranks;
    std::vector<uint32_t> shard;
    for (size_t k = 0; k < each; ++k)
      shard.push_back(sp.train[k * ranks + static_cast<size_t>(rank)]);
    sp.train = std::move(shard);
    if (sp.train.size() < static_cast<size_t>(batch))
      throw Error("recipe: /batch", "batch " + std::to_string(batch) + " per rank is larger than " +
                                        "the " + std::to_string(sp.train.size()) +
                                        " training images of rank " + std::to_string(rank));
  }
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.augment = {static_cast<int>(recipe.crop_pad), recipe.hflip};
  lo.norm = sp.norm;
  lo.seed = recipe.seed;
  const int64_t per_epoch = static_cast<int64_t>(sp.train.size()) / batch;
  const uint64_t total = static_cast<uint64_t>(recipe.epochs) * static_cast<uint64_t>(per_epoch);
  const LrSchedule schedule(recipe, static_cast<uint64_t>(per_epoch), total);

  CudaBackend backend(device);
  NetworkOptions no;
  no.label_smoothing = static_cast<float>(recipe.label_smoothing);
  no.seed = recipe.seed + static_cast<uint64_t>(rank) * 0x9e3779b97f4a7c15ULL;  // masks per rank
  no.precision = recipe.precision;
  auto net = backend.compile_cuda(model, batch, NetMode::train, no);
  const cudaStream_t s = net->stream();
  net->upload_state();
  std::unique_ptr<DeviceReducer> reducer;
  if (comm) {
    // Every rank starts from rank 0's weights and statistics.
    for (size_t p = 0; p < model.params().size(); ++p)
      comm->broadcast(std::span<float>(net->param(p), model.params()[p].size()), 0);
    for (size_t b = 0; b < model.buffers().size(); ++b)
      comm->broadcast(std::span<float>(net->buffer(b), model.buffers()[b].size()), 0);
    reducer = std::make_unique<DeviceReducer>(*net, model, *comm, options.bucket_bytes);
    net->on_enqueued = [r = reducer.get()](int layer) { r->layer_enqueued(layer); };
  }

  // The data set, its normalization table and the schedule, once.
  const data::Normalizer normalizer(sp.norm, data.train.shape.c);
  std::vector<float> table;
  for (int c = 0; c < data.train.shape.c; ++c)
    table.insert(table.end(), normalizer.table(c), normalizer.table(c) + 256);
  Buffer<uint8_t> pixels = to_device(data.train.pixels, s),
                  labels = to_device(data.train.labels, s);
  Buffer<float> tab = to_device(table, s);
  std::vector<float> lr(total + 1), momentum(total + 1);
  for (uint64_t k = 0; k <= total; ++k) {
    const uint64_t at = std::min(k, total ? total - 1 : 0);
    lr[k] = static_cast<float>(schedule.lr(at));
    momentum[k] = static_cast<float>(schedule.momentum(at));
  }
  Buffer<float> lr_d = to_device(lr, s), mom_d = to_device(momentum, s);
  Buffer<int64_t> step = to_device(std::vector<int64_t>{0}, s);
  data::EpochPlan plan = data::epoch_plan(sp.train, lo, 0);
  Buffer<uint32_t> plan_index = to_device(plan.index, s);
  Buffer<uint8_t> plan_dy = to_device(plan.dy, s), plan_dx = to_device(plan.dx, s),
                  plan_flip = to_device(plan.flip, s);
  const DeviceData dd{pixels.get(),       labels.get(),       data.train.shape.c,
                      data.train.shape.h, data.train.shape.w, tab.get()};
  const DevicePlan dp{plan_index.get(), plan_dy.get(), plan_dx.get(), plan_flip.get(), plan.pad};

  // The optimizer: Optimizer's rules per tensor, its momentum on the device.
  Optimizer reference(recipe);
  std::vector<Buffer<float>> momentum_buf, norms;
  std::vector<DeviceRule> rules;
  for (size_t p = 0; p < model.params().size(); ++p) {
    const Param& param = model.params()[p];
    reference.add_param(nullptr, nullptr, 0, param.kind);
    const UpdateRule r = reference.rule(p, 1.0, 0.0);  // lr 1: shrink = 1 - wd when decoupled
    DeviceRule d;
    d.l2 = r.l2;
    d.decoupled_wd = 1.0f - r.shrink;
    d.nesterov = r.nesterov;
    d.lars = recipe.optimizer == OptimizerKind::lars && param.kind == ParamKind::weight;
    d.lars_eta = static_cast<float>(recipe.lars_eta);
    d.weight_decay = d.l2 + d.decoupled_wd;
    rules.push_back(d);
    momentum_buf.push_back(to_device(std::vector<float>(param.size(), 0.0f), s));
    norms.emplace_back(2);
  }
  // fp16: dynamic loss scaling on the device (PyTorch's GradScaler: 2^16 to
  // start, halved on an overflow, whose step is skipped, doubled after 2000
  // clean steps).
  const bool scaled = recipe.precision == Precision::fp16;
  Buffer<float> loss_scale = to_device(std::vector<float>{65536.0f}, s);
  Buffer<int> overflow = to_device(std::vector<int>{0}, s),
              good = to_device(std::vector<int>{0}, s);
  if (scaled) net->loss_scale = loss_scale.get();
  auto enqueue = [&] {
    if (scaled) zero_flag(overflow.get(), s);
    net->enqueue_resident_step(dd, dp, step.get(), per_epoch);
    if (reducer) reducer->finish();
    if (scaled)
      for (size_t p = 0; p < rules.size(); ++p)
        unscale_check(net->grad(p), model.params()[p].size(), loss_scale.get(), overflow.get(), s);
    for (size_t p = 0; p < rules.size(); ++p) {
      const size_t n = model.params()[p].size();
      if (rules[p].lars) {
        squared_norms_zero(norms[p].get(), s);
        squared_norms(net->param(p), net->grad(p), n, norms[p].get(), s);
      }
      momentum_update(net->param(p), net->grad(p), momentum_buf[p].get(), n, lr_d.get(),
                      mom_d.get(), step.get(), rules[p], norms[p].get(),
                      scaled ? overflow.get() : nullptr, s);
    }
    if (scaled) update_scale(loss_scale.get(), overflow.get(), good.get(), s);
    advance_step(step.get(), s);
  };
  cudaGraphExec_t exec = nullptr;
  cudaGraph_t graph = nullptr;
  struct GraphGuard {
    cudaGraphExec_t& e;
    cudaGraph_t& g;
    ~GraphGuard() {
      if (e) cudaGraphExecDestroy(e);
      if (g) cudaGraphDestroy(g);
    }
  } guard{exec, graph};
  const bool use_graph = options.graph && !net->has_dropout();
  if (use_graph) {
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s));
    MINAS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaStreamEndCapture(s, &graph);
      throw;
    }
    MINAS_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    MINAS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  }

  TrainReport report;
  report.params = model.parameter_count();
  report.macs = g.macs();
  auto eval_backend = make_cuda_backend(device);
  uint64_t done = 0;
  bool stopped = false;
  for (int epoch = 1; epoch <= recipe.epochs && !stopped; ++epoch) {
    if (epoch > 1) {
      plan = data::epoch_plan(sp.train, lo, static_cast<uint64_t>(epoch - 1));
      rewrite(plan_index, plan.index, s);
      rewrite(plan_dy, plan.dy, s);
      rewrite(plan_dx, plan.dx, s);
      rewrite(plan_flip, plan.flip, s);
    }
    net->zero_accumulators();
    EpochRecord rec;
    rec.epoch = epoch;
    MINAS_CUDA_CHECK(cudaStreamSynchronize(s));
    const auto t0 = Clock::now();
    for (int64_t k = 0; k < per_epoch; ++k) {
      bool stop = options.should_stop && options.should_stop();
      if (comm) {  // the ranks stop together or not at all
        float flag = stop ? 1.0f : 0.0f;
        options.host->all_reduce_sum(std::span<float>(&flag, 1));
        stop = flag > 0;
      }
      if (stop) {
        stopped = true;
        break;
      }
      if (use_graph) {
        MINAS_CUDA_CHECK(cudaGraphLaunch(exec, s));
      } else {
        net->set_step(done);
        enqueue();
      }
      ++done;
      ++rec.steps;
      rec.lr = lr[done - 1];
    }
    auto [loss_sum, correct] = net->accumulators();  // waits for the epoch's steps
    rec.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rec.steps == 0) break;
    double seen = static_cast<double>(rec.steps) * batch;
    if (comm) {  // the epoch's figures over all ranks
      std::array<float, 3> sums{static_cast<float>(loss_sum), static_cast<float>(correct),
                                static_cast<float>(seen)};
      options.host->all_reduce_sum(sums);
      loss_sum = sums[0];
      correct = static_cast<int64_t>(sums[1]);
      seen = sums[2];
      // Rank 0's batch-norm statistics for its evaluation, as train() does.
      for (size_t b = 0; b < model.buffers().size(); ++b)
        comm->broadcast(std::span<float>(net->buffer(b), model.buffers()[b].size()), 0);
    }
    report.train_seconds += rec.seconds;
    rec.train_loss = loss_sum / seen;
    rec.train_acc = static_cast<double>(correct) / seen;
    rec.img_per_s = seen / rec.seconds;
    if (!std::isfinite(rec.train_loss))
      throw Error("training", "diverged in epoch " + std::to_string(epoch) + ": the loss is " +
                                  std::to_string(rec.train_loss));
    net->download_state();
    if (!sp.val.empty() && rank == 0)
      rec.val_acc = evaluate(model, *eval_backend, data.train, sp.val, sp.norm, options.eval_batch);
    report.epochs.push_back(rec);
    if (options.on_epoch && rank == 0) options.on_epoch(rec);
  }
  net->download_state();
  report.steps = static_cast<int64_t>(done);
  report.img_per_s = static_cast<double>(done) * batch / std::max(report.train_seconds, 1e-9);
  report.val_acc = report.epochs.empty() ? report.val_acc : report.epochs.back().val_acc;
  if (options.evaluate_test && rank == 0)
    report.test_acc = evaluate(model, *eval_backend, data.test, data::all_indices(data.test),
                               sp.norm, options.eval_batch);
  if (options.measure_latency && rank == 0)
    report.latency = measure_latency(model, *eval_backend, 30);
  return report;
}

}  // namespace minas::cuda
