#pragma once
// Zero-cost proxies: scores of an untrained network, computed through a
// backend on one minibatch at initialization, meant to rank architectures of
// a space by the accuracy they will reach when trained (Abdelfattah et al.
// 2021, "Zero-Cost Proxies for Lightweight NAS"). Higher means predicted
// better for every proxy. Each is a deterministic function of the layer
// graph, the initialization seed and the minibatch; params and macs read the
// layer graph alone.
//
// Choices, where the papers' code leaves one:
// - naswot, grad_norm and jacob_cov run the network in train mode (batch
//   statistics), as the reference code does (it never calls eval()).
// - naswot's binary codes are those of every Relu and Relu6 layer (x > 0).
// - synflow removes batch norm (and dropout) from a copy of the network and
//   keeps every other initial weight, in absolute value, as the `synflow`
//   measure of Abdelfattah et al. does (its bn=False); it sums over conv and
//   linear weights (not biases), and reports the natural log of the sum.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "searchspace/layer_graph.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"

namespace minas {

enum class Proxy : uint8_t { naswot, synflow, grad_norm, jacob_cov, params, macs };

// One proxy as flags, tables and CSV columns name it.
struct ProxyInfo {
  Proxy proxy;
  const char* name;
  bool needs_backend;  // false: read from the layer graph alone (params, macs)
  const char* description;
};

// Every proxy, in a stable order: the single source of names and descriptions.
std::span<const ProxyInfo> proxy_table();
const ProxyInfo& proxy_info(Proxy p);
std::optional<Proxy> proxy_from_name(std::string_view name);
std::string proxy_names();  // "naswot, synflow, ...", for errors and help

// A minibatch of normalized images (n x C x H x W) and their labels.
struct ProxyBatch {
  const float* x = nullptr;
  const int32_t* y = nullptr;
  int n = 0;
};

// A minibatch that owns its images: `n` training images of a data set drawn
// with `seed`, normalized as training normalizes them (trainer/train.cpp),
// so that every candidate of a screen is scored on the same images.
struct ProxyMinibatch {
  Shape shape;
  int classes = 0;
  std::vector<float> x;
  std::vector<int32_t> y;
  ProxyBatch view() const { return {x.data(), y.data(), static_cast<int>(y.size())}; }
};
// Throws Error naming `name` when the data set has fewer than n training images.
ProxyMinibatch proxy_minibatch(const data::Dataset& train, const std::string& name, int n,
                               uint64_t seed);

// The score of `graph` by `proxy` for a network initialized from `seed`.
// Throws Error when the batch does not fit the graph (shape, labels, size).
double proxy_score(Proxy proxy, Backend& backend, const LayerGraph& graph, uint64_t seed,
                   const ProxyBatch& batch);

// The proxies on a given model (its parameters as they are; naswot, grad_norm
// and jacob_cov update its batch-norm running statistics, grad_norm its
// gradients; synflow leaves it unchanged).
//
// NASWOT (Mellor et al. 2021): log|K| with K_ij = N_A - Hamming(c_i, c_j),
// c_i the binary code (x > 0) of sample i over the N_A units of every ReLU.
// -inf when K is singular (two samples with one code).
double naswot(Backend& backend, Model& model, const ProxyBatch& batch);
// synflow (Tanaka et al. 2020): log of sum over conv and linear weights of
// |theta * dR/dtheta|, R the sum of the logits of one all-ones input through
// the network without batch norm and with |theta| for every parameter.
double synflow(Backend& backend, const Model& model);
// grad-norm: the sum over conv and linear weight tensors of the L2 norm of
// the gradient of the mean cross-entropy loss on the batch.
double grad_norm(Backend& backend, Model& model, const ProxyBatch& batch);
// jacob_cov (Mellor et al. 2020, v1 of the NASWOT paper): with J_i the
// gradient of the sum of all logits with respect to input i, and v the
// eigenvalues of the correlation matrix of the J_i,
// -sum(log(v + 1e-5) + 1 / (v + 1e-5)). NaN when some J_i is constant.
double jacob_cov(Backend& backend, Model& model, const ProxyBatch& batch);

// ---- the pieces, public for tests

// log det of a symmetric positive definite n x n matrix (row-major) by
// Cholesky; -inf when it is not positive definite (singular).
double log_det_spd(std::vector<double> a, int n);
// The eigenvalues of a symmetric n x n matrix (row-major), ascending (cyclic Jacobi).
std::vector<double> symmetric_eigenvalues(std::vector<double> a, int n);
// jacob_cov's score of n rows of `dim` values each (row-major).
double jacob_cov_score(const float* jacobians, int n, size_t dim);
// The Hamming-similarity kernel of n codes of `bits` bits, each code packed
// into `words` 64-bit words (row-major): K_ij = bits - popcount(c_i xor c_j).
std::vector<double> hamming_kernel(const std::vector<uint64_t>& codes, int n, size_t words,
                                   int64_t bits);
// The graph with every batch norm and dropout layer removed (its consumers
// read its input instead); every other layer keeps its name.
LayerGraph without_batchnorm(const LayerGraph& graph);

}  // namespace minas
