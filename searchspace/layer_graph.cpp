#include "searchspace/layer_graph.h"

#include <array>
#include <nlohmann/json.hpp>
#include <utility>

#include "searchspace/error.h"
#include "searchspace/json_excerpt.h"

namespace minas {
namespace {

constexpr std::array<std::pair<Op, const char*>, 18> kOpNames{{
    {Op::Input, "input"},
    {Op::Conv, "conv"},
    {Op::BatchNorm, "batchnorm"},
    {Op::Relu, "relu"},
    {Op::Relu6, "relu6"},
    {Op::HSwish, "hswish"},
    {Op::HSigmoid, "hsigmoid"},
    {Op::Sigmoid, "sigmoid"},
    {Op::MaxPool, "maxpool"},
    {Op::AvgPool, "avgpool"},
    {Op::GlobalAvgPool, "global_avgpool"},
    {Op::Add, "add"},
    {Op::Concat, "concat"},
    {Op::Mul, "mul"},
    {Op::Linear, "linear"},
    {Op::Zero, "zero"},
    {Op::Identity, "identity"},
    {Op::Dropout, "dropout"},
}};

// Output length of a window op along one axis; <= 0 means the window does not fit.
int window_out(int in, int kernel, int stride, int pad) {
  if (in + 2 * pad < kernel) return 0;
  return (in + 2 * pad - kernel) / stride + 1;
}

}  // namespace

const char* op_name(Op op) {
  for (const auto& [o, n] : kOpNames)
    if (o == op) return n;
  return "?";
}

std::optional<Op> op_from_name(std::string_view name) {
  for (const auto& [o, n] : kOpNames)
    if (name == n) return o;
  return std::nullopt;
}

std::string to_string(const Shape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

LayerGraph::LayerGraph(Shape input, int classes) : classes_(classes) {
  if (input.c <= 0 || input.h <= 0 || input.w <= 0)
    throw Error("input", "shape " + to_string(input) + " must be positive in every dimension");
  if (classes < 2) throw Error("classes", "must be at least 2, got " + std::to_string(classes));
  Layer l;
  l.op = Op::Input;
  l.name = "input";
  l.shape = input;
  layers_.push_back(std::move(l));
}

const Layer& LayerGraph::in(int x, const std::string& name) const {
  if (x < 0 || x >= size())
    throw Error(name, "input index " + std::to_string(x) + " is not an earlier layer");
  return layers_[static_cast<size_t>(x)];
}

int LayerGraph::push(Layer l) {
  if (l.shape.c <= 0 || l.shape.h <= 0 || l.shape.w <= 0)
    throw Error(l.name,
                std::string(op_name(l.op)) + " gives an empty output (" + to_string(l.shape) + ")");
  layers_.push_back(std::move(l));
  return size() - 1;
}

int LayerGraph::conv(int x, int out_channels, int kernel, int stride, int groups, bool bias,
                     std::string name) {
  const Shape s = in(x, name).shape;
  if (kernel < 1 || stride < 1 || groups < 1 || out_channels < 1)
    throw Error(name, "conv needs kernel, stride, groups and channels >= 1");
  if (s.c % groups != 0 || out_channels % groups != 0)
    throw Error(name, "conv groups " + std::to_string(groups) + " must divide input channels " +
                          std::to_string(s.c) + " and output channels " +
                          std::to_string(out_channels));
  Layer l;
  l.op = Op::Conv;
  l.name = std::move(name);
  l.inputs = {x};
  l.kernel = kernel;
  l.stride = stride;
  l.pad = kernel / 2;
  l.groups = groups;
  l.bias = bias;
  l.shape = {out_channels, window_out(s.h, kernel, stride, l.pad),
             window_out(s.w, kernel, stride, l.pad)};
  const int64_t per_out = int64_t{s.c / groups} * kernel * kernel;
  l.params = per_out * out_channels + (bias ? out_channels : 0);
  l.macs = per_out * l.shape.elements();
  return push(std::move(l));
}

int LayerGraph::batchnorm(int x, std::string name) {
  Layer l;
  l.op = Op::BatchNorm;
  l.shape = in(x, name).shape;
  l.name = std::move(name);
  l.inputs = {x};
  l.params = 2 * int64_t{l.shape.c};
  return push(std::move(l));
}

int LayerGraph::activation(Op op, int x, std::string name) {
  if (op != Op::Relu && op != Op::Relu6 && op != Op::HSwish && op != Op::HSigmoid &&
      op != Op::Sigmoid)
    throw Error(name, std::string(op_name(op)) + " is not an activation");
  Layer l;
  l.op = op;
  l.shape = in(x, name).shape;
  l.name = std::move(name);
  l.inputs = {x};
  return push(std::move(l));
}

int LayerGraph::maxpool(int x, int kernel, int stride, int pad, std::string name) {
  const Shape s = in(x, name).shape;
  if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
    throw Error(name, "maxpool needs kernel, stride >= 1 and 0 <= pad <= kernel/2");
  Layer l;
  l.op = Op::MaxPool;
  l.name = std::move(name);
  l.inputs = {x};
  l.kernel = kernel;
  l.stride = stride;
  l.pad = pad;
  l.shape = {s.c, window_out(s.h, kernel, stride, pad), window_out(s.w, kernel, stride, pad)};
  return push(std::move(l));
}

int LayerGraph::avgpool(int x, int kernel, int stride, int pad, bool count_include_pad,
                        std::string name) {
  const Shape s = in(x, name).shape;
  if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
    throw Error(name, "avgpool needs kernel, stride >= 1 and 0 <= pad <= kernel/2");
  Layer l;
  l.op = Op::AvgPool;
  l.name = std::move(name);
  l.inputs = {x};
  l.kernel = kernel;
  l.stride = stride;
  l.pad = pad;
  l.count_include_pad = count_include_pad;
  l.shape = {s.c, window_out(s.h, kernel, stride, pad), window_out(s.w, kernel, stride, pad)};
  return push(std::move(l));
}

int LayerGraph::global_avgpool(int x, std::string name) {
  Layer l;
  l.op = Op::GlobalAvgPool;
  l.shape = {in(x, name).shape.c, 1, 1};
  l.name = std::move(name);
  l.inputs = {x};
  return push(std::move(l));
}

int LayerGraph::add(std::vector<int> xs, std::string name) {
  if (xs.size() < 2) throw Error(name, "add needs at least two inputs");
  const Shape s = in(xs[0], name).shape;
  for (int x : xs)
    if (in(x, name).shape != s)
      throw Error(
          name, "add of different shapes " + to_string(s) + " and " + to_string(in(x, name).shape));
  Layer l;
  l.op = Op::Add;
  l.name = std::move(name);
  l.inputs = std::move(xs);
  l.shape = s;
  return push(std::move(l));
}

int LayerGraph::concat(std::vector<int> xs, std::string name) {
  if (xs.size() < 2) throw Error(name, "concat needs at least two inputs");
  Shape s = in(xs[0], name).shape;
  s.c = 0;
  for (int x : xs) {
    const Shape t = in(x, name).shape;
    if (t.h != s.h || t.w != s.w)
      throw Error(name, "concat of different spatial sizes " + to_string(in(xs[0], name).shape) +
                            " and " + to_string(t));
    s.c += t.c;
  }
  Layer l;
  l.op = Op::Concat;
  l.name = std::move(name);
  l.inputs = std::move(xs);
  l.shape = s;
  return push(std::move(l));
}

int LayerGraph::mul(int x, int scale, std::string name) {
  const Shape s = in(x, name).shape;
  const Shape t = in(scale, name).shape;
  if (t != Shape{s.c, 1, 1})
    throw Error(name, "mul scale must be " + to_string(Shape{s.c, 1, 1}) + ", got " + to_string(t));
  Layer l;
  l.op = Op::Mul;
  l.name = std::move(name);
  l.inputs = {x, scale};
  l.shape = s;
  l.macs = s.elements();
  return push(std::move(l));
}

int LayerGraph::linear(int x, int out_features, bool bias, std::string name) {
  const Shape s = in(x, name).shape;
  if (out_features < 1) throw Error(name, "linear needs at least one output feature");
  Layer l;
  l.op = Op::Linear;
  l.name = std::move(name);
  l.inputs = {x};
  l.bias = bias;
  l.shape = {out_features, 1, 1};
  l.params = s.elements() * out_features + (bias ? out_features : 0);
  l.macs = s.elements() * out_features;
  return push(std::move(l));
}

int LayerGraph::zero(Shape shape, std::string name) {
  Layer l;
  l.op = Op::Zero;
  l.name = std::move(name);
  l.shape = shape;
  return push(std::move(l));
}

int LayerGraph::identity(int x, std::string name) {
  Layer l;
  l.op = Op::Identity;
  l.shape = in(x, name).shape;
  l.name = std::move(name);
  l.inputs = {x};
  return push(std::move(l));
}

int LayerGraph::dropout(int x, float p, std::string name) {
  if (!(p >= 0.0f && p < 1.0f)) throw Error(name, "dropout p must be in [0, 1)");
  Layer l;
  l.op = Op::Dropout;
  l.shape = in(x, name).shape;
  l.name = std::move(name);
  l.inputs = {x};
  l.p = p;
  return push(std::move(l));
}

int64_t LayerGraph::params() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l.params;
  return n;
}

int64_t LayerGraph::macs() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l.macs;
  return n;
}

void LayerGraph::check_output() const {
  const Layer& out = layers_.back();
  if (out.shape != Shape{classes_, 1, 1})
    throw Error(out.name, "the network must end in logits of shape " +
                              to_string(Shape{classes_, 1, 1}) + ", not " + to_string(out.shape));
}

nlohmann::json LayerGraph::to_json() const {
  using nlohmann::json;
  json layers = json::array();
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    json j = {{"id", i},
              {"op", op_name(l.op)},
              {"name", l.name},
              {"inputs", l.inputs},
              {"shape", {l.shape.c, l.shape.h, l.shape.w}}};
    switch (l.op) {
      case Op::Conv:
        j["kernel"] = l.kernel;
        j["stride"] = l.stride;
        j["pad"] = l.pad;
        j["groups"] = l.groups;
        j["bias"] = l.bias;
        break;
      case Op::MaxPool:
      case Op::AvgPool:
        j["kernel"] = l.kernel;
        j["stride"] = l.stride;
        j["pad"] = l.pad;
        if (l.op == Op::AvgPool) j["count_include_pad"] = l.count_include_pad;
        break;
      case Op::BatchNorm:
        j["eps"] = l.eps;
        j["momentum"] = l.momentum;
        break;
      case Op::Linear:
        j["bias"] = l.bias;
        break;
      case Op::Dropout:
        j["p"] = l.p;
        break;
      default:
        break;
    }
    if (l.params) j["params"] = l.params;
    if (l.macs) j["macs"] = l.macs;
    layers.push_back(std::move(j));
  }
  const Shape in = input_shape();
  return json{{"input", {in.c, in.h, in.w}}, {"classes", classes_},
              {"params", params()},          {"macs", macs()},
              {"output", output()},          {"layers", std::move(layers)}};
}

LayerGraph LayerGraph::from_json(const nlohmann::json& j, const std::string& where) {
  using nlohmann::json;
  auto fail = [&](const std::string& ptr, const std::string& why) -> Error {
    return Error(where + ": " + ptr, why);
  };
  auto get_int = [&](const json& o, const char* key, const std::string& ptr) -> int {
    if (!o.contains(key) || !o[key].is_number_integer())
      throw fail(ptr + "/" + key, "missing or not an integer");
    return o[key].get<int>();
  };
  auto shape_of = [&](const json& a, const std::string& ptr) -> Shape {
    if (!a.is_array() || a.size() != 3 || !a[0].is_number_integer() || !a[1].is_number_integer() ||
        !a[2].is_number_integer())
      throw fail(ptr, "a shape is [channels, height, width]");
    return {a[0].get<int>(), a[1].get<int>(), a[2].get<int>()};
  };
  if (!j.is_object() || !j.contains("layers") || !j["layers"].is_array() || j["layers"].empty())
    throw fail("", "a layer graph is an object with a non-empty 'layers' array");
  if (!j.contains("input")) throw fail("/input", "missing");
  LayerGraph g(shape_of(j["input"], "/input"), get_int(j, "classes", ""));
  const json& ls = j["layers"];
  for (size_t i = 1; i < ls.size(); ++i) {
    const json& l = ls[i];
    const std::string ptr = "/layers/" + std::to_string(i);
    if (!l.is_object() || !l.contains("op") || !l["op"].is_string())
      throw fail(ptr + "/op", "missing or not a string");
    const auto op = op_from_name(l["op"].get<std::string>());
    if (!op)
      throw fail(ptr + "/op",
                 "unknown op '" + printable_excerpt(l["op"].get<std::string>(), 40) + "'");
    std::string name = l.value("name", ptr);
    std::vector<int> xs;
    if (l.contains("inputs")) {
      if (!l["inputs"].is_array()) throw fail(ptr + "/inputs", "not an array");
      for (const auto& x : l["inputs"]) {
        if (!x.is_number_integer() || x.get<int>() < 0 || x.get<size_t>() >= i)
          throw fail(ptr + "/inputs", "inputs must be indices of earlier layers");
        xs.push_back(x.get<int>());
      }
    }
    const size_t arity = xs.size();
    auto need = [&](size_t n) {
      if (arity != n)
        throw fail(ptr + "/inputs", std::string(op_name(*op)) + " takes " + std::to_string(n) +
                                        " input(s), got " + std::to_string(arity));
    };
    const Shape s = l.contains("shape") ? shape_of(l["shape"], ptr + "/shape") : Shape{};
    int got = -1;
    try {
      switch (*op) {
        case Op::Input:
          throw fail(ptr + "/op", "only layer 0 is the input");
        case Op::Conv:
          need(1);
          got = g.conv(xs[0], s.c, get_int(l, "kernel", ptr), get_int(l, "stride", ptr),
                       get_int(l, "groups", ptr), l.value("bias", false), name);
          break;
        case Op::BatchNorm:
          need(1);
          got = g.batchnorm(xs[0], name);
          break;
        case Op::Relu:
        case Op::Relu6:
        case Op::HSwish:
        case Op::HSigmoid:
        case Op::Sigmoid:
          need(1);
          got = g.activation(*op, xs[0], name);
          break;
        case Op::MaxPool:
          need(1);
          got = g.maxpool(xs[0], get_int(l, "kernel", ptr), get_int(l, "stride", ptr),
                          get_int(l, "pad", ptr), name);
          break;
        case Op::AvgPool:
          need(1);
          got = g.avgpool(xs[0], get_int(l, "kernel", ptr), get_int(l, "stride", ptr),
                          get_int(l, "pad", ptr), l.value("count_include_pad", false), name);
          break;
        case Op::GlobalAvgPool:
          need(1);
          got = g.global_avgpool(xs[0], name);
          break;
        case Op::Add:
          got = g.add(xs, name);
          break;
        case Op::Concat:
          got = g.concat(xs, name);
          break;
        case Op::Mul:
          need(2);
          got = g.mul(xs[0], xs[1], name);
          break;
        case Op::Linear:
          need(1);
          got = g.linear(xs[0], s.c, l.value("bias", false), name);
          break;
        case Op::Zero:
          need(0);
          got = g.zero(s, name);
          break;
        case Op::Identity:
          need(1);
          got = g.identity(xs[0], name);
          break;
        case Op::Dropout:
          need(1);
          got = g.dropout(xs[0], l.value("p", 0.0f), name);
          break;
      }
    } catch (const json::exception& e) {
      throw fail(ptr, e.what());
    }
    if (l.contains("shape") && g.layer(got).shape != s)
      throw fail(ptr + "/shape", "says " + to_string(s) + " but the layer computes " +
                                     to_string(g.layer(got).shape));
  }
  if (j.contains("params") && j["params"] != g.params())
    throw fail("/params", "says " + json_excerpt(j["params"]) + " but the layers hold " +
                              std::to_string(g.params()));
  g.check_output();
  return g;
}

}  // namespace minas
