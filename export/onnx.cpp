#include "export/onnx.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>

#include "searchspace/error.h"

namespace minas::onnx_export {
namespace {

constexpr int kOpset = 14;  // HardSwish needs 14

// ---------------------------------------------------------------- writing

class Builder {
 public:
  explicit Builder(onnx::GraphProto& g) : g_(g) {}

  std::string initializer(const std::string& name, const std::vector<int64_t>& dims,
                          const std::vector<float>& data) {
    onnx::TensorProto* t = g_.add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : data) t->add_float_data(v);
    return name;
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& data) {
    onnx::TensorProto* t = g_.add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(data.size()));
    for (int64_t v : data) t->add_int64_data(v);
    return name;
  }
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& output) {
    onnx::NodeProto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

 private:
  onnx::GraphProto& g_;
};

void value_info(onnx::ValueInfoProto* v, const std::string& name,
                const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0)
      dim->set_dim_param("N");
    else
      dim->set_dim_value(d);
  }
}

}  // namespace

void write(const Model& model, const std::string& name, const std::string& path) {
  const LayerGraph& g = model.graph();
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("minas");
  m.add_opset_import()->set_version(kOpset);
  onnx::GraphProto* graph = m.mutable_graph();
  graph->set_name(name);
  Builder b(*graph);
  const Shape in = g.input_shape();
  value_info(graph->add_input(), "input", {-1, in.c, in.h, in.w});
  std::vector<std::string> out(static_cast<size_t>(g.size()));
  out[0] = "input";
  auto param = [&](int index) -> const Param& {
    return model.params().at(static_cast<size_t>(index));
  };
  auto buffer = [&](int index) -> const Param& {
    return model.buffers().at(static_cast<size_t>(index));
  };
  for (int i = 1; i < g.size(); ++i) {
    const Layer& l = g.layer(i);
    const LayerState& st = model.state(i);
    const std::string y = "t" + std::to_string(i);
    out[static_cast<size_t>(i)] = y;
    auto x = [&](size_t k = 0) { return out[static_cast<size_t>(l.inputs.at(k))]; };
    const std::string p = l.name;
    switch (l.op) {
      case Op::Input:
        break;
      case Op::Conv: {
        const Param& w = param(st.weight);
        std::vector<std::string> ins{
            x(), b.initializer(p + ".weight", {w.shape.begin(), w.shape.end()}, w.value)};
        if (st.bias >= 0)
          ins.push_back(b.initializer(p + ".bias", {l.shape.c}, param(st.bias).value));
        auto* n = b.node("Conv", ins, y);
        Builder::attr(n, "kernel_shape", std::vector<int64_t>{l.kernel, l.kernel});
        Builder::attr(n, "strides", std::vector<int64_t>{l.stride, l.stride});
        Builder::attr(n, "pads", std::vector<int64_t>{l.pad, l.pad, l.pad, l.pad});
        Builder::attr(n, "group", int64_t{l.groups});
        break;
      }
      case Op::BatchNorm: {
        auto* n =
            b.node("BatchNormalization",
                   {x(), b.initializer(p + ".gamma", {l.shape.c}, param(st.gamma).value),
                    b.initializer(p + ".beta", {l.shape.c}, param(st.beta).value),
                    b.initializer(p + ".running_mean", {l.shape.c}, buffer(st.running_mean).value),
                    b.initializer(p + ".running_var", {l.shape.c}, buffer(st.running_var).value)},
                   y);
        Builder::attr(n, "epsilon", l.eps);
        break;
      }
      case Op::Relu:
        b.node("Relu", {x()}, y);
        break;
      case Op::Relu6:
        b.node("Clip",
               {x(), b.initializer(p + ".min", {}, {0.0f}), b.initializer(p + ".max", {}, {6.0f})},
               y);
        break;
      case Op::HSwish:
        b.node("HardSwish", {x()}, y);
        break;
      case Op::HSigmoid: {
        auto* n = b.node("HardSigmoid", {x()}, y);
        Builder::attr(n, "alpha", 1.0f / 6.0f);
        Builder::attr(n, "beta", 0.5f);
        break;
      }
      case Op::Sigmoid:
        b.node("Sigmoid", {x()}, y);
        break;
      case Op::MaxPool:
      case Op::AvgPool: {
        auto* n = b.node(l.op == Op::MaxPool ? "MaxPool" : "AveragePool", {x()}, y);
        Builder::attr(n, "kernel_shape", std::vector<int64_t>{l.kernel, l.kernel});
        Builder::attr(n, "strides", std::vector<int64_t>{l.stride, l.stride});
        Builder::attr(n, "pads", std::vector<int64_t>{l.pad, l.pad, l.pad, l.pad});
        if (l.op == Op::AvgPool)
          Builder::attr(n, "count_include_pad", int64_t{l.count_include_pad});
        break;
      }
      case Op::GlobalAvgPool:
        b.node("GlobalAveragePool", {x()}, y);
        break;
      case Op::Add: {
        std::vector<std::string> ins;
        for (size_t k = 0; k < l.inputs.size(); ++k) ins.push_back(x(k));
        b.node("Sum", ins, y);
        break;
      }
      case Op::Concat: {
        std::vector<std::string> ins;
        for (size_t k = 0; k < l.inputs.size(); ++k) ins.push_back(x(k));
        Builder::attr(b.node("Concat", ins, y), "axis", int64_t{1});
        break;
      }
      case Op::Mul:
        b.node("Mul", {x(0), x(1)}, y);
        break;
      case Op::Linear: {
        const std::string flat = y + ".flat";
        Builder::attr(b.node("Flatten", {x()}, flat), "axis", int64_t{1});
        const Param& w = param(st.weight);
        std::vector<std::string> ins{
            flat, b.initializer(p + ".weight", {w.shape.begin(), w.shape.end()}, w.value)};
        if (st.bias >= 0)
          ins.push_back(b.initializer(p + ".bias", {l.shape.c}, param(st.bias).value));
        Builder::attr(b.node("Gemm", ins, y), "transB", int64_t{1});
        break;
      }
      case Op::Zero: {
        // Zeros of N x C x H x W, N the input's: its shape's first entry with (C, H, W).
        b.node("Shape", {"input"}, y + ".shape");
        auto* n = b.node(
            "Slice", {y + ".shape", b.ints(y + ".start", {0}), b.ints(y + ".end", {1})}, y + ".n");
        (void)n;
        Builder::attr(
            b.node("Concat", {y + ".n", b.ints(y + ".chw", {l.shape.c, l.shape.h, l.shape.w})},
                   y + ".dims"),
            "axis", int64_t{0});
        b.node("ConstantOfShape", {y + ".dims"}, y);  // value defaults to a float 0
        break;
      }
      case Op::Identity:
      case Op::Dropout:
        b.node("Identity", {x()}, y);
        break;
    }
  }
  b.node("Identity", {out.back()}, "logits");
  value_info(graph->add_output(), "logits", {-1, g.classes()});
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw Error(path, std::string("ONNX's checker refused the export: ") + e.what());
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f || !m.SerializeToOstream(&f)) throw Error(path, "cannot write the ONNX model");
}

// ---------------------------------------------------------------- evaluating

namespace {

struct Tensor {
  std::vector<int64_t> dims;
  std::vector<float> f;
  std::vector<int64_t> i;  // int64 tensors (shapes)
  bool is_int = false;
  int64_t size() const {
    return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<>());
  }
};

Tensor from_proto(const onnx::TensorProto& t) {
  Tensor x;
  for (int64_t d : t.dims()) x.dims.push_back(d);
  if (t.data_type() == onnx::TensorProto::INT64) {
    x.is_int = true;
    x.i.assign(t.int64_data().begin(), t.int64_data().end());
  } else if (t.data_type() == onnx::TensorProto::FLOAT) {
    if (t.float_data_size() > 0) {
      x.f.assign(t.float_data().begin(), t.float_data().end());
    } else {
      x.f.resize(t.raw_data().size() / sizeof(float));
      std::memcpy(x.f.data(), t.raw_data().data(), x.f.size() * sizeof(float));
    }
  } else {
    throw Error("onnx " + t.name(), "tensor type " + std::to_string(t.data_type()));
  }
  return x;
}

const onnx::AttributeProto* find_attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
std::vector<int64_t> ints_attr(const onnx::NodeProto& n, const std::string& name,
                               std::vector<int64_t> def) {
  const auto* a = find_attr(n, name);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : def;
}
int64_t int_attr(const onnx::NodeProto& n, const std::string& name, int64_t def) {
  const auto* a = find_attr(n, name);
  return a ? a->i() : def;
}
float float_attr(const onnx::NodeProto& n, const std::string& name, float def) {
  const auto* a = find_attr(n, name);
  return a ? a->f() : def;
}

// 2-D pooling and convolution over N x C x H x W.
Tensor pool(const Tensor& x, const onnx::NodeProto& n, bool max) {
  const auto k = ints_attr(n, "kernel_shape", {}), s = ints_attr(n, "strides", {1, 1}),
             p = ints_attr(n, "pads", {0, 0, 0, 0});
  const bool include = int_attr(n, "count_include_pad", 0) != 0;
  const int64_t N = x.dims[0], C = x.dims[1], H = x.dims[2], W = x.dims[3];
  const int64_t OH = (H + p[0] + p[2] - k[0]) / s[0] + 1, OW = (W + p[1] + p[3] - k[1]) / s[1] + 1;
  Tensor y;
  y.dims = {N, C, OH, OW};
  y.f.resize(static_cast<size_t>(y.size()));
  for (int64_t b = 0; b < N * C; ++b)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
        int64_t count = 0;
        for (int64_t a = 0; a < k[0]; ++a)
          for (int64_t c = 0; c < k[1]; ++c) {
            const int64_t ih = oh * s[0] - p[0] + a, iw = ow * s[1] - p[1] + c;
            const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
            if (inside) {
              const float v = x.f[static_cast<size_t>((b * H + ih) * W + iw)];
              acc = max ? std::max(acc, v) : acc + v;
              ++count;
            } else if (include) {
              ++count;
            }
          }
        y.f[static_cast<size_t>((b * OH + oh) * OW + ow)] =
            max ? acc : acc / static_cast<float>(std::max<int64_t>(count, 1));
      }
  return y;
}

Tensor conv(const Tensor& x, const Tensor& w, const Tensor* bias, const onnx::NodeProto& n) {
  const auto s = ints_attr(n, "strides", {1, 1}), p = ints_attr(n, "pads", {0, 0, 0, 0});
  const int64_t group = int_attr(n, "group", 1);
  const int64_t N = x.dims[0], C = x.dims[1], H = x.dims[2], W = x.dims[3];
  const int64_t M = w.dims[0], CG = w.dims[1], KH = w.dims[2], KW = w.dims[3];
  const int64_t OH = (H + p[0] + p[2] - KH) / s[0] + 1, OW = (W + p[1] + p[3] - KW) / s[1] + 1;
  if (CG * group != C) throw Error("onnx Conv " + n.name(), "channels do not match the groups");
  Tensor y;
  y.dims = {N, M, OH, OW};
  y.f.assign(static_cast<size_t>(y.size()), 0.0f);
  const int64_t per_group = M / group;
  for (int64_t b = 0; b < N; ++b)
    for (int64_t m = 0; m < M; ++m) {
      const int64_t g = m / per_group;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bias ? bias->f[static_cast<size_t>(m)] : 0.0;
          for (int64_t c = 0; c < CG; ++c)
            for (int64_t a = 0; a < KH; ++a)
              for (int64_t d = 0; d < KW; ++d) {
                const int64_t ih = oh * s[0] - p[0] + a, iw = ow * s[1] - p[1] + d;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += static_cast<double>(
                           x.f[static_cast<size_t>(((b * C + g * CG + c) * H + ih) * W + iw)]) *
                       w.f[static_cast<size_t>(((m * CG + c) * KH + a) * KW + d)];
              }
          y.f[static_cast<size_t>(((b * M + m) * OH + oh) * OW + ow)] = static_cast<float>(acc);
        }
    }
  return y;
}

Tensor elementwise(const Tensor& x, float (*f)(float, const onnx::NodeProto&),
                   const onnx::NodeProto& n) {
  Tensor y = x;
  for (float& v : y.f) v = f(v, n);
  return y;
}

}  // namespace

std::vector<float> run(const std::string& path, const std::vector<float>& input, int n) {
  onnx::ModelProto m;
  {
    std::ifstream f(path, std::ios::binary);
    if (!f || !m.ParseFromIstream(&f)) throw Error(path, "not an ONNX model");
  }
  const onnx::GraphProto& g = m.graph();
  std::map<std::string, Tensor> v;
  for (const auto& t : g.initializer()) v[t.name()] = from_proto(t);
  if (g.input_size() != 1) throw Error(path, "expected one input");
  {
    Tensor x;
    x.dims.push_back(n);
    const auto& shape = g.input(0).type().tensor_type().shape();
    for (int k = 1; k < shape.dim_size(); ++k) x.dims.push_back(shape.dim(k).dim_value());
    x.f = input;
    if (static_cast<int64_t>(x.f.size()) != x.size())
      throw Error(path, "the batch has " + std::to_string(x.f.size()) +
                            " values, the input takes " + std::to_string(x.size()));
    v[g.input(0).name()] = std::move(x);
  }
  auto in = [&](const onnx::NodeProto& node, int k) -> const Tensor& {
    auto it = v.find(node.input(k));
    if (it == v.end()) throw Error(path, "node " + node.name() + " reads unknown " + node.input(k));
    return it->second;
  };
  for (const onnx::NodeProto& node : g.node()) {
    const std::string& op = node.op_type();
    Tensor y;
    if (op == "Conv") {
      y = conv(in(node, 0), in(node, 1), node.input_size() > 2 ? &in(node, 2) : nullptr, node);
    } else if (op == "BatchNormalization") {
      const Tensor &x = in(node, 0), &sc = in(node, 1), &bi = in(node, 2), &mu = in(node, 3),
                   &var = in(node, 4);
      const float eps = float_attr(node, "epsilon", 1e-5f);
      y = x;
      const int64_t C = x.dims[1], plane = x.dims[2] * x.dims[3];
      for (int64_t k = 0; k < x.size(); ++k) {
        const int64_t c = (k / plane) % C;
        y.f[static_cast<size_t>(k)] = (x.f[static_cast<size_t>(k)] - mu.f[static_cast<size_t>(c)]) /
                                          std::sqrt(var.f[static_cast<size_t>(c)] + eps) *
                                          sc.f[static_cast<size_t>(c)] +
                                      bi.f[static_cast<size_t>(c)];
      }
    } else if (op == "Relu") {
      y = elementwise(
          in(node, 0), [](float a, const onnx::NodeProto&) { return std::max(a, 0.0f); }, node);
    } else if (op == "Clip") {
      const float lo = in(node, 1).f.at(0), hi = in(node, 2).f.at(0);
      y = in(node, 0);
      for (float& a : y.f) a = std::min(std::max(a, lo), hi);
    } else if (op == "HardSwish") {
      y = elementwise(
          in(node, 0),
          [](float a, const onnx::NodeProto&) {
            return a * std::max(0.0f, std::min(1.0f, a / 6.0f + 0.5f));
          },
          node);
    } else if (op == "HardSigmoid") {
      const float alpha = float_attr(node, "alpha", 0.2f), beta = float_attr(node, "beta", 0.5f);
      y = in(node, 0);
      for (float& a : y.f) a = std::max(0.0f, std::min(1.0f, alpha * a + beta));
    } else if (op == "Sigmoid") {
      y = elementwise(
          in(node, 0), [](float a, const onnx::NodeProto&) { return 1.0f / (1.0f + std::exp(-a)); },
          node);
    } else if (op == "MaxPool" || op == "AveragePool") {
      y = pool(in(node, 0), node, op == "MaxPool");
    } else if (op == "GlobalAveragePool") {
      const Tensor& x = in(node, 0);
      y.dims = {x.dims[0], x.dims[1], 1, 1};
      const int64_t plane = x.dims[2] * x.dims[3];
      y.f.resize(static_cast<size_t>(x.dims[0] * x.dims[1]));
      for (size_t k = 0; k < y.f.size(); ++k) {
        double s = 0;
        for (int64_t j = 0; j < plane; ++j)
          s += x.f[k * static_cast<size_t>(plane) + static_cast<size_t>(j)];
        y.f[k] = static_cast<float>(s / static_cast<double>(plane));
      }
    } else if (op == "Sum") {
      y = in(node, 0);
      for (int k = 1; k < node.input_size(); ++k)
        for (size_t j = 0; j < y.f.size(); ++j) y.f[j] += in(node, k).f[j];
    } else if (op == "Concat") {
      const int64_t axis = int_attr(node, "axis", 1);
      if (in(node, 0).is_int) {  // shapes
        y.is_int = true;
        for (int k = 0; k < node.input_size(); ++k)
          y.i.insert(y.i.end(), in(node, k).i.begin(), in(node, k).i.end());
        y.dims = {static_cast<int64_t>(y.i.size())};
      } else {
        if (axis != 1) throw Error(path, "Concat on axis " + std::to_string(axis));
        const Tensor& first = in(node, 0);
        const int64_t N = first.dims[0], plane = first.dims[2] * first.dims[3];
        int64_t C = 0;
        for (int k = 0; k < node.input_size(); ++k) C += in(node, k).dims[1];
        y.dims = {N, C, first.dims[2], first.dims[3]};
        y.f.resize(static_cast<size_t>(y.size()));
        for (int64_t b = 0; b < N; ++b) {
          int64_t offset = 0;
          for (int k = 0; k < node.input_size(); ++k) {
            const Tensor& t = in(node, k);
            const int64_t ck = t.dims[1];
            std::copy(t.f.begin() + b * ck * plane, t.f.begin() + (b + 1) * ck * plane,
                      y.f.begin() + (b * C + offset) * plane);
            offset += ck;
          }
        }
      }
    } else if (op == "Mul") {
      const Tensor &x = in(node, 0), &s = in(node, 1);  // s: N x C x 1 x 1
      y = x;
      const int64_t plane = x.dims[2] * x.dims[3];
      for (int64_t k = 0; k < x.size(); ++k)
        y.f[static_cast<size_t>(k)] *= s.f[static_cast<size_t>(k / plane)];
    } else if (op == "Flatten") {
      y = in(node, 0);
      y.dims = {y.dims[0], y.size() / y.dims[0]};
    } else if (op == "Gemm") {
      const Tensor &a = in(node, 0), &w = in(node, 1);
      const Tensor* bias = node.input_size() > 2 ? &in(node, 2) : nullptr;
      const int64_t N = a.dims[0], K = a.dims[1], M = w.dims[0];
      y.dims = {N, M};
      y.f.resize(static_cast<size_t>(N * M));
      for (int64_t r = 0; r < N; ++r)
        for (int64_t c = 0; c < M; ++c) {
          double s = bias ? bias->f[static_cast<size_t>(c)] : 0.0;
          for (int64_t k = 0; k < K; ++k)
            s += static_cast<double>(a.f[static_cast<size_t>(r * K + k)]) *
                 w.f[static_cast<size_t>(c * K + k)];
          y.f[static_cast<size_t>(r * M + c)] = static_cast<float>(s);
        }
    } else if (op == "Identity") {
      y = in(node, 0);
    } else if (op == "Shape") {
      y.is_int = true;
      y.i = in(node, 0).dims;
      y.dims = {static_cast<int64_t>(y.i.size())};
    } else if (op == "Slice") {
      const Tensor& x = in(node, 0);
      const int64_t lo = in(node, 1).i.at(0),
                    hi = std::min<int64_t>(in(node, 2).i.at(0), static_cast<int64_t>(x.i.size()));
      y.is_int = true;
      y.i.assign(x.i.begin() + lo, x.i.begin() + hi);
      y.dims = {static_cast<int64_t>(y.i.size())};
    } else if (op == "ConstantOfShape") {
      y.dims = in(node, 0).i;
      y.f.assign(static_cast<size_t>(y.size()), 0.0f);
    } else {
      throw Error(path, "operator " + op + " is not one the evaluator runs");
    }
    v[node.output(0)] = std::move(y);
  }
  const auto it = v.find(g.output(0).name());
  if (it == v.end()) throw Error(path, "the output " + g.output(0).name() + " was never computed");
  return it->second.f;
}

}  // namespace minas::onnx_export
