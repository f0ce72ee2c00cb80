// `minas bench inherit`: is weight inheritance worth it? For every
// architecture of a ground-truth table, a parent one mutation away (as
// evolution makes its children) is trained for --epochs, then the
// architecture itself twice for --epochs: from scratch and warm-started from
// the parent's weights (trainer/inherit.h). Each short training is ranked
// against the table's target by Kendall tau: the warm start is worth it when
// it ranks better at the same cost per candidate (the parent's training is
// paid in a search anyway: every parent is a trained member of the
// population).
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "controller/ranking.h"
#include "pipeline/ground_truth.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "trainer/backends.h"
#include "trainer/data.h"
#include "trainer/inherit.h"
#include "trainer/train.h"

namespace minas::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct InheritFlags {
  std::string space = "small", data = "fashion-mnist", table, target = "valid_10ep", out;
  int epochs = 1, threads = 1, limit = 0;
  int64_t train_images = 0;  // 0: all
  uint64_t seed = 0;
};

struct Row {
  std::string key;
  double target = 0;
};

// The table's arch and target columns (the CSV minas bench table writes: no quoting).
std::vector<Row> read_rows(const std::string& path, const std::string& target) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read the table");
  auto fields = [](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> out;
    for (size_t start = 0;;) {
      const size_t comma = line.find(',', start);
      out.push_back(line.substr(start, comma == std::string::npos ? comma : comma - start));
      if (comma == std::string::npos) return out;
      start = comma + 1;
    }
  };
  std::string line;
  if (!std::getline(in, line)) throw Error(path, "empty table");
  const std::vector<std::string> header = fields(line);
  int arch = -1, tgt = -1;
  for (size_t c = 0; c < header.size(); ++c) {
    if (header[c] == "arch") arch = static_cast<int>(c);
    if (header[c] == target) tgt = static_cast<int>(c);
  }
  if (arch < 0) throw Error(path, "no 'arch' column: not a ground-truth table");
  if (tgt < 0) throw Error(path, "no column '" + printable_excerpt(target, 40) + "' for --target");
  std::vector<Row> rows;
  std::unordered_set<std::string> seen;
  for (int n = 2; std::getline(in, line); ++n) {
    if (line.empty() || line == "\r") continue;
    const std::string where = path + ":" + std::to_string(n);
    const std::vector<std::string> f = fields(line);
    if (f.size() != header.size())
      throw Error(where, std::to_string(f.size()) + " fields, the header has " +
                             std::to_string(header.size()));
    const std::string& s = f[static_cast<size_t>(tgt)];
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v))
      throw Error(where, target + ": '" + printable_excerpt(s, 40) + "' is not a number");
    const std::string& key = f[static_cast<size_t>(arch)];
    if (!seen.insert(key).second)
      throw Error(where, "architecture " + printable_excerpt(key, 120) + " appears twice");
    rows.push_back({key, v});
  }
  if (rows.size() < 2) throw Error(path, "fewer than 2 rows: nothing to rank");
  return rows;
}

// The data set, its training images cut to a seeded subset of n (0: all);
// the test set is not used.
data::TrainTest training_data(const std::string& name, int64_t n, uint64_t seed) {
  data::TrainTest d = data::load_dataset(name);
  if (n <= 0 || static_cast<size_t>(n) >= d.train.size()) return d;
  const std::vector<uint32_t> keep =
      data::subset(data::all_indices(d.train), static_cast<size_t>(n), seed);
  data::Dataset cut;
  cut.source = d.train.source;  // so that training normalizes it as the whole set
  cut.shape = d.train.shape;
  cut.classes = d.train.classes;
  for (const uint32_t i : keep) {
    cut.pixels.insert(cut.pixels.end(), d.train.image(i), d.train.image(i) + d.train.image_size());
    cut.labels.push_back(d.train.labels[i]);
  }
  d.train = std::move(cut);
  return d;
}

struct Outcome {
  double val = 0, seconds = 0;
};

// One short training of `model`; with `state`, its final state is kept there.
Outcome train_short(Model& model, const Recipe& recipe, const data::TrainTest& data,
                    Backend& backend, std::optional<Checkpoint>* state = nullptr) {
  TrainOptions o;
  o.evaluate_test = false;
  o.measure_latency = false;
  if (state) {
    o.checkpoint_epochs = {static_cast<int>(recipe.epochs)};
    o.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
      Checkpoint ck;
      ck.meta.info = info;
      for (const TensorView& t : tensors)
        ck.tensors.push_back({t.name, t.shape, {t.data.begin(), t.data.end()}});
      state->emplace(std::move(ck));
    };
  }
  const Clock::time_point t0 = Clock::now();
  const TrainReport r = train(model, recipe, data, backend, o);
  return {r.val_acc * 100, seconds_since(t0)};
}

double tau_of(const std::vector<double>& x, const std::vector<double>& y) {
  return kendall_tau(average_ranks(x), average_ranks(y));
}

void run_inherit(const InheritFlags& f) {
  const Space space = Space::load(f.space);
  std::vector<Row> rows = read_rows(f.table, f.target);
  if (f.limit > 0 && static_cast<size_t>(f.limit) < rows.size()) rows.resize(f.limit);
  const data::TrainTest data = training_data(f.data, f.train_images, f.seed);
  Recipe recipe;
  recipe.set("epochs", std::to_string(f.epochs), "--epochs");
  recipe.set("threads", std::to_string(f.threads), "--threads");
  recipe.set("seed", std::to_string(f.seed), "--seed");
  // A fifth of the images validate (the default 10,000 when all are used).
  if (f.train_images > 0)
    recipe.set("val_size", std::to_string(std::min<int64_t>(10000, f.train_images / 5)),
               "--train-images");
  auto backend = make_backend("cpu", f.threads);
  Rng rng(f.seed);
  std::vector<double> target, scratch, warm, share;
  double scratch_s = 0, warm_s = 0, parent_s = 0;
  std::string csv = "arch,parent,mutation," + f.target + ",scratch,inherited,params_inherited\n";
  std::fprintf(stderr,
               "training %zu architectures of %s, each with a parent, %d epoch(s) each...\n",
               rows.size(), f.table.c_str(), f.epochs);
  for (size_t i = 0; i < rows.size(); ++i) {
    const Arch a = space.parse_key(rows[i].key);
    Mutation m;
    const Arch p = space.mutate(a, rng, &m);
    const Decision& d = space.decisions()[m.decision];
    const std::string mutation = d.name + ": " + d.label(m.to) + " -> " + d.label(m.from);
    Model parent(space.lower(p), recipe.seed);
    std::optional<Checkpoint> state;
    parent_s += train_short(parent, recipe, data, *backend, &state).seconds;
    if (!state) throw Error("bench inherit", "the parent's training kept no state");
    Model fresh(space.lower(a), recipe.seed);
    const Outcome s = train_short(fresh, recipe, data, *backend);
    Model child(space.lower(a), recipe.seed);
    const InheritReport ir = inherit_weights(child, parent.graph(), *state, "bench inherit");
    const Outcome w = train_short(child, recipe, data, *backend);
    target.push_back(rows[i].target);
    scratch.push_back(s.val);
    warm.push_back(w.val);
    share.push_back(static_cast<double>(ir.params) / static_cast<double>(ir.total_params));
    scratch_s += s.seconds;
    warm_s += w.seconds;
    char line[512];
    std::snprintf(line, sizeof line, "%s,%s,%s,%.4f,%.4f,%.4f,%.4f\n", rows[i].key.c_str(),
                  space.key(p).c_str(), mutation.c_str(), rows[i].target, s.val, w.val,
                  share.back());
    csv += line;
    std::fprintf(stderr, "  %zu/%zu %s  scratch %.2f  inherited %.2f (%.0f%% of the parameters)\n",
                 i + 1, rows.size(), rows[i].key.c_str(), s.val, w.val, 100 * share.back());
  }
  const double n = static_cast<double>(rows.size());
  double mean_s = 0, mean_w = 0, mean_share = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    mean_s += scratch[i] / n;
    mean_w += warm[i] / n;
    mean_share += share[i] / n;
  }
  std::printf(
      "table=%s architectures=%zu target=%s space=%s data=%s train_images=%lld epochs=%d "
      "threads=%d seed=%llu\n",
      f.table.c_str(), rows.size(), f.target.c_str(), space.name().c_str(), f.data.c_str(),
      static_cast<long long>(f.train_images), f.epochs, f.threads,
      static_cast<unsigned long long>(f.seed));
  std::printf("%-10s %8s %8s %10s %12s\n", "training", "tau", "rho", "mean_val", "s/candidate");
  std::printf("%-10s %8.4f %8.4f %10.2f %12.2f\n", "scratch", tau_of(scratch, target),
              spearman_rho(scratch, target), mean_s, scratch_s / n);
  std::printf("%-10s %8.4f %8.4f %10.2f %12.2f\n", "inherited", tau_of(warm, target),
              spearman_rho(warm, target), mean_w, warm_s / n);
  std::printf("parents: %.2f s each; parameters inherited: %.1f%% on average\n", parent_s / n,
              100 * mean_share);
  if (!f.out.empty()) {
    pipeline::write_file_atomically(f.out, csv);
    std::fprintf(stderr, "wrote %s: %zu architectures\n", f.out.c_str(), rows.size());
  }
}

}  // namespace

void add_inherit_benchmark(CLI::App& bench) {
  auto f = std::make_shared<InheritFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "inherit",
      "Short trainings from scratch and warm-started from a parent one mutation away, ranked "
      "against a ground-truth table");
  cmd->add_option("--space", f->space, "Search space of the table's architectures")
      ->default_val("small");
  cmd->add_option("--data", f->data, "Data set to train on")->default_val("fashion-mnist");
  cmd->add_option("--table", f->table, "Ground-truth CSV (minas bench table)")->required();
  cmd->add_option("--target", f->target, "The table's column the trainings are ranked against")
      ->default_val("valid_10ep");
  cmd->add_option("--epochs", f->epochs, "Epochs of every training: parent, scratch, inherited")
      ->default_val(1)
      ->check(in_range(1, 1000));
  cmd->add_option("--train-images", f->train_images,
                  "A seeded subset of the training images (a fifth of them validate); 0: all")
      ->default_val(0)
      ->check(in_range<int64_t>(0, 100'000'000));
  cmd->add_option("--limit", f->limit, "Only the table's first N rows; 0: all")
      ->default_val(0)
      ->check(in_range(0, 1'000'000));
  cmd->add_option("--threads", f->threads, "CPU threads of the backend")
      ->default_val(1)
      ->check(in_range(1, 1024));
  cmd->add_option("--seed", f->seed, "Parents' mutations, initialization and data seed")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  cmd->add_option("--out", f->out, "CSV of every architecture's parent and accuracies");
  cmd->callback([f] { run_inherit(*f); });
}

}  // namespace minas::cli
