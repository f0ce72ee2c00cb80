#include "dashboard/api.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/queries.h"
#include "searchspace/error.h"
#include "searchspace/layer_graph.h"
#include "searchspace/space.h"

namespace minas::dashboard {
namespace {

using Json = nlohmann::ordered_json;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A client's mistake: answered 400 (or 404) with the message.
struct BadRequest {
  int status;
  std::string message;
};

const std::string& param(const std::map<std::string, std::string>& p, const std::string& name) {
  static const std::string empty;
  const auto it = p.find(name);
  return it == p.end() ? empty : it->second;
}

int64_t integer(const std::map<std::string, std::string>& p, const std::string& name,
                int64_t fallback, int64_t lo, int64_t hi) {
  const std::string& text = param(p, name);
  if (text.empty()) return fallback;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
    throw BadRequest{400, name + ": '" + text + "' is not an integer in [" + std::to_string(lo) +
                              ", " + std::to_string(hi) + "]"};
  return v;
}

Json opt(const std::optional<double>& v) {
  return v ? Json(*v) : Json();
}
Json opt(const std::optional<int64_t>& v) {
  return v ? Json(*v) : Json();
}
Json opt(const std::optional<std::string>& v) {
  return v ? Json(*v) : Json();
}

Json column(const db::Statement& s, int i) {
  switch (s.column_type(i)) {
    case db::ColumnType::Null:
      return nullptr;
    case db::ColumnType::Integer:
      return s.column_int64(i);
    case db::ColumnType::Float:
      return s.column_double(i);
    default:
      return s.column_text(i);
  }
}

int64_t experiment_id(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const std::string& name = param(p, "experiment");
  if (name.empty()) throw BadRequest{400, "experiment: required (an experiment's name)"};
  db::Statement s = conn.prepare("SELECT id FROM experiments WHERE name = ?");
  s.bind_all(name);
  if (!s.step()) throw BadRequest{404, "experiment '" + name + "': no such experiment"};
  return s.column_int64(0);
}

Json counts(db::Connection& conn, int64_t experiment) {
  Json c = {{"queued", 0}, {"running", 0}, {"done", 0}, {"failed", 0}, {"pruned", 0}};
  db::Statement s = conn.prepare("SELECT status, n FROM experiment_counts WHERE experiment_id = ?");
  s.bind_all(experiment);
  int64_t total = 0;
  while (s.step()) {
    c[s.column_text(0)] = s.column_int64(1);
    total += s.column_int64(1);
  }
  c["total"] = total;
  return c;
}

int64_t seq_reached(db::Connection& conn) {
  db::Statement s = conn.prepare("SELECT seq FROM change_seq WHERE id = 1");
  return s.step() ? s.column_int64(0) : 0;
}

// The columns of a trial row, in this order, for every list of trials.
constexpr const char* kTrialColumns =
    "number, arch_key, status, attempt, fidelity, device, val_acc, test_acc, latency_ms, params, "
    "macs, train_seconds, queued_at, started_at, finished_at, error, seq";
const char* const kTrialNames[] = {
    "number",    "arch",       "status",      "attempt", "fidelity", "device",
    "val_acc",   "test_acc",   "latency_ms",  "params",  "macs",     "train_seconds",
    "queued_at", "started_at", "finished_at", "error",   "seq"};

Json trial_row(const db::Statement& s) {
  Json t = Json::object();
  for (int i = 0; i < 17; ++i) t[kTrialNames[i]] = column(s, i);
  return t;
}

Json list_experiments(db::Connection& conn) {
  Json out = Json::array();
  db::Statement s = conn.prepare(
      "SELECT id, name, status, space, strategy, dataset, created_at, seconds_run FROM "
      "experiments ORDER BY id LIMIT 1000");
  db::Statement best = conn.prepare(
      "SELECT val_acc FROM trials WHERE experiment_id = ? AND status = 'done' "
      "ORDER BY val_acc DESC LIMIT 1");
  while (s.step()) {
    const int64_t id = s.column_int64(0);
    best.reset();
    best.bind_all(id);
    out.push_back({{"name", s.column_text(1)},
                   {"status", s.column_text(2)},
                   {"space", s.column_text(3)},
                   {"strategy", s.column_text(4)},
                   {"data", s.column_text(5)},
                   {"created_at", s.column_double(6)},
                   {"seconds_run", s.column_double(7)},
                   {"counts", counts(conn, id)},
                   {"best_val_acc", best.step() ? column(best, 0) : Json()}});
  }
  return out;
}

// At most `n` points of a curve: the first, the last, and evenly spaced ones
// between (every point when there are no more than n).
template <class T>
std::vector<T> downsample(const std::vector<T>& v, size_t n) {
  if (v.size() <= n || n < 2) return v;
  std::vector<T> out;
  for (size_t i = 0; i < n; ++i) out.push_back(v[i * (v.size() - 1) / (n - 1)]);
  return out;
}

Json overview(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  db::Statement s = conn.prepare(
      "SELECT name, status, space, strategy, dataset, strategy_settings, objective, created_at, "
      "started_at, finished_at, seconds_run, budget_trials, budget_seconds, run_started_at FROM "
      "experiments WHERE id = ?");
  s.bind_all(id);
  s.step();
  Json o = {{"name", s.column_text(0)},
            {"status", s.column_text(1)},
            {"space", s.column_text(2)},
            {"strategy", s.column_text(3)},
            {"data", s.column_text(4)},
            {"strategy_settings", Json::parse(s.column_text(5), nullptr, false)},
            {"objective", s.column_text(6)},
            {"created_at", column(s, 7)},
            {"started_at", column(s, 8)},
            {"finished_at", column(s, 9)},
            {"seconds_run", s.column_double(10)},
            {"counts", counts(conn, id)}};
  // Budget used: trials created of those the latest run may create; seconds
  // of all runs, the one going on included, of its wall-clock budget.
  double seconds_used = s.column_double(10);
  if (o["status"] == "running" && s.column_type(13) != db::ColumnType::Null)
    seconds_used += std::max(0.0, unix_now() - s.column_double(13));
  o["budget"] = {{"trials", column(s, 11)},
                 {"trials_used", o["counts"]["total"]},
                 {"seconds", column(s, 12)},
                 {"seconds_used", seconds_used}};
  const auto top = db::top_k(conn, id, db::Metric::val_acc, 1);
  o["best"] = top.empty() ? Json()
                          : Json{{"number", top[0].number},
                                 {"arch", top[0].arch_key},
                                 {"val_acc", opt(top[0].val_acc)}};
  // The curve kept on write (migration 7), one row per improvement; seconds
  // count from the experiment's first start.
  const double origin =
      s.column_type(8) == db::ColumnType::Null ? s.column_double(7) : s.column_double(8);
  db::Statement b = conn.prepare(
      "SELECT finished, finished_at, val_acc, number FROM best_so_far WHERE experiment_id = ? "
      "ORDER BY finished");
  b.bind_all(id);
  struct Point {
    int64_t trials;
    double seconds, best;
    int64_t number;
  };
  std::vector<Point> points;
  while (b.step())
    points.push_back(
        {b.column_int64(0), b.column_double(1) - origin, b.column_double(2), b.column_int64(3)});
  Json curve = Json::array();
  for (const auto& pt : downsample(points, 500))
    curve.push_back(
        {{"trials", pt.trials}, {"seconds", pt.seconds}, {"best", pt.best}, {"number", pt.number}});
  o["best_so_far"] = curve;
  // Where the time axis ends: now for a running experiment, else when it last stopped.
  o["elapsed"] = s.column_type(8) == db::ColumnType::Null ? 0.0  // never started
                 : o["status"] == "running" || s.column_type(9) == db::ColumnType::Null
                     ? std::max(0.0, unix_now() - origin)
                     : s.column_double(9) - origin;
  o["seq"] = seq_reached(conn);
  return o;
}

Json list_trials(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  const std::string sort = param(p, "sort").empty() ? "number" : param(p, "sort");
  if (sort != "number" && sort != "val_acc" && sort != "finished_at" && sort != "seq")
    throw BadRequest{400, "sort: '" + sort + "' is not number, val_acc, finished_at or seq"};
  const std::string order =
      param(p, "order").empty() ? (sort == "val_acc" ? "desc" : "asc") : param(p, "order");
  if (order != "asc" && order != "desc")
    throw BadRequest{400, "order: '" + order + "' is not asc or desc"};
  const std::string& status = param(p, "status");
  if (!status.empty() && status != "queued" && status != "running" && status != "done" &&
      status != "failed" && status != "pruned")
    throw BadRequest{400,
                     "status: '" + status + "' is not queued, running, done, failed or pruned"};
  const int64_t limit = integer(p, "limit", 100, 1, 500);
  // The cursor: "NUMBER" for sort=number, else "VALUE,NUMBER".
  std::optional<double> after_value;
  std::optional<int64_t> after_number;
  if (const std::string& a = param(p, "after"); !a.empty()) {
    const size_t comma = a.find(',');
    try {
      size_t used = 0;
      if (sort == "number") {
        if (comma != std::string::npos) throw std::invalid_argument("comma");
        after_number = std::stoll(a, &used);
        if (used != a.size()) throw std::invalid_argument("trailing");
      } else {
        if (comma == std::string::npos) throw std::invalid_argument("no comma");
        after_value = std::stod(a.substr(0, comma), &used);
        if (used != comma || !std::isfinite(*after_value)) throw std::invalid_argument("value");
        const std::string n = a.substr(comma + 1);
        after_number = std::stoll(n, &used);
        if (used != n.size()) throw std::invalid_argument("number");
      }
    } catch (const std::exception&) {
      throw BadRequest{400, "after: '" + a + "' is not a cursor this endpoint gave (" +
                                (sort == "number" ? std::string("NUMBER") : "VALUE,NUMBER") + ")"};
    }
  }
  const std::string col = sort == "number" ? "number" : sort;
  const bool desc = order == "desc";
  std::string sql =
      std::string("SELECT ") + kTrialColumns + " FROM trials WHERE experiment_id = ?1";
  if (sort == "val_acc") sql += " AND status = 'done'";
  if (sort == "finished_at") sql += " AND finished_at IS NOT NULL";
  if (!status.empty()) sql += " AND status = ?2";
  const char* lt = desc ? "<" : ">";
  if (after_number) {
    if (sort == "number")
      sql += std::string(" AND number ") + lt + " ?4";
    else
      sql += " AND (" + col + " " + lt + " ?3 OR (" + col + " = ?3 AND number " + lt + " ?4))";
  }
  sql += " ORDER BY " +
         (sort == "number" ? std::string("number") : col + (desc ? " DESC" : "") + ", number") +
         (desc ? " DESC" : "") + " LIMIT ?5";
  db::Statement s = conn.prepare(sql);
  s.bind(1, id);
  if (!status.empty()) s.bind(2, status);
  if (after_value) s.bind(3, *after_value);
  if (after_number) s.bind(4, *after_number);
  s.bind(5, limit + 1);
  Json rows = Json::array();
  Json next;
  while (s.step()) {
    if (static_cast<int64_t>(rows.size()) == limit) {
      const Json& last = rows.back();
      next = sort == "number" ? std::to_string(last["number"].get<int64_t>())
                              : last[sort == "number" ? "number" : sort].dump() + "," +
                                    std::to_string(last["number"].get<int64_t>());
      break;
    }
    rows.push_back(trial_row(s));
  }
  return {{"trials", rows}, {"next", next}};
}

// The experiment's space, parsed once per thread and space document.
std::shared_ptr<const Space> space_of(db::Connection& conn, int64_t experiment) {
  db::Statement s = conn.prepare("SELECT space_json, name FROM experiments WHERE id = ?");
  s.bind_all(experiment);
  if (!s.step()) return nullptr;
  const std::string text = s.column_text(0);
  thread_local std::map<std::string, std::shared_ptr<const Space>> cache;
  if (auto it = cache.find(text); it != cache.end()) return it->second;
  auto space = std::make_shared<const Space>(
      Space::parse(text, "the space of experiment '" + s.column_text(1) + "'"));
  if (cache.size() >= 16) cache.clear();
  cache.emplace(text, space);
  return space;
}

// An architecture's decisions and a summary of the network it lowers to: its
// blocks (layers grouped by the first part of their names: stem, stage1, ...,
// head) with their layers, parameters, MACs, output shape and operations.
Json graph_summary(const Space& space, const std::string& key) {
  const Arch arch = space.parse_key(key);
  Json decisions = Json::array();
  for (size_t d = 0; d < space.decisions().size(); ++d)
    decisions.push_back({{"name", space.decisions()[d].name},
                         {"option", space.decisions()[d].label(arch.choice[d])}});
  const LayerGraph g = space.lower(arch);
  Json blocks = Json::array();
  for (const Layer& l : g.layers()) {
    if (l.op == Op::Input) continue;
    const std::string block = l.name.substr(0, l.name.find('.'));
    if (blocks.empty() || blocks.back()["name"] != block)
      blocks.push_back({{"name", block},
                        {"layers", 0},
                        {"params", 0},
                        {"macs", 0},
                        {"output", ""},
                        {"ops", Json::object()}});
    Json& b = blocks.back();
    b["layers"] = b["layers"].get<int64_t>() + 1;
    b["params"] = b["params"].get<int64_t>() + l.params;
    b["macs"] = b["macs"].get<int64_t>() + l.macs;
    b["output"] = to_string(l.shape);
    Json& ops = b["ops"];
    const std::string op = op_name(l.op);
    ops[op] = ops.contains(op) ? ops[op].get<int64_t>() + 1 : 1;
  }
  return {{"decisions", decisions}, {"input", to_string(g.input_shape())},
          {"classes", g.classes()}, {"layers", g.size() - 1},
          {"params", g.params()},   {"macs", g.macs()},
          {"blocks", blocks}};
}

Json trial_view(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  if (param(p, "number").empty()) throw BadRequest{400, "number: required (a trial's number)"};
  const int64_t number = integer(p, "number", 0, 0, INT64_MAX);
  const int64_t points = integer(p, "points", 200, 2, 1000);
  db::TrialDetail d;
  try {
    d = db::trial(conn, id, number);
  } catch (const Error& e) {
    throw BadRequest{404, e.what()};
  }
  const db::TrialRow& t = d.trial;
  Json graph;
  try {
    if (auto space = space_of(conn, id)) graph = graph_summary(*space, t.arch_key);
  } catch (const Error& e) {
    graph = {{"error", e.what()}};  // a space this build cannot read: the rest still answers
  }
  Json curve = Json::array();
  for (const auto& e : downsample(d.curve, static_cast<size_t>(points)))
    curve.push_back({{"epoch", e.epoch},
                     {"train_loss", opt(e.train_loss)},
                     {"train_acc", opt(e.train_acc)},
                     {"val_acc", opt(e.val_acc)},
                     {"lr", opt(e.lr)},
                     {"seconds", opt(e.seconds)}});
  Json lineage = Json::array();
  for (const auto& l : d.lineage)
    lineage.push_back({{"experiment", l.experiment},
                       {"number", l.number},
                       {"arch", l.arch_key},
                       {"status", l.status},
                       {"val_acc", opt(l.val_acc)},
                       {"mutation", opt(l.mutation)}});
  return {{"number", t.number},
          {"arch", t.arch_key},
          {"status", t.status},
          {"attempt", t.attempt},
          {"fidelity", t.fidelity},
          {"worker", opt(t.worker)},
          {"device", opt(t.device)},
          {"val_acc", opt(t.val_acc)},
          {"test_acc", opt(t.test_acc)},
          {"latency_ms", opt(t.latency_ms)},
          {"params", opt(t.params)},
          {"macs", opt(t.macs)},
          {"train_seconds", opt(t.train_seconds)},
          {"queued_at", t.queued_at},
          {"started_at", opt(t.started_at)},
          {"finished_at", opt(t.finished_at)},
          {"parent", opt(t.parent_number)},
          {"mutation", opt(t.mutation)},
          {"error", opt(t.error)},
          {"curve", curve},
          {"epochs", d.curve.size()},
          {"lineage", lineage},
          {"children", d.children},
          {"graph", graph},
          {"seq", seq_reached(conn)}};
}

Json changes(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  if (param(p, "since").empty())
    throw BadRequest{400, "since: required (a change number, 0 for all)"};
  const int64_t since = integer(p, "since", 0, 0, INT64_MAX);
  const int64_t limit = integer(p, "limit", 500, 1, 500);
  db::Statement s = conn.prepare(std::string("SELECT ") + kTrialColumns +
                                 " FROM trials WHERE experiment_id = ? AND seq > ? ORDER BY seq "
                                 "LIMIT ?");
  s.bind_all(id, since, limit);
  Json rows = Json::array();
  int64_t last = since;
  while (s.step()) {
    rows.push_back(trial_row(s));
    last = rows.back()["seq"].get<int64_t>();
  }
  // More may wait past a full page: the client asks again from `seq`.
  return {{"trials", rows},
          {"seq", last},
          {"more", static_cast<int64_t>(rows.size()) == limit},
          {"counts", counts(conn, id)}};
}

Json pareto_view(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  const std::string& x = param(p, "x").empty() ? std::string("params") : param(p, "x");
  if (x != "latency_ms" && x != "params" && x != "macs")
    throw BadRequest{400, "x: '" + x + "' is not latency_ms, params or macs"};
  const db::Metric m = db::parse_metric(x);
  Json front = Json::array();
  for (const auto& t : db::pareto(conn, id, m))
    front.push_back({{"number", t.number},
                     {"arch", t.arch_key},
                     {"val_acc", opt(t.val_acc)},
                     {x, opt(t.value(m))}});
  // The scatter: up to 2,000 of the done trials with both values.
  db::Statement n =
      conn.prepare("SELECT count(*) FROM trials WHERE experiment_id = ? AND status = 'done' AND " +
                   x + " IS NOT NULL");
  n.bind_all(id);
  n.step();
  const int64_t total = n.column_int64(0);
  const int64_t step = std::max<int64_t>(1, (total + 1999) / 2000);
  // In the order of the covering index of done trials (by accuracy): every
  // k-th is an even sample over the accuracies.
  db::Statement s = conn.prepare("SELECT number, val_acc, " + x +
                                 " FROM trials INDEXED BY trials_done WHERE experiment_id = ? AND "
                                 "status = 'done' AND " +
                                 x + " IS NOT NULL");
  s.bind_all(id);
  Json points = Json::array();
  for (int64_t i = 0; s.step(); ++i)
    if (i % step == 0)
      points.push_back(
          {{"number", s.column_int64(0)}, {"val_acc", column(s, 1)}, {x, column(s, 2)}});
  return {{"x", x}, {"front", front}, {"points", points}, {"done_with_x", total}};
}

Json list_failures(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  const int64_t limit = integer(p, "limit", 100, 1, 500);
  db::Statement s = conn.prepare(
      "SELECT t.number, t.arch_key, t.attempt, w.name, t.error, t.finished_at FROM trials t "
      "LEFT JOIN workers w ON w.id = t.worker_id WHERE t.experiment_id = ? AND t.status = "
      "'failed' ORDER BY t.number DESC LIMIT ?");
  s.bind_all(id, limit);
  Json rows = Json::array();
  while (s.step())
    rows.push_back({{"number", s.column_int64(0)},
                    {"arch", s.column_text(1)},
                    {"attempt", s.column_int64(2)},
                    {"worker", column(s, 3)},
                    {"error", column(s, 4)},
                    {"finished_at", column(s, 5)}});
  return {{"failures", rows}, {"failed", counts(conn, id)["failed"]}};
}

Json list_workers(db::Connection& conn, const std::map<std::string, std::string>& p) {
  std::optional<int64_t> id;
  if (!param(p, "experiment").empty()) id = experiment_id(conn, p);
  Json rows = Json::array();
  const auto all = db::workers(conn, id);
  for (size_t i = 0; i < std::min<size_t>(all.size(), 1000); ++i) {
    const auto& w = all[i];
    rows.push_back({{"name", w.name},
                    {"host", w.host},
                    {"pool", w.pool},
                    {"tags", Json::parse(w.tags, nullptr, false)},
                    {"devices", Json::parse(w.devices, nullptr, false)},
                    {"first_seen", w.first_seen},
                    {"last_seen", w.last_seen},
                    {"connected_seconds", w.connected_seconds},
                    {"busy_seconds", w.busy_seconds},
                    {"utilization", opt(w.utilization)},
                    {"trials_done", w.trials_done}});
  }
  // What each is running now, from the running trials' devices.
  if (id) {
    db::Statement s = conn.prepare(
        "SELECT w.name, t.number, t.device, t.started_at FROM trials t JOIN workers w ON w.id = "
        "t.worker_id WHERE t.experiment_id = ? AND t.status = 'running' ORDER BY t.number LIMIT "
        "1000");
    s.bind_all(*id);
    while (s.step())
      for (auto& r : rows)
        if (r["name"] == s.column_text(0))
          r["running"].push_back({{"number", s.column_int64(1)},
                                  {"device", column(s, 2)},
                                  {"started_at", column(s, 3)}});
  }
  return {{"workers", rows}};
}

// The experiment's origin for time axes: its first start (its creation if it never ran).
double origin_of(db::Connection& conn, int64_t experiment) {
  db::Statement s =
      conn.prepare("SELECT coalesce(started_at, created_at) FROM experiments WHERE id = ?");
  s.bind_all(experiment);
  return s.step() ? s.column_double(0) : 0.0;
}

Json internals(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  const int64_t points = integer(p, "points", 500, 2, 1000);
  db::Statement name = conn.prepare("SELECT strategy FROM experiments WHERE id = ?");
  name.bind_all(id);
  name.step();
  const std::string strategy = name.column_text(0);
  const double origin = origin_of(conn, id);
  // About 100 ln(results) rows per experiment (the controller thins them out).
  db::Statement s = conn.prepare(
      "SELECT results, at, state FROM strategy_snapshots WHERE experiment_id = ? ORDER BY "
      "results LIMIT 100000");
  s.bind_all(id);
  struct Row {
    int64_t results;
    double seconds;
    std::string state;
  };
  std::vector<Row> rows;
  while (s.step())
    rows.push_back({s.column_int64(0), s.column_double(1) - origin, s.column_text(2)});
  Json out = Json::array();
  for (const auto& r : downsample(rows, static_cast<size_t>(points)))
    out.push_back({{"results", r.results},
                   {"seconds", r.seconds},
                   {"state", Json::parse(r.state, nullptr, false)}});
  return {{"strategy", strategy}, {"snapshots", out}, {"kept", rows.size()}};
}

// The pool over time: its state at `points` evenly spaced instants from the
// first sample to the last (an index seek each, however many samples there
// are), or every sample when there are fewer.
Json pool(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const int64_t id = experiment_id(conn, p);
  const int64_t points = integer(p, "points", 300, 2, 1000);
  const double origin = origin_of(conn, id);
  db::Statement range =
      conn.prepare("SELECT min(at), max(at) FROM pool_samples WHERE experiment_id = ?");
  range.bind_all(id);
  range.step();
  Json out = Json::array();
  if (range.column_type(0) == db::ColumnType::Null) return {{"samples", out}};
  const double first = range.column_double(0), last = range.column_double(1);
  db::Statement few = conn.prepare(
      "SELECT count(*) FROM (SELECT 1 FROM pool_samples WHERE experiment_id = ? LIMIT ?)");
  few.bind_all(id, points + 1);
  few.step();
  const bool all = few.column_int64(0) <= points;
  db::Statement every = conn.prepare(
      "SELECT at, workers, slots, busy, queued FROM pool_samples WHERE experiment_id = ? ORDER BY "
      "at");
  db::Statement at = conn.prepare(
      "SELECT at, workers, slots, busy, queued FROM pool_samples WHERE experiment_id = ? AND at "
      "<= ? ORDER BY at DESC LIMIT 1");
  auto add = [&](const db::Statement& r) {
    out.push_back({{"seconds", r.column_double(0) - origin},
                   {"workers", r.column_int64(1)},
                   {"slots", r.column_int64(2)},
                   {"busy", r.column_int64(3)},
                   {"queued", r.column_int64(4)}});
  };
  if (all) {
    every.bind_all(id);
    while (every.step()) add(every);
    return {{"samples", out}};
  }
  double previous = -1;
  for (int64_t i = 0; i < points; ++i) {
    const double t = i + 1 == points ? last : first + (last - first) * i / (points - 1);
    at.reset();
    at.bind_all(id, t);
    if (!at.step() || at.column_double(0) == previous) continue;
    previous = at.column_double(0);
    add(at);
  }
  return {{"samples", out}};
}

Json list_data_reports(db::Connection& conn, const std::map<std::string, std::string>& p) {
  const std::string& name = param(p, "experiment");
  db::Statement s = conn.prepare(
      name.empty() ? "SELECT experiment, location, usable, fingerprint, report, created_at FROM "
                     "data_reports ORDER BY id DESC LIMIT 50"
                   : "SELECT experiment, location, usable, fingerprint, report, created_at FROM "
                     "data_reports WHERE experiment = ?1 ORDER BY id DESC LIMIT 50");
  if (!name.empty()) s.bind(1, name);
  Json rows = Json::array();
  while (s.step())
    rows.push_back({{"experiment", s.column_text(0)},
                    {"location", s.column_text(1)},
                    {"usable", s.column_int64(2) != 0},
                    {"fingerprint", Json::parse(s.column_text(3), nullptr, false)},
                    {"report", Json::parse(s.column_text(4), nullptr, false)},
                    {"created_at", s.column_double(5)}});
  return {{"data_reports", rows}};
}

}  // namespace

ApiResponse handle_api(db::Connection& conn, const std::string& path,
                       const std::map<std::string, std::string>& params) {
  try {
    Json body;
    if (path == "/api/experiments")
      body = list_experiments(conn);
    else if (path == "/api/experiment")
      body = overview(conn, params);
    else if (path == "/api/trials")
      body = list_trials(conn, params);
    else if (path == "/api/trial")
      body = trial_view(conn, params);
    else if (path == "/api/changes")
      body = changes(conn, params);
    else if (path == "/api/pareto")
      body = pareto_view(conn, params);
    else if (path == "/api/failures")
      body = list_failures(conn, params);
    else if (path == "/api/workers")
      body = list_workers(conn, params);
    else if (path == "/api/internals")
      body = internals(conn, params);
    else if (path == "/api/pool")
      body = pool(conn, params);
    else if (path == "/api/data_reports")
      body = list_data_reports(conn, params);
    else
      return {404, Json{{"error", path + ": no such endpoint"}}.dump()};
    return {200, body.dump()};
  } catch (const BadRequest& b) {
    return {b.status, Json{{"error", b.message}}.dump()};
  }
}

}  // namespace minas::dashboard
