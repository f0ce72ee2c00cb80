#pragma once
// Inside db/ only: what the read queries (queries.cpp, live_queries.cpp) share, so that a
// trial or an experiment reads the same way whichever question asked for it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "db/queries.h"
#include "db/sqlite.h"

namespace minas::db::detail {

// A read transaction: every SELECT inside sees the same committed state. Inside a
// transaction the caller holds it does nothing, since SQLite transactions do not nest.
// BEGIN (deferred) and COMMIT of a transaction that only read write nothing to the file.
class ReadSnapshot {
 public:
  explicit ReadSnapshot(Connection& conn) : conn_(conn), own_(!conn.in_transaction()) {
    if (own_) conn_.exec("BEGIN");
  }
  ReadSnapshot(const ReadSnapshot&) = delete;
  ReadSnapshot& operator=(const ReadSnapshot&) = delete;
  ~ReadSnapshot() {
    if (!own_) return;
    // Ending a read transaction cannot lose anything; ROLLBACK is the fallback that leaves
    // the connection usable if COMMIT fails.
    try {
      conn_.exec("COMMIT");
    } catch (const std::exception&) {
      try {
        conn_.exec("ROLLBACK");
      } catch (const std::exception&) {
      }
    }
  }

 private:
  Connection& conn_;
  bool own_;
};

// A column of the current row; NULL reads as std::nullopt.
std::optional<double> opt_real(const Statement& s, int i);
std::optional<int64_t> opt_int(const Statement& s, int i);
std::optional<std::string> opt_text(const Statement& s, int i);

bool table_exists(Connection& conn, std::string_view name);

// "SELECT <the columns read_trial reads> FROM trials t <joins> ": the trial is `t`, so a
// caller appends "WHERE t...." and may add columns of its own after read_trial's.
std::string trial_select(std::string_view extra_columns = {});
inline constexpr int kTrialColumnCount = 20;
// The row of trial_select from column `c` on.
TrialRow read_trial(const Statement& s, int c = 0);

// An experiment's counts per status and best val_acc, as every list of experiments gives
// them: its statements are prepared once for a whole list.
class ExperimentTotals {
 public:
  explicit ExperimentTotals(Connection& conn);
  void fill(ExperimentRow& row);
  StatusCounts counts(int64_t experiment_id);

 private:
  Statement counts_;
  Statement best_;
};

}  // namespace minas::db::detail
