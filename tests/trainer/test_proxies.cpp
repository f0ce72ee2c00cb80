// Zero-cost proxies (trainer/proxies.h) and the network calls they need:
// forward and backward from an arbitrary logit gradient, the input gradient
// (finite differences), layer outputs; each proxy on networks small enough
// to score by hand, its invariances, and its determinism for a seed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "tests/trainer/smooth_twin.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/proxies.h"

using namespace minas;

namespace {

std::vector<float> random_values(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(2 * rng.uniform() - 1);
  return v;
}

std::vector<float> batch_of(const LayerGraph& g, int n, uint64_t seed) {
  return random_values(static_cast<size_t>(n) * static_cast<size_t>(g.input_shape().elements()),
                       seed);
}

Param& param_named(Model& m, const std::string& name) {
  for (Param& p : m.params())
    if (p.name == name) return p;
  FAIL("no parameter " << name);
  return m.params().front();
}

// Checks backward(c) against central differences of S = sum c * forward(x)
// along random directions, for every parameter tensor and for the input.
void check_logit_gradient(const LayerGraph& g, int batch) {
  Model model(g, 4);
  auto backend = make_cpu_backend(1);
  NetworkOptions opt;
  opt.input_gradient = true;
  auto net = backend->compile(model, batch, NetMode::train, opt);
  std::vector<float> x = batch_of(g, batch, 9);
  const size_t k = static_cast<size_t>(batch) * static_cast<size_t>(g.classes());
  const std::vector<float> c = random_values(k, 10);
  std::vector<float> z(k);
  auto s = [&] {
    net->forward(x.data(), z.data());
    double v = 0;
    for (size_t i = 0; i < k; ++i) v += static_cast<double>(c[i]) * z[i];
    return v;
  };
  s();
  std::vector<float> dx(x.size());
  net->backward(c.data(), dx.data());
  std::vector<std::vector<float>> analytic;
  for (const Param& p : model.params()) analytic.push_back(p.grad);

  Rng rng(12);
  int checked = 0;
  auto along = [&](std::vector<float>& w, const std::vector<float>& grad, const std::string& what) {
    const std::vector<float> w0 = w;
    std::vector<double> d(w.size());
    double norm = 0, an = 0;
    for (double& v : d) {
      v = 2 * rng.uniform() - 1;
      norm += v * v;
    }
    for (size_t i = 0; i < d.size(); ++i) {
      d[i] /= std::sqrt(norm);
      an += d[i] * grad[i];
    }
    const double h = 3e-3;
    for (size_t i = 0; i < d.size(); ++i) w[i] = static_cast<float>(w0[i] + h * d[i]);
    const double up = s();
    for (size_t i = 0; i < d.size(); ++i) w[i] = static_cast<float>(w0[i] - h * d[i]);
    const double down = s();
    w = w0;
    const double fd = (up - down) / (2 * h);
    CAPTURE(what);
    CHECK(std::abs(fd - an) <= 0.03 * std::max(std::abs(fd), std::abs(an)) + 3e-3);
    ++checked;
  };
  for (size_t t = 0; t < model.params().size(); ++t)
    along(model.params()[t].value, analytic[t], model.params()[t].name);
  for (int r = 0; r < 3; ++r) along(x, dx, "the input");
  CHECK(checked == static_cast<int>(model.params().size()) + 3);
}

}  // namespace

TEST_CASE("network: backward from any logit gradient, parameters and input (finite differences)") {
  // Batch norm (train mode couples the samples), a fused BN-ReLU pair made
  // smooth, pooling, a residual add and the linear head.
  LayerGraph g({2, 6, 6}, 4);
  int x = g.conv(0, 4, 3, 1, 1, false, "c1");
  x = g.activation(Op::Sigmoid, g.batchnorm(x, "bn1"), "act1");
  const int y = g.conv(x, 4, 3, 1, 1, true, "c2");
  x = g.add({x, y}, "sum");
  x = g.avgpool(x, 2, 2, 0, false, "pool");
  g.linear(x, 4, true, "fc");
  check_logit_gradient(g, 5);
  // A whole network of the default space, smoothed.
  const Space space = Space::load("small:input=1x12x12");
  Rng rng(2);
  const Arch arch = space.sample(rng);
  CAPTURE(space.key(arch));
  check_logit_gradient(test::smooth_twin(space.lower(arch)), 6);
}

TEST_CASE("network: forward and backward refuse what the network was not compiled for") {
  LayerGraph g({1, 4, 4}, 3);
  g.linear(g.activation(Op::Relu, g.conv(0, 2, 3, 1, 1, false, "c"), "r"), 3, true, "fc");
  Model model(g, 1);
  auto backend = make_cpu_backend(1);
  const std::vector<float> x = batch_of(g, 2, 3);
  std::vector<float> z(6), dz(6, 1.0f), dx(x.size());
  auto eval = backend->compile(model, 2, NetMode::eval, {});
  CHECK_THROWS_AS(eval->forward(x.data(), z.data()), Error);
  CHECK_THROWS_AS(eval->backward(dz.data(), nullptr), Error);
  auto train = backend->compile(model, 2, NetMode::train, {});
  CHECK_THROWS_AS(train->backward(dz.data(), nullptr), Error);  // no forward before it
  train->forward(x.data(), z.data());
  CHECK_THROWS_AS(train->backward(dz.data(), dx.data()), Error);  // no input_gradient option
  train->backward(dz.data(), nullptr);
  CHECK_THROWS_AS(train->backward(dz.data(), nullptr), Error);  // one backward per forward
}

TEST_CASE("network: layer outputs are plain NCHW, and a layer fused away is refused") {
  LayerGraph g({3, 6, 6}, 5);
  const int conv = g.conv(0, 8, 3, 1, 1, false, "conv");
  const int bn = g.batchnorm(conv, "bn");
  const int relu = g.activation(Op::Relu, bn, "relu");
  g.linear(g.global_avgpool(g.maxpool(relu, 2, 2, 0, "pool"), "gap"), 5, true, "fc");
  Model model(g, 6);
  auto backend = make_cpu_backend(1);
  const int n = 4;
  const std::vector<float> x = batch_of(g, n, 7);
  auto net = backend->compile(model, n, NetMode::train, {});
  std::vector<float> z(static_cast<size_t>(n) * 5);
  CHECK_THROWS_AS(net->layer_output(conv, std::vector<float>(1000).data()), Error);  // no forward
  net->forward(x.data(), z.data());
  const size_t hw = 36, c = 8;
  std::vector<float> a(n * c * hw), r(n * c * hw), logits(z.size());
  net->layer_output(conv, a.data());
  net->layer_output(relu, r.data());
  net->layer_output(g.output(), logits.data());
  CHECK(logits == z);
  // ReLU of batch norm (batch statistics, scale 1, shift 0) of the conv, by hand.
  double worst = 0;
  for (size_t ch = 0; ch < c; ++ch) {
    double mean = 0, var = 0;
    for (int s = 0; s < n; ++s)
      for (size_t p = 0; p < hw; ++p) mean += a[(s * c + ch) * hw + p];
    mean /= n * hw;
    for (int s = 0; s < n; ++s)
      for (size_t p = 0; p < hw; ++p) var += std::pow(a[(s * c + ch) * hw + p] - mean, 2);
    var /= n * hw;
    for (int s = 0; s < n; ++s)
      for (size_t p = 0; p < hw; ++p) {
        const size_t k = (s * c + ch) * hw + p;
        const double want = std::max(0.0, (a[k] - mean) / std::sqrt(var + 1e-5));
        worst = std::max(worst, std::abs(want - r[k]));
      }
  }
  CHECK(worst < 1e-4);
  // The batch norm's own output was never stored: its ReLU is fused into it.
  CHECK_THROWS_AS(net->layer_output(bn, a.data()), Error);
  CHECK_THROWS_AS(net->layer_output(g.size(), a.data()), Error);
  // Latency mode folds the batch norm and the ReLU into the conv.
  auto lat = backend->compile(model, n, NetMode::latency, {});
  lat->infer(x.data(), z.data());
  CHECK_THROWS_AS(lat->layer_output(conv, a.data()), Error);
  lat->layer_output(relu, a.data());
  CHECK(*std::min_element(a.begin(), a.end()) >= 0.0f);
}

TEST_CASE("naswot: log det of the Hamming kernel of codes set by hand") {
  // conv 1x1 with identity weights, then a ReLU: the codes are the signs of the input.
  LayerGraph g({2, 1, 1}, 3);
  g.linear(g.activation(Op::Relu, g.conv(0, 2, 1, 1, 1, false, "c"), "r"), 3, true, "fc");
  Model model(g, 1);
  param_named(model, "c.weight").value = {1, 0, 0, 1};
  auto backend = make_cpu_backend(1);
  // Codes 10, 11, 00: K = [[2,1,0],[1,2,1],[0,1,2]], det 4.
  const std::vector<float> x = {1, -1, 1, 1, -1, -1};
  CHECK(naswot(*backend, model, {x.data(), nullptr, 3}) == doctest::Approx(std::log(4.0)));
  // Codes 10, 10, 01: two samples alike, K singular.
  const std::vector<float> same = {1, -1, 2, -3, -1, 1};
  CHECK(naswot(*backend, model, {same.data(), nullptr, 3}) ==
        -std::numeric_limits<double>::infinity());
  // No ReLU, no codes.
  LayerGraph flat({2, 1, 1}, 3);
  flat.linear(flat.conv(0, 2, 1, 1, 1, false, "c"), 3, true, "fc");
  Model fm(flat, 1);
  CHECK_THROWS_AS(naswot(*backend, fm, {x.data(), nullptr, 3}), Error);
}

TEST_CASE("naswot: the kernel and log det pieces") {
  // Two codes of 70 bits (two words): 3 bits differ.
  std::vector<uint64_t> codes = {0b1011, 1, 0b0001, 3};
  const std::vector<double> k = hamming_kernel(codes, 2, 2, 70);
  CHECK(k == std::vector<double>{70, 67, 67, 70});
  CHECK(log_det_spd({4, 2, 2, 3}, 2) == doctest::Approx(std::log(8.0)));
  CHECK(log_det_spd({1, 2, 2, 4}, 2) == -std::numeric_limits<double>::infinity());
  CHECK(log_det_spd({1, 2, 2, 1}, 2) == -std::numeric_limits<double>::infinity());
}

TEST_CASE("naswot and jacob_cov: deterministic for a seed, naswot blind to the batch's order") {
  const Space space = Space::load("small");
  Rng rng(8);
  const Arch arch = space.sample(rng);
  CAPTURE(space.key(arch));
  const LayerGraph g = space.lower(arch);
  const int n = 12;
  std::vector<float> x = batch_of(g, n, 5);
  std::vector<int32_t> y(n);
  for (int i = 0; i < n; ++i) y[i] = i % 10;
  auto backend = make_cpu_backend(1);
  const ProxyBatch b{x.data(), y.data(), n};
  for (Proxy p : {Proxy::naswot, Proxy::synflow, Proxy::grad_norm, Proxy::jacob_cov}) {
    CAPTURE(proxy_info(p).name);
    const double s = proxy_score(p, *backend, g, 3, b);
    CHECK(std::isfinite(s));
    CHECK(proxy_score(p, *backend, g, 3, b) == s);
    CHECK(proxy_score(p, *backend, g, 4, b) != s);
  }
  // The batch reversed: K's rows and columns permuted, its determinant the same.
  const size_t img = static_cast<size_t>(g.input_shape().elements());
  std::vector<float> rev(x.size());
  for (int i = 0; i < n; ++i)
    std::copy_n(x.begin() + static_cast<long>(i * img), img,
                rev.begin() + static_cast<long>((n - 1 - i) * img));
  const double fwd = proxy_score(Proxy::naswot, *backend, g, 3, b);
  const double back = proxy_score(Proxy::naswot, *backend, g, 3, {rev.data(), y.data(), n});
  CHECK(back == doctest::Approx(fwd).epsilon(1e-4));
}

TEST_CASE("synflow: 2R on two linear layers, L times R on a chain, blind to batch norm") {
  auto backend = make_cpu_backend(1);
  {
    LayerGraph g({1, 1, 1}, 3);
    g.linear(g.activation(Op::Relu, g.linear(0, 2, false, "fc1"), "r"), 3, false, "fc2");
    Model model(g, 5);
    const std::vector<float> w1 = param_named(model, "fc1.weight").value;
    const std::vector<float> w2 = param_named(model, "fc2.weight").value;  // 3 x 2
    double r = 0;
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 2; ++j) r += std::abs(w2[k * 2 + j]) * std::abs(w1[j]);
    // sum over fc2 of |w| dR/dw = R, and over fc1 likewise: 2R.
    CHECK(synflow(*backend, model) == doctest::Approx(std::log(2 * r)).epsilon(1e-6));
    CHECK(param_named(model, "fc1.weight").value == w1);  // the model is left as it was

    // The same weights with a batch norm (and dropout) in between: removed, same score.
    LayerGraph gb({1, 1, 1}, 3);
    int x = gb.batchnorm(gb.linear(0, 2, false, "fc1"), "bn");
    x = gb.dropout(gb.activation(Op::Relu, x, "r"), 0.5f, "drop");
    gb.linear(x, 3, false, "fc2");
    Model mb(gb, 77);
    param_named(mb, "fc1.weight").value = w1;
    param_named(mb, "fc2.weight").value = w2;
    CHECK(synflow(*backend, mb) == doctest::Approx(std::log(2 * r)).epsilon(1e-6));
    CHECK(without_batchnorm(gb).size() == g.size());
    CHECK(without_batchnorm(gb).params() == g.params());
  }
  {
    // A bias-free chain of L = 3 weighted layers, ReLU and max pooling in it:
    // positively homogeneous in each layer's weights, so the score is L R.
    LayerGraph g({2, 6, 6}, 4);
    int x = g.activation(Op::Relu, g.conv(0, 4, 3, 1, 1, false, "c1"), "r1");
    x = g.maxpool(x, 2, 2, 0, "pool");
    x = g.global_avgpool(g.conv(x, 5, 3, 1, 1, false, "c2"), "gap");
    g.linear(x, 4, false, "fc");
    Model model(g, 9);
    Model pos(g, 9);
    for (Param& p : pos.params())
      for (float& v : p.value) v = std::abs(v);
    auto net = backend->compile(pos, 1, NetMode::eval, {});
    const std::vector<float> ones(72, 1.0f);
    std::vector<float> z(4);
    net->infer(ones.data(), z.data());
    const double r = std::accumulate(z.begin(), z.end(), 0.0);
    CHECK(synflow(*backend, model) == doctest::Approx(std::log(3 * r)).epsilon(1e-5));
  }
}

TEST_CASE("grad_norm: a linear classifier's weight gradient by hand") {
  LayerGraph g({1, 2, 2}, 3);
  g.linear(0, 3, true, "fc");
  Model model(g, 2);
  const std::vector<float> w = param_named(model, "fc.weight").value;  // 3 x 4
  const std::vector<float> bias = param_named(model, "fc.bias").value;
  const std::vector<float> x = {0.5f, -1, 2, 0.25f, -0.5f, 1, 0, 1.5f};
  const std::vector<int32_t> y = {2, 0};
  // dL/dW = sum over samples of (softmax(z) - onehot(y)) x^T / n.
  std::vector<double> dw(12, 0.0);
  for (int s = 0; s < 2; ++s) {
    double zk[3], sum = 0;
    for (int k = 0; k < 3; ++k) {
      zk[k] = bias[k];
      for (int i = 0; i < 4; ++i) zk[k] += w[k * 4 + i] * x[s * 4 + i];
      sum += std::exp(zk[k]);
    }
    for (int k = 0; k < 3; ++k) {
      const double d = std::exp(zk[k]) / sum - (k == y[s] ? 1 : 0);
      for (int i = 0; i < 4; ++i) dw[k * 4 + i] += d * x[s * 4 + i] / 2;
    }
  }
  double want = 0;
  for (double v : dw) want += v * v;
  auto backend = make_cpu_backend(1);
  CHECK(grad_norm(*backend, model, {x.data(), y.data(), 2}) ==
        doctest::Approx(std::sqrt(want)).epsilon(1e-5));
  const std::vector<int32_t> bad = {2, 3};
  CHECK_THROWS_AS(grad_norm(*backend, model, {x.data(), bad.data(), 2}), Error);
}

TEST_CASE("jacob_cov: the score of given Jacobians, and of a network linear in its input") {
  constexpr double k = 1e-5;
  auto term = [](double v) { return std::log(v + k) + 1 / (v + k); };
  // Two rows: the correlation matrix [[1, p], [p, 1]] has eigenvalues 1 - p and 1 + p.
  const std::vector<float> j = {1, 2, 3, 4, 1, 3, 2, 5};
  const double ma = 2.5, mb = 2.75;
  double sab = 0, saa = 0, sbb = 0;
  for (int i = 0; i < 4; ++i) {
    sab += (j[i] - ma) * (j[4 + i] - mb);
    saa += (j[i] - ma) * (j[i] - ma);
    sbb += (j[4 + i] - mb) * (j[4 + i] - mb);
  }
  const double p = sab / std::sqrt(saa * sbb);
  CHECK(jacob_cov_score(j.data(), 2, 4) == doctest::Approx(-term(1 - p) - term(1 + p)));
  const std::vector<float> flat = {1, 2, 3, 4, 7, 7, 7, 7};
  CHECK(std::isnan(jacob_cov_score(flat.data(), 2, 4)));

  // No nonlinearity and no batch norm: every sample has the same Jacobian,
  // the correlation matrix is all ones, its eigenvalues n and n - 1 zeros.
  LayerGraph g({2, 5, 5}, 3);
  g.linear(g.global_avgpool(g.conv(0, 4, 3, 1, 1, true, "c"), "gap"), 3, true, "fc");
  Model model(g, 3);
  auto backend = make_cpu_backend(1);
  const int n = 6;
  const std::vector<float> x = batch_of(g, n, 4);
  CHECK(jacob_cov(*backend, model, {x.data(), nullptr, n}) ==
        doctest::Approx(-(n - 1) * term(0) - term(n)).epsilon(1e-6));
}

TEST_CASE("proxies: eigenvalues by Jacobi against the trace and the determinant") {
  const std::vector<double> two = symmetric_eigenvalues({2, 1, 1, 2}, 2);
  CHECK(two[0] == doctest::Approx(1));
  CHECK(two[1] == doctest::Approx(3));
  // A = B B^T + I, 7 x 7: the eigenvalues sum to the trace, their logs to log det.
  const int n = 7;
  const std::vector<float> b = random_values(n * n, 21);
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = i == j ? 1 : 0;
      for (int t = 0; t < n; ++t) s += static_cast<double>(b[i * n + t]) * b[j * n + t];
      a[i * n + j] = s;
    }
  const std::vector<double> v = symmetric_eigenvalues(a, n);
  double trace = 0, logs = 0;
  for (int i = 0; i < n; ++i) trace += a[i * n + i];
  for (double e : v) logs += std::log(e);
  CHECK(std::accumulate(v.begin(), v.end(), 0.0) == doctest::Approx(trace));
  CHECK(logs == doctest::Approx(log_det_spd(a, n)));
  CHECK(std::is_sorted(v.begin(), v.end()));
}

TEST_CASE("proxies: the table, params and MACs") {
  for (const ProxyInfo& info : proxy_table()) {
    CAPTURE(info.name);
    REQUIRE(proxy_from_name(info.name));
    CHECK(*proxy_from_name(info.name) == info.proxy);
    CHECK(&proxy_info(info.proxy) == &info);
  }
  CHECK_FALSE(proxy_from_name("snip"));
  const Space space = Space::load("small");
  Rng rng(1);
  const LayerGraph g = space.lower(space.sample(rng));
  auto backend = make_cpu_backend(1);
  CHECK(proxy_score(Proxy::params, *backend, g, 0, {}) == static_cast<double>(g.params()));
  CHECK(proxy_score(Proxy::macs, *backend, g, 0, {}) == static_cast<double>(g.macs()));
  CHECK_THROWS_AS(proxy_score(Proxy::naswot, *backend, g, 0, {}), Error);  // no batch
}
