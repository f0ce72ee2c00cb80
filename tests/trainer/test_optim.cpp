#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "searchspace/error.h"
#include "trainer/optim.h"

using minas::LrSchedule;
using minas::Optimizer;
using minas::ParamKind;
using minas::Recipe;
using nlohmann::json;

namespace {

Recipe recipe(const json& fields) {
  return Recipe::from_json(fields, "test");
}

// 0.5 * sum a_i (w_i - c_i)^2: minimum 0 at w = c.
struct Quadratic {
  std::vector<float> a{0.5f, 1.0f, 2.0f}, c{1.0f, -2.0f, 0.5f};
  void gradient(const std::vector<float>& w, std::vector<float>& g) const {
    for (size_t i = 0; i < w.size(); ++i) g[i] = a[i] * (w[i] - c[i]);
  }
  double distance(const std::vector<float>& w) const {
    double s = 0;
    for (size_t i = 0; i < w.size(); ++i) s += (w[i] - c[i]) * (w[i] - c[i]);
    return std::sqrt(s);
  }
};

// Runs `steps` steps of the recipe's optimizer and schedule on the quadratic
// from w = 0 and returns the distance to the minimum.
double minimize(const Recipe& r, int steps) {
  Quadratic q;
  std::vector<float> w(3, 0.0f), g(3, 0.0f);
  Optimizer opt(r);
  opt.add_param(w.data(), g.data(), w.size(), ParamKind::weight);
  const LrSchedule sched(r, static_cast<uint64_t>(steps), static_cast<uint64_t>(steps));
  for (int s = 0; s < steps; ++s) {
    q.gradient(w, g);
    opt.step(sched.lr(static_cast<uint64_t>(s)), sched.momentum(static_cast<uint64_t>(s)));
  }
  return q.distance(w);
}

}  // namespace

TEST_SUITE_BEGIN("optim");

// OneCycleLR with max_lr 0.2, div_factor 25, final_div_factor 1e4:
//   initial = 0.2 / 25 = 0.008, min = 0.008 / 1e4 = 8e-7.
// T = 10, pct_start 0.3: e1 = 0.3*10 - 1 = 2, e2 = 9.
//   step 0: pct 0/2 = 0, cos(0)+1 = 2: lr = 0.2 + (0.008-0.2)/2*2 = 0.008, momentum 0.95
//   step 1: pct 1/2, cos(pi/2)+1 = 1: lr = 0.2 + (0.008-0.2)/2 = 0.104,
//           momentum 0.85 + (0.95-0.85)/2 = 0.9
//   step 2: pct 1, cos(pi)+1 = 0: lr = 0.2, momentum 0.85 (end of phase 1: step <= e1)
//   step 3: phase 2, pct (3-2)/(9-2) = 1/7:
//           lr = 8e-7 + (0.2-8e-7)/2 * (cos(pi/7)+1), momentum 0.95 + (0.85-0.95)/2*(cos(pi/7)+1)
//   step 9: pct 1: lr = 8e-7, momentum 0.95
// The values agree with PyTorch 1.13.1's OneCycleLR to the last printed digit
// (step 0: 0.008000000000000007, step 3: 0.19009692640269477).
TEST_CASE("optim onecycle schedule matches OneCycleLR, T = 10") {
  const Recipe r;
  const LrSchedule s(r, 10, 10);
  const double c7 = std::cos(std::numbers::pi / 7) + 1;
  CHECK(s.lr(0) == doctest::Approx(0.008).epsilon(1e-12));
  CHECK(s.momentum(0) == doctest::Approx(0.95).epsilon(1e-12));
  CHECK(s.lr(1) == doctest::Approx(0.104).epsilon(1e-12));
  CHECK(s.momentum(1) == doctest::Approx(0.9).epsilon(1e-12));
  CHECK(s.lr(2) == doctest::Approx(0.2).epsilon(1e-12));
  CHECK(s.momentum(2) == doctest::Approx(0.85).epsilon(1e-12));
  CHECK(s.lr(3) == doctest::Approx(8e-7 + (0.2 - 8e-7) / 2 * c7).epsilon(1e-12));
  CHECK(s.momentum(3) == doctest::Approx(0.95 + (0.85 - 0.95) / 2 * c7).epsilon(1e-12));
  CHECK(s.lr(9) == doctest::Approx(8e-7).epsilon(1e-12));
  CHECK(s.momentum(9) == doctest::Approx(0.95).epsilon(1e-12));
  // The same double arithmetic as PyTorch, hence the same bits.
  CHECK(s.lr(0) == 0.008000000000000007);
  CHECK(s.lr(3) == 0.19009692640269477);
  // Past the end: the last step's values (PyTorch would raise).
  CHECK(s.lr(10) == s.lr(9));
  CHECK(s.lr(1000) == s.lr(9));
  for (uint64_t k = 3; k < 9; ++k) CHECK(s.lr(k + 1) < s.lr(k));
}

// T = 12, pct_start 0.25: e1 = 0.25*12 - 1 = 2, e2 = 11, phase 2 over 9 steps.
//   step 5: pct 3/9 = 1/3, cos(pi/3)+1 = 1.5: lr = 8e-7 + (0.2-8e-7)*0.75 = 0.1500002,
//           momentum 0.95 + (0.85-0.95)*0.75 = 0.875
//   step 8: pct 2/3, cos(2pi/3)+1 = 0.5: lr = 8e-7 + 0.1999992*0.25 = 0.0500006,
//           momentum 0.95 - 0.1*0.25 = 0.925
// linear: step 3 pct 1/9: lr = (8e-7 - 0.2)/9 + 0.2 = 0.177777866..., momentum 0.85 + 0.1/9
TEST_CASE("optim onecycle schedule: phase 2 points and linear annealing") {
  const Recipe r = recipe({{"pct_start", 0.25}});
  const LrSchedule s(r, 12, 12);
  CHECK(s.lr(5) == doctest::Approx(0.1500002).epsilon(1e-12));
  CHECK(s.momentum(5) == doctest::Approx(0.875).epsilon(1e-12));
  CHECK(s.lr(8) == doctest::Approx(0.0500006).epsilon(1e-12));
  CHECK(s.momentum(8) == doctest::Approx(0.925).epsilon(1e-12));
  CHECK(s.lr(11) == doctest::Approx(8e-7).epsilon(1e-12));

  const LrSchedule lin(recipe({{"pct_start", 0.25}, {"anneal_strategy", "linear"}}), 12, 12);
  CHECK(lin.lr(0) == 0.008);
  CHECK(lin.lr(1) == doctest::Approx(0.104).epsilon(1e-12));
  CHECK(lin.lr(3) == doctest::Approx(0.2 + (8e-7 - 0.2) / 9).epsilon(1e-12));
  CHECK(lin.momentum(3) == doctest::Approx(0.85 + 0.1 / 9).epsilon(1e-12));

  const LrSchedule flat(recipe({{"cycle_momentum", false}, {"momentum", 0.7}}), 12, 12);
  CHECK(flat.momentum(0) == 0.7);
  CHECK(flat.momentum(5) == 0.7);
}

// Edge cases of the phase table.
//   T = 1: e1 = -0.7, so step 0 is in phase 2 from -0.7 to 0: pct 1, lr = min = 8e-7.
//   T = 3: e1 = 0.3*3 - 1 = -0.1 (0.8999999999999999 - 1): step 0 in phase 2 at
//          pct 0.1/2.1; PyTorch gives 0.19888308709018238.
//   T = 10, pct_start 0.1: e1 = 0 = start: PyTorch divides 0 by 0; we take pct 1, lr 0.2.
//   T = 468 (one epoch of torch_ref.py): e1 = 139.39999999999998, so step 139 is in
//          phase 1 and step 140 is past the peak; PyTorch: 0.19999609939047555, 0.1999983446816518.
TEST_CASE("optim onecycle schedule: degenerate phases and the reference run") {
  const Recipe r;
  CHECK(LrSchedule(r, 1, 1).lr(0) == doctest::Approx(8e-7).epsilon(1e-12));
  CHECK(LrSchedule(r, 1, 1).momentum(0) == doctest::Approx(0.95).epsilon(1e-12));
  const LrSchedule three(r, 3, 3);
  CHECK(three.lr(0) ==
        doctest::Approx(8e-7 + (0.2 - 8e-7) / 2 * (std::cos(std::numbers::pi * 0.1 / 2.1) + 1))
            .epsilon(1e-9));
  CHECK(three.lr(2) == doctest::Approx(8e-7).epsilon(1e-12));
  const LrSchedule zero_phase(recipe({{"pct_start", 0.1}}), 10, 10);
  CHECK(zero_phase.lr(0) == doctest::Approx(0.2).epsilon(1e-12));
  CHECK(std::isfinite(zero_phase.lr(1)));
  const LrSchedule ref(r, 468, 468);
  CHECK(ref.lr(139) == 0.19999609939047555);
  CHECK(ref.lr(140) == 0.1999983446816518);
  CHECK(ref.lr(467) == doctest::Approx(8e-7).epsilon(1e-12));
  CHECK_THROWS_AS(LrSchedule(r, 0, 0), minas::Error);
}

// cosine, lr 0.1, 10 steps, 5 per epoch, warm-up 0.4 epochs = 2 steps:
//   step 0: 0.1 * 1/2 = 0.05; step 1: 0.1 * 2/2 = 0.1
//   step 2: cosine at pct 0/8: 0.1; step 6: pct 4/8: 0.1 * (1+cos(pi/2))/2 = 0.05
//   step 9: pct 7/8: 0.1 * (1+cos(7pi/8))/2
TEST_CASE("optim cosine schedule with warm-up, and constant") {
  const Recipe r = recipe({{"schedule", "cosine"},
                           {"lr", 0.1},
                           {"warmup_epochs", 0.4},
                           {"epochs", 2},
                           {"momentum", 0.8}});
  const LrSchedule s(r, 5, 10);
  CHECK(s.warmup_steps() == 2);
  CHECK(s.lr(0) == doctest::Approx(0.05).epsilon(1e-12));
  CHECK(s.lr(1) == doctest::Approx(0.1).epsilon(1e-12));
  CHECK(s.lr(2) == doctest::Approx(0.1).epsilon(1e-12));
  CHECK(s.lr(6) == doctest::Approx(0.05).epsilon(1e-12));
  CHECK(s.lr(9) == doctest::Approx(0.1 * (1 + std::cos(7 * std::numbers::pi / 8)) / 2));
  CHECK(s.momentum(0) == 0.8);
  CHECK(s.momentum(9) == 0.8);

  const LrSchedule no_warmup(recipe({{"schedule", "cosine"}, {"lr", 0.1}}), 4, 4);
  CHECK(no_warmup.lr(0) == doctest::Approx(0.1).epsilon(1e-12));
  CHECK(no_warmup.lr(2) == doctest::Approx(0.05).epsilon(1e-12));
  // Warm-up as long as the run: all warm-up, no division by an empty cosine.
  const LrSchedule all_warmup(recipe({{"schedule", "cosine"}, {"lr", 0.1}, {"warmup_epochs", 1}}),
                              4, 4);
  CHECK(all_warmup.lr(3) == doctest::Approx(0.1).epsilon(1e-12));
  CHECK(all_warmup.lr(7) == doctest::Approx(0.1).epsilon(1e-12));

  const LrSchedule c(recipe({{"schedule", "constant"}, {"lr", 0.3}}), 100, 100);
  CHECK(c.lr(0) == 0.3);
  CHECK(c.lr(99) == 0.3);
  CHECK(c.momentum(50) == 0.9);
}

// w = [1, -2], g = [0.5, 0.25], lr 0.1, momentum 0.9, weight decay 0.01 coupled:
//   d = g + 0.01 w = [0.51, 0.23]
//   nesterov, step 1: buf = d; u = d + 0.9 buf = 1.9 d = [0.969, 0.437];
//     w = [1 - 0.0969, -2 - 0.0437] = [0.9031, -2.0437]
//   step 2 (same g): d = [0.5 + 0.009031, 0.25 - 0.020437] = [0.509031, 0.229563];
//     buf = 0.9 [0.51, 0.23] + d = [0.968031, 0.436563];
//     u = d + 0.9 buf = [1.3802589, 0.6224697]; w = [0.76507411, -2.10594697]
//   plain momentum, step 1: w = w - 0.1 d = [0.949, -2.023]
//   step 2: d = [0.50949, 0.22977]; buf = [0.459 + 0.50949, 0.207 + 0.22977]
//     = [0.96849, 0.43677]; w = [0.8521510, -2.066677]
// PyTorch 1.13.1 SGD gives [0.76507413, -2.10594702] and [0.85215098, -2.06667709].
TEST_CASE("optim SGD steps by hand: Nesterov and plain momentum, coupled decay") {
  for (const bool nesterov : {true, false}) {
    CAPTURE(nesterov);
    std::vector<float> w{1.0f, -2.0f}, g{0.5f, 0.25f};
    Optimizer opt(recipe({{"weight_decay", 0.01}, {"nesterov", nesterov}}));
    opt.add_param(w.data(), g.data(), 2, ParamKind::weight);
    opt.step(0.1, 0.9);
    CHECK(w[0] == doctest::Approx(nesterov ? 0.9031 : 0.949).epsilon(1e-6));
    CHECK(w[1] == doctest::Approx(nesterov ? -2.0437 : -2.023).epsilon(1e-6));
    CHECK(opt.momentum_buffer(0)[0] == doctest::Approx(0.51).epsilon(1e-6));
    opt.step(0.1, 0.9);
    CHECK(w[0] == doctest::Approx(nesterov ? 0.76507411 : 0.8521510).epsilon(1e-6));
    CHECK(w[1] == doctest::Approx(nesterov ? -2.10594697 : -2.066677).epsilon(1e-6));
    CHECK(g[0] == 0.5f);  // gradients are read, not changed
  }
}

// Decoupled, same numbers, Nesterov: shrink = 1 - 0.1*0.01 = 0.999, d = g,
//   buf = g, u = 1.9 g = [0.95, 0.475]; w = 0.999 w - 0.1 u = [0.904, -2.0455]
// (coupled gave [0.9031, -2.0437]: the decay is not amplified by momentum).
// no_decay_bn_bias: a bias [1] with zero gradient stays exactly 1; the weight decays.
// momentum 0: w = [1, -2] - 0.1 * ([0.5, 0.25] + 0.01 [1, -2]) = [0.949, -2.023].
TEST_CASE("optim SGD steps by hand: decoupled decay, no-decay kinds, momentum 0") {
  std::vector<float> w{1.0f, -2.0f}, g{0.5f, 0.25f};
  Optimizer dec(recipe({{"weight_decay", 0.01}, {"weight_decay_mode", "decoupled"}}));
  dec.add_param(w.data(), g.data(), 2, ParamKind::weight);
  CHECK(dec.rule(0, 0.1, 0.9).shrink == doctest::Approx(0.999));
  CHECK(dec.rule(0, 0.1, 0.9).l2 == 0.0f);
  dec.step(0.1, 0.9);
  CHECK(w[0] == doctest::Approx(0.904).epsilon(1e-6));
  CHECK(w[1] == doctest::Approx(-2.0455).epsilon(1e-6));

  for (const auto* mode : {"coupled", "decoupled"}) {
    CAPTURE(mode);
    std::vector<float> weight{1.0f}, bias{1.0f}, bn{1.0f}, zero{0.0f};
    Optimizer opt(
        recipe({{"weight_decay", 0.01}, {"weight_decay_mode", mode}, {"no_decay_bn_bias", true}}));
    opt.add_param(weight.data(), zero.data(), 1, ParamKind::weight);
    opt.add_param(bias.data(), zero.data(), 1, ParamKind::bias);
    opt.add_param(bn.data(), zero.data(), 1, ParamKind::bn);
    opt.step(0.1, 0.9);
    CHECK(weight[0] < 1.0f);
    CHECK(bias[0] == 1.0f);
    CHECK(bn[0] == 1.0f);
  }
  std::vector<float> b{1.0f};
  std::vector<float> zero{0.0f};
  Optimizer decays_all(recipe({{"weight_decay", 0.01}}));
  decays_all.add_param(b.data(), zero.data(), 1, ParamKind::bias);
  decays_all.step(0.1, 0.9);
  CHECK(b[0] < 1.0f);

  std::vector<float> w0{1.0f, -2.0f};
  Optimizer plain(recipe({{"weight_decay", 0.01}, {"nesterov", true}}));
  plain.add_param(w0.data(), g.data(), 2, ParamKind::weight);
  plain.step(0.1, 0.0);
  CHECK(w0[0] == doctest::Approx(0.949).epsilon(1e-6));
  CHECK(w0[1] == doctest::Approx(-2.023).epsilon(1e-6));
}

// LARS, eta 0.1, weight decay 0.2, momentum 0.9, no Nesterov, lr 1:
//   w = [3, 4] (|w| = 5), g = [0.6, 0.8] (|g| = 1)
//   ratio = 0.1*5 / (1 + 0.2*5) = 0.25; d = 0.25 (g + 0.2 w) = 0.25 [1.2, 1.6] = [0.3, 0.4]
//   buf = d; w = [2.7, 3.6]
//   step 2 (same g): |w| = 4.5, ratio = 0.45 / 1.9; g + 0.2 w = [1.14, 1.52] = 1.9 [0.6, 0.8]
//   so d = 0.45 [0.6, 0.8] = [0.27, 0.36]; buf = 0.9 [0.3, 0.4] + d = [0.54, 0.72];
//   w = [2.16, 2.88]
// A bn tensor is not adapted: plain SGD, w = [3, 4] - 1 * ([0.6, 0.8] + 0.2 [3, 4]) = [1.8, 2.4].
TEST_CASE("optim LARS steps by hand, skipped for bn and bias") {
  const Recipe r = recipe(
      {{"optimizer", "lars"}, {"lars_eta", 0.1}, {"weight_decay", 0.2}, {"nesterov", false}});
  std::vector<float> w{3.0f, 4.0f}, g{0.6f, 0.8f}, bn{3.0f, 4.0f};
  Optimizer opt(r);
  opt.add_param(w.data(), g.data(), 2, ParamKind::weight);
  opt.add_param(bn.data(), g.data(), 2, ParamKind::bn);
  CHECK(opt.rule(0, 1.0, 0.9).trust_ratio == doctest::Approx(0.25).epsilon(1e-6));
  CHECK(opt.rule(1, 1.0, 0.9).trust_ratio == 1.0f);
  opt.step(1.0, 0.9);
  CHECK(w[0] == doctest::Approx(2.7).epsilon(1e-6));
  CHECK(w[1] == doctest::Approx(3.6).epsilon(1e-6));
  CHECK(bn[0] == doctest::Approx(1.8).epsilon(1e-6));
  CHECK(bn[1] == doctest::Approx(2.4).epsilon(1e-6));
  opt.step(1.0, 0.9);
  CHECK(w[0] == doctest::Approx(2.16).epsilon(1e-6));
  CHECK(w[1] == doctest::Approx(2.88).epsilon(1e-6));

  CHECK(minas::lars_trust_ratio(w.data(), g.data(), 2, 0.1, 0.2) ==
        doctest::Approx(0.1 * 3.6 / (1 + 0.2 * 3.6)).epsilon(1e-6));
  // A zero tensor or zero gradient without decay: ratio 1, never 0 or a division by 0.
  std::vector<float> zeros{0.0f, 0.0f};
  CHECK(minas::lars_trust_ratio(zeros.data(), g.data(), 2, 0.1, 0.2) == 1.0f);
  CHECK(minas::lars_trust_ratio(w.data(), zeros.data(), 2, 0.1, 0.0) == 1.0f);
}

TEST_CASE("optim Optimizer keeps its buffers and agrees with momentum_update") {
  std::vector<float> w1{0.3f, -0.7f, 1.1f}, w2 = w1, g{0.2f, -0.1f, 0.4f}, buf(3, 0.0f);
  Optimizer opt(Recipe{});
  opt.add_param(w1.data(), g.data(), 3, ParamKind::weight);
  const float* before = opt.momentum_buffer(0).data();
  for (int s = 0; s < 3; ++s) {
    const minas::UpdateRule rule = opt.rule(0, 0.05, 0.9);
    minas::momentum_update(w2.data(), g.data(), buf.data(), 3, rule);
    opt.step(0.05, 0.9);
  }
  CHECK(opt.momentum_buffer(0).data() == before);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(w1[i] == w2[i]);
    CHECK(opt.momentum_buffer(0)[i] == buf[i]);
  }
  opt.reset();
  CHECK(opt.momentum_buffer(0)[0] == 0.0f);
  CHECK(opt.size() == 1);
}

TEST_CASE("optim SGD, Nesterov and LARS drive a convex quadratic to its minimum") {
  const double start = Quadratic{}.distance({0.0f, 0.0f, 0.0f});
  const json base = {{"weight_decay", 0}, {"epochs", 1}};
  json sgd = base, nesterov = base, lars = base, onecycle = base;
  sgd.update({{"schedule", "constant"}, {"lr", 0.1}, {"nesterov", false}});
  nesterov.update({{"schedule", "constant"}, {"lr", 0.1}});
  // LARS takes steps of about lr*eta*|w| whatever |g| is, so it needs the lr to decay.
  lars.update({{"schedule", "cosine"}, {"lr", 20.0}, {"optimizer", "lars"}, {"lars_eta", 0.01}});
  onecycle.update({{"lr", 0.5}});
  for (const json& fields : {sgd, nesterov, lars, onecycle}) {
    CAPTURE(fields.dump());
    const double d = minimize(recipe(fields), 300);
    CHECK(d < 1e-3 * start);
  }
}

TEST_SUITE_END();
