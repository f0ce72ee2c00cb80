// The "cell" skeleton: the NAS-Bench-201 macro skeleton around a searched
// cell. Stem conv 3x3 + BN; `stages` stages of `cells` cells at widths
// channels * 2^s, joined by residual reduction blocks (ReLU-conv3x3/2-BN,
// ReLU-conv3x3-BN, shortcut avgpool2/2 + conv1x1); then BN, ReLU, global
// pool and a linear classifier. The cell is a DAG of `nodes` nodes: node j is
// the sum over i < j of op(j<-i)(node i); node 0 is the cell's input, the last
// node its output. The key is the benchmark's own cell string.
#include <algorithm>
#include <map>

#include "searchspace/skeleton.h"

namespace minas::detail {
namespace {

struct CellOp {
  enum Kind { None, Skip, Conv, AvgPool, MaxPool } kind = None;
  int k = 0;
};

constexpr const char* kCellOpGrammar =
    "cell ops are none, skip_connect, nor_conv_KxK, avg_pool_KxK, max_pool_KxK (K odd, 1..11)";

std::optional<CellOp> parse_cell_op(const json& v) {
  if (!v.is_string()) return std::nullopt;
  const std::string s = v.get<std::string>();
  if (s == "none") return CellOp{CellOp::None, 0};
  if (s == "skip_connect") return CellOp{CellOp::Skip, 0};
  const std::pair<const char*, CellOp::Kind> prefixes[] = {
      {"nor_conv_", CellOp::Conv}, {"avg_pool_", CellOp::AvgPool}, {"max_pool_", CellOp::MaxPool}};
  for (const auto& [prefix, kind] : prefixes) {
    const std::string p = prefix;
    if (s.rfind(p, 0) != 0) continue;
    const std::string rest = s.substr(p.size());  // "KxK"
    const size_t x = rest.find('x');
    if (x == std::string::npos || x == 0) return std::nullopt;
    const std::string a = rest.substr(0, x), b = rest.substr(x + 1);
    if (a != b || a.size() > 2 || !std::all_of(a.begin(), a.end(), ::isdigit)) return std::nullopt;
    const int k = std::stoi(a);
    if (k < 1 || k > 11 || k % 2 == 0) return std::nullopt;
    return CellOp{kind, k};
  }
  return std::nullopt;
}

class CellSkeleton final : public Skeleton {
 public:
  CellSkeleton(const Node& n, const std::function<int(const Node&, const std::string&)>& index) {
    n.only({"type", "channels", "cells", "stages", "nodes", "edges"});
    channels_ = n.at("channels").integer(1, 4096);
    cells_ = n.at("cells").integer(1, 100);
    stages_ = n.at("stages").integer(1, 6);
    nodes_ = n.at("nodes").integer(2, 8);
    const Node edges = n.at("edges");
    const size_t want = static_cast<size_t>(nodes_ * (nodes_ - 1) / 2);
    edges.require_array(0);
    if (edges.size() != want)
      edges.fail("a " + std::to_string(nodes_) + "-node cell has " + std::to_string(want) +
                 " edges (1<-0, 2<-0, 2<-1, 3<-0, ...), got " + std::to_string(edges.size()));
    for (size_t e = 0; e < want; ++e)
      slots_.push_back(read_slot(edges.at(e), SlotKind::CellOp, index));
  }

  const std::vector<Slot>& slots() const override { return slots_; }

  std::optional<std::string> check_value(SlotKind, const json& v) const override {
    if (!parse_cell_op(v)) return "'" + label_of(v) + "' is not a cell op: " + kCellOpGrammar;
    return std::nullopt;
  }

  LayerGraph lower(const Choice& c, Shape input, int classes) const override {
    LayerGraph g(input, classes);
    int x = g.conv(0, channels_, 3, 1, 1, false, "stem.conv");
    x = g.batchnorm(x, "stem.bn");
    int width = channels_;
    const std::vector<CellOp> ops = edge_ops(c);
    for (int s = 0; s < stages_; ++s) {
      const std::string stage = "stage" + std::to_string(s + 1);
      if (s > 0) {
        width *= 2;
        x = reduction(g, x, width, stage + ".reduce");
      }
      for (int k = 0; k < cells_; ++k)
        x = cell(g, x, width, ops, stage + ".cell" + std::to_string(k + 1));
    }
    x = g.batchnorm(x, "head.bn");
    x = g.activation(Op::Relu, x, "head.relu");
    x = g.global_avgpool(x, "head.pool");
    g.linear(x, classes, true, "head.linear");
    return g;
  }

  std::string key(const Choice& c) const override {
    std::string k;
    size_t e = 0;
    for (int j = 1; j < nodes_; ++j) {
      if (j > 1) k += '+';
      k += '|';
      for (int i = 0; i < j; ++i, ++e)
        k += label_of(c.value(slots_[e])) + "~" + std::to_string(i) + "|";
    }
    return k;
  }

  Arch parse_key(std::string_view key, const std::vector<Decision>& ds) const override {
    const std::string where = "arch key '" + std::string(key) + "'";
    auto bad = [&](const std::string& why) {
      return Error(where, why + "; a " + std::to_string(nodes_) +
                              "-node cell key looks like |op~0|+|op~0|op~1|+...");
    };
    std::vector<std::string> groups;
    size_t start = 0;
    while (true) {
      const size_t plus = key.find('+', start);
      groups.emplace_back(key.substr(start, plus == std::string_view::npos ? plus : plus - start));
      if (plus == std::string_view::npos) break;
      start = plus + 1;
    }
    if (groups.size() != static_cast<size_t>(nodes_ - 1))
      throw bad("has " + std::to_string(groups.size()) + " '+'-separated node(s), the cell has " +
                std::to_string(nodes_ - 1));
    std::vector<int64_t> chosen(ds.size(), -1);
    size_t e = 0;
    for (int j = 1; j < nodes_; ++j) {
      const std::string& gtext = groups[j - 1];
      if (gtext.size() < 2 || gtext.front() != '|' || gtext.back() != '|')
        throw bad("node " + std::to_string(j) + " '" + gtext + "' is not enclosed in '|'");
      std::vector<std::string> items;
      size_t p = 1;
      while (p < gtext.size()) {
        const size_t q = gtext.find('|', p);
        items.push_back(gtext.substr(p, q - p));
        p = q + 1;
      }
      if (items.size() != static_cast<size_t>(j))
        throw bad("node " + std::to_string(j) + " has " + std::to_string(items.size()) +
                  " input edge(s), it needs " + std::to_string(j));
      for (int i = 0; i < j; ++i, ++e) {
        const std::string suffix = "~" + std::to_string(i);
        const std::string& item = items[i];
        if (item.size() <= suffix.size() ||
            item.compare(item.size() - suffix.size(), suffix.size(), suffix) != 0)
          throw bad("edge '" + item + "' of node " + std::to_string(j) + " must end in '" + suffix +
                    "'");
        const std::string op = item.substr(0, item.size() - suffix.size());
        const Slot& s = slots_[e];
        const std::string edge = std::to_string(j) + "<-" + std::to_string(i);
        if (s.decision < 0) {
          if (label_of(s.literal) != op)
            throw Error(where, "edge " + edge + " is fixed to '" + label_of(s.literal) +
                                   "' in this space, not '" + op + "'");
          continue;
        }
        const Decision& d = ds[s.decision];
        int64_t o = -1;
        for (size_t k = 0; k < d.options.size(); ++k)
          if (d.label(k) == op) o = static_cast<int64_t>(k);
        if (o < 0) {
          std::string opts;
          for (size_t k = 0; k < d.options.size(); ++k) opts += (k ? ", " : "") + d.label(k);
          throw Error(where, "edge " + edge + ": '" + op + "' is not an option of decision '" +
                                 d.name + "' (options: " + opts + ")");
        }
        if (chosen[s.decision] >= 0 && chosen[s.decision] != o)
          throw Error(where,
                      "edge " + edge + " disagrees with another edge of decision '" + d.name + "'");
        chosen[s.decision] = o;
      }
    }
    Arch a;
    for (int64_t o : chosen) a.choice.push_back(static_cast<uint32_t>(o));
    return a;
  }

  // The cell as an expression: each node a sorted multiset of terms, a term
  // "(input terms)@op"; skip passes its source's terms through, none and
  // sources that are zero add nothing. Equal keys mean equal functions up to
  // node relabelling, dead edges and the order of sums (NAS-Bench-201's own
  // unique-cell string does the same without merging nested sums, so it sees
  // 6,466 classes where this sees fewer). Like it, this treats a conv of an
  // all-zero node as zero, ignoring the BN shift such a branch could learn.
  std::string equivalence_key(const Choice& c) const override {
    const std::vector<CellOp> ops = edge_ops(c);
    std::vector<std::vector<std::string>> node(static_cast<size_t>(nodes_));
    node[0] = {"x"};
    size_t e = 0;
    for (int j = 1; j < nodes_; ++j) {
      std::vector<std::string>& terms = node[j];
      for (int i = 0; i < j; ++i, ++e) {
        if (ops[e].kind == CellOp::None || node[i].empty()) continue;
        if (ops[e].kind == CellOp::Skip) {
          terms.insert(terms.end(), node[i].begin(), node[i].end());
          continue;
        }
        std::string t = "(";
        for (size_t k = 0; k < node[i].size(); ++k) {
          if (k) t += '+';
          t += node[i][k];
        }
        t += ")@";
        t += label_of(c.value(slots_[e]));
        terms.push_back(std::move(t));
      }
      std::sort(terms.begin(), terms.end());
    }
    const auto& out = node.back();
    if (out.empty()) return "zero";
    std::string k;
    for (size_t i = 0; i < out.size(); ++i) {
      if (i) k += '+';
      k += out[i];
    }
    return k;
  }

 private:
  std::vector<CellOp> edge_ops(const Choice& c) const {
    std::vector<CellOp> ops;
    for (const Slot& s : slots_) ops.push_back(*parse_cell_op(c.value(s)));
    return ops;
  }

  // Which nodes the input reaches, and which reach the output, through edges that are not none.
  std::pair<std::vector<bool>, std::vector<bool>> liveness(const std::vector<CellOp>& ops) const {
    std::vector<bool> from_input(nodes_, false), to_output(nodes_, false);
    from_input[0] = true;
    to_output[nodes_ - 1] = true;
    auto edge = [&](int i, int j) { return ops[static_cast<size_t>(j * (j - 1) / 2 + i)]; };
    for (int j = 1; j < nodes_; ++j)
      for (int i = 0; i < j; ++i)
        if (edge(i, j).kind != CellOp::None && from_input[i]) from_input[j] = true;
    for (int i = nodes_ - 2; i >= 0; --i)
      for (int j = i + 1; j < nodes_; ++j)
        if (edge(i, j).kind != CellOp::None && to_output[j]) to_output[i] = true;
    return {from_input, to_output};
  }

  static int reduction(LayerGraph& g, int x, int width, const std::string& name) {
    int a = g.activation(Op::Relu, x, name + ".a.relu");
    a = g.conv(a, width, 3, 2, 1, false, name + ".a.conv");
    a = g.batchnorm(a, name + ".a.bn");
    int b = g.activation(Op::Relu, a, name + ".b.relu");
    b = g.conv(b, width, 3, 1, 1, false, name + ".b.conv");
    b = g.batchnorm(b, name + ".b.bn");
    int sc = g.avgpool(x, 2, 2, 0, false, name + ".shortcut.pool");
    sc = g.conv(sc, width, 1, 1, 1, false, name + ".shortcut.conv");
    return g.add({sc, b}, name + ".add");
  }

  // Lowers one cell faithfully, except that none-edges are left out of their
  // sums (adding zeros changes nothing) and nodes that cannot reach the output
  // are not built (they change neither the output nor any gradient).
  int cell(LayerGraph& g, int x, int width, const std::vector<CellOp>& ops,
           const std::string& name) const {
    const auto to_output = liveness(ops).second;
    std::vector<int> node(nodes_, -1), relu(nodes_, -1);
    node[0] = x;
    size_t e = 0;
    for (int j = 1; j < nodes_; ++j) {
      std::vector<int> terms;
      for (int i = 0; i < j; ++i, ++e) {
        const CellOp& op = ops[e];
        if (!to_output[j] || op.kind == CellOp::None) continue;
        const std::string edge = name + ".node" + std::to_string(j) + "<-" + std::to_string(i);
        switch (op.kind) {
          case CellOp::None:
            break;
          case CellOp::Skip:
            terms.push_back(node[i]);
            break;
          case CellOp::Conv: {
            // One ReLU per source node, shared by all its conv edges.
            if (relu[i] < 0)
              relu[i] =
                  g.activation(Op::Relu, node[i], name + ".node" + std::to_string(i) + ".relu");
            int y = g.conv(relu[i], width, op.k, 1, 1, false, edge + ".conv");
            terms.push_back(g.batchnorm(y, edge + ".bn"));
            break;
          }
          case CellOp::AvgPool:
            terms.push_back(g.avgpool(node[i], op.k, 1, op.k / 2, false, edge + ".avgpool"));
            break;
          case CellOp::MaxPool:
            terms.push_back(g.maxpool(node[i], op.k, 1, op.k / 2, edge + ".maxpool"));
            break;
        }
      }
      if (!to_output[j]) continue;
      const std::string nname = name + ".node" + std::to_string(j);
      if (terms.empty())
        node[j] = g.zero(g.layer(x).shape, nname + ".zero");
      else if (terms.size() == 1)
        node[j] = terms[0];
      else
        node[j] = g.add(terms, nname + ".add");
    }
    return node[nodes_ - 1];
  }

  int channels_ = 0, cells_ = 0, stages_ = 0, nodes_ = 0;
  std::vector<Slot> slots_;
};

}  // namespace

std::unique_ptr<Skeleton> make_cell_skeleton(
    const Node& n, const std::function<int(const Node&, const std::string&)>& index) {
  return std::make_unique<CellSkeleton>(n, index);
}

}  // namespace minas::detail
