#include "pipeline/ground_truth.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <system_error>

#include "db/queries.h"
#include "searchspace/error.h"

namespace minas::pipeline {
namespace {

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string percent(double fraction) {
  return fixed(100 * fraction, 4);
}

}  // namespace

std::string GroundTruthTable::csv() const {
  std::string out;
  for (size_t i = 0; i < columns.size(); ++i) out += (i ? "," : "") + columns[i];
  out += '\n';
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) out += (i ? "," : "") + r[i];
    out += '\n';
  }
  return out;
}

GroundTruthTable ground_truth_table(db::Connection& conn, int64_t experiment_id,
                                    const std::vector<int>& epochs) {
  auto done = db::top_k(conn, experiment_id, db::Metric::val_acc,
                        std::numeric_limits<int64_t>::max());
  std::sort(done.begin(), done.end(),
            [](const db::TrialRow& a, const db::TrialRow& b) { return a.number < b.number; });
  GroundTruthTable t;
  if (done.empty()) return t;
  const int64_t last = done.front().fidelity;
  for (const auto& r : done)
    if (r.fidelity != last)
      throw Error("trial " + std::to_string(r.number),
                  "trained " + std::to_string(r.fidelity) + " epochs, trial " +
                      std::to_string(done.front().number) + " " + std::to_string(last) +
                      ": a table's rows share one training");
  for (int e : epochs)
    if (e < 1 || e >= last)
      throw Error("--epochs", "epoch " + std::to_string(e) + " is not between 1 and " +
                                  std::to_string(last - 1) + " (the trials train " +
                                  std::to_string(last) + ")");
  t.columns = {"arch", "params", "macs", "latency_ms", "train_seconds"};
  std::vector<int> points = epochs;
  points.push_back(static_cast<int>(last));
  for (int e : points) t.columns.push_back("valid_" + std::to_string(e) + "ep");
  t.columns.push_back("test_" + std::to_string(last) + "ep");
  for (const auto& r : done) {
    const db::TrialDetail d = db::trial(conn, experiment_id, r.number);
    std::map<int64_t, double> curve;
    for (const auto& e : d.curve)
      if (e.val_acc && !e.at) curve[e.epoch] = *e.val_acc;  // whole epochs only
    const bool complete = r.test_acc && r.params && r.macs && r.latency_ms && r.train_seconds &&
                          std::all_of(points.begin(), points.end(),
                                      [&](int e) { return curve.count(e) > 0; });
    if (!complete) {
      ++t.skipped;
      continue;
    }
    std::vector<std::string> row = {r.arch_key, std::to_string(*r.params), std::to_string(*r.macs),
                                    fixed(*r.latency_ms, 4), fixed(*r.train_seconds, 1)};
    for (int e : points) row.push_back(percent(curve[e]));
    row.push_back(percent(*r.test_acc));
    t.rows.push_back(std::move(row));
  }
  return t;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp, "cannot write");
    out << text;
    out.flush();
    if (!out) throw Error(tmp, "write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(path, "cannot replace: " + ec.message());
}

}  // namespace minas::pipeline
