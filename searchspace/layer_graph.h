#pragma once
// LayerGraph: the network an architecture lowers to, and the only thing the
// trainer sees. A DAG of typed layers in topological order (every input index
// is smaller than the layer's own), each with its per-sample output shape,
// parameter count and multiply-accumulates. Builders check shapes as layers
// are added, so a graph that exists is a graph whose shapes work.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace minas {

enum class Op : uint8_t {
  Input,          // the image batch; always layer 0
  Conv,           // 2-D convolution: kernel, stride, pad, groups, bias; out channels = shape.c
  BatchNorm,      // per-channel batch normalization with affine scale and shift
  Relu,           // max(x, 0)
  Relu6,          // min(max(x, 0), 6)
  HSwish,         // x * relu6(x + 3) / 6
  HSigmoid,       // relu6(x + 3) / 6
  Sigmoid,        // 1 / (1 + exp(-x))
  MaxPool,        // max over kernel x kernel windows: kernel, stride, pad
  AvgPool,        // mean over windows; count_include_pad says whether padding counts
  GlobalAvgPool,  // mean over H x W: (C, H, W) -> (C, 1, 1)
  Add,            // elementwise sum of two or more inputs of one shape
  Concat,         // concatenation along channels of inputs with equal H, W
  Mul,            // x (C, H, W) times a per-channel scale s (C, 1, 1): squeeze-excitation
  Linear,         // fully connected on the flattened input; out features = shape.c
  Zero,           // a tensor of zeros of the given shape (a node with no live input)
  Identity,       // the input unchanged (the format allows it; lowering aliases skips instead)
  Dropout,        // zeroes a fraction p of elements in training, scales the rest by 1/(1-p)
};

const char* op_name(Op op);
std::optional<Op> op_from_name(std::string_view name);

struct Shape {
  int c = 0, h = 0, w = 0;
  int64_t elements() const { return int64_t{c} * h * w; }
  bool operator==(const Shape&) const = default;
};
std::string to_string(const Shape& s);  // "CxHxW"

struct Layer {
  Op op = Op::Input;
  std::string name;         // stable dotted path, e.g. "stage2.cell1.node3<-1.conv"
  std::vector<int> inputs;  // indices of earlier layers
  Shape shape;              // output shape of one sample
  // Attributes; each op uses those named in its comment above.
  int kernel = 0, stride = 1, pad = 0, groups = 1;
  bool bias = false;
  bool count_include_pad = false;
  float eps = 1e-5f, momentum = 0.1f;  // batch norm
  float p = 0.0f;                      // dropout
  int64_t params = 0;  // trainable parameters (BN: scale and shift; running stats excluded)
  int64_t macs = 0;    // multiply-accumulates of one sample (conv, linear and mul only)
};

class LayerGraph {
 public:
  LayerGraph(Shape input, int classes);

  // Builders: each appends a layer, checks its inputs' shapes, infers its own
  // and returns its index. A shape that cannot work throws Error naming
  // the layer.
  int conv(int x, int out_channels, int kernel, int stride, int groups, bool bias,
           std::string name);
  int batchnorm(int x, std::string name);
  int activation(Op op, int x, std::string name);  // Relu, Relu6, HSwish, HSigmoid, Sigmoid
  int maxpool(int x, int kernel, int stride, int pad, std::string name);
  int avgpool(int x, int kernel, int stride, int pad, bool count_include_pad, std::string name);
  int global_avgpool(int x, std::string name);
  int add(std::vector<int> xs, std::string name);
  int concat(std::vector<int> xs, std::string name);
  int mul(int x, int scale, std::string name);
  int linear(int x, int out_features, bool bias, std::string name);
  int zero(Shape shape, std::string name);
  int identity(int x, std::string name);
  int dropout(int x, float p, std::string name);

  const std::vector<Layer>& layers() const { return layers_; }
  const Layer& layer(int i) const { return layers_.at(static_cast<size_t>(i)); }
  int size() const { return static_cast<int>(layers_.size()); }
  Shape input_shape() const { return layers_.front().shape; }
  int classes() const { return classes_; }
  int output() const { return size() - 1; }  // the last layer: logits (classes, 1, 1)
  int64_t params() const;
  int64_t macs() const;

  // Throws Error unless the graph ends in logits of shape (classes, 1, 1).
  void check_output() const;

  nlohmann::json to_json() const;
  // Rebuilds through the builders, so a graph read back is checked like one built.
  static LayerGraph from_json(const nlohmann::json& j, const std::string& where = "layer graph");

 private:
  int push(Layer l);
  const Layer& in(int x, const std::string& name) const;
  std::vector<Layer> layers_;
  int classes_;
};

}  // namespace minas
