// `minas adapt`: a customer's images and a deployment constraint in; a
// validated, searched, retrained and exported model out, with its report.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapt/images.h"
#include "adapt/latency_model.h"
#include "adapt/validate.h"
#include "adapt/warm_start.h"
#include "cli/commands.h"
#include "cli/final_model.h"
#include "cli/flag_ranges.h"
#include "cli/local_search.h"
#include "controller/asha.h"
#include "controller/objective.h"
#include "controller/strategy.h"
#include "db/queries.h"
#include "db/store.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "trainer/backends.h"
#include "trainer/data.h"
#include "trainer/recipe.h"
#include "worker/devices.h"
#include "worker/worker.h"

namespace minas::cli {
namespace {

namespace fs = std::filesystem;

struct AdaptFlags {
  std::string data, test, target = "cpu:1", budget = "30m", out, db = "minas.db", name, devices;
  double latency_ms = 0;
  int64_t max_params = 0, max_macs = 0;
  bool strict = false, no_warm_start = false;
  uint64_t seed = 0;
  double test_share = 0.15, val_share = 0.15, final_share = 0.3;
  int fidelity = 0, workers = 0, final_epochs = 30;
};

// Architectures of the default space known to do well on small images: the
// hand-designed reference network (docs/spaces.md) and two that one-click
// searches on Fashion-MNIST kept finding (experiments/one-click.md). The fixed
// part of every warm start, after what the store's similar data sets found.
const std::vector<std::string> kPortfolio = {
    "16|32|conv_k3|skip|64|conv_k3|skip",
    "24|64|mb_k5_e3|skip|64|conv_k3|sep_k5",
    "32|64|conv_k5|conv_k3|96|mb_k3_e3|mb_k5_e3",
};

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
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

// The latency model of a target on this host, calibrated by the store's
// measurements of that target here; when there are fewer than `needed`, the
// portfolio and random architectures of `space` are measured first (and kept
// in the store for later runs).
adapt::LatencyModel calibrate_latency(db::Store& store, const Space& space,
                                      const adapt::Target& target, const std::string& target_text,
                                      const std::string& experiment, uint64_t seed) {
  constexpr size_t needed = 12;
  const std::string host = host_name();
  auto rows = store.latency_measurements(target_text, host);
  if (rows.size() < needed) {
    log_line("adapt", "latency model for " + target_text + " on " + host + ": " +
                          std::to_string(rows.size()) + " measurement(s) in the store, measuring " +
                          std::to_string(needed - rows.size()) + " more");
    Rng rng(seed ^ 0x6c6174656e6379ULL);
    std::vector<std::string> keys;
    for (const std::string& k : kPortfolio) keys.push_back(space.key(space.parse_key(k)));
    while (keys.size() < needed - rows.size()) keys.push_back(space.key(space.sample(rng)));
    keys.resize(needed - rows.size());
    for (const std::string& k : keys) {
      db::LatencyMeasurement m;
      m.target = target_text;
      m.host = host;
      m.space_ref = space.ref();
      m.arch_key = k;
      m.measured_ms = adapt::measure_target_latency(space.lower(space.parse_key(k)), target);
      m.experiment = experiment;
      m.created_at = unix_now();
      store.add_latency_measurement(m);
    }
    rows = store.latency_measurements(target_text, host);
  }
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
  adapt::LatencyModel model = adapt::LatencyModel::fit(features, measured);
  log_line("adapt", "latency model for " + target_text + ": " + std::to_string(model.samples()) +
                        " measurements, median relative error " +
                        report_number(100 * model.median_relative_error(), "%.1f%%"));
  return model;
}

// What the latency model said about the candidates, for the error record.
struct Predictions {
  std::mutex mu;
  std::map<std::string, double> ms;  // arch key -> predicted latency
};

}  // namespace

void add_adapt_command(CLI::App& app) {
  auto f = std::make_shared<AdaptFlags>();
  CLI::App* ad = app.add_subcommand(
      "adapt",
      "A customer's images and a deployment constraint in; a validated, searched, retrained, "
      "exported model out (docs/adapt.md)");
  ad->add_option("--data", f->data,
                 "Images: a folder with a sub-folder per class, a CSV of path,label, or an IDX "
                 "prefix")
      ->required();
  ad->add_option("--test", f->test,
                 "Separate test images (same forms, same classes); default: a stratified split");
  ad->add_option("--latency-ms", f->latency_ms, "Latency limit at batch 1 on --target, in ms")
      ->check(above(0.0, 1e9));
  ad->add_option("--target", f->target, "Where latency counts: cpu[:THREADS] or cuda:N")
      ->default_val("cpu:1");
  ad->add_option("--max-params", f->max_params, "Parameter limit")
      ->check(in_range<int64_t>(1, 1'000'000'000'000'000));
  ad->add_option("--max-macs", f->max_macs, "Multiply-accumulates per image, limit")
      ->check(in_range<int64_t>(1, 1'000'000'000'000'000'000));
  ad->add_option("--budget", f->budget,
                 "Wall-clock budget of the whole run (validation, search, final training)")
      ->default_val("30m")
      ->check(duration_check("--budget"));
  ad->add_option("--out", f->out, "Export folder (default runs/EXPERIMENT)");
  ad->add_flag("--strict", f->strict, "Stop on any unreadable file instead of leaving it out");
  ad->add_option("--db", f->db, "Experiment store")->default_val("minas.db");
  ad->add_option("--name", f->name,
                 "Experiment name (default adapt-DATE-TIME; an existing one resumes)");
  ad->add_option("--seed", f->seed, "Seed of the split and the search")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  ad->add_option("--test-share", f->test_share, "Share of each class held out for the test")
      ->default_val(0.15)
      ->check(in_range(0.05, 0.5));
  ad->add_option("--val-share", f->val_share, "Share of the rest held out for validation")
      ->default_val(0.15)
      ->check(in_range(0.05, 0.5));
  ad->add_option("--final-share", f->final_share, "Share of the budget kept for the final training")
      ->default_val(0.3)
      ->check(in_range(0.05, 0.95));
  ad->add_option("--final-epochs", f->final_epochs, "Epochs of the final training, at most")
      ->default_val(30)
      ->check(in_range(1, 100000));
  ad->add_option("--fidelity", f->fidelity,
                 "Epochs per trial; 0: enough for about 150,000 images seen (3 to 30)")
      ->default_val(0)
      ->check(in_range(0, 1000));
  ad->add_option("--workers", f->workers, "Local workers (default: one per core / threads)")
      ->default_val(0)
      ->check(in_range(0, 4096));
  ad->add_option("--devices", f->devices,
                 "One local worker with these slots instead (cuda:0, cpu:2,cpu:2, ...)");
  ad->add_flag("--no-warm-start", f->no_warm_start,
               "Sample every architecture (no store sources, no portfolio): the cold baseline");
  ad->callback([f, ad] {
    const auto started = std::chrono::steady_clock::now();
    auto elapsed = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    };
    const double budget = parse_duration(f->budget, "--budget");
    const adapt::Target target = adapt::parse_target(f->target);
    if (!f->devices.empty()) parse_devices(f->devices);  // refused before anything is written
    const std::string& target_text = target.text;
    if (target.device != "cpu") {
      // Latency on a GPU is measured on that GPU: fail now, not after the search.
      try {
        make_backend(target.device, 0);
      } catch (const Error& e) {
        throw Error("--target " + f->target,
                    std::string("cannot measure latency there: ") + e.what());
      }
    }
    const std::string name = f->name.empty() ? default_experiment_name("adapt") : f->name;
    const std::string out = f->out.empty() ? "runs/" + name : f->out;
    // Nothing is written into the customer's folders.
    for (const std::string& given : {f->data, f->test}) {
      std::error_code ec;
      if (given.empty() || !fs::is_directory(given, ec)) continue;
      const fs::path folder = fs::weakly_canonical(given), to = fs::weakly_canonical(out);
      if (std::mismatch(folder.begin(), folder.end(), to.begin(), to.end()).first == folder.end())
        throw Error("--out " + out, "is inside the customer's folder " + given +
                                        ", which minas adapt never writes to; pick another");
    }

    // 1. Read and validate, before any training; the store keeps the report
    //    whether or not the data can be used. Nothing is written to the
    //    customer's folders.
    adapt::Source src = adapt::read_source(f->data, "train");
    if (!f->test.empty()) merge_test(src, adapt::read_source(f->test, "test"));
    adapt::ValidationSettings vs;
    vs.strict = f->strict;
    const adapt::ValidationReport report = adapt::validate(src, vs);
    const adapt::Fingerprint fp = adapt::fingerprint(src, report.excluded);
    std::fprintf(stderr, "%s\n", report.to_text().c_str());
    db::Store store = db::Store::open(f->db);
    {
      db::DataReport dr;
      dr.experiment = name;
      dr.location = f->data;
      dr.usable = report.usable;
      dr.fingerprint = fp.to_json();
      dr.report = report.to_json();
      dr.created_at = unix_now();
      store.add_data_report(dr);
    }
    fs::create_directories(out);
    write_text(fs::path(out) / "validation.json", report.to_json().dump(2) + "\n");
    write_text(fs::path(out) / "validation.txt", report.to_text() + "\n");
    if (!report.usable)
      throw Error("--data " + f->data, "cannot be used: " + std::to_string(report.errors()) +
                                           " error(s), listed above with what to fix (also in " +
                                           out + "/validation.txt); the report is kept in " +
                                           f->db);

    // 2. The input size, the splits, and the data set the workers train on.
    std::vector<adapt::ImageRecord> kept;
    {
      std::vector<bool> left_out(src.images.size(), false);
      for (size_t i : report.excluded) left_out[i] = true;
      for (size_t i = 0; i < src.images.size(); ++i)
        if (!left_out[i]) kept.push_back(std::move(src.images[i]));
    }
    const adapt::InputChoice in = adapt::choose_input(kept);
    log_line("adapt", in.why);
    const adapt::SplitIndices split = adapt::split_records(kept, 0.0, f->test_share, f->seed);
    const int classes = static_cast<int>(src.classes.size());
    const fs::path data_dir = fs::absolute(fs::path(out) / "data");
    fs::create_directories(data_dir);
    {
      const data::Dataset tr =
          adapt::to_dataset(kept, split.train, classes, in, f->data + " (training)");
      const data::Dataset te =
          adapt::to_dataset(kept, split.test, classes, in, f->data + " (test)");
      data::write_idx(tr, (data_dir / "train-images-idx3-ubyte").string(),
                      (data_dir / "train-labels-idx1-ubyte").string());
      data::write_idx(te, (data_dir / "t10k-images-idx3-ubyte").string(),
                      (data_dir / "t10k-labels-idx1-ubyte").string());
    }
    log_line("adapt", std::to_string(split.train.size()) + " training and validation images, " +
                          std::to_string(split.test.size()) + " test images, in " +
                          data_dir.string());
    const Space space = Space::load(space_ref(in, src.classes.size()));

    // 3. The recipe: the default one, with a validation share, a batch and
    //    epochs per trial that suit the data set's size.
    const size_t pool = split.train.size();
    const size_t val = std::clamp<size_t>(
        static_cast<size_t>(std::lround(static_cast<double>(pool) * f->val_share)),
        static_cast<size_t>(classes), pool / 2);
    Recipe recipe;
    recipe.set("val_size", std::to_string(val), "adapt");
    const size_t batch = std::clamp<size_t>((pool - val) / 16, 16, 128);
    recipe.set("batch", std::to_string(batch), "adapt");
    const int fidelity =
        f->fidelity > 0
            ? f->fidelity
            : std::clamp(static_cast<int>(std::ceil(150000.0 / static_cast<double>(pool - val))), 3,
                         30);

    // 4. Constraints: params and MACs on the layer graph before training;
    //    latency predicted by the target's model before training and measured
    //    on the target after it.
    StrategySettings settings;
    settings.name = "evolution";
    settings.seed = f->seed;
    Objective& objective = settings.objective;
    if (f->max_params) objective.max_params = static_cast<double>(f->max_params);
    if (f->max_macs) objective.max_macs = static_cast<double>(f->max_macs);
    if (f->latency_ms > 0) objective.max_latency_ms = f->latency_ms;
    objective.latency_device = target_text;
    std::vector<db::Constraint> constraints;
    if (f->max_params)
      constraints.push_back(
          {db::Metric::params, db::CompareOp::le, static_cast<double>(f->max_params)});
    if (f->max_macs)
      constraints.push_back(
          {db::Metric::macs, db::CompareOp::le, static_cast<double>(f->max_macs)});
    if (f->latency_ms > 0)
      constraints.push_back({db::Metric::latency_ms, db::CompareOp::le, f->latency_ms});

    std::optional<adapt::LatencyModel> latency_model;
    if (f->latency_ms > 0)
      latency_model = calibrate_latency(store, space, target, target_text, name, f->seed);

    // 5. The warm start: the best of the most similar data sets in the store,
    //    then the portfolio; architectures of other spaces are left out.
    adapt::WarmStart warm;
    const std::optional<db::Experiment> existing = store.find_experiment(name);
    if (existing && existing->strategy_settings.contains("initial")) {
      // A continued run asks what the first run chose: the store may have
      // changed since, and the experiment's settings must stay the same.
      for (const auto& k : existing->strategy_settings["initial"])
        if (k.is_string()) settings.initial.push_back(k.get<std::string>());
      log_line("adapt", "continuing '" + name + "' with its warm start of " +
                            std::to_string(settings.initial.size()) + " architecture(s)");
    } else if (!f->no_warm_start) {
      warm = adapt::choose_warm_start(store, fp, name, kPortfolio);
      for (const std::string& k : warm.initial) {
        try {
          settings.initial.push_back(space.key(space.parse_key(k)));
        } catch (const Error&) {
        }
      }
      for (const auto& s : warm.sources)
        log_line("adapt", "warm start from '" + s.experiment + "' (similarity " +
                              report_number(s.similarity, "%.2f") +
                              "): " + std::to_string(s.archs.size()) + " architecture(s)");
      log_line("adapt",
               std::to_string(settings.initial.size()) + " warm-start architecture(s) asked first");
    }

    // 6. The search, on local workers whose CPU slots have the target's threads.
    ExperimentConfig cfg;
    cfg.name = name;
    cfg.data = data_dir.string();
    cfg.data_fingerprint = data::load_dataset(cfg.data).train.fingerprint();
    cfg.data_files = data::dataset_files(cfg.data);
    cfg.recipe = recipe.to_json();
    cfg.fidelity = fidelity;
    cfg.budget_trials = 1000000;
    const double spent = existing ? existing->seconds_run : 0;
    cfg.budget_seconds = std::max(1.0, budget * (1 - f->final_share) - elapsed() - spent);
    cfg.seed = f->seed;
    cfg.strategy_settings = settings.to_json();
    cfg.objective = settings.objective;
    AshaSettings asha;
    asha.eta = 3;
    asha.rungs = AshaSettings::geometric(std::max(1, fidelity / 9), 3, fidelity);
    if (!asha.rungs.empty()) cfg.asha = asha;
    auto strategy = make_strategy(space, settings);
    Predictions predictions;
    if (latency_model) {
      // Refuse before training what the model says is well over the limit;
      // the margin leaves the decision near the limit to the measurement.
      const double limit = f->latency_ms * 1.25;
      strategy->set_filter(
          [&, limit, o = settings.objective](const Arch& a) -> std::optional<std::string> {
            const LayerGraph g = space.lower(a);
            if (auto broken = o.precheck(g)) return broken;
            const double ms = latency_model->predict(g);
            {
              std::lock_guard lock(predictions.mu);
              predictions.ms[space.key(a)] = ms;
            }
            if (ms > limit)
              return "predicted latency " + report_number(ms, "%.3g") +
                     " ms > 1.25 x max_latency_ms " + report_number(f->latency_ms, "%.3g");
            return std::nullopt;
          });
    }
    const int cpu_threads = target.device == "cpu" ? target.threads : 1;
    LocalPool lp;
    lp.threads = cpu_threads;
    lp.workers =
        f->workers > 0 ? f->workers : std::max(1, detect_slots().front().threads / cpu_threads);
    // A GPU target is measured by a worker with that GPU: without --devices,
    // the local worker trains there too.
    lp.devices = f->devices.empty() && target.device != "cpu" ? target.device : f->devices;
    lp.who = "adapt";
    log_line("adapt", "search: " + space.ref() + ", " + std::to_string(fidelity) +
                          " epoch(s) per trial, batch " + std::to_string(batch) + ", " +
                          report_number(cfg.budget_seconds, "%.0f") + " s");
    const ControllerSummary s = run_local_search(store, space, *strategy, cfg, lp);
    if (s.stopped && stop_requested()) {
      std::printf("%s\n", nlohmann::json({{"experiment", name}, {"stopped", true}}).dump().c_str());
      log_line("adapt", "stopped; continue with the same command and --name " + name);
      return;
    }

    // 7. The latency model's error against what the target measured.
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t experiment = db::find_experiment_id(conn, name);
    nlohmann::json latency_error = nullptr;
    if (latency_model) {
      std::vector<double> rel;
      for (const db::TrialRow& t : db::top_k(conn, experiment, db::Metric::val_acc, 1000000)) {
        // This run's trials: each was predicted as it was asked (an earlier
        // run of a continued experiment has recorded its own).
        const auto p = predictions.ms.find(t.arch_key);
        if (p == predictions.ms.end() || !t.latency_ms || !(*t.latency_ms > 0)) continue;
        db::LatencyMeasurement m;
        m.target = target_text;
        m.host = host_name();
        m.space_ref = space.ref();
        m.arch_key = t.arch_key;
        m.measured_ms = *t.latency_ms;
        m.predicted_ms = p->second;
        rel.push_back(std::fabs(p->second - *t.latency_ms) / *t.latency_ms);
        m.experiment = name;
        m.created_at = unix_now();
        store.add_latency_measurement(m);
      }
      std::sort(rel.begin(), rel.end());
      latency_error = {{"measured", rel.size()},
                       {"median_relative_error", rel.empty() ? 0.0 : rel[rel.size() / 2]},
                       {"max_relative_error", rel.empty() ? 0.0 : rel.back()},
                       {"refused_before_training", strategy->rejected()}};
    }

    // 8. The final training of the best architecture that meets the
    //    constraints, the export, and the report.
    FinalOptions fo;
    fo.db = f->db;
    fo.experiment = name;
    fo.data = cfg.data;
    fo.out = out;
    fo.recipe = recipe;
    fo.recipe.set("epochs", std::to_string(f->final_epochs), "final training");
    const double left = budget - spent - elapsed();
    fo.deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(left));
    fo.recipe.set("threads", std::to_string(detect_slots().front().threads), "final training");
    fo.reproduce = reproduce_line(*ad, "minas adapt", {}, f->seed, f->budget);
    fo.class_names = src.classes;
    fo.constraints = constraints;
    fo.latency_device = target_text;
    log_line("adapt",
             "final training, evaluation and export of the best architecture that meets the "
             "constraints in the " +
                 report_number(std::max(kMinFinalSeconds, left), "%.0f") + " s left");
    const std::string x_metric = f->latency_ms > 0 ? "latency_ms" : f->max_macs ? "macs" : "params";
    auto more = [&](const FinalResult& r) {
      std::ostringstream md;
      md << "## Constraints\n\n| constraint | limit | final model | margin | met |\n"
         << "|---|---|---|---|---|\n";
      auto row = [&](const std::string& what, double limit, double value, const char* fmt) {
        md << "| " << what << " | " << report_number(limit, fmt) << " | "
           << report_number(value, fmt) << " | " << report_number(limit - value, fmt) << " ("
           << report_number(100 * (limit - value) / limit, "%.1f") << "%) | "
           << (value <= limit ? "yes" : "**no**") << " |\n";
      };
      if (f->latency_ms > 0)
        row("latency ms, batch 1, " + target_text, f->latency_ms, r.latency_ms, "%.3f");
      if (f->max_params)
        row("parameters", static_cast<double>(f->max_params), static_cast<double>(r.params),
            "%.0f");
      if (f->max_macs)
        row("MACs per image", static_cast<double>(f->max_macs), static_cast<double>(r.macs),
            "%.0f");
      if (constraints.empty()) md << "| none given | | | | |\n";
      md << "\nParameters and MACs are exact (the layer graph); latency is the median of 50 "
            "batch-1 runs on "
         << target_text << " on " << host_name() << ", batch norm folded.\n\n";
      if (!latency_error.is_null())
        md << "The latency model (per-layer table calibrated by " << latency_model->samples()
           << " measurements of " << target_text << " in the store) refused "
           << latency_error["refused_before_training"] << " candidate(s) before training; against "
           << latency_error["measured"] << " trained candidates measured on the target its "
           << "median relative error was "
           << report_number(100 * latency_error["median_relative_error"].get<double>(), "%.1f")
           << "% (largest "
           << report_number(100 * latency_error["max_relative_error"].get<double>(), "%.1f")
           << "%).\n\n";
      md << "## Confusion matrix (test set)\n\nRows: the true class; columns: the predicted "
            "class.\n\n| true \\ predicted |";
      for (const auto& c : src.classes) md << " " << c << " |";
      md << " recall |\n|---|";
      for (size_t k = 0; k <= src.classes.size(); ++k) md << "---|";
      md << "\n";
      for (size_t t = 0; t < r.confusion.size(); ++t) {
        int64_t total = 0;
        for (int64_t v : r.confusion[t]) total += v;
        md << "| **" << src.classes.at(t) << "** |";
        for (size_t p = 0; p < r.confusion[t].size(); ++p)
          md << " "
             << (p == t ? "**" + std::to_string(r.confusion[t][p]) + "**"
                        : std::to_string(r.confusion[t][p]))
             << " |";
        md << " " << (total ? report_percent(static_cast<double>(r.confusion[t][t]) / total) : "-")
           << " |\n";
      }
      md << "\n## Pareto front: validation accuracy against " << x_metric << "\n\n"
         << "The searched architectures no other beats on both (over every trained candidate; "
            "the chosen one marked). Accuracy is the search's validation figure.\n\n"
         << "| | trial | validation | " << x_metric << " | "
         << (x_metric == "params" ? "MACs" : "params") << " | architecture |\n"
         << "|---|---|---|---|---|---|\n";
      const db::Metric xm = x_metric == "latency_ms" ? db::Metric::latency_ms
                            : x_metric == "macs"     ? db::Metric::macs
                                                     : db::Metric::params;
      std::vector<db::TrialRow> front = db::pareto(conn, experiment, xm);
      const bool on_front = std::any_of(front.begin(), front.end(),
                                        [&](const db::TrialRow& t) { return t.number == r.trial; });
      if (!on_front) {
        // Another constraint kept it off the front: it is shown all the same.
        const db::TrialDetail chosen = db::trial(conn, experiment, r.trial);
        front.push_back(chosen.trial);
      }
      for (const db::TrialRow& t : front) {
        const auto xv = t.value(xm);
        md << "| "
           << (t.number != r.trial ? ""
               : on_front          ? "**chosen**"
                                   : "**chosen** (not on the front: a trial better on both "
                                     "breaks another constraint)")
           << " | " << t.number << " | " << (t.val_acc ? report_percent(*t.val_acc) : "-") << " | "
           << (xv ? report_number(*xv, x_metric == "latency_ms" ? "%.3f" : "%.0f") : "-") << " | "
           << (x_metric == "params" ? (t.macs ? std::to_string(*t.macs) : "-")
                                    : (t.params ? std::to_string(*t.params) : "-"))
           << " | " << report_code(t.arch_key) << " |\n";
      }
      md << "\nThe chosen model is the best by validation accuracy of those that meet the "
            "constraints (trial "
         << r.trial << ").\n\n## Data\n\n"
         << "`" << f->data << "`" << (f->test.empty() ? "" : " with test images `" + f->test + "`")
         << ": " << report.summary.images << " images, " << report.summary.excluded
         << " left out by validation (" << report.errors() << " error(s), " << report.warnings()
         << " warning(s); `validation.txt`, `validation.json`). " << in.why << " "
         << split.train.size() << " images for training and validation (" << val
         << " of them held out for validation in the search), " << split.test.size()
         << " for the test.\n\n";
      md << "## Warm start\n\n";
      if (!warm.sources.empty() || (!existing && !f->no_warm_start)) {
        for (const auto& s : warm.sources)
          md << "- `" << s.experiment << "`, similarity " << report_number(s.similarity, "%.2f")
             << ": " << s.archs.size() << " architecture(s)\n";
        md << "- the portfolio: " << kPortfolio.size() << " architectures\n\n"
           << settings.initial.size() << " asked first, in that order.\n";
      } else if (!settings.initial.empty()) {
        md << "Those of the experiment's first run: " << settings.initial.size()
           << " architecture(s) asked first.\n";
      } else {
        md << "None (`--no-warm-start`): every architecture sampled.\n";
      }
      return md.str();
    };
    const FinalResult fr = retrain_and_export(space, fo, more);
    const bool met = (!f->max_params || fr.params <= f->max_params) &&
                     (!f->max_macs || fr.macs <= f->max_macs) &&
                     (!(f->latency_ms > 0) || fr.latency_ms <= f->latency_ms);
    log_line("adapt",
             "exported to " + fr.out + ": test accuracy " + report_percent(fr.test_acc) + ", " +
                 std::to_string(fr.params) + " parameters, " +
                 report_number(fr.latency_ms, "%.3f") + " ms on " + target_text +
                 (met ? "" : "; the final measurement breaks a constraint (see report.md)"));
    nlohmann::json result = {{"experiment", name},
                             {"arch", fr.arch},
                             {"test_acc", fr.test_acc},
                             {"latency_ms", fr.latency_ms},
                             {"target", target_text},
                             {"params", fr.params},
                             {"macs", fr.macs},
                             {"constraints_met", met},
                             {"out", fr.out}};
    if (!latency_error.is_null()) result["latency_model"] = latency_error;
    std::printf("%s\n", result.dump().c_str());
  });
}

}  // namespace minas::cli
