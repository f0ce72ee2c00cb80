// The GPU network's construction, its Network interface, the transfers of the
// model's state, and the planning of each layer (trainer/cuda/network.h).
#include "trainer/cuda/network.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/kernels.h"

namespace minas::cuda {

CudaNetwork::CudaNetwork(int device, cudnnHandle_t dnn, cublasHandle_t blas, cudaStream_t stream,
                         Model& model, int batch, NetMode mode, const NetworkOptions& opt)
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

CudaNetwork::~CudaNetwork() {
  cudaSetDevice(device_);
  cudaStreamSynchronize(s_);
  for (auto& [i, c] : convs_) {
    if (c.w) cudnnDestroyFilterDescriptor(c.w);
    if (c.conv) cudnnDestroyConvolutionDescriptor(c.conv);
  }
  for (auto& [i, a] : acts_) cudnnDestroyActivationDescriptor(a);
  for (auto& [i, p] : pools_) cudnnDestroyPoolingDescriptor(p);
}

// ---- training with the model resident on the GPU (the resident engine, trainer/cuda/resident.h)

void CudaNetwork::upload_state() {
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  enqueue_state_upload();
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
}
void CudaNetwork::download_state() {
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  for (size_t p = 0; p < w_.size(); ++p)
    MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.params()[p].value.data(), w_[p].get(),
                                     w_[p].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
  enqueue_statistics_download();
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
}

void CudaNetwork::enqueue_statistics_download() {
  for (size_t b = 0; b < buf_.size(); ++b)
    MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.buffers()[b].value.data(), buf_[b].get(),
                                     buf_[b].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
}

void CudaNetwork::enqueue_gradients_download() {
  for (size_t p = 0; p < gw_.size(); ++p)
    MINAS_CUDA_CHECK(cudaMemcpyAsync(model_.params()[p].grad.data(), gw_[p].get(),
                                     gw_[p].size() * sizeof(float), cudaMemcpyDeviceToHost, s_));
}

void CudaNetwork::zero_output_gradients() {
  for (int i = 0; i < g_.size(); ++i)
    MINAS_CUDA_CHECK(cudaMemsetAsync(dy_[i].get(), 0, count(i) * sizeof(float), s_));
}

void CudaNetwork::enqueue_resident_step(const DeviceData& data, const DevicePlan& plan,
                                        const int64_t* step, int64_t per_epoch) {
  gather_batch(data, plan, step, per_epoch, n_, y_[0].get(), labels_.get(), s_);
  for (int i = 1; i < g_.size(); ++i) forward(i);
  zero_output_gradients();
  const int out = g_.output();
  softmax_xent(y_[out].get(), labels_.get(), n_, g_.layer(out).shape.c, opt_.label_smoothing,
               dy_[out].get(), loss_.get(), correct_.get(), s_);
  if (loss_scale) scale_by(dy_[out].get(), count(out), loss_scale, s_);
  for (int i = g_.size() - 1; i >= 1; --i) {
    backward(i);
    if (on_enqueued && has_params(i)) on_enqueued(i);
  }
}

void CudaNetwork::zero_accumulators() {
  MINAS_CUDA_CHECK(cudaMemsetAsync(loss_.get(), 0, sizeof(double), s_));
  MINAS_CUDA_CHECK(cudaMemsetAsync(correct_.get(), 0, sizeof(unsigned long long), s_));
}

std::pair<double, int64_t> CudaNetwork::accumulators() {
  double loss = 0;
  unsigned long long correct = 0;
  MINAS_CUDA_CHECK(cudaMemcpyAsync(&loss, loss_.get(), sizeof loss, cudaMemcpyDeviceToHost, s_));
  MINAS_CUDA_CHECK(
      cudaMemcpyAsync(&correct, correct_.get(), sizeof correct, cudaMemcpyDeviceToHost, s_));
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  return {loss, static_cast<int64_t>(correct)};
}

bool CudaNetwork::has_dropout() const {
  for (const Layer& l : g_.layers())
    if (l.op == Op::Dropout && l.p > 0) return true;
  return false;
}

// ---- the Network interface

StepStats CudaNetwork::train_step(const float* x, const int32_t* y) {
  if (mode_ != NetMode::train)
    throw Error("network", "train_step on a network compiled for inference");
  if (half_ && !brain_)
    throw Error("recipe: /precision",
                "fp16 needs loss scaling, which the GPU's resident engine does (what "
                "train() uses); steps driven from the host take fp32 or bf16");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  upload(x);
  MINAS_CUDA_CHECK(
      cudaMemcpyAsync(labels_.get(), y, sizeof(int32_t) * n_, cudaMemcpyHostToDevice, s_));
  for (int i = 1; i < g_.size(); ++i) forward(i);
  zero_accumulators();
  zero_output_gradients();
  const int out = g_.output();
  softmax_xent(y_[out].get(), labels_.get(), n_, g_.layer(out).shape.c, opt_.label_smoothing,
               dy_[out].get(), loss_.get(), correct_.get(), s_);
  for (int i = g_.size() - 1; i >= 1; --i) backward(i);
  // The gradients and running statistics back into the host model; the
  // step's loss and correct count (which waits for all of it).
  enqueue_gradients_download();
  enqueue_statistics_download();
  const auto [loss, correct] = accumulators();
  if (opt_.on_layer_gradients)
    for (int i = g_.size() - 1; i >= 1; --i)
      if (has_params(i)) opt_.on_layer_gradients(i);
  ++step_;
  ran_forward_ = true;
  backward_pending_ = false;
  return {loss / n_, correct};
}

void CudaNetwork::forward(const float* x, float* logits) {
  if (mode_ != NetMode::train)
    throw Error("network", "forward on a network compiled for inference: use infer");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  upload(x);
  for (int i = 1; i < g_.size(); ++i) forward(i);
  const int out = g_.output();
  MINAS_CUDA_CHECK(cudaMemcpyAsync(logits, y_[out].get(), count(out) * sizeof(float),
                                   cudaMemcpyDeviceToHost, s_));
  enqueue_statistics_download();
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  ++step_;
  ran_forward_ = backward_pending_ = true;
}

void CudaNetwork::backward(const float* dlogits, float* dx) {
  if (mode_ != NetMode::train)
    throw Error("network", "backward on a network compiled for inference");
  if (!backward_pending_)
    throw Error("network", "backward needs a forward before it (one backward per forward)");
  if (dx && !opt_.input_gradient)
    throw Error("network", "the input gradient needs a network compiled with input_gradient");
  if (half_ && !brain_)
    throw Error("recipe: /precision", "fp16 needs loss scaling: backward() takes fp32 or bf16");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  zero_output_gradients();
  const int out = g_.output();
  MINAS_CUDA_CHECK(cudaMemcpyAsync(dy_[out].get(), dlogits, count(out) * sizeof(float),
                                   cudaMemcpyHostToDevice, s_));
  for (int i = g_.size() - 1; i >= 1; --i) backward(i);
  enqueue_gradients_download();
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
void CudaNetwork::layer_output(int layer, float* out) {
  if (layer < 0 || layer >= g_.size())
    throw Error("network", "no layer " + std::to_string(layer) + " in a graph of " +
                               std::to_string(g_.size()));
  if (!ran_forward_) throw Error("network", "layer output before any forward pass");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  MINAS_CUDA_CHECK(cudaMemcpyAsync(out, y_[layer].get(), count(layer) * sizeof(float),
                                   cudaMemcpyDeviceToHost, s_));
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
}

void CudaNetwork::infer(const float* x, float* logits) {
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

// The batch, and the model's parameters and running statistics, to the GPU.
void CudaNetwork::upload(const float* x) {
  MINAS_CUDA_CHECK(
      cudaMemcpyAsync(y_[0].get(), x, count(0) * sizeof(float), cudaMemcpyHostToDevice, s_));
  if (!frozen_) enqueue_state_upload();
}

void CudaNetwork::freeze_state() {
  if (mode_ == NetMode::train) throw Error("network", "freeze_state on a training network");
  MINAS_CUDA_CHECK(cudaSetDevice(device_));
  enqueue_state_upload();
  MINAS_CUDA_CHECK(cudaStreamSynchronize(s_));
  frozen_ = true;
}

// The model's parameters and running statistics to the GPU, on the stream.
void CudaNetwork::enqueue_state_upload() {
  for (size_t p = 0; p < w_.size(); ++p)
    MINAS_CUDA_CHECK(cudaMemcpyAsync(w_[p].get(), model_.params()[p].value.data(),
                                     w_[p].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
  for (size_t b = 0; b < buf_.size(); ++b)
    MINAS_CUDA_CHECK(cudaMemcpyAsync(buf_[b].get(), model_.buffers()[b].value.data(),
                                     buf_[b].size() * sizeof(float), cudaMemcpyHostToDevice, s_));
}

// ------------------------------------------------------------ planning

void CudaNetwork::plan(int i, size_t& workspace) {
  const Layer& l = g_.layer(i);
  switch (l.op) {
    case Op::Conv:
      plan_conv(i, workspace);
      break;
    case Op::BatchNorm:
      plan_batch_norm(i);
      break;
    case Op::Relu:
    case Op::Relu6:
    case Op::Sigmoid:
      plan_activation(i);
      break;
    case Op::MaxPool:
    case Op::AvgPool:
    case Op::GlobalAvgPool:
      plan_pool(i);
      break;
    case Op::Linear:
      plan_linear(i);
      break;
    case Op::Dropout:
      plan_dropout(i);
      break;
    default:
      break;
  }
}

template <class Perf>
decltype(Perf::algo) CudaNetwork::pick(const Perf* perf, int found, const char* what,
                                       const std::string& layer) {
  // Deterministic first: backward ALGO_0 and filter ALGO_3 sum with atomics
  // in whatever order threads arrive, so two runs of one trial (or a replayed
  // graph and eager steps) would drift apart by rounding, step after step.
  // Not at any memory: a deterministic one may ask a far larger workspace
  // (FFT), and several candidates share a GPU, so its workspace may exceed
  // the first working algorithm's by kDeterministicSlack at most.
  int first = -1;
  for (int k = 0; k < found && first < 0; ++k)
    if (perf[k].status == CUDNN_STATUS_SUCCESS) first = k;
  if (first < 0)
    throw Error("cudnn", std::string("no ") + what + " convolution algorithm for layer " + layer);
  for (int k = first; k < found; ++k)
    if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].determinism == CUDNN_DETERMINISTIC &&
        perf[k].memory <= perf[first].memory + kDeterministicSlack)
      return perf[k].algo;
  return perf[first].algo;
}

void CudaNetwork::plan_conv(int i, size_t& workspace) {
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
  MINAS_CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(c.w, type, format, l.shape.c, s.c / l.groups, l.kernel, l.kernel));
  MINAS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c.conv));
  // Accumulation in fp32 whatever the storage.
  MINAS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c.conv, l.pad, l.pad, l.stride, l.stride, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
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
    const size_t weights = static_cast<size_t>(l.shape.c) * (s.c / l.groups) * l.kernel * l.kernel;
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
  MINAS_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(dnn_, x, c.w, c.conv, y, c.fwd, &need));
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
  MINAS_CUDNN_CHECK(
      cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn_, x, y, c.conv, c.w, c.bwd_filter, &need));
  workspace = std::max(workspace, need);
}

void CudaNetwork::plan_batch_norm(int i) {
  const Layer& l = g_.layer(i);
  BnState& b = bns_[i];
  b.param = TensorDesc(1, l.shape.c, 1, 1);
  b.save_mean = Buffer<float>(static_cast<size_t>(l.shape.c));
  b.save_inv_var = Buffer<float>(static_cast<size_t>(l.shape.c));
}

void CudaNetwork::plan_activation(int i) {
  const Layer& l = g_.layer(i);
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
}

void CudaNetwork::plan_pool(int i) {
  const Layer& l = g_.layer(i);
  cudnnPoolingDescriptor_t p;
  MINAS_CUDNN_CHECK(cudnnCreatePoolingDescriptor(&p));
  pools_[i] = p;
  const Shape s = g_.layer(in(i)).shape;
  // Max pooling's deterministic mode: overlapping windows (3x3, stride 1)
  // would otherwise add their gradients with atomics.
  const cudnnPoolingMode_t m = l.op == Op::MaxPool ? CUDNN_POOLING_MAX_DETERMINISTIC
                               : l.op == Op::AvgPool && !l.count_include_pad
                                   ? CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING
                                   : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING;
  if (l.op == Op::GlobalAvgPool)
    MINAS_CUDNN_CHECK(
        cudnnSetPooling2dDescriptor(p, m, CUDNN_NOT_PROPAGATE_NAN, s.h, s.w, 0, 0, 1, 1));
  else
    MINAS_CUDNN_CHECK(cudnnSetPooling2dDescriptor(p, m, CUDNN_NOT_PROPAGATE_NAN, l.kernel, l.kernel,
                                                  l.pad, l.pad, l.stride, l.stride));
}

void CudaNetwork::plan_linear(int i) {
  const Layer& l = g_.layer(i);
  if (l.bias) linear_bias_[i] = TensorDesc(1, l.shape.c, 1, 1);
  if (half_) {
    LinearState& ls = linears_[i];
    const size_t features = static_cast<size_t>(g_.layer(in(i)).shape.elements());
    ls.x16 = Buffer<uint16_t>(count(in(i)));
    ls.w16 = Buffer<uint16_t>(features * static_cast<size_t>(l.shape.c));
    if (mode_ == NetMode::train) ls.dy16 = Buffer<uint16_t>(count(i));
  }
}

void CudaNetwork::plan_dropout(int i) {
  masks_[i] = Buffer<float>(count(i));
}

}  // namespace minas::cuda
