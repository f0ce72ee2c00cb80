// The ground-truth table written from a store: one row per trial trained to
// the end, with its curve points, and what is refused.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "db/queries.h"
#include "db/store.h"
#include "pipeline/ground_truth.h"
#include "searchspace/error.h"
#include "searchspace/space.h"
#include "tests/support.h"

using namespace minas;
using minas::test::TempDbPath;
using minas::test::TempDir;

namespace {

db::ExperimentSpec spec() {
  db::ExperimentSpec s;
  s.name = "gt";
  s.space = "small";
  s.space_json = nlohmann::json::object();
  s.dataset = "fashion-mnist";
  s.dataset_fingerprint = "00";
  s.strategy = "stratified";
  s.strategy_settings = nlohmann::json::object();
  s.recipe = {{"epochs", 4}};
  s.objective = "val_acc";
  return s;
}

// A trial of `epochs` epochs with val_acc 0.1 * epoch + offset at each, done
// when `finish` (test accuracy 0.5 + offset).
int64_t add(db::Store& store, db::Writer& w, int64_t e, const std::string& key, int fidelity,
            int epochs, double offset, bool finish) {
  db::NewTrial t;
  t.experiment_id = e;
  t.arch_key = key;
  t.arch_hash = fnv1a64(key);
  t.arch_json = "{}";
  t.fidelity = fidelity;
  t.queued_at = 1;
  const int64_t id = w.add_trial(t);
  w.start_trial(id, 0, std::nullopt, "cpu", 2);
  for (int k = 1; k <= epochs; ++k)
    w.record_epoch({id, 0, k, 1, 0.5, 0.1 * k + offset, 0.1, 1, std::nullopt});
  if (finish) {
    db::TrialResult r;
    r.trial_id = id;
    r.val_acc = 0.1 * epochs + offset;
    r.test_acc = 0.5 + offset;
    r.latency_ms = 0.25;
    r.params = 1000;
    r.macs = 20000;
    r.train_seconds = 12.5;
    r.finished_at = 3;
    CHECK(w.record_result(r));
  }
  w.commit();
  (void)store;
  return id;
}

}  // namespace

TEST_CASE("ground truth: one row per finished trial, curve points in percent, in trial order") {
  TempDbPath tmp;
  db::Store store = db::Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec(), 1.0);
  {
    db::Writer w(store);
    add(store, w, e, "b", 4, 4, 0.01, true);
    add(store, w, e, "a", 4, 4, 0.02, true);
    add(store, w, e, "running", 4, 2, 0, false);  // not finished: no row
  }
  const auto t = pipeline::ground_truth_table(store.connection(), e, {1, 3});
  CHECK(t.columns == std::vector<std::string>{"arch", "params", "macs", "latency_ms",
                                              "train_seconds", "valid_1ep", "valid_3ep",
                                              "valid_4ep", "test_4ep"});
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0] == std::vector<std::string>{"b", "1000", "20000", "0.2500", "12.5", "11.0000",
                                              "31.0000", "41.0000", "51.0000"});
  CHECK(t.rows[1][0] == "a");
  CHECK(t.skipped == 0);
  CHECK(t.csv().substr(0, t.csv().find('\n')) ==
        "arch,params,macs,latency_ms,train_seconds,valid_1ep,valid_3ep,valid_4ep,test_4ep");

  // Written whole, replacing what was there.
  TempDir dir;
  const std::string out = dir.file("table.csv");
  { std::ofstream(out) << "old"; }
  pipeline::write_file_atomically(out, t.csv());
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str() == t.csv());
  CHECK(!std::filesystem::exists(out + ".tmp"));

  // An epoch at or past the trials' last is refused, naming the flag.
  CHECK_THROWS_WITH_AS(pipeline::ground_truth_table(store.connection(), e, {4}),
                       doctest::Contains("--epochs"), Error);
  CHECK_THROWS_WITH_AS(pipeline::ground_truth_table(store.connection(), e, {0}),
                       doctest::Contains("epoch 0"), Error);
}

TEST_CASE("ground truth: trials of different fidelity are refused, and a missing curve point skips") {
  TempDbPath tmp;
  db::Store store = db::Store::open(tmp.str());
  const int64_t e = store.create_experiment(spec(), 1.0);
  {
    db::Writer w(store);
    add(store, w, e, "full", 4, 4, 0, true);
    add(store, w, e, "gap", 4, 1, 0, true);  // done without epochs 3 and 4 recorded
  }
  const auto t = pipeline::ground_truth_table(store.connection(), e, {1, 3});
  CHECK(t.rows.size() == 1);
  CHECK(t.skipped == 1);
  {
    db::Writer w(store);
    add(store, w, e, "short", 2, 2, 0, true);
  }
  CHECK_THROWS_WITH_AS(pipeline::ground_truth_table(store.connection(), e, {1}),
                       doctest::Contains("a table's rows share one training"), Error);
}
