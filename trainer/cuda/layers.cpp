// The GPU network's layers: forward and backward of each op through cuDNN,
// cuBLAS or our kernels (trainer/cuda/ops.h), one method per op.
#include "trainer/cuda/network.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <vector>

#include "searchspace/rng.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/ops.h"

namespace minas::cuda {

// ------------------------------------------------------------ forward

void CudaNetwork::forward(int i) {
  const Layer& l = g_.layer(i);
  switch (l.op) {
    case Op::Input:
      break;
    case Op::Conv:
      conv_forward(i);
      break;
    case Op::BatchNorm:
      batch_norm_forward(i);
      break;
    case Op::Relu:
    case Op::Relu6:
    case Op::Sigmoid:
      activation_forward(i);
      break;
    case Op::HSwish:
      hard_swish_forward(i);
      break;
    case Op::HSigmoid:
      hard_sigmoid_forward(i);
      break;
    case Op::MaxPool:
    case Op::AvgPool:
    case Op::GlobalAvgPool:
      pool_forward(i);
      break;
    case Op::Add:
      add_forward(i);
      break;
    case Op::Concat:
      concatenation_forward(i);
      break;
    case Op::Mul:
      multiply_forward(i);
      break;
    case Op::Linear:
      linear_forward(i);
      break;
    case Op::Zero:
      zero_forward(i);
      break;
    case Op::Identity:
      identity_forward(i);
      break;
    case Op::Dropout:
      dropout_forward(i);
      break;
  }
}

void CudaNetwork::conv_forward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  float* y = y_[i].get();
  const ConvState& c = convs_.at(i);
  const LayerState& st = model_.state(i);
  if (half_) {
    const Shape sx = g_.layer(in(i)).shape;
    to_half_nhwc(y_[in(i)].get(), c.x16.get(), n_, sx.c, sx.h, sx.w, brain_, s_);
    to_half_nhwc(W(st.weight), c.w16.get(), l.shape.c, sx.c / l.groups, l.kernel, l.kernel, brain_,
                 s_);
    MINAS_CUDNN_CHECK(cudnnConvolutionForward(dnn_, &one, c.xh.d, c.x16.get(), c.w, c.w16.get(),
                                              c.conv, c.fwd, workspace_.get(), workspace_.size(),
                                              &zero, c.yh.d, c.y16.get()));
    from_half_nhwc(c.y16.get(), y, n_, l.shape.c, l.shape.h, l.shape.w, brain_, false, s_);
  } else {
    MINAS_CUDNN_CHECK(cudnnConvolutionForward(dnn_, &one, desc_[in(i)].d, y_[in(i)].get(), c.w,
                                              W(st.weight), c.conv, c.fwd, workspace_.get(),
                                              workspace_.size(), &zero, desc_[i].d, y));
  }
  if (l.bias)
    MINAS_CUDNN_CHECK(cudnnAddTensor(dnn_, &one, c.bias.d, W(st.bias), &one, desc_[i].d, y));
}

void CudaNetwork::batch_norm_forward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  float* y = y_[i].get();
  BnState& b = bns_.at(i);
  const LayerState& st = model_.state(i);
  float* mean = buf_[static_cast<size_t>(st.running_mean)].get();
  float* var = buf_[static_cast<size_t>(st.running_var)].get();
  if (mode_ == NetMode::train)
    MINAS_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, desc_[in(i)].d, y_[in(i)].get(), desc_[i].d, y,
        b.param.d, W(st.gamma), W(st.beta), l.momentum, mean, var, l.eps, b.save_mean.get(),
        b.save_inv_var.get()));
  else
    MINAS_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
        dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &zero, desc_[in(i)].d, y_[in(i)].get(), desc_[i].d, y,
        b.param.d, W(st.gamma), W(st.beta), mean, var, l.eps));
}

void CudaNetwork::activation_forward(int i) {
  const float one = 1.0f, zero = 0.0f;
  float* y = y_[i].get();
  MINAS_CUDNN_CHECK(cudnnActivationForward(dnn_, acts_.at(i), &one, desc_[in(i)].d, y_[in(i)].get(),
                                           &zero, desc_[i].d, y));
}

void CudaNetwork::hard_swish_forward(int i) {
  float* y = y_[i].get();
  const size_t n = count(i);
  hswish_forward(y_[in(i)].get(), y, n, s_);
}

void CudaNetwork::hard_sigmoid_forward(int i) {
  float* y = y_[i].get();
  const size_t n = count(i);
  hsigmoid_forward(y_[in(i)].get(), y, n, s_);
}

void CudaNetwork::pool_forward(int i) {
  const float one = 1.0f, zero = 0.0f;
  float* y = y_[i].get();
  MINAS_CUDNN_CHECK(cudnnPoolingForward(dnn_, pools_.at(i), &one, desc_[in(i)].d, y_[in(i)].get(),
                                        &zero, desc_[i].d, y));
}

void CudaNetwork::add_forward(int i) {
  const Layer& l = g_.layer(i);
  float* y = y_[i].get();
  const size_t n = count(i);
  MINAS_CUDA_CHECK(
      cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
  for (size_t k = 1; k < l.inputs.size(); ++k)
    accumulate(y_[in(i, static_cast<int>(k))].get(), y, n, s_);
}

void CudaNetwork::concatenation_forward(int i) {
  const Layer& l = g_.layer(i);
  float* y = y_[i].get();
  int offset = 0;
  for (size_t k = 0; k < l.inputs.size(); ++k) {
    const int r = in(i, static_cast<int>(k));
    const Shape s = g_.layer(r).shape;
    concat_forward(y_[r].get(), n_, s.c, offset, l.shape.c, s.h * s.w, y, s_);
    offset += s.c;
  }
}

void CudaNetwork::multiply_forward(int i) {
  const Layer& l = g_.layer(i);
  float* y = y_[i].get();
  mul_forward(y_[in(i, 0)].get(), y_[in(i, 1)].get(), n_, l.shape.c, l.shape.h * l.shape.w, y, s_);
}

void CudaNetwork::linear_forward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  float* y = y_[i].get();
  const int r = in(i);
  const int features = static_cast<int>(g_.layer(r).shape.elements()), out = l.shape.c;
  const LayerState& st = model_.state(i);
  // Row-major y (n, out) = x (n, in) W^T: column-major y^T = W^T' x^T.
  if (half_) {
    LinearState& ls = linears_.at(i);
    to_half(y_[r].get(), ls.x16.get(), ls.x16.size(), brain_, s_);
    to_half(W(st.weight), ls.w16.get(), ls.w16.size(), brain_, s_);
    MINAS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n_, features, &one,
                                    ls.w16.get(), half_type(), features, ls.x16.get(), half_type(),
                                    features, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
  } else {
    MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n_, features, &one,
                                   W(st.weight), features, y_[r].get(), features, &zero, y, out));
  }
  if (l.bias)
    MINAS_CUDNN_CHECK(
        cudnnAddTensor(dnn_, &one, linear_bias_.at(i).d, W(st.bias), &one, desc_[i].d, y));
}

void CudaNetwork::zero_forward(int i) {
  float* y = y_[i].get();
  const size_t n = count(i);
  MINAS_CUDA_CHECK(cudaMemsetAsync(y, 0, n * sizeof(float), s_));
}

void CudaNetwork::identity_forward(int i) {
  float* y = y_[i].get();
  const size_t n = count(i);
  MINAS_CUDA_CHECK(
      cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
}

void CudaNetwork::dropout_forward(int i) {
  const Layer& l = g_.layer(i);
  float* y = y_[i].get();
  const size_t n = count(i);
  if (mode_ != NetMode::train || l.p <= 0) {
    MINAS_CUDA_CHECK(
        cudaMemcpyAsync(y, y_[in(i)].get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s_));
    return;
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
}

// ------------------------------------------------------------ backward
// Every input gradient accumulates (beta = 1, or +=): a tensor's gradient is
// the sum over its consumers; parameter gradients are written once.

void CudaNetwork::backward(int i) {
  const Layer& l = g_.layer(i);
  switch (l.op) {
    case Op::Input:
    case Op::Zero:
      break;
    case Op::Conv:
      conv_backward(i);
      break;
    case Op::BatchNorm:
      batch_norm_backward(i);
      break;
    case Op::Relu:
    case Op::Relu6:
    case Op::Sigmoid:
      activation_backward(i);
      break;
    case Op::HSwish:
      hard_swish_backward(i);
      break;
    case Op::HSigmoid:
      hard_sigmoid_backward(i);
      break;
    case Op::MaxPool:
    case Op::AvgPool:
    case Op::GlobalAvgPool:
      pool_backward(i);
      break;
    case Op::Add:
      add_backward(i);
      break;
    case Op::Concat:
      concatenation_backward(i);
      break;
    case Op::Mul:
      multiply_backward(i);
      break;
    case Op::Linear:
      linear_backward(i);
      break;
    case Op::Identity:
      identity_backward(i);
      break;
    case Op::Dropout:
      dropout_backward(i);
      break;
  }
}

void CudaNetwork::conv_backward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  const float* dy = dy_[i].get();
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
    from_half_nhwc(c.dw16.get(), GW(st.weight), l.shape.c, sx.c / l.groups, l.kernel, l.kernel,
                   brain_, false, s_);
    if (l.bias)
      MINAS_CUDNN_CHECK(
          cudnnConvolutionBackwardBias(dnn_, &one, desc_[i].d, dy, &zero, c.bias.d, GW(st.bias)));
    if (r > 0 || opt_.input_gradient) {
      MINAS_CUDNN_CHECK(cudnnConvolutionBackwardData(
          dnn_, &one, c.w, c.w16.get(), c.yh.d, c.dy16.get(), c.conv, c.bwd_data, workspace_.get(),
          workspace_.size(), &zero, c.xh.d, c.dx16.get()));
      from_half_nhwc(c.dx16.get(), dy_[r].get(), n_, sx.c, sx.h, sx.w, brain_, true, s_);
    }
    return;
  }
  MINAS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(dnn_, &one, desc_[r].d, y_[r].get(), desc_[i].d,
                                                   dy, c.conv, c.bwd_filter, workspace_.get(),
                                                   workspace_.size(), &zero, c.w, GW(st.weight)));
  if (l.bias)
    MINAS_CUDNN_CHECK(
        cudnnConvolutionBackwardBias(dnn_, &one, desc_[i].d, dy, &zero, c.bias.d, GW(st.bias)));
  if (r > 0 || opt_.input_gradient)
    MINAS_CUDNN_CHECK(cudnnConvolutionBackwardData(
        dnn_, &one, c.w, W(st.weight), desc_[i].d, dy, c.conv, c.bwd_data, workspace_.get(),
        workspace_.size(), &one, desc_[r].d, dy_[r].get()));
}

void CudaNetwork::batch_norm_backward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  const float* dy = dy_[i].get();
  BnState& b = bns_.at(i);
  const LayerState& st = model_.state(i);
  const int r = in(i);
  MINAS_CUDNN_CHECK(cudnnBatchNormalizationBackward(
      dnn_, CUDNN_BATCHNORM_SPATIAL, &one, &one, &one, &zero, desc_[r].d, y_[r].get(), desc_[i].d,
      dy, desc_[r].d, dy_[r].get(), b.param.d, W(st.gamma), GW(st.gamma), GW(st.beta), l.eps,
      b.save_mean.get(), b.save_inv_var.get()));
}

void CudaNetwork::activation_backward(int i) {
  const float one = 1.0f;
  const float* dy = dy_[i].get();
  const int r = in(i);
  MINAS_CUDNN_CHECK(cudnnActivationBackward(dnn_, acts_.at(i), &one, desc_[i].d, y_[i].get(),
                                            desc_[i].d, dy, desc_[r].d, y_[r].get(), &one,
                                            desc_[r].d, dy_[r].get()));
}

void CudaNetwork::hard_swish_backward(int i) {
  const float* dy = dy_[i].get();
  const size_t n = count(i);
  hswish_backward(y_[in(i)].get(), dy, dy_[in(i)].get(), n, s_);
}

void CudaNetwork::hard_sigmoid_backward(int i) {
  const float* dy = dy_[i].get();
  const size_t n = count(i);
  hsigmoid_backward(y_[in(i)].get(), dy, dy_[in(i)].get(), n, s_);
}

void CudaNetwork::pool_backward(int i) {
  const float one = 1.0f;
  const float* dy = dy_[i].get();
  const int r = in(i);
  MINAS_CUDNN_CHECK(cudnnPoolingBackward(dnn_, pools_.at(i), &one, desc_[i].d, y_[i].get(),
                                         desc_[i].d, dy, desc_[r].d, y_[r].get(), &one, desc_[r].d,
                                         dy_[r].get()));
}

void CudaNetwork::add_backward(int i) {
  const Layer& l = g_.layer(i);
  const float* dy = dy_[i].get();
  const size_t n = count(i);
  for (size_t k = 0; k < l.inputs.size(); ++k)
    accumulate(dy, dy_[in(i, static_cast<int>(k))].get(), n, s_);
}

void CudaNetwork::concatenation_backward(int i) {
  const Layer& l = g_.layer(i);
  const float* dy = dy_[i].get();
  int offset = 0;
  for (size_t k = 0; k < l.inputs.size(); ++k) {
    const int r = in(i, static_cast<int>(k));
    const Shape s = g_.layer(r).shape;
    concat_backward(dy, n_, s.c, offset, l.shape.c, s.h * s.w, dy_[r].get(), s_);
    offset += s.c;
  }
}

void CudaNetwork::multiply_backward(int i) {
  const Layer& l = g_.layer(i);
  const float* dy = dy_[i].get();
  mul_backward(y_[in(i, 0)].get(), y_[in(i, 1)].get(), dy, n_, l.shape.c, l.shape.h * l.shape.w,
               dy_[in(i, 0)].get(), dy_[in(i, 1)].get(), s_);
}

void CudaNetwork::linear_backward(int i) {
  const Layer& l = g_.layer(i);
  const float one = 1.0f, zero = 0.0f;
  const float* dy = dy_[i].get();
  const int r = in(i);
  const int features = static_cast<int>(g_.layer(r).shape.elements()), out = l.shape.c;
  const LayerState& st = model_.state(i);
  if (half_) {
    LinearState& ls = linears_.at(i);
    to_half(dy, ls.dy16.get(), ls.dy16.size(), brain_, s_);
    MINAS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, features, out, n_, &one,
                                    ls.x16.get(), half_type(), features, ls.dy16.get(), half_type(),
                                    out, &zero, GW(st.weight), CUDA_R_32F, features,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (l.bias)
      MINAS_CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, out, n_, &one, dy, out, ones_.get(), 1,
                                     &zero, GW(st.bias), 1));
    if (r > 0 || opt_.input_gradient)
      MINAS_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, features, n_, out, &one,
                                      ls.w16.get(), half_type(), features, ls.dy16.get(),
                                      half_type(), out, &one, dy_[r].get(), CUDA_R_32F, features,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  // dW (out, in) = dy^T x: column-major dW^T (in x out) = x^T' dy.
  MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, features, out, n_, &one,
                                 y_[r].get(), features, dy, out, &zero, GW(st.weight), features));
  if (l.bias)  // db = dy^T 1
    MINAS_CUBLAS_CHECK(cublasSgemv(blas_, CUBLAS_OP_N, out, n_, &one, dy, out, ones_.get(), 1,
                                   &zero, GW(st.bias), 1));
  if (r > 0 || opt_.input_gradient)  // dx (n, in) += dy W: column-major dx^T += W^T' dy^T.
    MINAS_CUBLAS_CHECK(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, features, n_, out, &one,
                                   W(st.weight), features, dy, out, &one, dy_[r].get(), features));
}

void CudaNetwork::identity_backward(int i) {
  const float* dy = dy_[i].get();
  const size_t n = count(i);
  accumulate(dy, dy_[in(i)].get(), n, s_);
}

void CudaNetwork::dropout_backward(int i) {
  const Layer& l = g_.layer(i);
  const float* dy = dy_[i].get();
  const size_t n = count(i);
  if (l.p <= 0)
    accumulate(dy, dy_[in(i)].get(), n, s_);
  else
    mask_backward(dy, masks_.at(i).get(), dy_[in(i)].get(), n, s_);
}

}  // namespace minas::cuda
