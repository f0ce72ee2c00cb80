#include "pipeline/final_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "controller/objective.h"
#include "controller/experiment_config.h"
#include "controller/ranking.h"
#include "controller/screening.h"
#include "db/queries.h"
#include "export/onnx.h"
#include "pipeline/charts.h"
#include "searchspace/error.h"
#include "trainer/backends.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/step_time.h"
#include "trainer/train.h"

namespace minas::pipeline {

std::string report_percent(std::optional<double> v) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * *v);
  return buf;
}

std::string report_code(const std::string& key) {
  std::string out = "`";
  for (char c : key) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out + "`";
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The shortest of `times` runs of f, in seconds: a sample taken while another
// process held the cores says little about the work's own cost.
template <class F>
double fastest(int times, F f) {
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < times; ++i) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

// What the work after the final training will take, measured on the network
// before it trains (none of that work's cost depends on the weights), each
// part on a sample, the fastest of a few, scaled up: the test set through an
// eval network twice (train()'s test figure and the confusion matrix) with
// its three compiles, the latency runs (train()'s 30 at batch 1 and 64, and
// 50 at batch 1 on a latency device), and the ONNX file written, checked and
// run on 64 images. Doubled: the machine may be busier then, and nothing
// stops that work at the deadline.
double measure_finish_seconds(const Model& trained_later, Backend& backend,
                              const data::TrainTest& data, const std::string& latency_device) {
  Model model = trained_later;
  const size_t n = data.test.labels.size();
  const int classes = model.graph().classes();
  double s = 0;
  {
    const int eb = static_cast<int>(std::min<size_t>(256, std::max<size_t>(n, 1)));
    const auto t0 = Clock::now();
    auto net = backend.compile(model, eb, NetMode::eval, {});
    const double compile_s = seconds_since(t0);
    std::vector<float> x(static_cast<size_t>(eb) * data.test.image_size(), 0.0f);
    std::vector<float> logits(static_cast<size_t>(eb) * static_cast<size_t>(classes));
    net->infer(x.data(), logits.data());  // first-run costs
    const double batch_s = fastest(3, [&] { net->infer(x.data(), logits.data()); });
    s += 3 * compile_s + 2 * static_cast<double>(n) * batch_s / eb;
  }
  {
    // measure_latency's cost is its compiles plus 5 + runs inferences per
    // batch size: after a first call (one-time costs, which the run after
    // training will not pay again), 8 of them scaled to 35 (and to 55) bound
    // 30 runs (and 50).
    measure_latency(model, backend, 1);
    s += fastest(2, [&] { measure_latency(model, backend, 3); }) * 35 / 8;
    if (!latency_device.empty()) {
      const auto target = parse_latency_device(latency_device);
      if (!target)
        throw Error("latency device", "'" + latency_device + "' is not cpu:THREADS or cuda:N");
      auto be = make_backend(target->device, target->threads);
      measure_latency(model, *be, 1, false);
      s += fastest(2, [&] { measure_latency(model, *be, 3, false); }) * 55 / 8;
    }
  }
  {
    // The evaluator's cost grows with the batch: 8 images scaled to 64.
    namespace fs = std::filesystem;
    const fs::path tmp =
        fs::temp_directory_path() / ("minas-final-" + std::to_string(::getpid()) + "-probe.onnx");
    struct Remove {
      fs::path p;
      ~Remove() {
        std::error_code ec;
        fs::remove(p, ec);
      }
    } remove{tmp};
    const int b = static_cast<int>(std::min<size_t>(8, std::max<size_t>(n, 1)));
    const double write_s = fastest(1, [&] { onnx_export::write(model, "probe", tmp.string()); });
    const std::vector<float> x(static_cast<size_t>(b) * data.test.image_size(), 0.0f);
    s += write_s + fastest(2, [&] { onnx_export::run(tmp.string(), x, b); }) * 64 / b;
  }
  return 2 * s;
}

// The trials the final training picks from: the best by validation accuracy
// that meet the constraints. Throws Error when there is none.
std::vector<db::TrialRow> best_trials(db::Connection& conn, int64_t experiment,
                                      const FinalOptions& o) {
  // The final-time choice shortlists from a wider pool (choose_trial).
  const int pool = o.pick == FinalPick::final_time ? kPickPool * o.pick_candidates : 5;
  auto top = db::top_k(conn, experiment, db::Metric::val_acc,
                       static_cast<size_t>(std::max(5, pool)), o.constraints);
  if (top.empty()) {
    std::string which;
    for (const auto& c : o.constraints) which += (which.empty() ? "" : ", ") + c.to_string();
    throw Error("experiment '" + o.experiment + "'",
                "has no finished trial" + (which.empty() ? "" : " that meets " + which) +
                    " to retrain: search longer (the same command with --name '" +
                    o.experiment + "' and a larger --budget continues it, its work kept)" +
                    (which.empty() ? "" : " or loosen the constraints"));
  }
  return top;
}

// The trial whose architecture is retrained: the best by validation
// accuracy, or with FinalPick::final_time the candidate predicted best after
// the epochs its measured speed affords in the seconds left (r.pick).
db::TrialRow choose_trial(const Space& space, const std::vector<db::TrialRow>& top,
                          const FinalOptions& o, const Recipe& recipe, const data::TrainTest& data,
                          Backend& backend, const Log& log, FinalResult& r) {
  if (o.pick == FinalPick::validation) return top.front();
  // Timing a candidate costs a few training steps: those worth it are the
  // ones whose trials' own speed promises the most in a fixed time.
  std::vector<PickCandidate> c;
  for (const db::TrialRow& t :
       shortlist_by_trial_time(top, static_cast<size_t>(o.pick_candidates), o.curve_exponent,
                               o.trial_fraction)) {
    if (!t.val_acc || t.fidelity < 1) continue;
    PickCandidate p;
    p.trial = t;
    const Model m(space.lower(space.parse_key(t.arch_key)), recipe.seed);
    p.step_seconds = measure_step_seconds(m, backend, recipe);
    c.push_back(std::move(p));
  }
  if (c.empty()) return top.front();
  // With a deadline, the seconds left (at least what the training gets when
  // less is left); without one, no time bound (0).
  const double budget =
      o.deadline ? std::max(kMinFinalSeconds,
                            std::chrono::duration<double>(*o.deadline - Clock::now()).count())
                 : 0.0;
  // The final training's epoch: every training image (val_size 0), whole batches and the rest.
  const auto steps =
      static_cast<int64_t>((data.train.size() + static_cast<size_t>(recipe.batch) - 1) /
                           static_cast<size_t>(recipe.batch));
  rank_for_final_time(c, budget, static_cast<double>(recipe.epochs), steps, o.curve_exponent,
                      o.trial_fraction);
  for (const PickCandidate& p : c) {
    char line[300];
    std::snprintf(line, sizeof line,
                  "final choice: trial %lld, %.2f%% after %g epoch(s), %.1f s per epoch here: "
                  "%.1f epoch(s) in %.0f s, predicted %.2f%%\n",
                  static_cast<long long>(p.trial.number), 100 * *p.trial.val_acc,
                  static_cast<double>(p.trial.fidelity) * o.trial_fraction, p.epoch_seconds,
                  p.epochs, budget,
                  100 * p.predicted);
    log.print(line);
  }
  r.pick = c;
  return c.front().trial;
}

// With a deadline: the training's time budget, set in the recipe, is what is
// left less the work after it, measured first (its share kept in r).
void budget_training(const Model& model, Backend& backend, const data::TrainTest& data,
                     const FinalOptions& o, const Log& log, Recipe& recipe, TrainOptions& topt,
                     FinalResult& r) {
  auto until_deadline = [&] {
    return std::chrono::duration<double>(*o.deadline - Clock::now()).count();
  };
  // At most a quarter of what is left: a measurement taken while the
  // machine was briefly busy must not eat the training.
  const double cap = std::max(until_deadline(), 0.0) / 4;
  r.finish_reserved_s =
      std::min(measure_finish_seconds(model, backend, data, o.latency_device), cap);
  const double left = until_deadline();
  r.train_budget_s = std::max(kMinFinalSeconds, left - r.finish_reserved_s);
  recipe.set("time_budget_s", report_number(r.train_budget_s, "%.3f"), "final training");
  topt.budget_start = Clock::now();
  char line[200];
  std::snprintf(line, sizeof line,
                "final training: %.0f s of the %.0f s left; %.1f s kept for evaluation and "
                "export (measured)\n",
                r.train_budget_s, left, r.finish_reserved_s);
  log.print(line);
}

// The figures of the trained model: the training's, and the latency on the
// latency device when one is named.
void take_figures(Model& model, const TrainReport& report, const db::TrialRow& best,
                  const FinalOptions& o, FinalResult& r) {
  r.arch = best.arch_key;
  r.out = o.out;
  r.val_acc = best.val_acc.value_or(0);
  r.test_acc = report.test_acc;
  r.latency_ms = report.latency.batch1_ms;
  r.trial = best.number;
  if (!o.latency_device.empty()) {
    const auto target = parse_latency_device(o.latency_device);
    if (!target)
      throw Error("latency device", "'" + o.latency_device + "' is not cpu:THREADS or cuda:N");
    auto be = make_backend(target->device, target->threads);
    r.latency_ms = measure_latency(model, *be, 50, false).batch1_ms;
    r.latency_device = o.latency_device;
  } else {
    r.latency_device = "cpu:" + std::to_string(report.latency.threads);
  }
  r.train_seconds = report.train_seconds;
  r.params = report.params;
  r.macs = report.macs;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) throw Error(path.string(), "cannot write");
}

// arch.json and model.ckpt; returns the architecture's JSON (with space_ref).
nlohmann::json write_arch_and_weights(const Space& space, const Arch& arch, const Model& model,
                                      const Recipe& recipe, const data::TrainTest& data,
                                      const FinalOptions& o, const FinalResult& r) {
  const std::filesystem::path dir(o.out);
  nlohmann::json arch_json = space.arch_to_json(arch);
  arch_json["space_ref"] = space.ref().empty() ? space.name() : space.ref();
  write_file(dir / "arch.json", arch_json.dump(2) + '\n');
  CheckpointMeta meta{space.name(),
                      space.key(arch),
                      {{"recipe", recipe.to_json()},
                       {"space_ref", arch_json["space_ref"]},
                       {"data", o.data},
                       {"data_fingerprint", data.train.fingerprint()},
                       {"experiment", o.experiment},
                       {"search_val_acc", r.val_acc},
                       {"test_acc", r.test_acc}}};
  save_checkpoint((dir / "model.ckpt").string(), meta, checkpoint_views(model));
  return arch_json;
}

// ONNX, accepted by ONNX's checker, and run by our own evaluator on a batch
// of test images: its logits must be our runtime's.
void write_checked_onnx(Model& model, Backend& backend, const data::TrainTest& data,
                        const data::Normalization& norm, const FinalOptions& o, FinalResult& r) {
  const std::string onnx_path = (std::filesystem::path(o.out) / "model.onnx").string();
  onnx_export::write(model, o.experiment, onnx_path);
  const int batch = static_cast<int>(std::min<size_t>(64, data.test.labels.size()));
  std::vector<uint32_t> first(static_cast<size_t>(batch));
  std::iota(first.begin(), first.end(), 0u);
  std::vector<float> x(static_cast<size_t>(batch) * data.test.image_size());
  data::normalize(data.test, first, norm, x.data());
  std::vector<float> ours(static_cast<size_t>(batch) * model.graph().classes());
  backend.compile(model, batch, NetMode::eval, {})->infer(x.data(), ours.data());
  const std::vector<float> theirs = onnx_export::run(onnx_path, x, batch);
  double diff = 0, scale = 1;
  for (size_t k = 0; k < ours.size(); ++k) {
    diff = std::max(diff, std::fabs(static_cast<double>(ours[k]) - theirs.at(k)));
    scale = std::max(scale, std::fabs(static_cast<double>(ours[k])));
  }
  if (theirs.size() != ours.size() || diff > 1e-4 * scale)
    throw Error(onnx_path, "the exported model's logits differ from the runtime's by " +
                               std::to_string(diff) + " on " + std::to_string(batch) +
                               " test images");
  r.onnx_max_diff = diff;
  r.onnx_checked = batch;
}

// Every test image's predicted class: the confusion matrix, whose diagonal
// must give the test accuracy reported by training.
void count_confusion(Model& model, Backend& backend, const data::TrainTest& data,
                     const data::Normalization& norm, const FinalOptions& o, FinalResult& r) {
  const int k = model.graph().classes();
  r.confusion.assign(static_cast<size_t>(k), std::vector<int64_t>(static_cast<size_t>(k), 0));
  const size_t n = data.test.labels.size();
  const int eb = static_cast<int>(std::min<size_t>(256, std::max<size_t>(n, 1)));
  auto net = backend.compile(model, eb, NetMode::eval, {});
  std::vector<uint32_t> idx;
  std::vector<float> xb(static_cast<size_t>(eb) * data.test.image_size());
  std::vector<float> logits(static_cast<size_t>(eb) * static_cast<size_t>(k));
  int64_t correct = 0;
  // Per true class, its first misses in test order (enough to fill the picture alone).
  std::vector<std::vector<FinalResult::Miss>> misses(static_cast<size_t>(k));
  for (size_t at = 0; at < n; at += static_cast<size_t>(eb)) {
    idx.clear();
    for (size_t i = at; i < std::min(n, at + static_cast<size_t>(eb)); ++i)
      idx.push_back(static_cast<uint32_t>(i));
    while (idx.size() < static_cast<size_t>(eb)) idx.push_back(idx.back());  // padding, unread
    data::normalize(data.test, idx, norm, xb.data());
    net->infer(xb.data(), logits.data());
    for (size_t b = 0; b < std::min(n - at, static_cast<size_t>(eb)); ++b) {
      const float* row = logits.data() + b * static_cast<size_t>(k);
      const int pred = static_cast<int>(std::max_element(row, row + k) - row);
      const int truth = data.test.labels[at + b];
      r.confusion.at(static_cast<size_t>(truth)).at(static_cast<size_t>(pred)) += 1;
      correct += pred == truth;
      auto& m = misses.at(static_cast<size_t>(truth));
      if (pred != truth && m.size() < kMisclassifiedShown) m.push_back({at + b, truth, pred});
    }
  }
  r.misclassified.clear();
  for (size_t round = 0; round < kMisclassifiedShown; ++round)
    for (const auto& m : misses)
      if (round < m.size() && r.misclassified.size() < kMisclassifiedShown)
        r.misclassified.push_back(m[round]);
  // Batches of another size may round differently and flip a near tie;
  // more than that is a bug.
  const double acc = n ? static_cast<double>(correct) / static_cast<double>(n) : 0;
  if (n > 0 && std::fabs(acc - r.test_acc) > 2.0 / static_cast<double>(n) + 1e-9)
    throw Error(o.out, "the confusion matrix's accuracy " + std::to_string(acc) +
                           " is not the test accuracy " + std::to_string(r.test_acc));
}

// model.json: what `minas predict` needs to use the model on image files.
void write_model_info(const Model& model, const nlohmann::json& space_ref,
                      const data::Normalization& norm, const FinalOptions& o,
                      const FinalResult& r) {
  const Shape in = model.graph().input_shape();
  nlohmann::json classes = nlohmann::json::array();
  for (int k = 0; k < model.graph().classes(); ++k)
    classes.push_back(static_cast<size_t>(k) < o.class_names.size() ? o.class_names[k]
                                                                    : std::to_string(k));
  const nlohmann::json info = {{"space_ref", space_ref},
                               {"arch", r.arch},
                               {"input", {in.c, in.h, in.w}},
                               {"normalization", {{"mean", norm.mean}, {"stddev", norm.stddev}}},
                               {"classes", classes},
                               {"test_acc", r.test_acc}};
  write_file(std::filesystem::path(o.out) / "model.json", info.dump(2) + '\n');
}

// report.md's result table and the files' list.
void report_result(std::ostream& md, const FinalOptions& o, const FinalResult& r,
                   const db::TrialRow& best, const TrainReport& report, const Recipe& recipe) {
  md << "# " << o.experiment << "\n\n"
     << "## Result\n\n"
     << (r.pick.empty() ? "The best architecture of the search by validation accuracy"
                        : "The architecture of the search predicted best in the final training's "
                          "time (below)")
     << ", retrained with the full recipe on the training and validation images together and "
        "evaluated once on the test set:\n\n"
     << "| | |\n|---|---|\n"
     << "| architecture | " << report_code(r.arch) << " |\n"
     << "| test accuracy | " << report_percent(r.test_acc) << " |\n"
     << "| validation accuracy in the search | " << report_percent(r.val_acc) << " (trial "
     << best.number << ", " << report_number(static_cast<double>(best.fidelity) * o.trial_fraction, "%g")
     << " epoch(s)) |\n"
     << "| parameters | " << r.params << " |\n"
     << "| MACs per image | " << r.macs << " |\n"
     << "| latency, batch 1, " << r.latency_device << " | " << report_number(r.latency_ms, "%.3f")
     << " ms |\n"
     << "| final training | " << report.epochs.size() << " epoch(s) of at most " << recipe.epochs
     << ", " << report_number(r.train_seconds, "%.1f") << " s"
     << (o.deadline ? " (a budget of " + report_number(r.train_budget_s) + " s, " +
                          std::to_string(report.steps) + " steps of " +
                          std::to_string(report.planned_steps) + " planned from their own speed)"
                    : std::string())
     << " |\n\n"
     << "Files: `arch.json` (the architecture), `model.ckpt` (the weights, a minas "
        "checkpoint), `model.json` (input, normalization and classes, for `minas predict`), "
        "`model.onnx` (ONNX opset 14, accepted by ONNX's checker; on "
     << r.onnx_checked << " test images its logits, computed by an ONNX evaluator of our own, "
     << "are the runtime's within " << report_number(r.onnx_max_diff, "%.2g") << ").\n\n";
}

// The learning-curve exponents the candidates were predicted with: one
// value, or each distinct one.
std::string exponents(const std::vector<PickCandidate>& pick) {
  std::vector<std::string> seen;
  for (const PickCandidate& p : pick) {
    const std::string a = report_number(p.exponent, "%.3g");
    if (std::find(seen.begin(), seen.end(), a) == seen.end()) seen.push_back(a);
  }
  std::string text;
  for (const std::string& a : seen) text += (text.empty() ? "" : ", ") + a;
  return text;
}

// report.md's account of the final choice (FinalPick::final_time), if made.
void report_choice(std::ostream& md, const FinalOptions& o, const FinalResult& r) {
  if (r.pick.empty()) return;
  md << "## How the architecture was chosen\n\n"
     << "Each of the " << r.pick.size()
     << " of up to " << kPickPool * o.pick_candidates
     << " best by validation accuracy whose trials' training time promised the most in a "
        "fixed time (error x seconds^a) was timed on this machine with the final recipe (3 "
        "training steps); the epochs it can train in the final training's time follow from "
        "that speed, and its accuracy after them is predicted from its search trial's by "
        "err(E) = err(F) x (E / F)^-a with a = "
     << exponents(r.pick)
     << " (" << (o.curve_exponent > 0 ? "as given" : "measured for trials of F epochs")
     << ", pipeline/final_choice.h). The first row was retrained.\n\n"
     << "| trial | validation (F epochs) | seconds per epoch | epochs affordable | predicted | "
        "params | architecture |\n|---|---|---|---|---|---|---|\n";
  for (const PickCandidate& p : r.pick)
    md << "| " << p.trial.number << " | " << report_percent(p.trial.val_acc) << " ("
       << report_number(static_cast<double>(p.trial.fidelity) * o.trial_fraction, "%g") << ") | "
       << report_number(p.epoch_seconds, "%.1f") << " | "
       << report_number(p.epochs, "%.1f") << " | " << report_percent(p.predicted) << " | "
       << (p.trial.params ? std::to_string(*p.trial.params) : "-") << " | "
       << report_code(p.trial.arch_key) << " |\n";
  md << "\n";
}

// report.md's account of screening, if the search screened: per evaluator,
// how many architectures it scored and how its scores ranked the trained
// ones that it scored (Kendall's tau and Spearman's rho against their
// validation accuracy in this run). A combination the search screened by
// (`screen_evaluator` as synflow+params) gets its own row: its score is the
// sum of an architecture's ranks under its members among all the
// architectures every member scored, as the strategy was told.
void report_screening(std::ostream& md, db::Connection& conn, int64_t experiment,
                      const std::string& screen_evaluator) {
  const auto scores = db::screening_scores(conn, experiment);
  if (scores.empty()) return;
  std::map<std::string, std::map<std::string, double>> by_evaluator;  // evaluator -> arch -> score
  struct Count {
    size_t rows = 0, scored = 0;
    double seconds = 0;
  };
  std::map<std::string, Count> counts;
  for (const auto& s : scores) {
    Count& c = counts[s.evaluator];
    ++c.rows;
    c.seconds += s.seconds;
    if (!s.score) continue;
    ++c.scored;
    by_evaluator[s.evaluator][s.arch_key] = *s.score;
  }
  const auto trained = db::top_k(conn, experiment, db::Metric::val_acc, 1'000'000);
  md << "## Screening\n\n"
     << "Architectures scored at initialization, without training, before the search "
        "trained any; the rank correlation is between an evaluator's scores and the "
        "validation accuracy of the trained architectures it scored, in this run.\n\n"
     << "| evaluator | scored | seconds each | trained and scored | Kendall tau | Spearman rho "
        "|\n|---|---|---|---|---|---|\n";
  auto row = [&](const std::string& name, const std::map<std::string, double>& mine,
                 const std::string& scored, double seconds) {
    std::vector<double> x, y;
    for (const auto& t : trained) {
      const auto it = mine.find(t.arch_key);
      if (it == mine.end() || !t.val_acc) continue;
      x.push_back(it->second);
      y.push_back(*t.val_acc);
    }
    auto cell = [](double v) { return std::isfinite(v) ? report_number(v, "%.3f") : "-"; };
    md << "| " << name << " | " << scored << " | " << report_number(seconds, "%.4f") << " | "
       << x.size() << " | " << cell(kendall_tau(x, y)) << " | " << cell(spearman_rho(x, y))
       << " |\n";
  };
  for (const auto& [evaluator, c] : counts)
    row(evaluator, by_evaluator[evaluator], std::to_string(c.scored) + " of " + std::to_string(c.rows),
        c.seconds / static_cast<double>(c.rows));
  const std::vector<std::string> members = screen_members(screen_evaluator);
  if (members.size() > 1) {
    // The architectures every member scored, each with its members' scores in order.
    std::map<std::string, std::vector<double>> joint;
    for (const auto& [key, first] : by_evaluator[members.front()]) {
      std::vector<double> v{first};
      for (size_t m = 1; m < members.size(); ++m) {
        const auto& other = by_evaluator[members[m]];
        const auto it = other.find(key);
        if (it == other.end()) break;
        v.push_back(it->second);
      }
      if (v.size() == members.size()) joint.emplace(key, std::move(v));
    }
    const std::vector<double> sums = loop::rank_sums(joint);
    std::map<std::string, double> combined;
    size_t i = 0;
    for (const auto& [key, v] : joint) combined.emplace(key, sums[i++]);
    double seconds = 0;
    for (const auto& m : members)
      if (const auto it = counts.find(m); it != counts.end() && it->second.rows > 0)
        seconds += it->second.seconds / static_cast<double>(it->second.rows);
    row(screen_evaluator + " (rank sum)", combined,
        std::to_string(combined.size()) + " by every member", seconds);
  }
  md << "\n";
  if (!screen_evaluator.empty())
    md << "The search screened by " << screen_evaluator << ".\n\n";
}

// report.md's search sections: the best so far and the top 5.
void report_search(std::ostream& md, const std::vector<db::ProgressPoint>& curve,
                   const std::vector<db::TrialRow>& top) {
  md << "## Best so far during the search\n\n"
     << "| trials finished | seconds | best validation accuracy | trial |\n|---|---|---|---|\n";
  for (const auto& p : curve)
    md << "| " << p.trials << " | " << report_number(p.seconds) << " | " << report_percent(p.best)
       << " | " << p.number << " |\n";
  md << "\n## Top 5 by validation accuracy\n\n"
     << "| trial | validation | params | MACs | architecture |\n|---|---|---|---|---|\n";
  for (const auto& t : top)
    md << "| " << t.number << " | " << report_percent(t.val_acc) << " | "
       << (t.params ? std::to_string(*t.params) : "-") << " | "
       << (t.macs ? std::to_string(*t.macs) : "-") << " | " << report_code(t.arch_key) << " |\n";
}

// The pictures beside report.md and the section that shows them: the
// best-so-far curve, the Pareto front with the chosen model marked, the
// confusion matrix and test images the model gets wrong.
void write_pictures(std::ostream& md, db::Connection& conn, int64_t experiment,
                    const std::vector<db::ProgressPoint>& curve, const data::Dataset& test,
                    const FinalOptions& o, FinalResult& r) {
  namespace ch = charts;
  const std::filesystem::path dir(o.out);
  auto class_name = [&](int c) {
    return static_cast<size_t>(c) < o.class_names.size() ? o.class_names[c] : std::to_string(c);
  };
  auto write = [&](const std::string& file, const std::string& svg, const std::string& what) {
    write_file(dir / file, svg);
    r.pictures.push_back(file);
    md << "![" << what << "](" << file << ")\n\n";
  };
  md << "## Pictures\n\n";

  ch::Series best{"best validation accuracy", {}, ch::Style::step};
  for (const auto& p : curve) best.points.push_back({p.seconds, 100 * p.best});
  write("best_so_far.svg",
        ch::plot({"Best so far during the search", "seconds since the search started",
                  "validation accuracy (%)"},
                 {best}),
        "best validation accuracy so far against the search's seconds");

  const std::string x_name(db::metric_name(o.pareto_x));
  ch::Series all{"trained candidates", {}, ch::Style::dots, "#7f7f7f"};
  for (const auto& t : db::top_k(conn, experiment, db::Metric::val_acc, 1'000'000))
    if (const auto x = t.value(o.pareto_x); x && t.val_acc)
      all.points.push_back({*x, 100 * *t.val_acc});
  ch::Series front{"Pareto front", {}, ch::Style::step, "#1f77b4"};
  for (const auto& t : db::pareto(conn, experiment, o.pareto_x))
    if (const auto x = t.value(o.pareto_x); x && t.val_acc)
      front.points.push_back({*x, 100 * *t.val_acc});
  std::vector<ch::Mark> chosen;
  if (const auto d = db::find_trial(conn, experiment, r.trial))
    if (const auto x = d->trial.value(o.pareto_x); x && d->trial.val_acc)
      chosen.push_back({{*x, 100 * *d->trial.val_acc}, "chosen: trial " + std::to_string(r.trial)});
  const bool log_x = o.pareto_x == db::Metric::params || o.pareto_x == db::Metric::macs;
  write("pareto.svg",
        ch::plot({"Validation accuracy against " + x_name, x_name + (log_x ? " (log scale)" : ""),
                  "validation accuracy (%)", log_x},
                 {all, front}, chosen),
        "validation accuracy against " + x_name + ", the Pareto front and the chosen model");

  std::vector<std::string> names;
  for (size_t c = 0; c < r.confusion.size(); ++c) names.push_back(class_name(static_cast<int>(c)));
  write("confusion.svg", ch::confusion_matrix(names, r.confusion),
        "confusion matrix of the test set");

  std::vector<ch::Thumb> thumbs;
  for (const auto& m : r.misclassified) {
    const uint8_t* px = test.image(m.index);
    thumbs.push_back({std::vector<uint8_t>(px, px + test.image_size()), test.shape.c, test.shape.h,
                      test.shape.w,
                      "true: " + class_name(m.truth) + "\npredicted: " + class_name(m.predicted)});
  }
  write("misclassified.svg",
        ch::image_grid(
            "Test images the model gets wrong (" + std::to_string(thumbs.size()) + " shown)",
            thumbs, 6),
        "test images the model gets wrong, with their true and predicted classes");
}

}  // namespace

std::string report_number(double v, const char* format) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

FinalResult retrain_and_export(const Space& space, const FinalOptions& o,
                               const std::function<std::string(const FinalResult&)>& more_report,
                               const Log& log) {
  db::Connection conn = db::open_store_readonly(o.db);
  const int64_t experiment = db::find_experiment_id(conn, o.experiment);
  const auto top = best_trials(conn, experiment, o);
  const auto curve = db::best_so_far(conn, experiment, db::Metric::val_acc);

  // The full recipe on training and validation images together.
  Recipe recipe = o.recipe;
  recipe.set("val_size", "0", "final training");
  const data::TrainTest data = data::load_dataset(o.data);
  auto backend = make_cpu_backend(static_cast<int>(recipe.threads));
  FinalResult r;
  const db::TrialRow best = choose_trial(space, top, o, recipe, data, *backend, log, r);
  const Arch arch = space.parse_key(best.arch_key);
  Model model(space.lower(arch), recipe.seed);
  TrainOptions topt;
  topt.on_epoch = [&](const EpochRecord& e) {
    char line[200];
    std::snprintf(line, sizeof line, "final training: epoch %d, loss %.4f, %.1f s\n", e.epoch,
                  e.train_loss, e.seconds);
    log.print(line);
  };
  if (o.deadline) budget_training(model, *backend, data, o, log, recipe, topt, r);
  const TrainReport report = train(model, recipe, data, *backend, topt);
  const auto trained = Clock::now();
  take_figures(model, report, best, o, r);

  std::filesystem::create_directories(o.out);
  const nlohmann::json arch_json = write_arch_and_weights(space, arch, model, recipe, data, o, r);
  const data::Normalization norm = train_split(model.graph(), recipe, data).norm;
  write_checked_onnx(model, *backend, data, norm, o, r);
  count_confusion(model, *backend, data, norm, o, r);
  write_model_info(model, arch_json["space_ref"], norm, o, r);

  std::ostringstream md;
  report_result(md, o, r, best, report, recipe);
  write_pictures(md, conn, experiment, curve, data.test, o, r);
  report_choice(md, o, r);
  report_screening(md, conn, experiment, o.screen_evaluator);
  report_search(
      md, curve,
      std::vector<db::TrialRow>(top.begin(), top.begin() + std::min<size_t>(5, top.size())));
  if (more_report) md << "\n" << more_report(r);
  md << "\n## Reproduce\n\n"
     << "In a store that does not hold this experiment (with the same --db and --name, the "
        "command resumes it):\n\n```\n"
     << o.reproduce << "\n```\n";
  write_file(std::filesystem::path(o.out) / "report.md", md.str());
  r.finish_seconds = seconds_since(trained);
  if (o.deadline) {
    char line[200];
    std::snprintf(line, sizeof line,
                  "final: evaluation and export took %.1f s of the %.1f s kept\n", r.finish_seconds,
                  r.finish_reserved_s);
    log.print(line);
  }
  return r;
}

}  // namespace minas::pipeline
