#pragma once
// Random images and labels of a given shape: data for tests of training
// mechanics (determinism, resume, data parallel, GPU against CPU), not of
// accuracy: `n` training and `n` test images.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

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

// synthetic() of 1 x 12 x 12 images and 10 classes as a folder of the four
// IDX files a data set name can point at (the training images gzipped when
// asked); the folder is created.
inline void write_idx_folder(const std::string& dir, size_t n, uint64_t seed,
                             data::Compression train = data::Compression::None) {
  std::filesystem::create_directories(dir);
  const data::TrainTest d = synthetic({1, 12, 12}, 10, n, seed);
  data::write_idx(d.train, dir + "/train-images-idx3-ubyte", dir + "/train-labels-idx1-ubyte",
                  train);
  data::write_idx(d.test, dir + "/t10k-images-idx3-ubyte", dir + "/t10k-labels-idx1-ubyte");
}

}  // namespace minas::test
