#include "controller/predictor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "searchspace/error.h"

namespace minas {
namespace {

// A feature vector's nonzero entries: one-hot encodings are mostly zeros, and
// the first layer's work is then a few rows instead of the whole matrix.
using Sparse = std::vector<std::pair<uint32_t, float>>;

Sparse sparse(const std::vector<float>& x) {
  Sparse s;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] != 0) s.emplace_back(static_cast<uint32_t>(i), x[i]);
  return s;
}

// Weights travel as the hex digits of their IEEE-754 bits: exact, and a
// quarter of the size of decimal text that would round-trip.
std::string to_hex(const std::vector<float>& v) {
  static const char* digits = "0123456789abcdef";
  std::string s(v.size() * 8, '0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    for (int k = 7; k >= 0; --k, bits >>= 4) s[i * 8 + static_cast<size_t>(k)] = digits[bits & 15];
  }
  return s;
}

std::vector<float> from_hex(const std::string& s, size_t count, const std::string& where) {
  if (s.size() != count * 8)
    throw Error(where, "holds " + std::to_string(s.size() / 8) + " weights, the predictor has " +
                           std::to_string(count));
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits = 0;
    for (size_t k = 0; k < 8; ++k) {
      const char c = s[i * 8 + k];
      uint32_t d;
      if (c >= '0' && c <= '9')
        d = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        d = static_cast<uint32_t>(c - 'a' + 10);
      else
        throw Error(where, "is not hexadecimal at character " + std::to_string(i * 8 + k));
      bits = bits << 4 | d;
    }
    std::memcpy(&v[i], &bits, 4);
    if (!std::isfinite(v[i])) throw Error(where, "weight " + std::to_string(i) + " is not finite");
  }
  return v;
}

}  // namespace

Predictor::Predictor(size_t inputs, const PredictorSettings& s)
    : inputs_(inputs), hidden_(static_cast<size_t>(std::max(s.hidden, 0))), settings_(s) {
  if (inputs < 1) throw Error("predictor", "needs at least one input feature");
  if (s.members < 1) throw Error("predictor", "members must be >= 1");
  if (s.hidden < 1) throw Error("predictor", "hidden must be >= 1");
  if (s.batch < 1) throw Error("predictor", "batch must be >= 1");
  if (!(s.learning_rate > 0) || !std::isfinite(s.learning_rate))
    throw Error("predictor", "learning_rate must be > 0");
  if (!(s.weight_decay >= 0) || !std::isfinite(s.weight_decay))
    throw Error("predictor", "weight_decay must be >= 0");
  reset();
}

void Predictor::reset() {
  members_.assign(static_cast<size_t>(settings_.members), Member{});
  Rng seeds(settings_.seed);
  for (Member& m : members_) initialize(m, seeds.next());
  y_mean_ = 0;
  y_scale_ = 1;
  fitted_ = false;
}

void Predictor::initialize(Member& m, uint64_t member_seed) const {
  m.rng.reseed(member_seed);
  m.params.assign(param_count(), 0.0f);
  // He (Kaiming) uniform for the ReLU layers, biases zero.
  auto fill = [&](size_t at, size_t count, size_t fan_in) {
    const double bound = std::sqrt(6.0 / static_cast<double>(fan_in));
    for (size_t i = 0; i < count; ++i)
      m.params[at + i] = static_cast<float>((2 * m.rng.uniform() - 1) * bound);
  };
  fill(w1(), inputs_ * hidden_, inputs_);
  fill(w2(), hidden_ * hidden_, hidden_);
  fill(w3(), hidden_, hidden_);
}

double Predictor::forward(const Member& m, const std::vector<float>& x) const {
  const float* p = m.params.data();
  std::vector<float> a1(p + b1(), p + b1() + hidden_);
  for (size_t i = 0; i < inputs_; ++i)
    if (x[i] != 0)
      for (size_t j = 0; j < hidden_; ++j) a1[j] += p[w1() + i * hidden_ + j] * x[i];
  for (float& v : a1) v = std::max(v, 0.0f);
  double out = p[b3()];
  for (size_t k = 0; k < hidden_; ++k) {
    float z = p[b2() + k];
    const float* row = p + w2() + k * hidden_;
    for (size_t j = 0; j < hidden_; ++j) z += row[j] * a1[j];
    if (z > 0) out += static_cast<double>(p[w3() + k]) * z;
  }
  return out;
}

void Predictor::train(Member& m, const std::vector<std::vector<float>>& x,
                      const std::vector<double>& t, int epochs) const {
  const size_t n = x.size(), h = hidden_, count = param_count();
  std::vector<Sparse> xs;
  xs.reserve(n);
  for (const auto& row : x) xs.push_back(sparse(row));
  // Adam (Kingma & Ba 2015, their default moments) starts afresh each fit;
  // the weights carry over.
  constexpr double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::vector<float> grad(count), mom(count, 0.0f), vel(count, 0.0f);
  std::vector<float> a1(h), a2(h), d1(h), d2(h);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  int64_t step = 0;
  float* p = m.params.data();
  float* g = grad.data();
  const size_t batch = static_cast<size_t>(settings_.batch);
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[m.rng.below(i)]);
    for (size_t start = 0; start < n; start += batch) {
      const size_t end = std::min(n, start + batch);
      std::fill(grad.begin(), grad.end(), 0.0f);
      for (size_t s = start; s < end; ++s) {
        const Sparse& xi = xs[order[s]];
        // Forward.
        for (size_t j = 0; j < h; ++j) a1[j] = p[b1() + j];
        for (const auto& [i, v] : xi)
          for (size_t j = 0; j < h; ++j) a1[j] += p[w1() + i * h + j] * v;
        for (size_t j = 0; j < h; ++j) a1[j] = std::max(a1[j], 0.0f);
        float out = p[b3()];
        for (size_t k = 0; k < h; ++k) {
          float z = p[b2() + k];
          const float* row = p + w2() + k * h;
          for (size_t j = 0; j < h; ++j) z += row[j] * a1[j];
          a2[k] = std::max(z, 0.0f);
          out += p[w3() + k] * a2[k];
        }
        // Backward of (out - t)^2 / 2.
        const float e = out - static_cast<float>(t[order[s]]);
        g[b3()] += e;
        std::fill(d1.begin(), d1.end(), 0.0f);
        for (size_t k = 0; k < h; ++k) {
          g[w3() + k] += e * a2[k];
          d2[k] = a2[k] > 0 ? e * p[w3() + k] : 0.0f;
          if (d2[k] == 0) continue;
          g[b2() + k] += d2[k];
          const float* row = p + w2() + k * h;
          float* grow = g + w2() + k * h;
          for (size_t j = 0; j < h; ++j) {
            grow[j] += d2[k] * a1[j];
            d1[j] += d2[k] * row[j];
          }
        }
        for (size_t j = 0; j < h; ++j) d1[j] = a1[j] > 0 ? d1[j] : 0.0f;
        for (size_t j = 0; j < h; ++j) g[b1() + j] += d1[j];
        for (const auto& [i, v] : xi)
          for (size_t j = 0; j < h; ++j) g[w1() + i * h + j] += d1[j] * v;
      }
      ++step;
      const float scale = 1.0f / static_cast<float>(end - start);
      const double c1 = 1 - std::pow(beta1, static_cast<double>(step));
      const double c2 = 1 - std::pow(beta2, static_cast<double>(step));
      const float lr = static_cast<float>(settings_.learning_rate * std::sqrt(c2) / c1);
      const float decay = static_cast<float>(settings_.weight_decay);
      for (size_t q = 0; q < count; ++q) {
        const float gq = g[q] * scale + decay * p[q];
        mom[q] = static_cast<float>(beta1) * mom[q] + static_cast<float>(1 - beta1) * gq;
        vel[q] = static_cast<float>(beta2) * vel[q] + static_cast<float>(1 - beta2) * gq * gq;
        p[q] -= lr * mom[q] / (std::sqrt(vel[q]) + static_cast<float>(eps));
      }
    }
  }
}

void Predictor::fit(const std::vector<std::vector<float>>& x, const std::vector<double>& y,
                    int epochs) {
  if (x.empty()) throw Error("predictor", "no data to fit");
  if (x.size() != y.size())
    throw Error("predictor", std::to_string(x.size()) + " feature vectors but " +
                                 std::to_string(y.size()) + " targets");
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i].size() != inputs_)
      throw Error("predictor", "feature vector " + std::to_string(i) + " has " +
                                   std::to_string(x[i].size()) + " entries, the predictor " +
                                   std::to_string(inputs_));
    if (!std::isfinite(y[i]))
      throw Error("predictor", "target " + std::to_string(i) + " is not finite");
  }
  if (epochs < 1) throw Error("predictor", "epochs must be >= 1");
  double mean = 0;
  for (double v : y) mean += v;
  mean /= static_cast<double>(y.size());
  double var = 0;
  for (double v : y) var += (v - mean) * (v - mean);
  const double spread = std::sqrt(var / static_cast<double>(y.size()));
  y_mean_ = mean;
  y_scale_ = spread > 1e-12 ? spread : 1.0;  // one point or all equal: centred only
  std::vector<double> t(y.size());
  for (size_t i = 0; i < y.size(); ++i) t[i] = (y[i] - y_mean_) / y_scale_;
  for (Member& m : members_) train(m, x, t, epochs);
  fitted_ = true;
}

std::vector<double> Predictor::member_predictions(const std::vector<float>& x) const {
  if (x.size() != inputs_)
    throw Error("predictor", "a feature vector of " + std::to_string(x.size()) +
                                 " entries, the predictor has " + std::to_string(inputs_));
  std::vector<double> out;
  out.reserve(members_.size());
  for (const Member& m : members_) out.push_back(y_mean_ + y_scale_ * forward(m, x));
  return out;
}

Prediction Predictor::predict(const std::vector<float>& x) const {
  const std::vector<double> each = member_predictions(x);
  Prediction p;
  for (double v : each) p.mean += v;
  p.mean /= static_cast<double>(each.size());
  for (double v : each) p.std += (v - p.mean) * (v - p.mean);
  p.std = std::sqrt(p.std / static_cast<double>(each.size()));
  return p;
}

nlohmann::json Predictor::save() const {
  nlohmann::json members = nlohmann::json::array();
  for (const Member& m : members_)
    members.push_back({{"rng", m.rng.state()}, {"weights", to_hex(m.params)}});
  return {{"inputs", inputs_},   {"hidden", hidden_}, {"y_mean", y_mean_},
          {"y_scale", y_scale_}, {"fitted", fitted_}, {"members", members}};
}

void Predictor::restore(const nlohmann::json& state, const std::string& where) {
  try {
    if (state.at("inputs").get<size_t>() != inputs_ || state.at("hidden").get<size_t>() != hidden_)
      throw Error(where, "is a predictor of " + state.at("inputs").dump() + " inputs and " +
                             state.at("hidden").dump() + " hidden units, not " +
                             std::to_string(inputs_) + " and " + std::to_string(hidden_));
    const auto& members = state.at("members");
    if (!members.is_array() || members.size() != members_.size())
      throw Error(where + "/members", "must hold " + std::to_string(members_.size()) + " members");
    std::vector<Member> restored(members_.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const std::string at = where + "/members/" + std::to_string(i);
      restored[i].rng.set_state(members[i].at("rng").get<std::array<uint64_t, 4>>());
      restored[i].params =
          from_hex(members[i].at("weights").get<std::string>(), param_count(), at + "/weights");
    }
    const double mean = state.at("y_mean").get<double>(), scale = state.at("y_scale").get<double>();
    if (!std::isfinite(mean) || !(scale > 0) || !std::isfinite(scale))
      throw Error(where, "has a target scaling that is not finite and positive");
    members_ = std::move(restored);
    y_mean_ = mean;
    y_scale_ = scale;
    fitted_ = state.at("fitted").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(where, e.what());
  }
}

}  // namespace minas
