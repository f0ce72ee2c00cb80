#pragma once
// A ground-truth table from an experiment's trained architectures: what
// evaluators and strategies are measured against (experiments/ground-truth/).
// One row per architecture trained to the end, with its size, cost, the
// validation accuracy after some epochs of its learning curve and at its last
// epoch, and its test accuracy: a CSV `minas bench strategies --table` reads
// (an `arch` column of canonical keys, accuracies in percent as in
// NAS-Bench-201's table).
#include <cstdint>
#include <string>
#include <vector>

#include "db/sqlite.h"

namespace minas::pipeline {

struct GroundTruthTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;  // in order of trial number
  int64_t skipped = 0;  // done trials left out: a curve point or the test accuracy missing
  std::string csv() const;
};

// The done trials of `experiment_id`, which must all share one fidelity F:
// arch, params, macs, latency_ms, train_seconds, then valid_Eep for each of
// `epochs` (each below F) and for F, then test_Fep. Throws Error when the
// trials differ in fidelity or an epoch is not below it.
GroundTruthTable ground_truth_table(db::Connection& conn, int64_t experiment_id,
                                    const std::vector<int>& epochs);

// Writes `text` to `path` through a temporary file renamed over it, so a
// reader never sees half a table.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace minas::pipeline
