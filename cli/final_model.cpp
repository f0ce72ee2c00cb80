#include "cli/final_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "controller/objective.h"
#include "db/queries.h"
#include "export/onnx.h"
#include "searchspace/error.h"
#include "trainer/backends.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/train.h"

namespace minas::cli {

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

std::string report_number(double v, const char* format) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

FinalResult retrain_and_export(const Space& space, const FinalOptions& o,
                               const std::function<std::string(const FinalResult&)>& more_report) {
  db::Connection conn = db::open_store_readonly(o.db);
  const int64_t experiment = db::find_experiment_id(conn, o.experiment);
  const auto top = db::top_k(conn, experiment, db::Metric::val_acc, 5, o.constraints);
  if (top.empty()) {
    std::string which;
    for (const auto& c : o.constraints) which += (which.empty() ? "" : ", ") + c.to_string();
    throw Error("experiment '" + o.experiment + "'",
                "has no finished trial" + (which.empty() ? "" : " that meets " + which) +
                    " to retrain: search longer (a larger --budget)" +
                    (which.empty() ? "" : " or loosen the constraints"));
  }
  const auto curve = db::best_so_far(conn, experiment, db::Metric::val_acc);
  const db::TrialRow& best = top.front();
  const Arch arch = space.parse_key(best.arch_key);

  // The full recipe on training and validation images together.
  Recipe recipe = o.recipe;
  recipe.set("val_size", "0", "final training");
  const data::TrainTest data = data::load_dataset(o.data);
  Model model(space.lower(arch), recipe.seed);
  auto backend = make_cpu_backend(static_cast<int>(recipe.threads));
  TrainOptions topt;
  topt.on_epoch = [&](const EpochRecord& e) {
    std::fprintf(stderr, "final training: epoch %d, loss %.4f, %.1f s\n", e.epoch, e.train_loss,
                 e.seconds);
  };
  const TrainReport report = train(model, recipe, data, *backend, topt);

  FinalResult r;
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

  namespace fs = std::filesystem;
  fs::create_directories(o.out);
  const fs::path dir(o.out);
  nlohmann::json arch_json = space.arch_to_json(arch);
  arch_json["space_ref"] = space.ref().empty() ? space.name() : space.ref();
  {
    std::ofstream f(dir / "arch.json");
    f << arch_json.dump(2) << '\n';
    if (!f) throw Error((dir / "arch.json").string(), "cannot write");
  }
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

  // ONNX, accepted by ONNX's checker, and run by our own evaluator on a
  // batch of test images: its logits must be our runtime's.
  const std::string onnx_path = (dir / "model.onnx").string();
  onnx_export::write(model, o.experiment, onnx_path);
  const data::Normalization norm = train_split(model.graph(), recipe, data).norm;
  const int batch = static_cast<int>(std::min<size_t>(64, data.test.labels.size()));
  std::vector<uint32_t> first(static_cast<size_t>(batch));
  std::iota(first.begin(), first.end(), 0u);
  std::vector<float> x(static_cast<size_t>(batch) * data.test.image_size());
  data::normalize(data.test, first, norm, x.data());
  std::vector<float> ours(static_cast<size_t>(batch) * model.graph().classes());
  backend->compile(model, batch, NetMode::eval, {})->infer(x.data(), ours.data());
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

  // Every test image's predicted class: the confusion matrix, whose
  // diagonal must give the test accuracy reported by training.
  {
    const int k = model.graph().classes();
    r.confusion.assign(static_cast<size_t>(k), std::vector<int64_t>(static_cast<size_t>(k), 0));
    const size_t n = data.test.labels.size();
    const int eb = static_cast<int>(std::min<size_t>(256, std::max<size_t>(n, 1)));
    auto net = backend->compile(model, eb, NetMode::eval, {});
    std::vector<uint32_t> idx;
    std::vector<float> xb(static_cast<size_t>(eb) * data.test.image_size());
    std::vector<float> logits(static_cast<size_t>(eb) * static_cast<size_t>(k));
    int64_t correct = 0;
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
      }
    }
    // Batches of another size may round differently and flip a near tie;
    // more than that is a bug.
    const double acc = n ? static_cast<double>(correct) / static_cast<double>(n) : 0;
    if (n > 0 && std::fabs(acc - r.test_acc) > 2.0 / static_cast<double>(n) + 1e-9)
      throw Error(o.out, "the confusion matrix's accuracy " + std::to_string(acc) +
                             " is not the test accuracy " + std::to_string(r.test_acc));
  }

  // What `minas predict` needs to use the model on image files.
  {
    const Shape in = model.graph().input_shape();
    nlohmann::json classes = nlohmann::json::array();
    for (int k = 0; k < model.graph().classes(); ++k)
      classes.push_back(static_cast<size_t>(k) < o.class_names.size() ? o.class_names[k]
                                                                      : std::to_string(k));
    const nlohmann::json info = {{"space_ref", arch_json["space_ref"]},
                                 {"arch", r.arch},
                                 {"input", {in.c, in.h, in.w}},
                                 {"normalization", {{"mean", norm.mean}, {"stddev", norm.stddev}}},
                                 {"classes", classes},
                                 {"test_acc", r.test_acc}};
    std::ofstream f(dir / "model.json");
    f << info.dump(2) << '\n';
    if (!f) throw Error((dir / "model.json").string(), "cannot write");
  }

  std::ostringstream md;
  md << "# " << o.experiment << "\n\n"
     << "## Result\n\n"
     << "The best architecture of the search by validation accuracy, retrained with the full "
        "recipe on the training and validation images together and evaluated once on the test "
        "set:\n\n"
     << "| | |\n|---|---|\n"
     << "| architecture | " << report_code(r.arch) << " |\n"
     << "| test accuracy | " << report_percent(r.test_acc) << " |\n"
     << "| validation accuracy in the search | " << report_percent(r.val_acc) << " (trial "
     << best.number << ", " << best.fidelity << " epoch(s)) |\n"
     << "| parameters | " << r.params << " |\n"
     << "| MACs per image | " << r.macs << " |\n"
     << "| latency, batch 1, " << r.latency_device << " | " << report_number(r.latency_ms, "%.3f")
     << " ms |\n"
     << "| final training | " << report.epochs.size() << " epoch(s) of at most " << recipe.epochs
     << ", " << report_number(r.train_seconds, "%.1f") << " s |\n\n"
     << "Files: `arch.json` (the architecture), `model.ckpt` (the weights, a minas "
        "checkpoint), `model.json` (input, normalization and classes, for `minas predict`), "
        "`model.onnx` (ONNX opset 14, accepted by ONNX's checker; on "
     << r.onnx_checked << " test images its logits, computed by an ONNX evaluator of our own, "
     << "are the runtime's within " << report_number(r.onnx_max_diff, "%.2g") << ").\n\n"
     << "## Best so far during the search\n\n"
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
  if (more_report) md << "\n" << more_report(r);
  md << "\n## Reproduce\n\n"
     << "In a store that does not hold this experiment (with the same --db and --name, the "
        "command resumes it):\n\n```\n"
     << o.reproduce << "\n```\n";
  {
    std::ofstream f(dir / "report.md");
    f << md.str();
    if (!f) throw Error((dir / "report.md").string(), "cannot write");
  }
  return r;
}

}  // namespace minas::cli
