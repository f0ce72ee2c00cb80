#include "trainer/model.h"

#include <cmath>

#include "searchspace/rng.h"

namespace minas {

Model::Model(LayerGraph graph, uint64_t seed) : graph_(std::move(graph)) {
  Rng rng(seed);
  state_.resize(static_cast<size_t>(graph_.size()));
  auto add = [&](std::vector<Param>& to, const std::string& name, ParamKind kind,
                 std::vector<int64_t> shape, float fill, bool with_grad) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    Param p{name, kind, std::move(shape), std::vector<float>(static_cast<size_t>(n), fill), {}};
    if (with_grad) p.grad.assign(static_cast<size_t>(n), 0.0f);
    to.push_back(std::move(p));
    return static_cast<int>(to.size()) - 1;
  };
  auto uniform = [&](Param& p, double bound) {
    for (float& v : p.value) v = static_cast<float>((2 * rng.uniform() - 1) * bound);
  };
  for (int i = 1; i < graph_.size(); ++i) {
    const Layer& l = graph_.layer(i);
    LayerState& st = state_[static_cast<size_t>(i)];
    if (l.op == Op::Conv || l.op == Op::Linear) {
      const Shape in = graph_.layer(l.inputs[0]).shape;
      const int64_t fan_in =
          l.op == Op::Conv ? int64_t{in.c / l.groups} * l.kernel * l.kernel : in.elements();
      std::vector<int64_t> shape =
          l.op == Op::Conv ? std::vector<int64_t>{l.shape.c, in.c / l.groups, l.kernel, l.kernel}
                           : std::vector<int64_t>{l.shape.c, in.c, in.h, in.w};
      st.weight = add(params_, l.name + ".weight", ParamKind::weight, shape, 0, true);
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
      uniform(params_[st.weight], bound);
      if (l.bias) {
        st.bias = add(params_, l.name + ".bias", ParamKind::bias, {l.shape.c}, 0, true);
        uniform(params_[st.bias], bound);
      }
    } else if (l.op == Op::BatchNorm) {
      st.gamma = add(params_, l.name + ".gamma", ParamKind::bn, {l.shape.c}, 1, true);
      st.beta = add(params_, l.name + ".beta", ParamKind::bn, {l.shape.c}, 0, true);
      st.running_mean =
          add(buffers_, l.name + ".running_mean", ParamKind::bn, {l.shape.c}, 0, false);
      st.running_var = add(buffers_, l.name + ".running_var", ParamKind::bn, {l.shape.c}, 1, false);
    }
  }
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : params_) n += static_cast<int64_t>(p.size());
  return n;
}

}  // namespace minas
