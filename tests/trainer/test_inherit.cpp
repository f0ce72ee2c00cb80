// Weight inheritance (trainer/inherit.h): which layers of a mutated child
// keep their parent's tensors, bit for bit, and which start afresh.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "trainer/inherit.h"
#include "trainer/train.h"

using namespace minas;

namespace {

// A trained-looking state of `arch`: the model of seed 1 with every value
// moved off its initialization, and an optimizer tensor the child must ignore.
Checkpoint parent_state(const Space& space, const std::string& arch, const Model& m) {
  Checkpoint ck;
  ck.meta = {space.name(), arch, {{"epoch", 3}}};
  for (const TensorView& v : checkpoint_views(m)) {
    CheckpointTensor t{v.name, v.shape, {v.data.begin(), v.data.end()}};
    for (size_t i = 0; i < t.data.size(); ++i) t.data[i] += 0.25f + 0.001f * static_cast<float>(i);
    ck.tensors.push_back(std::move(t));
  }
  ck.tensors.push_back({"optimizer.momentum.0", {3}, {1, 2, 3}});
  return ck;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The layer a tensor belongs to: its name less ".weight", ".running_mean", ...
std::string layer_of(const std::string& tensor) {
  return tensor.substr(0, tensor.rfind('.'));
}

struct Outcome {
  InheritReport report;
  std::set<std::string> inherited, fresh;  // child tensors equal to the parent's / to their init
};

// Inherits `child_key`'s weights from `parent_key`'s state; every child tensor
// must equal either the parent's (bit for bit) or its own initialization.
Outcome inherit(const std::string& parent_key, const std::string& child_key) {
  const Space space = Space::load("small");
  const LayerGraph pg = space.lower(space.parse_key(parent_key));
  const Model parent(pg, 1);
  const Checkpoint state = parent_state(space, parent_key, parent);
  Model child(space.lower(space.parse_key(child_key)), 2);
  const Model init(space.lower(space.parse_key(child_key)), 2);
  Outcome o;
  o.report = inherit_weights(child, pg, state, "test");
  for (const auto* group : {&child.params(), &child.buffers()})
    for (const Param& p : *group) {
      const CheckpointTensor* t = state.find(p.name);
      const auto& fresh = (group == &child.params() ? init.params() : init.buffers());
      const auto it = std::find_if(fresh.begin(), fresh.end(),
                                   [&](const Param& q) { return q.name == p.name; });
      REQUIRE(it != fresh.end());
      if (t && bit_equal(p.value, t->data))
        o.inherited.insert(p.name);
      else if (bit_equal(p.value, it->value))
        o.fresh.insert(p.name);
      else
        FAIL("tensor " << p.name << " is neither the parent's nor its own initialization");
    }
  return o;
}

std::set<std::string> refused_layers(const InheritReport& r, const Model& child) {
  std::set<std::string> out;
  for (const auto& x : r.plan.refused) {
    CHECK_FALSE(x.reason.empty());
    out.insert(child.graph().layer(x.layer).name);
  }
  return out;
}

}  // namespace

TEST_CASE("inherit: a mutation that changes one op keeps every other layer's tensors bit-equal") {
  // stage1.layer2: conv_k3 -> sep_k3. Only that slot's layers start afresh;
  // stage2.layer1, which reads the changed slot's output, inherits.
  const std::string parent = "16|32|conv_k3|conv_k3|64|conv_k5|conv_k3";
  const std::string child = "16|32|conv_k3|sep_k3|64|conv_k5|conv_k3";
  const Outcome o = inherit(parent, child);
  CHECK(o.fresh.size() == 10);  // depthwise and pointwise conv, each with a BN of four tensors
  for (const std::string& t : o.fresh) CHECK(t.rfind("stage1.layer2.", 0) == 0);
  for (const std::string& t : o.inherited) CHECK(t.rfind("stage1.layer2.", 0) != 0);
  CHECK(o.inherited.count("stage2.layer1.conv.weight") == 1);
  CHECK(o.inherited.count("head.linear.bias") == 1);
  CHECK(o.report.tensors == static_cast<int64_t>(o.inherited.size()));
  CHECK(o.report.total_tensors == static_cast<int64_t>(o.inherited.size() + o.fresh.size()));
  CHECK(o.report.params > 0);
  CHECK(o.report.params < o.report.total_params);
  // Running statistics are counted as tensors, not as parameters.
  const Space space = Space::load("small");
  const Model m(space.lower(space.parse_key(child)), 2);
  int64_t inherited_params = 0;
  for (const Param& p : m.params())
    if (o.inherited.count(p.name)) inherited_params += static_cast<int64_t>(p.size());
  CHECK(o.report.params == inherited_params);
  CHECK(o.report.total_params == m.parameter_count());
}

TEST_CASE("inherit: a changed width refuses the changed layers only") {
  // stage1.width 32 -> 48: stage1's layers change shape, stage2.layer1's conv
  // reads 48 channels, and its BN goes with it; the stem, stage2.layer2 and
  // the head keep theirs.
  const std::string parent = "16|32|conv_k3|conv_k3|64|conv_k5|conv_k3";
  const std::string child = "16|48|conv_k3|conv_k3|64|conv_k5|conv_k3";
  const Outcome o = inherit(parent, child);
  const Space space = Space::load("small");
  const Model m(space.lower(space.parse_key(child)), 2);
  const std::set<std::string> expected = {"stage1.layer1.conv", "stage1.layer1.bn",
                                          "stage1.layer2.conv", "stage1.layer2.bn",
                                          "stage2.layer1.conv", "stage2.layer1.bn"};
  CHECK(refused_layers(o.report, m) == expected);
  for (const std::string& t : o.fresh) CHECK(expected.count(layer_of(t)) == 1);
  for (const std::string& t : o.inherited) CHECK(expected.count(layer_of(t)) == 0);
  CHECK(o.inherited.count("stem.conv.weight") == 1);
  CHECK(o.inherited.count("stem.bn.running_var") == 1);
  CHECK(o.inherited.count("stage2.layer2.bn.gamma") == 1);
  CHECK(o.inherited.count("head.linear.weight") == 1);
  for (const auto& r : o.report.plan.refused)
    if (m.graph().layer(r.layer).name == "stage2.layer1.bn")
      CHECK(minas::test::contains(r.reason, "stage2.layer1.conv"));
}

TEST_CASE(
    "inherit: every single mutation of the small space inherits exactly its unchanged "
    "layers") {
  // Over every neighbour of one architecture: what is inherited is bit-equal,
  // what is not is the child's own initialization (inherit() checks both),
  // and a layer of the same name, op and shapes is never refused unless it
  // is a BN of a refused layer.
  const Space space = Space::load("small");
  const std::string parent = "24|48|sep_k3|mb_k3_e3|96|mb_k5_e3|conv_k3";
  for (const Arch& a : space.neighbours(space.parse_key(parent))) {
    const std::string child = space.key(a);
    CAPTURE(child);
    const Outcome o = inherit(parent, child);
    CHECK(o.report.tensors == static_cast<int64_t>(o.inherited.size()));
    const LayerGraph pg = space.lower(space.parse_key(parent));
    const LayerGraph cg = space.lower(a);
    for (const auto& r : o.report.plan.refused) {
      const Layer& c = cg.layer(r.layer);
      if (c.op == Op::BatchNorm) continue;  // may go with its refused conv
      bool same = false;
      for (const Layer& p : pg.layers())
        if (p.name == c.name && p.op == c.op && p.shape == c.shape && p.kernel == c.kernel &&
            p.groups == c.groups && pg.layer(p.inputs[0]).shape == cg.layer(c.inputs[0]).shape)
          same = true;
      CHECK_MESSAGE(!same, c.name << " refused: " << r.reason);
    }
  }
}

TEST_CASE("inherit: a state that is not the parent's is refused and the child left as it was") {
  const Space space = Space::load("small");
  const std::string parent = "16|32|conv_k3|conv_k3|64|conv_k5|conv_k3";
  const LayerGraph pg = space.lower(space.parse_key(parent));
  Checkpoint state = parent_state(space, parent, Model(pg, 1));
  for (auto& t : state.tensors)
    if (t.name == "stage2.layer2.conv.weight") t.shape[0] = 1;  // claims another shape
  Model child(space.lower(space.parse_key("16|32|conv_k3|sep_k3|64|conv_k5|conv_k3")), 2);
  const Model init(child.graph(), 2);
  const std::string what =
      minas::test::error_of([&] { inherit_weights(child, pg, state, "trial 7"); }).what();
  CHECK(minas::test::contains(what, "trial 7"));
  CHECK(minas::test::contains(what, "stage2.layer2.conv.weight"));
  for (size_t i = 0; i < child.params().size(); ++i)
    CHECK(bit_equal(child.params()[i].value, init.params()[i].value));
  // A tensor missing altogether, likewise.
  std::erase_if(state.tensors, [](const CheckpointTensor& t) { return t.name == "stem.bn.beta"; });
  CHECK(minas::test::contains(
      minas::test::error_of([&] { inherit_weights(child, pg, state, "trial 7"); }).what(),
      "stem.bn.beta"));
}

TEST_CASE(
    "inherit: an identical architecture inherits everything, a fresh one of another "
    "stem nothing downstream of it") {
  const std::string key = "16|32|conv_k3|conv_k3|64|conv_k5|conv_k3";
  const Outcome same = inherit(key, key);
  CHECK(same.fresh.empty());
  CHECK(same.report.tensors == same.report.total_tensors);
  CHECK(same.report.params == same.report.total_params);
  // stem.width 16 -> 24: the stem and stage1.layer1's conv (it reads the stem) change.
  const Outcome stem = inherit(key, "24|32|conv_k3|conv_k3|64|conv_k5|conv_k3");
  CHECK(stem.fresh.count("stem.conv.weight") == 1);
  CHECK(stem.fresh.count("stage1.layer1.conv.weight") == 1);
  CHECK(stem.fresh.count("stage1.layer1.bn.gamma") == 1);
  CHECK(stem.inherited.count("stage1.layer2.conv.weight") == 1);
}
