// `minas predict --model DIR IMAGES...`: classifies image files with a model
// exported by `minas search` (and later `minas adapt`): one line per image,
// PATH, class, probability, tab-separated.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapt/images.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "searchspace/text_file.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/train.h"

namespace minas::cli {
namespace {

struct PredictFlags {
  std::string model;
  std::vector<std::string> images;
  int threads = 1;
};

nlohmann::json read_model_json(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(path.string(),
                "cannot be read: --model takes a folder that minas search "
                "exported (arch.json, model.ckpt, model.json)");
  return read_json(read_text_file(path.string(), "model description", JsonLimits{}.max_bytes),
                   path.string());
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto f = std::make_shared<PredictFlags>();
  CLI::App* pr = app.add_subcommand(
      "predict", "Classify image files with an exported model: PATH, class, probability per line");
  pr->add_option("--model", f->model, "Folder of an exported model (runs/EXPERIMENT)")->required();
  pr->add_option("images", f->images, "Image files (PNG, JPEG, BMP, PGM)")->required();
  pr->add_option("--threads", f->threads, "CPU threads")->default_val(1)->check(in_range(1, 4096));
  pr->callback([f] {
    namespace fs = std::filesystem;
    const fs::path dir(f->model);
    const std::string where = (dir / "model.json").string();
    const nlohmann::json info = read_model_json(dir / "model.json");
    std::string space_ref, arch_key;
    adapt::InputChoice in;
    data::Normalization norm;
    std::vector<std::string> classes;
    try {
      space_ref = info.at("space_ref").get<std::string>();
      arch_key = info.at("arch").get<std::string>();
      in.channels = info.at("input").at(0).get<int>();
      in.height = info.at("input").at(1).get<int>();
      in.width = info.at("input").at(2).get<int>();
      norm.mean = info.at("normalization").at("mean").get<std::vector<float>>();
      norm.stddev = info.at("normalization").at("stddev").get<std::vector<float>>();
      classes = info.at("classes").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(where, "not a model description: " + printable_excerpt(e.what(), 200));
    }
    const Space space = Space::load(space_ref);
    const Arch arch = space.parse_key(arch_key);
    Model model(space.lower(arch), 0);
    if (model.graph().classes() != static_cast<int>(classes.size()) ||
        model.graph().input_shape() != Shape{in.channels, in.height, in.width})
      throw Error(where, "its input or classes do not match the architecture's network");
    const std::string ckpt = (dir / "model.ckpt").string();
    const Checkpoint checkpoint = load_checkpoint(ckpt);
    check_checkpoint(checkpoint, space.name(), space.key(arch), checkpoint_specs(model), ckpt);
    load_weights(model, checkpoint);
    auto backend = make_cpu_backend(f->threads);
    auto net = backend->compile(model, 1, NetMode::eval, {});

    const size_t k = classes.size();
    std::vector<float> x(static_cast<size_t>(in.channels) * in.height * in.width), logits(k);
    const std::vector<uint32_t> first = {0};
    for (const std::string& path : f->images) {
      adapt::ImageRecord rec = adapt::read_image(path);
      if (!rec.ok()) throw Error(path, rec.error);
      rec.label = 0;
      const data::Dataset one = adapt::to_dataset({rec}, {0}, static_cast<int>(k), in, path);
      data::normalize(one, first, norm, x.data());
      net->infer(x.data(), logits.data());
      const size_t best =
          static_cast<size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      double sum = 0;
      for (float l : logits) sum += std::exp(static_cast<double>(l - logits[best]));
      std::printf("%s\t%s\t%.4f\n", path.c_str(), classes[best].c_str(), 1.0 / sum);
    }
  });
}

}  // namespace minas::cli
