// `minas bench table`: the ground-truth table of an experiment whose trials
// all trained to one fidelity (experiments/ground-truth/): a CSV that
// `minas bench strategies --table` and `minas bench evaluators` read.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "db/queries.h"
#include "pipeline/ground_truth.h"
#include "searchspace/error.h"

namespace minas::cli {
namespace {

struct Flags {
  std::string db, name, out;
  std::vector<int> epochs = {1, 3};
};

void run(const Flags& f) {
  db::Connection conn = db::open_store_readonly(f.db);
  const int64_t id = db::find_experiment_id(
      conn, f.name.empty() ? std::nullopt : std::optional<std::string>(f.name));
  const pipeline::GroundTruthTable t = pipeline::ground_truth_table(conn, id, f.epochs);
  if (t.rows.empty())
    throw Error(f.db, "experiment '" + db::experiment_name(conn, id) +
                          "' has no trial trained to the end yet: no table to write");
  pipeline::write_file_atomically(f.out, t.csv());
  std::fprintf(stderr, "wrote %s: %zu architectures", f.out.c_str(), t.rows.size());
  if (t.skipped)
    std::fprintf(stderr, " (%lld done trials left out: a curve point or a metric missing)",
                 static_cast<long long>(t.skipped));
  std::fprintf(stderr, "\n");
}

}  // namespace

void add_table_benchmark(CLI::App& bench) {
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = bench.add_subcommand(
      "table", "Write the ground-truth table (CSV) of an experiment trained to one fidelity");
  cmd->add_option("--db", f->db, "Experiment store")->required();
  cmd->add_option("--experiment", f->name, "Experiment name (default: the store's only one)");
  cmd->add_option("--out", f->out, "The CSV to write (replaced whole)")->required();
  cmd->add_option("--epochs", f->epochs,
                  "Epochs of the learning curve given columns besides the last")
      ->delimiter(',')
      ->default_str("1,3")
      ->check(in_range(1, 100000));
  cmd->callback([f] { run(*f); });
}

}  // namespace minas::cli
