#pragma once
// Random images and labels of a given shape: data for tests of training
// mechanics (determinism, resume, data parallel, GPU against CPU), not of
// accuracy. The same `n` images serve as training and test set.
#include <cstddef>
#include <cstdint>

#include "searchspace/rng.h"
#include "trainer/data.h"

namespace minas::test {

inline data::TrainTest synthetic(Shape shape, int classes, size_t n, uint64_t seed = 5) {
  data::TrainTest d;
  Rng rng(seed);
  for (data::Dataset* ds : {&d.train, &d.test}) {
    ds->source = "synthetic";
    ds->shape = shape;
    ds->classes = classes;
    ds->labels.resize(n);
    ds->pixels.resize(n * static_cast<size_t>(shape.elements()));
    for (auto& l : ds->labels) l = static_cast<uint8_t>(rng.below(static_cast<uint64_t>(classes)));
    for (auto& p : ds->pixels) p = static_cast<uint8_t>(rng.below(256));
  }
  return d;
}

}  // namespace minas::test
