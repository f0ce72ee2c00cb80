// How far a rounding-level change moves the CPU backend's gradients: every
// weight and input scaled by a random factor within 1 +- REL (1e-7: up to one
// ulp), one train step each, and per network the largest change of any
// parameter gradient over that tensor's largest magnitude. The networks,
// inputs and batch are those of tests/gpu/test_cuda_network.cpp's
// whole-network case. With KINK=OP (relu, relu6, hswish, hsigmoid) that op
// becomes a sigmoid first. Build and run: experiments/gpu-tolerances.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "trainer/model.h"
#include "trainer/network.h"

using namespace minas;

namespace {

LayerGraph with_sigmoid_for(const LayerGraph& g, const char* op) {
  if (!op) return g;
  nlohmann::json j = g.to_json();
  for (auto& l : j["layers"])
    if (l["op"] == op) l["op"] = "sigmoid";
  return LayerGraph::from_json(j);
}

}  // namespace

int main(int argc, char** argv) {
  const double rel = argc > 1 ? std::atof(argv[1]) : 1e-7;
  const int batch = 4;
  for (const char* ref :
       {"small", "nb201:cells=1,channels=8,input=3x16x16", "mobile:input=3x32x32"}) {
    const Space space = Space::load(ref);
    Rng rng(5);
    for (int k = 0; k < 3; ++k) {
      const Arch a = space.sample(rng);
      const LayerGraph g = with_sigmoid_for(space.lower(a), std::getenv("KINK"));
      Rng data(11), nudge(99);
      std::vector<float> x(static_cast<size_t>(batch) * g.input_shape().elements());
      for (float& v : x) v = static_cast<float>(data.uniform() * 2 - 1);
      std::vector<int32_t> y(batch);
      for (int32_t& l : y) l = static_cast<int32_t>(data.below(static_cast<uint64_t>(g.classes())));
      auto scale = [&](float& v) { v *= static_cast<float>(1 + rel * (nudge.uniform() * 2 - 1)); };
      Model exact(g, 3), moved(g, 3);
      std::vector<float> x2 = x;
      for (float& v : x2) scale(v);
      for (auto& p : moved.params())
        for (float& v : p.value) scale(v);
      auto cpu = make_cpu_backend(1);
      NetworkOptions no;
      no.label_smoothing = 0.1f;
      cpu->compile(exact, batch, NetMode::train, no)->train_step(x.data(), y.data());
      cpu->compile(moved, batch, NetMode::train, no)->train_step(x2.data(), y.data());
      double worst = 0;
      std::string where;
      for (size_t p = 0; p < exact.params().size(); ++p) {
        const auto &ga = exact.params()[p].grad, &gb = moved.params()[p].grad;
        double largest = 1, moved_by = 0;
        for (size_t i = 0; i < ga.size(); ++i) {
          largest = std::max(largest, static_cast<double>(std::fabs(ga[i])));
          moved_by = std::max(moved_by, static_cast<double>(std::fabs(ga[i] - gb[i])));
        }
        if (moved_by / largest > worst) {
          worst = moved_by / largest;
          where = exact.params()[p].name;
        }
      }
      std::printf("%-38s %-9.3g %s\n", ref, worst, where.c_str());
    }
  }
}
