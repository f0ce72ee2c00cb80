// The dashboard and `minas query` ask the store the same questions through db/, so they give
// the same answers: status counts, the failed trials and their order, the best val_acc.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dashboard/api.h"
#include "db/queries.h"
#include "db/store.h"
#include "tests/dashboard/known_store.h"
#include "tests/support.h"

using namespace minas;
using Json = nlohmann::json;

namespace {

Json api(db::Connection& c, const std::string& path, std::map<std::string, std::string> p) {
  const dashboard::ApiResponse r = dashboard::handle_api(c, path, p);
  CHECK_MESSAGE(r.status == 200, path << ": " << r.body);
  return Json::parse(r.body);
}

Json cli(const std::string& db, const std::string& args) {
  const test::Run run = test::run_minas("query --db '" + db + "' --format json " + args);
  CAPTURE(run.out);
  REQUIRE(run.status == 0);
  return Json::parse(run.out);
}

std::vector<int64_t> numbers(const Json& rows) {
  std::vector<int64_t> out;
  for (const auto& r : rows) out.push_back(r["number"].get<int64_t>());
  return out;
}

// The known store with failures out of the order of their numbers: 0 failed last, 2 and 3
// at the same time, 1 without a finish time (a store written by hand could hold one).
struct FailingStore : test::KnownStore {
  FailingStore() {
    db::Store store = db::Store::open(path);
    store.connection().exec(
        "UPDATE trials SET status = 'failed', error = 'boom ' || number, finished_at = CASE "
        "number WHEN 0 THEN 90 WHEN 1 THEN NULL WHEN 2 THEN 70 WHEN 3 THEN 70 END WHERE number "
        "< 4");
  }
};

}  // namespace

TEST_CASE("same answers: the dashboard's status counts are minas query's") {
  FailingStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const Json row = cli(k.path, "experiments")[0];
  const Json expected = {{"queued", row["queued"]}, {"running", row["running"]},
                         {"done", row["done"]},     {"failed", row["failed"]},
                         {"pruned", row["pruned"]}, {"total", row["trials"]}};
  CHECK(expected == Json::parse(R"({"queued":0,"running":1,"done":1,"failed":5,"pruned":0,
                                    "total":7})"));
  CHECK(api(c, "/api/experiments", {})[0]["counts"] == expected);
  CHECK(api(c, "/api/experiment", {{"experiment", "e"}})["counts"] == expected);
  CHECK(api(c, "/api/changes", {{"experiment", "e"}, {"since", "0"}})["counts"] == expected);
  CHECK(api(c, "/api/failures", {{"experiment", "e"}})["failed"] == row["failed"]);
  CHECK(api(c, "/api/experiments", {})[0]["best_val_acc"] == row["best_val_acc"]);
}

TEST_CASE("same answers: the failed trials, latest failure first, in both") {
  FailingStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const Json listed = cli(k.path, "failures --experiment e");
  // By finish time descending, ties by number descending, none without a time last.
  CHECK(numbers(listed) == std::vector<int64_t>{0, 3, 2, 5, 1});
  const Json shown = api(c, "/api/failures", {{"experiment", "e"}})["failures"];
  REQUIRE(numbers(shown) == numbers(listed));
  for (size_t i = 0; i < shown.size(); ++i) {
    CAPTURE(i);
    CHECK(shown[i]["error"] == listed[i]["error"]);
    CHECK(shown[i]["worker"] == listed[i]["worker"]);
    CHECK(shown[i]["attempt"] == listed[i]["attempt"]);
    CHECK(shown[i]["arch"] == listed[i]["arch_key"]);
    CHECK(shown[i]["finished_at"] == listed[i]["finished_at"]);
  }
  // A page of them is the start of the same list.
  const Json two = api(c, "/api/failures", {{"experiment", "e"}, {"limit", "2"}})["failures"];
  CHECK(numbers(two) == std::vector<int64_t>{0, 3});
}
