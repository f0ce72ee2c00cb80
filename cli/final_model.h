#pragma once
// The end of a one-click search: the best architecture by validation
// accuracy retrained with the full recipe on the training and validation
// images together, evaluated once on the test set, and exported to a folder
// (the architecture as JSON, the weights as a minas checkpoint, an ONNX model
// checked by ONNX's checker and against the runtime's outputs, a markdown
// report) with model.json: what `minas predict` needs to use it (the space
// and architecture, the input shape, the normalization, the class names).
#include <string>
#include <vector>

#include "searchspace/space.h"
#include "trainer/recipe.h"

namespace minas::cli {

struct FinalOptions {
  std::string db, experiment;            // the store and the experiment searched
  std::string data;                      // data set name or folder
  std::string out;                       // folder written: runs/<experiment> by default
  Recipe recipe;                         // the final training (val_size is set to 0)
  std::string reproduce;                 // the command that reproduces the run, for the report
  std::vector<std::string> class_names;  // for model.json; empty: "0", "1", ...
};

struct FinalResult {
  std::string arch, out;
  double val_acc = 0, test_acc = 0, latency_ms = 0, train_seconds = 0;
  int64_t params = 0, macs = 0;
  double onnx_max_diff = 0;  // largest logit difference between the ONNX file and the runtime
  int onnx_checked = 0;      // test images it was checked on
};

// Throws Error when the experiment has no finished trial.
FinalResult retrain_and_export(const Space& space, const FinalOptions& options);

}  // namespace minas::cli
