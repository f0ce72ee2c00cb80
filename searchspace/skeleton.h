#pragma once
// Internal to searchspace/: the pieces a skeleton type is made of. A skeleton
// reads its part of a space document, says which decisions it uses where (so
// every option is checked against every use before any architecture exists),
// and lowers a resolved choice to a LayerGraph.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "searchspace/error.h"
#include "searchspace/json_excerpt.h"
#include "searchspace/layer_graph.h"
#include "searchspace/space.h"

namespace minas::detail {

using nlohmann::json;

// A JSON value with its place in a document, for errors that say where.
class Node {
 public:
  Node(const json& j, std::string ptr, const std::string& origin)
      : j_(&j), ptr_(std::move(ptr)), origin_(&origin) {}

  const json& j() const { return *j_; }
  const std::string& ptr() const { return ptr_; }
  const std::string& origin() const { return *origin_; }
  // The pointer holds the file's keys: escaped and cut like any quoted text.
  std::string where() const {
    return *origin_ + ": " + (ptr_.empty() ? "/" : printable_excerpt(ptr_, 200));
  }
  [[noreturn]] void fail(const std::string& why) const { throw Error(where(), why); }

  bool has(const char* key) const { return j_->is_object() && j_->contains(key); }
  Node at(const char* key) const;  // a required field of an object
  Node at(size_t i) const;         // an element of an array
  size_t size() const { return j_->size(); }
  // Fails on any field not in `allowed`, naming the allowed ones.
  void only(std::initializer_list<const char*> allowed) const;
  void require_object() const;
  void require_array(size_t min_size) const;
  int integer(int lo, int hi) const;
  double number(double lo, double hi) const;
  std::string string() const;
  std::string one_of(std::initializer_list<const char*> values) const;

 private:
  const json* j_;
  std::string ptr_;
  const std::string* origin_;
};

std::string escape_pointer_token(const std::string& s);

// What a skeleton place accepts; each option of a decision used there must fit.
enum class SlotKind { Width, CellOp, ChainOp, ChainOpNoSkip };

// A place in the skeleton: a literal value or a decision's chosen option.
struct Slot {
  SlotKind kind = SlotKind::Width;
  int decision = -1;  // -1: literal
  json literal;
  std::string ptr;  // where in the document, for errors
};

// Resolves slots for one architecture.
class Choice {
 public:
  Choice(const std::vector<Decision>& ds, const Arch& a) : ds_(ds), a_(a) {}
  const json& value(const Slot& s) const {
    return s.decision < 0 ? s.literal : ds_[s.decision].options[a_.choice[s.decision]];
  }
  const std::vector<Decision>& decisions() const { return ds_; }
  const Arch& arch() const { return a_; }

 private:
  const std::vector<Decision>& ds_;
  const Arch& a_;
};

class Skeleton {
 public:
  virtual ~Skeleton() = default;
  virtual const std::vector<Slot>& slots() const = 0;
  // Checks one value for a slot kind; returns the reason it does not fit, if not.
  virtual std::optional<std::string> check_value(SlotKind kind, const json& v) const = 0;
  virtual LayerGraph lower(const Choice& c, Shape input, int classes) const = 0;
  // Canonical key and its inverse; the default is positional ('|'-joined).
  virtual std::string key(const Choice& c) const;
  virtual Arch parse_key(std::string_view key, const std::vector<Decision>& ds) const;
  virtual std::string equivalence_key(const Choice& c) const = 0;
};

// Reads a slot: a literal or {"decision": NAME}; `index` maps names to decisions.
Slot read_slot(const Node& n, SlotKind kind,
               const std::function<int(const Node&, const std::string&)>& index);

std::unique_ptr<Skeleton> make_cell_skeleton(
    const Node& n, const std::function<int(const Node&, const std::string&)>& index);
std::unique_ptr<Skeleton> make_chain_skeleton(
    const Node& n, const std::function<int(const Node&, const std::string&)>& index);

// The option text used in keys: strings as they are, numbers as JSON writes them.
std::string label_of(const json& v);

}  // namespace minas::detail
