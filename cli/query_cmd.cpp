// `minas query ...` and `minas sql`: read an experiment store, read-only, while a search may
// be writing it. Every answer prints as an aligned table for people, or as CSV or JSON for
// programs. Tables show accuracies as percentages with 2 decimals and times as UTC; CSV and
// JSON carry the stored values unchanged (accuracies as fractions, times as Unix seconds).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "db/queries.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::cli {
namespace {

using Json = nlohmann::ordered_json;  // keeps the columns in table order

enum class Format { table, csv, json };

Format parse_format(const std::string& text) {
  if (text == "table") return Format::table;
  if (text == "csv") return Format::csv;
  if (text == "json") return Format::json;
  throw Error("--format", "unknown format '" + text + "' (formats: table, csv, json)");
}

// How a column's values read in a table; CSV and JSON ignore it, but for `json`, whose text
// is embedded in JSON output as the document it is.
enum class Kind { integer, real, accuracy, millis, seconds, time, ratio, text, json };

using Cell = std::variant<std::monostate, int64_t, double, std::string>;

struct Column {
  std::string name;
  Kind kind;
  bool in_table = true;  // false: too detailed for the table view, kept in CSV and JSON
};

struct Table {
  std::vector<Column> columns;
  std::vector<std::vector<Cell>> rows;
};

Cell cell(int64_t v) {
  return v;
}
Cell cell(double v) {
  return v;
}
Cell cell(const std::string& v) {
  return v;
}
template <class T>
Cell cell(const std::optional<T>& v) {
  if (!v) return std::monostate{};
  return cell(*v);
}

// The shortest text that reads back as the same double, in plain notation where that stays
// short (300000, not 3e+05), scientific beyond.
std::string shortest(double v) {
  char buf[64];
  const double magnitude = std::fabs(v);
  const bool plain = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16);
  const auto [end, ec] = plain ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                               : std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "nan";
}

std::string printf_double(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string utc_time(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(std::floor(unix_seconds));
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return shortest(unix_seconds);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// One line per row in a table: control characters would break the alignment
// (and escape sequences, written by a peer, would drive the terminal).
std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

std::string table_text(const Cell& c, Kind kind) {
  if (std::holds_alternative<std::monostate>(c)) return "-";
  if (const auto* s = std::get_if<std::string>(&c)) return one_line(*s);
  if (const auto* i = std::get_if<int64_t>(&c)) {
    if (kind != Kind::integer && kind != Kind::text && kind != Kind::real) {
      return table_text(Cell(static_cast<double>(*i)), kind);
    }
    return std::to_string(*i);
  }
  const double v = std::get<double>(c);
  if (std::isnan(v)) return "nan";
  switch (kind) {
    case Kind::accuracy:
      return printf_double("%.2f%%", 100 * v);
    case Kind::millis:
      return printf_double("%.3f", v);
    case Kind::seconds:
      return printf_double("%.1f", v);
    case Kind::time:
      return utc_time(v);
    case Kind::ratio:
      return printf_double("%.1f%%", 100 * v);
    case Kind::integer:
      return printf_double("%.0f", v);
    default:
      return shortest(v);
  }
}

// Display width: UTF-8 continuation bytes take no column.
size_t width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

bool right_aligned(Kind kind) {
  return kind != Kind::text && kind != Kind::json && kind != Kind::time;
}

// The aligned table, each line indented by `indent`.
std::string render_table(const Table& t, const std::string& indent = "") {
  std::vector<size_t> shown;
  for (size_t c = 0; c < t.columns.size(); ++c) {
    if (t.columns[c].in_table) shown.push_back(c);
  }
  std::vector<std::vector<std::string>> lines;
  std::vector<std::string> header;
  for (size_t c : shown) header.push_back(t.columns[c].name);
  lines.push_back(std::move(header));
  for (const auto& row : t.rows) {
    std::vector<std::string> line;
    for (size_t c : shown) line.push_back(table_text(row[c], t.columns[c].kind));
    lines.push_back(std::move(line));
  }
  std::vector<size_t> widths(shown.size(), 0);
  for (const auto& line : lines) {
    for (size_t i = 0; i < line.size(); ++i) widths[i] = std::max(widths[i], width(line[i]));
  }
  std::string out;
  for (const auto& line : lines) {
    std::string text = indent;
    for (size_t i = 0; i < line.size(); ++i) {
      const std::string pad(widths[i] - width(line[i]), ' ');
      const bool last = i + 1 == line.size();
      if (right_aligned(t.columns[shown[i]].kind)) {
        text += pad + line[i];
      } else {
        text += line[i];
        if (!last) text += pad;
      }
      if (!last) text += "  ";
    }
    out += text + '\n';
  }
  if (t.rows.empty()) out += indent + "(no rows)\n";
  return out;
}

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return "";
  if (const auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&c)) return shortest(*d);
  const std::string& s = std::get<std::string>(c);
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + '"';
}

std::string render_csv(const Table& t) {
  std::string out;
  for (size_t c = 0; c < t.columns.size(); ++c) {
    if (c) out += ',';
    out += csv_field(Cell(t.columns[c].name));
  }
  out += "\r\n";
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (c) out += ',';
      out += csv_field(row[c]);
    }
    out += "\r\n";
  }
  return out;
}

Json json_value(const Cell& c, Kind kind) {
  if (std::holds_alternative<std::monostate>(c)) return nullptr;
  if (const auto* i = std::get_if<int64_t>(&c)) return *i;
  if (const auto* d = std::get_if<double>(&c)) return *d;  // NaN becomes null
  const std::string& s = std::get<std::string>(c);
  // A stored document within read_json's limits is embedded as it is; one
  // nested past them (written by a hostile peer) stays text, so that writing
  // it cannot recurse 100,000 deep or indent it into gigabytes.
  if (kind == Kind::json && s.size() <= JsonLimits{}.max_bytes &&
      json_depth(s, JsonLimits{}.max_depth) <= JsonLimits{}.max_depth) {
    Json parsed = Json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) return parsed;
  }
  return s;
}

Json row_object(const Table& t, size_t r) {
  Json o = Json::object();
  for (size_t c = 0; c < t.columns.size(); ++c) {
    o[t.columns[c].name] = json_value(t.rows[r][c], t.columns[c].kind);
  }
  return o;
}

Json json_array(const Table& t) {
  Json a = Json::array();
  for (size_t r = 0; r < t.rows.size(); ++r) a.push_back(row_object(t, r));
  return a;
}

void write(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

void print(const Table& t, Format format) {
  switch (format) {
    case Format::table:
      write(render_table(t));
      break;
    case Format::csv:
      write(render_csv(t));
      break;
    case Format::json:
      // Stored text need not be UTF-8 (sql reads any column): replaced, not thrown.
      write(json_array(t).dump(2, ' ', false, Json::error_handler_t::replace) + '\n');
      break;
  }
}

// ---- What each query prints ------------------------------------------------------------

Kind metric_kind(db::Metric m) {
  switch (m) {
    case db::Metric::val_acc:
    case db::Metric::test_acc:
      return Kind::accuracy;
    case db::Metric::latency_ms:
      return Kind::millis;
    case db::Metric::params:
    case db::Metric::macs:
      return Kind::integer;
    case db::Metric::train_seconds:
      return Kind::seconds;
  }
  return Kind::real;
}

// Metrics lead so the table reads across; the long key goes last.
Table trial_table(const std::vector<db::TrialRow>& trials) {
  Table t;
  t.columns = {{"number", Kind::integer},
               {"val_acc", Kind::accuracy},
               {"test_acc", Kind::accuracy},
               {"latency_ms", Kind::millis},
               {"params", Kind::integer},
               {"macs", Kind::integer},
               {"train_seconds", Kind::seconds},
               {"fidelity", Kind::integer},
               {"attempt", Kind::integer, false},
               {"status", Kind::text, false},
               {"worker", Kind::text},
               {"device", Kind::text, false},
               {"queued_at", Kind::time, false},
               {"started_at", Kind::time, false},
               {"finished_at", Kind::time, false},
               {"parent", Kind::integer, false},
               {"mutation", Kind::text, false},
               {"error", Kind::text, false},
               {"arch_key", Kind::text}};
  for (const db::TrialRow& r : trials) {
    t.rows.push_back({cell(r.number), cell(r.val_acc), cell(r.test_acc), cell(r.latency_ms),
                      cell(r.params), cell(r.macs), cell(r.train_seconds), cell(r.fidelity),
                      cell(r.attempt), cell(r.status), cell(r.worker), cell(r.device),
                      cell(r.queued_at), cell(r.started_at), cell(r.finished_at),
                      cell(r.parent_number), cell(r.mutation), cell(r.error), cell(r.arch_key)});
  }
  return t;
}

Table experiments_table(const std::vector<db::ExperimentRow>& rows) {
  Table t;
  t.columns = {{"id", Kind::integer, false},
               {"name", Kind::text},
               {"space", Kind::text},
               {"dataset", Kind::text},
               {"dataset_fingerprint", Kind::text, false},
               {"strategy", Kind::text},
               {"status", Kind::text},
               {"created_at", Kind::time},
               {"trials", Kind::integer},
               {"queued", Kind::integer},
               {"running", Kind::integer},
               {"done", Kind::integer},
               {"failed", Kind::integer},
               {"pruned", Kind::integer},
               {"best_val_acc", Kind::accuracy}};
  for (const db::ExperimentRow& r : rows) {
    const db::StatusCounts& c = r.counts;
    t.rows.push_back({cell(r.id), cell(r.name), cell(r.space), cell(r.dataset),
                      cell(r.dataset_fingerprint), cell(r.strategy), cell(r.status),
                      cell(r.created_at), cell(c.total()), cell(c.queued), cell(c.running),
                      cell(c.done), cell(c.failed), cell(c.pruned), cell(r.best_val_acc)});
  }
  return t;
}

Table progress_table(const std::vector<db::ProgressPoint>& points, db::Metric metric) {
  Table t;
  const Kind kind = metric_kind(metric);
  t.columns = {{"trials", Kind::integer},
               {"seconds", Kind::seconds},
               {std::string(db::metric_name(metric)), kind},
               {"number", Kind::integer}};
  for (const db::ProgressPoint& p : points) {
    // params and macs are counts: print them as integers in every format.
    const Cell best =
        kind == Kind::integer ? Cell(static_cast<int64_t>(std::llround(p.best))) : Cell(p.best);
    t.rows.push_back({cell(p.trials), cell(p.seconds), best, cell(p.number)});
  }
  return t;
}

Table curve_table(const db::TrialDetail& d) {
  // With validations inside an epoch (ASHA's fractional rungs) the column
  // says where each point lies in epochs (0.25, 1, ...); else the epoch.
  const bool inside = std::any_of(d.curve.begin(), d.curve.end(),
                                  [](const db::EpochRow& e) { return e.at.has_value(); });
  Table t;
  t.columns = {{"number", Kind::integer, false},
               {"attempt", Kind::integer, false},
               {"epoch", inside ? Kind::real : Kind::integer},
               {"train_loss", Kind::real},
               {"train_acc", Kind::accuracy},
               {"val_acc", Kind::accuracy},
               {"lr", Kind::real},
               {"seconds", Kind::seconds}};
  for (const db::EpochRow& e : d.curve) {
    t.rows.push_back({cell(d.trial.number), cell(d.trial.attempt),
                      inside ? cell(e.epochs()) : cell(e.epoch), cell(e.train_loss),
                      cell(e.train_acc), cell(e.val_acc), cell(e.lr), cell(e.seconds)});
  }
  return t;
}

Table lineage_table(const db::TrialDetail& d) {
  Table t;
  t.columns = {{"experiment", Kind::text},  {"number", Kind::integer}, {"status", Kind::text},
               {"val_acc", Kind::accuracy}, {"mutation", Kind::text},  {"arch_key", Kind::text}};
  for (const db::LineageStep& s : d.lineage) {
    t.rows.push_back({cell(s.experiment), cell(s.number), cell(s.status), cell(s.val_acc),
                      cell(s.mutation), cell(s.arch_key)});
  }
  return t;
}

Table failures_table(const db::Failures& f) {
  Table t;
  t.columns = {{"number", Kind::integer},   {"attempt", Kind::integer}, {"worker", Kind::text},
               {"finished_at", Kind::time}, {"error", Kind::text},      {"arch_key", Kind::text}};
  for (const db::FailureRow& r : f.rows) {
    t.rows.push_back({cell(r.number), cell(r.attempt), cell(r.worker), cell(r.finished_at),
                      cell(r.error), cell(r.arch_key)});
  }
  return t;
}

Table workers_table(const std::vector<db::WorkerRow>& rows) {
  Table t;
  t.columns = {{"name", Kind::text},
               {"host", Kind::text},
               {"devices", Kind::json},
               {"first_seen", Kind::time},
               {"last_seen", Kind::time},
               {"connected_seconds", Kind::seconds},
               {"busy_seconds", Kind::seconds},
               {"utilization", Kind::ratio},
               {"trials_done", Kind::integer}};
  for (const db::WorkerRow& r : rows) {
    t.rows.push_back({cell(r.name), cell(r.host), cell(r.devices), cell(r.first_seen),
                      cell(r.last_seen), cell(r.connected_seconds), cell(r.busy_seconds),
                      cell(r.utilization), cell(r.trials_done)});
  }
  return t;
}

Table screening_table(const std::vector<db::ScreeningRow>& rows, int64_t k) {
  Table t;
  t.columns = {{"evaluator", Kind::text}, {"score", Kind::real}, {"seconds", Kind::real},
               {"worker", Kind::text},    {"at", Kind::time},    {"error", Kind::text},
               {"arch_key", Kind::text}};
  std::map<std::string, int64_t> shown;  // per evaluator
  for (const db::ScreeningRow& r : rows) {
    if (++shown[r.evaluator] > k) continue;
    t.rows.push_back({cell(r.evaluator), cell(r.score), cell(r.seconds), cell(r.worker), cell(r.at),
                      cell(r.error), cell(r.arch_key)});
  }
  return t;
}

Table sql_table(const db::SqlResult& result) {
  Table t;
  // A column of text only (NULLs aside) reads left-aligned, any other right-aligned.
  for (size_t c = 0; c < result.columns.size(); ++c) {
    bool text = false, other = false;
    for (const auto& row : result.rows) {
      if (std::holds_alternative<std::string>(row[c])) text = true;
      if (std::holds_alternative<int64_t>(row[c]) || std::holds_alternative<double>(row[c])) {
        other = true;
      }
    }
    t.columns.push_back({result.columns[c], text && !other ? Kind::text : Kind::real});
  }
  for (const auto& values : result.rows) {
    std::vector<Cell> row;
    for (const db::SqlValue& v : values) {
      if (const auto* blob = std::get_if<std::vector<std::byte>>(&v)) {
        // A blob prints as the SQL literal that would produce it.
        static constexpr char kHex[] = "0123456789abcdef";
        std::string text = "x'";
        for (std::byte b : *blob) {
          text += kHex[std::to_integer<unsigned>(b) >> 4];
          text += kHex[std::to_integer<unsigned>(b) & 15];
        }
        row.push_back(text + "'");
      } else {
        std::visit(
            [&](const auto& x) {
              using V = std::decay_t<decltype(x)>;
              if constexpr (!std::is_same_v<V, std::vector<std::byte>>) row.push_back(x);
            },
            v);
      }
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

// A trial in a table: its fields one per line, then its curve, lineage and children.
void print_trial(const db::TrialDetail& d, const std::string& experiment, Format format) {
  const Table row = trial_table({d.trial});
  const Table curve = curve_table(d);
  const Table lineage = lineage_table(d);
  switch (format) {
    case Format::csv:
      // CSV holds one table: the trial's learning curve, the part worth plotting.
      write(render_csv(curve));
      return;
    case Format::json: {
      Json j = Json::object();
      j["experiment"] = experiment;
      j["trial"] = row_object(row, 0);
      j["curve"] = json_array(curve);
      j["lineage"] = json_array(lineage);
      j["children"] = d.children;
      write(j.dump(2, ' ', false, Json::error_handler_t::replace) + '\n');
      return;
    }
    case Format::table:
      break;
  }
  std::string out =
      "trial " + std::to_string(d.trial.number) + " of experiment '" + experiment + "'\n";
  size_t name_width = 0;
  for (const Column& c : row.columns) name_width = std::max(name_width, c.name.size());
  for (size_t c = 0; c < row.columns.size(); ++c) {
    const std::string& name = row.columns[c].name;
    out += "  " + name + std::string(name_width - name.size() + 2, ' ') +
           table_text(row.rows[0][c], row.columns[c].kind) + '\n';
  }
  out += "learning curve (attempt " + std::to_string(d.trial.attempt) + ")\n";
  out += render_table(curve, "  ");
  out += "lineage (root first, ending with the parent)\n";
  out += render_table(lineage, "  ");
  out += "children:";
  if (d.children.empty()) out += " none";
  for (size_t i = 0; i < d.children.size(); ++i) {
    out += (i ? ", " : " ") + std::to_string(d.children[i]);
  }
  write(out + '\n');
}

// ---- Command line ----------------------------------------------------------------------

struct QueryFlags {
  std::string db;
  std::string format = "table";
  std::string experiment;
  CLI::Option* experiment_given = nullptr;  // of the subcommand that ran
  int64_t k = 10;
  std::string metric = "val_acc";
  std::string x = "latency_ms";
  std::string where;
  int64_t trial = -1;
  std::string sql;
  std::string evaluator;
};

// Errors in a flag's value name the flag.
db::Metric metric_flag(const std::string& flag, const std::string& text) {
  try {
    return db::parse_metric(text);
  } catch (const Error& e) {
    throw Error(flag, e.what());
  }
}

std::vector<db::Constraint> where_flag(const std::string& text) {
  try {
    return db::parse_constraints(text);
  } catch (const Error& e) {
    throw Error("--where", e.what());
  }
}

std::optional<std::string> experiment_flag(const QueryFlags& f) {
  if (f.experiment_given && f.experiment_given->count() > 0) return f.experiment;
  return std::nullopt;
}

}  // namespace

void add_query_commands(CLI::App& app) {
  auto f = std::make_shared<QueryFlags>();
  CLI::App* query = app.add_subcommand(
      "query", "Read an experiment store (read-only, also while a search writes it)");
  query->require_subcommand(1);
  // Options given after the subcommand, such as --db or --format, reach `query`'s own.
  query->fallthrough();
  query->add_option("--db", f->db, "The experiment store (SQLite file), opened read-only")
      ->required();
  query
      ->add_option("--format", f->format,
                   "table (accuracies in %, times in UTC), csv or json (values as stored: "
                   "fractions, Unix seconds)")
      ->default_val("table");

  // Each subcommand's callback runs after the whole command line is parsed, flags first.
  auto add = [&](const char* name, const char* help, bool experiment) {
    CLI::App* c = query->add_subcommand(name, help);
    if (experiment) {
      CLI::Option* o =
          c->add_option("--experiment", f->experiment,
                        "Experiment name (may be left out when the store holds exactly one)");
      c->parse_complete_callback([f, o] { f->experiment_given = o; });
    }
    return c;
  };
  auto add_metric = [&](CLI::App* c, const char* help) {
    c->add_option("--metric", f->metric, help)->default_val("val_acc");
  };
  auto add_where = [&](CLI::App* c) {
    c->add_option("--where", f->where,
                  "Constraints, e.g. latency_ms<=2,params<=200000 (accuracies as fractions or "
                  "with %: val_acc>=93%)");
  };

  CLI::App* c =
      add("experiments", "Every experiment with trial counts and its best val_acc", false);
  c->callback([f] {
    const Format format = parse_format(f->format);
    db::Connection conn = db::open_store_readonly(f->db);
    print(experiments_table(db::experiments(conn)), format);
  });

  c = add("top", "The k best done trials by a metric", true);
  c->add_option("--k", f->k, "How many")
      ->default_val(10)
      ->check(in_range<int64_t>(1, 1'000'000'000));
  add_metric(c, "Metric to rank by, in its direction (accuracies highest first, costs lowest)");
  add_where(c);
  c->callback([f] {
    const Format format = parse_format(f->format);
    const db::Metric metric = metric_flag("--metric", f->metric);
    const auto constraints = where_flag(f->where);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    print(trial_table(db::top_k(conn, id, metric, f->k, constraints)), format);
  });

  c = add("pareto", "The Pareto front of a metric against a cost, sorted by the cost", true);
  c->add_option("--x", f->x, "The cost on the x axis: latency_ms, params, macs, train_seconds")
      ->default_val("latency_ms");
  add_metric(c, "The metric on the y axis");
  add_where(c);
  c->callback([f] {
    const Format format = parse_format(f->format);
    const db::Metric x = metric_flag("--x", f->x);
    const db::Metric y = metric_flag("--metric", f->metric);
    if (db::higher_is_better(x)) {
      throw Error("--x", "'" + f->x +
                             "' is not a cost; the x axis is one of latency_ms, params, macs, "
                             "train_seconds");
    }
    if (x == y) throw Error("--metric", "the y axis must differ from --x (both " + f->x + ")");
    const auto constraints = where_flag(f->where);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    print(trial_table(db::pareto(conn, id, x, y, constraints)), format);
  });

  c = add("progress", "The best-so-far curve: a point at each improvement, by finish time", true);
  add_metric(c, "The metric to follow");
  c->callback([f] {
    const Format format = parse_format(f->format);
    const db::Metric metric = metric_flag("--metric", f->metric);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    print(progress_table(db::best_so_far(conn, id, metric), metric), format);
  });

  c = add("trial", "One trial: its row, learning curve (csv prints only this), lineage, children",
          true);
  c->add_option("--trial", f->trial, "The trial's number in its experiment")
      ->required()
      ->check(in_range<int64_t>(0, std::numeric_limits<int64_t>::max()));
  c->callback([f] {
    const Format format = parse_format(f->format);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    print_trial(db::trial(conn, id, f->trial), db::experiment_name(conn, id), format);
  });

  c = add("failures", "Failed trials with their errors, newest first", true);
  c->callback([f] {
    const Format format = parse_format(f->format);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    const db::Failures failed = db::failures(conn, id);
    print(failures_table(failed), format);
    if (format == Format::table) {
      write("late results: " + std::to_string(failed.late_results) +
            " (arrived after their lease expired; kept, not counted)\n");
    }
  });

  c = add("screening",
          "Architectures scored at initialization at the search's start (minas search "
          "--screen), the k best of each evaluator first",
          true);
  c->add_option("--k", f->k, "How many of each evaluator")
      ->default_val(10)
      ->check(in_range<int64_t>(1, 1'000'000'000));
  c->add_option("--evaluator", f->evaluator, "Only this evaluator's scores (default: every one)");
  c->callback([f] {
    const Format format = parse_format(f->format);
    db::Connection conn = db::open_store_readonly(f->db);
    const int64_t id = db::find_experiment_id(conn, experiment_flag(*f));
    print(screening_table(db::screening_scores(conn, id, f->evaluator), f->k), format);
  });

  c = add("workers",
          "Workers with utilization (busy over connected time) and trials done (in "
          "--experiment, or in all experiments without it)",
          true);
  c->callback([f] {
    const Format format = parse_format(f->format);
    db::Connection conn = db::open_store_readonly(f->db);
    const auto name = experiment_flag(*f);
    std::optional<int64_t> id;
    if (name) id = db::find_experiment_id(conn, name);
    print(workers_table(db::workers(conn, id)), format);
  });

  CLI::App* sql = app.add_subcommand(
      "sql", "Run one read-only SQL statement on a store; a statement that writes is refused");
  sql->add_option("--db", f->db, "The experiment store (SQLite file), opened read-only")
      ->required();
  sql->add_option("--format", f->format, "table, csv or json")->default_val("table");
  sql->add_option("statement", f->sql, "One SQL statement, e.g. \"SELECT count(*) FROM trials\"")
      ->required();
  sql->callback([f] {
    const Format format = parse_format(f->format);
    print(sql_table(db::run_readonly_sql(f->db, f->sql)), format);
  });
}

}  // namespace minas::cli
