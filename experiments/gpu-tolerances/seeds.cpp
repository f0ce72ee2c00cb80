// The test accuracy the CPU backend reaches with the GPU test's short
// training (tests/gpu/test_cuda_network.cpp, "bf16 and fp16 ... within 1.5
// points"): 20,000 Fashion-MNIST training images, 4 epochs, the network
// 16|32|conv_k3|skip|64|conv_k3|skip, models seeded 0 to N-1. Build and run:
// experiments/gpu-tolerances.md.
#include <cstdio>
#include <cstdlib>

#include "searchspace/space.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/train.h"

using namespace minas;

int main(int argc, char** argv) {
  const int seeds = argc > 1 ? std::atoi(argv[1]) : 12;
  const data::TrainTest full = data::load_dataset("fashion-mnist");
  const auto tr = data::subset(data::all_indices(full.train), 20000, uint64_t{1});
  data::TrainTest d{data::gather(full.train, tr), full.test};
  d.train.source = d.test.source = "fashion-mnist";
  const Space space = Space::load("small");
  const LayerGraph graph = space.lower(space.parse_key("16|32|conv_k3|skip|64|conv_k3|skip"));
  for (int seed = 0; seed < seeds; ++seed) {
    Recipe recipe;
    recipe.set("epochs", "4", "experiment");
    Model m(graph, static_cast<uint64_t>(seed));
    auto cpu = make_cpu_backend(2);
    TrainOptions o;
    o.measure_latency = false;
    std::printf("seed %2d test_acc %.4f\n", seed, train(m, recipe, d, *cpu, o).test_acc);
    std::fflush(stdout);
  }
}
