#pragma once
// The per-target latency model of minas adapt: a cheap estimate of a network's batch-1 latency
// on the customer's deployment target (NetMode::latency: batch norm folded into convolutions,
// activations fused), so that candidates far over a latency budget are dropped before they are
// trained. The estimate only filters: whether a network meets the budget is always decided by a
// measurement on the target (measure_target_latency, or the latency a trial reports).
//
// The lookup table. A network's layers are grouped by kind into a small fixed table of work
// amounts (latency_features, names in latency_feature_names, in this order):
//   dense_conv_mmacs        MACs / 1e6 of convolutions with groups 1 and kernel > 1
//   pointwise_conv_mmacs    MACs / 1e6 of convolutions with groups 1 and kernel 1
//   grouped_conv_mmacs      MACs / 1e6 of convolutions with groups > 1 (depthwise included)
//   linear_mmacs            MACs / 1e6 of linear layers
//   elementwise_melements   elements / 1e6 read and written (the sum of the input tensors'
//                           elements and the output's) by the layers that do no MACs but run
//                           as their own primitive: MaxPool, AvgPool, GlobalAvgPool, Add,
//                           Concat, Mul, and the BatchNorm and activation layers that are not
//                           folded away (below)
//   primitives              the number of layers that run as their own primitive: Conv,
//                           Linear, the layers of elementwise_melements (a per-call overhead)
//   constant                1 (the per-network overhead: input copy, logits, dispatch)
// all of one sample (batch 1). The latency is the table's dot product with per-target
// coefficients (ms per unit), all non-negative. What is folded away follows the CPU backend's
// latency mode: a BatchNorm that is the only consumer of a Conv goes into the convolution, and a
// Relu, Relu6 or HSwish that is the only consumer of such a BatchNorm becomes its post-op; a
// Relu that is the only consumer of any other BatchNorm runs inside it (fuse_norm_relu).
// Identity and Dropout are aliases; Input and Zero cost nothing. (The GPU backend's latency mode
// folds nothing; the table stays the same and the coefficients of a GPU target absorb it.)
//
// Calibration. The coefficients of a target come from whole-network batch-1 measurements on that
// same target: the caller gathers pairs (latency_features(graph), measured ms), normally from the
// experiment store (the latency_ms of trials measured on that target) topped up with
// measure_target_latency, and LatencyModel::fit finds the non-negative coefficients that
// minimize the squared relative error sum_i ((features_i . c - ms_i) / ms_i)^2 (so a 0.1 ms
// network counts as much as a 10 ms one). A kind of work that no calibration network has gets
// coefficient 0: calibrate on networks like the ones to be filtered.
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "searchspace/layer_graph.h"
#include "trainer/backends.h"

namespace minas::adapt {

// Where the network is to run: "cpu" (one thread), "cpu:THREADS" (1..4096) or "cuda:N"
// (N 0..999).
struct Target {
  std::string device;  // "cpu" or "cuda:N"
  int threads = 0;     // CPU threads; 0 for a GPU
  std::string text;    // canonical: "cpu:1", "cpu:8", "cuda:0"
};

// Throws Error("--target TEXT", "a target is cpu, cpu:THREADS or cuda:N") for anything else.
Target parse_target(const std::string& text);

// The table of the file comment for g, in latency_feature_names() order.
std::vector<double> latency_features(const LayerGraph& g);
const std::vector<std::string>& latency_feature_names();

// min |A x - b|^2 + ridge |D x|^2 over x >= 0 (Lawson-Hanson active set on the normal equations),
// where D scales each column of A to unit norm, so the ridge is relative to each column and only
// there for stability: an all-zero column gets x = 0. Rows of A must all have one length.
std::vector<double> nonnegative_least_squares(const std::vector<std::vector<double>>& a,
                                              const std::vector<double>& b, double ridge = 1e-10);

class LatencyModel {
 public:
  LatencyModel() = default;  // uncalibrated: 0 samples, predict throws

  // Fits the coefficients (see the file comment) to rows of latency_features and batch-1
  // milliseconds measured on one target. Throws Error when there are fewer than 2 samples, when
  // the sizes do not match (rows vs measurements, a row vs the table), when a feature is not
  // finite and non-negative, or when a measurement is not finite and positive.
  static LatencyModel fit(const std::vector<std::vector<double>>& features,
                          const std::vector<double>& measured_ms);

  // Estimated batch-1 milliseconds. Throws Error when the model is uncalibrated or the features
  // are not a row of the table.
  double predict(const std::vector<double>& features) const;
  double predict(const LayerGraph& g) const;

  bool calibrated() const { return samples_ > 0; }
  size_t samples() const { return samples_; }
  // Per feature, latency_feature_names() order, ms per unit; all >= 0.
  const std::vector<double>& coefficients() const { return coefficients_; }
  // The median of |predicted - measured| / measured over the calibration samples: leave-one-out
  // (each sample predicted by a model fitted to the others) when there are 4 samples or more,
  // in-sample otherwise. NaN when uncalibrated.
  double median_relative_error() const { return median_relative_error_; }

  // {"coefficients": {feature name: coefficient}, "samples": n, "median_relative_error": e}
  // (e null when uncalibrated).
  nlohmann::json to_json() const;
  // Throws Error (where, then the key) unless every feature of the table has a finite,
  // non-negative coefficient and no other name does, and samples is 0 or at least 2.
  static LatencyModel from_json(const nlohmann::json& j, const std::string& where);

 private:
  std::vector<double> coefficients_;
  size_t samples_ = 0;
  double median_relative_error_ = std::numeric_limits<double>::quiet_NaN();
};

// The batch-1 latency of g on `backend` in ms: the model built with a fixed seed (the weights do
// not change the work, so not the latency), compiled for NetMode::latency at batch 1, then timed
// as measure_latency times batch 1 (5 warm-up runs, the median of max(runs, 1) timed ones), but
// without measure_latency's batch-64 half, which costs some 64 times as much.
double measure_batch1_latency(const LayerGraph& g, Backend& backend, int runs = 30);

// The same on target t: make_backend(t.device, t.threads). Throws Error when the target's
// backend is not in this build.
double measure_target_latency(const LayerGraph& g, const Target& t, int runs = 30);

}  // namespace minas::adapt
