// The CPU backend: a LayerGraph compiled to oneDNN primitives.
//
// Activations stay in the memory formats oneDNN's primitives choose
// (format_tag::any: usually channel-blocked), so data is reordered only where
// two primitives disagree, never to and from NCHW around every op. Parameters
// stay plain in the Model; a primitive that wants blocked weights gets a
// reorder at the start of each step (weights are small next to activations).
//
// Backward: the gradient of a tensor with several consumers is the sum of
// their contributions. Layers are visited in reverse, so the first
// contribution to land is known when the plan is made: it writes the
// gradient buffer (or becomes it), later ones add to it through a reorder with
// a sum post-op, which also converts formats.
//
// Every primitive, memory and scratchpad is created in the constructor; a
// step only executes the two plans.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dnnl.hpp>
#include <functional>
#include <unordered_map>

#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/loss.h"
#include "trainer/network.h"

namespace minas::cpu {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;
using dims = memory::dims;
using Args = std::unordered_map<int, memory>;

// A step of a plan: a primitive with its arguments, or our own code.
struct Step {
  dnnl::primitive prim;
  Args args;
  std::function<void()> fn;
};

struct Tensor {
  memory::desc md;
  memory value;
  memory diff;              // created at the first gradient contribution
  int contributions = 0;    // landed so far while planning backward
  bool needs_grad = false;  // some layer below has parameters or the input is trained
};

class CpuNetwork final : public Network {
 public:
  CpuNetwork(dnnl::engine& eng, Model& model, int batch, NetMode mode, const NetworkOptions& opt)
      : eng_(eng), strm_(eng), model_(model), g_(model.graph()), n_(batch), mode_(mode), opt_(opt) {
    if (batch < 1) throw Error("network", "batch must be at least 1");
    attr_.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    analyse();
    t_[0].md = plain_md(g_.input_shape());
    t_[0].value = make(t_[0].md);
    for (int i = 1; i < g_.size(); ++i) forward_layer(i);
    const Layer& out = g_.layer(g_.output());
    logits_plain_ = as_plain(root(g_.output()), fwd_);
    classes_ = out.shape.c;
    if (mode_ == NetMode::train) {
      plan_loss();
      for (int i = g_.size() - 1; i >= 1; --i) {
        backward_layer(i);
        const LayerState& st = model_.state(i);
        if (opt_.on_layer_gradients &&
            (st.weight >= 0 || st.bias >= 0 || st.gamma >= 0 || st.beta >= 0))
          push_fn(bwd_, [this, i] { opt_.on_layer_gradients(i); });
      }
    }
    scratchpad_ = memory({{static_cast<dnnl::memory::dim>(scratch_bytes_)}, dt::u8, tag::x}, eng_);
    for (auto* plan : {&fwd_, &bwd_})
      for (Step& s : *plan)
        if (s.args.count(DNNL_ARG_SCRATCHPAD)) s.args[DNNL_ARG_SCRATCHPAD] = scratchpad_;
  }

  int batch() const override { return n_; }
  NetMode mode() const override { return mode_; }

  StepStats train_step(const float* x, const int32_t* y) override {
    if (mode_ != NetMode::train)
      throw Error("network", "train_step on a network compiled for inference");
    load_input(x);
    labels_ = y;
    run(fwd_);
    run(bwd_);
    ++step_;
    ran_forward_ = true;
    backward_pending_ = false;
    return stats_;
  }

  void forward(const float* x, float* logits) override {
    if (mode_ != NetMode::train)
      throw Error("network", "forward on a network compiled for inference: use infer");
    load_input(x);
    run(fwd_);
    ++step_;
    ran_forward_ = backward_pending_ = true;
    std::memcpy(logits, logits_plain_.get_data_handle(), sizeof(float) * n_ * classes_);
  }

  void backward(const float* dlogits, float* dx) override {
    if (mode_ != NetMode::train)
      throw Error("network", "backward on a network compiled for inference");
    if (!backward_pending_)
      throw Error("network", "backward needs a forward before it (one backward per forward)");
    if (dx && !opt_.input_gradient)
      throw Error("network", "the input gradient needs a network compiled with input_gradient");
    seed_ = dlogits;
    run(bwd_);
    seed_ = nullptr;
    backward_pending_ = false;
    if (!dx) return;
    const size_t bytes = t_[0].md.get_size();
    if (t_[0].contributions == 0)  // nothing reads the input through a differentiable path
      std::memset(dx, 0, bytes);
    else  // the input's gradient is planned in its own plain format
      std::memcpy(dx, t_[0].diff.get_data_handle(), bytes);
  }

  // Not part of the step plans: a proxy reads a few layers once, through a
  // reorder to plain made on the spot (oneDNN caches the primitive).
  void layer_output(int layer, float* out) override {
    if (layer < 0 || layer >= g_.size())
      throw Error("network", "no layer " + std::to_string(layer) + " in a graph of " +
                                 std::to_string(g_.size()));
    const Layer& l = g_.layer(layer);
    if (!output_kept(layer))
      throw Error("network", "layer " + std::to_string(layer) + " ('" + l.name +
                                 "'): its output is not kept, the layer after it is fused into it");
    if (!ran_forward_) throw Error("network", "layer output before any forward pass");
    const int r = root(layer);
    memory dst(plain_md(l.shape), eng_, out);
    if (t_[r].md == dst.get_desc()) {
      std::memcpy(out, t_[r].value.get_data_handle(), dst.get_desc().get_size());
      return;
    }
    dnnl::reorder(t_[r].value, dst).execute(strm_, t_[r].value, dst);
    strm_.wait();
  }

  void set_step(uint64_t step) override { step_ = step; }

  void infer(const float* x, float* logits) override {
    if (mode_ == NetMode::train) throw Error("network", "infer on a network compiled for training");
    load_input(x);
    run(fwd_);
    ran_forward_ = true;
    std::memcpy(logits, logits_plain_.get_data_handle(), sizeof(float) * n_ * classes_);
  }

 private:
  // ------------------------------------------------------------ analysis

  void analyse() {
    const int L = g_.size();
    alias_.assign(L, -1);
    consumers_.assign(L, {});
    for (int i = 1; i < L; ++i)
      for (int x : g_.layer(i).inputs) consumers_[x].push_back(i);
    // BN followed by its only consumer, a ReLU: one primitive (fuse_norm_relu).
    fused_relu_.assign(L, false);
    for (int i = 1; i < L; ++i) {
      const Layer& l = g_.layer(i);
      if (l.op == Op::BatchNorm && consumers_[i].size() == 1 &&
          g_.layer(consumers_[i][0]).op == Op::Relu) {
        fused_relu_[i] = true;
        alias_[consumers_[i][0]] = i;
      }
      if (l.op == Op::Identity || (l.op == Op::Dropout && mode_ != NetMode::train))
        alias_[i] = l.inputs[0];
    }
    // Latency: a conv whose only consumer is a BN absorbs it, and an
    // activation after that (the BN's only consumer) becomes a post-op.
    folded_into_.assign(L, -1);
    post_op_of_.assign(L, -1);
    if (mode_ == NetMode::latency) {
      for (int i = 1; i < L; ++i) {
        const Layer& l = g_.layer(i);
        if (l.op != Op::Conv || consumers_[i].size() != 1) continue;
        const int bn = consumers_[i][0];
        if (g_.layer(bn).op != Op::BatchNorm) continue;
        folded_into_[bn] = i;
        alias_[bn] = i;
        fused_relu_[bn] = false;
        if (consumers_[bn].size() == 1) {
          const int act = consumers_[bn][0];
          const Op op = g_.layer(act).op;
          if (op == Op::Relu || op == Op::Relu6 || op == Op::HSwish) {
            post_op_of_[i] = act;
            alias_[act] = i;
          }
        }
      }
    }
    t_.resize(L);
    // A tensor needs a gradient if a layer with parameters, or the input when
    // its gradient is asked for, lies on a path into it.
    t_[0].needs_grad = mode_ == NetMode::train && opt_.input_gradient;
    for (int i = 1; i < L; ++i) {
      const Layer& l = g_.layer(i);
      bool need = l.op == Op::Conv || l.op == Op::Linear || l.op == Op::BatchNorm;
      for (int x : l.inputs) need = need || t_[x].needs_grad;
      t_[i].needs_grad = need && l.op != Op::Zero;
    }
  }

  int root(int i) const {
    while (alias_[i] >= 0) i = alias_[i];
    return i;
  }

  // Whether root(i)'s value is layer i's own output: not for a batch norm
  // whose value holds its fused ReLU's output, nor for a conv whose value
  // holds the batch norm (and activation) folded into it.
  bool output_kept(int i) const {
    const Layer& l = g_.layer(i);
    if (alias_[i] < 0) {
      const bool folded =
          l.op == Op::Conv && consumers_[i].size() == 1 && folded_into_[consumers_[i][0]] == i;
      return !fused_relu_[i] && post_op_of_[i] < 0 && !folded;
    }
    if (l.op == Op::Identity || l.op == Op::Dropout) return output_kept(l.inputs[0]);
    if (l.op == Op::BatchNorm) return post_op_of_[alias_[i]] < 0;  // folded into its conv
    return true;  // an activation fused into the layer before it: that value is its output
  }

  // ------------------------------------------------------------ memory helpers

  memory::desc plain_md(const Shape& s) const {
    return memory::desc({n_, s.c, s.h, s.w}, dt::f32, tag::nchw);
  }
  memory::desc any_md(const Shape& s) const {
    return memory::desc({n_, s.c, s.h, s.w}, dt::f32, tag::any);
  }
  memory make(const memory::desc& md) { return memory(md, eng_); }

  template <class PD>
  void need_scratch(const PD& pd) {
    scratch_bytes_ = std::max(scratch_bytes_, pd.scratchpad_desc().get_size());
  }

  void push(std::vector<Step>& plan, dnnl::primitive p, Args args) {
    plan.push_back({std::move(p), std::move(args), {}});
  }
  void push_fn(std::vector<Step>& plan, std::function<void()> fn) {
    plan.push_back({{}, {}, std::move(fn)});
  }
  // A primitive built from pd, with the scratchpad slot filled at the end.
  template <class Prim, class PD>
  void push_pd(std::vector<Step>& plan, const PD& pd, Args args) {
    need_scratch(pd);
    args[DNNL_ARG_SCRATCHPAD] = memory();
    push(plan, Prim(pd), std::move(args));
  }

  void reorder(std::vector<Step>& plan, const memory& from, const memory& to, bool accumulate) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    dnnl::reorder::primitive_desc pd(eng_, from.get_desc(), eng_, to.get_desc(), attr);
    push_pd<dnnl::reorder>(plan, pd, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
  }

  // The value of tensor r in format md: itself, or a converted copy made by
  // a reorder added to `plan`.
  memory value_as(int r, const memory::desc& md, std::vector<Step>& plan) {
    if (t_[r].md == md) return t_[r].value;
    memory m = make(md);
    reorder(plan, t_[r].value, m, false);
    return m;
  }
  memory as_plain(int r, std::vector<Step>& plan) {
    return value_as(r, plain_md(g_.layer(r).shape), plan);
  }
  // The gradient of tensor i in format md, for a backward primitive.
  memory diff_as(int i, const memory::desc& md) {
    if (t_[i].diff.get_desc() == md) return t_[i].diff;
    memory m = make(md);
    reorder(bwd_, t_[i].diff, m, false);
    return m;
  }

  // Where a contribution of format md to the gradient of tensor r lands;
  // finish() after the producing step adds it in if it landed elsewhere.
  struct Landing {
    int r;
    memory mem;
    bool direct;
    bool accumulate;
  };
  Landing land(int r, const memory::desc& md) {
    Tensor& t = t_[r];
    const bool first = t.contributions++ == 0;
    if (first) {
      if (md == t.md) {
        t.diff = make(md);
        return {r, t.diff, true, false};
      }
      t.diff = make(t.md);
    }
    return {r, make(md), false, !first};
  }
  void finish(const Landing& l) {
    if (!l.direct) reorder(bwd_, l.mem, t_[l.r].diff, l.accumulate);
  }
  // A ready gradient `g` given to tensor r as it is. With `share`, when it is
  // r's first contribution in r's format, r takes over g's buffer: g's own
  // tensor is done with it, and only one tensor may take it over, since later
  // contributions to r add into it.
  void contribute(int r, const memory& g, bool share) {
    Tensor& t = t_[r];
    const bool first = t.contributions++ == 0;
    if (first && share && g.get_desc() == t.md) {
      t.diff = g;
      return;
    }
    if (first) t.diff = make(t.md);
    reorder(bwd_, g, t.diff, !first);
  }
  bool wants_grad(int r) const { return mode_ == NetMode::train && t_[r].needs_grad; }

  memory param_mem(const Param& p, const memory::desc& md, bool grad) {
    return memory(md, eng_, const_cast<float*>(grad ? p.grad.data() : p.value.data()));
  }

  void load_input(const float* x) {
    std::memcpy(t_[0].value.get_data_handle(), x, t_[0].md.get_size());
  }

  void run(std::vector<Step>& plan) {
    for (Step& s : plan) {
      if (s.fn)
        s.fn();
      else
        s.prim.execute(strm_, s.args);
    }
    strm_.wait();
  }

  dnnl::prop_kind fwd_kind() const {
    return mode_ == NetMode::train ? dnnl::prop_kind::forward_training
                                   : dnnl::prop_kind::forward_inference;
  }

  // ------------------------------------------------------------ forward

  void forward_layer(int i) {
    const Layer& l = g_.layer(i);
    if (i == 0) return;
    if (alias_[i] >= 0 && l.op != Op::BatchNorm) return;  // value is its root's
    switch (l.op) {
      case Op::Input:
        break;
      case Op::Conv:
        conv(i);
        break;
      case Op::BatchNorm:
        if (folded_into_[i] < 0) batchnorm(i);
        break;
      case Op::Relu:
      case Op::Relu6:
      case Op::HSwish:
      case Op::Sigmoid:
        eltwise(i);
        break;
      case Op::HSigmoid:
        hsigmoid(i);
        break;
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool:
        pool(i);
        break;
      case Op::Add:
        add(i);
        break;
      case Op::Concat:
        concat(i);
        break;
      case Op::Mul:
        mul(i);
        break;
      case Op::Linear:
        linear(i);
        break;
      case Op::Zero:
        t_[i].md = plain_md(l.shape);
        t_[i].value = make(t_[i].md);
        std::memset(t_[i].value.get_data_handle(), 0, t_[i].md.get_size());
        break;
      case Op::Identity:
        break;
      case Op::Dropout:
        dropout(i);
        break;
    }
  }

  static dnnl::algorithm eltwise_alg(Op op, float& alpha, float& beta) {
    alpha = 0;
    beta = 0;
    switch (op) {
      case Op::Relu:
        return dnnl::algorithm::eltwise_relu;
      case Op::Relu6:
        beta = 6;
        return dnnl::algorithm::eltwise_clip_v2;
      case Op::HSwish:
        return dnnl::algorithm::eltwise_hardswish;
      default:
        return dnnl::algorithm::eltwise_logistic;
    }
  }

  // Inputs of layer i resolved through aliases.
  int in(int i, int k = 0) const { return root(g_.layer(i).inputs[static_cast<size_t>(k)]); }

  memory::desc weights_md(const Layer& l, int in_c, tag t) const {
    if (l.groups > 1)
      return memory::desc({l.groups, l.shape.c / l.groups, in_c / l.groups, l.kernel, l.kernel},
                          dt::f32, t == tag::any ? tag::any : tag::goihw);
    return memory::desc({l.shape.c, in_c, l.kernel, l.kernel}, dt::f32,
                        t == tag::any ? tag::any : tag::oihw);
  }

  struct ConvPlan {
    dnnl::convolution_forward::primitive_desc fwd;
    memory user_w, w, bias;
    int r;
  };
  std::unordered_map<int, ConvPlan> convs_;

  void conv(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    const Shape s = g_.layer(r).shape;
    const LayerState& st = model_.state(i);
    const dims strides{l.stride, l.stride}, pad{l.pad, l.pad};
    const bool folded = !consumers_[i].empty() && folded_into_[consumers_[i][0]] == i;
    const bool has_bias = l.bias || folded;
    const memory::desc bias_md({l.shape.c}, dt::f32, tag::x);
    const auto alg = dnnl::algorithm::convolution_direct;
    const auto desc = has_bias
                          ? dnnl::convolution_forward::desc(fwd_kind(), alg, any_md(s),
                                                            weights_md(l, s.c, tag::any), bias_md,
                                                            any_md(l.shape), strides, pad, pad)
                          : dnnl::convolution_forward::desc(fwd_kind(), alg, any_md(s),
                                                            weights_md(l, s.c, tag::any),
                                                            any_md(l.shape), strides, pad, pad);
    // A fresh attribute: primitive_attr is a handle, so a copy of attr_ would
    // share, and hand the post-op to, every later primitive.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (post_op_of_[i] >= 0) {
      float alpha, beta;
      const auto alg = eltwise_alg(g_.layer(post_op_of_[i]).op, alpha, beta);
      dnnl::post_ops po;
      po.append_eltwise(1.0f, alg, alpha, beta);
      attr.set_post_ops(po);
    }
    ConvPlan cp{dnnl::convolution_forward::primitive_desc(desc, attr, eng_), {}, {}, {}, r};
    t_[i].md = cp.fwd.dst_desc();
    t_[i].value = make(t_[i].md);
    const memory src = value_as(r, cp.fwd.src_desc(), fwd_);

    const memory::desc plain_w = weights_md(l, s.c, tag::oihw);
    const Param& w = model_.params()[st.weight];
    if (folded) {
      // BN folded in: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
      const int bn = consumers_[i][0];
      const LayerState& bs = model_.state(bn);
      const auto& gamma = model_.params()[bs.gamma].value;
      const auto& beta = model_.params()[bs.beta].value;
      const auto& mean = model_.buffers()[bs.running_mean].value;
      const auto& var = model_.buffers()[bs.running_var].value;
      cp.user_w = make(plain_w);
      cp.bias = make(bias_md);
      float* fw = static_cast<float*>(cp.user_w.get_data_handle());
      float* fb = static_cast<float*>(cp.bias.get_data_handle());
      const size_t per = w.size() / static_cast<size_t>(l.shape.c);
      for (int o = 0; o < l.shape.c; ++o) {
        const float k = gamma[o] / std::sqrt(var[o] + g_.layer(bn).eps);
        for (size_t j = 0; j < per; ++j) fw[o * per + j] = w.value[o * per + j] * k;
        fb[o] = beta[o] - mean[o] * k;
      }
    } else {
      cp.user_w = param_mem(w, plain_w, false);
      if (l.bias) cp.bias = param_mem(model_.params()[st.bias], bias_md, false);
    }
    if (cp.fwd.weights_desc() == plain_w) {
      cp.w = cp.user_w;
    } else {
      cp.w = make(cp.fwd.weights_desc());
      if (mode_ == NetMode::latency) {  // weights fixed for the network's life
        dnnl::reorder(cp.user_w, cp.w).execute(strm_, cp.user_w, cp.w);
        strm_.wait();
      } else {
        reorder(fwd_, cp.user_w, cp.w, false);
      }
    }
    Args args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, cp.w}, {DNNL_ARG_DST, t_[i].value}};
    if (has_bias) args[DNNL_ARG_BIAS] = cp.bias;
    push_pd<dnnl::convolution_forward>(fwd_, cp.fwd, std::move(args));
    convs_.emplace(i, std::move(cp));
  }

  struct BnPlan {
    dnnl::batch_normalization_forward::primitive_desc fwd;
    memory scale, shift, mean, var, workspace;
  };
  std::unordered_map<int, BnPlan> bns_;

  void batchnorm(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    const LayerState& st = model_.state(i);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (mode_ != NetMode::train) flags |= dnnl::normalization_flags::use_global_stats;
    if (fused_relu_[i]) flags |= dnnl::normalization_flags::fuse_norm_relu;
    const dnnl::batch_normalization_forward::desc desc(fwd_kind(), t_[r].md, l.eps, flags);
    BnPlan bp{
        dnnl::batch_normalization_forward::primitive_desc(desc, attr_, eng_), {}, {}, {}, {}, {}};
    const memory::desc vec({l.shape.c}, dt::f32, tag::x);
    bp.scale = param_mem(model_.params()[st.gamma], vec, false);
    bp.shift = param_mem(model_.params()[st.beta], vec, false);
    if (mode_ == NetMode::train) {
      bp.mean = make(bp.fwd.mean_desc());
      bp.var = make(bp.fwd.variance_desc());
    } else {
      bp.mean = param_mem(model_.buffers()[st.running_mean], vec, false);
      bp.var = param_mem(model_.buffers()[st.running_var], vec, false);
    }
    t_[i].md = bp.fwd.dst_desc();
    t_[i].value = make(t_[i].md);
    Args args{{DNNL_ARG_SRC, t_[r].value}, {DNNL_ARG_DST, t_[i].value},
              {DNNL_ARG_SCALE, bp.scale},  {DNNL_ARG_SHIFT, bp.shift},
              {DNNL_ARG_MEAN, bp.mean},    {DNNL_ARG_VARIANCE, bp.var}};
    if (fused_relu_[i] && mode_ == NetMode::train) {
      bp.workspace = make(bp.fwd.workspace_desc());
      args[DNNL_ARG_WORKSPACE] = bp.workspace;
    }
    push_pd<dnnl::batch_normalization_forward>(fwd_, bp.fwd, std::move(args));
    if (mode_ == NetMode::train) {
      // Running statistics as PyTorch keeps them: unbiased variance, momentum m.
      float* rm = model_.buffers()[st.running_mean].value.data();
      float* rv = model_.buffers()[st.running_var].value.data();
      const float* bm = static_cast<const float*>(bp.mean.get_data_handle());
      const float* bv = static_cast<const float*>(bp.var.get_data_handle());
      const int c = l.shape.c;
      const double count = double(n_) * l.shape.h * l.shape.w;
      const float m = l.momentum, unbias = count > 1 ? float(count / (count - 1)) : 1.0f;
      push_fn(fwd_, [=] {
        for (int k = 0; k < c; ++k) {
          rm[k] = (1 - m) * rm[k] + m * bm[k];
          rv[k] = (1 - m) * rv[k] + m * bv[k] * unbias;
        }
      });
    }
    bns_.emplace(i, std::move(bp));
  }

  std::unordered_map<int, dnnl::eltwise_forward::primitive_desc> eltwises_;

  void eltwise(int i) {
    const int r = in(i);
    float alpha, beta;
    const auto alg = eltwise_alg(g_.layer(i).op, alpha, beta);
    const dnnl::eltwise_forward::desc desc(fwd_kind(), alg, t_[r].md, alpha, beta);
    dnnl::eltwise_forward::primitive_desc pd(desc, attr_, eng_);
    t_[i].md = pd.dst_desc();
    t_[i].value = make(t_[i].md);
    push_pd<dnnl::eltwise_forward>(fwd_, pd,
                                   {{DNNL_ARG_SRC, t_[r].value}, {DNNL_ARG_DST, t_[i].value}});
    eltwises_.emplace(i, pd);
  }

  // relu6(x + 3) / 6 on a plain (SE gate) tensor: oneDNN 2.6 has no hard sigmoid.
  std::unordered_map<int, memory> hsig_src_;
  void hsigmoid(int i) {
    const int r = in(i);
    const memory src = as_plain(r, fwd_);
    t_[i].md = plain_md(g_.layer(i).shape);
    t_[i].value = make(t_[i].md);
    const float* x = static_cast<const float*>(src.get_data_handle());
    float* y = static_cast<float*>(t_[i].value.get_data_handle());
    const size_t n = t_[i].md.get_size() / sizeof(float);
    push_fn(fwd_, [=] {
      for (size_t k = 0; k < n; ++k) y[k] = std::min(std::max(x[k] + 3.0f, 0.0f), 6.0f) / 6.0f;
    });
    hsig_src_.emplace(i, src);
  }

  struct PoolPlan {
    dnnl::pooling_forward::primitive_desc fwd;
    memory workspace;
  };
  std::unordered_map<int, PoolPlan> pools_;

  dnnl::algorithm pool_alg(const Layer& l) const {
    if (l.op == Op::MaxPool) return dnnl::algorithm::pooling_max;
    if (l.op == Op::AvgPool && l.count_include_pad)
      return dnnl::algorithm::pooling_avg_include_padding;
    return dnnl::algorithm::pooling_avg_exclude_padding;
  }
  void pool_geometry(const Layer& l, const Shape& s, dims& kernel, dims& strides, dims& pad) const {
    if (l.op == Op::GlobalAvgPool) {
      kernel = {s.h, s.w};
      strides = {1, 1};
      pad = {0, 0};
    } else {
      kernel = {l.kernel, l.kernel};
      strides = {l.stride, l.stride};
      pad = {l.pad, l.pad};
    }
  }

  void pool(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    dims kernel, strides, pad;
    pool_geometry(l, g_.layer(r).shape, kernel, strides, pad);
    // Right padding that makes oneDNN's output size PyTorch's floor((H + 2p - k) / s) + 1.
    const dims pad_r{(l.shape.h - 1) * strides[0] + kernel[0] - g_.layer(r).shape.h - pad[0],
                     (l.shape.w - 1) * strides[1] + kernel[1] - g_.layer(r).shape.w - pad[1]};
    const dnnl::pooling_forward::desc desc(fwd_kind(), pool_alg(l), t_[r].md, any_md(l.shape),
                                           strides, kernel, pad, pad_r);
    PoolPlan pp{dnnl::pooling_forward::primitive_desc(desc, attr_, eng_), {}};
    t_[i].md = pp.fwd.dst_desc();
    t_[i].value = make(t_[i].md);
    Args args{{DNNL_ARG_SRC, t_[r].value}, {DNNL_ARG_DST, t_[i].value}};
    if (l.op == Op::MaxPool && mode_ == NetMode::train) {
      pp.workspace = make(pp.fwd.workspace_desc());
      args[DNNL_ARG_WORKSPACE] = pp.workspace;
    }
    push_pd<dnnl::pooling_forward>(fwd_, pp.fwd, std::move(args));
    pools_.emplace(i, std::move(pp));
  }

  void add(int i) {
    const Layer& l = g_.layer(i);
    const int first = in(i, 0);
    t_[i].md = t_[first].md;
    t_[i].value = make(t_[i].md);
    std::vector<memory::desc> mds;
    Args args{{DNNL_ARG_DST, t_[i].value}};
    for (size_t k = 0; k < l.inputs.size(); ++k) {
      const memory m = value_as(in(i, static_cast<int>(k)), t_[i].md, fwd_);
      mds.push_back(m.get_desc());
      args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k)] = m;
    }
    const std::vector<float> scales(l.inputs.size(), 1.0f);
    dnnl::sum::primitive_desc pd(t_[i].md, scales, mds, eng_, attr_);
    push_pd<dnnl::sum>(fwd_, pd, std::move(args));
  }

  void concat(int i) {
    const Layer& l = g_.layer(i);
    std::vector<memory::desc> mds;
    Args args;
    for (size_t k = 0; k < l.inputs.size(); ++k) {
      const int r = in(i, static_cast<int>(k));
      mds.push_back(t_[r].md);
      args[DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k)] = t_[r].value;
    }
    dnnl::concat::primitive_desc pd(any_md(l.shape), 1, mds, eng_, attr_);
    t_[i].md = pd.dst_desc();
    t_[i].value = make(t_[i].md);
    args[DNNL_ARG_DST] = t_[i].value;
    push_pd<dnnl::concat>(fwd_, pd, std::move(args));
  }

  struct MulPlan {
    memory x, s;  // the operands as the primitive reads them
  };
  std::unordered_map<int, MulPlan> muls_;

  void mul(int i) {
    const int rx = in(i, 0), rs = in(i, 1);
    MulPlan mp{t_[rx].value, as_plain(rs, fwd_)};
    t_[i].md = t_[rx].md;
    t_[i].value = make(t_[i].md);
    const dnnl::binary::desc desc(dnnl::algorithm::binary_mul, t_[rx].md, mp.s.get_desc(),
                                  t_[i].md);
    dnnl::binary::primitive_desc pd(desc, attr_, eng_);
    push_pd<dnnl::binary>(
        fwd_, pd, {{DNNL_ARG_SRC_0, mp.x}, {DNNL_ARG_SRC_1, mp.s}, {DNNL_ARG_DST, t_[i].value}});
    muls_.emplace(i, mp);
  }

  struct LinearPlan {
    dnnl::inner_product_forward::primitive_desc fwd;
    memory user_w, w, bias, src;
  };
  std::unordered_map<int, LinearPlan> linears_;

  void linear(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    const Shape s = g_.layer(r).shape;
    const LayerState& st = model_.state(i);
    const memory::desc w_any({l.shape.c, s.c, s.h, s.w}, dt::f32, tag::any);
    const memory::desc w_plain({l.shape.c, s.c, s.h, s.w}, dt::f32, tag::oihw);
    const memory::desc bias_md({l.shape.c}, dt::f32, tag::x);
    const memory::desc dst2({n_, l.shape.c}, dt::f32, tag::nc);
    // A plain source: the gemm-based inner product is slow on blocked activations.
    const memory::desc src_md = plain_md(s);
    const auto desc =
        l.bias ? dnnl::inner_product_forward::desc(fwd_kind(), src_md, w_any, bias_md, dst2)
               : dnnl::inner_product_forward::desc(fwd_kind(), src_md, w_any, dst2);
    LinearPlan lp{dnnl::inner_product_forward::primitive_desc(desc, attr_, eng_), {}, {}, {}, {}};
    lp.src = value_as(r, lp.fwd.src_desc(), fwd_);
    t_[i].md = plain_md(l.shape);  // (N, K, 1, 1) nchw is (N, K) nc
    t_[i].value = make(t_[i].md);
    lp.user_w = param_mem(model_.params()[st.weight], w_plain, false);
    if (lp.fwd.weights_desc() == w_plain) {
      lp.w = lp.user_w;
    } else {
      lp.w = make(lp.fwd.weights_desc());
      reorder(fwd_, lp.user_w, lp.w, false);
    }
    Args args{{DNNL_ARG_SRC, lp.src},
              {DNNL_ARG_WEIGHTS, lp.w},
              {DNNL_ARG_DST, memory(dst2, eng_, t_[i].value.get_data_handle())}};
    if (l.bias) {
      lp.bias = param_mem(model_.params()[st.bias], bias_md, false);
      args[DNNL_ARG_BIAS] = lp.bias;
    }
    push_pd<dnnl::inner_product_forward>(fwd_, lp.fwd, std::move(args));
    linears_.emplace(i, std::move(lp));
  }

  std::unordered_map<int, std::vector<float>> dropout_masks_;

  void dropout(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    t_[i].md = t_[r].md;
    t_[i].value = make(t_[i].md);
    const size_t n = t_[i].md.get_size() / sizeof(float);
    auto& mask = dropout_masks_[i];
    mask.assign(n, 0.0f);
    const float* x = static_cast<const float*>(t_[r].value.get_data_handle());
    float* y = static_cast<float*>(t_[i].value.get_data_handle());
    float* m = mask.data();
    const float p = l.p, keep = 1.0f / (1.0f - l.p);
    const uint64_t seed = opt_.seed ^ (uint64_t(i) << 40);
    const uint64_t* step = &step_;
    push_fn(fwd_, [=] {
      Rng rng(seed + *step);
      for (size_t k = 0; k < n; ++k) {
        m[k] = rng.uniform() < p ? 0.0f : keep;
        y[k] = x[k] * m[k];
      }
    });
  }

  // ------------------------------------------------------------ loss and backward

  void plan_loss() {
    const int out = root(g_.output());
    const int classes = g_.layer(g_.output()).shape.c;
    Tensor& t = t_[out];
    t.diff = make(t.md);
    t.contributions = 1;
    const float* z = static_cast<const float*>(t.value.get_data_handle());
    float* dz = static_cast<float*>(t.diff.get_data_handle());
    push_fn(bwd_, [this, z, dz, classes] {
      if (seed_) {  // backward(): a given gradient of the logits instead of the loss's
        std::memcpy(dz, seed_, sizeof(float) * n_ * classes);
        return;
      }
      stats_.loss =
          softmax_cross_entropy(z, labels_, n_, classes, opt_.label_smoothing, dz, &stats_.correct);
    });
  }

  void backward_layer(int i) {
    const Layer& l = g_.layer(i);
    if (alias_[i] >= 0 && l.op != Op::BatchNorm) return;  // its gradient is its root's
    if (!t_[i].needs_grad || t_[i].contributions == 0) return;
    switch (l.op) {
      case Op::Input:
      case Op::Zero:
      case Op::Identity:
        break;
      case Op::Conv:
        conv_backward(i);
        break;
      case Op::BatchNorm:
        bn_backward(i);
        break;
      case Op::Relu:
      case Op::Relu6:
      case Op::HSwish:
      case Op::Sigmoid:
        eltwise_backward(i);
        break;
      case Op::HSigmoid:
        hsigmoid_backward(i);
        break;
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool:
        pool_backward(i);
        break;
      case Op::Add: {
        bool shared = false;
        for (size_t k = 0; k < l.inputs.size(); ++k) {
          const int r = in(i, static_cast<int>(k));
          if (!wants_grad(r)) continue;
          const bool share =
              !shared && t_[r].contributions == 0 && t_[i].diff.get_desc() == t_[r].md;
          contribute(r, t_[i].diff, share);
          shared = shared || share;
        }
        break;
      }
      case Op::Concat:
        concat_backward(i);
        break;
      case Op::Mul:
        mul_backward(i);
        break;
      case Op::Linear:
        linear_backward(i);
        break;
      case Op::Dropout:
        dropout_backward(i);
        break;
    }
  }

  // The weight (and bias) gradients of a conv or linear layer i: the
  // backward-weights primitive writes the model's plain gradient directly when
  // it chose the plain format, else a buffer that is then reordered into it.
  template <class Prim, class PD>
  void weights_backward(int i, const PD& wpd, const memory::desc& plain_w, const memory& src,
                        const memory& dy) {
    const Layer& l = g_.layer(i);
    const LayerState& st = model_.state(i);
    const memory grad_plain = param_mem(model_.params()[st.weight], plain_w, true);
    const bool direct = wpd.diff_weights_desc() == plain_w;
    const memory dw = direct ? grad_plain : make(wpd.diff_weights_desc());
    Args args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw}};
    if (l.bias) {
      const memory::desc bias_md({l.shape.c}, dt::f32, tag::x);
      args[DNNL_ARG_DIFF_BIAS] = param_mem(model_.params()[st.bias], bias_md, true);
    }
    push_pd<Prim>(bwd_, wpd, std::move(args));
    if (!direct) reorder(bwd_, dw, grad_plain, false);
  }

  // The input gradient of a conv or linear layer, landed into tensor r. The
  // primitive gets the forward's weights when it wants their format, else a
  // reorder of the plain weights.
  template <class Prim, class PD>
  void data_backward(int r, const PD& dpd, const memory& dy, const memory& fwd_w,
                     const memory& user_w) {
    memory w = fwd_w;
    if (dpd.weights_desc() != fwd_w.get_desc()) {
      w = make(dpd.weights_desc());
      reorder(bwd_, user_w, w, false);
    }
    Landing land_r = land(r, dpd.diff_src_desc());
    push_pd<Prim>(
        bwd_, dpd,
        {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, land_r.mem}});
    finish(land_r);
  }

  void conv_backward(int i) {
    const Layer& l = g_.layer(i);
    ConvPlan& cp = convs_.at(i);
    const int r = cp.r;
    const Shape s = g_.layer(r).shape;
    const dims strides{l.stride, l.stride}, pad{l.pad, l.pad};
    const memory::desc bias_md({l.shape.c}, dt::f32, tag::x);
    const memory::desc plain_w = weights_md(l, s.c, tag::oihw);

    const auto wdesc =
        l.bias ? dnnl::convolution_backward_weights::desc(
                     dnnl::algorithm::convolution_direct, any_md(s), weights_md(l, s.c, tag::any),
                     bias_md, any_md(l.shape), strides, pad, pad)
               : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct,
                                                          any_md(s), weights_md(l, s.c, tag::any),
                                                          any_md(l.shape), strides, pad, pad);
    dnnl::convolution_backward_weights::primitive_desc wpd(wdesc, attr_, eng_, cp.fwd);
    weights_backward<dnnl::convolution_backward_weights>(
        i, wpd, plain_w, value_as(r, wpd.src_desc(), bwd_), diff_as(i, wpd.diff_dst_desc()));

    if (!wants_grad(r)) return;
    const dnnl::convolution_backward_data::desc ddesc(dnnl::algorithm::convolution_direct,
                                                      any_md(s), weights_md(l, s.c, tag::any),
                                                      any_md(l.shape), strides, pad, pad);
    dnnl::convolution_backward_data::primitive_desc dpd(ddesc, attr_, eng_, cp.fwd);
    data_backward<dnnl::convolution_backward_data>(r, dpd, diff_as(i, dpd.diff_dst_desc()), cp.w,
                                                   cp.user_w);
  }

  void bn_backward(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    BnPlan& bp = bns_.at(i);
    const LayerState& st = model_.state(i);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (fused_relu_[i]) flags |= dnnl::normalization_flags::fuse_norm_relu;
    const dnnl::batch_normalization_backward::desc desc(dnnl::prop_kind::backward, t_[i].md,
                                                        t_[r].md, l.eps, flags);
    dnnl::batch_normalization_backward::primitive_desc pd(desc, attr_, eng_, bp.fwd);
    const memory::desc vec({l.shape.c}, dt::f32, tag::x);
    const memory dy = diff_as(i, pd.diff_dst_desc());
    // BN always passes gradient down: its input is a conv's output or needs none.
    const bool down = wants_grad(r);
    Landing land_r =
        down ? land(r, pd.diff_src_desc()) : Landing{r, make(pd.diff_src_desc()), true, false};
    Args args{{DNNL_ARG_SRC, t_[r].value},
              {DNNL_ARG_MEAN, bp.mean},
              {DNNL_ARG_VARIANCE, bp.var},
              {DNNL_ARG_DIFF_DST, dy},
              {DNNL_ARG_SCALE, bp.scale},
              {DNNL_ARG_SHIFT, bp.shift},
              {DNNL_ARG_DIFF_SRC, land_r.mem},
              {DNNL_ARG_DIFF_SCALE, param_mem(model_.params()[st.gamma], vec, true)},
              {DNNL_ARG_DIFF_SHIFT, param_mem(model_.params()[st.beta], vec, true)}};
    if (fused_relu_[i]) args[DNNL_ARG_WORKSPACE] = bp.workspace;
    push_pd<dnnl::batch_normalization_backward>(bwd_, pd, std::move(args));
    if (down) finish(land_r);
  }

  void eltwise_backward(int i) {
    const int r = in(i);
    if (!wants_grad(r)) return;
    float alpha, beta;
    const auto alg = eltwise_alg(g_.layer(i).op, alpha, beta);
    const dnnl::eltwise_backward::desc desc(alg, t_[i].md, t_[r].md, alpha, beta);
    dnnl::eltwise_backward::primitive_desc pd(desc, attr_, eng_, eltwises_.at(i));
    const memory dy = diff_as(i, pd.diff_dst_desc());
    Landing land_r = land(r, pd.diff_src_desc());
    push_pd<dnnl::eltwise_backward>(
        bwd_, pd,
        {{DNNL_ARG_SRC, t_[r].value}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_SRC, land_r.mem}});
    finish(land_r);
  }

  void hsigmoid_backward(int i) {
    const int r = in(i);
    if (!wants_grad(r)) return;
    const memory src = hsig_src_.at(i);
    const memory dy = diff_as(i, t_[i].md);
    Landing land_r = land(r, t_[i].md);
    const float* x = static_cast<const float*>(src.get_data_handle());
    const float* g = static_cast<const float*>(dy.get_data_handle());
    float* dx = static_cast<float*>(land_r.mem.get_data_handle());
    const size_t n = t_[i].md.get_size() / sizeof(float);
    push_fn(bwd_, [=] {
      for (size_t k = 0; k < n; ++k) dx[k] = (x[k] > -3.0f && x[k] < 3.0f) ? g[k] / 6.0f : 0.0f;
    });
    finish(land_r);
  }

  void pool_backward(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    if (!wants_grad(r)) return;
    if (l.op == Op::GlobalAvgPool) return global_avgpool_backward(i, r);
    PoolPlan& pp = pools_.at(i);
    dims kernel, strides, pad;
    pool_geometry(l, g_.layer(r).shape, kernel, strides, pad);
    const dims pad_r{(l.shape.h - 1) * strides[0] + kernel[0] - g_.layer(r).shape.h - pad[0],
                     (l.shape.w - 1) * strides[1] + kernel[1] - g_.layer(r).shape.w - pad[1]};
    const dnnl::pooling_backward::desc desc(pool_alg(l), any_md(g_.layer(r).shape), t_[i].md,
                                            strides, kernel, pad, pad_r);
    dnnl::pooling_backward::primitive_desc pd(desc, attr_, eng_, pp.fwd);
    const memory dy = diff_as(i, pd.diff_dst_desc());
    Landing land_r = land(r, pd.diff_src_desc());
    Args args{{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_SRC, land_r.mem}};
    if (l.op == Op::MaxPool) args[DNNL_ARG_WORKSPACE] = pp.workspace;
    push_pd<dnnl::pooling_backward>(bwd_, pd, std::move(args));
    finish(land_r);
  }

  // dx = dy / (H W) broadcast over H x W, written plain and landed (converted)
  // into the input's format. oneDNN 2.6 runs a whole-image pooling backward,
  // and a broadcasting binary op on blocked data, with its reference code,
  // which costs more than the rest of a small network's step.
  void global_avgpool_backward(int i, int r) {
    const Layer& l = g_.layer(i);
    const Shape s = g_.layer(r).shape;
    const memory dy = diff_as(i, plain_md(l.shape));
    Landing land_r = land(r, plain_md(s));
    const float* g = static_cast<const float*>(dy.get_data_handle());
    float* dx = static_cast<float*>(land_r.mem.get_data_handle());
    const int64_t planes = int64_t{n_} * l.shape.c, area = int64_t{s.h} * s.w;
    const float k = 1.0f / static_cast<float>(area);
    push_fn(bwd_, [=] {
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < planes; ++p) std::fill_n(dx + p * area, area, g[p] * k);
    });
    finish(land_r);
  }

  void concat_backward(int i) {
    const Layer& l = g_.layer(i);
    const memory plain = diff_as(i, plain_md(l.shape));
    int offset = 0;
    for (size_t k = 0; k < l.inputs.size(); ++k) {
      const int r = in(i, static_cast<int>(k));
      const Shape s = g_.layer(r).shape;
      if (wants_grad(r)) {
        const memory::desc sub =
            plain.get_desc().submemory_desc({n_, s.c, s.h, s.w}, {0, offset, 0, 0});
        const memory part(sub, eng_, plain.get_data_handle());
        Landing land_r = land(r, t_[r].md);
        reorder(bwd_, part, t_[r].diff, land_r.accumulate);
      }
      offset += s.c;
    }
  }

  void mul_backward(int i) {
    const int rx = in(i, 0), rs = in(i, 1);
    const MulPlan& mp = muls_.at(i);
    const memory dy = t_[i].diff;
    if (wants_grad(rx)) {  // dx = dy * s
      const dnnl::binary::desc desc(dnnl::algorithm::binary_mul, dy.get_desc(), mp.s.get_desc(),
                                    t_[rx].md);
      dnnl::binary::primitive_desc pd(desc, attr_, eng_);
      Landing land_x = land(rx, t_[rx].md);
      push_pd<dnnl::binary>(
          bwd_, pd, {{DNNL_ARG_SRC_0, dy}, {DNNL_ARG_SRC_1, mp.s}, {DNNL_ARG_DST, land_x.mem}});
      finish(land_x);
    }
    if (wants_grad(rs)) {  // ds = sum over H, W of dy * x
      const memory prod = make(t_[i].md);
      const dnnl::binary::desc desc(dnnl::algorithm::binary_mul, dy.get_desc(), t_[rx].md,
                                    t_[i].md);
      dnnl::binary::primitive_desc pd(desc, attr_, eng_);
      push_pd<dnnl::binary>(bwd_, pd,
                            {{DNNL_ARG_SRC_0, dy}, {DNNL_ARG_SRC_1, mp.x}, {DNNL_ARG_DST, prod}});
      const memory::desc s_md = mp.s.get_desc();
      if (g_.layer(i).shape.h == 1 && g_.layer(i).shape.w == 1) {  // nothing to sum over
        contribute(rs, prod, false);
        return;
      }
      const dnnl::reduction::desc rdesc(dnnl::algorithm::reduction_sum, t_[i].md, s_md, 0.0f, 0.0f);
      dnnl::reduction::primitive_desc rpd(rdesc, attr_, eng_);
      Landing land_s = land(rs, s_md);
      push_pd<dnnl::reduction>(bwd_, rpd, {{DNNL_ARG_SRC, prod}, {DNNL_ARG_DST, land_s.mem}});
      finish(land_s);
    }
  }

  void linear_backward(int i) {
    const Layer& l = g_.layer(i);
    const int r = in(i);
    LinearPlan& lp = linears_.at(i);
    const Shape s = g_.layer(r).shape;
    const memory::desc w_any({l.shape.c, s.c, s.h, s.w}, dt::f32, tag::any);
    const memory::desc w_plain({l.shape.c, s.c, s.h, s.w}, dt::f32, tag::oihw);
    const memory::desc bias_md({l.shape.c}, dt::f32, tag::x);
    const memory::desc dst2({n_, l.shape.c}, dt::f32, tag::nc);
    const memory dy2(dst2, eng_, t_[i].diff.get_data_handle());

    const auto wdesc =
        l.bias ? dnnl::inner_product_backward_weights::desc(lp.src.get_desc(), w_any, bias_md, dst2)
               : dnnl::inner_product_backward_weights::desc(lp.src.get_desc(), w_any, dst2);
    dnnl::inner_product_backward_weights::primitive_desc wpd(wdesc, attr_, eng_, lp.fwd);
    const memory src =
        wpd.src_desc() == lp.src.get_desc() ? lp.src : value_as(r, wpd.src_desc(), bwd_);
    weights_backward<dnnl::inner_product_backward_weights>(i, wpd, w_plain, src, dy2);

    if (!wants_grad(r)) return;
    const dnnl::inner_product_backward_data::desc ddesc(lp.src.get_desc(), w_any, dst2);
    dnnl::inner_product_backward_data::primitive_desc dpd(ddesc, attr_, eng_, lp.fwd);
    data_backward<dnnl::inner_product_backward_data>(r, dpd, dy2, lp.w, lp.user_w);
  }

  void dropout_backward(int i) {
    const int r = in(i);
    if (!wants_grad(r)) return;
    const memory dy = diff_as(i, t_[i].md);
    Landing land_r = land(r, t_[i].md);
    const float* g = static_cast<const float*>(dy.get_data_handle());
    const float* m = dropout_masks_.at(i).data();
    float* dx = static_cast<float*>(land_r.mem.get_data_handle());
    const size_t n = t_[i].md.get_size() / sizeof(float);
    push_fn(bwd_, [=] {
      for (size_t k = 0; k < n; ++k) dx[k] = g[k] * m[k];
    });
    finish(land_r);
  }

  dnnl::engine& eng_;
  dnnl::stream strm_;
  Model& model_;
  const LayerGraph& g_;
  const int n_;
  const NetMode mode_;
  const NetworkOptions opt_;
  dnnl::primitive_attr attr_;

  std::vector<Tensor> t_;
  std::vector<int> alias_;
  std::vector<std::vector<int>> consumers_;
  std::vector<bool> fused_relu_;
  std::vector<int> folded_into_, post_op_of_;
  std::vector<Step> fwd_, bwd_;
  size_t scratch_bytes_ = 0;
  memory scratchpad_;
  memory logits_plain_;
  int classes_ = 0;
  const int32_t* labels_ = nullptr;
  const float* seed_ = nullptr;    // backward()'s gradient of the logits, during it
  bool ran_forward_ = false;       // some forward pass has filled the values
  bool backward_pending_ = false;  // forward() ran and its backward() has not
  StepStats stats_;
  uint64_t step_ = 0;  // seeds this step's dropout masks
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : eng_(dnnl::engine::kind::cpu, 0) {
    threads_ = threads > 0 ? threads : omp_get_max_threads();
    omp_set_num_threads(threads_);
  }
  std::string name() const override { return "cpu"; }
  int threads() const override { return threads_; }
  std::unique_ptr<Network> compile(Model& model, int batch, NetMode mode,
                                   const NetworkOptions& options) override {
    omp_set_num_threads(threads_);
    try {
      return std::make_unique<CpuNetwork>(eng_, model, batch, mode, options);
    } catch (const dnnl::error& e) {
      throw Error("cpu backend", std::string("oneDNN could not build the network: ") + e.what() +
                                     " (status " + std::to_string(static_cast<int>(e.status)) +
                                     ")");
    }
  }

 private:
  dnnl::engine eng_;
  int threads_ = 1;
};

}  // namespace
}  // namespace minas::cpu

namespace minas {

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<cpu::CpuBackend>(threads);
}

unsigned cpu_isa_code() {
  return static_cast<unsigned>(dnnl::get_effective_cpu_isa());
}

std::string cpu_isa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default: {
      // A set this oneDNN knows and this build does not name.
      char b[24];
      std::snprintf(b, sizeof b, "isa 0x%x", static_cast<unsigned>(dnnl::get_effective_cpu_isa()));
      return b;
    }
  }
}

}  // namespace minas
