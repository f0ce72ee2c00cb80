// `minas bench evaluators` and `minas bench screen`: the cheap evaluators of a
// candidate (zero-cost proxies at initialization, parameters, MACs, short
// trainings: the table's own curve columns and reduced-fidelity trainings run
// here, on a data subset or a fraction of an epoch) measured against a
// ground-truth table by rank correlation and cost, and the screening
// throughput of one evaluator over sampled architectures
// (experiments/evaluators.md).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/arch_table.h"
#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "controller/ranking.h"
#include "pipeline/ground_truth.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "trainer/data.h"
#include "trainer/network.h"
#include "trainer/proxies.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace minas::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ------------------------------------------------------------ the minibatch

using Minibatch = ProxyMinibatch;

// The images every candidate is scored on: `batch` training images drawn with `seed`.
Minibatch load_minibatch(const std::string& data, int batch, uint64_t seed) {
  return proxy_minibatch(data::load_dataset(data).train, data, batch, seed);
}

void check_fits(const Space& space, const Minibatch& m, const std::string& data) {
  Rng rng(0);
  const LayerGraph g = space.lower(space.sample(rng));
  if (g.input_shape() != m.shape || g.classes() < m.classes)
    throw Error(data, "images " + to_string(m.shape) + " of " + std::to_string(m.classes) +
                          " classes do not fit space '" + space.name() + "' (input " +
                          to_string(g.input_shape()) + ", " + std::to_string(g.classes()) +
                          " classes)");
}

// ------------------------------------------------------------ the table

struct TableRow {
  std::string key;
  Arch arch;
  double target = 0;
  std::optional<double> valid_1ep, valid_3ep, train_seconds;
};

struct Table {
  std::vector<TableRow> rows;
  bool has_short = false;  // valid_1ep, valid_3ep and train_seconds are all columns
};

Table read_table(const std::string& path, const Space& space, const std::string& target) {
  const ArchTable a = ArchTable::read(path, space, {{target, "--target"}});
  const size_t tgt = a.column(target, "--target");
  const auto v1 = a.find("valid_1ep"), v3 = a.find("valid_3ep"), ts = a.find("train_seconds");
  Table t;
  t.has_short = v1 && v3 && ts;
  for (size_t i = 0; i < a.size(); ++i) {
    TableRow r;
    r.key = a.key(i);
    r.arch = a.arch(i);
    r.target = a.number(i, tgt);
    if (t.has_short) {
      r.valid_1ep = a.number(i, *v1);
      r.valid_3ep = a.number(i, *v3);
      r.train_seconds = a.number(i, *ts);
    }
    t.rows.push_back(std::move(r));
  }
  if (t.rows.size() < 2) throw Error(path, "fewer than 2 rows: nothing to rank");
  return t;
}

// ------------------------------------------------------------ bench evaluators

struct EvaluatorsFlags {
  std::string space = "small", data = "fashion-mnist", table, target = "valid_10ep", out, reuse;
  std::vector<std::string> proxies, fidelities, combine;
  bool combine_given = false;
  int batch = 64, threads = 1;
  uint64_t seed = 0;
};

// The --out column of the instruction set oneDNN trained a row's short
// trainings on (cpu_isa_code(); 0: unrecorded), which --reuse compares.
constexpr const char* kIsaColumn = "onednn_isa";
constexpr double kMaxIsaCode = 1u << 30;

// A reduced-fidelity evaluator: a short training with the default recipe
// (the ground truth's) changed by `recipe`, scored by its validation
// accuracy on the held-out split (at --seed 0 the table's). Its cost is the
// whole call: building the network, training and validating. The same
// training gives a second evaluator, NAME-tse: the training speed estimate
// of Ru et al. (NeurIPS 2021), the sum of the training minibatches' losses,
// here minus their mean (every architecture trains the same steps, so the
// ranking is the sum's, and the fastest learner scores highest).
struct Fidelity {
  const char* name;
  const char* what;
  nlohmann::json recipe;
};

const std::vector<Fidelity>& fidelity_table() {
  static const std::vector<Fidelity> table = {
      {"sub0.1-ep1",
       "1 epoch on a stratified 10% of the training split",
       {{"epochs", 1}, {"subset_fraction", 0.1}}},
      {"sub0.25-ep1",
       "1 epoch on a stratified 25% of the training split",
       {{"epochs", 1}, {"subset_fraction", 0.25}}},
      {"ep0.125",
       "1/8 of an epoch on all data, the schedule planned over it",
       {{"epochs", 1}, {"run_fraction", 0.125}}},
      {"ep0.25",
       "1/4 of an epoch on all data, the schedule planned over it",
       {{"epochs", 1}, {"run_fraction", 0.25}}},
      // The longest short run under 5% of a 10-epoch training: 4% of its
      // steps and one validation pass against its ten.
      {"ep0.4",
       "2/5 of an epoch on all data, the schedule planned over it",
       {{"epochs", 1}, {"run_fraction", 0.4}}},
      // What ASHA's rungs at 0.125 and 0.25 see inside a 10-epoch trial.
      {"ep0.125-cut",
       "the first 1/8 epoch of a 10-epoch run, its schedule cut there",
       {{"epochs", 10}, {"run_fraction", 0.0125}, {"fraction_schedule", "cut"}}},
      {"ep0.25-cut",
       "the first 1/4 epoch of a 10-epoch run, its schedule cut there",
       {{"epochs", 10}, {"run_fraction", 0.025}, {"fraction_schedule", "cut"}}},
      {"ep1", "1 epoch on all data, the schedule planned over it", {{"epochs", 1}}},
  };
  return table;
}

// The column of a fidelity's training speed estimate: "ep0.25-tse".
std::string tse_name(const Fidelity& f) { return std::string(f.name) + "-tse"; }

std::string fidelity_names() {
  std::string s;
  for (const Fidelity& f : fidelity_table()) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

std::vector<const Fidelity*> chosen_fidelities(const std::vector<std::string>& names) {
  std::vector<const Fidelity*> out;
  for (const std::string& n : names) {
    if (n == "all") {
      for (const Fidelity& f : fidelity_table()) out.push_back(&f);
      continue;
    }
    const auto& t = fidelity_table();
    const auto it =
        std::find_if(t.begin(), t.end(), [&](const Fidelity& f) { return n == f.name; });
    if (it == t.end())
      throw Error("--fidelities", "unknown evaluator '" + printable_excerpt(n, 40) +
                                      "' (reduced fidelities: " + fidelity_names() + ", or all)");
    out.push_back(&*it);
  }
  return out;
}

std::vector<Proxy> chosen_proxies(const std::vector<std::string>& names) {
  std::vector<Proxy> out;
  if (names.size() == 1 && names[0] == "none") return out;
  if (names.empty()) {
    for (const ProxyInfo& info : proxy_table()) out.push_back(info.proxy);
    return out;
  }
  for (const std::string& n : names) {
    const auto p = proxy_from_name(n);
    if (!p)
      throw Error("--proxies", "unknown proxy '" + printable_excerpt(n, 40) +
                                   "' (proxies: " + proxy_names() + ")");
    out.push_back(*p);
  }
  return out;
}

std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

// One evaluator's scores and costs over the table's rows. A score taken from
// an earlier run (--reuse) has no cost here: its seconds are NaN.
struct Evaluator {
  std::string name, cost_note;
  std::vector<double> score, seconds;
};

// `full_s`: the mean seconds of the table's full training (train_seconds), 0
// when the table has none; the cost's share of it is printed then.
void report(const Evaluator& e, const std::vector<double>& target, double full_s) {
  // Scores that are NaN (jacob_cov of a constant Jacobian) are left out; +-inf
  // rank as the lowest or highest (tau is taken on ranks for that).
  std::vector<double> s, t;
  double cost = 0;
  size_t timed = 0;
  for (size_t i = 0; i < e.score.size(); ++i) {
    if (!std::isnan(e.seconds[i])) {
      cost += e.seconds[i];
      ++timed;
    }
    if (std::isnan(e.score[i])) continue;
    s.push_back(e.score[i]);
    t.push_back(target[i]);
  }
  const double tau = kendall_tau(average_ranks(s), average_ranks(t));
  const double rho = spearman_rho(s, t);
  // The cost per candidate is over the rows computed in this run.
  const double per = timed ? cost / static_cast<double>(timed) : 0;
  char share[32] = "-", each[32] = "-";
  if (timed) std::snprintf(each, sizeof each, "%.5f", per);
  if (timed && full_s > 0) std::snprintf(share, sizeof share, "%.3f%%", 100 * per / full_s);
  std::printf("%-16s %6zu %8.4f %8.4f %12s %10s%s\n", e.name.c_str(), s.size(), tau, rho, each,
              share, e.cost_note.c_str());
}

// --reuse's CSV, every reduced fidelity's column checked whole before any
// work: each a finite accuracy in [0, 1]. nullopt without --reuse.
std::optional<ArchTable> read_earlier(const std::string& path, const Space& space) {
  if (path.empty()) return std::nullopt;
  ArchTable t = ArchTable::read(path, space);
  if (const auto isa = t.find(kIsaColumn))
    for (size_t row = 0; row < t.size(); ++row) {
      const double v = t.number(row, *isa);
      if (v < 0 || v > kMaxIsaCode || v != std::floor(v))
        throw Error(path, std::string(kIsaColumn) + " of " + t.key(row) + ": " + number_text(v) +
                              " is not oneDNN's number of an instruction set (0: unrecorded)");
    }
  for (const Fidelity& fid : fidelity_table()) {
    const auto column = t.find(fid.name);
    if (!column) continue;
    for (size_t row = 0; row < t.size(); ++row) {
      const double v = t.number(row, *column);
      if (v < 0 || v > 1)
        throw Error(path, std::string(fid.name) + " of " + t.key(row) + ": " + number_text(v) +
                              " is not an accuracy in [0, 1]");
    }
    const std::string tse = tse_name(fid);
    if (const auto tc = t.find(tse))
      for (size_t row = 0; row < t.size(); ++row) {
        const double v = t.number(row, *tc);
        if (!std::isfinite(v) || v > 0)
          throw Error(path, tse + " of " + t.key(row) + ": " + number_text(v) +
                                " is not minus a mean training loss (finite, <= 0)");
      }
  }
  return t;
}

// Each fidelity's short training of every row, on `threads` CPU threads;
// with --reuse, the rows the earlier run's CSV scored at that fidelity keep
// its score and are not trained again, unless it records another
// instruction set than this machine's (kIsaColumn): trained on another, a
// score is another draw of the same noise. A row that keeps a score from a
// run that did not record its set is marked in `unrecorded`.
void run_fidelities(const EvaluatorsFlags& f, const Space& space, const Table& table,
                    const std::optional<ArchTable>& earlier,
                    const std::vector<const Fidelity*>& fidelities,
                    const std::vector<double>& target, std::vector<Evaluator>& evals,
                    std::vector<bool>& unrecorded) {
  if (fidelities.empty()) return;
  const unsigned here = cpu_isa_code();
  const std::optional<size_t> isa_column = earlier ? earlier->find(kIsaColumn) : std::nullopt;
  std::optional<data::TrainTest> data;  // loaded when a row is to be trained
  auto backend = make_cpu_backend(f.threads);
  const size_t n = table.rows.size();
  for (const Fidelity* fid : fidelities) {
    Recipe recipe;
    recipe.update(fid->recipe, std::string("reduced fidelity ") + fid->name);
    recipe.set("threads", std::to_string(f.threads), "--threads");
    recipe.set("seed", std::to_string(f.seed), "--seed");
    Evaluator ev{fid->name, "  (trained here: " + std::string(fid->what) + ")",
                 std::vector<double>(n), std::vector<double>(n)};
    Evaluator tse{tse_name(*fid), "  (the same trainings: minus their mean training loss)",
                  std::vector<double>(n), std::vector<double>(n)};
    TrainOptions opt;
    opt.evaluate_test = false;
    opt.measure_latency = false;
    // A row is reused only where the earlier run kept both of its scores.
    const std::optional<size_t> column = earlier ? earlier->find(fid->name) : std::nullopt;
    const std::optional<size_t> tse_column = earlier ? earlier->find(tse.name) : std::nullopt;
    // Row i's earlier scores and the instruction set they were trained on
    // (0: unrecorded), where the earlier run kept both.
    auto earlier_row = [&](size_t i) -> std::optional<std::pair<size_t, unsigned>> {
      if (!column || !tse_column) return std::nullopt;
      const auto row = earlier->row_of(table.rows[i].key);
      if (!row) return std::nullopt;
      return std::pair{*row, isa_column ? static_cast<unsigned>(earlier->number(*row, *isa_column))
                                        : 0u};
    };
    size_t elsewhere = 0;
    for (size_t i = 0; i < n; ++i)
      if (const auto e = earlier_row(i); e && e->second != 0 && e->second != here) ++elsewhere;
    if (elsewhere > 0)
      std::fprintf(stderr,
                   "  %s: %zu architectures to train again: their earlier scores were trained on "
                   "another instruction set than this machine's (oneDNN %s)\n",
                   fid->name, elsewhere, cpu_isa().c_str());
    size_t reused = 0;
    const Clock::time_point all = Clock::now();
    for (size_t i = 0; i < n; ++i) {
      if (const auto e = earlier_row(i); e && (e->second == 0 || e->second == here)) {
        ev.score[i] = earlier->number(e->first, *column);  // checked by read_earlier
        tse.score[i] = earlier->number(e->first, *tse_column);
        ev.seconds[i] = tse.seconds[i] = std::numeric_limits<double>::quiet_NaN();
        if (e->second == 0) unrecorded[i] = true;
        ++reused;
        continue;
      }
      if (!data) data = data::load_dataset(f.data);
      const Clock::time_point t0 = Clock::now();
      Model model(space.lower(table.rows[i].arch), recipe.seed);
      const TrainReport r = train(model, recipe, *data, *backend, opt);
      if (r.epochs.empty())
        throw Error("reduced fidelity " + std::string(fid->name),
                    table.rows[i].key + ": the training reported no epoch");
      ev.seconds[i] = tse.seconds[i] = seconds_since(t0);
      ev.score[i] = r.val_acc;
      // The run's steps are all in its first epoch record (a fraction of one
      // epoch) or spread over several: their mean loss, weighted by steps.
      double loss = 0;
      int64_t steps = 0;
      for (const EpochRecord& e : r.epochs) {
        loss += e.train_loss * static_cast<double>(e.steps);
        steps += e.steps;
      }
      tse.score[i] = -loss / static_cast<double>(std::max<int64_t>(steps, 1));
    }
    for (const Evaluator* e : {&ev, &tse}) {
      std::vector<double> s(e->score), t(target);
      std::fprintf(stderr,
                   "  %s: %zu architectures trained in %.0f s, %zu scores reused, tau %.4f\n",
                   e->name.c_str(), n - reused, seconds_since(all), reused,
                   kendall_tau(average_ranks(s), average_ranks(t)));
    }
    evals.push_back(std::move(ev));
    evals.push_back(std::move(tse));
  }
}

// Rank combinations ("naswot+params"): each row's score is the sum of its
// ranks (ties averaged) under every member, so no member's scale dominates;
// its cost is the members' summed. A row a member could not score (NaN) is
// left out of the combination too. By default, where their members were
// computed: naswot+params and synflow+params, the two best pairs of the
// first 27 rows of the ground truth, tested on the rows after them; and
// synflow+ep0.4, the one evaluator under 5% of a training that ranks the
// complete table at tau 0.6 or more, at three seeds
// (experiments/evaluators.md).
void add_combinations(const EvaluatorsFlags& f, std::vector<Evaluator>& evals) {
  const std::vector<std::string> wanted =
      f.combine_given ? f.combine
                      : std::vector<std::string>{"naswot+params", "synflow+params", "synflow+ep0.4"};
  auto find = [&](const std::string& name) -> const Evaluator* {
    for (const Evaluator& e : evals)
      if (e.name == name) return &e;
    return nullptr;
  };
  for (const std::string& combo : wanted) {
    if (combo == "none") continue;
    std::vector<const Evaluator*> members;
    std::stringstream parts(combo);
    bool missing = false;
    for (std::string m; std::getline(parts, m, '+');) {
      const Evaluator* e = find(m);  // check_combinations refused a given one missing
      missing |= !e;
      members.push_back(e);
    }
    if (missing || members.size() < 2) continue;
    const size_t n = members.front()->score.size();
    Evaluator c{combo, "  (rank sum)", std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
    std::vector<bool> scored(n, true);
    for (const Evaluator* e : members)
      for (size_t i = 0; i < n; ++i) scored[i] = scored[i] && !std::isnan(e->score[i]);
    // A fidelity and its -tse are one training: its cost is counted once.
    std::vector<std::string> paid;
    for (const Evaluator* e : members) {
      std::vector<double> kept;
      for (size_t i = 0; i < n; ++i)
        if (scored[i]) kept.push_back(e->score[i]);
      const std::vector<double> r = average_ranks(kept);
      std::string work = e->name;
      if (work.size() > 4 && work.compare(work.size() - 4, 4, "-tse") == 0)
        work.resize(work.size() - 4);
      const bool pay = std::find(paid.begin(), paid.end(), work) == paid.end();
      if (pay) paid.push_back(work);
      for (size_t i = 0, k = 0; i < n; ++i) {
        if (pay) c.seconds[i] += e->seconds[i];
        c.score[i] = scored[i] ? c.score[i] + r[k++] : std::numeric_limits<double>::quiet_NaN();
      }
    }
    evals.push_back(std::move(c));
  }
}

// Refuses, before any work, a --combine that names fewer than two members or
// one this run does not compute (`planned`).
void check_combinations(const EvaluatorsFlags& f, const std::vector<std::string>& planned) {
  if (!f.combine_given) return;
  for (const std::string& combo : f.combine) {
    if (combo == "none") continue;
    std::stringstream parts(combo);
    size_t members = 0;
    for (std::string m; std::getline(parts, m, '+'); ++members)
      if (std::find(planned.begin(), planned.end(), m) == planned.end())
        throw Error("--combine " + combo,
                    "'" + m +
                        "' is not an evaluator of this run (its proxies, fidelities and "
                        "the table's valid_1ep and valid_3ep)");
    if (members < 2)
      throw Error("--combine " + combo, "a combination names two evaluators or more, joined by +");
  }
}

void run_evaluators(const EvaluatorsFlags& f) {
  const Space space = Space::load(f.space);
  const std::vector<Proxy> proxies = chosen_proxies(f.proxies);
  const Table table = read_table(f.table, space, f.target);
  const std::optional<ArchTable> earlier = read_earlier(f.reuse, space);
  {
    std::vector<std::string> planned;
    for (Proxy p : proxies) planned.push_back(proxy_info(p).name);
    for (const Fidelity* fid : chosen_fidelities(f.fidelities)) {
      planned.push_back(fid->name);
      planned.push_back(tse_name(*fid));
    }
    if (table.has_short)
      for (const char* c : {"valid_1ep", "valid_3ep"})
        if (c != f.target) planned.push_back(c);
    check_combinations(f, planned);
  }
  // The minibatch, where a proxy runs the network (params and MACs do not).
  std::optional<Minibatch> mb;
  for (Proxy p : proxies)
    if (proxy_info(p).needs_backend && !mb) {
      mb = load_minibatch(f.data, f.batch, f.seed);
      check_fits(space, *mb, f.data);
    }
  const ProxyBatch batch = mb ? mb->view() : ProxyBatch{};
  auto backend = make_cpu_backend(f.threads);
  const size_t n = table.rows.size();
  std::vector<Evaluator> evals;
  for (Proxy p : proxies) {
    evals.push_back({proxy_info(p).name, "", std::vector<double>(n), std::vector<double>(n)});
    if (!proxy_info(p).needs_backend) evals.back().cost_note = "  (lowering the graph)";
  }
  std::fprintf(stderr, "scoring %zu architectures of %s with %zu proxies...\n", n, f.table.c_str(),
               proxies.size());
  const Clock::time_point all = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    // Every proxy's cost includes lowering the architecture, as a screen pays it.
    const Clock::time_point t0 = Clock::now();
    const LayerGraph g = space.lower(table.rows[i].arch);
    const double lowering = seconds_since(t0);
    for (size_t k = 0; k < proxies.size(); ++k) {
      const Clock::time_point t1 = Clock::now();
      evals[k].score[i] = proxy_score(proxies[k], *backend, g, f.seed, batch);
      evals[k].seconds[i] = lowering + seconds_since(t1);
    }
    if ((i + 1) % 50 == 0)
      std::fprintf(stderr, "  %zu/%zu (%.0f s)\n", i + 1, n, seconds_since(all));
  }
  std::vector<double> target(n);
  for (size_t i = 0; i < n; ++i) target[i] = table.rows[i].target;
  if (table.has_short)
    for (int e : {1, 3}) {
      Evaluator ev{"valid_" + std::to_string(e) + "ep",
                   "  (table: train_seconds * " + std::to_string(e) + "/10)",
                   std::vector<double>(n), std::vector<double>(n)};
      for (size_t i = 0; i < n; ++i) {
        const TableRow& r = table.rows[i];
        ev.score[i] = e == 1 ? *r.valid_1ep : *r.valid_3ep;
        ev.seconds[i] = *r.train_seconds * e / 10.0;
      }
      if ("valid_" + std::to_string(e) + "ep" != f.target) evals.push_back(std::move(ev));
    }
  const std::vector<const Fidelity*> fidelities = chosen_fidelities(f.fidelities);
  // The instruction set decides the trainings' rounding: scores reused from
  // another machine's --out match this one's only where it is the same.
  std::fprintf(stderr, "training %zu architectures at %zu reduced fidelities (oneDNN %s)...\n", n,
               fidelities.size(), cpu_isa().c_str());
  std::vector<bool> unrecorded(n, false);
  run_fidelities(f, space, table, earlier, fidelities, target, evals, unrecorded);
  add_combinations(f, evals);
  double full_s = 0;
  if (table.has_short) {
    for (const TableRow& r : table.rows) full_s += *r.train_seconds;
    full_s /= static_cast<double>(n);
  }
  std::printf(
      "table=%s architectures=%zu target=%s space=%s data=%s batch=%d threads=%d seed=%llu\n",
      f.table.c_str(), n, f.target.c_str(), space.name().c_str(), f.data.c_str(), f.batch,
      f.threads, static_cast<unsigned long long>(f.seed));
  // share_10ep: the cost as a share of the table's mean full training
  // (train_seconds: its step loop alone, so the share is if anything high).
  std::printf("%-16s %6s %8s %8s %12s %10s\n", "evaluator", "n", "tau", "rho", "s/candidate",
              "share_10ep");
  for (const Evaluator& e : evals) report(e, target, full_s);
  if (!f.out.empty()) {
    // The proxies' and reduced fidelities' scores (the table's own columns are in the table).
    std::vector<const Evaluator*> cols;
    for (const Evaluator& e : evals)
      if (e.cost_note.rfind("  (table", 0) != 0 && e.cost_note != "  (rank sum)")
        cols.push_back(&e);
    // With trainings, each row's instruction set: this machine's, or 0 where
    // a score was kept from a run that did not record its own.
    const bool trained = !fidelities.empty();
    std::string csv = "arch";
    for (const Evaluator* e : cols) csv += "," + e->name;
    if (trained) csv += std::string(",") + kIsaColumn;
    csv += "\n";
    for (size_t i = 0; i < n; ++i) {
      csv += table.rows[i].key;
      for (const Evaluator* e : cols) csv += "," + number_text(e->score[i]);
      if (trained) csv += "," + std::to_string(unrecorded[i] ? 0u : cpu_isa_code());
      csv += "\n";
    }
    pipeline::write_file_atomically(f.out, csv);
    std::fprintf(stderr, "wrote %s: %zu architectures\n", f.out.c_str(), n);
  }
}

// ------------------------------------------------------------ bench screen

struct ScreenFlags {
  std::string space = "small", data = "fashion-mnist", evaluator;
  int64_t count = 2000;
  int workers = 2, threads = 1, batch = 64;
  uint64_t seed = 0;
};

void run_screen(const ScreenFlags& f) {
  const Space space = Space::load(f.space);
  const auto proxy = proxy_from_name(f.evaluator);
  if (!proxy)
    throw Error("--evaluator", "unknown evaluator '" + printable_excerpt(f.evaluator, 40) +
                                   "' (evaluators: " + proxy_names() + ")");
  std::optional<Minibatch> mb;
  if (proxy_info(*proxy).needs_backend) {
    mb = load_minibatch(f.data, f.batch, f.seed);
    check_fits(space, *mb, f.data);
  }
  Rng rng(f.seed);
  std::vector<Arch> archs;
  for (int64_t i = 0; i < f.count; ++i) archs.push_back(space.sample(rng));
  std::vector<double> scores(archs.size());
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(f.workers));
  std::vector<std::thread> workers;
  const Clock::time_point t0 = Clock::now();
  for (int w = 0; w < f.workers; ++w)
    workers.emplace_back([&, w] {
      try {
        // Each worker its own backend (its own engine and thread count).
        auto backend = make_cpu_backend(f.threads);
        const ProxyBatch batch = mb ? mb->view() : ProxyBatch{};
        for (size_t i; (i = next.fetch_add(1)) < archs.size();)
          scores[i] = proxy_score(*proxy, *backend, space.lower(archs[i]), f.seed, batch);
      } catch (...) {
        errors[static_cast<size_t>(w)] = std::current_exception();
        next = archs.size();
      }
    });
  for (std::thread& t : workers) t.join();
  const double seconds = seconds_since(t0);
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  size_t best = 0;
  for (size_t i = 1; i < scores.size(); ++i)
    if (scores[i] > scores[best] || std::isnan(scores[best])) best = i;
  std::printf(
      "evaluator=%s space=%s count=%lld workers=%d threads=%d batch=%d seed=%llu seconds=%.2f\n",
      f.evaluator.c_str(), space.name().c_str(), static_cast<long long>(f.count), f.workers,
      f.threads, f.batch, static_cast<unsigned long long>(f.seed), seconds);
  std::printf("candidates_per_minute=%.0f best=%s score=%s\n",
              static_cast<double>(archs.size()) / seconds * 60, space.key(archs[best]).c_str(),
              number_text(scores[best]).c_str());
}

}  // namespace

void add_evaluator_benchmark(CLI::App& bench) {
  auto f = std::make_shared<EvaluatorsFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "evaluators",
      "Zero-cost proxies, params, MACs, the table's short trainings and reduced-fidelity "
      "trainings against a ground-truth table: rank correlation and cost");
  cmd->add_option("--space", f->space, "Search space of the table's architectures")
      ->default_val("small");
  cmd->add_option("--data", f->data, "Data set the minibatch is drawn from")
      ->default_val("fashion-mnist");
  cmd->add_option("--table", f->table, "Ground-truth CSV (minas bench table)")->required();
  cmd->add_option("--target", f->target, "The table's column evaluators are ranked against")
      ->default_val("valid_10ep");
  cmd->add_option("--proxies", f->proxies, "Proxies to score (default: all; none for none)")
      ->delimiter(',');
  cmd->add_option(
         "--fidelities", f->fidelities,
         "Reduced-fidelity trainings to run on every row, each scored by its validation accuracy "
         "(NAME) and by minus its mean training loss (NAME-tse) (default: none; all): " +
             fidelity_names())
      ->delimiter(',');
  cmd->add_option("--combine", f->combine,
                  "Rank combinations of this run's evaluators, e.g. naswot+params (a row's score "
                  "is the sum of its ranks); default: naswot+params, synflow+params and "
                  "synflow+ep0.4 when computed; none for none")
      ->each([f](const std::string&) { f->combine_given = true; });
  cmd->add_option("--batch", f->batch, "Images in the minibatch")
      ->default_val(64)
      ->check(in_range(2, 4096));
  cmd->add_option("--threads", f->threads, "CPU threads of the backend (proxies and trainings)")
      ->default_val(1)
      ->check(in_range(1, 1024));
  cmd->add_option("--seed", f->seed,
                  "Initialization and minibatch seed; the trainings' recipe seed (0 holds out "
                  "the table's validation split)")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  cmd->add_option("--out", f->out, "CSV of every architecture's proxy scores (features)");
  cmd->add_option("--reuse", f->reuse,
                  "CSV an earlier run wrote with --out, with the same --data, --batch, --threads "
                  "and --seed: a reduced fidelity's two scores (NAME, NAME-tse) of a row it holds "
                  "are taken, not trained again (the cost is measured on the rows trained here)");
  cmd->callback([f] { run_evaluators(*f); });

  auto s = std::make_shared<ScreenFlags>();
  CLI::App* scr = bench.add_subcommand(
      "screen", "Score sampled architectures with one cheap evaluator: candidates per minute");
  scr->add_option("--space", s->space, "Search space")->default_val("small");
  scr->add_option("--data", s->data, "Data set the minibatch is drawn from")
      ->default_val("fashion-mnist");
  scr->add_option("--count", s->count, "Architectures to sample and score")
      ->default_val(2000)
      ->check(in_range<int64_t>(1, 10'000'000));
  scr->add_option("--evaluator", s->evaluator, "A proxy: " + proxy_names())->required();
  scr->add_option("--workers", s->workers, "Threads scoring candidates side by side")
      ->default_val(2)
      ->check(in_range(1, 256));
  scr->add_option("--threads", s->threads, "CPU threads of each worker's backend")
      ->default_val(1)
      ->check(in_range(1, 1024));
  scr->add_option("--batch", s->batch, "Images in the minibatch")
      ->default_val(64)
      ->check(in_range(2, 4096));
  scr->add_option("--seed", s->seed, "Sampling, initialization and minibatch seed")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  scr->callback([s] { run_screen(*s); });
}

}  // namespace minas::cli
