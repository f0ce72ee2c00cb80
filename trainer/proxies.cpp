#include "trainer/proxies.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "searchspace/error.h"

namespace minas {
namespace {

constexpr ProxyInfo kProxies[] = {
    {Proxy::naswot, "naswot", true,
     "log|K| of the Hamming kernel of the ReLU codes of a minibatch (Mellor et al. 2021)"},
    {Proxy::synflow, "synflow", true,
     "log of sum |theta dR/dtheta|, |theta| weights, no batch norm, all-ones input (Tanaka et al. "
     "2020)"},
    {Proxy::grad_norm, "grad_norm", true,
     "sum of the L2 norms of the conv and linear weight gradients of the loss on a minibatch"},
    {Proxy::jacob_cov, "jacob_cov", true,
     "correlation of the per-sample input Jacobians of a minibatch (Mellor et al. 2020)"},
    {Proxy::params, "params", false, "trainable parameters"},
    {Proxy::macs, "macs", false, "multiply-accumulates of one sample"},
};

// The batch fits the graph: images of its input shape, labels of its classes.
void check_batch(const LayerGraph& g, const ProxyBatch& b, bool labels, const char* proxy) {
  if (b.n < 1 || !b.x) throw Error(proxy, "needs a minibatch of at least one image");
  if (labels) {
    if (!b.y) throw Error(proxy, "needs the minibatch's labels");
    for (int i = 0; i < b.n; ++i)
      if (b.y[i] < 0 || b.y[i] >= g.classes())
        throw Error(proxy, "label " + std::to_string(b.y[i]) + " of image " + std::to_string(i) +
                               " is not below the graph's " + std::to_string(g.classes()) +
                               " classes");
  }
}

std::vector<float> logits_buffer(const Model& m, int n) {
  return std::vector<float>(static_cast<size_t>(n) * static_cast<size_t>(m.graph().classes()));
}

}  // namespace

std::span<const ProxyInfo> proxy_table() {
  return kProxies;
}

const ProxyInfo& proxy_info(Proxy p) {
  for (const ProxyInfo& info : kProxies)
    if (info.proxy == p) return info;
  throw Error("proxies", "no entry for proxy " + std::to_string(static_cast<int>(p)));
}

ProxyMinibatch proxy_minibatch(const data::Dataset& ds, const std::string& name, int n,
                               uint64_t seed) {
  if (n < 1 || ds.size() < static_cast<size_t>(n))
    throw Error(name, "has " + std::to_string(ds.size()) + " training images, fewer than the " +
                          std::to_string(n) + " of a minibatch");
  const data::Normalization norm =
      ds.shape.c == 1 && ds.source.find("fashion-mnist") != std::string::npos
          ? data::Normalization::fashion_mnist()
          : data::compute_normalization(ds);
  const std::vector<uint32_t> idx = data::subset(data::all_indices(ds), n, seed);
  ProxyMinibatch m;
  m.shape = ds.shape;
  m.classes = ds.classes;
  m.x.resize(idx.size() * ds.image_size());
  m.y.resize(idx.size());
  data::normalize(ds, idx, norm, m.x.data(), m.y.data());
  return m;
}

std::optional<Proxy> proxy_from_name(std::string_view name) {
  for (const ProxyInfo& info : kProxies)
    if (name == info.name) return info.proxy;
  return std::nullopt;
}

std::string proxy_names() {
  std::string s;
  for (const ProxyInfo& info : kProxies) s += (s.empty() ? "" : ", ") + std::string(info.name);
  return s;
}

double proxy_score(Proxy proxy, Backend& backend, const LayerGraph& graph, uint64_t seed,
                   const ProxyBatch& batch) {
  switch (proxy) {
    case Proxy::params:
      return static_cast<double>(graph.params());
    case Proxy::macs:
      return static_cast<double>(graph.macs());
    default:
      break;
  }
  Model model(graph, seed);
  switch (proxy) {
    case Proxy::naswot:
      return naswot(backend, model, batch);
    case Proxy::synflow:
      return synflow(backend, model);
    case Proxy::grad_norm:
      return grad_norm(backend, model, batch);
    case Proxy::jacob_cov:
      return jacob_cov(backend, model, batch);
    default:
      throw Error("proxies", std::string("no score for proxy ") + proxy_info(proxy).name);
  }
}

// ------------------------------------------------------------ NASWOT

double naswot(Backend& backend, Model& model, const ProxyBatch& batch) {
  const LayerGraph& g = model.graph();
  check_batch(g, batch, false, "naswot");
  auto net = backend.compile(model, batch.n, NetMode::train, {});
  std::vector<float> logits = logits_buffer(model, batch.n);
  net->forward(batch.x, logits.data());
  // Each sample's code over every ReLU unit, packed 64 to a word; a layer's
  // codes start on a fresh word, its last word's spare bits 0 in every code.
  std::vector<int> relus;
  size_t words = 0;
  int64_t bits = 0;
  for (int i = 1; i < g.size(); ++i) {
    const Layer& l = g.layer(i);
    if (l.op != Op::Relu && l.op != Op::Relu6) continue;
    relus.push_back(i);
    words += static_cast<size_t>((l.shape.elements() + 63) / 64);
    bits += l.shape.elements();
  }
  if (relus.empty()) throw Error("naswot", "the network has no ReLU layer to read codes from");
  const size_t n = static_cast<size_t>(batch.n);
  std::vector<uint64_t> codes(n * words, 0);
  std::vector<float> out;
  size_t at = 0;  // the current layer's first word
  for (int i : relus) {
    const size_t units = static_cast<size_t>(g.layer(i).shape.elements());
    out.resize(n * units);
    net->layer_output(i, out.data());
    for (size_t s = 0; s < n; ++s) {
      uint64_t* c = codes.data() + s * words + at;
      const float* v = out.data() + s * units;
      for (size_t u = 0; u < units; ++u)
        if (v[u] > 0) c[u / 64] |= uint64_t{1} << (u % 64);
    }
    at += (units + 63) / 64;
  }
  return log_det_spd(hamming_kernel(codes, batch.n, words, bits), batch.n);
}

std::vector<double> hamming_kernel(const std::vector<uint64_t>& codes, int n, size_t words,
                                   int64_t bits) {
  const size_t m = static_cast<size_t>(n);
  if (codes.size() != m * words)
    throw Error("naswot", "codes of " + std::to_string(codes.size()) + " words are not " +
                              std::to_string(n) + " codes of " + std::to_string(words));
  std::vector<double> k(m * m);
  for (size_t i = 0; i < m; ++i) {
    k[i * m + i] = static_cast<double>(bits);
    for (size_t j = i + 1; j < m; ++j) {
      const uint64_t* a = codes.data() + i * words;
      const uint64_t* b = codes.data() + j * words;
      int64_t d = 0;
      for (size_t w = 0; w < words; ++w) d += std::popcount(a[w] ^ b[w]);
      k[i * m + j] = k[j * m + i] = static_cast<double>(bits - d);
    }
  }
  return k;
}

double log_det_spd(std::vector<double> a, int n) {
  const size_t m = static_cast<size_t>(n);
  if (a.size() != m * m) throw Error("log_det_spd", "not an n x n matrix");
  // In place: the lower triangle becomes L with A = L L^T; log det = 2 sum log L_ii.
  double log_det = 0;
  for (size_t j = 0; j < m; ++j) {
    double d = a[j * m + j];
    for (size_t k = 0; k < j; ++k) d -= a[j * m + k] * a[j * m + k];
    // A pivot lost to rounding against the diagonal's scale: singular.
    if (!(d > 1e-12 * std::abs(a[j * m + j]))) return -std::numeric_limits<double>::infinity();
    const double l = std::sqrt(d);
    a[j * m + j] = l;
    log_det += 2 * std::log(l);
    for (size_t i = j + 1; i < m; ++i) {
      double s = a[i * m + j];
      for (size_t k = 0; k < j; ++k) s -= a[i * m + k] * a[j * m + k];
      a[i * m + j] = s / l;
    }
  }
  return log_det;
}

// ------------------------------------------------------------ synflow

LayerGraph without_batchnorm(const LayerGraph& graph) {
  nlohmann::json j = graph.to_json();
  nlohmann::json kept = nlohmann::json::array();
  // Old index -> new index; a removed layer maps to its input's new index.
  std::vector<int> to(static_cast<size_t>(graph.size()), -1);
  for (int i = 0; i < graph.size(); ++i) {
    const Layer& l = graph.layer(i);
    if (l.op == Op::BatchNorm || l.op == Op::Dropout) {
      to[static_cast<size_t>(i)] = to[static_cast<size_t>(l.inputs[0])];
      continue;
    }
    nlohmann::json layer = j["layers"][static_cast<size_t>(i)];
    nlohmann::json inputs = nlohmann::json::array();
    for (int x : l.inputs) inputs.push_back(to[static_cast<size_t>(x)]);
    layer["inputs"] = inputs;
    to[static_cast<size_t>(i)] = static_cast<int>(kept.size());
    layer["id"] = kept.size();
    kept.push_back(std::move(layer));
  }
  j["layers"] = std::move(kept);
  j.erase("params");
  return LayerGraph::from_json(j, "synflow: the graph without batch norm");
}

double synflow(Backend& backend, const Model& model) {
  Model lin(without_batchnorm(model.graph()), 0);
  std::unordered_map<std::string, const Param*> by_name;
  for (const Param& p : model.params()) by_name.emplace(p.name, &p);
  for (Param& p : lin.params()) {
    const auto it = by_name.find(p.name);
    if (it == by_name.end() || it->second->size() != p.size())
      throw Error("synflow", "parameter " + p.name + " has no counterpart in the model");
    for (size_t k = 0; k < p.size(); ++k) p.value[k] = std::abs(it->second->value[k]);
  }
  auto net = backend.compile(lin, 1, NetMode::train, {});
  const LayerGraph& g = lin.graph();
  std::vector<float> ones(static_cast<size_t>(g.input_shape().elements()), 1.0f);
  std::vector<float> logits = logits_buffer(lin, 1);
  net->forward(ones.data(), logits.data());
  for (float z : logits)
    if (!std::isfinite(z))
      throw Error("synflow",
                  "the network's output overflows float32 with |weights| and an "
                  "all-ones input");
  const std::vector<float> dr(logits.size(), 1.0f);  // R = sum of the logits
  net->backward(dr.data(), nullptr);
  double sum = 0;  // every term is >= 0: |theta| and dR/dtheta of a positive network
  for (const Param& p : lin.params()) {
    if (p.kind != ParamKind::weight) continue;
    for (size_t k = 0; k < p.size(); ++k)
      sum += std::abs(static_cast<double>(p.value[k]) * static_cast<double>(p.grad[k]));
  }
  if (!std::isfinite(sum))
    throw Error("synflow", "a gradient overflows float32 with |weights| and an all-ones input");
  return std::log(sum);
}

// ------------------------------------------------------------ grad-norm

double grad_norm(Backend& backend, Model& model, const ProxyBatch& batch) {
  check_batch(model.graph(), batch, true, "grad_norm");
  auto net = backend.compile(model, batch.n, NetMode::train, {});
  net->train_step(batch.x, batch.y);
  double sum = 0;
  for (const Param& p : model.params()) {
    if (p.kind != ParamKind::weight) continue;
    double sq = 0;
    for (float v : p.grad) sq += static_cast<double>(v) * v;
    sum += std::sqrt(sq);
  }
  return sum;
}

// ------------------------------------------------------------ jacob_cov

double jacob_cov(Backend& backend, Model& model, const ProxyBatch& batch) {
  const LayerGraph& g = model.graph();
  check_batch(g, batch, false, "jacob_cov");
  NetworkOptions opt;
  opt.input_gradient = true;
  auto net = backend.compile(model, batch.n, NetMode::train, opt);
  std::vector<float> logits = logits_buffer(model, batch.n);
  net->forward(batch.x, logits.data());
  const std::vector<float> ones(logits.size(), 1.0f);  // the gradient of the sum of the logits
  const size_t dim = static_cast<size_t>(g.input_shape().elements());
  std::vector<float> jac(static_cast<size_t>(batch.n) * dim);
  net->backward(ones.data(), jac.data());
  return jacob_cov_score(jac.data(), batch.n, dim);
}

double jacob_cov_score(const float* jacobians, int n, size_t dim) {
  const size_t m = static_cast<size_t>(n);
  if (n < 2 || dim < 1) throw Error("jacob_cov", "needs at least two samples of one value");
  // numpy's corrcoef over rows: the covariance of the centred rows, scaled to unit diagonal.
  std::vector<double> c(m * dim);
  for (size_t i = 0; i < m; ++i) {
    double mean = 0;
    for (size_t k = 0; k < dim; ++k) mean += jacobians[i * dim + k];
    mean /= static_cast<double>(dim);
    for (size_t k = 0; k < dim; ++k) c[i * dim + k] = jacobians[i * dim + k] - mean;
  }
  std::vector<double> cov(m * m);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = i; j < m; ++j) {
      double s = 0;
      for (size_t k = 0; k < dim; ++k) s += c[i * dim + k] * c[j * dim + k];
      cov[i * m + j] = cov[j * m + i] = s;
    }
  for (size_t i = 0; i < m; ++i)
    if (!(cov[i * m + i] > 0)) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> corr(m * m);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < m; ++j)
      corr[i * m + j] = cov[i * m + j] / std::sqrt(cov[i * m + i] * cov[j * m + j]);
  constexpr double k = 1e-5;
  double score = 0;
  for (double v : symmetric_eigenvalues(std::move(corr), n)) score -= std::log(v + k) + 1 / (v + k);
  return score;
}

std::vector<double> symmetric_eigenvalues(std::vector<double> a, int n) {
  const size_t m = static_cast<size_t>(n);
  if (a.size() != m * m) throw Error("symmetric_eigenvalues", "not an n x n matrix");
  // Cyclic Jacobi: rotations zero each off-diagonal element in turn until
  // what is left off the diagonal is rounding next to the diagonal.
  auto off = [&] {
    double s = 0;
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < m; ++j)
        if (i != j) s += a[i * m + j] * a[i * m + j];
    return s;
  };
  double scale = 0;
  for (double v : a) scale += v * v;
  for (int sweep = 0; sweep < 100 && off() > 1e-30 * scale; ++sweep) {
    for (size_t p = 0; p < m; ++p)
      for (size_t q = p + 1; q < m; ++q) {
        const double apq = a[p * m + q];
        if (apq == 0) continue;
        const double theta = (a[q * m + q] - a[p * m + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double cs = 1 / std::sqrt(t * t + 1), sn = t * cs;
        for (size_t k = 0; k < m; ++k) {  // columns p and q
          const double akp = a[k * m + p], akq = a[k * m + q];
          a[k * m + p] = cs * akp - sn * akq;
          a[k * m + q] = sn * akp + cs * akq;
        }
        for (size_t k = 0; k < m; ++k) {  // rows p and q
          const double apk = a[p * m + k], aqk = a[q * m + k];
          a[p * m + k] = cs * apk - sn * aqk;
          a[q * m + k] = sn * apk + cs * aqk;
        }
      }
  }
  std::vector<double> v(m);
  for (size_t i = 0; i < m; ++i) v[i] = a[i * m + i];
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace minas
