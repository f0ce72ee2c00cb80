#pragma once
// A search space: named decisions, each a list of options, and a skeleton
// that turns one choice per decision into a network. Spaces are JSON
// documents (docs/spaces.md); the built-in ones ship as searchspace/spaces/*.json
// and are compiled into the binary, reachable by name.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "searchspace/layer_graph.h"
#include "searchspace/rng.h"

namespace minas {

struct Decision {
  std::string name;
  std::vector<nlohmann::json> options;     // strings or numbers
  std::string label(size_t option) const;  // the option as it is written in keys
};

// One architecture of one space: the option index chosen for every decision.
struct Arch {
  std::vector<uint32_t> choice;
  bool operator==(const Arch&) const = default;
};

// What a mutation changed: one decision, from one option to another.
struct Mutation {
  size_t decision = 0;
  uint32_t from = 0, to = 0;
};

class Space {
 public:
  // A reference is a built-in name or a file path, optionally followed by
  // overrides: "nb201:cells=1,channels=8,input=1x28x28". Overrides set the
  // top-level `input` and `classes` or a field of the skeleton (dotted path).
  static Space load(const std::string& ref);
  // Parses a space document; `origin` names it in errors (a file name).
  static Space parse(std::string_view text, const std::string& origin);
  static Space from_json(const nlohmann::json& doc, const std::string& origin);
  // The built-in spaces, by name, in a stable order.
  static std::vector<std::string> builtin_names();
  static std::string_view builtin_text(const std::string& name);  // empty if unknown

  Space(Space&&) noexcept;
  Space& operator=(Space&&) noexcept;
  ~Space();

  const std::string& name() const;
  const std::string& description() const;
  const std::string& ref() const;      // how it was loaded (name or file, with overrides)
  const nlohmann::json& spec() const;  // the document with overrides applied
  const std::vector<Decision>& decisions() const;
  const std::string& skeleton_type() const;  // "cell" or "chain"
  std::optional<uint64_t> size() const;      // exact number of architectures, if it fits
  double log10_size() const;

  Arch sample(Rng& rng) const;  // every decision uniform, so every architecture equally likely
  // Changes exactly one decision (chosen uniformly among those with more than
  // one option) to a different option (uniform among the others).
  Arch mutate(const Arch& a, Rng& rng, Mutation* what = nullptr) const;
  Arch crossover(const Arch& a, const Arch& b, Rng& rng) const;  // uniform, per decision
  // Calls visit for every architecture in key order of the mixed-radix counter
  // (last decision fastest) until it returns false.
  void enumerate(const std::function<bool(const Arch&)>& visit) const;
  std::vector<Arch> neighbours(const Arch& a) const;  // all archs one mutation away
  size_t one_hot_size() const;
  std::vector<float> one_hot(const Arch& a) const;

  // The canonical key: for cell spaces the NAS-Bench-201 cell string, for
  // chain spaces the options in decision order joined by '|'.
  std::string key(const Arch& a) const;
  Arch parse_key(std::string_view key) const;  // throws Error naming the field
  uint64_t hash(const Arch& a) const;          // FNV-1a 64 of the key
  // Equal for architectures that compute the same function up to isomorphism
  // and dead parts (cells: none-edges, dead edges, node relabelling; chains:
  // skip layers). An extra key: it never changes the canonical one.
  std::string equivalence_key(const Arch& a) const;

  nlohmann::json arch_to_json(const Arch& a) const;  // {"space","key","hash","choices"}
  Arch arch_from_json(const nlohmann::json& j) const;
  void check(const Arch& a) const;  // throws Error if a is not of this space

  LayerGraph lower(const Arch& a) const;

 private:
  struct Impl;
  explicit Space(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

uint64_t fnv1a64(std::string_view bytes);

}  // namespace minas
