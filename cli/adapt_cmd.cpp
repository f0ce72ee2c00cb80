// `minas adapt`: a customer's images and a deployment constraint in; a
// validated, searched, retrained and exported model out, with its report
// (the pipeline is pipeline/adapt.h's).
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command_line.h"
#include "cli/commands.h"
#include "cli/final_flags.h"
#include "cli/flag_ranges.h"
#include "pipeline/adapt.h"

namespace minas::cli {
namespace {

struct AdaptFlags {
  std::string data, test, target = "cpu:1", budget = "30m", out, db = "minas.db", name, devices;
  double latency_ms = 0;
  int64_t max_params = 0, max_macs = 0;
  bool strict = false, no_warm_start = false;
  uint64_t seed = 0;
  double test_share = 0.15, val_share = 0.15;
  int fidelity = 0, workers = 0;
  FinalFlags final;
  std::string pipeline = "classic";
  double time_exponent = 0;
  int64_t screen = 0;
};

pipeline::AdaptOptions adapt_options(const AdaptFlags& f, const CLI::App& ad) {
  pipeline::AdaptOptions o;
  o.data = f.data;
  o.test = f.test;
  o.target = f.target;
  o.latency_ms = f.latency_ms;
  o.max_params = f.max_params;
  o.max_macs = f.max_macs;
  o.budget_s = parse_duration(f.budget, "--budget");
  o.out = f.out;
  o.strict = f.strict;
  o.db = f.db;
  o.name = f.name;
  o.seed = f.seed;
  o.test_share = f.test_share;
  o.val_share = f.val_share;
  f.final.apply(o);
  o.screen = f.screen;
  o.time_exponent = f.time_exponent;
  // --pipeline screened: what minas search's stands for, where not given.
  if (f.pipeline == "screened") {
    if (ad.count("--screen") == 0) o.screen = 2000;
    o.screen_order = "front";
    o.screen_evaluator = "synflow+params";
    if (ad.count("--final-pick") == 0) o.final_pick = pipeline::FinalPick::final_time;
    o.trial_fraction = 0.25;
    if (ad.count("--time-exponent") == 0) o.time_exponent = 0.237;
  }
  o.fidelity = f.fidelity;
  o.workers = f.workers;
  o.devices = f.devices;
  o.warm_start = !f.no_warm_start;
  o.reproduce = reproduce_line(ad, "minas adapt", {}, f.seed, f.budget);
  return o;
}

void print_result(const pipeline::AdaptResult& r) {
  if (r.interrupted) {
    std::printf("%s\n",
                nlohmann::json({{"experiment", r.experiment}, {"stopped", true}}).dump().c_str());
    log_line("adapt", "stopped; continue with the same command and --name " + r.experiment);
    return;
  }
  const pipeline::FinalResult& fr = r.final;
  nlohmann::json result = {{"experiment", r.experiment},
                           {"arch", fr.arch},
                           {"test_acc", fr.test_acc},
                           {"latency_ms", fr.latency_ms},
                           {"target", r.target},
                           {"params", fr.params},
                           {"macs", fr.macs},
                           {"constraints_met", r.constraints_met},
                           {"out", fr.out}};
  if (!r.latency_model.is_null()) result["latency_model"] = r.latency_model;
  std::printf("%s\n", result.dump().c_str());
}

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
  f->final.add(ad, " among those that meet the constraints");
  ad->add_option("--time-exponent", f->time_exponent,
                 "Time-aware reward: a trial's error scaled by (its training seconds / 10)^a, "
                 "ranking trials by the accuracy each reaches in one fixed time; 0: off")
      ->default_val(0)
      ->check(in_range(0.0, 2.0));
  ad->add_option("--screen", f->screen,
                 "Architectures sampled and scored at initialization by synflow on the workers "
                 "(no training) before any trial; evolution starts from the best; 0: off")
      ->default_val(0)
      ->check(in_range(int64_t{0}, int64_t{10000000}));
  ad->add_option("--pipeline", f->pipeline,
                 "screened: --screen 2000 by synflow+params (taken by Pareto front of score "
                 "against MACs), "
                 "--final-pick final-time, --time-exponent 0.237, and trials of a quarter of "
                 "their epochs planned as short runs without ASHA, each unless given; classic: the settings as given")
      ->default_val("classic")
      ->check(CLI::IsMember({"classic", "screened"}));
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
  ad->callback([f, ad] { print_result(pipeline::run_adapt(adapt_options(*f, *ad))); });
}

}  // namespace minas::cli
