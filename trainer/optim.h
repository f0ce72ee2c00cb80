#pragma once
// Learning-rate schedules and parameter updates. The update is defined here,
// once, on flat float arrays: the CPU backend calls momentum_update() per
// parameter tensor and the GPU backend's kernels compute the same formulas, so
// this header is their specification and the CPU loop their test oracle.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "trainer/recipe.h"

namespace minas {

// ---------------------------------------------------------------- schedules

// The learning rate and momentum of every optimizer step of one training run.
//
// onecycle: exactly torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps=T,
//   pct_start, anneal_strategy, cycle_momentum, base_momentum, max_momentum,
//   div_factor, final_div_factor, three_phase=False), in double precision:
//     initial = lr / div_factor, min = initial / final_div_factor
//     phase 1: steps 0 .. e1 with e1 = pct_start*T - 1 (a double, not rounded):
//              lr initial -> lr, momentum max_momentum -> base_momentum
//     phase 2: steps (e1, e2] with e2 = T - 1, starting from e1:
//              lr lr -> min, momentum base_momentum -> max_momentum
//     pct = (step - phase start) / (phase end - phase start), phase 1 starting at 0
//     cos:    end + (start - end) / 2 * (cos(pi * pct) + 1)
//     linear: (end - start) * pct + start
//   Where PyTorch divides by zero (pct_start*T == 1 at step 0) pct is 1. Without
//   cycle_momentum the momentum is the recipe's, as PyTorch leaves SGD's own.
// cosine: W = round(warmup_epochs * steps_per_epoch) warm-up steps (at most T):
//   step s < W: lr * (s + 1) / W; then lr * (1 + cos(pi * (s - W) / (T - W))) / 2,
//   which is CosineAnnealingLR(T_max = T - W, eta_min = 0): 0 at step T, never taken.
// constant: lr.
// Both of the last two keep the recipe's momentum.
class LrSchedule {
 public:
  // total_steps (>= 1): optimizer steps in the whole run; steps_per_epoch turns
  // warmup_epochs into steps. A run bounded by time fixes total_steps from its
  // measured speed. Throws Error when total_steps is 0.
  LrSchedule(const Recipe& recipe, uint64_t steps_per_epoch, uint64_t total_steps);

  // For the step-th optimizer step (0-based): what PyTorch's scheduler has set
  // when optimizer.step() runs for that step. Steps past the end get the last step's.
  double lr(uint64_t step) const;
  double momentum(uint64_t step) const;
  uint64_t total_steps() const { return total_; }
  uint64_t warmup_steps() const { return warmup_; }  // cosine only, else 0

  // The same curve at a fractional position in [0, total_steps - 1] (clamped):
  // the formulas above with the step a real number. At a whole number it is
  // lr(step) and momentum(step) exactly.
  double lr_at(double position) const { return at(position).lr; }
  double momentum_at(double position) const { return at(position).momentum; }
  // The position on this curve that matches `position` on `other`, a curve of
  // the same recipe and another length: the same place in the same phase
  // (onecycle: the same fraction of its phase; cosine: a warm-up step stays
  // that step, a point of the decay the same fraction of the decay), so both
  // give the same rate there.
  double matching_position(const LrSchedule& other, double position) const;

 private:
  struct Point {
    double lr, momentum;
  };
  Point at(double step) const;

  ScheduleKind kind_;
  uint64_t total_;
  uint64_t warmup_ = 0;
  double peak_, momentum_;
  double pct_start_, initial_lr_, min_lr_;
  AnnealStrategy anneal_;
  bool cycle_momentum_;
  double base_momentum_, max_momentum_;
};

// The schedule of a run whose length is known only as it runs (a time
// budget: the steps it buys are measured while training). It starts as
// LrSchedule(total) and replan(step, total) changes the length from `step` on:
// the curve goes on from the place it had reached (matching_position: the rate
// does not jump) and is walked to its end over the steps now left, so the last
// step of the new plan gets the curve's last rate. A cosine warm-up counted in
// steps stays in steps, so re-planning during it only moves the end. Without
// replan() it is LrSchedule step for step, bit for bit.
class ElasticSchedule {
 public:
  ElasticSchedule(const Recipe& recipe, uint64_t steps_per_epoch, uint64_t total_steps);

  // From `step` on the run has total_steps steps in all. Throws Error unless
  // step < total_steps.
  void replan(uint64_t step, uint64_t total_steps);

  // For steps from the last replan's on (earlier ones had the plan of their time).
  double lr(uint64_t step) const;
  double momentum(uint64_t step) const;
  double position(uint64_t step) const;  // where on the curve of total_steps() steps
  uint64_t total_steps() const { return curve_.total_steps(); }
  int replans() const { return replans_; }

 private:
  Recipe recipe_;
  uint64_t per_epoch_;
  LrSchedule curve_;
  uint64_t from_ = 0;  // the step of the last replan
  double at_ = 0;      // its position on curve_
  int replans_ = 0;
};

// ------------------------------------------------------------------ updates

// What a parameter tensor is; decides weight decay (no_decay_bn_bias) and LARS.
enum class ParamKind { weight, bias, bn };

// The update of one tensor in one step, everything per-tensor resolved, passed
// by value to a kernel. For every element i, in float32 (a kernel may fuse
// multiply-adds, so backends agree to rounding, not bit for bit):
//   d      = trust_ratio * (g[i] + l2 * w[i])
//   buf[i] = momentum * buf[i] + d
//   u      = nesterov ? d + momentum * buf[i] : buf[i]
//   w[i]   = shrink * w[i] - lr * u
// This is torch.optim.SGD with dampening 0 when trust_ratio = 1 and shrink = 1:
// buffers start at zero, so the first step gives buf = d exactly as PyTorch's
// clone of the first gradient does, and momentum 0 gives plain SGD.
struct UpdateRule {
  float lr = 0;
  float momentum = 0;
  float l2 = 0;           // coupled weight decay of this tensor (0 if decoupled or skipped)
  float shrink = 1;       // decoupled: 1 - lr * weight_decay (1 if coupled or skipped)
  float trust_ratio = 1;  // LARS's local learning rate; 1 for SGD and tensors LARS skips
  bool nesterov = false;
};

// One step of one tensor of n elements. g is read only; buf is its momentum buffer.
void momentum_update(float* w, const float* g, float* buf, size_t n, const UpdateRule& rule);

// LARS trust ratio (You, Gitman, Ginsburg 2017, "Large Batch Training of
// Convolutional Networks", eq. 6): eta * ||w|| / (||g|| + weight_decay * ||w||),
// with Euclidean norms of the whole tensor (accumulated in double here; any
// order and at least float precision in a kernel). It is 1 when ||w|| or the
// denominator is 0, so fresh zero tensors still move.
float lars_trust_ratio(const float* w, const float* g, size_t n, double eta, double weight_decay);

// The optimizer of one network: per-tensor state allocated by add_param, so
// step() allocates nothing. Reads from the recipe: optimizer, nesterov,
// weight_decay, weight_decay_mode, no_decay_bn_bias, lars_eta.
//   tensor weight decay: weight_decay, or 0 for bias and bn when no_decay_bn_bias;
//     coupled -> l2 = it; decoupled -> shrink = 1 - lr * it (1 - lr*wd computed in double)
//   sgd:  trust_ratio = 1
//   lars: trust_ratio = lars_trust_ratio(w, g, eta, tensor weight decay) for weights,
//     computed from this step's w and g before the update; bias and bn tensors
//     are not adapted (ratio 1). The ratio scales the decayed gradient before
//     momentum and the scheduled lr multiplies the step, as PyTorch's SGD applies
//     lr (the paper puts lr inside the momentum buffer, which differs only while
//     lr changes).
class Optimizer {
 public:
  explicit Optimizer(const Recipe& recipe);

  // Registers a tensor of n weights w and their gradients g, both of which must
  // stay valid, and allocates its momentum buffer, zeroed.
  void add_param(float* w, float* g, size_t n, ParamKind kind);
  // One update of every registered tensor from its current gradient.
  void step(double lr, double momentum);

  size_t size() const { return params_.size(); }  // tensors registered
  // The rule step() would apply to tensor i now (LARS reads w and g for its ratio).
  UpdateRule rule(size_t i, double lr, double momentum) const;
  // Tensor i's momentum buffer, to save and restore with a checkpoint.
  std::span<float> momentum_buffer(size_t i) { return params_.at(i).buf; }
  std::span<const float> momentum_buffer(size_t i) const { return params_.at(i).buf; }
  void reset();  // zeroes every momentum buffer: the next step is a first step

 private:
  struct Param {
    float* w;
    float* g;
    size_t n;
    ParamKind kind;
    std::vector<float> buf;
  };
  OptimizerKind kind_;
  bool nesterov_;
  double weight_decay_;
  WeightDecayMode mode_;
  bool no_decay_bn_bias_;
  double lars_eta_;
  std::vector<Param> params_;
};

}  // namespace minas
