#include "searchspace/space.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "searchspace/builtin_spaces.h"
#include "searchspace/json_excerpt.h"
#include "searchspace/json_read.h"
#include "searchspace/skeleton.h"
#include "searchspace/text_file.h"

namespace minas {

using detail::Choice;
using detail::json;
using detail::Node;
using detail::Skeleton;
using detail::Slot;

// ---------------------------------------------------------------- Node

namespace detail {

std::string escape_pointer_token(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

Node Node::at(const char* key) const {
  require_object();
  auto it = j_->find(key);
  if (it == j_->end()) fail(std::string("missing field '") + key + "'");
  return Node(*it, ptr_ + "/" + escape_pointer_token(key), *origin_);
}

Node Node::at(size_t i) const {
  return Node((*j_)[i], ptr_ + "/" + std::to_string(i), *origin_);
}

void Node::require_object() const {
  if (!j_->is_object()) fail("must be an object, got " + std::string(j_->type_name()));
}

void Node::require_array(size_t min_size) const {
  if (!j_->is_array()) fail("must be an array, got " + std::string(j_->type_name()));
  if (j_->size() < min_size)
    fail("must have at least " + std::to_string(min_size) + " element(s), got " +
         std::to_string(j_->size()));
}

void Node::only(std::initializer_list<const char*> allowed) const {
  require_object();
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      Node(it.value(), ptr_ + "/" + escape_pointer_token(it.key()), *origin_)
          .fail("unknown field '" + printable_excerpt(it.key(), 40) + "' (known: " + list + ")");
    }
  }
}

int Node::integer(int lo, int hi) const {
  if (!j_->is_number_integer() || j_->get<int64_t>() < lo || j_->get<int64_t>() > hi)
    fail("must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
         json_excerpt(*j_));
  return j_->get<int>();
}

double Node::number(double lo, double hi) const {
  if (!j_->is_number() || j_->get<double>() < lo || j_->get<double>() > hi) {
    std::ostringstream os;
    os << "must be a number in [" << lo << ", " << hi << "], got " << json_excerpt(*j_);
    fail(os.str());
  }
  return j_->get<double>();
}

std::string Node::string() const {
  if (!j_->is_string()) fail("must be a string, got " + json_excerpt(*j_));
  return j_->get<std::string>();
}

std::string Node::one_of(std::initializer_list<const char*> values) const {
  const std::string s = string();
  std::string list;
  for (const char* v : values) {
    if (s == v) return s;
    list += (list.empty() ? "" : ", ") + std::string(v);
  }
  fail("must be one of " + list + ", got '" + printable_excerpt(s, 40) + "'");
}

std::string label_of(const json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

Slot read_slot(const Node& n, SlotKind kind,
               const std::function<int(const Node&, const std::string&)>& index) {
  Slot s;
  s.kind = kind;
  s.ptr = n.ptr();
  if (n.j().is_object()) {
    n.only({"decision"});
    const Node d = n.at("decision");
    s.decision = index(d, d.string());
  } else {
    s.literal = n.j();
  }
  return s;
}

std::string Skeleton::key(const Choice& c) const {
  std::string k;
  const auto& ds = c.decisions();
  for (size_t i = 0; i < ds.size(); ++i) {
    if (i) k += '|';
    k += ds[i].label(c.arch().choice[i]);
  }
  return k;
}

Arch Skeleton::parse_key(std::string_view key, const std::vector<Decision>& ds) const {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t bar = key.find('|', start);
    fields.push_back(key.substr(start, bar == std::string_view::npos ? bar : bar - start));
    if (bar == std::string_view::npos) break;
    start = bar + 1;
  }
  if (fields.size() != ds.size())
    throw Error("arch key '" + printable_excerpt(key, 120) + "'",
                "has " + std::to_string(fields.size()) + " '|'-separated field(s), the space has " +
                    std::to_string(ds.size()) + " decisions");
  Arch a;
  for (size_t i = 0; i < ds.size(); ++i) {
    bool found = false;
    for (size_t o = 0; o < ds[i].options.size() && !found; ++o) {
      if (ds[i].label(o) == fields[i]) {
        a.choice.push_back(static_cast<uint32_t>(o));
        found = true;
      }
    }
    if (!found) {
      std::string opts;
      for (size_t o = 0; o < ds[i].options.size(); ++o) opts += (o ? ", " : "") + ds[i].label(o);
      throw Error("arch key '" + printable_excerpt(key, 120) + "', field " + std::to_string(i + 1),
                  "'" + printable_excerpt(fields[i], 40) + "' is not an option of decision '" +
                      ds[i].name + "' (options: " + opts + ")");
    }
  }
  return a;
}

}  // namespace detail

std::string Decision::label(size_t option) const {
  return detail::label_of(options.at(option));
}

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// ---------------------------------------------------------------- Space

struct Space::Impl {
  std::string name, description, ref, origin, type;
  json spec;
  Shape input;
  int classes = 0;
  std::vector<Decision> decisions;
  std::unique_ptr<detail::Skeleton> skeleton;
};

Space::Space(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Space::Space(Space&&) noexcept = default;
Space& Space::operator=(Space&&) noexcept = default;
Space::~Space() = default;

const std::string& Space::name() const {
  return impl_->name;
}
const std::string& Space::description() const {
  return impl_->description;
}
const std::string& Space::ref() const {
  return impl_->ref;
}
const json& Space::spec() const {
  return impl_->spec;
}
const std::vector<Decision>& Space::decisions() const {
  return impl_->decisions;
}
const std::string& Space::skeleton_type() const {
  return impl_->type;
}

namespace {

bool valid_option_text(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
          c == '+'))
      return false;
  return true;
}

Shape read_input(const Node& n) {
  n.only({"channels", "height", "width"});
  return {n.at("channels").integer(1, 4096), n.at("height").integer(1, 4096),
          n.at("width").integer(1, 4096)};
}

std::vector<json> read_options(const Node& n, const Node& root) {
  if (n.j().is_string()) {
    const std::string set = n.string();
    if (!root.has("option_sets") || !root.at("option_sets").has(set.c_str()))
      n.fail("names option set '" + printable_excerpt(set, 40) +
             "', which /option_sets does not define");
    return read_options(root.at("option_sets").at(set.c_str()), root);
  }
  n.require_array(1);
  std::vector<json> out;
  std::set<std::string> seen;
  for (size_t i = 0; i < n.size(); ++i) {
    const Node o = n.at(i);
    if (o.j().is_string()) {
      if (!valid_option_text(o.string()))
        o.fail("option '" + printable_excerpt(o.string(), 40) +
               "' may hold only letters, digits and _ . - +");
    } else if (!o.j().is_number()) {
      o.fail("an option is a string or a number, got " + json_excerpt(o.j()));
    }
    if (!seen.insert(detail::label_of(o.j())).second)
      o.fail("option " + json_excerpt(o.j()) + " is listed twice");
    out.push_back(o.j());
  }
  return out;
}

// Applies "key=value,key=value" overrides to a space document.
void apply_overrides(json& doc, const std::string& overrides, const std::string& ref) {
  const std::string where = "space reference '" + printable_excerpt(ref, 120) + "'";
  std::stringstream ss(overrides);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      throw Error(where, "override '" + printable_excerpt(item, 60) + "' is not key=value");
    const std::string key = item.substr(0, eq), text = item.substr(eq + 1);
    if (key == "input") {
      int c = 0, h = 0, w = 0;
      char x1 = 0, x2 = 0;
      std::istringstream is(text);
      if (!(is >> c >> x1 >> h >> x2 >> w) || x1 != 'x' || x2 != 'x' || !is.eof())
        throw Error(where,
                    "input must be CxHxW, e.g. 1x28x28, got '" + printable_excerpt(text, 40) + "'");
      doc["input"] = {{"channels", c}, {"height", h}, {"width", w}};
      continue;
    }
    // JSON where the text is JSON (a number, a list), the text itself otherwise.
    json value;
    try {
      value = read_json(text, where);
    } catch (const Error&) {
      value = text;
    }
    if (key == "classes") {
      doc["classes"] = value;
      continue;
    }
    json* target = doc.contains("skeleton") ? &doc["skeleton"] : nullptr;
    std::stringstream path(key);
    std::string token;
    std::vector<std::string> tokens;
    while (std::getline(path, token, '.')) tokens.push_back(token);
    for (size_t i = 0; target && i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      json* next = nullptr;
      if (target->is_object() && target->contains(t)) {
        next = &(*target)[t];
      } else if (target->is_array() && !t.empty() && std::all_of(t.begin(), t.end(), ::isdigit) &&
                 std::stoul(t) < target->size()) {
        next = &(*target)[std::stoul(t)];
      }
      target = next;
    }
    if (!target || target->is_object() || target->is_array() || key == "type") {
      std::string fields;
      if (doc.contains("skeleton") && doc["skeleton"].is_object())
        for (auto it = doc["skeleton"].begin(); it != doc["skeleton"].end(); ++it)
          if (!it->is_object() && !it->is_array() && it.key() != "type") fields += ", " + it.key();
      throw Error(where, "override '" + printable_excerpt(key, 60) +
                             "' names no value of the skeleton (settable: input, classes" + fields +
                             ", or a dotted path such as stem.channels)");
    }
    *target = value;
  }
}

}  // namespace

Space Space::from_json(const json& doc, const std::string& origin) {
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  impl->spec = doc;
  const Node root(impl->spec, "", impl->origin);
  root.only({"name", "description", "input", "classes", "option_sets", "decisions", "skeleton"});
  impl->name = root.at("name").string();
  if (!valid_option_text(impl->name))
    root.at("name").fail("a space name may hold only letters, digits and _ . - +");
  if (root.has("description")) impl->description = root.at("description").string();
  impl->input = read_input(root.at("input"));
  impl->classes = root.at("classes").integer(2, 1000000);
  if (root.has("option_sets")) {
    const Node sets = root.at("option_sets");
    sets.require_object();
  }

  const Node ds = root.at("decisions");
  ds.require_array(1);
  std::map<std::string, int> by_name;
  for (size_t i = 0; i < ds.size(); ++i) {
    const Node d = ds.at(i);
    d.only({"name", "options", "description"});
    Decision dec;
    dec.name = d.at("name").string();
    if (dec.name.empty()) d.at("name").fail("a decision name must not be empty");
    if (!by_name.emplace(dec.name, static_cast<int>(i)).second)
      d.at("name").fail("decision '" + printable_excerpt(dec.name, 40) + "' is defined twice");
    if (d.has("description")) d.at("description").string();
    dec.options = read_options(d.at("options"), root);
    impl->decisions.push_back(std::move(dec));
  }

  const Node sk = root.at("skeleton");
  sk.require_object();
  std::vector<bool> used(impl->decisions.size(), false);
  auto index = [&](const Node& n, const std::string& name) -> int {
    auto it = by_name.find(name);
    if (it == by_name.end()) n.fail("no decision is named '" + printable_excerpt(name, 40) + "'");
    used[it->second] = true;
    return it->second;
  };
  impl->type = sk.at("type").one_of({"cell", "chain"});
  impl->skeleton = impl->type == "cell" ? detail::make_cell_skeleton(sk, index)
                                        : detail::make_chain_skeleton(sk, index);

  // Every option must fit every place its decision is used, so that every
  // architecture of the space lowers.
  for (const Slot& s : impl->skeleton->slots()) {
    if (s.decision < 0) {
      if (auto why = impl->skeleton->check_value(s.kind, s.literal))
        throw Error(origin + ": " + s.ptr, *why);
      continue;
    }
    const Decision& d = impl->decisions[s.decision];
    for (size_t o = 0; o < d.options.size(); ++o)
      if (auto why = impl->skeleton->check_value(s.kind, d.options[o]))
        throw Error(
            origin + ": /decisions/" + std::to_string(s.decision) + "/options/" + std::to_string(o),
            "option " + json_excerpt(d.options[o]) + " of '" + printable_excerpt(d.name, 40) +
                "' cannot be used at " + s.ptr + ": " + *why);
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (!used[i])
      throw Error(origin + ": /decisions/" + std::to_string(i),
                  "decision '" + printable_excerpt(impl->decisions[i].name, 40) +
                      "' is not used by the skeleton");

  Space space(std::move(impl));
  // Spatial shapes depend only on the fixed skeleton, so one lowering checks
  // them for every architecture.
  try {
    space.lower(Arch{std::vector<uint32_t>(space.decisions().size(), 0)});
  } catch (const Error& e) {
    throw Error(origin + ": /skeleton", "the network cannot be built for input " +
                                            to_string(space.impl_->input) + ": " + e.what());
  }
  return space;
}

Space Space::parse(std::string_view text, const std::string& origin) {
  return from_json(read_json(text, origin), origin);
}

std::vector<std::string> Space::builtin_names() {
  std::vector<std::string> names;
  for (const auto& b : detail::builtin_spaces()) names.emplace_back(b.name);
  return names;
}

std::string_view Space::builtin_text(const std::string& name) {
  for (const auto& b : detail::builtin_spaces())
    if (name == b.name) return b.text;
  return {};
}

Space Space::load(const std::string& ref) {
  namespace fs = std::filesystem;
  std::string base = ref, overrides;
  std::error_code ec;
  if (!fs::is_regular_file(ref, ec)) {
    const size_t colon = ref.find(':');
    if (colon != std::string::npos) {
      base = ref.substr(0, colon);
      overrides = ref.substr(colon + 1);
    }
  }
  std::string text, origin;
  if (auto b = builtin_text(base); !b.empty()) {
    text = std::string(b);
    origin = base;
  } else if (fs::is_regular_file(base, ec)) {
    text = read_text_file(base, "space file", JsonLimits{}.max_bytes);
    origin = base;
  } else {
    std::string names;
    for (const auto& n : builtin_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("space '" + printable_excerpt(base, 120) + "'",
                "no built-in space or file of that name (built-in: " + names + ")");
  }
  json doc = read_json(text, origin);
  if (!overrides.empty()) {
    if (!doc.is_object()) throw Error(origin, "a space document must be a JSON object");
    apply_overrides(doc, overrides, ref);
  }
  Space s = from_json(
      doc, overrides.empty() ? origin : origin + " (" + printable_excerpt(ref, 120) + ")");
  s.impl_->ref = ref;
  return s;
}

std::optional<uint64_t> Space::size() const {
  uint64_t n = 1;
  for (const auto& d : impl_->decisions) {
    if (n > UINT64_MAX / d.options.size()) return std::nullopt;
    n *= d.options.size();
  }
  return n;
}

double Space::log10_size() const {
  double s = 0;
  for (const auto& d : impl_->decisions) s += std::log10(static_cast<double>(d.options.size()));
  return s;
}

void Space::check(const Arch& a) const {
  const auto& ds = impl_->decisions;
  if (a.choice.size() != ds.size())
    throw Error("arch", "has " + std::to_string(a.choice.size()) + " choices, space '" +
                            impl_->name + "' has " + std::to_string(ds.size()) + " decisions");
  for (size_t i = 0; i < ds.size(); ++i)
    if (a.choice[i] >= ds[i].options.size())
      throw Error("arch, decision '" + ds[i].name + "'",
                  "option index " + std::to_string(a.choice[i]) + " is out of range (" +
                      std::to_string(ds[i].options.size()) + " options)");
}

Arch Space::sample(Rng& rng) const {
  Arch a;
  a.choice.reserve(impl_->decisions.size());
  for (const auto& d : impl_->decisions)
    a.choice.push_back(static_cast<uint32_t>(rng.below(d.options.size())));
  return a;
}

Arch Space::mutate(const Arch& a, Rng& rng, Mutation* what) const {
  check(a);
  std::vector<size_t> mutable_decisions;
  for (size_t i = 0; i < impl_->decisions.size(); ++i)
    if (impl_->decisions[i].options.size() > 1) mutable_decisions.push_back(i);
  if (mutable_decisions.empty())
    throw Error("space '" + impl_->name + "'", "no decision has two options: nothing to mutate");
  const size_t d = mutable_decisions[rng.below(mutable_decisions.size())];
  const uint32_t from = a.choice[d];
  uint32_t to = static_cast<uint32_t>(rng.below(impl_->decisions[d].options.size() - 1));
  if (to >= from) ++to;
  Arch b = a;
  b.choice[d] = to;
  if (what) *what = {d, from, to};
  return b;
}

Arch Space::crossover(const Arch& a, const Arch& b, Rng& rng) const {
  check(a);
  check(b);
  Arch c = a;
  for (size_t i = 0; i < c.choice.size(); ++i)
    if (rng.below(2)) c.choice[i] = b.choice[i];
  return c;
}

void Space::enumerate(const std::function<bool(const Arch&)>& visit) const {
  const auto& ds = impl_->decisions;
  Arch a{std::vector<uint32_t>(ds.size(), 0)};
  while (true) {
    if (!visit(a)) return;
    size_t i = ds.size();
    while (i > 0) {
      --i;
      if (++a.choice[i] < ds[i].options.size()) break;
      a.choice[i] = 0;
      if (i == 0) return;
    }
  }
}

std::vector<Arch> Space::neighbours(const Arch& a) const {
  check(a);
  std::vector<Arch> out;
  for (size_t i = 0; i < a.choice.size(); ++i)
    for (uint32_t o = 0; o < impl_->decisions[i].options.size(); ++o)
      if (o != a.choice[i]) {
        Arch b = a;
        b.choice[i] = o;
        out.push_back(std::move(b));
      }
  return out;
}

size_t Space::one_hot_size() const {
  size_t n = 0;
  for (const auto& d : impl_->decisions) n += d.options.size();
  return n;
}

std::vector<float> Space::one_hot(const Arch& a) const {
  check(a);
  std::vector<float> v(one_hot_size(), 0.0f);
  size_t offset = 0;
  for (size_t i = 0; i < a.choice.size(); ++i) {
    v[offset + a.choice[i]] = 1.0f;
    offset += impl_->decisions[i].options.size();
  }
  return v;
}

std::string Space::key(const Arch& a) const {
  check(a);
  return impl_->skeleton->key(Choice(impl_->decisions, a));
}

Arch Space::parse_key(std::string_view key) const {
  Arch a = impl_->skeleton->parse_key(key, impl_->decisions);
  check(a);
  return a;
}

uint64_t Space::hash(const Arch& a) const {
  return fnv1a64(key(a));
}

std::string Space::equivalence_key(const Arch& a) const {
  check(a);
  return impl_->skeleton->equivalence_key(Choice(impl_->decisions, a));
}

json Space::arch_to_json(const Arch& a) const {
  char hex[19];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash(a)));
  json choices = json::object();
  for (size_t i = 0; i < a.choice.size(); ++i)
    choices[impl_->decisions[i].name] = impl_->decisions[i].options[a.choice[i]];
  return json{{"space", impl_->name}, {"key", key(a)}, {"hash", hex}, {"choices", choices}};
}

Arch Space::arch_from_json(const json& j) const {
  const std::string origin = "arch";
  const Node n(j, "", origin);
  n.only({"space", "key", "hash", "choices"});
  if (n.has("space") && n.at("space").string() != impl_->name)
    n.at("space").fail("is '" + printable_excerpt(n.at("space").string(), 40) + "', not '" +
                       impl_->name + "'");
  std::optional<Arch> from_key, from_choices;
  if (n.has("key")) from_key = parse_key(n.at("key").string());
  if (n.has("choices")) {
    const Node c = n.at("choices");
    c.require_object();
    Arch a;
    for (const auto& d : impl_->decisions) {
      if (!c.has(d.name.c_str()))
        c.fail("missing decision '" + printable_excerpt(d.name, 40) + "'");
      const Node v = c.at(d.name.c_str());
      auto it = std::find(d.options.begin(), d.options.end(), v.j());
      if (it == d.options.end())
        v.fail(json_excerpt(v.j()) + " is not an option of '" + printable_excerpt(d.name, 40) +
               "'");
      a.choice.push_back(static_cast<uint32_t>(it - d.options.begin()));
    }
    if (c.j().size() != impl_->decisions.size()) c.fail("has decisions the space does not have");
    from_choices = a;
  }
  if (!from_key && !from_choices) n.fail("an arch needs a 'key' or 'choices'");
  if (from_key && from_choices && *from_key != *from_choices)
    n.fail("'key' and 'choices' describe different architectures");
  Arch a = from_key ? *from_key : *from_choices;
  if (n.has("hash")) {
    char hex[19];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash(a)));
    if (n.at("hash").string() != hex)
      n.at("hash").fail("is " + printable_excerpt(n.at("hash").string(), 40) +
                        ", the key hashes to " + hex);
  }
  return a;
}

LayerGraph Space::lower(const Arch& a) const {
  check(a);
  LayerGraph g = impl_->skeleton->lower(Choice(impl_->decisions, a), impl_->input, impl_->classes);
  g.check_output();
  return g;
}

}  // namespace minas
