#include "trainer/step_time.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "searchspace/error.h"
#include "searchspace/rng.h"

namespace minas {

double measure_step_seconds(const Model& model, Backend& backend, const Recipe& recipe, int steps) {
  if (steps < 1) throw Error("measure_step_seconds", "needs at least one step");
  Model copy = model;
  NetworkOptions no;
  no.label_smoothing = static_cast<float>(recipe.label_smoothing);
  no.seed = recipe.seed;
  no.precision = recipe.precision;
  const int batch = static_cast<int>(recipe.batch);
  auto net = backend.compile(copy, batch, NetMode::train, no);
  const LayerGraph& g = copy.graph();
  Rng rng(recipe.seed);
  std::vector<float> x(static_cast<size_t>(batch) *
                       static_cast<size_t>(g.input_shape().elements()));
  for (float& v : x) v = static_cast<float>(2 * rng.uniform() - 1);
  std::vector<int32_t> y(static_cast<size_t>(batch));
  for (int32_t& v : y) v = static_cast<int32_t>(rng.below(static_cast<uint64_t>(g.classes())));
  net->train_step(x.data(), y.data());
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    net->train_step(x.data(), y.data());
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return std::max(times[times.size() / 2], 1e-9);
}

}  // namespace minas
