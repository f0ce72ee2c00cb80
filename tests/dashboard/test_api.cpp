// The dashboard's JSON API on a store with known rows (exact JSON), its
// pagination and change cursor, its answers to malformed parameters, and the
// server's token check.
#include <doctest/doctest.h>

#include <httplib.h>

#include <chrono>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "dashboard/api.h"
#include "dashboard/server.h"
#include "db/queries.h"
#include "db/store.h"
#include "searchspace/space.h"
#include "tests/dashboard/known_store.h"
#include "tests/support.h"

using namespace minas;
using Json = nlohmann::json;

namespace {

Json get(db::Connection& c, const std::string& path, std::map<std::string, std::string> p = {},
         int status = 200) {
  const dashboard::ApiResponse r = dashboard::handle_api(c, path, p);
  CHECK_MESSAGE(r.status == status, path << ": " << r.body);
  return Json::parse(r.body);
}

}  // namespace

TEST_CASE("dashboard api: experiments and an overview, exactly") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const Json list = get(c, "/api/experiments");
  REQUIRE(list.size() == 1);
  CHECK(list[0]["name"] == "e");
  CHECK(list[0]["counts"] == Json::parse(R"({"queued":0,"running":1,"done":5,"failed":1,
                                              "pruned":0,"total":7})"));
  CHECK(list[0]["best_val_acc"] == 0.9);
  const Json o = get(c, "/api/experiment", {{"experiment", "e"}});
  CHECK(o["best"] == Json::parse(R"({"number":1,"arch":"a1","val_acc":0.9})"));
  // Best so far: trial 0 (0.5) then trial 1 (0.9); later ones do not improve on it.
  // Seconds from the experiment's creation at 10 (it never started).
  CHECK(o["best_so_far"] == Json::parse(R"([
    {"trials":1,"seconds":20.0,"best":0.5,"number":0},
    {"trials":2,"seconds":21.0,"best":0.9,"number":1}])"));
  CHECK(o["seq"] == 7 + 5 * (1 + 3) + 2);  // 7 inserts, 5 results of 3 epochs, a failure, a start
  CHECK(o["elapsed"] == 0.0);
  // Never run by a controller: no budget, no seconds.
  CHECK(o["budget"] == Json::parse(R"({"trials":null,"trials_used":7,"seconds":null,
                                       "seconds_used":0.0,"ends_by":null})"));
}

TEST_CASE("dashboard api: the budget line counts the search's own seconds and names the budget that ends it") {
  test::KnownStore k;  // 7 trials
  auto now = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  auto budget = [&] {
    db::Connection c = db::open_store_readonly(k.path);
    return get(c, "/api/experiment", {{"experiment", "e"}})["budget"];
  };
  {
    // A one-click search as minas search sets it: 14 minutes and a trial
    // budget no 14 minutes reach, started 100 s ago, after an earlier run of 60 s.
    db::Store store = db::Store::open(k.path);
    store.add_seconds_run(1, 60);
    store.set_experiment_status(1, "running", now() - 100);
    store.set_experiment_budget(1, 1'000'000, 60 + 840, now() - 100);
  }
  Json b = budget();
  CHECK(b["ends_by"] == "time");
  CHECK(b["seconds"] == 900.0);
  // The runs' seconds: 60 stored, and about 100 of the run going on (the
  // store's clock, read twice: never less, and not twice it).
  CHECK(b["seconds_used"].get<double>() >= 160.0);
  CHECK(b["seconds_used"].get<double>() < 160.0 + 60);
  {
    // Finished by its time: the controller adds its run's seconds and ends it.
    db::Store store = db::Store::open(k.path);
    store.add_seconds_run(1, 840);
    store.set_experiment_status(1, "finished", now());
  }
  b = budget();
  CHECK(b["seconds_used"] == 900.0);  // the stored seconds alone, however late the page asks
  CHECK(b["ends_by"] == "time");
  {
    // A trial budget the pace reaches first, then reached.
    db::Store store = db::Store::open(k.path);
    store.set_experiment_status(1, "running", now());
    store.set_experiment_budget(1, 8, 900 + 3600, now());
  }
  CHECK(budget()["ends_by"] == "trials");  // 7 trials in 900 s: 8 long before 3600 s more
  {
    db::Store store = db::Store::open(k.path);
    store.set_experiment_budget(1, 7, std::nullopt, now());
    store.set_experiment_status(1, "stopped", now());
  }
  b = budget();
  CHECK(b["ends_by"] == "trials");
  CHECK(b["trials"] == 7);
  {
    // Stopped (Ctrl-C) before either budget.
    db::Store store = db::Store::open(k.path);
    store.set_experiment_budget(1, 100, 5000, now());
  }
  CHECK(budget()["ends_by"].is_null());
}

TEST_CASE("dashboard api: a pruned trial carries the rung and the accuracy that cut it") {
  test::KnownStore k;
  {
    // Trial 6 (running, attempt 0) validated after its first epoch and at
    // 1.5 epochs, a fractional rung where ASHA cut it.
    db::Store store = db::Store::open(k.path);
    db::Connection& c = store.connection();
    c.exec("INSERT INTO epochs (trial_id, attempt, epoch, val_acc) VALUES (7, 0, 1, 0.6)");
    c.exec("INSERT INTO sub_epochs (trial_id, attempt, at, val_acc) VALUES (7, 0, 1.5, 0.625)");
    c.exec("UPDATE trials SET status = 'pruned', finished_at = 50 WHERE id = 7");
  }
  db::Connection c = db::open_store_readonly(k.path);
  const Json pruned = get(c, "/api/trials", {{"experiment", "e"}, {"status", "pruned"}});
  REQUIRE(pruned["trials"].size() == 1);
  CHECK(pruned["trials"][0]["number"] == 6);
  CHECK(pruned["trials"][0]["val_acc"].is_null());
  CHECK(pruned["trials"][0]["pruned_at"] == Json::parse(R"({"at":1.5,"val_acc":0.625})"));
  CHECK(get(c, "/api/trial", {{"experiment", "e"}, {"number", "6"}})["pruned_at"] ==
        Json::parse(R"({"at":1.5,"val_acc":0.625})"));
  // The others carry none; so does the live feed's row.
  CHECK(get(c, "/api/trial", {{"experiment", "e"}, {"number", "0"}})["pruned_at"].is_null());
  bool seen = false;
  const Json feed = get(c, "/api/changes", {{"experiment", "e"}, {"since", "0"}});
  INFO(feed.dump());
  for (const auto& t : feed["trials"])
    if (t["number"] == 6) {
      seen = true;
      CHECK(t["pruned_at"]["at"] == 1.5);
    }
  CHECK(seen);
}

TEST_CASE("dashboard api: trials pages by keyset, sorted on indexed columns, each trial once") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  // By validation accuracy, best first; ties by number in the same direction: 3, 1, 2, 4, 0.
  Json page = get(c, "/api/trials", {{"experiment", "e"}, {"sort", "val_acc"}, {"limit", "2"}});
  std::vector<int64_t> seen;
  for (int guard = 0; guard < 10; ++guard) {
    for (const auto& t : page["trials"]) seen.push_back(t["number"]);
    if (page["next"].is_null()) break;
    page = get(c, "/api/trials",
               {{"experiment", "e"},
                {"sort", "val_acc"},
                {"limit", "2"},
                {"after", page["next"].get<std::string>()}});
  }
  CHECK(seen == std::vector<int64_t>{3, 1, 2, 4, 0});
  // By number with a status filter, and a row's exact fields.
  const Json failed = get(c, "/api/trials", {{"experiment", "e"}, {"status", "failed"}});
  REQUIRE(failed["trials"].size() == 1);
  CHECK(failed["trials"][0]["number"] == 5);
  CHECK(failed["trials"][0]["error"] == "out of memory");
  CHECK(failed["next"].is_null());
  const Json desc = get(c, "/api/trials", {{"experiment", "e"}, {"order", "desc"}, {"limit", "3"}});
  CHECK(desc["trials"][0]["number"] == 6);
  CHECK(desc["next"] == "4");
}

TEST_CASE("dashboard api: a trial with its curve and lineage, changes since a cursor") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  const Json t = get(c, "/api/trial", {{"experiment", "e"}, {"number", "3"}, {"points", "2"}});
  CHECK(t["arch"] == "a3");
  CHECK(t["epochs"] == 3);
  REQUIRE(t["curve"].size() == 2);  // downsampled: the first and the last epoch
  CHECK(t["curve"][0]["epoch"] == 1);
  CHECK(t["curve"][1]["epoch"] == 3);
  CHECK(t["parent"] == 1);
  CHECK(t["mutation"] == "op: x -> y");
  REQUIRE(t["lineage"].size() == 1);
  CHECK(t["lineage"][0]["number"] == 1);

  const Json all = get(c, "/api/changes", {{"experiment", "e"}, {"since", "0"}});
  CHECK(all["trials"].size() == 7);  // each trial once, at its latest change
  CHECK(all["seq"] == 29);
  CHECK(all["more"] == false);
  const Json last = get(c, "/api/changes", {{"experiment", "e"}, {"since", "27"}});
  REQUIRE(last["trials"].size() == 2);
  CHECK(last["trials"][0]["number"] == 5);  // failed at change 28
  CHECK(last["trials"][1]["number"] == 6);  // started at change 29
  CHECK(get(c, "/api/changes", {{"experiment", "e"}, {"since", "29"}})["trials"].empty());
  const Json paged = get(c, "/api/changes", {{"experiment", "e"}, {"since", "0"}, {"limit", "4"}});
  CHECK(paged["more"] == true);
  CHECK(paged["trials"].size() == 4);

  const Json p = get(c, "/api/pareto", {{"experiment", "e"}, {"x", "params"}});
  CHECK(p["front"] == Json::parse(R"([{"number":0,"arch":"a0","val_acc":0.5,"params":100.0},
                                      {"number":1,"arch":"a1","val_acc":0.9,"params":200.0}])"));
  CHECK(p["points"].size() == 5);
  const Json f = get(c, "/api/failures", {{"experiment", "e"}});
  CHECK(f["failures"][0]["error"] == "out of memory");
  CHECK(f["failures"][0]["worker"] == "w1");
  const Json w = get(c, "/api/workers", {{"experiment", "e"}});
  CHECK(w == Json::parse(R"({"workers":[{"name":"w1","host":"node1","pool":"gpu",
    "tags":{"gpu":"h100"},"devices":[{"id":"cpu"}],"first_seen":10.0,"last_seen":20.0,
    "connected_seconds":0.0,"busy_seconds":0.0,"utilization":null,"trials_done":5,
    "running":[{"number":6,"device":"cpu","started_at":41.0}]}]})"));
}

TEST_CASE("dashboard api: the pool over time and the strategy's snapshots, exactly") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  // Seconds from the experiment's creation at 10.
  CHECK(get(c, "/api/pool", {{"experiment", "e"}}) == Json::parse(R"({"samples":[
    {"seconds":2.0,"workers":1,"slots":2,"busy":1,"queued":5},
    {"seconds":3.5,"workers":1,"slots":2,"busy":2,"queued":4},
    {"seconds":31.0,"workers":1,"slots":2,"busy":1,"queued":0}]})"));
  // Two points: the state at the first sample and at the last.
  CHECK(get(c, "/api/pool", {{"experiment", "e"}, {"points", "2"}}) == Json::parse(R"({"samples":[
    {"seconds":2.0,"workers":1,"slots":2,"busy":1,"queued":5},
    {"seconds":31.0,"workers":1,"slots":2,"busy":1,"queued":0}]})"));
  CHECK(get(c, "/api/internals", {{"experiment", "e"}}) == Json::parse(R"({
    "strategy":"evolution",
    "snapshots":[{"results":1,"seconds":20.0,"state":{"population":[0.5]}},
                 {"results":5,"seconds":24.5,"state":{"population":[0.5,0.9,0.7]}}],
    "kept":2})"));
}

TEST_CASE("dashboard api: a trial's decisions and its layer graph by block") {
  test::TempDir dir{"dashboard-graph"};
  const std::string path = dir.file("minas.db");
  const Space space = Space::load("small");
  // The hand-designed reference: conv-pool-conv-pool-conv, the narrowest widths.
  const std::string key = "16|32|conv_k3|skip|64|conv_k3|skip";
  {
    db::Store store = db::Store::open(path);
    db::ExperimentSpec s;
    s.name = "g";
    s.space = "small";
    s.space_json = space.spec();
    s.dataset = "fashion-mnist";
    s.dataset_fingerprint = "00";
    s.strategy = "random";
    s.strategy_settings = {{"name", "random"}};
    s.recipe = {{"epochs", 1}};
    s.objective = "val_acc";
    store.create_experiment(s, 1.0);
    store.connection().exec(
        "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
        "status, queued_at) VALUES (1, 0, '" +
        key + "', 0, '{}', 1, 'queued', 2)");
  }
  db::Connection c = db::open_store_readonly(path);
  const Json t = get(c, "/api/trial", {{"experiment", "g"}, {"number", "0"}});
  const Json& g = t["graph"];
  REQUIRE(g.is_object());
  REQUIRE_MESSAGE(!g.contains("error"), g.dump());
  CHECK(g["decisions"][0] == Json::parse(R"({"name":"stem.width","option":"16"})"));
  CHECK(g["decisions"][3] == Json::parse(R"({"name":"stage1.layer2","option":"skip"})"));
  CHECK(g["input"] == "1x28x28");
  CHECK(g["classes"] == 10);
  // By hand: a 3x3 conv 1 -> 16 without bias (144 weights, 144 MACs at each of
  // 28x28 places), batch norm (scale and shift of 16), ReLU.
  CHECK(g["blocks"][0] == Json::parse(R"({"name":"stem","layers":3,"params":176,"macs":112896,
                                          "output":"16x28x28",
                                          "ops":{"conv":1,"batchnorm":1,"relu":1}})"));
  CHECK(g["blocks"].back()["name"] == "head");
  CHECK(g["blocks"].back()["output"] == "10x1x1");
  // The blocks add up to the whole network.
  const LayerGraph lowered = space.lower(space.parse_key(key));
  int64_t params = 0, macs = 0, layers = 0;
  for (const auto& b : g["blocks"]) {
    params += b["params"].get<int64_t>();
    macs += b["macs"].get<int64_t>();
    layers += b["layers"].get<int64_t>();
  }
  CHECK(params == lowered.params());
  CHECK(macs == lowered.macs());
  CHECK(layers == lowered.size() - 1);
  CHECK(g["params"] == lowered.params());
  INFO(g.dump());
  CHECK(g["blocks"].size() == 4);  // stem, stage1, stage2, head
}

TEST_CASE("dashboard api: malformed parameters get 400 with a message, unknown things 404") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  struct Case {
    std::string path;
    std::map<std::string, std::string> params;
    int status;
    std::string says;
  };
  for (const Case& x : std::vector<Case>{
           {"/api/experiment", {}, 400, "experiment: required"},
           {"/api/experiment", {{"experiment", "nope"}}, 404, "no such experiment"},
           {"/api/trials", {{"experiment", "e"}, {"limit", "0"}}, 400, "limit: '0'"},
           {"/api/trials", {{"experiment", "e"}, {"limit", "1e9"}}, 400, "limit"},
           {"/api/trials", {{"experiment", "e"}, {"sort", "arch"}}, 400, "sort: 'arch'"},
           {"/api/trials", {{"experiment", "e"}, {"order", "up"}}, 400, "order: 'up'"},
           {"/api/trials", {{"experiment", "e"}, {"status", "lost"}}, 400, "status: 'lost'"},
           {"/api/trials", {{"experiment", "e"}, {"after", "x"}}, 400, "after: 'x'"},
           {"/api/trials",
            {{"experiment", "e"}, {"sort", "val_acc"}, {"after", "0.5"}},
            400,
            "VALUE,NUMBER"},
           {"/api/trial", {{"experiment", "e"}}, 400, "number: required"},
           {"/api/trial", {{"experiment", "e"}, {"number", "-1"}}, 400, "number"},
           {"/api/trial", {{"experiment", "e"}, {"number", "99"}}, 404, "99"},
           {"/api/changes", {{"experiment", "e"}}, 400, "since: required"},
           {"/api/changes", {{"experiment", "e"}, {"since", "abc"}}, 400, "since: 'abc'"},
           {"/api/pareto", {{"experiment", "e"}, {"x", "val_acc"}}, 400, "x: 'val_acc'"},
           {"/api/pool", {{"experiment", "e"}, {"points", "1"}}, 400, "points: '1'"},
           {"/api/pool", {}, 400, "experiment: required"},
           {"/api/internals", {{"experiment", "e"}, {"points", "x"}}, 400, "points: 'x'"},
           {"/api/internals", {{"experiment", "nope"}}, 404, "nope"},
           {"/api/nothing", {}, 404, "no such endpoint"},
       }) {
    const dashboard::ApiResponse r = dashboard::handle_api(c, x.path, x.params);
    CHECK_MESSAGE(r.status == x.status, x.path << " " << r.body);
    const Json body = Json::parse(r.body);
    CHECK_MESSAGE(test::contains(body["error"].get<std::string>(), x.says), r.body);
  }
}

TEST_CASE("dashboard server: loopback by default, beyond it a token, checked on every request") {
  test::KnownStore k;
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  o.bind = "0.0.0.0";
  CHECK_THROWS_WITH_AS(dashboard::Server{o}, doctest::Contains("needs --token"), Error);
  o.token = "s3cret";
  dashboard::Server server(o);
  std::thread t([&] { server.run(); });
  httplib::Client client("127.0.0.1", server.port());
  auto r = client.Get("/api/experiments");
  REQUIRE(r);
  CHECK(r->status == 401);
  r = client.Get("/api/experiments", {{"Authorization", "Bearer wrong"}});
  REQUIRE(r);
  CHECK(r->status == 401);
  r = client.Get("/api/experiments", {{"Authorization", "Bearer s3cret"}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(Json::parse(r->body)[0]["name"] == "e");
  r = client.Get("/?token=s3cret");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(test::contains(r->body, "'app.js'"));
  r = client.Get("/app.js");  // the page's scripts too need the token
  REQUIRE(r);
  CHECK(r->status == 401);
  r = client.Get("/app.js?token=s3cret");
  REQUIRE(r);
  CHECK(r->status == 200);
  r = client.Get("/chart.js?token=s3cret");
  REQUIRE(r);
  CHECK(r->status == 200);
  r = client.Get("/api/trials?experiment=e&limit=zz&token=s3cret");
  REQUIRE(r);
  CHECK(r->status == 400);
  server.stop();
  t.join();
  o.db = k.dir.file("missing.db");
  CHECK_THROWS_AS(dashboard::Server{o}, Error);
}

TEST_CASE("dashboard api: parameters are checked against each endpoint's table") {
  test::KnownStore k;
  db::Connection c = db::open_store_readonly(k.path);
  struct Case {
    std::string path;
    std::map<std::string, std::string> params;
    int status;
    std::string says;
  };
  for (const Case& x : std::vector<Case>{
           {"/api/experiments",
            {{"experiment", "e"}},
            400,
            "unknown parameter 'experiment' "
            "(/api/experiments takes none)"},
           {"/api/pareto", {{"experiment", "e"}, {"y", "1"}}, 400, "takes experiment or x"},
           {"/api/experiment", {{"experiment", "\xff"}}, 400, "experiment: not valid UTF-8"},
           {"/api/experiment", {{"experiment", "a\x1b"}}, 400, "experiment: holds a control"},
           {"/api/experiment", {{"experiment", std::string(257, 'x')}}, 400, "longer than 256"},
           {"/api/experiment", {{"experiment", "\xc3\xa9\n"}}, 400, "control character"},
           {"/api/experiment", {{"experiment", "caf\xc3\xa9"}}, 404, "'caf\\xc3\\xa9'"},
           {"/api/trials",
            {{"experiment", "e"}, {"limit", "99999999999999999999"}},
            400,
            "limit: '99999999999999999999' is not an integer in [1, 500]"},
           {"/api/trials", {{"experiment", "e"}, {"sort", "\xff\x01"}}, 400, "sort: '\\xff\\x01'"},
           {"/api/trials",
            {{"experiment", "e"}, {"after", std::string(65, '1')}},
            400,
            "after: longer than 64 bytes"},
           {"/api/trials",
            {{"experiment", "e"}, {"sort", "val_acc"}, {"after", "nan,1"}},
            400,
            "after: 'nan,1'"},
           {"/api/trial",
            {{"experiment", "e"}, {"number", "99"}},
            404,
            "trial 99 of experiment 'e': no such trial"},
           {"/api/" + std::string(300, 'z'), {}, 404, "zzzz... (305 bytes)': no such endpoint"},
       }) {
    const dashboard::ApiResponse r = dashboard::handle_api(c, x.path, x.params);
    CHECK_MESSAGE(r.status == x.status, x.path << " " << r.body);
    const Json body = Json::parse(r.body);
    CHECK_MESSAGE(test::contains(body["error"].get<std::string>(), x.says), r.body);
    CHECK(r.fault.empty());
  }
  // The 404 of an unknown trial names neither the store's path nor its files.
  const auto r = dashboard::handle_api(c, "/api/trial", {{"experiment", "e"}, {"number", "99"}});
  CHECK_FALSE(test::contains(r.body, k.path));
  // Every endpoint and parameter the table knows, as the docs list them.
  std::set<std::string> paths;
  for (const auto& e : dashboard::api_endpoints()) paths.insert(e.path);
  CHECK(paths.size() == 11);
  CHECK(paths.count("/api/data_reports") == 1);
}

TEST_CASE("dashboard api: a failing store is a 500 that keeps its details for the log") {
  // A database without the store's tables: every query fails inside SQLite.
  db::Connection c = db::Connection::open("", db::OpenMode::Memory);
  const auto r = dashboard::handle_api(c, "/api/experiments", {});
  CHECK(r.status == 500);
  CHECK(Json::parse(r.body) ==
        Json::parse(R"({"error":"the server failed to answer; its log says why"})"));
  CHECK(test::contains(r.fault, "no such table"));
}
