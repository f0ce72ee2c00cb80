// Layer graph builders: shapes, parameter counts and MACs of every op, the
// JSON form, and the shapes every space op lowers to.
#include <doctest/doctest.h>

#include <set>

#include "searchspace/error.h"
#include "searchspace/layer_graph.h"
#include "searchspace/space.h"

using minas::LayerGraph;
using minas::Op;
using minas::Shape;

TEST_CASE("layer graph: conv shapes, params and MACs (plain, strided, grouped, depthwise)") {
  LayerGraph g({4, 9, 9}, 10);
  const int a = g.conv(0, 8, 3, 1, 1, false, "plain");
  CHECK(g.layer(a).shape == Shape{8, 9, 9});
  CHECK(g.layer(a).pad == 1);
  CHECK(g.layer(a).params == 4 * 8 * 9);
  CHECK(g.layer(a).macs == 4 * 9 * 8 * 81);
  const int b = g.conv(a, 16, 3, 2, 1, true, "strided");
  CHECK(g.layer(b).shape == Shape{16, 5, 5});  // (9 + 2 - 3) / 2 + 1
  CHECK(g.layer(b).params == 8 * 16 * 9 + 16);
  const int c = g.conv(b, 8, 5, 1, 4, false, "grouped");
  CHECK(g.layer(c).shape == Shape{8, 5, 5});
  CHECK(g.layer(c).params == (16 / 4) * 25 * 8);
  CHECK(g.layer(c).macs == (16 / 4) * 25 * 8 * 25);
  const int d = g.conv(c, 8, 7, 2, 8, false, "depthwise");
  CHECK(g.layer(d).shape == Shape{8, 3, 3});
  CHECK(g.layer(d).params == 49 * 8);
  CHECK_THROWS_WITH_AS(g.conv(d, 6, 3, 1, 4, false, "bad groups"),
                       doctest::Contains("bad groups: conv groups 4 must divide"), minas::Error);
}

TEST_CASE("layer graph: normalization, activations, pools, merges, linear, zero, dropout") {
  LayerGraph g({3, 8, 8}, 4);
  const int bn = g.batchnorm(0, "bn");
  CHECK(g.layer(bn).params == 6);
  CHECK(g.layer(bn).macs == 0);
  for (Op op : {Op::Relu, Op::Relu6, Op::HSwish, Op::HSigmoid, Op::Sigmoid})
    CHECK(g.layer(g.activation(op, bn, minas::op_name(op))).shape == Shape{3, 8, 8});
  CHECK_THROWS_AS(g.activation(Op::Conv, bn, "not an activation"), minas::Error);

  CHECK(g.layer(g.maxpool(bn, 2, 2, 0, "max")).shape == Shape{3, 4, 4});
  CHECK(g.layer(g.maxpool(bn, 3, 2, 1, "max3")).shape == Shape{3, 4, 4});
  CHECK(g.layer(g.avgpool(bn, 3, 1, 1, false, "avg")).shape == Shape{3, 8, 8});
  CHECK(g.layer(g.global_avgpool(bn, "gap")).shape == Shape{3, 1, 1});
  CHECK_THROWS_WITH_AS(g.maxpool(g.global_avgpool(bn, "g1"), 2, 2, 0, "too small"),
                       doctest::Contains("too small: maxpool gives an empty output"), minas::Error);

  const int c1 = g.conv(bn, 5, 1, 1, 1, false, "c1");
  CHECK(g.layer(g.add({c1, c1, c1}, "add3")).shape == Shape{5, 8, 8});
  CHECK_THROWS_WITH_AS(g.add({c1, bn}, "mismatch"), doctest::Contains("add of different shapes"),
                       minas::Error);
  CHECK_THROWS_AS(g.add({c1}, "one"), minas::Error);
  CHECK(g.layer(g.concat({c1, bn}, "cat")).shape == Shape{8, 8, 8});
  CHECK_THROWS_AS(g.concat({c1, g.maxpool(bn, 2, 2, 0, "half")}, "cat2"), minas::Error);

  const int s = g.global_avgpool(c1, "s");
  const int m = g.mul(c1, s, "scale");
  CHECK(g.layer(m).shape == Shape{5, 8, 8});
  CHECK(g.layer(m).macs == 5 * 64);
  CHECK_THROWS_AS(g.mul(c1, g.global_avgpool(bn, "wrong"), "scale2"), minas::Error);

  CHECK(g.layer(g.zero({5, 8, 8}, "z")).inputs.empty());
  CHECK(g.layer(g.identity(c1, "id")).shape == Shape{5, 8, 8});
  CHECK_THROWS_AS(g.dropout(c1, 1.0f, "p"), minas::Error);
  const int dr = g.dropout(s, 0.5f, "drop");
  const int fc = g.linear(c1, 4, true, "fc");  // flattens 5x8x8
  CHECK(g.layer(fc).params == 5 * 64 * 4 + 4);
  CHECK(g.layer(fc).macs == 5 * 64 * 4);
  CHECK(g.layer(dr).p == 0.5f);
  g.check_output();
  CHECK_THROWS_AS(g.conv(99, 1, 1, 1, 1, false, "bad index"), minas::Error);
  CHECK_THROWS_AS(LayerGraph({0, 8, 8}, 10), minas::Error);
  CHECK_THROWS_AS(LayerGraph({1, 8, 8}, 1), minas::Error);
}

TEST_CASE("layer graph: JSON round trip rebuilds and rechecks the graph") {
  const auto s = minas::Space::load("mobile");
  minas::Rng rng(4);
  for (int i = 0; i < 20; ++i) {
    const LayerGraph g = s.lower(s.sample(rng));
    const auto j = g.to_json();
    CHECK(j["params"] == g.params());
    CHECK(j["macs"] == g.macs());
    const LayerGraph back = LayerGraph::from_json(j);
    CHECK(back.to_json() == j);
  }
  auto j = s.lower(s.sample(rng)).to_json();
  auto wrong_shape = j;
  wrong_shape["layers"][1]["shape"][1] = 7;
  CHECK_THROWS_WITH_AS(LayerGraph::from_json(wrong_shape), doctest::Contains("/layers/1/shape"),
                       minas::Error);
  auto forward_ref = j;
  forward_ref["layers"][1]["inputs"][0] = 5;
  CHECK_THROWS_WITH_AS(LayerGraph::from_json(forward_ref), doctest::Contains("/layers/1/inputs"),
                       minas::Error);
  auto unknown = j;
  unknown["layers"][2]["op"] = "softmax";
  CHECK_THROWS_WITH_AS(LayerGraph::from_json(unknown), doctest::Contains("unknown op 'softmax'"),
                       minas::Error);
  auto params = j;
  params["params"] = 1;
  CHECK_THROWS_AS(LayerGraph::from_json(params), minas::Error);
  auto truncated = j;
  truncated["layers"].erase(truncated["layers"].size() - 1);
  truncated.erase("params");
  CHECK_THROWS_WITH_AS(LayerGraph::from_json(truncated), doctest::Contains("logits"), minas::Error);
}

TEST_CASE("layer graph: every chain op lowers with the right shapes") {
  // One stage of each op at stride 2 then stride 1, on a 16x16 input.
  const auto s = minas::Space::parse(R"({
    "name": "ops", "input": {"channels": 3, "height": 16, "width": 16}, "classes": 10,
    "decisions": [{"name": "op", "options": ["conv_k3", "sep_k5", "mb_k3_e1", "mb_k5_e6", "mb_k7_e3_se"]},
                  {"name": "w", "options": [8, 16]},
                  {"name": "second", "options": ["skip", "conv_k1", "mb_k3_e1"]}],
    "skeleton": {"type": "chain", "stem": {"channels": 8},
      "stages": [{"width": {"decision": "w"}, "stride": 2, "act": "hswish",
                  "layers": [{"decision": "op"}, {"decision": "second"}]}],
      "head": {"channels": 32, "act": "relu6", "dropout": 0.1}}})",
                                     "ops.json");
  std::set<Op> seen;
  s.enumerate([&](const minas::Arch& a) {
    const LayerGraph g = s.lower(a);
    const int w = s.decisions()[1].options[a.choice[1]].get<int>();
    const std::string op = s.decisions()[0].label(a.choice[0]);
    bool found_stage_out = false;
    for (const auto& l : g.layers()) {
      seen.insert(l.op);
      if (l.name.rfind("stage1.layer1", 0) == 0) {
        // Everything after the strided depthwise/conv is 8x8.
        if (l.op == Op::Conv && l.stride == 2) CHECK(l.shape.h == 8);
        if (l.name.find(".se.") != std::string::npos && l.op != Op::Mul) CHECK(l.shape.h == 1);
      }
      if (l.name == "stage1.layer1.pw.act" || l.name == "stage1.layer1.project.bn" ||
          l.name == "stage1.layer1.act") {
        CHECK(l.shape == Shape{w, 8, 8});
        found_stage_out = true;
      }
      if (l.name == "stage1.layer1.dw.conv") CHECK(l.groups == g.layer(l.inputs[0]).shape.c);
    }
    CHECK(found_stage_out);
    if (op == "mb_k5_e6") {
      CHECK(g.layer(g.size() - 1).op == Op::Linear);
      bool expand = false;
      for (const auto& l : g.layers())
        if (l.name == "stage1.layer1.expand.conv") expand = l.shape.c == 8 * 6;
      CHECK(expand);
    }
    return true;
  });
  for (Op op : {Op::Input, Op::Conv, Op::BatchNorm, Op::Relu, Op::Relu6, Op::HSwish, Op::HSigmoid,
                Op::GlobalAvgPool, Op::Add, Op::Mul, Op::Linear, Op::Dropout})
    CHECK_MESSAGE(seen.count(op), std::string(minas::op_name(op)));
}

TEST_CASE("layer graph: every cell op lowers with the right shapes") {
  const auto s = minas::Space::load("nb201:cells=1,channels=4,input=1x16x16");
  std::set<Op> seen;
  for (const char* key :
       {"|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|skip_connect~0|none~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"}) {
    const LayerGraph g = s.lower(s.parse_key(key));
    for (const auto& l : g.layers()) {
      seen.insert(l.op);
      if (l.name.rfind("stage1.", 0) == 0) CHECK(l.shape == Shape{4, 16, 16});
      if (l.name.rfind("stage2.cell", 0) == 0) CHECK(l.shape == Shape{8, 8, 8});
      if (l.name.rfind("stage3.cell", 0) == 0) CHECK(l.shape == Shape{16, 4, 4});
      if (l.op == Op::AvgPool && l.name.find(".node") != std::string::npos)
        CHECK_FALSE(l.count_include_pad);
    }
  }
  for (Op op : {Op::Conv, Op::BatchNorm, Op::Relu, Op::AvgPool, Op::Add, Op::Zero,
                Op::GlobalAvgPool, Op::Linear})
    CHECK_MESSAGE(seen.count(op), std::string(minas::op_name(op)));
}

TEST_CASE("layer graph: the NAS-Bench-201 network of all 3x3 convs has the paper's size") {
  // Stem 3*16*9 + BN 32 = 464. A cell of six ReLU-conv3x3-BN edges at width C
  // holds 6 * (9C^2 + 2C): 14,016 / 55,680 / 221,952 at C = 16 / 32 / 64,
  // five cells each. Reductions: 16->32: 4,608 + 64 + 9,216 + 64 + 512 =
  // 14,464; 32->64: 18,432 + 128 + 36,864 + 128 + 2,048 = 57,600. Head BN 128,
  // linear 650. Total 1,531,546: the largest NAS-Bench-201 model (1.53 M).
  // MACs on 32x32: 3 x 30 convs of 2,359,296, two reductions of 3,670,016,
  // stem 442,368, linear 640: 220,119,680.
  const auto s = minas::Space::load("nb201");
  const auto g =
      s.lower(s.parse_key("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_"
                          "conv_3x3~1|nor_conv_3x3~2|"));
  CHECK(g.params() == 1531546);
  CHECK(g.macs() == 220119680);
  // One ReLU per source node is shared by that node's conv edges.
  int relus = 0;
  for (const auto& l : g.layers())
    if (l.op == Op::Relu && l.name.find(".cell1.") != std::string::npos &&
        l.name.rfind("stage1", 0) == 0)
      ++relus;
  CHECK(relus == 3);
}

TEST_CASE("layer graph: the reference network is a member of the default space") {
  // conv3x3(1->16) BN ReLU maxpool, conv3x3(16->32) BN ReLU maxpool,
  // conv3x3(32->64) BN ReLU, GAP, linear(64->10): shared/bench/torch_ref.py at
  // width 16, whose parameter count is 144 + 32 + 4,608 + 64 + 18,432 + 128 + 650.
  const auto s = minas::Space::load("small");
  const auto g = s.lower(s.parse_key("16|32|conv_k3|skip|64|conv_k3|skip"));
  CHECK(g.params() == 24058);
  std::vector<Op> ops;
  for (const auto& l : g.layers()) ops.push_back(l.op);
  CHECK(ops == std::vector<Op>{Op::Input, Op::Conv, Op::BatchNorm, Op::Relu, Op::MaxPool, Op::Conv,
                               Op::BatchNorm, Op::Relu, Op::MaxPool, Op::Conv, Op::BatchNorm,
                               Op::Relu, Op::GlobalAvgPool, Op::Linear});
}
