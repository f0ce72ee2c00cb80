#pragma once
// The trainable state of one network: its parameters (with gradients) and
// its batch-norm running statistics, in plain layouts (conv OIHW with
// I = C_in / groups, linear (out, C*H*W), vectors per channel), on the host.
// Backends read and write these; checkpoints save them; the optimizer
// updates them. Names are "<layer name>.<weight|bias|gamma|beta|running_mean|running_var>".
#include <cstdint>
#include <string>
#include <vector>

#include "searchspace/layer_graph.h"
#include "trainer/optim.h"

namespace minas {

struct Param {
  std::string name;
  ParamKind kind = ParamKind::weight;
  std::vector<int64_t> shape;
  std::vector<float> value;
  std::vector<float> grad;  // empty for running statistics
  size_t size() const { return value.size(); }
};

// Indices into Model::params() / Model::buffers() of one layer's state; -1: none.
struct LayerState {
  int weight = -1, bias = -1, gamma = -1, beta = -1;  // params
  int running_mean = -1, running_var = -1;            // buffers
};

class Model {
 public:
  // Initializes as PyTorch does by default, from `seed`: conv and linear
  // weights and biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with
  // a = sqrt(5)), BN scale 1 and shift 0, running mean 0 and variance 1.
  Model(LayerGraph graph, uint64_t seed);

  const LayerGraph& graph() const { return graph_; }
  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  std::vector<Param>& buffers() { return buffers_; }
  const std::vector<Param>& buffers() const { return buffers_; }
  const LayerState& state(int layer) const { return state_.at(static_cast<size_t>(layer)); }
  int64_t parameter_count() const;

 private:
  LayerGraph graph_;
  std::vector<Param> params_, buffers_;
  std::vector<LayerState> state_;
};

}  // namespace minas
