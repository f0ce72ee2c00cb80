#pragma once
// The network with every kinked op made smooth, shapes unchanged: ReLU,
// ReLU6 and h-swish become sigmoid, max pooling average pooling. Finite
// differences through hundreds of kinks measure the kinks, not the
// gradient; the smooth twin keeps every path, alias, fan-out and format
// change of the real network, and the kinked ops are checked one by one.
#include <nlohmann/json.hpp>
#include <string>

#include "searchspace/layer_graph.h"

namespace minas::test {

inline LayerGraph smooth_twin(const LayerGraph& g) {
  nlohmann::json j = g.to_json();
  for (auto& l : j["layers"]) {
    const std::string op = l["op"];
    if (op == "relu" || op == "relu6" || op == "hswish") l["op"] = "sigmoid";
    if (op == "maxpool") {
      l["op"] = "avgpool";
      l["count_include_pad"] = false;
    }
  }
  return LayerGraph::from_json(j);
}

}  // namespace minas::test
