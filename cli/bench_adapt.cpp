// `minas bench adapt-data`: a customer's image folders made from a data set
// of the store's kind (Fashion-MNIST by default): chosen classes, so many
// images each, as PNG files in one sub-folder per class. For the warm-start
// experiment (experiments/adapt-warm-start.md) and for trying minas adapt.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapt/images.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "searchspace/error.h"
#include "trainer/data.h"

namespace minas::cli {
namespace {

struct AdaptDataFlags {
  std::string data = "fashion-mnist", out, test_out;
  std::vector<int> classes = {0, 1, 8, 9};
  int per_class = 200, test_per_class = 50, skip = 0;
};

// Fashion-MNIST's class names (Xiao et al. 2017), as folder names.
const char* const kFashionNames[] = {"tshirt", "trouser", "pullover", "dress", "coat",
                                     "sandal", "shirt",   "sneaker",  "bag",   "boot"};

void write_classes(const data::Dataset& ds, const AdaptDataFlags& f, const std::string& dir,
                   int per_class, int skip) {
  namespace fs = std::filesystem;
  const int c = ds.shape.c, h = ds.shape.h, w = ds.shape.w;
  if (c != 1 && c != 3) throw Error(f.data, "images of 1 or 3 channels only");
  std::map<int, int> written, skipped;
  std::vector<uint8_t> hwc(static_cast<size_t>(c) * h * w);
  for (size_t i = 0; i < ds.size(); ++i) {
    const int label = ds.labels[i];
    if (std::find(f.classes.begin(), f.classes.end(), label) == f.classes.end()) continue;
    if (skipped[label] < skip) {
      ++skipped[label];
      continue;
    }
    if (written[label] >= per_class) continue;
    const std::string name =
        f.data == "fashion-mnist" && label < 10 ? kFashionNames[label] : std::to_string(label);
    fs::create_directories(fs::path(dir) / name);
    const uint8_t* chw = ds.image(i);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k)
          hwc[(static_cast<size_t>(y) * w + x) * c + k] =
              chw[(static_cast<size_t>(k) * h + y) * w + x];
    adapt::write_png((fs::path(dir) / name / (std::to_string(i) + ".png")).string(), w, h, c,
                     hwc.data());
    ++written[label];
  }
  for (int label : f.classes)
    if (written[label] == 0)
      throw Error(f.data, "has no image of class " + std::to_string(label) + " to write");
}

}  // namespace

void add_adapt_benchmark(CLI::App& bench) {
  auto f = std::make_shared<AdaptDataFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "adapt-data",
      "Write a customer's image folders (PNG, a sub-folder per class) from a data set");
  cmd->add_option("--data", f->data, "Data set (name or IDX folder)")->default_val("fashion-mnist");
  cmd->add_option("--out", f->out, "Folder for the training images (must be new or empty)")
      ->required();
  cmd->add_option("--test-out", f->test_out, "Folder for test images from the test set");
  cmd->add_option("--classes", f->classes, "Class labels to keep")
      ->delimiter(',')
      ->check(in_range(0, 255));
  cmd->add_option("--per-class", f->per_class, "Training images per class")
      ->default_val(200)
      ->check(in_range(1, 1000000));
  cmd->add_option("--test-per-class", f->test_per_class, "Test images per class")
      ->default_val(50)
      ->check(in_range(1, 1000000));
  cmd->add_option("--skip", f->skip, "Images of each class passed over first (another sample)")
      ->default_val(0)
      ->check(in_range(0, 1000000));
  cmd->callback([f] {
    if (f->classes.empty()) throw Error("--classes", "name at least one class");
    // Everything is checked before the first folder is written.
    for (const std::string& dir : {f->out, f->test_out}) {
      std::error_code ec;
      if (!dir.empty() && std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec))
        throw Error(dir, "exists and is not empty; pick a new folder");
    }
    const data::TrainTest d = data::load_dataset(f->data);
    for (int label : f->classes)
      if (label >= d.train.classes)
        throw Error("--classes", std::to_string(label) + " is not a class of " + f->data + " (" +
                                     std::to_string(d.train.classes) + " classes)");
    write_classes(d.train, *f, f->out, f->per_class, f->skip);
    if (!f->test_out.empty()) write_classes(d.test, *f, f->test_out, f->test_per_class, 0);
    std::printf("%s\n", f->out.c_str());
  });
}

}  // namespace minas::cli
