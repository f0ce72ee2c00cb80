// The "chain" skeleton: a stem, stages of layers in sequence, and a head, as
// in MobileNetV2 / MnasNet / ProxylessNAS. Each stage has a width and a
// stride; its first layer changes width and resolution, so it may not be
// `skip`, and later layers may be, which is how a stage's depth is searched.
// Layer ops: skip; conv_kK (conv-BN-act); sep_kK (depthwise-BN-act,
// pointwise-BN-act); mb_kK_eE[_se] (inverted residual with expansion E and
// optional squeeze-excitation; residual add when shape allows).
#include <algorithm>

#include "searchspace/skeleton.h"

namespace minas::detail {
namespace {

struct ChainOp {
  enum Kind { Skip, Conv, Sep, MB } kind = Skip;
  int k = 0, e = 1;
  bool se = false;
};

constexpr const char* kChainOpGrammar =
    "layer ops are skip, conv_kK, sep_kK, mb_kK_eE and mb_kK_eE_se (K odd 1..11, E 1..12)";

bool parse_uint(const std::string& s, int lo, int hi, int* out) {
  if (s.empty() || s.size() > 2 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *out = std::stoi(s);
  return *out >= lo && *out <= hi;
}

std::optional<ChainOp> parse_chain_op(const json& v) {
  if (!v.is_string()) return std::nullopt;
  std::string s = v.get<std::string>();
  ChainOp op;
  if (s == "skip") return op;
  auto kernel = [&](const std::string& t) {
    return t.size() > 1 && t[0] == 'k' && parse_uint(t.substr(1), 1, 11, &op.k) && op.k % 2 == 1;
  };
  if (s.rfind("conv_", 0) == 0) {
    op.kind = ChainOp::Conv;
    return kernel(s.substr(5)) ? std::optional(op) : std::nullopt;
  }
  if (s.rfind("sep_", 0) == 0) {
    op.kind = ChainOp::Sep;
    return kernel(s.substr(4)) ? std::optional(op) : std::nullopt;
  }
  if (s.rfind("mb_", 0) == 0) {
    op.kind = ChainOp::MB;
    s = s.substr(3);
    if (s.size() > 3 && s.compare(s.size() - 3, 3, "_se") == 0) {
      op.se = true;
      s.resize(s.size() - 3);
    }
    const size_t us = s.find('_');
    if (us == std::string::npos || !kernel(s.substr(0, us))) return std::nullopt;
    const std::string e = s.substr(us + 1);
    if (e.size() < 2 || e[0] != 'e' || !parse_uint(e.substr(1), 1, 12, &op.e)) return std::nullopt;
    return op;
  }
  return std::nullopt;
}

Op activation_op(const std::string& a) {
  if (a == "relu6") return Op::Relu6;
  if (a == "hswish") return Op::HSwish;
  return Op::Relu;
}

struct Stage {
  Slot width;
  int stride = 1;
  std::string downsample;  // conv, max, avg
  Op act = Op::Relu;
  std::vector<Slot> layers;
};

class ChainSkeleton final : public Skeleton {
 public:
  ChainSkeleton(const Node& n, const std::function<int(const Node&, const std::string&)>& index) {
    n.only({"type", "stem", "stages", "head"});
    const Node stem = n.at("stem");
    stem.only({"channels", "kernel", "stride", "act"});
    stem_width_ = read_slot(stem.at("channels"), SlotKind::Width, index);
    stem_kernel_ = stem.has("kernel") ? stem.at("kernel").integer(1, 11) : 3;
    if (stem_kernel_ % 2 == 0) stem.at("kernel").fail("must be odd");
    stem_stride_ = stem.has("stride") ? stem.at("stride").integer(1, 4) : 1;
    stem_act_ = activation_op(stem.has("act") ? stem.at("act").one_of(kActs) : "relu");

    const Node stages = n.at("stages");
    stages.require_array(1);
    for (size_t s = 0; s < stages.size(); ++s) {
      const Node st = stages.at(s);
      st.only({"width", "stride", "downsample", "act", "layers"});
      Stage stage;
      stage.width = read_slot(st.at("width"), SlotKind::Width, index);
      stage.stride = st.has("stride") ? st.at("stride").integer(1, 4) : 1;
      stage.downsample =
          st.has("downsample") ? st.at("downsample").one_of({"conv", "max", "avg"}) : "conv";
      stage.act = activation_op(st.has("act") ? st.at("act").one_of(kActs) : "relu");
      const Node layers = st.at("layers");
      layers.require_array(1);
      for (size_t l = 0; l < layers.size(); ++l)
        stage.layers.push_back(
            read_slot(layers.at(l), l == 0 ? SlotKind::ChainOpNoSkip : SlotKind::ChainOp, index));
      stages_.push_back(std::move(stage));
    }

    if (n.has("head")) {
      const Node head = n.at("head");
      head.only({"channels", "act", "dropout"});
      if (head.has("channels"))
        head_width_ = read_slot(head.at("channels"), SlotKind::Width, index);
      head_act_ = activation_op(head.has("act") ? head.at("act").one_of(kActs) : "relu");
      dropout_ =
          head.has("dropout") ? static_cast<float>(head.at("dropout").number(0.0, 0.9)) : 0.f;
    }

    all_slots_.push_back(stem_width_);
    for (const Stage& st : stages_) {
      all_slots_.push_back(st.width);
      all_slots_.insert(all_slots_.end(), st.layers.begin(), st.layers.end());
    }
    if (head_width_) all_slots_.push_back(*head_width_);
  }

  const std::vector<Slot>& slots() const override { return all_slots_; }

  std::optional<std::string> check_value(SlotKind kind, const json& v) const override {
    if (kind == SlotKind::Width) {
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 4096)
        return "a width is an integer in [1, 4096], got " + json_excerpt(v);
      return std::nullopt;
    }
    const auto op = parse_chain_op(v);
    if (!op) return "'" + label_of(v) + "' is not a layer op: " + kChainOpGrammar;
    if (kind == SlotKind::ChainOpNoSkip && op->kind == ChainOp::Skip)
      return "the first layer of a stage changes width or resolution, so it cannot be skip";
    return std::nullopt;
  }

  LayerGraph lower(const Choice& c, Shape input, int classes) const override {
    LayerGraph g(input, classes);
    int x = g.conv(0, width(c, stem_width_), stem_kernel_, stem_stride_, 1, false, "stem.conv");
    x = g.batchnorm(x, "stem.bn");
    x = g.activation(stem_act_, x, "stem.act");
    for (size_t s = 0; s < stages_.size(); ++s) {
      const Stage& st = stages_[s];
      const std::string sname = "stage" + std::to_string(s + 1);
      const int w = width(c, st.width);
      int stride = st.stride;
      if (stride > 1 && st.downsample != "conv") {
        x = st.downsample == "max" ? g.maxpool(x, stride, stride, 0, sname + ".pool")
                                   : g.avgpool(x, stride, stride, 0, false, sname + ".pool");
        stride = 1;
      }
      for (size_t l = 0; l < st.layers.size(); ++l) {
        const ChainOp op = *parse_chain_op(c.value(st.layers[l]));
        x = layer(g, x, op, w, l == 0 ? stride : 1, st.act,
                  sname + ".layer" + std::to_string(l + 1));
      }
    }
    if (head_width_) {
      x = g.conv(x, width(c, *head_width_), 1, 1, 1, false, "head.conv");
      x = g.batchnorm(x, "head.bn");
      x = g.activation(head_act_, x, "head.act");
    }
    x = g.global_avgpool(x, "head.pool");
    if (dropout_ > 0) x = g.dropout(x, dropout_, "head.dropout");
    g.linear(x, classes, true, "head.linear");
    return g;
  }

  // Skip layers removed: [conv, skip, sep] and [conv, sep, skip] are one network.
  std::string equivalence_key(const Choice& c) const override {
    std::string k = "stem=" + label_of(c.value(stem_width_));
    for (size_t s = 0; s < stages_.size(); ++s) {
      k += "|s" + std::to_string(s + 1) + "=" + label_of(c.value(stages_[s].width)) + ":";
      bool first = true;
      for (const Slot& l : stages_[s].layers) {
        if (parse_chain_op(c.value(l))->kind == ChainOp::Skip) continue;
        k += (first ? "" : ",") + label_of(c.value(l));
        first = false;
      }
    }
    if (head_width_) k += "|head=" + label_of(c.value(*head_width_));
    return k;
  }

 private:
  static constexpr std::initializer_list<const char*> kActs = {"relu", "relu6", "hswish"};

  static int width(const Choice& c, const Slot& s) { return c.value(s).get<int>(); }

  static int squeeze_excitation(LayerGraph& g, int x, const std::string& name) {
    const int ch = g.layer(x).shape.c;
    const int reduced = std::max(8, (ch / 4 + 4) / 8 * 8);
    int s = g.global_avgpool(x, name + ".pool");
    s = g.conv(s, reduced, 1, 1, 1, true, name + ".reduce");
    s = g.activation(Op::Relu, s, name + ".relu");
    s = g.conv(s, ch, 1, 1, 1, true, name + ".expand");
    s = g.activation(Op::HSigmoid, s, name + ".gate");
    return g.mul(x, s, name + ".scale");
  }

  static int layer(LayerGraph& g, int x, const ChainOp& op, int out, int stride, Op act,
                   const std::string& name) {
    const int in = g.layer(x).shape.c;
    switch (op.kind) {
      case ChainOp::Skip:
        return x;
      case ChainOp::Conv: {
        int y = g.conv(x, out, op.k, stride, 1, false, name + ".conv");
        y = g.batchnorm(y, name + ".bn");
        return g.activation(act, y, name + ".act");
      }
      case ChainOp::Sep: {
        int y = g.conv(x, in, op.k, stride, in, false, name + ".dw.conv");
        y = g.batchnorm(y, name + ".dw.bn");
        y = g.activation(act, y, name + ".dw.act");
        y = g.conv(y, out, 1, 1, 1, false, name + ".pw.conv");
        y = g.batchnorm(y, name + ".pw.bn");
        return g.activation(act, y, name + ".pw.act");
      }
      case ChainOp::MB: {
        const int hidden = in * op.e;
        int y = x;
        if (op.e != 1) {
          y = g.conv(y, hidden, 1, 1, 1, false, name + ".expand.conv");
          y = g.batchnorm(y, name + ".expand.bn");
          y = g.activation(act, y, name + ".expand.act");
        }
        y = g.conv(y, hidden, op.k, stride, hidden, false, name + ".dw.conv");
        y = g.batchnorm(y, name + ".dw.bn");
        y = g.activation(act, y, name + ".dw.act");
        if (op.se) y = squeeze_excitation(g, y, name + ".se");
        y = g.conv(y, out, 1, 1, 1, false, name + ".project.conv");
        y = g.batchnorm(y, name + ".project.bn");
        if (stride == 1 && in == out) y = g.add({x, y}, name + ".add");
        return y;
      }
    }
    return x;
  }

  Slot stem_width_;
  int stem_kernel_ = 3, stem_stride_ = 1;
  Op stem_act_ = Op::Relu;
  std::vector<Stage> stages_;
  std::optional<Slot> head_width_;
  Op head_act_ = Op::Relu;
  float dropout_ = 0;
  std::vector<Slot> all_slots_;
};

}  // namespace

std::unique_ptr<Skeleton> make_chain_skeleton(
    const Node& n, const std::function<int(const Node&, const std::string&)>& index) {
  return std::make_unique<ChainSkeleton>(n, index);
}

}  // namespace minas::detail
