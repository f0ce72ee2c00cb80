// The sections of an adaptation's report.md: the constraints and how the
// final model meets them, the latency model's record, the confusion matrix,
// the Pareto front, the data and the warm start.
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline/adapt_run.h"

namespace minas::pipeline::adapt_steps {
namespace {

void constraints_section(std::ostream& md, const AdaptRun& run, const FinalResult& r) {
  const AdaptOptions& o = run.o;
  const std::string& target_text = run.target.text;
  md << "## Constraints\n\n| constraint | limit | final model | margin | met |\n"
     << "|---|---|---|---|---|\n";
  auto row = [&](const std::string& what, double limit, double value, const char* fmt) {
    md << "| " << what << " | " << report_number(limit, fmt) << " | " << report_number(value, fmt)
       << " | " << report_number(limit - value, fmt) << " ("
       << report_number(100 * (limit - value) / limit, "%.1f") << "%) | "
       << (value <= limit ? "yes" : "**no**") << " |\n";
  };
  if (o.latency_ms > 0)
    row("latency ms, batch 1, " + target_text, o.latency_ms, r.latency_ms, "%.3f");
  if (o.max_params)
    row("parameters", static_cast<double>(o.max_params), static_cast<double>(r.params), "%.0f");
  if (o.max_macs)
    row("MACs per image", static_cast<double>(o.max_macs), static_cast<double>(r.macs), "%.0f");
  if (run.constraints.empty()) md << "| none given | | | | |\n";
  md << "\nParameters and MACs are exact (the layer graph); latency is the median of 50 "
        "batch-1 runs on "
     << target_text << " on " << host_name() << ", batch norm folded.\n\n";
}

void latency_model_paragraph(std::ostream& md, const AdaptRun& run) {
  const nlohmann::json& e = run.latency_error;
  if (e.is_null()) return;
  md << "The latency model (per-layer table calibrated by " << run.latency_model->samples()
     << " measurements of " << run.target.text << " in the store) refused "
     << e.at("refused_before_training") << " candidate(s) before training; against "
     << e.at("measured") << " trained candidates measured on the target its "
     << "median relative error was "
     << report_number(100 * e.at("median_relative_error").get<double>(), "%.1f") << "% (largest "
     << report_number(100 * e.at("max_relative_error").get<double>(), "%.1f") << "%).\n\n";
}

void confusion_section(std::ostream& md, const std::vector<std::string>& classes,
                       const FinalResult& r) {
  md << "## Confusion matrix (test set)\n\nRows: the true class; columns: the predicted "
        "class.\n\n| true \\ predicted |";
  for (const auto& c : classes) md << " " << c << " |";
  md << " recall |\n|---|";
  for (size_t k = 0; k <= classes.size(); ++k) md << "---|";
  md << "\n";
  for (size_t t = 0; t < r.confusion.size(); ++t) {
    int64_t total = 0;
    for (int64_t v : r.confusion[t]) total += v;
    md << "| **" << classes.at(t) << "** |";
    for (size_t p = 0; p < r.confusion[t].size(); ++p)
      md << " "
         << (p == t ? "**" + std::to_string(r.confusion[t][p]) + "**"
                    : std::to_string(r.confusion[t][p]))
         << " |";
    md << " " << (total ? report_percent(static_cast<double>(r.confusion[t][t]) / total) : "-")
       << " |\n";
  }
}

// The front of validation accuracy against the constraint that matters
// most (latency, else MACs, else parameters), the chosen model marked.
void pareto_section(std::ostream& md, const AdaptRun& run, db::Connection& conn, int64_t experiment,
                    const FinalResult& r) {
  const std::string x_metric = run.o.latency_ms > 0 ? "latency_ms"
                               : run.o.max_macs     ? "macs"
                                                    : "params";
  md << "\n## Pareto front: validation accuracy against " << x_metric << "\n\n"
     << "The searched architectures no other beats on both (over every trained candidate; "
        "the chosen one marked). Accuracy is the search's validation figure.\n\n"
     << "| | trial | validation | " << x_metric << " | "
     << (x_metric == "params" ? "MACs" : "params") << " | architecture |\n"
     << "|---|---|---|---|---|---|\n";
  const db::Metric xm = x_metric == "latency_ms" ? db::Metric::latency_ms
                        : x_metric == "macs"     ? db::Metric::macs
                                                 : db::Metric::params;
  std::vector<db::TrialRow> front = db::pareto(conn, experiment, xm);
  const bool on_front = std::any_of(front.begin(), front.end(),
                                    [&](const db::TrialRow& t) { return t.number == r.trial; });
  if (!on_front) {
    // Another constraint kept it off the front: it is shown all the same.
    const db::TrialDetail chosen = db::trial(conn, experiment, r.trial);
    front.push_back(chosen.trial);
  }
  for (const db::TrialRow& t : front) {
    const auto xv = t.value(xm);
    md << "| "
       << (t.number != r.trial ? ""
           : on_front          ? "**chosen**"
                               : "**chosen** (not on the front: a trial better on both "
                                 "breaks another constraint)")
       << " | " << t.number << " | " << (t.val_acc ? report_percent(*t.val_acc) : "-") << " | "
       << (xv ? report_number(*xv, x_metric == "latency_ms" ? "%.3f" : "%.0f") : "-") << " | "
       << (x_metric == "params" ? (t.macs ? std::to_string(*t.macs) : "-")
                                : (t.params ? std::to_string(*t.params) : "-"))
       << " | " << report_code(t.arch_key) << " |\n";
  }
  md << "\nThe chosen model is the best by validation accuracy of those that meet the "
        "constraints (trial "
     << r.trial << ").\n\n";
}

void data_section(std::ostream& md, const AdaptRun& run) {
  const AdaptOptions& o = run.o;
  md << "## Data\n\n"
     << "`" << o.data << "`" << (o.test.empty() ? "" : " with test images `" + o.test + "`") << ": "
     << run.report.summary.images << " images, " << run.report.summary.excluded
     << " left out by validation (" << run.report.errors() << " error(s), " << run.report.warnings()
     << " warning(s); `validation.txt`, `validation.json`). " << run.in.why << " "
     << run.split.train.size() << " images for training and validation (" << run.val
     << " of them held out for validation in the search), " << run.split.test.size()
     << " for the test.\n\n";
}

void warm_start_section(std::ostream& md, const AdaptRun& run) {
  const std::vector<std::string>& initial = run.settings.initial;
  md << "## Warm start\n\n";
  if (!run.warm.sources.empty() || (!run.existing && run.o.warm_start)) {
    for (const auto& s : run.warm.sources)
      md << "- `" << s.experiment << "`, similarity " << report_number(s.similarity, "%.2f") << ": "
         << s.archs.size() << " architecture(s)\n";
    md << "- the portfolio: " << kPortfolio.size() << " architectures\n\n"
       << initial.size() << " asked first, in that order.\n";
  } else if (!initial.empty()) {
    md << "Those of the experiment's first run: " << initial.size()
       << " architecture(s) asked first.\n";
  } else {
    md << "None (`--no-warm-start`): every architecture sampled.\n";
  }
}

}  // namespace

std::string adapt_report(const AdaptRun& run, db::Connection& conn, int64_t experiment,
                         const FinalResult& r) {
  std::ostringstream md;
  constraints_section(md, run, r);
  latency_model_paragraph(md, run);
  confusion_section(md, run.src.classes, r);
  pareto_section(md, run, conn, experiment, r);
  data_section(md, run);
  warm_start_section(md, run);
  return md.str();
}

}  // namespace minas::pipeline::adapt_steps
