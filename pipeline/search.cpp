#include "pipeline/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "db/store.h"
#include "pipeline/experiment.h"
#include "pipeline/stop.h"
#include "searchspace/error.h"
#include "worker/devices.h"
#include "worker/worker.h"

namespace minas::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

int cores() {
  return detect_slots().front().threads;
}

// The pool with its number of workers: by default one per core the process
// may use, each with per_trial slots of `threads`.
LocalPool resolved_pool(const LocalPool& p) {
  LocalPool pool = p;
  pool.threads = std::max(1, p.threads);
  pool.per_trial = std::max(1, p.per_trial);
  if (p.workers <= 0) pool.workers = std::max(1, cores() / (pool.threads * pool.per_trial));
  return pool;
}

// The experiment's name: the given one, a new search-DATE-TIME, or with
// --resume and no name the store's latest.
std::string experiment_name(db::Store& store, const SearchOptions& o) {
  if (o.resume && o.experiment.name.empty()) {
    const auto all = store.experiments();
    if (all.empty()) throw Error("--resume", o.db + " holds no experiment");
    return all.back().name;
  }
  return o.experiment.name.empty() ? default_experiment_name("search") : o.experiment.name;
}

// The final training, evaluation and export in what the search left of the
// budget (less what an earlier run of a resumed experiment spent).
FinalResult final_training(const Space& space, const SearchOptions& o, const std::string& name,
                           double spent, Clock::time_point run_started, const Log& log) {
  FinalOptions fo;
  fo.db = o.db;
  fo.experiment = name;
  fo.data = o.experiment.data;
  fo.out = o.out.empty() ? "runs/" + name : o.out;
  fo.recipe = o.recipe;
  fo.recipe.set("epochs", std::to_string(o.final_epochs), "final training");
  fo.recipe.set("run_fraction", "1", "final training");  // it trains all it plans
  // What the search left of the budget is the final training's, less what
  // its evaluation and export take (measured by retrain_and_export).
  const double left = o.budget_s - spent -
                      std::chrono::duration<double>(Clock::now() - run_started).count() -
                      exit_reserve_seconds(o.budget_s);
  fo.deadline = Clock::now() +
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(left));
  fo.recipe.set("threads", std::to_string(cores()), "final training");
  fo.reproduce = o.reproduce;
  fo.pick = o.final_pick;
  fo.curve_exponent = o.curve_exponent;
  if (o.experiment.screen > 0) fo.screen_evaluator = o.experiment.screen_evaluator;
  fo.trial_fraction = o.experiment.trial_fraction;
  log.line("search", "final training, evaluation and export of the best architecture in the " +
                         std::to_string(static_cast<int>(std::max(kMinFinalSeconds, left))) +
                         " s left");
  const FinalResult fr = retrain_and_export(space, fo, {}, log);
  char acc[32];
  std::snprintf(acc, sizeof acc, "%.2f%%", 100 * fr.test_acc);
  log.line("search", "exported to " + fr.out + ": test accuracy " + acc + ", " +
                         std::to_string(fr.params) + " parameters");
  return fr;
}

}  // namespace

void check_search_options(const SearchOptions& o) {
  if (o.resume && !std::filesystem::exists(o.db))
    throw Error("--resume", "no store " + o.db + " here to resume from");
  if (!o.pool.devices.empty()) parse_devices(o.pool.devices);
  if (std::error_code ec; !o.out.empty() && std::filesystem::exists(o.out, ec) &&
                          !std::filesystem::is_directory(o.out, ec))
    throw Error("--out " + o.out, "is a file, not a folder for the export");
}

double exit_reserve_seconds(double budget_s) {
  return std::clamp(budget_s * 0.005, 0.0, 5.0);
}

std::optional<double> time_floor(const SearchOptions& o) {
  if (!o.final_training) return std::nullopt;
  const LocalPool pool = resolved_pool(o.pool);
  const double final_epoch_s = o.budget_s * o.final_share / std::max(1, o.final_epochs);
  const double trial_epochs =
      static_cast<double>(o.experiment.fidelity) * o.experiment.trial_fraction;
  const double threads = static_cast<double>(cores()) / (pool.threads * pool.per_trial);
  const double floor = final_epoch_s * trial_epochs * std::max(1.0, threads);
  if (!(floor > 0) || !std::isfinite(floor)) return std::nullopt;
  return floor;
}

SearchResult run_search(const Space& space, const SearchOptions& o, const Log& log) {
  check_search_options(o);
  const LocalPool pool = resolved_pool(o.pool);
  // The time-aware reward's floor, where the objective has none: derived
  // from this run's budget, so not part of the stored settings (a resumed
  // experiment may be given another budget).
  auto with_floor = [&](Objective& objective) {
    if (objective.time_exponent && !objective.time_floor_s)
      objective.time_floor_s = time_floor(o);
  };
  StrategySettings settings = o.strategy;
  with_floor(settings.objective);
  const auto strategy = make_strategy(space, settings);
  ExperimentConfig cfg = o.experiment;
  with_floor(cfg.objective);
  check_inherit(cfg, *strategy);
  fingerprint_data(cfg, false);
  // Every input is read and checked before the store is created, so a
  // refused command leaves no store behind.
  db::Store store = db::Store::open(o.db);
  cfg.name = experiment_name(store, o);
  // A resumed experiment has spent part of the budget already.
  double spent = 0;
  if (auto e = store.find_experiment(cfg.name)) spent = e->seconds_run;
  cfg.budget_seconds =
      std::max(1.0, (o.final_training ? o.budget_s * (1 - o.final_share) : o.budget_s) - spent);
  if (spent > 0)
    log.line("search", "experiment '" + cfg.name + "' has run " +
                           std::to_string(static_cast<int>(spent)) + " s of its budget");
  const auto run_started = o.started.value_or(Clock::now());
  SearchResult r;
  r.experiment = cfg.name;
  r.summary = run_local_search(store, space, *strategy, cfg, pool, log);
  r.interrupted = r.summary.stopped && stop_requested();
  if (r.interrupted || !o.final_training) return r;
  r.final = final_training(space, o, cfg.name, spent, run_started, log);
  return r;
}

}  // namespace minas::pipeline
