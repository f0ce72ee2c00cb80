#include "adapt/latency_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "controller/objective.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/model.h"
#include "trainer/network.h"

namespace minas::adapt {

using json = nlohmann::json;

namespace {

enum Feature : size_t {
  kDenseConv,
  kPointwiseConv,
  kGroupedConv,
  kLinear,
  kElementwise,
  kPrimitives,
  kConstant,
  kFeatures
};

constexpr double kMega = 1e-6;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

bool finite_nonnegative(double v) {
  return std::isfinite(v) && v >= 0;
}

// Solves m z = r (m square, nonsingular in practice) by Gaussian elimination with partial
// pivoting; m and r are consumed.
std::vector<double> solve(std::vector<std::vector<double>> m, std::vector<double> r) {
  const size_t n = r.size();
  for (size_t k = 0; k < n; ++k) {
    size_t p = k;
    for (size_t i = k + 1; i < n; ++i)
      if (std::abs(m[i][k]) > std::abs(m[p][k])) p = i;
    std::swap(m[k], m[p]);
    std::swap(r[k], r[p]);
    const double d = m[k][k];
    if (d == 0) continue;  // singular (cannot happen with a positive ridge): leaves z_k = 0
    for (size_t i = k + 1; i < n; ++i) {
      const double f = m[i][k] / d;
      if (f == 0) continue;
      for (size_t j = k; j < n; ++j) m[i][j] -= f * m[k][j];
      r[i] -= f * r[k];
    }
  }
  std::vector<double> z(n, 0.0);
  for (size_t k = n; k-- > 0;) {
    if (m[k][k] == 0) continue;
    double s = r[k];
    for (size_t j = k + 1; j < n; ++j) s -= m[k][j] * z[j];
    z[k] = s / m[k][k];
  }
  return z;
}

// The model's fit without checks: coefficients minimizing the squared relative error.
std::vector<double> fit_coefficients(const std::vector<std::vector<double>>& features,
                                     const std::vector<double>& ms) {
  std::vector<std::vector<double>> a(features.size());
  for (size_t i = 0; i < features.size(); ++i) {
    a[i] = features[i];
    for (double& v : a[i]) v /= ms[i];
  }
  return nonnegative_least_squares(a, std::vector<double>(features.size(), 1.0));
}

double dot(const std::vector<double>& c, const std::vector<double>& f) {
  double s = 0;
  for (size_t j = 0; j < c.size(); ++j) s += c[j] * f[j];
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Targets

Target parse_target(const std::string& text) {
  const std::optional<LatencyDevice> d = parse_latency_device(text);
  if (!d) throw Error("--target " + text, "a target is cpu, cpu:THREADS or cuda:N");
  Target t;
  t.device = d->device;
  t.threads = d->threads;
  t.text = t.device == "cpu" ? "cpu:" + std::to_string(t.threads) : t.device;
  return t;
}

// ---------------------------------------------------------------------------------------------
// The table

const std::vector<std::string>& latency_feature_names() {
  static const std::vector<std::string> names = {
      "dense_conv_mmacs", "pointwise_conv_mmacs",  "grouped_conv_mmacs",
      "linear_mmacs",     "elementwise_melements", "primitives",
      "constant"};
  return names;
}

std::vector<double> latency_features(const LayerGraph& g) {
  const int n = g.size();
  std::vector<std::vector<int>> consumers(static_cast<size_t>(n));
  for (int i = 1; i < n; ++i)
    for (int x : g.layer(i).inputs) consumers[static_cast<size_t>(x)].push_back(i);
  const auto only_consumer = [&](int i) {
    const auto& c = consumers[static_cast<size_t>(i)];
    return c.size() == 1 ? c[0] : -1;
  };
  // Layers that run as no primitive of their own (the CPU backend's latency mode).
  std::vector<bool> fused(static_cast<size_t>(n), false);
  for (int i = 1; i < n; ++i) {
    const Layer& l = g.layer(i);
    if (l.op == Op::Identity || l.op == Op::Dropout || l.op == Op::Zero) fused[i] = true;
    if (l.op != Op::Conv) continue;
    const int bn = only_consumer(i);
    if (bn < 0 || g.layer(bn).op != Op::BatchNorm) continue;
    fused[static_cast<size_t>(bn)] = true;  // folded into the convolution
    const int act = only_consumer(bn);
    if (act >= 0 && (g.layer(act).op == Op::Relu || g.layer(act).op == Op::Relu6 ||
                     g.layer(act).op == Op::HSwish))
      fused[static_cast<size_t>(act)] = true;  // the convolution's post-op
  }
  for (int i = 1; i < n; ++i) {  // a Relu after a batch norm left standing runs inside it
    if (g.layer(i).op != Op::BatchNorm || fused[static_cast<size_t>(i)]) continue;
    const int act = only_consumer(i);
    if (act >= 0 && g.layer(act).op == Op::Relu) fused[static_cast<size_t>(act)] = true;
  }

  std::vector<double> f(kFeatures, 0.0);
  for (int i = 1; i < n; ++i) {
    if (fused[static_cast<size_t>(i)]) continue;
    const Layer& l = g.layer(i);
    const double macs = static_cast<double>(l.macs) * kMega;
    switch (l.op) {
      case Op::Conv:
        f[l.groups > 1 ? kGroupedConv : l.kernel > 1 ? kDenseConv : kPointwiseConv] += macs;
        break;
      case Op::Linear:
        f[kLinear] += macs;
        break;
      case Op::MaxPool:
      case Op::AvgPool:
      case Op::GlobalAvgPool:
      case Op::Add:
      case Op::Concat:
      case Op::Mul:
      case Op::BatchNorm:
      case Op::Relu:
      case Op::Relu6:
      case Op::HSwish:
      case Op::HSigmoid:
      case Op::Sigmoid: {
        int64_t elements = l.shape.elements();
        for (int x : l.inputs) elements += g.layer(x).shape.elements();
        f[kElementwise] += static_cast<double>(elements) * kMega;
        break;
      }
      case Op::Input:
      case Op::Zero:
      case Op::Identity:
      case Op::Dropout:
        continue;  // not a primitive
    }
    f[kPrimitives] += 1;
  }
  f[kConstant] = 1;
  return f;
}

// ---------------------------------------------------------------------------------------------
// Non-negative least squares

std::vector<double> nonnegative_least_squares(const std::vector<std::vector<double>>& a,
                                              const std::vector<double>& b, double ridge) {
  const std::string where = "non-negative least squares";
  if (a.size() != b.size())
    throw Error(where, std::to_string(a.size()) + " rows but " + std::to_string(b.size()) +
                           " right-hand sides");
  if (!(ridge >= 0) || !std::isfinite(ridge)) throw Error(where, "the ridge must be >= 0");
  const size_t m = a.size();
  const size_t n = m ? a[0].size() : 0;
  for (size_t i = 0; i < m; ++i) {
    if (a[i].size() != n)
      throw Error(where, "row " + std::to_string(i) + " has " + std::to_string(a[i].size()) +
                             " columns, row 0 " + std::to_string(n));
    for (double v : a[i])
      if (!std::isfinite(v)) throw Error(where, "row " + std::to_string(i) + " is not finite");
    if (!std::isfinite(b[i]))
      throw Error(where, "right-hand side " + std::to_string(i) + " is not finite");
  }

  // Columns scaled to unit norm: the normal equations G x = h of the scaled problem.
  std::vector<double> scale(n, 1.0);
  for (size_t j = 0; j < n; ++j) {
    double s = 0;
    for (size_t i = 0; i < m; ++i) s += a[i][j] * a[i][j];
    if (s > 0) scale[j] = 1 / std::sqrt(s);
  }
  std::vector<std::vector<double>> gram(n, std::vector<double>(n, 0.0));
  std::vector<double> h(n, 0.0);
  for (size_t i = 0; i < m; ++i)
    for (size_t j = 0; j < n; ++j) {
      const double aij = a[i][j] * scale[j];
      h[j] += aij * b[i];
      for (size_t k = 0; k < n; ++k) gram[j][k] += aij * a[i][k] * scale[k];
    }
  for (size_t j = 0; j < n; ++j) gram[j][j] += ridge;

  double hmax = 0;
  for (double v : h) hmax = std::max(hmax, std::abs(v));
  const double tol = 1e-12 * std::max(1.0, hmax);

  // Lawson-Hanson: x feasible throughout; `passive` the coefficients free to be positive.
  std::vector<double> x(n, 0.0);
  std::vector<bool> passive(n, false), blocked(n, false);
  const auto solve_passive = [&] {
    std::vector<size_t> p;
    for (size_t j = 0; j < n; ++j)
      if (passive[j]) p.push_back(j);
    std::vector<std::vector<double>> gp(p.size(), std::vector<double>(p.size()));
    std::vector<double> hp(p.size());
    for (size_t r = 0; r < p.size(); ++r) {
      hp[r] = h[p[r]];
      for (size_t c = 0; c < p.size(); ++c) gp[r][c] = gram[p[r]][p[c]];
    }
    const std::vector<double> zp = solve(std::move(gp), std::move(hp));
    std::vector<double> z(n, 0.0);
    for (size_t r = 0; r < p.size(); ++r) z[p[r]] = zp[r];
    return z;
  };
  for (size_t iteration = 0; iteration < 10 * n + 10; ++iteration) {
    // The most negative gradient of 0.5 x'Gx - h'x among the coefficients held at 0.
    size_t best = n;
    double best_w = tol;
    for (size_t j = 0; j < n; ++j) {
      if (passive[j] || blocked[j]) continue;
      double w = h[j];
      for (size_t k = 0; k < n; ++k) w -= gram[j][k] * x[k];
      if (w > best_w) best = j, best_w = w;
    }
    if (best == n) break;  // KKT conditions hold
    passive[best] = true;
    for (size_t inner = 0; inner <= n; ++inner) {
      const std::vector<double> z = solve_passive();
      if (inner == 0 && !(z[best] > 0)) {  // rounding: do not pick it again until x moves
        passive[best] = false;
        blocked[best] = true;
        break;
      }
      bool feasible = true;
      double alpha = 1;
      size_t hit = n;
      for (size_t j = 0; j < n; ++j)
        if (passive[j] && !(z[j] > 0)) {
          feasible = false;
          const double t = x[j] / (x[j] - z[j]);
          if (t < alpha) alpha = t, hit = j;
        }
      if (feasible) {
        x = z;
        std::fill(blocked.begin(), blocked.end(), false);
        break;
      }
      for (size_t j = 0; j < n; ++j)
        if (passive[j]) x[j] += alpha * (z[j] - x[j]);
      std::fill(blocked.begin(), blocked.end(), false);
      for (size_t j = 0; j < n; ++j)
        if (passive[j] && (j == hit || !(x[j] > 0))) {
          passive[j] = false;
          x[j] = 0;
        }
    }
  }
  for (size_t j = 0; j < n; ++j) x[j] *= scale[j];
  return x;
}

// ---------------------------------------------------------------------------------------------
// The model

LatencyModel LatencyModel::fit(const std::vector<std::vector<double>>& features,
                               const std::vector<double>& measured_ms) {
  const std::string where = "latency model";
  if (features.size() != measured_ms.size())
    throw Error(where, std::to_string(features.size()) + " feature rows but " +
                           std::to_string(measured_ms.size()) + " measurements");
  if (features.size() < 2)
    throw Error(where,
                "a fit needs at least 2 measured networks, got " + std::to_string(features.size()));
  for (size_t i = 0; i < features.size(); ++i) {
    if (features[i].size() != kFeatures)
      throw Error(where, "feature row " + std::to_string(i) + " has " +
                             std::to_string(features[i].size()) + " values, the table " +
                             std::to_string(kFeatures));
    for (double v : features[i])
      if (!finite_nonnegative(v))
        throw Error(where, "feature row " + std::to_string(i) +
                               " has a value that is not finite "
                               "and non-negative");
    if (!std::isfinite(measured_ms[i]) || !(measured_ms[i] > 0))
      throw Error(where, "measurement " + std::to_string(i) + " is not a positive latency (" +
                             std::to_string(measured_ms[i]) + " ms)");
  }

  LatencyModel model;
  model.coefficients_ = fit_coefficients(features, measured_ms);
  model.samples_ = features.size();
  std::vector<double> errors;
  const size_t n = features.size();
  if (n >= 4) {
    for (size_t k = 0; k < n; ++k) {
      std::vector<std::vector<double>> f;
      std::vector<double> ms;
      for (size_t i = 0; i < n; ++i)
        if (i != k) f.push_back(features[i]), ms.push_back(measured_ms[i]);
      const double p = dot(fit_coefficients(f, ms), features[k]);
      errors.push_back(std::abs(p - measured_ms[k]) / measured_ms[k]);
    }
  } else {
    for (size_t i = 0; i < n; ++i)
      errors.push_back(std::abs(dot(model.coefficients_, features[i]) - measured_ms[i]) /
                       measured_ms[i]);
  }
  model.median_relative_error_ = median(std::move(errors));
  return model;
}

double LatencyModel::predict(const std::vector<double>& features) const {
  const std::string where = "latency model";
  if (!calibrated()) throw Error(where, "not calibrated: fit it to measurements on the target");
  if (features.size() != coefficients_.size())
    throw Error(where, std::to_string(features.size()) + " features, the table " +
                           std::to_string(coefficients_.size()));
  for (double v : features)
    if (!finite_nonnegative(v)) throw Error(where, "a feature is not finite and non-negative");
  return dot(coefficients_, features);
}

double LatencyModel::predict(const LayerGraph& g) const {
  return predict(latency_features(g));
}

json LatencyModel::to_json() const {
  json c = json::object();
  const auto& names = latency_feature_names();
  for (size_t j = 0; j < names.size(); ++j)
    c[names[j]] = j < coefficients_.size() ? coefficients_[j] : 0.0;
  return {{"coefficients", c},
          {"samples", samples_},
          {"median_relative_error",
           std::isfinite(median_relative_error_) ? json(median_relative_error_) : json()}};
}

LatencyModel LatencyModel::from_json(const json& j, const std::string& where) {
  LatencyModel m;
  if (!j.is_object()) throw Error(where, "a latency model is a JSON object");
  const auto need = [&](const char* key) -> const json& {
    if (!j.contains(key)) throw Error(where, std::string("missing \"") + key + "\"");
    return j.at(key);
  };
  const json& c = need("coefficients");
  if (!c.is_object()) throw Error(where + "/coefficients", "not a JSON object");
  const auto& names = latency_feature_names();
  for (const auto& [key, value] : c.items())
    if (std::find(names.begin(), names.end(), key) == names.end())
      throw Error(where + "/coefficients/" + key, "not a feature of the latency table");
  for (const std::string& name : names) {
    if (!c.contains(name)) throw Error(where + "/coefficients", "missing \"" + name + "\"");
    const json& v = c.at(name);
    if (!v.is_number() || !finite_nonnegative(v.get<double>()))
      throw Error(where + "/coefficients/" + name, "not a finite, non-negative number");
    m.coefficients_.push_back(v.get<double>());
  }
  const json& s = need("samples");
  if (!s.is_number_integer() || s.get<int64_t>() < 0 || s.get<int64_t>() == 1)
    throw Error(where + "/samples", "not 0 (uncalibrated) or a count of at least 2");
  m.samples_ = static_cast<size_t>(s.get<int64_t>());
  const json& e = need("median_relative_error");
  if (e.is_null() && m.samples_ == 0) {
    m.median_relative_error_ = std::numeric_limits<double>::quiet_NaN();
  } else if (e.is_number() && finite_nonnegative(e.get<double>()) && m.samples_ > 0) {
    m.median_relative_error_ = e.get<double>();
  } else {
    throw Error(where + "/median_relative_error",
                "not a finite, non-negative number (null when uncalibrated)");
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Measurement

double measure_batch1_latency(const LayerGraph& g, Backend& backend, int runs) {
  g.check_output();
  Model model(g, 1);  // any weights: they do not change the work
  return measure_latency(model, backend, runs, false).batch1_ms;
}

double measure_target_latency(const LayerGraph& g, const Target& t, int runs) {
  const std::unique_ptr<Backend> backend = make_backend(t.device, t.threads);
  return measure_batch1_latency(g, *backend, runs);
}

}  // namespace minas::adapt
