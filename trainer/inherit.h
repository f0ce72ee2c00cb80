#pragma once
// Weight inheritance: an evolution child starts from its parent's trained
// weights in every layer the mutation left unchanged, and from the usual
// initialization elsewhere, so a lineage accumulates training instead of
// restarting it at every generation.
//
// "Unchanged" is read off the two layer graphs. A layer with state (conv,
// linear, batch norm) of the child inherits when the parent has
//   - a layer of the same name: names are the skeleton's dotted paths
//     ("stage2.layer1.dw.conv"), so the same name is the same position in
//     the graph (the same stage, slot and part of its block);
//   - the same op and the same attributes that decide what it computes
//     (kernel, stride, pad, groups, bias; a batch norm's eps and momentum);
//   - the same input shapes and output shape (so every tensor has its shape);
// and a batch norm inherits only if the layer it normalizes did: its scale,
// shift and running statistics describe that layer's output channels, and
// for a freshly initialized layer they would describe nothing. The running
// statistics go with their layer's scale and shift, always together.
//
// What feeds a layer may have changed (stage1.layer1 went from conv_k3 to
// sep_k3, and stage1.layer2 reads its output): the layer still inherits. Its
// weights were trained on features of the same shape at the same depth, a
// far better start than random ones; requiring the whole path from the input
// unchanged would re-initialize everything after the mutated slot, on
// average half of the network, and the lineage would keep little.
//
// The optimizer's state is not inherited: the child is a new run with its
// own schedule (warm-up, then decay from its own peak rate), while the
// parent's momentum is the velocity of its last steps, at the end of its
// decay, on the parent's loss surface; in the layers around a mutation it
// points along gradients of another function. Its buffers are also indexed
// by parameter position, which a mutation shifts. A fresh momentum costs a
// few steps; a stale one can throw the first steps off course.
#include <cstdint>
#include <string>
#include <vector>

#include "searchspace/layer_graph.h"
#include "trainer/checkpoint.h"
#include "trainer/model.h"

namespace minas {

// Which of the child's layers with state inherit, and why the others do not.
struct InheritPlan {
  std::vector<int> inherited;  // child layer indices, in graph order
  struct Refusal {
    int layer = 0;       // child layer index
    std::string reason;  // "no layer of this name in the parent", "input 16x14x14, parent's ..."
  };
  std::vector<Refusal> refused;  // in graph order
};

// The plan for a child graph against its parent's graph: pure, no weights.
InheritPlan plan_inheritance(const LayerGraph& parent, const LayerGraph& child);

// What inherit_weights copied.
struct InheritReport {
  int64_t tensors = 0;  // tensors copied: weights, biases, BN scale, shift and running stats
  int64_t params = 0;   // trainable parameters among them (running statistics excluded)
  int64_t total_tensors = 0, total_params = 0;  // of the child, for the share
  InheritPlan plan;
};

// Copies into `child` (freshly initialized) the tensors of every layer the
// plan inherits, from `parent_state`: a checkpoint of a model of `parent`
// (tensors named as Model names them; others, such as the optimizer's
// "optimizer.momentum.I", are ignored). The rest of `child` is left as it is.
// Throws Error naming `origin` when the state lacks a tensor of an inherited
// layer or holds it in another shape (the state is not of `parent`); the
// child is then unchanged.
InheritReport inherit_weights(Model& child, const LayerGraph& parent,
                              const Checkpoint& parent_state, const std::string& origin);

}  // namespace minas
