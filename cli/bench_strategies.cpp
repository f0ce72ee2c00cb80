// `minas bench strategies`: many independent searches in-process against a
// table of known results (NAS-Bench-201's), through the same strategy code the
// controller runs, each picking its best by the search metric after N queries
// and reporting that architecture's report metric: the published way to
// compare NAS strategies without training.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "cli/arch_table.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "cli/strategy_flags.h"
#include "controller/pareto.h"
#include "controller/strategy.h"
#include "searchspace/error.h"
#include "searchspace/space.h"

namespace minas::cli {
namespace {

struct Flags {
  std::string space = "nb201", table, search_metric, report_metric;
  int queries = 100, runs = 100, workers = 1;
  uint64_t seed = 0;
  StrategyFlags strategy;
};

struct Row {
  double search = 0, report = 0;  // as the table writes them
  double cost = 0;                // Pareto mode's cost
  double params = 0, macs = 0;
};

// The table by canonical key. Every row must be an architecture of the space.
std::unordered_map<std::string, Row> read_table(const Flags& f, const Space& space,
                                                const std::string& cost_column) {
  std::vector<ArchTable::Needed> needed = {{f.search_metric, "--search-metric"},
                                           {f.report_metric, "--report-metric"}};
  if (!cost_column.empty()) needed.push_back({cost_column, "--pareto"});
  const ArchTable t = ArchTable::read(f.table, space, needed);
  const size_t search = t.column(f.search_metric, "--search-metric");
  const size_t report = t.column(f.report_metric, "--report-metric");
  const size_t cost = cost_column.empty() ? 0 : t.column(cost_column, "--pareto");
  std::unordered_map<std::string, Row> rows;
  for (size_t i = 0; i < t.size(); ++i) {
    Row r;
    r.search = t.number(i, search);
    r.report = t.number(i, report);
    if (!cost_column.empty()) r.cost = t.number(i, cost);
    rows.emplace(t.key(i), r);
  }
  return rows;
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v;
  return x.empty() ? 0 : s / static_cast<double>(x.size());
}

// Population standard deviation (numpy's default, as NAS-Bench-201 reports).
double stdev(const std::vector<double>& x) {
  const double m = mean(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return x.empty() ? 0 : std::sqrt(s / static_cast<double>(x.size()));
}

void run(const Flags& f, const CLI::App& cmd) {
  if (f.queries < 1 || f.runs < 1 || f.workers < 1)
    throw Error("bench strategies", "--queries, --runs and --workers must be >= 1");
  const Space space = Space::load(f.space);
  StrategySettings settings = f.strategy.settings(cmd, f.seed);
  const Objective& objective = settings.objective;
  if (objective.latency_target_ms || objective.max_latency_ms)
    throw Error("bench strategies",
                "a table has no measured latency: use --max-params, "
                "--max-macs or --pareto params|macs here");
  if (objective.time_exponent)
    throw Error("bench strategies",
                "a table has no trial's training time: --time-exponent is for searches");
  const std::string cost_column = objective.pareto == "latency_ms" ? "latency_ms" : "";
  auto rows = read_table(f, space, cost_column);
  // Search metrics written as percentages are scored as fractions, as workers report them.
  double top = 0;
  for (const auto& [k, r] : rows) top = std::max(top, r.search);
  const double scale = top > 1 ? 0.01 : 1.0;
  const bool need_graph = objective.pareto == "params" || objective.pareto == "macs" ||
                          objective.max_params || objective.max_macs;
  if (need_graph)
    for (auto& [k, r] : rows) {
      const LayerGraph g = space.lower(space.parse_key(k));
      r.params = static_cast<double>(g.params());
      r.macs = static_cast<double>(g.macs());
      if (objective.pareto == "params") r.cost = r.params;
      if (objective.pareto == "macs") r.cost = r.macs;
    }

  // Pareto mode's yardstick: hypervolume of (search metric, cost) with both
  // normalized to the table's range and the reference at the worst corner.
  double lo_v = std::numeric_limits<double>::infinity(), hi_v = -lo_v, lo_c = lo_v, hi_c = -lo_v;
  for (const auto& [k, r] : rows) {
    lo_v = std::min(lo_v, r.search);
    hi_v = std::max(hi_v, r.search);
    lo_c = std::min(lo_c, r.cost);
    hi_c = std::max(hi_c, r.cost);
  }
  auto normalized = [&](const Row& r) {
    return pareto::Point{(r.search - lo_v) / std::max(hi_v - lo_v, 1e-300),
                         (r.cost - lo_c) / std::max(hi_c - lo_c, 1e-300)};
  };
  const pareto::Point reference{0.0, 1.0};

  double optimum = -std::numeric_limits<double>::infinity();
  std::vector<pareto::Point> everything;
  for (const auto& [k, r] : rows) {
    optimum = std::max(optimum, r.report);
    everything.push_back(normalized(r));
  }
  std::printf(
      "strategy=%s space=%s table=%s search=%s report=%s queries=%d runs=%d seed=%llu "
      "workers=%d settings=%s\n",
      settings.name.c_str(), space.name().c_str(), f.table.c_str(), f.search_metric.c_str(),
      f.report_metric.c_str(), f.queries, f.runs, static_cast<unsigned long long>(f.seed),
      f.workers, settings.to_json().dump().c_str());
  if (objective.pareto_mode())
    std::printf(
        "pareto: hypervolume of (%s, %s) normalized to the table's ranges, reference "
        "(0, 1); the whole table's front: %.6f\n",
        f.search_metric.c_str(), objective.pareto.c_str(),
        pareto::hypervolume(everything, reference));
  else
    std::printf("table: %zu architectures, best %s %.4f\n", rows.size(), f.report_metric.c_str(),
                optimum);

  std::vector<double> results;
  int64_t rejected = 0;
  for (int run = 0; run < f.runs; ++run) {
    StrategySettings s = settings;
    s.seed = f.seed + static_cast<uint64_t>(run);
    const auto strategy = make_strategy(space, s);
    std::deque<Arch> in_flight;  // asked, not yet told: `workers` at a time, told oldest first
    double best_search = -std::numeric_limits<double>::infinity(), best_report = 0;
    std::vector<pareto::Point> seen;
    int told = 0, asked = 0;
    bool exhausted = false;
    while (told < f.queries) {
      while (!exhausted && asked < f.queries && static_cast<int>(in_flight.size()) < f.workers) {
        auto c = strategy->ask();
        if (!c) {
          exhausted = true;
          break;
        }
        in_flight.push_back(c->arch);
        ++asked;
      }
      if (in_flight.empty()) break;
      const Arch a = in_flight.front();
      in_flight.pop_front();
      const std::string key = space.key(a);
      const auto it = rows.find(key);
      if (it == rows.end())
        throw Error(f.table, "has no row for " + key + ", which the strategy asked for");
      const Row& r = it->second;
      Metrics m;
      m.val_acc = r.search * scale;
      if (need_graph) {
        m.params = r.params;
        m.macs = r.macs;
      }
      if (objective.pareto == "latency_ms") m.latency_ms = r.cost;
      const Score score = objective.score(m);
      strategy->tell(a, score);
      ++told;
      if (score.feasible && r.search > best_search) {
        best_search = r.search;
        best_report = r.report;
      }
      if (score.feasible) seen.push_back(normalized(r));
    }
    rejected += strategy->rejected();
    results.push_back(objective.pareto_mode() ? pareto::hypervolume(seen, reference) : best_report);
  }
  if (rejected)
    std::printf("constraints refused %lld candidates before any query\n",
                static_cast<long long>(rejected));
  if (objective.pareto_mode())
    std::printf("hypervolume over %d runs (gap to the table's front: mean %.6f):\n", f.runs,
                pareto::hypervolume(everything, reference) - mean(results));
  std::printf("mean=%.4f std=%.4f\n", mean(results), stdev(results));
}

}  // namespace

void add_strategy_benchmark(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = bench.add_subcommand(
      "strategies", "Search strategies against a table of known results (NAS-Bench-201)");
  cmd->add_option("--space", f->space, "Search space of the table's architectures")
      ->default_val("nb201");
  cmd->add_option("--table", f->table, "CSV with an 'arch' column of canonical keys")->required();
  cmd->add_option("--search-metric", f->search_metric, "Column the search sees")->required();
  cmd->add_option("--report-metric", f->report_metric, "Column reported for each search's pick")
      ->required();
  cmd->add_option("--queries", f->queries, "Results each search sees")
      ->default_val(100)
      ->check(in_range(1, 100'000'000));
  cmd->add_option("--runs", f->runs, "Independent searches")
      ->default_val(100)
      ->check(in_range(1, 1'000'000));
  cmd->add_option("--seed", f->seed, "Seed of the first run (run i uses seed + i)")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  cmd->add_option("--workers", f->workers,
                  "Asks in flight at once, told oldest first (asynchronous workers)")
      ->default_val(1)
      ->check(in_range(1, 100'000));
  f->strategy.add(cmd, false);
  cmd->callback([f, cmd] { run(*f, *cmd); });
}

}  // namespace minas::cli
