#include "trainer/inherit.h"

#include <algorithm>
#include <unordered_map>

#include "searchspace/error.h"

namespace minas {
namespace {

bool has_state(Op op) {
  return op == Op::Conv || op == Op::Linear || op == Op::BatchNorm;
}

// Why layer c of the child is not the parent's layer p, or empty: the same
// op with the same attributes on inputs and output of the same shapes.
std::string difference(const LayerGraph& parent, const Layer& p, const LayerGraph& child,
                       const Layer& c) {
  if (p.op != c.op)
    return std::string("a ") + op_name(c.op) + " here, a " + op_name(p.op) + " in the parent";
  if (p.kernel != c.kernel || p.stride != c.stride || p.pad != c.pad || p.groups != c.groups ||
      p.bias != c.bias)
    return "kernel, stride, padding, groups or bias differ from the parent's";
  if (p.eps != c.eps || p.momentum != c.momentum) return "eps or momentum differ from the parent's";
  if (p.inputs.size() != c.inputs.size()) return "another number of inputs than the parent's";
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    const Shape in = child.layer(c.inputs[k]).shape, was = parent.layer(p.inputs[k]).shape;
    if (in != was) return "input " + to_string(in) + ", the parent's " + to_string(was);
  }
  if (p.shape != c.shape)
    return "output " + to_string(c.shape) + ", the parent's " + to_string(p.shape);
  return {};
}

// The tensors of a layer's state, as Model names and shapes them.
std::vector<Param*> layer_tensors(Model& m, int layer) {
  const LayerState& st = m.state(layer);
  std::vector<Param*> out;
  for (int i : {st.weight, st.bias, st.gamma, st.beta})
    if (i >= 0) out.push_back(&m.params()[static_cast<size_t>(i)]);
  for (int i : {st.running_mean, st.running_var})
    if (i >= 0) out.push_back(&m.buffers()[static_cast<size_t>(i)]);
  return out;
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

InheritPlan plan_inheritance(const LayerGraph& parent, const LayerGraph& child) {
  std::unordered_map<std::string, int> by_name;
  for (int i = 0; i < parent.size(); ++i) by_name.emplace(parent.layer(i).name, i);
  std::vector<bool> kept(static_cast<size_t>(child.size()), false);
  InheritPlan plan;
  for (int i = 1; i < child.size(); ++i) {
    const Layer& c = child.layer(i);
    if (!has_state(c.op)) continue;
    std::string why;
    const auto p = by_name.find(c.name);
    if (p == by_name.end())
      why = "no layer of this name in the parent";
    else
      why = difference(parent, parent.layer(p->second), child, c);
    if (why.empty() && c.op == Op::BatchNorm && !kept[static_cast<size_t>(c.inputs[0])])
      why = "the layer it normalizes, " + child.layer(c.inputs[0]).name + ", is not inherited";
    if (why.empty()) {
      kept[static_cast<size_t>(i)] = true;
      plan.inherited.push_back(i);
    } else {
      plan.refused.push_back({i, std::move(why)});
    }
  }
  return plan;
}

InheritReport inherit_weights(Model& child, const LayerGraph& parent,
                              const Checkpoint& parent_state, const std::string& origin) {
  InheritReport r;
  r.plan = plan_inheritance(parent, child.graph());
  for (const auto* group : {&child.params(), &child.buffers()})
    r.total_tensors += static_cast<int64_t>(group->size());
  r.total_params = child.parameter_count();
  // Every tensor checked before any is copied: a state that is not the
  // parent's leaves the child as it was.
  std::vector<std::pair<Param*, const CheckpointTensor*>> copies;
  for (int layer : r.plan.inherited)
    for (Param* p : layer_tensors(child, layer)) {
      const CheckpointTensor* t = parent_state.find(p->name);
      const std::vector<uint64_t> shape(p->shape.begin(), p->shape.end());
      if (!t)
        throw Error(origin, "the parent's state has no tensor '" + p->name +
                                "', which its architecture has: the state is not of that network");
      if (t->shape != shape || t->data.size() != p->value.size())
        throw Error(origin, "the parent's tensor '" + p->name + "' has shape " +
                                shape_text(t->shape) + ", its architecture says " +
                                shape_text(shape) + ": the state is not of that network");
      copies.emplace_back(p, t);
    }
  for (auto [p, t] : copies) {
    std::copy(t->data.begin(), t->data.end(), p->value.begin());
    ++r.tensors;
    if (!p->grad.empty()) r.params += static_cast<int64_t>(p->value.size());  // not a statistic
  }
  return r;
}

}  // namespace minas
