// `minas bench predictor`: the performance predictor (controller/predictor.h)
// alone against a table of known results: for each training-set size, fit an
// ensemble on a random subset of the table's architectures and predict
// others; how well the predictions rank them (Kendall's tau, Spearman's rho
// against the target column) and how honest the ensemble's spread is (the
// share of held-out points within 1 and 2 predicted standard deviations, and
// the rank correlation between the absolute error and the predicted spread).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/arch_table.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "controller/predictor.h"
#include "controller/ranking.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"

namespace minas::cli {
namespace {

struct Flags {
  std::string table, space = "nb201", target, features;
  std::vector<std::string> feature_columns;
  std::vector<int> train_sizes = {10, 25, 50, 100, 200};
  int repeats = 20, held_out = 1000, members = 5, epochs = 200;
  uint64_t seed = 0;
};

// The table as features and targets: the arch column's one-hot encoding,
// then each named column standardized over the table (a proxy or a partial
// learning curve is known for every architecture before any is chosen).
struct Data {
  std::vector<std::vector<float>> x;
  std::vector<double> y;
};

Data read_table(const Flags& f, const Space& space) {
  const ArchTable t = ArchTable::read(f.table, space, {{f.target, "--target"}});
  const size_t target = t.column(f.target, "--target");
  // A feature column is the table's, else --features' (by architecture).
  std::optional<ArchTable> more;
  if (!f.features.empty()) more = ArchTable::read(f.features, space);
  struct Source {
    const ArchTable* table;
    size_t column;
  };
  std::vector<Source> extra;
  for (const std::string& c : f.feature_columns) {
    if (const auto i = t.find(c))
      extra.push_back({&t, *i});
    else if (more)
      extra.push_back({&*more, more->column(c, "--feature-columns")});
    else
      extra.push_back({&t, t.column(c, "--feature-columns")});  // throws, naming the columns
  }

  Data d;
  std::vector<std::vector<double>> numeric;  // per row, the named columns
  for (size_t i = 0; i < t.size(); ++i) {
    d.x.push_back(space.one_hot(t.arch(i)));
    d.y.push_back(t.number(i, target));
    std::vector<double> v;
    for (const Source& src : extra) {
      size_t row = i;
      if (src.table != &t) {
        const auto r = src.table->row_of(t.key(i));
        if (!r)
          throw Error(src.table->path(), "no row for architecture " +
                                             printable_excerpt(t.key(i), 120) + " of " + f.table);
        row = *r;
      }
      v.push_back(src.table->number(row, src.column));
    }
    numeric.push_back(std::move(v));
  }
  for (size_t c = 0; c < extra.size(); ++c) {
    double mean = 0, var = 0;
    for (const auto& v : numeric) mean += v[c];
    mean /= static_cast<double>(numeric.size());
    for (const auto& v : numeric) var += (v[c] - mean) * (v[c] - mean);
    const double sd = std::sqrt(var / static_cast<double>(numeric.size()));
    for (size_t i = 0; i < numeric.size(); ++i)
      d.x[i].push_back(static_cast<float>(sd > 0 ? (numeric[i][c] - mean) / sd : 0.0));
  }
  return d;
}

struct Stat {
  std::vector<double> values;
  void add(double v) {
    if (std::isfinite(v)) values.push_back(v);
  }
  std::string text() const {
    if (values.empty()) return "nan";
    double m = 0, s = 0;
    for (double v : values) m += v;
    m /= static_cast<double>(values.size());
    for (double v : values) s += (v - m) * (v - m);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f±%.3f", m,
                  std::sqrt(s / static_cast<double>(values.size())));
    return buf;
  }
};

void run(const Flags& f) {
  const Space space = Space::load(f.space);
  const Data d = read_table(f, space);
  const size_t rows = d.x.size();
  std::printf(
      "predictor: table=%s space=%s target=%s features=one-hot(%zu)%s%s rows=%zu "
      "members=%d epochs=%d repeats=%d held_out<=%d seed=%llu\n",
      f.table.c_str(), space.name().c_str(), f.target.c_str(), space.one_hot_size(),
      f.feature_columns.empty() ? "" : "+",
      [&] {
        std::string s;
        for (const auto& c : f.feature_columns) s += (s.empty() ? "" : ",") + c;
        return s;
      }()
          .c_str(),
      rows, f.members, f.epochs, f.repeats, f.held_out, static_cast<unsigned long long>(f.seed));
  std::printf("%6s %15s %15s %15s %15s %15s %8s\n", "train", "kendall_tau", "spearman_rho",
              "within_1sd", "within_2sd", "rho(|err|,sd)", "seconds");
  for (int size : f.train_sizes) {
    if (static_cast<size_t>(size) >= rows) {
      std::printf("%6d (skipped: the table has only %zu rows, none would be held out)\n", size,
                  rows);
      continue;
    }
    Stat tau, rho, within1, within2, calibration;
    double seconds = 0;
    for (int r = 0; r < f.repeats; ++r) {
      // Each repeat its own subset and ensemble, from one seeded stream.
      Rng rng(f.seed ^ (static_cast<uint64_t>(size) << 32) ^ static_cast<uint64_t>(r));
      std::vector<size_t> order(rows);
      for (size_t i = 0; i < rows; ++i) order[i] = i;
      for (size_t i = rows; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
      const size_t n = static_cast<size_t>(size);
      const size_t m = std::min(rows - n, static_cast<size_t>(f.held_out));
      std::vector<std::vector<float>> x;
      std::vector<double> y;
      for (size_t i = 0; i < n; ++i) {
        x.push_back(d.x[order[i]]);
        y.push_back(d.y[order[i]]);
      }
      PredictorSettings ps;
      ps.members = f.members;
      ps.seed = rng.next();
      Predictor p(d.x[0].size(), ps);
      const auto start = std::chrono::steady_clock::now();
      p.fit(x, y, f.epochs);
      std::vector<double> truth, mean, sd, err;
      for (size_t i = n; i < n + m; ++i) {
        const Prediction q = p.predict(d.x[order[i]]);
        truth.push_back(d.y[order[i]]);
        mean.push_back(q.mean);
        sd.push_back(q.std);
        err.push_back(std::abs(q.mean - d.y[order[i]]));
      }
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      tau.add(kendall_tau(mean, truth));
      rho.add(spearman_rho(mean, truth));
      double in1 = 0, in2 = 0;
      for (size_t i = 0; i < m; ++i) {
        in1 += err[i] <= sd[i];
        in2 += err[i] <= 2 * sd[i];
      }
      within1.add(in1 / static_cast<double>(m));
      within2.add(in2 / static_cast<double>(m));
      calibration.add(spearman_rho(err, sd));
    }
    std::printf("%6d %15s %15s %15s %15s %15s %8.3f\n", size, tau.text().c_str(),
                rho.text().c_str(), within1.text().c_str(), within2.text().c_str(),
                calibration.text().c_str(), seconds / f.repeats);
  }
}

}  // namespace

void add_predictor_benchmark(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = bench.add_subcommand(
      "predictor", "The performance predictor alone: rank correlation and calibration on a table");
  cmd->add_option("--table", f->table, "CSV with an 'arch' column of canonical keys")->required();
  cmd->add_option("--space", f->space, "Search space of the table's architectures")
      ->default_val("nb201");
  cmd->add_option("--target", f->target, "Column the predictor regresses")->required();
  cmd->add_option("--feature-columns", f->feature_columns,
                  "Numeric columns added to the one-hot features (standardized over the table)")
      ->delimiter(',');
  cmd->add_option("--features", f->features,
                  "A second table (an arch column; minas bench evaluators --out) for "
                  "--feature-columns that --table lacks, joined by architecture");
  cmd->add_option("--train-sizes", f->train_sizes, "Training-set sizes")
      ->delimiter(',')
      ->default_str("10,25,50,100,200")
      ->check(in_range(1, 100'000'000));
  cmd->add_option("--repeats", f->repeats, "Random training sets per size")
      ->default_val(20)
      ->check(in_range(1, 1'000'000));
  cmd->add_option("--held-out", f->held_out,
                  "Architectures predicted per repeat, drawn from those not trained on")
      ->default_val(1000)
      ->check(in_range(2, 100'000'000));
  cmd->add_option("--members", f->members, "MLPs in the ensemble")
      ->default_val(5)
      ->check(in_range(1, 1000));
  cmd->add_option("--epochs", f->epochs, "Passes over the training set")
      ->default_val(200)
      ->check(in_range(1, 1'000'000));
  cmd->add_option("--seed", f->seed, "Seed of the subsets and the ensembles")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  cmd->callback([f] { run(*f); });
}

}  // namespace minas::cli
