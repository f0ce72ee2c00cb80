#include "trainer/optim.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "searchspace/error.h"

namespace minas {

namespace {

// OneCycleLR._annealing_cos and _annealing_linear, term for term.
double anneal(AnnealStrategy strategy, double start, double end, double pct) {
  if (strategy == AnnealStrategy::linear) return (end - start) * pct + start;
  const double cos_out = std::cos(std::numbers::pi * pct) + 1;
  return end + (start - end) / 2.0 * cos_out;
}

}  // namespace

LrSchedule::LrSchedule(const Recipe& recipe, uint64_t steps_per_epoch, uint64_t total_steps)
    : kind_(recipe.schedule),
      total_(total_steps),
      peak_(recipe.lr),
      momentum_(recipe.momentum),
      pct_start_(recipe.pct_start),
      initial_lr_(recipe.lr / recipe.div_factor),
      min_lr_(recipe.lr / recipe.div_factor / recipe.final_div_factor),
      anneal_(recipe.anneal_strategy),
      cycle_momentum_(recipe.cycle_momentum),
      base_momentum_(recipe.base_momentum),
      max_momentum_(recipe.max_momentum) {
  if (total_steps == 0)
    throw Error("lr schedule", "the training has 0 optimizer steps: nothing to schedule");
  if (kind_ == ScheduleKind::cosine) {
    const double w = std::round(recipe.warmup_epochs * static_cast<double>(steps_per_epoch));
    warmup_ = w >= static_cast<double>(total_) ? total_ : static_cast<uint64_t>(w);
  }
}

LrSchedule::Point LrSchedule::at(double step) const {
  // Whole steps reach here as exact doubles, so integer and fractional
  // positions share these formulas.
  const double s = std::clamp(step, 0.0, static_cast<double>(total_ - 1));
  switch (kind_) {
    case ScheduleKind::constant:
      return {peak_, momentum_};
    case ScheduleKind::cosine: {
      if (s < static_cast<double>(warmup_))
        return {peak_ * (s + 1) / static_cast<double>(warmup_), momentum_};
      const double pct = (s - static_cast<double>(warmup_)) / static_cast<double>(total_ - warmup_);
      return {peak_ * (1 + std::cos(std::numbers::pi * pct)) / 2, momentum_};
    }
    case ScheduleKind::onecycle: {
      // PyTorch's phase table: a step belongs to the first phase whose end it does
      // not pass, the last phase taking everything after.
      const double end1 = pct_start_ * static_cast<double>(total_) - 1;
      const double end2 = static_cast<double>(total_) - 1;
      const bool first = s <= end1;
      const double start = first ? 0 : end1, end = first ? end1 : end2;
      const double pct = end == start ? 1.0 : (s - start) / (end - start);
      const double lr =
          first ? anneal(anneal_, initial_lr_, peak_, pct) : anneal(anneal_, peak_, min_lr_, pct);
      if (!cycle_momentum_) return {lr, momentum_};
      const double m = first ? anneal(anneal_, max_momentum_, base_momentum_, pct)
                             : anneal(anneal_, base_momentum_, max_momentum_, pct);
      return {lr, m};
    }
  }
  return {peak_, momentum_};
}

double LrSchedule::lr(uint64_t step) const {
  return at(static_cast<double>(std::min(step, total_ - 1))).lr;
}
double LrSchedule::momentum(uint64_t step) const {
  return at(static_cast<double>(std::min(step, total_ - 1))).momentum;
}

namespace {

// Where x lies in [a, b] mapped into [c, d] (d's end when [a, b] is empty).
double rescale(double x, double a, double b, double c, double d) {
  return b > a ? c + (x - a) / (b - a) * (d - c) : d;
}

}  // namespace

double LrSchedule::matching_position(const LrSchedule& other, double position) const {
  const double v = std::clamp(position, 0.0, static_cast<double>(other.total_ - 1));
  const double t_old = static_cast<double>(other.total_), t_new = static_cast<double>(total_);
  switch (kind_) {
    case ScheduleKind::constant:
      return v / t_old * t_new;
    case ScheduleKind::cosine: {
      const double w_old = static_cast<double>(other.warmup_), w_new = static_cast<double>(warmup_);
      if (v < w_old)  // the same warm-up rate: (v + 1) / w_old = (v' + 1) / w_new
        return w_old == w_new ? v : (v + 1) * w_new / w_old - 1;
      return rescale(v, w_old, t_old, w_new, t_new);
    }
    case ScheduleKind::onecycle: {
      const double e1_old = pct_start_ * t_old - 1, e1_new = pct_start_ * t_new - 1;
      if (v <= e1_old) return rescale(v, 0, e1_old, 0, std::max(e1_new, 0.0));
      return rescale(v, e1_old, t_old - 1, e1_new, t_new - 1);
    }
  }
  return v;
}

ElasticSchedule::ElasticSchedule(const Recipe& recipe, uint64_t steps_per_epoch,
                                 uint64_t total_steps)
    : recipe_(recipe), per_epoch_(steps_per_epoch), curve_(recipe, steps_per_epoch, total_steps) {}

void ElasticSchedule::replan(uint64_t step, uint64_t total_steps) {
  if (step >= total_steps)
    throw Error("lr schedule", "a re-plan at step " + std::to_string(step) + " to " +
                                   std::to_string(total_steps) + " steps in all leaves none");
  if (total_steps == curve_.total_steps()) return;  // the walk goes on as it was
  LrSchedule next(recipe_, per_epoch_, total_steps);
  at_ = std::clamp(next.matching_position(curve_, position(step)), 0.0,
                   static_cast<double>(total_steps - 1));
  from_ = step;
  curve_ = next;
  ++replans_;
}

double ElasticSchedule::position(uint64_t step) const {
  if (replans_ == 0) return static_cast<double>(step);
  // A straight walk from (from_, at_) to (last, last): the plan's last step
  // gets the curve's last rate, however fast the walk must go to reach it.
  const double last = static_cast<double>(curve_.total_steps() - 1);
  const double left = last - static_cast<double>(from_);
  if (left <= 0) return last;
  const double done = static_cast<double>(step) - static_cast<double>(from_);
  return at_ + done * (last - at_) / left;
}

double ElasticSchedule::lr(uint64_t step) const {
  return replans_ == 0 ? curve_.lr(step) : curve_.lr_at(position(step));
}
double ElasticSchedule::momentum(uint64_t step) const {
  return replans_ == 0 ? curve_.momentum(step) : curve_.momentum_at(position(step));
}

void momentum_update(float* w, const float* g, float* buf, size_t n, const UpdateRule& rule) {
  const float lr = rule.lr, mu = rule.momentum, l2 = rule.l2, shrink = rule.shrink,
              ratio = rule.trust_ratio;
  // Two loops so that the compiler vectorizes each without a branch inside.
  if (rule.nesterov) {
    for (size_t i = 0; i < n; ++i) {
      const float d = ratio * (g[i] + l2 * w[i]);
      buf[i] = mu * buf[i] + d;
      w[i] = shrink * w[i] - lr * (d + mu * buf[i]);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const float d = ratio * (g[i] + l2 * w[i]);
      buf[i] = mu * buf[i] + d;
      w[i] = shrink * w[i] - lr * buf[i];
    }
  }
}

float lars_trust_ratio(const float* w, const float* g, size_t n, double eta, double weight_decay) {
  double ww = 0, gg = 0;
  for (size_t i = 0; i < n; ++i) {
    ww += static_cast<double>(w[i]) * w[i];
    gg += static_cast<double>(g[i]) * g[i];
  }
  const double w_norm = std::sqrt(ww), g_norm = std::sqrt(gg);
  const double denominator = g_norm + weight_decay * w_norm;
  if (w_norm == 0 || denominator == 0 || !std::isfinite(denominator)) return 1.0f;
  return static_cast<float>(eta * w_norm / denominator);
}

Optimizer::Optimizer(const Recipe& recipe)
    : kind_(recipe.optimizer),
      nesterov_(recipe.nesterov),
      weight_decay_(recipe.weight_decay),
      mode_(recipe.weight_decay_mode),
      no_decay_bn_bias_(recipe.no_decay_bn_bias),
      lars_eta_(recipe.lars_eta) {}

void Optimizer::add_param(float* w, float* g, size_t n, ParamKind kind) {
  params_.push_back({w, g, n, kind, std::vector<float>(n, 0.0f)});
}

UpdateRule Optimizer::rule(size_t i, double lr, double momentum) const {
  const Param& p = params_.at(i);
  const double wd = no_decay_bn_bias_ && p.kind != ParamKind::weight ? 0.0 : weight_decay_;
  UpdateRule r;
  r.lr = static_cast<float>(lr);
  r.momentum = static_cast<float>(momentum);
  r.nesterov = nesterov_;
  if (mode_ == WeightDecayMode::coupled)
    r.l2 = static_cast<float>(wd);
  else
    r.shrink = static_cast<float>(1.0 - lr * wd);
  if (kind_ == OptimizerKind::lars && p.kind == ParamKind::weight)
    r.trust_ratio = lars_trust_ratio(p.w, p.g, p.n, lars_eta_, wd);
  return r;
}

void Optimizer::step(double lr, double momentum) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    momentum_update(p.w, p.g, p.buf.data(), p.n, rule(i, lr, momentum));
  }
}

void Optimizer::reset() {
  for (Param& p : params_) std::fill(p.buf.begin(), p.buf.end(), 0.0f);
}

}  // namespace minas
