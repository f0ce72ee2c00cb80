// The per-target latency model of minas adapt: targets, the per-layer-kind table, the
// non-negative least-squares fit, its JSON form and measurements on the CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "adapt/latency_model.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/backends.h"
#include "trainer/model.h"
#include "trainer/train.h"

using namespace minas;

TEST_SUITE_BEGIN("adapt");

namespace {

enum : size_t { kDense, kPointwise, kGrouped, kLinear, kElementwise, kPrimitives, kConstant };

// Stem conv 3x3 + BN + ReLU, then `blocks` of depthwise 3x3 + BN + ReLU and pointwise 1x1 + BN +
// ReLU (the first block strided), global average pool, linear: a small mobile-style network.
LayerGraph mobile(int size, int width, int blocks, int classes = 10) {
  LayerGraph g({3, size, size}, classes);
  int x = g.conv(0, width, 3, 1, 1, false, "stem");
  x = g.activation(Op::Relu, g.batchnorm(x, "stem.bn"), "stem.relu");
  for (int b = 0; b < blocks; ++b) {
    const std::string n = "b" + std::to_string(b);
    x = g.conv(x, width, 3, b == 0 ? 2 : 1, width, false, n + ".dw");
    x = g.activation(Op::Relu, g.batchnorm(x, n + ".dw.bn"), n + ".dw.relu");
    x = g.conv(x, width, 1, 1, 1, false, n + ".pw");
    x = g.activation(Op::Relu, g.batchnorm(x, n + ".pw.bn"), n + ".pw.relu");
  }
  g.linear(g.global_avgpool(x, "gap"), classes, true, "fc");
  g.check_output();
  return g;
}

// Input C x S x S, one dense conv 3x3 to `out` channels, pool, linear.
LayerGraph one_conv(int channels, int size, int out) {
  LayerGraph g({channels, size, size}, 10);
  const int c = g.conv(0, out, 3, 1, 1, false, "conv");
  g.linear(g.global_avgpool(c, "gap"), 10, false, "fc");
  g.check_output();
  return g;
}

}  // namespace

TEST_CASE("latency model: targets are cpu, cpu:THREADS or cuda:N, in canonical form") {
  const adapt::Target cpu = adapt::parse_target("cpu");
  CHECK(cpu.device == "cpu");
  CHECK(cpu.threads == 1);
  CHECK(cpu.text == "cpu:1");
  const adapt::Target cpu8 = adapt::parse_target("cpu:8");
  CHECK(cpu8.device == "cpu");
  CHECK(cpu8.threads == 8);
  CHECK(cpu8.text == "cpu:8");
  CHECK(adapt::parse_target("cpu:4096").threads == 4096);
  CHECK(adapt::parse_target("cpu:01").text == "cpu:1");
  const adapt::Target gpu = adapt::parse_target("cuda:3");
  CHECK(gpu.device == "cuda:3");
  CHECK(gpu.threads == 0);
  CHECK(gpu.text == "cuda:3");
  CHECK(adapt::parse_target("cuda:999").device == "cuda:999");
  CHECK(adapt::parse_target("cuda:007").text == "cuda:7");

  for (const char* bad :
       {"", "gpu", "CPU", "cpu:", "cpu:0", "cpu:4097", "cpu:-1", "cpu:+2", "cpu:2x", "cpu:99999",
        "cpu.1", "cuda", "cuda:", "cuda:1000", "cuda:-1", "cuda:0.1", "cuda:a", " cpu", "cpu "}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(
        adapt::parse_target(bad),
        ("--target " + std::string(bad) + ": a target is cpu, cpu:THREADS or cuda:N").c_str(),
        Error);
  }
}

TEST_CASE("latency model: the table of a small network, by hand") {
  // 1x16x16 -> conv 3x3 to 8 (+ BN + ReLU, folded) -> depthwise 3x3 stride 2 -> pointwise 1x1
  // to 16 -> global average pool -> linear to 10.
  LayerGraph g({1, 16, 16}, 10);
  int x = g.conv(0, 8, 3, 1, 1, false, "conv");
  x = g.activation(Op::Relu, g.batchnorm(x, "bn"), "relu");
  x = g.conv(x, 8, 3, 2, 8, false, "dw");
  x = g.conv(x, 16, 1, 1, 1, false, "pw");
  x = g.global_avgpool(x, "gap");
  g.linear(x, 10, true, "fc");
  g.check_output();

  const auto& names = adapt::latency_feature_names();
  REQUIRE(names.size() == 7);
  CHECK(names[kDense] == "dense_conv_mmacs");
  CHECK(names[kPrimitives] == "primitives");
  CHECK(names[kConstant] == "constant");
  const std::vector<double> f = adapt::latency_features(g);
  REQUIRE(f.size() == names.size());
  CHECK(f[kDense] == doctest::Approx(1 * 9 * 8 * 256 * 1e-6));  // 18432 MACs
  CHECK(f[kGrouped] == doctest::Approx(9 * 8 * 64 * 1e-6));     // 8x8x8 out, 9 MACs each
  CHECK(f[kPointwise] == doctest::Approx(8 * 16 * 64 * 1e-6));
  CHECK(f[kLinear] == doctest::Approx(16 * 10 * 1e-6));
  CHECK(f[kElementwise] == doctest::Approx((16 * 64 + 16) * 1e-6));  // the pool reads and writes
  CHECK(f[kPrimitives] == 5);  // conv, dw, pw, gap, fc: BN and ReLU folded into conv
  CHECK(f[kConstant] == 1);
}

TEST_CASE("latency model: batch norms and activations that are not folded count as primitives") {
  LayerGraph g({3, 8, 8}, 5);
  const int r0 = g.activation(Op::Relu, 0, "relu0");  // before the conv: its own primitive
  const int c1 = g.conv(r0, 4, 3, 1, 1, false, "c1");
  const int h1 = g.activation(Op::HSigmoid, g.batchnorm(c1, "bn1"), "hsig");  // BN folded only
  const int c2 = g.conv(h1, 4, 1, 1, 1, false, "c2");  // two consumers: its BN stays
  const int r2 = g.activation(Op::Relu, g.batchnorm(c2, "bn2"), "relu2");  // inside bn2
  const int a = g.add({r2, c2}, "add");
  const int id = g.identity(g.dropout(a, 0.1f, "drop"), "id");  // aliases
  g.linear(g.global_avgpool(id, "gap"), 5, false, "fc");
  g.check_output();

  const std::vector<double> f = adapt::latency_features(g);
  CHECK(f[kDense] == doctest::Approx(3 * 9 * 256 * 1e-6));
  CHECK(f[kPointwise] == doctest::Approx(4 * 256 * 1e-6));
  CHECK(f[kGrouped] == 0);
  CHECK(f[kLinear] == doctest::Approx(4 * 5 * 1e-6));
  // relu0 192 + 192, hsig 256 + 256, bn2 256 + 256, add 2 x 256 + 256, gap 256 + 4.
  CHECK(f[kElementwise] == doctest::Approx((384 + 512 + 512 + 768 + 260) * 1e-6));
  CHECK(f[kPrimitives] == 8);  // relu0, c1, hsig, c2, bn2, add, gap, fc
  CHECK(f[kConstant] == 1);
}

TEST_CASE("latency model: non-negative least squares") {
  // Exact data: the coefficients come back.
  Rng rng(7);
  std::vector<std::vector<double>> a;
  std::vector<double> b;
  const std::vector<double> truth = {0.5, 2, 0, 1.5, 0.25};
  for (int i = 0; i < 12; ++i) {
    std::vector<double> row;
    for (size_t j = 0; j < truth.size(); ++j)
      row.push_back(rng.uniform() * static_cast<double>(j + 1));
    double y = 0;
    for (size_t j = 0; j < truth.size(); ++j) y += truth[j] * row[j];
    a.push_back(row);
    b.push_back(y);
  }
  const std::vector<double> x = adapt::nonnegative_least_squares(a, b);
  REQUIRE(x.size() == truth.size());
  for (size_t j = 0; j < truth.size(); ++j) CHECK(x[j] == doctest::Approx(truth[j]).epsilon(1e-6));

  // b falls along the second column: plain least squares gives intercept 4 and slope -1; the
  // non-negative answer is slope 0 and the mean, 2.
  const std::vector<double> y =
      adapt::nonnegative_least_squares({{1, 1}, {1, 2}, {1, 3}}, {3, 2, 1});
  CHECK(y[0] == doctest::Approx(2).epsilon(1e-6));
  CHECK(y[1] == 0);

  // An all-zero column gets 0; shapes are checked.
  const std::vector<double> z = adapt::nonnegative_least_squares({{1, 0}, {2, 0}}, {2, 4});
  CHECK(z[0] == doctest::Approx(2).epsilon(1e-6));
  CHECK(z[1] == 0);
  CHECK_THROWS_AS(adapt::nonnegative_least_squares({{1, 0}, {2}}, {2, 4}), Error);
  CHECK_THROWS_AS(adapt::nonnegative_least_squares({{1, 0}}, {2, 4}), Error);
}

TEST_CASE("latency model: fit recovers non-negative coefficients and predicts") {
  Rng rng(11);
  const std::vector<double> truth = {0.4, 0.3, 1.2, 0.05, 2.0, 0.01, 0.03};
  std::vector<std::vector<double>> f;
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    std::vector<double> row = {rng.uniform() * 20,
                               rng.uniform() * 10,
                               rng.uniform(),
                               rng.uniform() * 0.1,
                               rng.uniform() * 0.5,
                               std::floor(5 + rng.uniform() * 60),
                               1};
    double y = 0;
    for (size_t j = 0; j < row.size(); ++j) y += truth[j] * row[j];
    f.push_back(row);
    ms.push_back(y);
  }
  const adapt::LatencyModel m = adapt::LatencyModel::fit(f, ms);
  CHECK(m.calibrated());
  CHECK(m.samples() == 20);
  REQUIRE(m.coefficients().size() == truth.size());
  for (size_t j = 0; j < truth.size(); ++j)
    CHECK(m.coefficients()[j] == doctest::Approx(truth[j]).epsilon(1e-6));
  CHECK(m.median_relative_error() < 1e-6);
  CHECK(m.predict(f[3]) == doctest::Approx(ms[3]).epsilon(1e-6));
  const LayerGraph g = mobile(16, 8, 2);
  const std::vector<double> fg = adapt::latency_features(g);
  double expect = 0;
  for (size_t j = 0; j < truth.size(); ++j) expect += truth[j] * fg[j];
  CHECK(m.predict(g) == doctest::Approx(expect).epsilon(1e-5));

  // Latency falling with dense MACs: unconstrained least squares would give that column a
  // negative coefficient; here it stays at 0.
  std::vector<std::vector<double>> f2;
  std::vector<double> ms2;
  for (int i = 0; i < 6; ++i) {
    f2.push_back({static_cast<double>(i), 0, 0, 0, 0, 10, 1});
    ms2.push_back(10.0 - i);
  }
  const adapt::LatencyModel m2 = adapt::LatencyModel::fit(f2, ms2);
  CHECK(m2.coefficients()[kDense] == 0);
  for (double c : m2.coefficients()) CHECK(c >= 0);
  CHECK(m2.predict(f2[0]) > 0);
}

TEST_CASE("latency model: fit refuses too few, mismatched or bad measurements") {
  const std::vector<double> row = {1, 0, 0, 0, 0, 3, 1};
  const std::vector<double> row2 = {2, 0, 0, 0, 0, 3, 1};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(adapt::LatencyModel::fit({row}, {1.0}),
                       doctest::Contains("at least 2 measured networks"), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({}, {}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, row2}, {1.0}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, {1, 2, 3}}, {1.0, 2.0}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, row2}, {1.0, nan}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, row2}, {1.0, inf}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, row2}, {1.0, 0.0}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, row2}, {1.0, -2.0}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, {nan, 0, 0, 0, 0, 3, 1}}, {1.0, 2.0}), Error);
  CHECK_THROWS_AS(adapt::LatencyModel::fit({row, {-1, 0, 0, 0, 0, 3, 1}}, {1.0, 2.0}), Error);
  const adapt::LatencyModel two = adapt::LatencyModel::fit({row, row2}, {1.0, 2.0});
  CHECK(two.samples() == 2);  // in-sample error with fewer than 4
  CHECK(std::isfinite(two.median_relative_error()));

  const adapt::LatencyModel none;
  CHECK_FALSE(none.calibrated());
  CHECK(none.samples() == 0);
  CHECK(std::isnan(none.median_relative_error()));
  CHECK_THROWS_WITH_AS(none.predict(row), doctest::Contains("not calibrated"), Error);
  CHECK_THROWS_AS(none.predict(mobile(8, 4, 1)), Error);
  CHECK_THROWS_AS(two.predict({1, 2, 3}), Error);
}

TEST_CASE("latency model: JSON round trip and malformed models") {
  std::vector<std::vector<double>> f;
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    f.push_back({0.1 * i, 0.2, 0.01 * i * i, 0.001, 0.05 * i, 4.0 + i, 1});
    ms.push_back(0.3 + 0.2 * i + 0.01 * i * i);
  }
  const adapt::LatencyModel m = adapt::LatencyModel::fit(f, ms);
  const nlohmann::json j = m.to_json();
  CHECK(j.at("samples") == 5);
  CHECK(j.at("coefficients").size() == 7);
  CHECK(j.at("coefficients").contains("grouped_conv_mmacs"));
  const adapt::LatencyModel back =
      adapt::LatencyModel::from_json(nlohmann::json::parse(j.dump()), "model.json");
  CHECK(back.samples() == m.samples());
  CHECK(back.median_relative_error() == m.median_relative_error());
  CHECK(back.coefficients() == m.coefficients());
  CHECK(back.predict(f[2]) == m.predict(f[2]));
  CHECK(back.to_json() == j);

  const nlohmann::json empty = adapt::LatencyModel().to_json();
  CHECK(empty.at("median_relative_error").is_null());
  CHECK_FALSE(adapt::LatencyModel::from_json(empty, "x").calibrated());

  auto broken = [&](auto edit) {
    nlohmann::json k = j;
    edit(k);
    return k;
  };
  CHECK_THROWS_WITH_AS(
      adapt::LatencyModel::from_json(
          broken([](nlohmann::json& k) { k["coefficients"]["flops"] = 1.0; }), "model.json"),
      "model.json/coefficients/flops: not a feature of the latency table", Error);
  CHECK_THROWS_AS(adapt::LatencyModel::from_json(
                      broken([](nlohmann::json& k) { k["coefficients"].erase("constant"); }), "m"),
                  Error);
  CHECK_THROWS_AS(adapt::LatencyModel::from_json(
                      broken([](nlohmann::json& k) { k["coefficients"]["constant"] = -1.0; }), "m"),
                  Error);
  CHECK_THROWS_AS(adapt::LatencyModel::from_json(
                      broken([](nlohmann::json& k) { k["coefficients"]["constant"] = "1"; }), "m"),
                  Error);
  CHECK_THROWS_AS(
      adapt::LatencyModel::from_json(broken([](nlohmann::json& k) { k["samples"] = 1; }), "m"),
      Error);
  CHECK_THROWS_AS(
      adapt::LatencyModel::from_json(broken([](nlohmann::json& k) { k["samples"] = -3; }), "m"),
      Error);
  CHECK_THROWS_AS(
      adapt::LatencyModel::from_json(broken([](nlohmann::json& k) { k.erase("samples"); }), "m"),
      Error);
  CHECK_THROWS_AS(adapt::LatencyModel::from_json(
                      broken([](nlohmann::json& k) { k["median_relative_error"] = nullptr; }), "m"),
                  Error);
  CHECK_THROWS_AS(adapt::LatencyModel::from_json(nlohmann::json::array(), "m"), Error);
}

TEST_CASE("latency model: measured on cpu:1, 16 times the MACs is slower") {
  const adapt::Target cpu1 = adapt::parse_target("cpu:1");
  const LayerGraph small = one_conv(8, 16, 8);  // 8 x 9 x 8 x 256 = 0.15 M MACs
  const LayerGraph big = one_conv(16, 32, 32);  // 16 x 9 x 32 x 1024 = 4.7 M MACs: 32x
  REQUIRE(big.macs() >= 16 * small.macs());
  // Timings on a shared machine: each taken several times, interleaved, and
  // the fastest of each compared, so a burst of load on the other core during
  // one of them does not decide the comparison.
  auto fastest = [](int times, auto&& a, auto&& b) {
    double fa = std::numeric_limits<double>::infinity(), fb = fa;
    for (int k = 0; k < times; ++k) {
      fa = std::min(fa, a());
      fb = std::min(fb, b());
    }
    return std::pair{fa, fb};
  };
  const auto [s, b] = fastest(
      3, [&] { return adapt::measure_target_latency(small, cpu1, 20); },
      [&] { return adapt::measure_target_latency(big, cpu1, 20); });
  MESSAGE("small " << s << " ms, big " << b << " ms");
  CHECK(std::isfinite(s));
  CHECK(s > 0);
  CHECK(b > s);
  CHECK_THROWS_AS(adapt::measure_target_latency(small, {"tpu:0", 0, "tpu:0"}), Error);

  // The same procedure as measure_latency's batch-1 half (generous: both are timings).
  const auto backend = make_backend("cpu", 1);
  Model model(big, 3);
  const auto [full, own] = fastest(
      5, [&] { return measure_latency(model, *backend, 20).batch1_ms; },
      [&] { return adapt::measure_batch1_latency(big, *backend, 20); });
  MESSAGE("measure_latency " << full << " ms, measure_batch1_latency " << own << " ms");
  CHECK(own < 3 * full);
  CHECK(full < 3 * own);
}

TEST_CASE("latency model: fitted to measured networks, predicts another within a factor of 3") {
  const adapt::Target cpu1 = adapt::parse_target("cpu:1");
  // (size, width, blocks): resolutions, widths and depths around the one predicted.
  const std::vector<std::array<int, 3>> calibration = {{16, 16, 1}, {32, 16, 2}, {16, 32, 3},
                                                       {32, 32, 1}, {24, 24, 2}, {32, 8, 4},
                                                       {16, 48, 2}, {24, 40, 3}};
  std::vector<std::vector<double>> f;
  std::vector<double> ms;
  for (const auto& [size, width, blocks] : calibration) {
    const LayerGraph g = mobile(size, width, blocks);
    f.push_back(adapt::latency_features(g));
    ms.push_back(adapt::measure_target_latency(g, cpu1, 15));
  }
  const adapt::LatencyModel m = adapt::LatencyModel::fit(f, ms);
  const LayerGraph probe = mobile(28, 24, 3);
  const double predicted = m.predict(probe);
  const double measured = adapt::measure_target_latency(probe, cpu1, 15);
  MESSAGE("predicted " << predicted << " ms, measured " << measured
                       << " ms, leave-one-out median relative error " << m.median_relative_error());
  CHECK(predicted > measured / 3);
  CHECK(predicted < measured * 3);
}
