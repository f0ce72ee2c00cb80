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
#include "db/live_queries.h"
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

BadRequest no_such_experiment(const Params& p) {
  return {404, "experiment " + quote(p.text("experiment")) + ": no such experiment"};
}

int64_t experiment_id(db::Connection& conn, const Params& p) {
  const std::optional<int64_t> id = db::experiment_id(conn, p.text("experiment"));
  if (!id) throw no_such_experiment(p);
  return *id;
}

// The experiment the request names, with its run.
db::ExperimentDetail experiment_of(db::Connection& conn, const Params& p) {
  std::optional<db::ExperimentDetail> d = db::experiment_detail(conn, experiment_id(conn, p));
  if (!d) throw no_such_experiment(p);
  return std::move(*d);
}

Json counts(const db::StatusCounts& c) {
  return {{"queued", c.queued}, {"running", c.running}, {"done", c.done},
          {"failed", c.failed}, {"pruned", c.pruned},   {"total", c.total()}};
}

// A pruned trial's rung and the accuracy that cut it; null for the others.
Json prune_cut_json(db::Connection& conn, const db::TrialRow& t) {
  const auto cut = db::prune_cut(conn, t);
  return cut ? Json{{"at", cut->at}, {"val_acc", cut->val_acc}} : Json();
}

// A trial as every list of trials shows it.
Json trial_row(db::Connection& conn, const db::TrialChange& c) {
  const db::TrialRow& t = c.trial;
  return {{"pruned_at", prune_cut_json(conn, t)},
          {"number", t.number},
          {"arch", t.arch_key},
          {"status", t.status},
          {"attempt", t.attempt},
          {"fidelity", t.fidelity},
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
          {"error", opt(t.error)},
          {"seq", c.seq}};
}

Json list_experiments(db::Connection& conn, const Params&, std::string&) {
  Json out = Json::array();
  for (const db::ExperimentDetail& d : db::experiment_details(conn, 1000)) {
    const db::ExperimentRow& r = d.row;
    out.push_back({{"name", r.name},
                   {"status", r.status},
                   {"space", r.space},
                   {"strategy", r.strategy},
                   {"data", r.dataset},
                   {"created_at", r.created_at},
                   {"seconds_run", d.seconds_run},
                   {"counts", counts(r.counts)},
                   {"best_val_acc", opt(r.best_val_acc)}});
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

// Which budget ends (or ended) the search: "trials" or "time", null when
// there is none, or when a search stopped before reaching either. A running
// search with both ends by the one its pace so far reaches first (a trial
// budget far beyond what the time allows is never the one).
Json ends_by(const db::ExperimentDetail& d, int64_t trials_used, double seconds_used) {
  const bool trials = d.budget_trials && *d.budget_trials > 0;
  const bool time = d.budget_seconds && *d.budget_seconds > 0;
  if (trials && trials_used >= *d.budget_trials) return "trials";
  if (time && seconds_used >= *d.budget_seconds) return "time";
  if (d.row.status != "running" || (!trials && !time)) return Json();
  if (!trials) return "time";
  if (!time) return "trials";
  if (seconds_used <= 0) return "time";  // no pace yet
  const double pace = static_cast<double>(trials_used) / seconds_used;  // trials per second
  return pace * *d.budget_seconds >= static_cast<double>(*d.budget_trials) ? "trials" : "time";
}

Json overview(db::Connection& conn, const Params& p, std::string& fault) {
  const db::ExperimentDetail d = experiment_of(conn, p);
  const int64_t id = d.row.id;
  const db::ExperimentRow& r = d.row;
  Json o = {{"name", r.name},
            {"status", r.status},
            {"space", r.space},
            {"strategy", r.strategy},
            {"data", r.dataset},
            {"strategy_settings", stored_json(d.strategy_settings)},
            {"objective", d.objective},
            {"created_at", r.created_at},
            {"started_at", opt(d.started_at)},
            {"finished_at", opt(d.finished_at)},
            {"seconds_run", d.seconds_run},
            {"counts", counts(r.counts)}};
  // Budget used: trials created of those the latest run may create; seconds
  // of all runs, the one going on included, of its wall-clock budget.
  double seconds_used = d.seconds_run;
  if (r.status == "running" && d.run_started_at)
    seconds_used += std::max(0.0, unix_now() - *d.run_started_at);
  o["budget"] = {{"trials", opt(d.budget_trials)},
                 {"trials_used", r.counts.total()},
                 {"seconds", opt(d.budget_seconds)},
                 {"seconds_used", seconds_used},
                 {"ends_by", ends_by(d, r.counts.total(), seconds_used)}};
  const auto top = db::top_k(conn, id, db::Metric::val_acc, 1);
  o["best"] = top.empty() ? Json()
                          : Json{{"number", top[0].number},
                                 {"arch", top[0].arch_key},
                                 {"val_acc", opt(top[0].val_acc)}};
  // The curve kept on write (migration 7), one row per improvement; seconds
  // count from the experiment's first start.
  const double origin = d.origin();
  Json curve = Json::array();
  for (const auto& b : downsample(db::kept_best_so_far(conn, id), 500))
    curve.push_back({{"trials", b.finished},
                     {"seconds", b.finished_at - origin},
                     {"best", b.val_acc},
                     {"number", b.number}});
  o["best_so_far"] = curve;
  // Where the time axis ends: now for a running experiment, else when it last stopped.
  o["elapsed"] = !d.started_at                             ? 0.0  // never started
                 : r.status == "running" || !d.finished_at ? std::max(0.0, unix_now() - origin)
                                                           : *d.finished_at - origin;
  o["seq"] = db::change_seq(conn);
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
  db::TrialPageQuery q;
  q.sort = sort == "val_acc"       ? db::TrialSort::val_acc
           : sort == "finished_at" ? db::TrialSort::finished_at
           : sort == "seq"         ? db::TrialSort::seq
                                   : db::TrialSort::number;
  q.descending = order == "desc";
  if (!status.empty()) q.status = status;
  q.after_value = after_value;
  q.after_number = after_number;
  q.limit = limit;
  const db::TrialPage page = db::trial_page(conn, id, q);
  Json rows = Json::array();
  for (const auto& t : page.rows) rows.push_back(trial_row(conn, t));
  Json next;
  if (page.more) {
    const Json& last = rows.back();
    next = sort == "number"
               ? std::to_string(last["number"].get<int64_t>())
               : last[sort].dump() + "," + std::to_string(last["number"].get<int64_t>());
  }
  return {{"trials", rows}, {"next", next}};
}

// The experiment's space, parsed once per thread and space document; `name`
// is the experiment's, for errors.
std::shared_ptr<const Space> space_of(db::Connection& conn, int64_t experiment,
                                      const std::string& name) {
  const std::optional<std::string> text = db::space_json(conn, experiment);
  if (!text) return nullptr;
  thread_local std::map<std::string, std::shared_ptr<const Space>> cache;
  if (auto it = cache.find(*text); it != cache.end()) return it->second;
  auto space =
      std::make_shared<const Space>(Space::parse(*text, "the space of experiment '" + name + "'"));
  if (cache.size() >= 16) cache.clear();
  cache.emplace(*text, space);
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
  const std::optional<db::TrialDetail> found = db::find_trial(conn, id, number);
  if (!found)
    throw BadRequest{404, "trial " + std::to_string(number) + " of experiment " +
                              quote(p.text("experiment")) + ": no such trial"};
  const db::TrialDetail& d = *found;
  const db::TrialRow& t = d.trial;
  Json graph;
  try {
    if (auto space = space_of(conn, id, p.text("experiment")))
      graph = graph_summary(*space, t.arch_key);
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
          {"pruned_at", prune_cut_json(conn, t)},
          {"curve", curve},
          {"epochs", d.curve.size()},
          {"lineage", lineage},
          {"children", d.children},
          {"graph", graph},
          {"seq", db::change_seq(conn)}};
}

Json changes(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t since = p.integer("since", 0);
  const int64_t limit = p.integer("limit", 500);
  Json rows = Json::array();
  int64_t last = since;
  for (const auto& t : db::changes_since(conn, id, since, limit)) {
    rows.push_back(trial_row(conn, t));
    last = t.seq;
  }
  // More may wait past a full page: the client asks again from `seq`.
  return {{"trials", rows},
          {"seq", last},
          {"more", static_cast<int64_t>(rows.size()) == limit},
          {"counts", counts(db::status_counts(conn, id))}};
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
  // The scatter: up to 2,000 of the done trials with x, evenly over the accuracies.
  const db::Scatter scatter = db::done_scatter(conn, id, m, 2000);
  // params and macs are counts: the points give them as integers.
  const bool count = m == db::Metric::params || m == db::Metric::macs;
  Json points = Json::array();
  for (const auto& pt : scatter.points)
    points.push_back({{"number", pt.number},
                      {"val_acc", opt(pt.val_acc)},
                      {x, count ? Json(static_cast<int64_t>(pt.x)) : Json(pt.x)}});
  return {{"x", x}, {"front", front}, {"points", points}, {"done_with_x", scatter.total}};
}

Json list_failures(db::Connection& conn, const Params& p, std::string& fault) {
  const int64_t id = experiment_id(conn, p);
  const int64_t limit = p.integer("limit", 100);
  Json rows = Json::array();
  for (const auto& f : db::failures(conn, id, limit).rows)
    rows.push_back({{"number", f.number},
                    {"arch", f.arch_key},
                    {"attempt", f.attempt},
                    {"worker", opt(f.worker)},
                    {"error", opt(f.error)},
                    {"finished_at", opt(f.finished_at)}});
  return {{"failures", rows}, {"failed", db::status_counts(conn, id).failed}};
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
    db::TrialPageQuery running;
    running.status = "running";
    running.limit = 1000;
    for (const auto& c : db::trial_page(conn, *id, running).rows)
      for (auto& r : rows)
        if (c.trial.worker && r["name"] == *c.trial.worker)
          r["running"].push_back({{"number", c.trial.number},
                                  {"device", opt(c.trial.device)},
                                  {"started_at", opt(c.trial.started_at)}});
  }
  return {{"workers", rows}};
}

Json internals(db::Connection& conn, const Params& p, std::string& fault) {
  const db::ExperimentDetail d = experiment_of(conn, p);
  const int64_t points = p.integer("points", 500);
  // Seconds from the experiment's first start (its creation if it never ran).
  const double origin = d.origin();
  // About 100 ln(results) rows per experiment (the controller thins them out).
  const std::vector<db::StrategySnapshot> rows = db::strategy_snapshots(conn, d.row.id, 100000);
  Json out = Json::array();
  for (const auto& r : downsample(rows, static_cast<size_t>(points)))
    out.push_back(
        {{"results", r.results}, {"seconds", r.at - origin}, {"state", stored_json(r.state)}});
  return {{"strategy", d.row.strategy}, {"snapshots", out}, {"kept", rows.size()}};
}

// The pool over time: its state at `points` evenly spaced instants from the
// first sample to the last (an index seek each, however many samples there
// are), or every sample when there are fewer.
Json pool(db::Connection& conn, const Params& p, std::string& fault) {
  const db::ExperimentDetail d = experiment_of(conn, p);
  const int64_t points = p.integer("points", 300);
  const double origin = d.origin();  // as the internals' seconds
  Json out = Json::array();
  for (const db::PoolSample& s : db::pool_over_time(conn, d.row.id, points))
    out.push_back({{"seconds", s.at - origin},
                   {"workers", s.workers},
                   {"slots", s.slots},
                   {"busy", s.busy},
                   {"queued", s.queued}});
  return {{"samples", out}};
}

Json list_data_reports(db::Connection& conn, const Params& p, std::string& fault) {
  std::optional<std::string> name;
  if (p.has("experiment")) name = p.text("experiment");
  Json rows = Json::array();
  for (const auto& r : db::data_report_rows(conn, name, 50))
    rows.push_back({{"experiment", r.experiment},
                    {"location", r.location},
                    {"usable", r.usable},
                    {"fingerprint", stored_json(r.fingerprint)},
                    {"report", stored_json(r.report)},
                    {"created_at", r.created_at}});
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
