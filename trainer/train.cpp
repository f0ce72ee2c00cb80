#include "trainer/train.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "searchspace/error.h"
#include "trainer/engine.h"
#include "trainer/optim.h"

namespace minas {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void check_fits(const LayerGraph& g, const data::Dataset& ds) {
  if (ds.shape != g.input_shape())
    throw Error("data " + ds.source, "images are " + to_string(ds.shape) + ", the network takes " +
                                         to_string(g.input_shape()));
  if (ds.classes > g.classes())
    throw Error("data " + ds.source, std::to_string(ds.classes) + " classes, the network has " +
                                         std::to_string(g.classes()) + " outputs");
}

// A model's compiled eval network with its batch buffers, made once per run.
class Evaluator {
 public:
  Evaluator(Model& model, Backend& backend, int batch, const data::Normalization& norm)
      : net_(backend.compile(model, batch, NetMode::eval, {})),
        batch_(batch),
        classes_(model.graph().classes()),
        image_(static_cast<size_t>(model.graph().input_shape().elements())),
        norm_(norm),
        x_(static_cast<size_t>(batch) * image_, 0.0f),
        y_(static_cast<size_t>(batch)),
        logits_(static_cast<size_t>(batch) * classes_) {}

  double accuracy(const data::Dataset& ds, std::span<const uint32_t> indices) {
    if (indices.empty()) return std::numeric_limits<double>::quiet_NaN();
    int64_t right = 0;
    for (size_t first = 0; first < indices.size(); first += static_cast<size_t>(batch_)) {
      const size_t n = std::min(indices.size() - first, static_cast<size_t>(batch_));
      // A short last batch is padded with zeros; eval mode treats samples independently.
      if (n < static_cast<size_t>(batch_)) std::fill(x_.begin(), x_.end(), 0.0f);
      data::normalize(ds, indices.subspan(first, n), norm_, x_.data(), y_.data());
      net_->infer(x_.data(), logits_.data());
      for (size_t i = 0; i < n; ++i) {
        const float* z = logits_.data() + i * static_cast<size_t>(classes_);
        right += std::max_element(z, z + classes_) - z == y_[i];
      }
    }
    return static_cast<double>(right) / static_cast<double>(indices.size());
  }

 private:
  std::unique_ptr<Network> net_;
  int batch_, classes_;
  size_t image_;
  data::Normalization norm_;
  std::vector<float> x_;
  std::vector<int32_t> y_;
  std::vector<float> logits_;
};

// Seeds the training subset's draw apart from the validation split's ("subset").
constexpr uint64_t kSubsetSeedSalt = 0x0000007375627365ULL;

// The steps at which a run validates inside its epochs: each point of
// validate_at (epochs) at its nearest step inside the epoch it lies in.
std::vector<std::pair<double, uint64_t>> point_steps(const std::vector<double>& at,
                                                     uint64_t per_epoch) {
  std::vector<std::pair<double, uint64_t>> out;
  for (double a : at) {
    if (!std::isfinite(a) || !(a > 0) || std::trunc(a) == a || a > 1e6)
      throw Error("validate_at",
                  "a point inside an epoch must be a fraction above 0 and not "
                  "a whole epoch (that one is validated anyway), got " +
                      nlohmann::json(a).dump());
    if (!out.empty() && !(a > out.back().first))
      throw Error("validate_at", "points must be ascending, got " + nlohmann::json(a).dump() +
                                     " after " + nlohmann::json(out.back().first).dump());
    const uint64_t whole = static_cast<uint64_t>(std::floor(a));
    const auto step = static_cast<uint64_t>(std::llround(a * static_cast<double>(per_epoch)));
    out.emplace_back(a, std::clamp(step, whole * per_epoch + 1, (whole + 1) * per_epoch));
  }
  return out;
}

// No epoch cap on a run bounded by time alone; a float carries step counts
// exactly up to 2^24, so that is the most a plan broadcast to ranks may hold.
constexpr uint64_t kNoStepCap = uint64_t{1} << 24;

// The checkpoint tensor of an engine's loss scaler (StepEngine::loss_scaler).
constexpr const char* kLossScalerTensor = "optimizer.loss_scaler";

// The engine a run trains through: the backend's resident one when it offers
// one and the options allow it, else the host engine.
std::unique_ptr<StepEngine> make_engine(Model& model, Backend& backend, const EngineSetup& setup,
                                        bool resident) {
  if (resident)
    if (auto e = backend.resident_engine(model, setup)) return e;
  return make_host_engine(model, backend, setup);
}

// Seconds per training step of `model` at this batch: a few steps of a
// throwaway copy through an engine of the run's kind, after one untimed step
// (first-run costs, a graph's capture).
double probe_step_seconds(const Model& model, Backend& backend, EngineSetup setup, bool resident) {
  Model probe_model = model;
  setup.comm = setup.device_comm = nullptr;  // the copy's gradients are nobody's to reduce
  auto probe = make_engine(probe_model, backend, setup, resident);
  const int probes = 3;
  const ElasticSchedule schedule(*setup.recipe, probe->steps_per_epoch(), probes + 1);
  probe->use_schedule(schedule);
  const uint64_t per_epoch = probe->steps_per_epoch();
  auto step = [&](uint64_t i) {
    if (i > 0 && i % per_epoch == 0) probe->start_epoch(i / per_epoch);  // a tiny data set
    probe->step(i);
  };
  step(0);
  probe->epoch_sums();  // waits for it
  const auto t0 = Clock::now();
  for (int i = 1; i <= probes; ++i) step(static_cast<uint64_t>(i));
  probe->epoch_sums();
  return std::max(seconds_since(t0) / probes, 1e-6);
}

// Rank 0's step count on every rank (exact in a float up to kNoStepCap).
uint64_t broadcast_steps(Communicator& comm, uint64_t steps) {
  float t = static_cast<float>(std::min(steps, kNoStepCap));
  comm.broadcast(std::span<float>(&t, 1), 0);
  return static_cast<uint64_t>(t);
}

// The length of a run bounded by time, planned from what its steps take.
// A probe's speed gives a first plan; then, whenever a segment of the run has
// lasted a twentieth of the budget or covered half the steps the plan had
// left (at least kMinSteps steps either way), the plan is made again from the
// segment's own seconds per step and the last validation pass's seconds: the
// steps that fit in what is left of the budget. So a bad probe costs one
// segment, not the run, and a machine that slows down or speeds up is
// followed. Only rank 0's TimePlan measures and decides; the others take
// its numbers (broadcast_steps).
class TimePlan {
 public:
  static constexpr uint64_t kMinSteps = 3;

  TimePlan(double budget_s, Clock::time_point start, uint64_t cap, uint64_t per_epoch,
           double val_share)
      : budget_s_(budget_s),
        start_(start),
        cap_(cap),
        per_epoch_(per_epoch),
        val_share_(val_share) {}

  // The first plan, from a probe's seconds per step; long enough that the
  // first segment can measure before it would end.
  uint64_t first(double step_s) {
    const double left = std::max(budget_s_ - seconds_since(start_), 0.0);
    const double steps = left / (step_s * (1 + val_share_));
    total_ = steps >= static_cast<double>(cap_) ? cap_ : static_cast<uint64_t>(steps);
    total_ = std::min(cap_, std::max(total_, 2 * kMinSteps));
    return total_;
  }

  void start(uint64_t step, Clock::time_point now) {
    from_ = step;
    segment_start_ = now;
    loop_s_ = 0;
    loop_mark_ = now;
  }
  // Between these two the step loop runs; the rest of the time is validation
  // and what the caller does after each epoch.
  void loop_resumed() {
    loop_mark_ = Clock::now();
    if (in_validation_) validation_s_ = seconds_since(validation_started_);
    in_validation_ = false;
  }
  void loop_paused() {
    loop_s_ += seconds_since(loop_mark_);
    validation_started_ = Clock::now();
    in_validation_ = true;
  }

  // Whether to re-plan once `step` steps are done.
  bool due(uint64_t step) const {
    const uint64_t done = step - from_;
    if (done < kMinSteps || step >= cap_) return false;
    return seconds_since(segment_start_) >= budget_s_ / 20 || done >= (total_ - from_) / 2;
  }

  // The plan from here: step plus the steps the budget left buys at the
  // segment's speed, paying the validation passes they bring and the last one.
  uint64_t replan(uint64_t step) {
    const auto now = Clock::now();
    loop_s_ += std::chrono::duration<double>(now - loop_mark_).count();
    const double step_s = loop_s_ / static_cast<double>(std::max<uint64_t>(step - from_, 1));
    const double val_s =
        validation_s_ >= 0 ? validation_s_ : step_s * static_cast<double>(per_epoch_) * val_share_;
    const double left = budget_s_ - std::chrono::duration<double>(now - start_).count() - val_s;
    const double per_step = step_s + val_s / static_cast<double>(per_epoch_);
    const double more = left > 0 ? left / per_step : 0;
    const uint64_t cap_left = cap_ - step;
    total_ = step + std::max<uint64_t>(1, more >= static_cast<double>(cap_left)
                                              ? cap_left
                                              : static_cast<uint64_t>(more));
    start(step, now);
    return total_;
  }

 private:
  double budget_s_;
  Clock::time_point start_;
  uint64_t cap_, per_epoch_;
  double val_share_;
  uint64_t total_ = 1;
  uint64_t from_ = 0;                  // the segment's first step
  Clock::time_point segment_start_{};  // and when it began
  double loop_s_ = 0;                  // its seconds in the step loop so far
  Clock::time_point loop_mark_{};
  double validation_s_ = -1;  // the last validation's seconds, -1 before one
  Clock::time_point validation_started_{};
  bool in_validation_ = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

TrainSplit train_split(const LayerGraph& g, const Recipe& recipe, const data::TrainTest& data) {
  check_fits(g, data.train);
  check_fits(g, data.test);
  TrainSplit sp;
  if (recipe.val_size > 0) {
    data::Split s = data::split(data.train, static_cast<size_t>(recipe.val_size), recipe.seed);
    sp.train = std::move(s.train);
    sp.val = std::move(s.val);
  } else {
    sp.train = data::all_indices(data.train);
  }
  // A reduced-fidelity subset of the training images: stratified like the
  // validation split (each class in proportion), from a stream of its own so
  // that the subset is not tied to which images the split held out.
  const size_t pool = sp.train.size();
  const size_t keep =
      recipe.subset_size > 0 ? static_cast<size_t>(recipe.subset_size)
      : recipe.subset_fraction < 1
          ? std::max<size_t>(1, static_cast<size_t>(std::llround(recipe.subset_fraction *
                                                                 static_cast<double>(pool))))
          : pool;
  if (keep > pool)
    throw Error("recipe: /subset_size", "a subset of " + std::to_string(keep) +
                                            " images is larger than the " + std::to_string(pool) +
                                            " training images (after " +
                                            std::to_string(recipe.val_size) + " held out)");
  if (keep < pool)
    sp.train = data::split(data.train, sp.train, keep, recipe.seed ^ kSubsetSeedSalt).val;
  const size_t batch = static_cast<size_t>(recipe.batch);
  if (sp.train.size() < batch)
    throw Error("recipe: /batch", "batch " + std::to_string(batch) + " is larger than the " +
                                      std::to_string(sp.train.size()) + " training images");
  sp.norm = data.train.shape.c == 1 && data.train.source.find("fashion-mnist") != std::string::npos
                ? data::Normalization::fashion_mnist()
                : data::compute_normalization(data.train, sp.train);
  return sp;
}

TrainReport train(Model& model, const Recipe& recipe, const data::TrainTest& data, Backend& backend,
                  const TrainOptions& options) {
  recipe.validate("recipe");
  const LayerGraph& g = model.graph();
  check_fits(g, data.train);
  check_fits(g, data.test);
  const int batch = static_cast<int>(recipe.batch);
  const bool timed = recipe.time_budget_s > 0;
  // The budget counts from the call (or the caller's start), setup included.
  const Clock::time_point budget_start = options.budget_start.value_or(Clock::now());
  if (options.resume) {
    if (recipe.time_budget_s > 0)
      throw Error("resume", "a run with a time budget cannot be resumed exactly; give epochs");
    load_weights(model, *options.resume);
  }

  TrainSplit sp = train_split(g, recipe, data);
  std::vector<uint32_t> train_idx = std::move(sp.train), val_idx = std::move(sp.val);
  const data::Normalization norm = sp.norm;
  // Data parallel: rank r trains on every N-th training image from the r-th,
  // a batch of recipe.batch per rank (so N * batch per step in all). Every
  // shard has the same size, so every rank takes the same steps.
  Communicator* comm = options.comm && options.comm->size() > 1 ? options.comm : nullptr;
  const int rank = comm ? comm->rank() : 0;
  if (comm) {
    const size_t ranks = static_cast<size_t>(comm->size()), each = train_idx.size() / ranks;
    std::vector<uint32_t> shard;
    for (size_t k = 0; k < each; ++k)
      shard.push_back(train_idx[k * ranks + static_cast<size_t>(rank)]);
    train_idx = std::move(shard);
    if (train_idx.size() < static_cast<size_t>(batch))
      throw Error("recipe: /batch", "batch " + std::to_string(batch) + " per rank is larger than " +
                                        "the " + std::to_string(train_idx.size()) +
                                        " training images of rank " + std::to_string(rank));
  }
  EngineSetup setup;
  setup.recipe = &recipe;
  setup.images = &data.train;
  setup.indices = std::move(train_idx);
  setup.loader.batch_size = batch;
  setup.loader.shuffle = true;
  setup.loader.drop_last = true;  // every step sees a full batch, as the reference recipe does
  setup.loader.augment = {static_cast<int>(recipe.crop_pad), recipe.hflip};
  setup.loader.norm = norm;
  setup.loader.seed = recipe.seed;
  setup.network.label_smoothing = static_cast<float>(recipe.label_smoothing);
  setup.network.seed =
      recipe.seed + static_cast<uint64_t>(rank) * 0x9e3779b97f4a7c15ULL;  // masks per rank
  setup.network.precision = recipe.precision;
  setup.comm = comm;
  setup.device_comm = comm ? options.device_comm : nullptr;
  setup.bucket_bytes = options.bucket_bytes;
  setup.capture_graph = options.capture_graph;
  const size_t train_images = setup.indices.size();
  std::unique_ptr<StepEngine> engine = make_engine(model, backend, setup, options.resident);
  const uint64_t per_epoch = engine->steps_per_epoch();
  Evaluator val_eval(model, backend, options.eval_batch, norm);

  // The schedule needs the run's length. With epochs alone it is fixed here.
  // With a time budget it is the steps the budget buys, which only training
  // can tell: a first plan from a few steps of a throwaway copy, then a
  // TimePlan re-plans from what the real steps take as the run goes on.
  const uint64_t epoch_steps = static_cast<uint64_t>(recipe.epochs) * per_epoch;
  // A fraction of the run (epochs only; validate() refuses it with a time
  // budget): stop after that share of the steps, with the schedule planned
  // over the short run, or over the full run and cut there.
  const uint64_t fraction_steps =
      recipe.run_fraction < 1
          ? std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(
                                      recipe.run_fraction * static_cast<double>(epoch_steps))))
          : epoch_steps;
  const bool cut = recipe.run_fraction < 1 && recipe.fraction_schedule == FractionSchedule::cut;
  const uint64_t last_step = cut ? fraction_steps : std::numeric_limits<uint64_t>::max();
  const uint64_t cap = !timed              ? (cut ? epoch_steps : fraction_steps)
                       : recipe.epochs > 0 ? std::min(epoch_steps, kNoStepCap)
                                           : kNoStepCap;
  const std::vector<std::pair<double, uint64_t>> points =
      point_steps(options.validate_at, per_epoch);
  std::optional<TimePlan> plan;
  uint64_t total = cap;
  if (timed) {
    // Validation passes are paid from the budget too: about a third of a
    // training step per image (forward only) until one is measured.
    const double val_share = val_idx.empty() ? 0.0
                                             : 0.35 * static_cast<double>(val_idx.size()) /
                                                   static_cast<double>(train_images);
    plan.emplace(recipe.time_budget_s, budget_start, cap, per_epoch, val_share);
    if (rank == 0) {
      double step_s = probe_step_seconds(model, backend, setup, options.resident);
      if (options.probe_filter) step_s = options.probe_filter(step_s);
      total = plan->first(step_s);
    }
    if (comm) total = broadcast_steps(*comm, total);  // every rank runs rank 0's plan
  }
  ElasticSchedule schedule(recipe, per_epoch, total);
  engine->use_schedule(schedule);
  if (plan) plan->start(0, Clock::now());

  uint64_t step = 0;
  int first_epoch = 1;
  if (options.resume) {
    // The state after epoch k of this very run: weights are loaded above;
    // here the momentum, the step and the loader's place.
    const nlohmann::json& info = options.resume->meta.info;
    try {
      first_epoch = info.at("epoch").get<int>() + 1;
      step = info.at("step").get<uint64_t>();
      if (info.at("steps_per_epoch").get<uint64_t>() != per_epoch ||
          info.at("total_steps").get<uint64_t>() != total)
        throw Error("resume", "the checkpoint is of a run of " + info.at("total_steps").dump() +
                                  " steps of " + info.at("steps_per_epoch").dump() +
                                  " per epoch, this one has " + std::to_string(total) + " of " +
                                  std::to_string(per_epoch) + ": another recipe or data set");
    } catch (const nlohmann::json::exception& e) {
      throw Error("resume", std::string("the checkpoint holds no training state: ") + e.what());
    }
    if (first_epoch < 2 || step != static_cast<uint64_t>(first_epoch - 1) * per_epoch ||
        step > total)
      throw Error("resume", "the checkpoint's epoch and step do not match: " + info.dump());
    for (size_t i = 0; i < engine->momentum_count(); ++i) {
      const std::string name = "optimizer.momentum." + std::to_string(i);
      const CheckpointTensor* t = options.resume->find(name);
      if (!t || t->data.size() != model.params()[i].size())
        throw Error("resume", "the checkpoint has no tensor '" + name + "' of the network's shape");
      engine->set_momentum(i, t->data);
    }
    // The loss scaler where the engine has one and the checkpoint holds it
    // (a checkpoint from before it was saved starts again at the first scale).
    const size_t scaler = engine->loss_scaler().size();
    if (const CheckpointTensor* t = options.resume->find(kLossScalerTensor); t && scaler > 0) {
      if (t->data.size() != scaler ||
          !std::all_of(t->data.begin(), t->data.end(), [](float v) { return std::isfinite(v); }))
        throw Error("resume", std::string("the checkpoint's '") + kLossScalerTensor + "' is not " +
                                  std::to_string(scaler) + " finite values");
      engine->set_loss_scaler(t->data);  // which checks their ranges
    }
  }
  engine->share_state();  // every rank starts from rank 0's weights

  TrainReport report;
  report.params = model.parameter_count();
  report.macs = g.macs();
  auto out_of_time = [&] { return timed && seconds_since(budget_start) > recipe.time_budget_s; };
  // The sums of steps over every rank, the same on each; a loss that is not
  // finite anywhere ends the run on every rank at once.
  auto over_ranks = [&](StepSums s, int epoch) {
    if (comm) {
      std::array<float, 3> v{static_cast<float>(s.loss), static_cast<float>(s.correct),
                             static_cast<float>(s.images)};
      comm->all_reduce_sum(v);
      s = {v[0], static_cast<int64_t>(v[1]), static_cast<int64_t>(v[2])};
    }
    if (!std::isfinite(s.loss))
      throw Error("training", "diverged in epoch " + std::to_string(epoch) + " (by step " +
                                  std::to_string(step) + "): the loss is " +
                                  std::to_string(s.loss));
    return s;
  };
  bool stopped = false, cancelled = false;
  // The run's end: the schedule's, or where a cut fraction stops it.
  auto end_step = [&] { return std::min(schedule.total_steps(), last_step); };
  size_t next_point = 0;  // the first point of `points` not yet validated
  while (next_point < points.size() && points[next_point].second <= step) ++next_point;
  for (int epoch = first_epoch; step < end_step() && !stopped; ++epoch) {
    engine->start_epoch(static_cast<uint64_t>(epoch - 1));
    EpochRecord rec;
    rec.epoch = epoch;
    const auto t0 = Clock::now();
    double point_s = 0;  // seconds of this epoch's validations inside it, not training
    if (plan) plan->loop_resumed();
    while (step < end_step() && static_cast<uint64_t>(rec.steps) < per_epoch) {
      const std::optional<StepStats> st = engine->step(step);
      const bool diverged = st && !std::isfinite(st->loss);
      bool stop_now = false, cancel_now = false, replan_now = false;
      if (comm) {
        // The ranks decide together: one that diverges, is cancelled or is
        // out of time stops them all at this step; rank 0 says when to re-plan.
        std::array<float, 4> flags{
            diverged ? 1.0f : 0.0f, options.should_stop && options.should_stop() ? 1.0f : 0.0f,
            out_of_time() ? 1.0f : 0.0f, rank == 0 && plan && plan->due(step + 1) ? 1.0f : 0.0f};
        comm->all_reduce_sum(flags);
        if (flags[0] > 0)
          throw Error("training", "diverged at epoch " + std::to_string(epoch) + ", step " +
                                      std::to_string(step + 1) + " on one of the " +
                                      std::to_string(comm->size()) + " ranks");
        cancel_now = flags[1] > 0;
        stop_now = cancel_now || flags[2] > 0;
        replan_now = flags[3] > 0;
      }
      if (diverged)
        throw Error("training", "diverged at epoch " + std::to_string(epoch) + ", step " +
                                    std::to_string(step + 1) + ": the loss is " +
                                    std::to_string(st->loss));
      rec.lr = schedule.lr(step);
      ++step;
      ++rec.steps;
      if (!comm) {
        cancel_now = options.should_stop && options.should_stop();
        stop_now = cancel_now || out_of_time();
        replan_now = !stop_now && plan && plan->due(step);
      }
      if (stop_now) {
        stopped = true;
        cancelled = cancel_now;
        break;
      }
      if (replan_now) {
        // An engine that runs ahead of the host is waited for, so the plan
        // is made from what the steps took, not from how fast they were issued.
        engine->epoch_sums();
        uint64_t next = rank == 0 ? plan->replan(step) : 0;
        if (comm) next = broadcast_steps(*comm, next);
        schedule.replan(step, next);
        engine->use_schedule(schedule);
      }
      if (next_point < points.size() && points[next_point].second == step) {
        // A validation inside the epoch, with the epoch's figures so far; it
        // reads the weights and changes nothing the training goes on with.
        const StepSums so_far = engine->epoch_sums();  // waits for the steps
        const auto v0 = Clock::now();
        if (plan) plan->loop_paused();
        EpochRecord pt = rec;
        const StepSums all = over_ranks(so_far, epoch);
        engine->share_buffers();
        engine->sync_model();
        pt.train_loss = all.loss / static_cast<double>(std::max<int64_t>(all.images, 1));
        pt.train_acc = static_cast<double>(all.correct) /
                       static_cast<double>(std::max<int64_t>(all.images, 1));
        pt.seconds = seconds_since(t0) - point_s;
        pt.img_per_s = static_cast<double>(all.images) / std::max(pt.seconds, 1e-9);
        pt.val_acc = val_eval.accuracy(data.train, val_idx);
        for (; next_point < points.size() && points[next_point].second == step; ++next_point) {
          pt.at = points[next_point].first;
          report.points.push_back(pt);
          if (options.on_point) options.on_point(pt);
        }
        if (plan) plan->loop_resumed();
        point_s += seconds_since(v0);
      }
    }
    const StepSums sums = engine->epoch_sums();  // waits for the epoch's steps
    if (plan) plan->loop_paused();
    if (rec.steps == 0) break;
    rec.seconds = seconds_since(t0) - point_s;
    report.train_seconds += rec.seconds;
    // A cancelled run's figures are nobody's: its caller is waiting to move on.
    if (cancelled) break;
    // The epoch's figures over all ranks, and every rank evaluates rank 0's
    // batch-norm statistics, so all report the same.
    const StepSums all = over_ranks(sums, epoch);
    engine->share_buffers();
    engine->sync_model();
    rec.train_loss = all.loss / static_cast<double>(all.images);
    rec.train_acc = static_cast<double>(all.correct) / static_cast<double>(all.images);
    rec.img_per_s = static_cast<double>(all.images) / rec.seconds;
    rec.val_acc = val_eval.accuracy(data.train, val_idx);
    report.epochs.push_back(rec);
    if (options.on_epoch) options.on_epoch(rec);
    if (options.on_checkpoint && !stopped &&
        std::find(options.checkpoint_epochs.begin(), options.checkpoint_epochs.end(), epoch) !=
            options.checkpoint_epochs.end()) {
      std::vector<TensorView> tensors = checkpoint_views(model);
      std::vector<std::string> names(engine->momentum_count());
      std::vector<std::vector<float>> momenta(engine->momentum_count());
      for (size_t i = 0; i < momenta.size(); ++i) {
        names[i] = "optimizer.momentum." + std::to_string(i);
        momenta[i] = engine->momentum(i);
        tensors.push_back({names[i], {static_cast<uint64_t>(momenta[i].size())}, momenta[i]});
      }
      const std::vector<float> scaler = engine->loss_scaler();
      if (!scaler.empty())
        tensors.push_back({kLossScalerTensor, {static_cast<uint64_t>(scaler.size())}, scaler});
      options.on_checkpoint({{"epoch", epoch},
                             {"step", step},
                             {"steps_per_epoch", per_epoch},
                             {"total_steps", schedule.total_steps()}},
                            tensors);
    }
  }
  report.steps = static_cast<int64_t>(step);
  report.planned_steps = static_cast<int64_t>(schedule.total_steps());
  report.replans = schedule.replans();
  report.img_per_s = static_cast<double>(step) * batch / std::max(report.train_seconds, 1e-9);
  report.val_acc = report.epochs.empty() ? report.val_acc : report.epochs.back().val_acc;
  engine->share_buffers();
  engine->sync_model();
  if (cancelled) return report;
  if (options.evaluate_test && rank == 0) {
    const auto all = data::all_indices(data.test);
    report.test_acc = val_eval.accuracy(data.test, all);
  }
  if (options.measure_latency && rank == 0)  // one measurement, not N at once
    report.latency = measure_latency(model, backend, options.latency_runs);
  return report;
}

double evaluate(Model& model, Backend& backend, const data::Dataset& ds,
                std::span<const uint32_t> indices, const data::Normalization& norm, int batch) {
  check_fits(model.graph(), ds);
  Evaluator e(model, backend, batch, norm);
  return e.accuracy(ds, indices);
}

Latency measure_latency(Model& model, Backend& backend, int runs, bool batch64) {
  Latency lat;
  lat.threads = backend.threads();
  lat.runs = std::max(runs, 1);
  for (int b : {1, 64}) {
    if (b == 64 && !batch64) break;
    auto net = backend.compile(model, b, NetMode::latency, {});
    const size_t n =
        static_cast<size_t>(b) * static_cast<size_t>(model.graph().input_shape().elements());
    std::vector<float> x(n), logits(static_cast<size_t>(b) * model.graph().classes());
    Rng rng(1);
    for (float& v : x) v = static_cast<float>(2 * rng.uniform() - 1);
    for (int i = 0; i < 5; ++i) net->infer(x.data(), logits.data());
    std::vector<double> ms;
    for (int i = 0; i < lat.runs; ++i) {
      const auto t0 = Clock::now();
      net->infer(x.data(), logits.data());
      ms.push_back(seconds_since(t0) * 1e3);
    }
    (b == 1 ? lat.batch1_ms : lat.batch64_ms) = median(ms);
  }
  return lat;
}

nlohmann::json TrainReport::to_json() const {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json ep = nlohmann::json::array(), pts = nlohmann::json::array();
  for (const auto& e : epochs)
    ep.push_back({{"epoch", e.epoch},
                  {"steps", e.steps},
                  {"train_loss", e.train_loss},
                  {"train_acc", e.train_acc},
                  {"val_acc", num(e.val_acc)},
                  {"lr", e.lr},
                  {"seconds", e.seconds},
                  {"img_per_s", e.img_per_s}});
  for (const auto& e : points)
    pts.push_back({{"at", e.at.value_or(0)},
                   {"epoch", e.epoch},
                   {"train_loss", e.train_loss},
                   {"train_acc", e.train_acc},
                   {"val_acc", num(e.val_acc)},
                   {"lr", e.lr},
                   {"seconds", e.seconds}});
  nlohmann::json j = {{"val_acc", num(val_acc)},
                      {"test_acc", num(test_acc)},
                      {"params", params},
                      {"macs", macs},
                      {"latency_ms", latency.batch1_ms},
                      {"latency_ms_b64", latency.batch64_ms},
                      {"latency_threads", latency.threads},
                      {"train_seconds", train_seconds},
                      {"img_per_s", img_per_s},
                      {"steps", steps},
                      {"planned_steps", planned_steps},
                      {"replans", replans},
                      {"epochs", ep}};
  if (!pts.empty()) j["points"] = pts;  // only runs asked for validations inside epochs
  return j;
}

std::vector<TensorView> checkpoint_views(const Model& model) {
  std::vector<TensorView> v;
  for (const auto* group : {&model.params(), &model.buffers()})
    for (const Param& p : *group)
      v.push_back({p.name, std::vector<uint64_t>(p.shape.begin(), p.shape.end()), p.value});
  return v;
}

std::vector<TensorSpec> checkpoint_specs(const Model& model) {
  std::vector<TensorSpec> v;
  for (const auto* group : {&model.params(), &model.buffers()})
    for (const Param& p : *group)
      v.push_back({p.name, std::vector<uint64_t>(p.shape.begin(), p.shape.end())});
  return v;
}

void load_weights(Model& model, const Checkpoint& checkpoint) {
  for (auto* group : {&model.params(), &model.buffers()})
    for (Param& p : *group) {
      const CheckpointTensor* t = checkpoint.find(p.name);
      if (!t || t->data.size() != p.value.size())
        throw Error("checkpoint", "has no tensor '" + p.name + "' of the network's shape");
      p.value = t->data;
    }
}

}  // namespace minas
