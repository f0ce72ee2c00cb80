// ONNX export: architectures of every built-in space (every op the layer
// graph has) exported, accepted by ONNX's checker, and run by the evaluator
// of our own to the runtime's logits.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "export/onnx.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "trainer/network.h"

using namespace minas;

namespace {

void check_export(const Space& space, const Arch& arch, const std::string& what) {
  CAPTURE(what);
  Model model(space.lower(arch), 3);
  // Running statistics that are not the initial 0 and 1, so batch norm counts.
  Rng rng(4);
  for (Param& b : model.buffers())
    for (float& v : b.value) v = static_cast<float>(0.5 + rng.uniform());
  const test::TempDir dir("onnx");
  const std::string path = dir.file("model.onnx");
  onnx_export::write(model, "test", path);
  const Shape in = model.graph().input_shape();
  const int n = 3;
  std::vector<float> x(static_cast<size_t>(n) * in.elements());
  for (float& v : x) v = static_cast<float>(rng.uniform() * 2 - 1);
  std::vector<float> ours(static_cast<size_t>(n) * model.graph().classes());
  make_cpu_backend(1)->compile(model, n, NetMode::eval, {})->infer(x.data(), ours.data());
  const std::vector<float> theirs = onnx_export::run(path, x, n);
  REQUIRE(theirs.size() == ours.size());
  double diff = 0, scale = 1;
  for (size_t k = 0; k < ours.size(); ++k) {
    diff = std::max(diff, std::fabs(static_cast<double>(ours[k]) - theirs[k]));
    scale = std::max(scale, std::fabs(static_cast<double>(ours[k])));
  }
  CHECK(diff <= 1e-4 * scale);
}

}  // namespace

TEST_CASE("onnx: exports of every space pass ONNX's checker and compute the runtime's logits") {
  for (const std::string ref :
       {"small", "nb201:cells=1,channels=8,input=1x28x28", "mobile:input=3x32x32"}) {
    const Space space = Space::load(ref);
    Rng rng(6);
    for (int k = 0; k < 4; ++k) {
      const Arch a = space.sample(rng);
      check_export(space, a, ref + " " + space.key(a));
    }
  }
  // NAS-Bench-201's cell with "none" edges: Zero layers become ConstantOfShape.
  const Space nb = Space::load("nb201:cells=1,channels=8,input=1x28x28");
  check_export(
      nb, nb.parse_key("|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"),
      "nb201 with none edges");
}

TEST_CASE("onnx: the evaluator refuses what is not an ONNX model") {
  const test::TempDir dir("onnx-bad");
  const std::string path = dir.file("bad.onnx");
  std::ofstream(path) << "not a protobuf at all";
  CHECK_THROWS_AS(onnx_export::run(path, {}, 1), Error);
}
