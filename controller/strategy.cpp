#include "controller/strategy.h"

#include <algorithm>
#include <vector>

#include "searchspace/error.h"

namespace minas {

RandomStrategy::RandomStrategy(const Space& space, uint64_t seed) : space_(space), rng_(seed) {}

std::optional<Arch> RandomStrategy::ask() {
  const auto size = space_.size();
  if (size && asked_.size() >= *size) return std::nullopt;
  // Rejection keeps draws uniform over the architectures not yet asked. Once
  // most of a (necessarily small) space is taken, it stops paying, and the
  // remaining architectures are listed and one is drawn among them.
  for (int attempt = 0; attempt < 64; ++attempt) {
    Arch a = space_.sample(rng_);
    if (asked_.insert(space_.hash(a)).second) return a;
  }
  std::vector<Arch> left;
  space_.enumerate([&](const Arch& a) {
    if (!asked_.count(space_.hash(a))) left.push_back(a);
    return true;
  });
  if (left.empty()) return std::nullopt;
  Arch a = left[rng_.below(left.size())];
  asked_.insert(space_.hash(a));
  return a;
}

nlohmann::json RandomStrategy::save() const {
  std::vector<uint64_t> asked(asked_.begin(), asked_.end());
  std::sort(asked.begin(), asked.end());
  return {{"strategy", name()}, {"rng", rng_.state()}, {"asked", asked}};
}

void RandomStrategy::restore(const nlohmann::json& state) {
  try {
    if (state.at("strategy") != name())
      throw Error("strategy state", "is for '" + state.at("strategy").dump() + "', not 'random'");
    rng_.set_state(state.at("rng").get<std::array<uint64_t, 4>>());
    const auto asked = state.at("asked").get<std::vector<uint64_t>>();
    asked_ = std::unordered_set<uint64_t>(asked.begin(), asked.end());
  } catch (const nlohmann::json::exception& e) {
    throw Error("strategy state", e.what());
  }
}

}  // namespace minas
