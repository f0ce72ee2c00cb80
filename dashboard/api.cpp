#include "dashboard/api.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dashboard/request.h"
#include "db/queries.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
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

// A value from the request, quoted for a message: escaped and cut short.
std::string quote(std::string_view value) {
  return "'" + printable_excerpt(value, 40) + "'";
}

// The parameters of a request after the endpoint's table has checked them:
// each named in the table, of its kind and within its bounds. An empty value
// is taken as absent (the page's forms send empty fields).
class Params {
 public:
  bool has(const std::string& name) const { return text_.count(name) > 0; }
  // The value, or "" when absent.
  const std::string& text(const std::string& name) const {
    static const std::string empty;
    const auto it = text_.find(name);
    return it == text_.end() ? empty : it->second;
  }
  int64_t integer(const std::string& name, int64_t fallback) const {
    const auto it = ints_.find(name);
    return it == ints_.end() ? fallback : it->second;
  }
  void set(const std::string& name, const std::string& value) { text_[name] = value; }
  void set_integer(const std::string& name, int64_t value) { ints_[name] = value; }

 private:
  std::map<std::string, std::string> text_;
  std::map<std::string, int64_t> ints_;
};

enum class Kind {
  Name,     // text: an experiment's name, valid UTF-8 without control characters
  Choice,   // one of `choices`
  Integer,  // a decimal integer in [lo, hi]
  Cursor,   // text an earlier answer gave (`next`); its form is checked by the endpoint
};

// One parameter of an endpoint: the single description its checks and
// messages come from.
struct ParamSpec {
  const char* name;
  Kind kind;
  bool required = false;
  const char* what = "";  // said when a required one is missing
  std::vector<std::string_view> choices = {};
  int64_t lo = 0, hi = 0;
};

constexpr size_t kMaxNameValue = 256;   // an experiment's name
constexpr size_t kMaxCursorValue = 64;  // "VALUE,NUMBER"

struct Endpoint {
  std::string_view path;
  // The answer; `fault` gets what the server should log about data it could
  // not read (the answer says so without the details).
  Json (*answer)(db::Connection&, const Params&, std::string& fault);
  std::vector<ParamSpec> params;
};

std::string one_of(const std::vector<std::string_view>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i)
    out += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(choices[i]);
  return out;
}

void check_text(const ParamSpec& spec, const std::string& value, size_t max_bytes) {
  const std::string name = spec.name;
  if (value.size() > max_bytes)
    throw BadRequest{400, name + ": longer than " + std::to_string(max_bytes) + " bytes"};
  if (!valid_utf8(value)) throw BadRequest{400, name + ": not valid UTF-8"};
  if (!printable_utf8(value)) throw BadRequest{400, name + ": holds a control character"};
}

int64_t check_integer(const ParamSpec& spec, const std::string& value) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || end != value.data() + value.size() || v < spec.lo || v > spec.hi)
    throw BadRequest{400, std::string(spec.name) + ": " + quote(value) + " is not an integer in [" +
                              std::to_string(spec.lo) + ", " + std::to_string(spec.hi) + "]"};
  return v;
}

Params check_params(const Endpoint& e, const std::map<std::string, std::string>& given) {
  Params p;
  for (const auto& [name, value] : given) {
    const auto spec = std::find_if(e.params.begin(), e.params.end(),
                                   [&](const ParamSpec& s) { return name == s.name; });
    if (spec == e.params.end()) {
      std::vector<std::string_view> names;
      for (const auto& s : e.params) names.push_back(s.name);
      throw BadRequest{400, "unknown parameter " + quote(name) + " (" + std::string(e.path) +
                                (names.empty() ? " takes none" : " takes " + one_of(names)) + ")"};
    }
    if (value.empty()) continue;
    switch (spec->kind) {
      case Kind::Name:
        check_text(*spec, value, kMaxNameValue);
        break;
      case Kind::Cursor:
        check_text(*spec, value, kMaxCursorValue);
        break;
      case Kind::Choice:
        if (std::find(spec->choices.begin(), spec->choices.end(), value) == spec->choices.end())
          throw BadRequest{400, name + ": " + quote(value) + " is not " + one_of(spec->choices)};
        break;
      case Kind::Integer:
        p.set_integer(name, check_integer(*spec, value));
        break;
    }
    p.set(name, value);
  }
  for (const auto& spec : e.params)
    if (spec.required && !p.has(spec.name))
      throw BadRequest{400, std::string(spec.name) + ": required (" + spec.what + ")"};
  return p;
}

// A JSON column of the store (a worker's tags and devices, a strategy's
// state, a data report) as a value of the answer; null when it cannot be read
// or is nested deeper than any minas writes (a peer could have put it there).
Json stored_json(const std::string& text) {
  try {
    return Json(read_json(text, "", {.max_depth = 32, .max_bytes = size_t{4} << 20}));
  } catch (const std::exception&) {
    return nullptr;
  }
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

int64_t experiment_id(db::Connection& conn, const Params& p) {
  const std::string& name = p.text("experiment");
  db::Statement s = conn.prepare("SELECT id FROM experiments WHERE name = ?");
  s.bind_all(name);
  if (!s.step()) throw BadRequest{404, "experiment " + quote(name) + ": no such experiment"};
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

Json list_experiments(db::Connection& conn, const Params&, std::string&) {
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

Json overview(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  db::Statement s = conn.prepare(
      "SELECT name, status, space, strategy, dataset, strategy_settings, objective, created_at, "
      "started_at, finished_at, seconds_run, budget_trials, budget_seconds, run_started_at FROM "
      "experiments WHERE id = ?");
  s.bind_all(id);
  s.step();
  Json o = {
      {"name", s.column_text(0)},           {"status", s.column_text(1)},
      {"space", s.column_text(2)},          {"strategy", s.column_text(3)},
      {"data", s.column_text(4)},           {"strategy_settings", stored_json(s.column_text(5))},
      {"objective", s.column_text(6)},      {"created_at", column(s, 7)},
      {"started_at", column(s, 8)},         {"finished_at", column(s, 9)},
      {"seconds_run", s.column_double(10)}, {"counts", counts(conn, id)}};
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

// The cursor of a page of trials: "NUMBER" when sorted by number, else
// "VALUE,NUMBER" (the sort column's value, a finite number).
bool parse_cursor(std::string_view text, bool number_only, std::optional<double>& value,
                  std::optional<int64_t>& number) {
  std::string_view rest = text;
  if (!number_only) {
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos) return false;
    double v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + comma, v);
    if (ec != std::errc() || end != text.data() + comma || !std::isfinite(v)) return false;
    value = v;
    rest = text.substr(comma + 1);
  }
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
  if (ec != std::errc() || end != rest.data() + rest.size()) return false;
  number = n;
  return true;
}

Json list_trials(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const std::string sort = p.has("sort") ? p.text("sort") : "number";
  const std::string order = p.has("order") ? p.text("order") : (sort == "val_acc" ? "desc" : "asc");
  const std::string& status = p.text("status");
  const int64_t limit = p.integer("limit", 100);
  // The cursor: "NUMBER" for sort=number, else "VALUE,NUMBER".
  std::optional<double> after_value;
  std::optional<int64_t> after_number;
  if (p.has("after") && !parse_cursor(p.text("after"), sort == "number", after_value, after_number))
    throw BadRequest{400, "after: " + quote(p.text("after")) +
                              " is not a cursor this endpoint gave (" +
                              (sort == "number" ? "NUMBER" : "VALUE,NUMBER") + ")"};
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

Json trial_view(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t number = p.integer("number", 0);
  const int64_t points = p.integer("points", 200);
  {
    db::Statement s = conn.prepare("SELECT 1 FROM trials WHERE experiment_id = ? AND number = ?");
    s.bind_all(id, number);
    if (!s.step())
      throw BadRequest{404, "trial " + std::to_string(number) + " of experiment " +
                                quote(p.text("experiment")) + ": no such trial"};
  }
  const db::TrialDetail d = db::trial(conn, id, number);
  const db::TrialRow& t = d.trial;
  Json graph;
  try {
    if (auto space = space_of(conn, id)) graph = graph_summary(*space, t.arch_key);
  } catch (const std::exception& e) {
    // A space or key this build cannot read: the rest still answers.
    graph = {{"error", "this build cannot lower the architecture in the experiment's space"}};
    fault = "trial " + std::to_string(number) + ": " + e.what();
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

Json changes(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t since = p.integer("since", 0);
  const int64_t limit = p.integer("limit", 500);
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

Json pareto_view(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const std::string x = p.has("x") ? p.text("x") : "params";
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

Json list_failures(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t limit = p.integer("limit", 100);
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

Json list_workers(db::Connection& conn, const Params& p, std::string& fault) {
  std::optional<int64_t> id;
  if (p.has("experiment")) id = experiment_id(conn, p);
  Json rows = Json::array();
  const auto all = db::workers(conn, id);
  for (size_t i = 0; i < std::min<size_t>(all.size(), 1000); ++i) {
    const auto& w = all[i];
    rows.push_back({{"name", w.name},
                    {"host", w.host},
                    {"pool", w.pool},
                    {"tags", stored_json(w.tags)},
                    {"devices", stored_json(w.devices)},
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

Json internals(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t points = p.integer("points", 500);
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
    out.push_back(
        {{"results", r.results}, {"seconds", r.seconds}, {"state", stored_json(r.state)}});
  return {{"strategy", strategy}, {"snapshots", out}, {"kept", rows.size()}};
}

// The pool over time: its state at `points` evenly spaced instants from the
// first sample to the last (an index seek each, however many samples there
// are), or every sample when there are fewer.
Json pool(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t points = p.integer("points", 300);
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

Json list_data_reports(db::Connection& conn, const Params& p, std::string& fault) {
  const std::string& name = p.text("experiment");
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
                    {"fingerprint", stored_json(s.column_text(3))},
                    {"report", stored_json(s.column_text(4))},
                    {"created_at", s.column_double(5)}});
  return {{"data_reports", rows}};
}

const std::vector<Endpoint>& endpoints() {
  const ParamSpec experiment{"experiment", Kind::Name, true, "an experiment's name"};
  const ParamSpec any_experiment{"experiment", Kind::Name};
  const ParamSpec points{"points", Kind::Integer, false, "", {}, 2, 1000};
  const ParamSpec limit{"limit", Kind::Integer, false, "", {}, 1, 500};
  static const std::vector<Endpoint> all = {
      {"/api/experiments", list_experiments, {}},
      {"/api/experiment", overview, {experiment}},
      {"/api/trials",
       list_trials,
       {experiment,
        {"sort", Kind::Choice, false, "", {"number", "val_acc", "finished_at", "seq"}},
        {"order", Kind::Choice, false, "", {"asc", "desc"}},
        {"status", Kind::Choice, false, "", {"queued", "running", "done", "failed", "pruned"}},
        {"after", Kind::Cursor},
        limit}},
      {"/api/trial",
       trial_view,
       {experiment, {"number", Kind::Integer, true, "a trial's number", {}, 0, INT64_MAX}, points}},
      {"/api/changes",
       changes,
       {experiment,
        {"since", Kind::Integer, true, "a change number, 0 for all", {}, 0, INT64_MAX},
        limit}},
      {"/api/pareto",
       pareto_view,
       {experiment, {"x", Kind::Choice, false, "", {"latency_ms", "params", "macs"}}}},
      {"/api/failures", list_failures, {experiment, limit}},
      {"/api/workers", list_workers, {any_experiment}},
      {"/api/internals", internals, {experiment, points}},
      {"/api/pool", pool, {experiment, points}},
      {"/api/data_reports", list_data_reports, {any_experiment}},
  };
  return all;
}

// SQLite's "the database is locked" and "busy": the writer held the store
// past the busy timeout; worth asking again.
bool store_busy(const std::exception& e) {
  const auto* s = dynamic_cast<const db::SqliteError*>(&e);
  return s && ((s->code() & 0xff) == 5 || (s->code() & 0xff) == 6);  // SQLITE_BUSY, SQLITE_LOCKED
}

}  // namespace

std::vector<EndpointInfo> api_endpoints() {
  std::vector<EndpointInfo> out;
  for (const Endpoint& e : endpoints()) {
    EndpointInfo info{std::string(e.path), {}};
    for (const ParamSpec& p : e.params) {
      static const char* const kinds[] = {"name", "choice", "integer", "cursor"};
      info.params.push_back({p.name, kinds[static_cast<int>(p.kind)], p.required});
    }
    out.push_back(std::move(info));
  }
  return out;
}

ApiResponse handle_api(db::Connection& conn, const std::string& path,
                       const std::map<std::string, std::string>& params) {
  const auto& all = endpoints();
  const auto e =
      std::find_if(all.begin(), all.end(), [&](const Endpoint& x) { return x.path == path; });
  if (e == all.end())
    return {404,
            error_body(quote(path) + ": no such endpoint (the API is listed in "
                                     "docs/dashboard.md)"),
            ""};
  ApiResponse r;
  try {
    const Params p = check_params(*e, params);
    r.body = json_text(e->answer(conn, p, r.fault));
    return r;
  } catch (const BadRequest& b) {
    return {b.status, error_body(b.message), ""};
  } catch (const std::exception& x) {
    // The store failed (locked past the timeout, unreadable, corrupt) or
    // this build did: the server says so in general terms and logs the rest.
    if (store_busy(x)) return {503, error_body("the store is busy; ask again"), x.what()};
    return {500, error_body("the server failed to answer; its log says why"), x.what()};
  }
}

}  // namespace minas::dashboard
