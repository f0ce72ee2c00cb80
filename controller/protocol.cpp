#include "controller/protocol.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <set>

#include "searchspace/json_read.h"

namespace minas::proto {
namespace {

using F = FieldType;

const char* field_type_name(FieldType t) {
  switch (t) {
    case F::string:
      return "string";
    case F::integer:
      return "integer";
    case F::number:
      return "number";
    case F::boolean:
      return "boolean";
    case F::object:
      return "object";
    case F::array:
      return "array";
  }
  return "?";
}

bool has_type(const nlohmann::json& v, FieldType t) {
  switch (t) {
    case F::string:
      return v.is_string();
    case F::integer:
      return v.is_number_integer();
    case F::number:
      return v.is_number();
    case F::boolean:
      return v.is_boolean();
    case F::object:
      return v.is_object();
    case F::array:
      return v.is_array();
  }
  return false;
}

const char* sender_name(Sender s) {
  return s == Sender::worker ? "worker" : s == Sender::controller ? "controller" : "both";
}

// Checks a message object against its spec; `side` says whose message it is in errors.
void check_fields(const nlohmann::json& j, const MessageSpec& ms) {
  const std::string t = type_name(ms.type);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "v" || it.key() == "type") continue;
    const auto f = std::find_if(ms.fields.begin(), ms.fields.end(),
                                [&](const FieldSpec& s) { return it.key() == s.name; });
    if (f == ms.fields.end()) {
      std::string known;
      for (const auto& s : ms.fields) known += (known.empty() ? "" : ", ") + std::string(s.name);
      throw ProtocolError("bad_field", t + ": unknown field '" + printable_excerpt(it.key(), 40) +
                                           "' (fields: " + (known.empty() ? "none" : known) + ")");
    }
    if (!has_type(it.value(), f->type))
      throw ProtocolError("bad_field", t + ": field '" + it.key() + "' must be " +
                                           field_type_name(f->type) + ", got " +
                                           it.value().type_name());
  }
  for (const auto& s : ms.fields)
    if (s.required && !j.contains(s.name))
      throw ProtocolError("bad_field", t + ": missing field '" + s.name + "'");
}

// ------------------------------------------------------------ typed readers

using json = nlohmann::json;

[[noreturn]] void bad_field(const std::string& what, const std::string& why) {
  throw ProtocolError("bad_field", what + " " + why);
}

[[noreturn]] void too_large(const std::string& what, size_t n, size_t max, const char* unit) {
  throw ProtocolError("too_large", what + " has " + std::to_string(n) + " " + unit +
                                       ", more than the " + std::to_string(max) + " allowed");
}

// What a value is, for an error: numbers and booleans as written, the rest by kind.
std::string describe(const json& v) {
  if (v.is_number() || v.is_boolean() || v.is_null()) return printable_excerpt(v.dump(), 40);
  if (v.is_string()) return "a string";
  return v.is_object() ? "an object" : "an array";
}

int64_t read_integer(const json& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) bad_field(what, "must be an integer, got " + describe(v));
  const bool fits = !v.is_number_unsigned() ||
                    v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const int64_t x = fits ? v.get<int64_t>() : std::numeric_limits<int64_t>::max();
  if (!fits || x < lo || x > hi)
    bad_field(what, "must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                        describe(v));
  return x;
}

int small(const json& v, const std::string& what, int lo, int hi) {
  return static_cast<int>(read_integer(v, what, lo, hi));
}

// A number from lo to hi, or null (not measured): nullopt.
std::optional<double> number_or_null(const json& v, const std::string& what, double lo, double hi) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_number()) bad_field(what, "must be a number or null, got " + describe(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad_field(what, "must be from " + printable_excerpt(json(lo).dump(), 20) + " to " +
                        printable_excerpt(json(hi).dump(), 20) + ", got " + describe(v));
  return x;
}

// A point of training in epochs: whole or a fraction of one (0.25), above 0.
double read_epochs(const json& v, const std::string& what) {
  if (!v.is_number()) bad_field(what, "must be a number of epochs, got " + describe(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || !(x > 0) || x > kMaxAttempt)
    bad_field(what, "must be above 0 and at most " + std::to_string(kMaxAttempt) + ", got " +
                        describe(v));
  return x;
}

bool read_bool(const json& v, const std::string& what) {
  if (!v.is_boolean()) bad_field(what, "must be true or false, got " + describe(v));
  return v.get<bool>();
}

enum class Text {
  name,      // an identifier: not empty, no control characters
  optional,  // like a name, but may be empty
  free,      // anything (peer text for people: logged escaped, stored cut)
};

std::string check_text(const std::string& s, const std::string& what, size_t max, Text kind) {
  if (s.size() > max) too_large(what, s.size(), max, "bytes");
  if (kind == Text::free) return s;
  if (kind == Text::name && s.empty()) bad_field(what, "must not be empty");
  for (const char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      bad_field(what, "must not hold control characters, got '" + printable_excerpt(s, 40) + "'");
  return s;
}

std::string read_string(const json& v, const std::string& what, size_t max,
                        Text kind = Text::name) {
  if (!v.is_string()) bad_field(what, "must be a string, got " + describe(v));
  return check_text(v.get_ref<const std::string&>(), what, max, kind);
}

const json& read_array(const json& v, const std::string& what, size_t max) {
  if (!v.is_array()) bad_field(what, "must be an array, got " + describe(v));
  if (v.size() > max) too_large(what, v.size(), max, "entries");
  return v;
}

// An object whose keys are all among `known` (so a typo is caught, as for a message's fields).
const json& read_object(const json& v, const std::string& what,
                        std::initializer_list<const char*> known) {
  if (!v.is_object()) bad_field(what, "must be an object, got " + describe(v));
  for (auto it = v.begin(); it != v.end(); ++it)
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; }))
      bad_field(what, "has an unknown field '" + printable_excerpt(it.key(), 40) + "'");
  return v;
}

int64_t trial_id(const json& j, const std::string& t) {
  return read_integer(j["trial"], t + ": trial", 0, std::numeric_limits<int64_t>::max());
}
int attempt_no(const json& j, const std::string& t) {
  return small(j["attempt"], t + ": attempt", 0, kMaxAttempt);
}
std::string optional_string(const json& j, const char* k, const std::string& what, size_t max,
                            Text kind, std::string fallback = {}) {
  return j.contains(k) ? read_string(j[k], what, max, kind) : fallback;
}

SlotInfo read_slot(const json& v, const std::string& what) {
  read_object(v, what, {"id", "name", "threads", "memory_bytes"});
  if (!v.contains("id")) bad_field(what, "has no id");
  SlotInfo s;
  s.id = read_string(v["id"], what + ".id", kMaxNameBytes);
  s.name = optional_string(v, "name", what + ".name", kMaxNameBytes, Text::optional);
  if (v.contains("threads")) s.threads = read_integer(v["threads"], what + ".threads", 0, 1 << 20);
  if (v.contains("memory_bytes"))
    s.memory_bytes =
        read_integer(v["memory_bytes"], what + ".memory_bytes", 0, kMaxBlobBytes << 10);
  return s;
}

Hello read_hello(const json& j) {
  Hello h;
  h.name = read_string(j["name"], "hello: name", kMaxNameBytes);
  h.host = read_string(j["host"], "hello: host", kMaxNameBytes, Text::optional);
  h.pid = read_integer(j["pid"], "hello: pid", 0, std::numeric_limits<int32_t>::max());
  h.minas = read_string(j["minas"], "hello: minas", kMaxNameBytes, Text::optional);
  const json& slots = read_array(j["slots"], "hello: slots", kMaxSlots);
  if (slots.empty()) bad_field("hello: slots", "must list at least one slot");
  std::set<std::string> ids;
  for (size_t i = 0; i < slots.size(); ++i) {
    const std::string what = "hello: slots[" + std::to_string(i) + "]";
    h.slots.push_back(read_slot(slots[i], what));
    if (!ids.insert(h.slots.back().id).second)
      bad_field(what + ".id", "'" + printable_excerpt(h.slots.back().id, 40) + "' is listed twice");
  }
  if (j.contains("data"))
    for (const json& d : read_array(j["data"], "hello: data", kMaxListed))
      h.data.push_back(read_string(d, "hello: data[]", kMaxNameBytes));
  h.pool = optional_string(j, "pool", "hello: pool", kMaxNameBytes, Text::optional, "default");
  if (j.contains("tags")) {
    const json& tags = j["tags"];
    if (tags.size() > kMaxTags) too_large("hello: tags", tags.size(), kMaxTags, "entries");
    for (auto it = tags.begin(); it != tags.end(); ++it) {
      const std::string key =
          check_text(it.key(), "hello: a tag's name", kMaxNameBytes, Text::name);
      h.tags[key] = read_string(it.value(), "hello: tags." + printable_excerpt(key, 40),
                                kMaxNameBytes, Text::optional);
    }
  }
  return h;
}

Welcome read_welcome(const json& j) {
  Welcome w;
  w.worker_id =
      read_integer(j["worker_id"], "welcome: worker_id", 0, std::numeric_limits<int64_t>::max());
  w.heartbeat_ms = small(j["heartbeat_ms"], "welcome: heartbeat_ms", 1, 3'600'000);
  w.liveness = small(j["liveness"], "welcome: liveness", 1, kMaxAttempt);
  return w;
}

Train read_train(const json& j) {
  Train t;
  t.trial = trial_id(j, "train");
  t.attempt = attempt_no(j, "train");
  const json& slots = read_array(j["slots"], "train: slots", kMaxSlots);
  if (slots.empty()) bad_field("train: slots", "must name at least one slot");
  for (const json& s : slots) t.slots.push_back(read_string(s, "train: slots[]", kMaxNameBytes));
  t.space_id = read_string(j["space_id"], "train: space_id", kMaxNameBytes);
  if (j.contains("space")) t.space = j["space"];
  t.arch = read_string(j["arch"], "train: arch", kMaxPathBytes);
  t.recipe = j["recipe"];
  const json& data = read_object(j["data"], "train: data", {"name", "fingerprint"});
  t.data_name =
      optional_string(data, "name", "train: data.name", kMaxPathBytes, Text::name, t.data_name);
  t.data_fingerprint = optional_string(data, "fingerprint", "train: data.fingerprint",
                                       kMaxNameBytes, Text::optional);
  t.fidelity = small(j["fidelity"], "train: fidelity", 0, kMaxAttempt);
  if (j.contains("checkpoint_epochs"))
    for (const json& e : read_array(j["checkpoint_epochs"], "train: checkpoint_epochs", kMaxListed))
      t.checkpoint_epochs.push_back(small(e, "train: checkpoint_epochs[]", 1, kMaxAttempt));
  if (j.contains("resume_epoch"))
    t.resume_epoch = small(j["resume_epoch"], "train: resume_epoch", 0, kMaxAttempt);
  if (j.contains("validate_at"))
    for (const json& e : read_array(j["validate_at"], "train: validate_at", kMaxListed)) {
      t.validate_at.push_back(read_epochs(e, "train: validate_at[]"));
      if (t.validate_at.size() > 1 && !(t.validate_at.back() > t.validate_at.end()[-2]))
        bad_field("train: validate_at", "must be ascending, got " + describe(j["validate_at"]));
    }
  t.latency_device =
      optional_string(j, "latency_device", "train: latency_device", kMaxNameBytes, Text::name);
  if (j.contains("measure_only")) t.measure_only = j["measure_only"].get<bool>();
  if (j.contains("gang")) {
    const json& g = read_object(j["gang"], "train: gang", {"world", "first_rank", "rendezvous"});
    if (!g.contains("world") || !g.contains("first_rank"))
      bad_field("train: gang", "needs world and first_rank");
    GangInfo info;
    info.world = small(g["world"], "train: gang.world", 1, 1 << 16);
    info.first_rank = small(g["first_rank"], "train: gang.first_rank", 0, info.world - 1);
    info.rendezvous =
        optional_string(g, "rendezvous", "train: gang.rendezvous", kMaxPathBytes, Text::name);
    t.gang = info;
  }
  if (j.contains("inherit")) {
    const json& in = read_object(j["inherit"], "train: inherit", {"trial", "epoch"});
    if (!in.contains("trial") || !in.contains("epoch"))
      bad_field("train: inherit", "needs trial and epoch");
    Train::Inherit from;
    from.trial = trial_id(in, "train: inherit");
    from.epoch = small(in["epoch"], "train: inherit.epoch", 1, kMaxAttempt);
    if (from.trial == t.trial) bad_field("train: inherit.trial", "is the trial itself");
    t.inherit = from;
  }
  return t;
}

// A metrics object: at most kMaxMetrics keys, every value a scalar (the known
// ones are read by the caller); nested values have no meaning here.
const json& metrics(const json& m, const std::string& what) {
  if (m.size() > kMaxMetrics) too_large(what, m.size(), kMaxMetrics, "entries");
  for (auto it = m.begin(); it != m.end(); ++it) {
    check_text(it.key(), what + ": a key", kMaxNameBytes, Text::name);
    const std::string field = what + "." + printable_excerpt(it.key(), 40);
    if (it.value().is_structured()) bad_field(field, "must be a number, string, boolean or null");
    if (it.value().is_string()) read_string(it.value(), field, kMaxTextBytes, Text::free);
  }
  return m;
}

std::optional<double> metric(const json& m, const char* k, const std::string& what, double lo,
                             double hi) {
  if (!m.contains(k)) return std::nullopt;
  return number_or_null(m[k], what + "." + k, lo, hi);
}

constexpr double kHuge = 1e18;  // losses, rates, seconds, counts: finite and not absurd

Progress read_progress(const json& j) {
  Progress p;
  p.trial = trial_id(j, "progress");
  p.attempt = attempt_no(j, "progress");
  p.epoch = small(j["epoch"], "progress: epoch", 0, kMaxAttempt);
  if (j.contains("at")) p.at = read_epochs(j["at"], "progress: at");
  const json& m = metrics(j["metrics"], "progress: metrics");
  const std::string w = "progress: metrics";
  p.train_loss = metric(m, "train_loss", w, -kHuge, kHuge);
  p.train_acc = metric(m, "train_acc", w, 0, 1);
  p.val_acc = metric(m, "val_acc", w, 0, 1);
  p.lr = metric(m, "lr", w, -kHuge, kHuge);
  p.seconds = metric(m, "seconds", w, 0, kHuge);
  return p;
}

Result read_result(const json& j) {
  Result r;
  r.trial = trial_id(j, "result");
  r.attempt = attempt_no(j, "result");
  const json& m = metrics(j["metrics"], "result: metrics");
  const std::string w = "result: metrics";
  r.val_acc = metric(m, "val_acc", w, 0, 1);
  r.test_acc = metric(m, "test_acc", w, 0, 1);
  r.latency_ms = metric(m, "latency_ms", w, 0, kHuge);
  r.train_seconds = metric(m, "train_seconds", w, 0, kHuge);
  if (auto p = metric(m, "params", w, 0, kHuge)) r.params = static_cast<int64_t>(*p);
  if (auto x = metric(m, "macs", w, 0, kHuge)) r.macs = static_cast<int64_t>(*x);
  if (m.contains("measure_only"))
    r.measure_only = read_bool(m["measure_only"], w + ".measure_only");
  if (m.contains("gang_member")) r.gang_member = read_bool(m["gang_member"], w + ".gang_member");
  if (m.contains("resume_refused"))
    r.resume_refused =
        read_string(m["resume_refused"], w + ".resume_refused", kMaxTextBytes, Text::free);
  if (m.contains("inherited_from")) {
    for (const char* k : {"inherited_epoch", "inherited_tensors", "inherited_params"})
      if (!m.contains(k)) bad_field(w + ".inherited_from", std::string("needs ") + k);
    r.inherited_from = read_integer(m["inherited_from"], w + ".inherited_from", 0,
                                    std::numeric_limits<int64_t>::max());
    r.inherited_epoch = small(m["inherited_epoch"], w + ".inherited_epoch", 1, kMaxAttempt);
    r.inherited_tensors = read_integer(m["inherited_tensors"], w + ".inherited_tensors", 0,
                                       std::numeric_limits<int32_t>::max());
    r.inherited_params = read_integer(m["inherited_params"], w + ".inherited_params", 0,
                                      std::numeric_limits<int64_t>::max());
  }
  if (m.contains("inherit_refused"))
    r.inherit_refused =
        read_string(m["inherit_refused"], w + ".inherit_refused", kMaxTextBytes, Text::free);
  return r;
}

Failure read_failure(const json& j) {
  return {trial_id(j, "failure"), attempt_no(j, "failure"),
          read_string(j["reason"], "failure: reason", kMaxTextBytes, Text::free),
          j["retryable"].get<bool>()};
}

Heartbeat read_heartbeat(const json& j) {
  Heartbeat h;
  if (!j.contains("running")) return h;
  h.running.emplace();
  for (const json& r : read_array(j["running"], "heartbeat: running", kMaxListed)) {
    read_object(r, "heartbeat: running[]", {"trial", "attempt"});
    if (!r.contains("trial") || !r.contains("attempt"))
      bad_field("heartbeat: running[]", "needs trial and attempt");
    h.running->emplace_back(trial_id(r, "heartbeat: running[]"),
                            attempt_no(r, "heartbeat: running[]"));
  }
  return h;
}

Data read_data(const json& j) {
  Data d;
  d.fingerprint = read_string(j["fingerprint"], "data: fingerprint", kMaxNameBytes, Text::optional);
  d.name = read_string(j["name"], "data: name", kMaxPathBytes);
  d.file = read_string(j["file"], "data: file", kMaxNameBytes);
  d.offset = read_integer(j["offset"], "data: offset", 0, kMaxBlobBytes);
  d.size = read_integer(j["size"], "data: size", 0, kMaxBlobBytes);
  d.bytes = read_string(j["bytes"], "data: bytes", kMaxMessageBytes, Text::free);
  d.last = j["last"].get<bool>();
  return d;
}

Checkpoint read_checkpoint(const json& j) {
  Checkpoint c;
  c.trial = trial_id(j, "checkpoint");
  c.attempt = attempt_no(j, "checkpoint");
  c.epoch = small(j["epoch"], "checkpoint: epoch", 0, kMaxAttempt);
  c.offset = read_integer(j["offset"], "checkpoint: offset", 0, kMaxBlobBytes);
  c.size = read_integer(j["size"], "checkpoint: size", 0, kMaxBlobBytes);
  c.bytes = read_string(j["bytes"], "checkpoint: bytes", kMaxMessageBytes, Text::free);
  c.last = j["last"].get<bool>();
  return c;
}

// ------------------------------------------------------------ screening

int64_t batch_id(const json& j, const std::string& t) {
  return read_integer(j["batch"], t + ": batch", 0, std::numeric_limits<int64_t>::max());
}

Screen read_screen(const json& j) {
  Screen s;
  s.batch = batch_id(j, "screen");
  s.attempt = attempt_no(j, "screen");
  s.slot = read_string(j["slot"], "screen: slot", kMaxNameBytes);
  s.space_id = read_string(j["space_id"], "screen: space_id", kMaxNameBytes);
  if (j.contains("space")) s.space = j["space"];
  const json& archs = read_array(j["archs"], "screen: archs", kMaxScreenBatch);
  if (archs.empty()) bad_field("screen: archs", "must list at least one architecture");
  for (const json& a : archs) s.archs.push_back(read_string(a, "screen: archs[]", kMaxPathBytes));
  const json& evaluators = read_array(j["evaluators"], "screen: evaluators", kMaxEvaluators);
  if (evaluators.empty()) bad_field("screen: evaluators", "must name at least one evaluator");
  for (const json& e : evaluators) {
    s.evaluators.push_back(read_string(e, "screen: evaluators[]", kMaxNameBytes));
    if (std::count(s.evaluators.begin(), s.evaluators.end(), s.evaluators.back()) > 1)
      bad_field("screen: evaluators[]",
                "'" + printable_excerpt(s.evaluators.back(), 40) + "' is listed twice");
  }
  const json& data = read_object(j["data"], "screen: data", {"name", "fingerprint"});
  s.data_name =
      optional_string(data, "name", "screen: data.name", kMaxPathBytes, Text::name, s.data_name);
  s.data_fingerprint = optional_string(data, "fingerprint", "screen: data.fingerprint",
                                       kMaxNameBytes, Text::optional);
  // Any 64-bit seed: JSON holds one above INT64_MAX as an unsigned integer.
  const json& seed = j["seed"];
  s.seed = seed.is_number_unsigned()
               ? seed.get<uint64_t>()
               : static_cast<uint64_t>(
                     read_integer(seed, "screen: seed", 0, std::numeric_limits<int64_t>::max()));
  s.batch_size = small(j["batch_size"], "screen: batch_size", 2, 4096);
  return s;
}

ScreenResult read_screen_result(const json& j) {
  ScreenResult r;
  r.batch = batch_id(j, "screen_result");
  r.attempt = attempt_no(j, "screen_result");
  const json& archs = read_array(j["archs"], "screen_result: archs", kMaxScreenBatch);
  for (size_t i = 0; i < archs.size(); ++i) {
    const std::string what = "screen_result: archs[" + std::to_string(i) + "]";
    const json& a = read_object(archs[i], what, {"arch", "scores", "seconds", "error"});
    if (!a.contains("arch") || !a.contains("scores") || !a.contains("seconds"))
      bad_field(what, "needs arch, scores and seconds");
    ScreenedArch x;
    x.arch = read_string(a["arch"], what + ".arch", kMaxPathBytes);
    const json& scores = a["scores"];
    if (!scores.is_object())
      bad_field(what + ".scores", "must be an object, got " + describe(scores));
    if (scores.size() > kMaxEvaluators)
      too_large(what + ".scores", scores.size(), kMaxEvaluators, "entries");
    for (auto it = scores.begin(); it != scores.end(); ++it) {
      const std::string name =
          check_text(it.key(), what + ".scores: a key", kMaxNameBytes, Text::name);
      const auto v = number_or_null(it.value(), what + ".scores." + printable_excerpt(name, 40),
                                    -kHuge, kHuge);
      if (v) x.scores[name] = *v;
    }
    const auto seconds = number_or_null(a["seconds"], what + ".seconds", 0, kHuge);
    if (!seconds) bad_field(what + ".seconds", "must be a number, got null");
    x.seconds = *seconds;
    x.error = optional_string(a, "error", what + ".error", kMaxTextBytes, Text::free);
    r.archs.push_back(std::move(x));
  }
  return r;
}

// The typed content of a message whose fields have the spec's JSON types.
decltype(Message::content) read_content(Type t, const json& j) {
  switch (t) {
    case Type::hello:
      return read_hello(j);
    case Type::welcome:
      return read_welcome(j);
    case Type::ready:
      return Ready{read_string(j["slot"], "ready: slot", kMaxNameBytes)};
    case Type::train:
      return read_train(j);
    case Type::progress:
      return read_progress(j);
    case Type::result:
      return read_result(j);
    case Type::failure:
      return read_failure(j);
    case Type::ack:
      return Ack{trial_id(j, "ack"), attempt_no(j, "ack"), j["counted"].get<bool>()};
    case Type::cancel:
      return Cancel{trial_id(j, "cancel"), attempt_no(j, "cancel"),
                    optional_string(j, "reason", "cancel: reason", kMaxTextBytes, Text::free)};
    case Type::heartbeat:
      return read_heartbeat(j);
    case Type::bye:
      return Bye{optional_string(j, "reason", "bye: reason", kMaxTextBytes, Text::free)};
    case Type::error:
      return Refusal{
          read_string(j["code"], "error: code", kMaxNameBytes),
          read_string(j["message"], "error: message", kMaxTextBytes, Text::free),
          optional_string(j, "in_reply_to", "error: in_reply_to", kMaxNameBytes, Text::name)};
    case Type::fetch:
      return Fetch{read_string(j["name"], "fetch: name", kMaxPathBytes),
                   read_string(j["fingerprint"], "fetch: fingerprint", kMaxNameBytes)};
    case Type::data:
      return read_data(j);
    case Type::checkpoint:
      return read_checkpoint(j);
    case Type::rendezvous:
      return Rendezvous{trial_id(j, "rendezvous"), attempt_no(j, "rendezvous"),
                        read_string(j["address"], "rendezvous: address", kMaxPathBytes)};
    case Type::screen:
      return read_screen(j);
    case Type::screen_result:
      return read_screen_result(j);
    case Type::screen_ack:
      return ScreenAck{batch_id(j, "screen_ack"), attempt_no(j, "screen_ack"),
                       j["counted"].get<bool>()};
  }
  return std::monostate{};
}

}  // namespace

const std::vector<MessageSpec>& message_specs() {
  static const std::vector<MessageSpec> specs = {
      {Type::hello,
       Sender::worker,
       "first message of a worker; answered by welcome or error",
       {{"name", F::string, true,
         "the worker's identity, unique per process (host:pid by default)"},
        {"host", F::string, true, "host name"},
        {"pid", F::integer, true, "process id"},
        {"minas", F::string, true, "the worker's minas version"},
        {"slots", F::array, true,
         "device slots: objects {id: \"cpu\" or \"cuda:N\", name, threads (cpu), memory_bytes}"},
        {"data", F::array, false, "fingerprints of the data sets it has cached"},
        {"pool", F::string, false,
         "the pool it belongs to (default \"default\"): an experiment may train on one pool "
         "and measure latency on another"},
        {"tags", F::object, false,
         "free-form labels, string values: device type, GPU model, site, ..."}}},
      {Type::welcome,
       Sender::controller,
       "the worker is registered",
       {{"worker_id", F::integer, true, "the worker's id in the store"},
        {"heartbeat_ms", F::integer, true, "how often each side sends a heartbeat"},
        {"liveness", F::integer, true, "missed heartbeats after which the peer counts as lost"}}},
      {Type::ready,
       Sender::worker,
       "a device slot is free",
       {{"slot", F::string, true, "the slot's id"}}},
      {Type::train,
       Sender::controller,
       "run one attempt of a trial",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true,
         "attempt number, from 0; results are idempotent by (trial, attempt)"},
        {"slots", F::array, true, "the slot ids to run on"},
        {"space_id", F::string, true, "FNV-1a 64 (hex) of the space document's JSON text"},
        {"space", F::object, false,
         "the resolved search-space document; sent with a worker's first trial of that space, "
         "which the worker keeps by space_id"},
        {"arch", F::string, true, "the architecture's canonical key"},
        {"recipe", F::object, true, "the training recipe"},
        {"data", F::object, true, "the data set: {name, fingerprint}"},
        {"fidelity", F::integer, true, "epochs to train"},
        {"checkpoint_epochs", F::array, false,
         "epochs after which the worker sends the training state in checkpoint messages "
         "(ASHA's rungs), so a retried attempt continues from there"},
        {"resume_epoch", F::integer, false,
         "the attempt continues after this epoch, from the training state the controller sends "
         "next in checkpoint messages"},
        {"validate_at", F::array, false,
         "points inside an epoch, in epochs and ascending (0.25: after a quarter of the first "
         "epoch's steps; ASHA's fractional rungs), where the worker validates too and sends "
         "progress with `at`"},
        {"latency_device", F::string, false,
         "where to measure the trained network's batch-1 latency (cpu:THREADS or cuda:N, the "
         "deployment target) instead of on the training device"},
        {"measure_only", F::boolean, false,
         "true: do not train; build the network and measure its batch-1 latency (on "
         "latency_device, else on the slot), answering with a result of latency_ms, params and "
         "macs (an experiment's latency pool)"},
        {"gang", F::object, false,
         "a trial whose ranks are spread over several workers: {world (all ranks), first_rank "
         "(this worker's first; its slots are ranks first_rank, first_rank + 1, ...), rendezvous "
         "(rank 0's rendezvous address; absent for rank 0's worker, which opens the hub, makes "
         "NCCL's unique id on GPUs, and answers with a rendezvous message)}"},
        {"inherit", F::object, false,
         "a warm-started training: {trial, epoch} of the parent whose training state after that "
         "epoch the controller sends next in checkpoint messages; the worker copies its weights "
         "into every layer the mutation left unchanged (trainer/inherit.h), the rest initialized "
         "as usual; ignored with resume_epoch, whose state holds them already"}}},
      {Type::progress,
       Sender::worker,
       "one finished epoch of a running attempt",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"epoch", F::integer, true, "epoch number, from 1"},
        {"at", F::number, false,
         "a validation inside epoch `epoch` (one of the train's validate_at, sent back as given): "
         "the epochs trained then; absent: the end of the epoch"},
        {"metrics", F::object, true, "train_loss, train_acc, val_acc, lr, seconds"}}},
      {Type::result,
       Sender::worker,
       "a finished attempt; the worker keeps it until acked",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"metrics", F::object, true,
         "val_acc, test_acc, latency_ms, params, macs, train_seconds; after a train with "
         "inherit: inherited_from, inherited_epoch, inherited_tensors, inherited_params (what "
         "was inherited), or inherit_refused (why the parent's state was not used)"}}},
      {Type::failure,
       Sender::worker,
       "an attempt that failed; the worker keeps it until acked",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"reason", F::string, true, "what went wrong, for the store and the user"},
        {"retryable", F::boolean, true,
         "false when another attempt would fail the same way (a network that cannot be built)"}}},
      {Type::ack,
       Sender::controller,
       "the result or failure of (trial, attempt) is stored durably",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"counted", F::boolean, true,
         "false when the attempt was no longer current (a late result): recorded, not counted"}}},
      {Type::cancel,
       Sender::controller,
       "stop an attempt now and free its slots",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"reason", F::string, false, "why (pruned, budget spent, experiment stopped)"}}},
      {Type::heartbeat,
       Sender::both,
       "alive",
       {{"running", F::array, false, "from a worker: [{trial, attempt}] it is running"}}},
      {Type::bye,
       Sender::both,
       "leaving; a worker's running attempts are re-queued at once",
       {{"reason", F::string, false, "why"}}},
      {Type::error,
       Sender::both,
       "the last message was refused",
       {{"code", F::string, true,
         "malformed, too_large, bad_version, unknown_type, bad_field, unexpected, not_allowed"},
        {"message", F::string, true, "what was wrong, for the log"},
        {"in_reply_to", F::string, false, "the refused message's type, when it had one"}}},
      {Type::fetch,
       Sender::worker,
       "the worker lacks the data set of a trial (or holds other content under its name)",
       {{"name", F::string, true, "the data set's name, as in train"},
        {"fingerprint", F::string, true, "the content wanted, as in train"}}},
      {Type::data,
       Sender::controller,
       "one chunk of a data set's files, in order; the worker checks the fingerprint of the "
       "whole before it uses it, and keeps it",
       {{"fingerprint", F::string, true, "the data set's fingerprint"},
        {"name", F::string, true, "the data set's name"},
        {"file", F::string, true, "the file's name (train-images-idx3-ubyte.gz, ...)"},
        {"offset", F::integer, true, "where this chunk starts in the file"},
        {"size", F::integer, true, "the whole file's size in bytes"},
        {"bytes", F::string, true, "the chunk, base64 (at most 512 KiB before encoding)"},
        {"last", F::boolean, true, "true on the last chunk of the last file"}}},
      {Type::checkpoint,
       Sender::both,
       "one chunk, in order, of an attempt's training state after an epoch (a minas checkpoint "
       "file): from a worker at each of the train's checkpoint_epochs, kept by the controller; "
       "from the controller after a train with resume_epoch, or with inherit (the parent's "
       "state, under the child's trial and attempt)",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"epoch", F::integer, true, "the epoch the state is after"},
        {"offset", F::integer, true, "where this chunk starts in the file"},
        {"size", F::integer, true, "the whole file's size in bytes"},
        {"bytes", F::string, true, "the chunk, base64 (at most 512 KiB before encoding)"},
        {"last", F::boolean, true, "true on the last chunk"}}},
      {Type::rendezvous,
       Sender::worker,
       "where the ranks of a trial spread over several workers meet: rank 0's worker sends it "
       "once its group's hub listens, and the controller passes the address on in the train "
       "(gang.rendezvous) of every other worker of the trial",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"address", F::string, true,
         "tcp://HOST:PORT of rank 0's hub, then #nccl= and NCCL's unique id (base64) when the "
         "trial is on GPUs"}}},
      {Type::screen,
       Sender::controller,
       "score a batch of architectures at initialization, without training (zero-cost proxies, "
       "params, MACs), on one free slot; answered by screen_result",
       {{"batch", F::integer, true,
         "the batch's id (the controller's own, not a trial id); results are idempotent by "
         "(batch, attempt)"},
        {"attempt", F::integer, true, "attempt number, from 0: raised when a batch is sent again"},
        {"slot", F::string, true, "the slot to score on"},
        {"space_id", F::string, true, "as in train"},
        {"space", F::object, false, "as in train: sent once per connection"},
        {"archs", F::array, true, "canonical keys of the architectures, 1 to 1024"},
        {"evaluators", F::array, true,
         "evaluator names (naswot, synflow, grad_norm, jacob_cov, params, macs), 1 to 16"},
        {"data", F::object, true, "the data set the minibatch is drawn from: {name, fingerprint}"},
        {"seed", F::integer, true, "initialization and minibatch seed"},
        {"batch_size", F::integer, true, "images in the minibatch, 2 to 4096"}}},
      {Type::screen_result,
       Sender::worker,
       "a screened batch; the worker keeps it until screen_ack",
       {{"batch", F::integer, true, "the batch's id"},
        {"attempt", F::integer, true, "attempt number"},
        {"archs", F::array, true,
         "one entry per architecture of the screen, in its order: {arch, scores: {evaluator: "
         "number, or null when not finite}, seconds, error (absent when scored)}"}}},
      {Type::screen_ack,
       Sender::controller,
       "the scores of (batch, attempt) are stored durably",
       {{"batch", F::integer, true, "the batch's id"},
        {"attempt", F::integer, true, "attempt number"},
        {"counted", F::boolean, true,
         "false when the batch was not current (scored already, or unknown): nothing stored"}}},
  };
  return specs;
}

const MessageSpec& spec(Type t) {
  return message_specs().at(static_cast<size_t>(t));
}

const char* type_name(Type t) {
  static const char* names[] = {"hello",      "welcome", "ready",         "train",     "progress",
                                "result",     "failure", "ack",           "cancel",    "heartbeat",
                                "bye",        "error",   "fetch",         "data",      "checkpoint",
                                "rendezvous", "screen",  "screen_result", "screen_ack"};
  return names[static_cast<size_t>(t)];
}

std::optional<Type> type_from_name(std::string_view name) {
  for (const auto& s : message_specs())
    if (name == type_name(s.type)) return s.type;
  return std::nullopt;
}

Message parse(std::string_view payload) {
  if (payload.size() > kMaxMessageBytes)
    throw ProtocolError("too_large", std::to_string(payload.size()) + " bytes, more than the " +
                                         std::to_string(kMaxMessageBytes) + " a message may hold");
  // Counted before parsing: nlohmann's parser, dump and comparison recurse.
  if (json_depth(payload, kMaxDepth) > kMaxDepth)
    throw ProtocolError(
        "too_large", "arrays and objects nested more than " + std::to_string(kMaxDepth) + " deep");
  nlohmann::json j;
  try {
    j = read_json(payload, "", {kMaxDepth, kMaxMessageBytes});
  } catch (const Error& e) {
    throw ProtocolError("malformed", "not valid JSON: " + e.reason());
  }
  if (!j.is_object()) throw ProtocolError("malformed", "a message is a JSON object");
  if (!j.contains("v") || !j["v"].is_number_integer())
    throw ProtocolError("bad_version", "missing protocol version 'v'");
  if (j["v"] != kVersion)
    throw ProtocolError("bad_version", "protocol version " + printable_excerpt(j["v"].dump(), 40) +
                                           ", this minas speaks " + std::to_string(kVersion));
  if (!j.contains("type") || !j["type"].is_string())
    throw ProtocolError("unknown_type", "missing message 'type'");
  const std::string& name = j["type"].get_ref<const std::string&>();
  const auto t = type_from_name(name);
  if (!t)
    throw ProtocolError("unknown_type",
                        "unknown message type '" + printable_excerpt(name, 40) + "'");
  check_fields(j, spec(*t));
  Message m{*t, std::move(j), {}};
  m.content = read_content(*t, m.body);
  return m;
}

std::string encode(Type t, nlohmann::json fields) {
  if (!fields.is_object()) throw ProtocolError("malformed", "message fields must be an object");
  fields["v"] = kVersion;
  fields["type"] = type_name(t);
  check_fields(fields, spec(t));
  // Text that is not UTF-8 (a peer's bytes quoted in an error) is sent with U+FFFD in its
  // place: dump() would otherwise throw, and an error reply must never end the loop.
  std::string out = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (out.size() > kMaxMessageBytes)
    throw ProtocolError("too_large", std::string(type_name(t)) + " message of " +
                                         std::to_string(out.size()) + " bytes");
  if (json_depth(out, kMaxDepth) > kMaxDepth)
    throw ProtocolError("too_large", std::string(type_name(t)) + " message nested more than " +
                                         std::to_string(kMaxDepth) + " deep");
  read_content(t, fields);
  return out;
}

std::string error_reply(const ProtocolError& e, std::optional<Type> in_reply_to) {
  nlohmann::json fields = {{"code", e.code()}, {"message", bounded_text(e.reason())}};
  if (in_reply_to) fields["in_reply_to"] = type_name(*in_reply_to);
  return encode(Type::error, std::move(fields));
}

std::string bounded_text(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  // Not inside a UTF-8 character: continuation bytes are 10xxxxxx.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "... (" + std::to_string(text.size()) + " bytes)";
}

namespace {
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v =
        (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kBase64[(v >> k) & 63];
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += rest == 2 ? kBase64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + static_cast<size_t>(k)];
      const int d = (c == '=' && k >= 4 - pad) ? 0 : value(c);
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out += static_cast<char>((v >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

std::vector<std::string> encode_checkpoint(int64_t trial, int attempt, int epoch,
                                           std::string_view state) {
  std::vector<std::string> out;
  for (size_t at = 0; at < state.size() || at == 0; at += kDataChunkBytes) {
    const size_t n = std::min(kDataChunkBytes, state.size() - at);
    out.push_back(encode(Type::checkpoint, {{"trial", trial},
                                            {"attempt", attempt},
                                            {"epoch", epoch},
                                            {"offset", static_cast<int64_t>(at)},
                                            {"size", static_cast<int64_t>(state.size())},
                                            {"bytes", base64_encode(state.substr(at, n))},
                                            {"last", at + n >= state.size()}}));
    if (state.empty()) break;
  }
  return out;
}

std::string protocol_markdown() {
  std::string md;
  for (const auto& s : message_specs()) {
    std::string doc = s.doc;
    doc[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(doc[0])));
    md += "### `" + std::string(type_name(s.type)) + "` (" + sender_name(s.sender) + ")\n\n" + doc +
          ".\n\n";
    if (s.fields.empty()) {
      md += "No fields.\n\n";
      continue;
    }
    md += "| field | type | required | meaning |\n|---|---|---|---|\n";
    for (const auto& f : s.fields)
      md += "| `" + std::string(f.name) + "` | " + field_type_name(f.type) + " | " +
            (f.required ? "yes" : "no") + " | " + f.doc + " |\n";
    md += "\n";
  }
  return md;
}

}  // namespace minas::proto
