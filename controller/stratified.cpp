#include "controller/stratified.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "searchspace/error.h"

namespace minas {

StratifiedStrategy::StratifiedStrategy(const Space& space, const StrategySettings& settings)
    : space_(space), seed_(settings.seed) {
  const auto size = space.size();
  if (!size || *size > kMaxSpaceSize)
    throw Error("stratified", "space '" + space.name() +
                                  "' has more architectures than the " +
                                  std::to_string(kMaxSpaceSize) + " it can enumerate");
  const auto n = static_cast<uint64_t>(settings.sample_size);
  if (settings.sample_size < 1 || n > *size)
    throw Error("stratified", "sample_size " + std::to_string(settings.sample_size) +
                                  " must be between 1 and the space's " + std::to_string(*size) +
                                  " architectures");
  // (params, key order) for every architecture: ties keep enumeration order,
  // so the strata do not depend on the sort's stability.
  std::vector<std::pair<int64_t, Arch>> all;
  all.reserve(*size);
  space.enumerate([&](const Arch& a) {
    all.emplace_back(space.lower(a).params(), a);
    return true;
  });
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  Rng rng(seed_);
  // Stratum i is [i*N/n, (i+1)*N/n): every stratum non-empty since n <= N.
  const uint64_t total = all.size();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t lo = i * total / n, hi = (i + 1) * total / n;
    sample_.push_back(all[lo + rng.below(hi - lo)].second);
  }
  // Asked in a seeded random order (Fisher-Yates).
  for (size_t i = sample_.size(); i > 1; --i) std::swap(sample_[i - 1], sample_[rng.below(i)]);
}

std::optional<Candidate> StratifiedStrategy::ask() {
  auto a = take_initial(space_, seen_);
  while (!a && next_ < sample_.size()) {
    const Arch& c = sample_[next_++];
    if (!seen_.count(space_.hash(c)) && admissible(c)) a = c;
  }
  if (!a) return std::nullopt;
  seen_.insert(space_.hash(*a));
  return Candidate{*a, std::nullopt, {}};
}

nlohmann::json StratifiedStrategy::save() const {
  nlohmann::json j = base_state();
  j["strategy"] = name();
  j["next"] = next_;
  return j;
}

void StratifiedStrategy::restore(const nlohmann::json& state) {
  try {
    if (state.at("strategy") != name())
      throw Error("strategy state", "is for " + state.at("strategy").dump() + ", not 'stratified'");
    const auto next = state.at("next").get<size_t>();
    if (next > sample_.size())
      throw Error("strategy state", "next " + std::to_string(next) + " is past the sample's " +
                                        std::to_string(sample_.size()));
    next_ = next;
    restore_base(state);
    seen_.clear();  // rebuilt by replay
  } catch (const nlohmann::json::exception& e) {
    throw Error("strategy state", e.what());
  }
}

}  // namespace minas
