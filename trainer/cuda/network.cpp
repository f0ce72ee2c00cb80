#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/cuda/backend.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/kernels.h"
#include "trainer/cuda/ops.h"

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
  TensorDesc(int n, int c, int h, int w) : TensorDesc() {
    MINAS_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
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
        opt_(opt) {
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

  StepStats train_step(const float* x, const int32_t* y) override {
    if (mode_ != NetMode::train)
      throw Error("network", "train_step on a network compiled for inference");
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
    return {loss / n_, static_cast<int64_t>(correct)};
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
  }

 private:
  size_t count(int i) const {
    return static_cast<size_t>(n_) * static_cast<size_t>(g_.layer(i).shape.elements());
  }
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
        MINAS_CUDNN_CHECK(cudnnSetActivationDescriptor(a, m, CUDNN_NOT_PROPAGATE_NAN, 6.0));
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
      case Op::Linear:
        if (l.bias) linear_bias_[i] = TensorDesc(1, l.shape.c, 1, 1);
        break;
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
    MINAS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&c.w));
    MINAS_CUDNN_CHECK(cudnnSetFilter4dDescriptor(c.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                 l.shape.c, s.c / l.groups, l.kernel, l.kernel));
    MINAS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c.conv));
    MINAS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        c.conv, l.pad, l.pad, l.stride, l.stride, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MINAS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(c.conv, l.groups));
    MINAS_CUDNN_CHECK(cudnnSetConvolutionMathType(c.conv, CUDNN_DEFAULT_MATH));  // fp32: no TF32
    if (l.bias) c.bias = TensorDesc(1, l.shape.c, 1, 1);
    const cudnnTensorDescriptor_t x = desc_[in(i)].d, y = desc_[i].d;
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
        MINAS_CUDNN_CHECK(cudnnConvolutionForward(dnn_, &one, desc_[in(i)].d, y_[in(i)].get(), c.w,
                                                  W(st.weight), c.conv, c.fwd, workspace_.get(),
                                                  workspace_.size(), &zero, desc_[i].d, y));
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
        MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n_, features, &one,
                                       W(st.weight), features, y_[r].get(), features, &zero, y,
                                       out));
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
        MINAS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
            dnn_, &one, desc_[r].d, y_[r].get(), desc_[i].d, dy, c.conv, c.bwd_filter,
            workspace_.get(), workspace_.size(), &zero, c.w, GW(st.weight)));
        if (l.bias)
          MINAS_CUDNN_CHECK(cudnnConvolutionBackwardBias(dnn_, &one, desc_[i].d, dy, &zero,
                                                         c.bias.d, GW(st.bias)));
        if (r > 0)
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
        // dW (out, in) = dy^T x: column-major dW^T (in x out) = x^T' dy.
        MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, features, out, n_, &one,
                                       y_[r].get(), features, dy, out, &zero, GW(st.weight),
                                       features));
        if (l.bias)  // db = dy^T 1
          MINAS_CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, out, n_, &one, dy, out, ones_.get(), 1,
                                         &zero, GW(st.bias), 1));
        if (r > 0)  // dx (n, in) += dy W: column-major dx^T += W^T' dy^T.
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
  uint64_t step_ = 0;

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
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cublasDestroy(blas_);
    cudnnDestroy(dnn_);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  int threads() const override { return 1; }
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
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

}  // namespace minas::cuda
