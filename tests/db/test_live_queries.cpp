// The read side of what the store keeps on write (db/live_queries.h), and the queries the
// dashboard shares with `minas query` (db/queries.h): exact rows on the dashboard's known
// store (tests/dashboard/known_store.h), on a read-only connection.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "db/live_queries.h"
#include "db/queries.h"
#include "db/schema.h"
#include "db/store.h"
#include "tests/dashboard/known_store.h"
#include "tests/support.h"

namespace {

namespace db = minas::db;
using minas::test::contains;
using minas::test::error_of;
using minas::test::KnownStore;

template <class Rows>
std::vector<int64_t> numbers(const Rows& rows) {
  std::vector<int64_t> out;
  for (const auto& r : rows) {
    if constexpr (requires { r.trial; }) {
      out.push_back(r.trial.number);
    } else {
      out.push_back(r.number);
    }
  }
  return out;
}

// Every page of `q`, followed by its keyset cursor: the numbers in order.
std::vector<int64_t> all_pages(db::Connection& c, db::TrialPageQuery q) {
  std::vector<int64_t> seen;
  for (int guard = 0; guard < 20; ++guard) {
    const db::TrialPage page = db::trial_page(c, 1, q);
    for (const auto& r : page.rows) seen.push_back(r.trial.number);
    if (!page.more) break;
    const db::TrialRow& last = page.rows.back().trial;
    q.after_number = last.number;
    if (q.sort == db::TrialSort::val_acc) q.after_value = last.val_acc;
    if (q.sort == db::TrialSort::finished_at) q.after_value = last.finished_at;
    if (q.sort == db::TrialSort::seq) q.after_value = static_cast<double>(page.rows.back().seq);
  }
  return seen;
}

}  // namespace

TEST_CASE("live queries: an experiment's detail, with the counts and best that experiments() lists") {
  KnownStore k;
  {
    db::Store store = db::Store::open(k.path);
    store.set_experiment_status(1, "running", 45.0);
    store.set_experiment_budget(1, 100, 3600.0, 45.0);
    store.set_experiment_status(1, "stopped", 50.0);
    store.add_seconds_run(1, 5.0);
  }
  db::Connection c = db::open_store_readonly(k.path);
  const std::optional<db::ExperimentDetail> d = db::experiment_detail(c, 1);
  REQUIRE(d);
  CHECK(d->row.name == "e");
  CHECK(d->row.status == "stopped");
  CHECK(d->row.space == "small");
  CHECK(d->row.strategy == "evolution");
  CHECK(d->row.dataset == "fashion-mnist");
  CHECK(d->row.created_at == 10.0);
  CHECK(d->row.counts == db::StatusCounts{0, 1, 5, 1, 0});
  CHECK(d->row.best_val_acc == 0.9);
  CHECK(d->strategy_settings == R"({"name":"evolution"})");
  CHECK(d->objective == "val_acc");
  CHECK(d->started_at == 45.0);
  CHECK(d->finished_at == 50.0);
  CHECK(d->seconds_run == 5.0);
  CHECK(d->budget_trials == 100);
  CHECK(d->budget_seconds == 3600.0);
  CHECK(d->run_started_at == 45.0);
  CHECK(d->origin() == 45.0);
  // The list gives the same rows as experiments(), limited.
  const auto listed = db::experiment_details(c, 1000);
  const auto rows = db::experiments(c);
  REQUIRE(listed.size() == 1);
  REQUIRE(rows.size() == 1);
  CHECK(listed[0].row.counts == rows[0].counts);
  CHECK(listed[0].row.best_val_acc == rows[0].best_val_acc);
  CHECK(listed[0].seconds_run == 5.0);
  CHECK(db::experiment_details(c, 0).empty());
  CHECK(db::experiments(c, 0).empty());
  CHECK_FALSE(db::experiment_detail(c, 99));
  CHECK(db::space_json(c, 1) == std::optional<std::string>(R"({"kind":"chain"})"));
  CHECK_FALSE(db::space_json(c, 99));
  CHECK(db::experiment_id(c, "e") == 1);
  CHECK_FALSE(db::experiment_id(c, "nope"));
}

TEST_CASE("live queries: an experiment that never ran counts time from its creation") {
  KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const auto d = db::experiment_detail(c, 1);
  REQUIRE(d);
  CHECK_FALSE(d->started_at);
  CHECK_FALSE(d->budget_trials);
  CHECK_FALSE(d->budget_seconds);
  CHECK(d->origin() == 10.0);
}

TEST_CASE("live queries: the change cursor and the trials changed since a number") {
  KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  // 7 inserts, 5 results of 3 epochs each, a failure and a start.
  CHECK(db::change_seq(c) == 29);
  const auto all = db::changes_since(c, 1, 0, 500);
  CHECK(numbers(all) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
  std::vector<int64_t> seqs;
  for (const auto& r : all) seqs.push_back(r.seq);
  CHECK(seqs == std::vector<int64_t>{11, 15, 19, 23, 27, 28, 29});
  CHECK(numbers(db::changes_since(c, 1, 27, 500)) == std::vector<int64_t>{5, 6});
  CHECK(numbers(db::changes_since(c, 1, 0, 2)) == std::vector<int64_t>{0, 1});
  CHECK(db::changes_since(c, 1, 29, 500).empty());
  // A changed trial reads as every other question reads it.
  const db::TrialRow& failed = all[5].trial;
  const db::TrialRow one = db::trial(c, 1, 5).trial;
  CHECK(failed.error == std::optional<std::string>("out of memory"));
  CHECK(failed.worker == one.worker);
  CHECK(failed.finished_at == one.finished_at);
  CHECK(all[3].trial.parent_number == 1);
  CHECK(all[3].trial.mutation == std::optional<std::string>("op: x -> y"));
}

TEST_CASE("live queries: pages of trials by keyset, ties by number in the sort's direction") {
  KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  using S = db::TrialSort;
  auto query = [](S sort, bool desc, int64_t limit, std::optional<std::string> status = {}) {
    db::TrialPageQuery q;
    q.sort = sort;
    q.descending = desc;
    q.limit = limit;
    q.status = std::move(status);
    return q;
  };
  // val_acc: done trials only; 0.9 twice (3 and 1, by number descending).
  CHECK(all_pages(c, query(S::val_acc, true, 2)) == std::vector<int64_t>{3, 1, 2, 4, 0});
  CHECK(all_pages(c, query(S::val_acc, false, 2)) == std::vector<int64_t>{0, 4, 2, 1, 3});
  CHECK(all_pages(c, query(S::number, false, 3)) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
  CHECK(all_pages(c, query(S::number, true, 1)) == std::vector<int64_t>{6, 5, 4, 3, 2, 1, 0});
  // finished_at: finished trials only (the running one is left out).
  CHECK(all_pages(c, query(S::finished_at, true, 4)) == std::vector<int64_t>{5, 4, 3, 2, 1, 0});
  CHECK(all_pages(c, query(S::seq, true, 3)) == std::vector<int64_t>{6, 5, 4, 3, 2, 1, 0});
  CHECK(all_pages(c, query(S::number, false, 100, "failed")) == std::vector<int64_t>{5});
  CHECK(all_pages(c, query(S::number, false, 100, "pruned")).empty());
  const db::TrialPage first = db::trial_page(c, 1, query(S::number, false, 7));
  CHECK(first.rows.size() == 7);
  CHECK_FALSE(first.more);
  CHECK(db::trial_page(c, 1, query(S::number, false, 6)).more);
  CHECK(first.rows[6].trial.status == "running");
  CHECK(first.rows[6].trial.worker == std::optional<std::string>("w1"));
  CHECK(first.rows[6].seq == 29);
  CHECK(contains(error_of([&] { db::trial_page(c, 1, query(S::number, false, 0)); }).what(),
                 "at least 1"));
  db::TrialPageQuery no_value = query(S::val_acc, true, 2);
  no_value.after_number = 3;
  CHECK(contains(error_of([&] { db::trial_page(c, 1, no_value); }).what(), "needs that value"));
}

TEST_CASE("live queries: the best-so-far curve kept on write and the scatter of done trials") {
  KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const auto best = db::kept_best_so_far(c, 1);
  REQUIRE(best.size() == 2);
  CHECK(best[0].finished == 1);
  CHECK(best[0].finished_at == 30.0);
  CHECK(best[0].val_acc == 0.5);
  CHECK(best[0].number == 0);
  CHECK(best[1].finished == 2);
  CHECK(best[1].val_acc == 0.9);
  CHECK(best[1].number == 1);
  CHECK(db::kept_best_so_far(c, 99).empty());
  // In the order of the covering index of done trials: val_acc descending, then (no
  // latencies) params.
  const db::Scatter all = db::done_scatter(c, 1, db::Metric::params, 2000);
  CHECK(all.total == 5);
  CHECK(numbers(all.points) == std::vector<int64_t>{1, 3, 2, 4, 0});
  CHECK(all.points[0].x == 200.0);
  CHECK(all.points[0].val_acc == 0.9);
  // At most 2 of 5: every third.
  const db::Scatter two = db::done_scatter(c, 1, db::Metric::params, 2);
  CHECK(two.total == 5);
  CHECK(numbers(two.points) == std::vector<int64_t>{1, 4});
  const db::Scatter none = db::done_scatter(c, 1, db::Metric::latency_ms, 2000);
  CHECK(none.total == 0);
  CHECK(none.points.empty());
}

TEST_CASE("live queries: strategy snapshots, the pool over time and data reports") {
  KnownStore k;
  {
    db::Store store = db::Store::open(k.path);
    store.add_pool_sample(1, 14.0, 1, 2, 0, 3);
    store.add_pool_sample(1, 100.0, 1, 2, 0, 0);
    for (const char* name : {"e", "other", "e"}) {
      db::DataReport r;
      r.experiment = name;
      r.location = std::string("/data/") + name;
      r.usable = std::string(name) == "e";
      r.created_at = 60.0;
      store.add_data_report(r);
    }
  }
  db::Connection c = db::open_store_readonly(k.path);
  const auto snapshots = db::strategy_snapshots(c, 1, 100000);
  REQUIRE(snapshots.size() == 2);
  CHECK(snapshots[0].results == 1);
  CHECK(snapshots[0].at == 30.0);
  CHECK(snapshots[0].state == R"({"population":[0.5]})");
  CHECK(snapshots[1].results == 5);
  CHECK(db::strategy_snapshots(c, 1, 1).size() == 1);

  auto times = [](const std::vector<db::PoolSample>& samples) {
    std::vector<double> out;
    for (const auto& s : samples) out.push_back(s.at);
    return out;
  };
  // Samples at 12, 13.5, 14, 41 and 100: all of them when 5 or more points are asked for.
  CHECK(times(db::pool_over_time(c, 1, 300)) == std::vector<double>{12, 13.5, 14, 41, 100});
  const auto every = db::pool_over_time(c, 1, 5);
  REQUIRE(every.size() == 5);
  CHECK(every[0].workers == 1);
  CHECK(every[0].slots == 2);
  CHECK(every[0].busy == 1);
  CHECK(every[0].queued == 5);
  // Else the latest sample at or before each instant: 12, 56 and 100; 12 and 100; and of
  // 12, 41.3, 70.7 and 100 the two in the middle find the same sample, kept once.
  CHECK(times(db::pool_over_time(c, 1, 3)) == std::vector<double>{12, 41, 100});
  CHECK(times(db::pool_over_time(c, 1, 2)) == std::vector<double>{12, 100});
  CHECK(times(db::pool_over_time(c, 1, 4)) == std::vector<double>{12, 41, 100});
  CHECK(db::pool_over_time(c, 99, 300).empty());
  CHECK(contains(error_of([&] { db::pool_over_time(c, 1, 1); }).what(), "at least 2"));

  const auto reports = db::data_report_rows(c, std::nullopt, 50);
  REQUIRE(reports.size() == 3);
  CHECK(reports[0].experiment == "e");  // the latest first
  CHECK(reports[1].experiment == "other");
  CHECK(reports[1].location == "/data/other");
  CHECK_FALSE(reports[1].usable);
  CHECK(reports[0].usable);
  CHECK(reports[0].fingerprint == "{}");
  CHECK(reports[0].created_at == 60.0);
  CHECK(db::data_report_rows(c, std::string("e"), 50).size() == 2);
  CHECK(db::data_report_rows(c, std::string("e"), 1).size() == 1);
  CHECK(db::data_report_rows(c, std::string("nope"), 50).empty());
}

TEST_CASE("queries: failures latest first, ties by number, none without a finish time last") {
  KnownStore k;
  {
    db::Store store = db::Store::open(k.path);
    // Trial 5 failed at 40; trials 0, 2 and 4 fail later out of number order, 1 with no
    // finish time, 3 at the same time as 2.
    store.connection().exec(
        "UPDATE trials SET status = 'failed', finished_at = CASE number WHEN 0 THEN 90 WHEN 1 "
        "THEN NULL WHEN 2 THEN 70 WHEN 3 THEN 70 WHEN 4 THEN 50 END WHERE number < 5");
  }
  db::Connection c = db::open_store_readonly(k.path);
  const db::Failures f = db::failures(c, 1);
  CHECK(numbers(f.rows) == std::vector<int64_t>{0, 3, 2, 4, 5, 1});
  CHECK(numbers(db::failures(c, 1, 2).rows) == std::vector<int64_t>{0, 3});
  CHECK(db::status_counts(c, 1) == db::StatusCounts{0, 1, 0, 6, 0});
}

TEST_CASE("queries: status counts are those kept on write, and counted in older stores") {
  KnownStore k;
  {
    db::Connection w = db::Connection::open(k.path);
    // Kept equal to counting the trials through every change the trials went through.
    db::Statement counted = w.prepare(
        "SELECT status, count(*) FROM trials WHERE experiment_id = 1 GROUP BY status");
    db::StatusCounts direct;
    while (counted.step()) {
      const std::string s = counted.column_text(0);
      const int64_t n = counted.column_int64(1);
      if (s == "running") direct.running = n;
      if (s == "done") direct.done = n;
      if (s == "failed") direct.failed = n;
    }
    CHECK(db::status_counts(w, 1) == direct);
    // The kept table is what is read: a (hypothetical) drift from the trials would show.
    w.exec("UPDATE experiment_counts SET n = 42 WHERE experiment_id = 1 AND status = 'done'");
    CHECK(db::status_counts(w, 1).done == 42);
  }
  // A store of schema version 5 has no kept counts: its trials are counted.
  minas::test::TempDbPath old("live-queries-v5");
  {
    db::Connection c = db::Connection::open(old.str());
    db::Transaction tx(c);
    for (int i = 0; i < 5; ++i) c.exec(db::migrations()[static_cast<size_t>(i)].sql);
    db::set_user_version(c, 5);
    c.exec("PRAGMA application_id = " + std::to_string(db::kApplicationId));
    c.exec(
        "INSERT INTO experiments (id, name, space, space_json, dataset, dataset_fingerprint, "
        "strategy, strategy_settings, recipe, recipe_hash, objective, status, created_at) VALUES "
        "(1, 'old', 's', '{}', 'd', 'f', 'random', '{}', '{}', 'r', 'val_acc', 'running', 0);"
        "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
        "status, queued_at) VALUES (1, 0, 'a', 0, '{}', 1, 'done', 0), (1, 1, 'b', 0, '{}', 1, "
        "'queued', 0), (1, 2, 'c', 0, '{}', 1, 'done', 0)");
    tx.commit();
  }
  db::Connection c = db::open_store_readonly(old.str());
  CHECK(db::status_counts(c, 1) == db::StatusCounts{1, 0, 2, 0, 0});
  const auto rows = db::experiments(c);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].counts.total() == 3);
}

TEST_CASE("queries: find_trial is trial() or nothing") {
  KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const auto found = db::find_trial(c, 1, 3);
  REQUIRE(found);
  CHECK(found->trial.arch_key == "a3");
  CHECK(found->curve.size() == 3);
  CHECK(numbers(found->lineage) == std::vector<int64_t>{1});
  CHECK_FALSE(db::find_trial(c, 1, 99));
  CHECK_FALSE(db::find_trial(c, 99, 0));
  CHECK(contains(error_of([&] { db::trial(c, 1, 99); }).what(),
                 "(its trials are numbered 0 to 6)"));
}
