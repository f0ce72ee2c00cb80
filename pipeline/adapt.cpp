#include "pipeline/adapt.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/adapt_run.h"
#include "pipeline/experiment.h"
#include "pipeline/local_search.h"
#include "pipeline/stop.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "trainer/backends.h"
#include "trainer/data.h"
#include "worker/devices.h"
#include "worker/worker.h"

namespace minas::pipeline {
namespace adapt_steps {

namespace fs = std::filesystem;

const std::vector<std::string> kPortfolio = {
    "16|32|conv_k3|skip|64|conv_k3|skip",
    "24|64|mb_k5_e3|skip|64|conv_k3|sep_k5",
    "32|64|conv_k5|conv_k3|96|mb_k3_e3|mb_k5_e3",
};

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
}

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The test folder's classes must be the training data's; its labels are
// renumbered to the training data's class order.
void merge_test(adapt::Source& train, adapt::Source test) {
  std::map<std::string, int> index;
  for (size_t k = 0; k < train.classes.size(); ++k) index[train.classes[k]] = static_cast<int>(k);
  for (adapt::ImageRecord& r : test.images) {
    if (r.label >= 0) {
      const std::string& name = test.classes.at(static_cast<size_t>(r.label));
      const auto it = index.find(name);
      if (it == index.end())
        throw Error("--test " + test.location,
                    "class '" + name + "' is not a class of --data " + train.location);
      r.label = it->second;
    }
    r.split = "test";
    train.images.push_back(std::move(r));
  }
}

std::string space_ref(const adapt::InputChoice& in, size_t classes) {
  return "small:input=" + std::to_string(in.channels) + "x" + std::to_string(in.height) + "x" +
         std::to_string(in.width) + ",classes=" + std::to_string(classes);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.flush();
  if (!f) throw Error(path.string(), "cannot write");
}

// Measures `keys` on the target and keeps the measurements in the store.
void measure_latencies(db::Store& store, const Space& space, const adapt::Target& target,
                       const std::vector<std::string>& keys, const std::string& host,
                       const std::string& experiment) {
  for (const std::string& k : keys) {
    db::LatencyMeasurement m;
    m.target = target.text;
    m.host = host;
    m.space_ref = space.ref();
    m.arch_key = k;
    m.measured_ms = adapt::measure_target_latency(space.lower(space.parse_key(k)), target);
    m.experiment = experiment;
    m.created_at = unix_now();
    store.add_latency_measurement(m);
  }
}

// The latency model fitted to the store's measurements of the target.
adapt::LatencyModel fit_latency(const std::vector<db::LatencyMeasurement>& rows) {
  std::vector<std::vector<double>> features;
  std::vector<double> measured;
  std::map<std::string, std::unique_ptr<Space>> spaces;
  for (const auto& r : rows) {
    try {
      auto& s = spaces[r.space_ref];
      if (!s) s = std::make_unique<Space>(Space::load(r.space_ref));
      features.push_back(adapt::latency_features(s->lower(s->parse_key(r.arch_key))));
      measured.push_back(r.measured_ms);
    } catch (const Error&) {
      // A space this build no longer has: that measurement cannot be used.
    }
  }
  return adapt::LatencyModel::fit(features, measured);
}

// The latency model of a target on this host, calibrated by the store's
// measurements of that target here; when there are fewer than `needed`, the
// portfolio and random architectures of `space` are measured first (and kept
// in the store for later runs).
adapt::LatencyModel calibrate_latency(db::Store& store, const Space& space,
                                      const adapt::Target& target, const std::string& experiment,
                                      uint64_t seed, const Log& log) {
  constexpr size_t needed = 12;
  const std::string& target_text = target.text;
  const std::string host = host_name();
  auto rows = store.latency_measurements(target_text, host);
  if (rows.size() < needed) {
    log.line("adapt", "latency model for " + target_text + " on " + host + ": " +
                          std::to_string(rows.size()) + " measurement(s) in the store, measuring " +
                          std::to_string(needed - rows.size()) + " more");
    Rng rng(seed ^ 0x6c6174656e6379ULL);
    std::vector<std::string> keys;
    for (const std::string& k : kPortfolio) keys.push_back(space.key(space.parse_key(k)));
    while (keys.size() < needed - rows.size()) keys.push_back(space.key(space.sample(rng)));
    keys.resize(needed - rows.size());
    measure_latencies(store, space, target, keys, host, experiment);
    rows = store.latency_measurements(target_text, host);
  }
  adapt::LatencyModel model = fit_latency(rows);
  log.line("adapt", "latency model for " + target_text + ": " + std::to_string(model.samples()) +
                        " measurements, median relative error " +
                        report_number(100 * model.median_relative_error(), "%.1f%%"));
  return model;
}

// Everything that can refuse the options before anything is written.
void check_options(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  run.target = adapt::parse_target(o.target);
  if (!o.devices.empty()) parse_devices(o.devices);  // refused before anything is written
  if (run.target.device != "cpu") {
    // Latency on a GPU is measured on that GPU: fail now, not after the search.
    try {
      make_backend(run.target.device, 0);
    } catch (const Error& e) {
      throw Error("--target " + o.target, std::string("cannot measure latency there: ") + e.what());
    }
  }
  run.name = o.name.empty() ? default_experiment_name("adapt") : o.name;
  run.out = o.out.empty() ? "runs/" + run.name : o.out;
  // Nothing is written into the customer's folders.
  for (const std::string& given : {o.data, o.test}) {
    std::error_code ec;
    if (given.empty() || !fs::is_directory(given, ec)) continue;
    const fs::path folder = fs::weakly_canonical(given), to = fs::weakly_canonical(run.out);
    if (std::mismatch(folder.begin(), folder.end(), to.begin(), to.end()).first == folder.end())
      throw Error("--out " + run.out, "is inside the customer's folder " + given +
                                          ", which minas adapt never writes to; pick another");
  }
}

// 1. Read and validate, before any training; the store keeps the report
//    whether or not the data can be used. Nothing is written to the
//    customer's folders.
void validate_data(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  run.src = adapt::read_source(o.data, "train");
  if (!o.test.empty()) merge_test(run.src, adapt::read_source(o.test, "test"));
  adapt::ValidationSettings vs;
  vs.strict = o.strict;
  run.report = adapt::validate(run.src, vs);
  run.fp = adapt::fingerprint(run.src, run.report.excluded);
  run.log.print(run.report.to_text() + "\n");
  run.store.emplace(db::Store::open(o.db));
  db::DataReport dr;
  dr.experiment = run.name;
  dr.location = o.data;
  dr.usable = run.report.usable;
  dr.fingerprint = run.fp.to_json();
  dr.report = run.report.to_json();
  dr.created_at = unix_now();
  run.store->add_data_report(dr);
  fs::create_directories(run.out);
  write_text(fs::path(run.out) / "validation.json", run.report.to_json().dump(2) + "\n");
  write_text(fs::path(run.out) / "validation.txt", run.report.to_text() + "\n");
  if (!run.report.usable)
    throw Error("--data " + o.data, "cannot be used: " + std::to_string(run.report.errors()) +
                                        " error(s), listed above with what to fix (also in " +
                                        run.out + "/validation.txt); the report is kept in " +
                                        o.db);
}

// 2. The input size, the splits, and the data set the workers train on.
void prepare_data(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  {
    std::vector<bool> left_out(run.src.images.size(), false);
    for (size_t i : run.report.excluded) left_out[i] = true;
    for (size_t i = 0; i < run.src.images.size(); ++i)
      if (!left_out[i]) run.kept.push_back(std::move(run.src.images[i]));
  }
  run.in = adapt::choose_input(run.kept);
  run.log.line("adapt", run.in.why);
  run.split = adapt::split_records(run.kept, 0.0, o.test_share, o.seed);
  const int classes = static_cast<int>(run.src.classes.size());
  const fs::path data_dir = fs::absolute(fs::path(run.out) / "data");
  fs::create_directories(data_dir);
  {
    const data::Dataset tr =
        adapt::to_dataset(run.kept, run.split.train, classes, run.in, o.data + " (training)");
    const data::Dataset te =
        adapt::to_dataset(run.kept, run.split.test, classes, run.in, o.data + " (test)");
    data::write_idx(tr, (data_dir / "train-images-idx3-ubyte").string(),
                    (data_dir / "train-labels-idx1-ubyte").string());
    data::write_idx(te, (data_dir / "t10k-images-idx3-ubyte").string(),
                    (data_dir / "t10k-labels-idx1-ubyte").string());
  }
  run.log.line("adapt",
               std::to_string(run.split.train.size()) + " training and validation images, " +
                   std::to_string(run.split.test.size()) + " test images, in " + data_dir.string());
  run.data_dir = data_dir.string();
  run.space.emplace(Space::load(space_ref(run.in, run.src.classes.size())));
}

// 3. The recipe: the default one, with a validation share, a batch and
//    epochs per trial that suit the data set's size.
void choose_recipe(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  const size_t pool = run.split.train.size();
  const int classes = static_cast<int>(run.src.classes.size());
  run.val =
      std::clamp<size_t>(static_cast<size_t>(std::lround(static_cast<double>(pool) * o.val_share)),
                         static_cast<size_t>(classes), pool / 2);
  run.recipe.set("val_size", std::to_string(run.val), "adapt");
  run.batch = std::clamp<size_t>((pool - run.val) / 16, 16, 128);
  run.recipe.set("batch", std::to_string(run.batch), "adapt");
  run.fidelity =
      o.fidelity > 0
          ? o.fidelity
          : std::clamp(static_cast<int>(std::ceil(150000.0 / static_cast<double>(pool - run.val))),
                       3, 30);
}

// 4. Constraints: params and MACs on the layer graph before training;
//    latency predicted by the target's model before training and measured
//    on the target after it.
void set_constraints(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  run.settings.name = "evolution";
  run.settings.seed = o.seed;
  Objective& objective = run.settings.objective;
  if (o.max_params) objective.max_params = static_cast<double>(o.max_params);
  if (o.max_macs) objective.max_macs = static_cast<double>(o.max_macs);
  if (o.latency_ms > 0) objective.max_latency_ms = o.latency_ms;
  objective.latency_device = run.target.text;
  if (o.time_exponent > 0) objective.time_exponent = o.time_exponent;
  if (o.max_params)
    run.constraints.push_back(
        {db::Metric::params, db::CompareOp::le, static_cast<double>(o.max_params)});
  if (o.max_macs)
    run.constraints.push_back(
        {db::Metric::macs, db::CompareOp::le, static_cast<double>(o.max_macs)});
  if (o.latency_ms > 0)
    run.constraints.push_back({db::Metric::latency_ms, db::CompareOp::le, o.latency_ms});
  if (o.latency_ms > 0)
    run.latency_model =
        calibrate_latency(*run.store, *run.space, run.target, run.name, o.seed, run.log);
}

// 5. The warm start: the best of the most similar data sets in the store,
//    then the portfolio; architectures of other spaces are left out.
void choose_warm_start(AdaptRun& run) {
  run.existing = run.store->find_experiment(run.name);
  std::vector<std::string>& initial = run.settings.initial;
  if (run.existing && run.existing->strategy_settings.contains("initial")) {
    // A continued run asks what the first run chose: the store may have
    // changed since, and the experiment's settings must stay the same.
    for (const auto& k : run.existing->strategy_settings["initial"])
      if (k.is_string()) initial.push_back(k.get<std::string>());
    run.log.line("adapt", "continuing '" + run.name + "' with its warm start of " +
                              std::to_string(initial.size()) + " architecture(s)");
    return;
  }
  if (!run.o.warm_start) return;
  run.warm = adapt::choose_warm_start(*run.store, run.fp, run.name, kPortfolio);
  for (const std::string& k : run.warm.initial) {
    try {
      initial.push_back(run.space->key(run.space->parse_key(k)));
    } catch (const Error&) {
    }
  }
  for (const auto& s : run.warm.sources)
    run.log.line("adapt", "warm start from '" + s.experiment + "' (similarity " +
                              report_number(s.similarity, "%.2f") +
                              "): " + std::to_string(s.archs.size()) + " architecture(s)");
  run.log.line("adapt", std::to_string(initial.size()) + " warm-start architecture(s) asked first");
}

// The search's experiment: the data set the workers train on, the recipe,
// what is left of the budget, evolution with ASHA below the trials' epochs.
ExperimentConfig search_config(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  ExperimentSettings s;
  s.config.name = run.name;
  s.config.data = run.data_dir;
  fingerprint_data(s.config, true);
  s.config.fidelity = run.fidelity;
  s.config.budget_trials = 1000000;
  run.spent = run.existing ? run.existing->seconds_run : 0;
  s.config.budget_seconds =
      std::max(1.0, o.budget_s * (1 - o.final_share) - run.elapsed() - run.spent);
  s.config.seed = o.seed;
  s.config.screen = o.screen;
  s.config.screen_order = o.screen_order;
  s.config.screen_evaluator = o.screen_evaluator;
  s.config.trial_fraction = o.trial_fraction;
  if (o.trial_fraction < 1)  // each trial one short run: no rungs
    return experiment_config(s, run.recipe, run.settings, std::nullopt);
  AshaSettings asha;
  asha.eta = 3;
  asha.rungs = AshaSettings::geometric(std::max(1, run.fidelity / 9), 3, run.fidelity);
  return experiment_config(s, run.recipe, run.settings,
                           asha.rungs.empty() ? std::nullopt : std::optional(asha));
}

// Refuse before training what the latency model says is well over the
// limit; the margin leaves the decision near the limit to the measurement.
void filter_by_latency(AdaptRun& run) {
  const double limit = run.o.latency_ms * 1.25;
  const double max_ms = run.o.latency_ms;
  run.strategy->set_filter([&run, limit, max_ms, o = run.settings.objective](
                               const Arch& a) -> std::optional<std::string> {
    const LayerGraph g = run.space->lower(a);
    if (auto broken = o.precheck(g)) return broken;
    const double ms = run.latency_model->predict(g);
    {
      std::lock_guard lock(run.predictions.mu);
      run.predictions.ms[run.space->key(a)] = ms;
    }
    if (ms > limit)
      return "predicted latency " + report_number(ms, "%.3g") + " ms > 1.25 x max_latency_ms " +
             report_number(max_ms, "%.3g");
    return std::nullopt;
  });
}

// 6. The search, on local workers whose CPU slots have the target's threads.
//    False when a signal stopped it.
bool search(AdaptRun& run) {
  const AdaptOptions& o = run.o;
  const ExperimentConfig cfg = search_config(run);
  run.strategy = make_strategy(*run.space, run.settings);
  if (run.latency_model) filter_by_latency(run);
  const int cpu_threads = run.target.device == "cpu" ? run.target.threads : 1;
  LocalPool lp;
  lp.threads = cpu_threads;
  lp.workers =
      o.workers > 0 ? o.workers : std::max(1, detect_slots().front().threads / cpu_threads);
  // A GPU target is measured by a worker with that GPU: without --devices,
  // the local worker trains there too.
  lp.devices = o.devices.empty() && run.target.device != "cpu" ? run.target.device : o.devices;
  lp.who = "adapt";
  run.log.line("adapt", "search: " + run.space->ref() + ", " + std::to_string(run.fidelity) +
                            " epoch(s) per trial, batch " + std::to_string(run.batch) + ", " +
                            report_number(cfg.budget_seconds, "%.0f") + " s");
  const ControllerSummary s =
      run_local_search(*run.store, *run.space, *run.strategy, cfg, lp, run.log);
  return !(s.stopped && stop_requested());
}

// 7. The latency model's error against what the target measured.
void check_latency_model(AdaptRun& run, db::Connection& conn, int64_t experiment) {
  std::vector<double> rel;
  for (const db::TrialRow& t : db::top_k(conn, experiment, db::Metric::val_acc, 1000000)) {
    // This run's trials: each was predicted as it was asked (an earlier
    // run of a continued experiment has recorded its own).
    const auto p = run.predictions.ms.find(t.arch_key);
    if (p == run.predictions.ms.end() || !t.latency_ms || !(*t.latency_ms > 0)) continue;
    db::LatencyMeasurement m;
    m.target = run.target.text;
    m.host = host_name();
    m.space_ref = run.space->ref();
    m.arch_key = t.arch_key;
    m.measured_ms = *t.latency_ms;
    m.predicted_ms = p->second;
    rel.push_back(std::fabs(p->second - *t.latency_ms) / *t.latency_ms);
    m.experiment = run.name;
    m.created_at = unix_now();
    run.store->add_latency_measurement(m);
  }
  std::sort(rel.begin(), rel.end());
  run.latency_error = {{"measured", rel.size()},
                       {"median_relative_error", rel.empty() ? 0.0 : rel[rel.size() / 2]},
                       {"max_relative_error", rel.empty() ? 0.0 : rel.back()},
                       {"refused_before_training", run.strategy->rejected()}};
}

// 8. The final training of the best architecture that meets the
//    constraints, the export, and the report.
FinalResult final_model(AdaptRun& run, db::Connection& conn, int64_t experiment) {
  const AdaptOptions& o = run.o;
  FinalOptions fo;
  fo.db = o.db;
  fo.experiment = run.name;
  fo.data = run.data_dir;
  fo.out = run.out;
  fo.recipe = run.recipe;
  fo.recipe.set("epochs", std::to_string(o.final_epochs), "final training");
  fo.recipe.set("run_fraction", "1", "final training");  // it trains all it plans
  const double left = o.budget_s - run.spent - run.elapsed();
  fo.deadline = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(left));
  fo.recipe.set("threads", std::to_string(detect_slots().front().threads), "final training");
  fo.reproduce = o.reproduce;
  fo.class_names = run.src.classes;
  fo.constraints = run.constraints;
  fo.pick = o.final_pick;
  fo.curve_exponent = o.curve_exponent;
  fo.latency_device = run.target.text;
  if (o.screen > 0) fo.screen_evaluator = o.screen_evaluator;
  fo.trial_fraction = o.trial_fraction;
  // The picture's x: the constraint that matters most, as the report's front table.
  fo.pareto_x = o.latency_ms > 0 ? db::Metric::latency_ms
                : o.max_macs     ? db::Metric::macs
                                 : db::Metric::params;
  run.log.line("adapt",
               "final training, evaluation and export of the best architecture that meets the "
               "constraints in the " +
                   report_number(std::max(kMinFinalSeconds, left), "%.0f") + " s left");
  return retrain_and_export(
      *run.space, fo, [&](const FinalResult& r) { return adapt_report(run, conn, experiment, r); },
      run.log);
}

}  // namespace
}  // namespace adapt_steps

AdaptResult run_adapt(const AdaptOptions& o, const Log& log) {
  using namespace adapt_steps;
  AdaptRun run(o, log);
  check_options(run);
  validate_data(run);
  prepare_data(run);
  choose_recipe(run);
  set_constraints(run);
  choose_warm_start(run);
  AdaptResult result;
  result.experiment = run.name;
  result.target = run.target.text;
  if (!search(run)) {
    result.interrupted = true;
    return result;
  }
  db::Connection conn = db::open_store_readonly(o.db);
  const int64_t experiment = db::find_experiment_id(conn, run.name);
  if (run.latency_model) check_latency_model(run, conn, experiment);
  const FinalResult fr = final_model(run, conn, experiment);
  const bool met = (!o.max_params || fr.params <= o.max_params) &&
                   (!o.max_macs || fr.macs <= o.max_macs) &&
                   (!(o.latency_ms > 0) || fr.latency_ms <= o.latency_ms);
  log.line("adapt", "exported to " + fr.out + ": test accuracy " + report_percent(fr.test_acc) +
                        ", " + std::to_string(fr.params) + " parameters, " +
                        report_number(fr.latency_ms, "%.3f") + " ms on " + run.target.text +
                        (met ? "" : "; the final measurement breaks a constraint (see report.md)"));
  result.final = fr;
  result.constraints_met = met;
  result.latency_model = run.latency_error;
  return result;
}

}  // namespace minas::pipeline
