#pragma once
// ONNX export of a trained network, and an evaluator of our own for the
// exported file, written from the ONNX operator specification, so that the
// export is checked by running it independently of the trainer's runtime.
#include <string>
#include <vector>

#include "trainer/model.h"

namespace minas::onnx_export {

// The network in eval form (batch norm with running statistics, dropout as
// identity) as an ONNX model, opset 14, input "input" (N x C x H x W float,
// N free) and output "logits" (N x classes). Written to `path`, after ONNX's
// own checker accepted it (its complaint is an Error naming the file).
void write(const Model& model, const std::string& name, const std::string& path);

// Runs the ONNX file at `path` on a batch (n x C x H x W floats) and returns
// its output; supports the operators write() emits. Throws Error for any
// other operator or malformed file.
std::vector<float> run(const std::string& path, const std::vector<float>& input, int n);

}  // namespace minas::onnx_export
