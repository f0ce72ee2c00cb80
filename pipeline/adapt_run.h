#pragma once
// Inside the adaptation pipeline: what its steps hand on to each other
// (pipeline/adapt.cpp runs them, pipeline/adapt_report.cpp writes the
// report's sections from them).
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapt/images.h"
#include "adapt/latency_model.h"
#include "adapt/validate.h"
#include "adapt/warm_start.h"
#include "controller/controller.h"
#include "controller/strategy.h"
#include "db/queries.h"
#include "db/store.h"
#include "pipeline/adapt.h"
#include "searchspace/space.h"
#include "trainer/recipe.h"

namespace minas::pipeline::adapt_steps {

// Architectures of the default space known to do well on small images: the
// hand-designed reference network (docs/spaces.md) and two that one-click
// searches on Fashion-MNIST kept finding (experiments/one-click.md). The fixed
// part of every warm start, after what the store's similar data sets found.
extern const std::vector<std::string> kPortfolio;

std::string host_name();

// What the latency model said about the candidates, for the error record.
struct Predictions {
  std::mutex mu;
  std::map<std::string, double> ms;  // arch key -> predicted latency
};

struct AdaptRun {
  AdaptRun(const AdaptOptions& options, const Log& log)
      : o(options), log(log), started(std::chrono::steady_clock::now()) {}
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  const AdaptOptions& o;
  const Log& log;
  const std::chrono::steady_clock::time_point started;
  adapt::Target target;
  std::string name, out;
  std::optional<db::Store> store;
  // The data: read, validated, kept, split and written for the workers.
  adapt::Source src;
  adapt::ValidationReport report;
  adapt::Fingerprint fp;
  std::vector<adapt::ImageRecord> kept;
  adapt::InputChoice in;
  adapt::SplitIndices split;
  std::string data_dir;
  std::optional<Space> space;
  // The trials' recipe, suited to the data set's size.
  Recipe recipe;
  size_t val = 0, batch = 0;
  int fidelity = 0;
  // The strategy's settings (objective, warm start) and the constraints.
  StrategySettings settings;
  std::vector<db::Constraint> constraints;
  std::optional<adapt::LatencyModel> latency_model;
  adapt::WarmStart warm;
  std::optional<db::Experiment> existing;  // a continued run's experiment
  // The search and what it measured.
  double spent = 0;  // seconds an earlier run of the experiment ran
  std::unique_ptr<Strategy> strategy;
  Predictions predictions;
  nlohmann::json latency_error;
};

// The sections of report.md the adaptation adds before "Reproduce".
std::string adapt_report(const AdaptRun& run, db::Connection& conn, int64_t experiment,
                         const FinalResult& r);

}  // namespace minas::pipeline::adapt_steps
