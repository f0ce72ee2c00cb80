#pragma once
// A fixed, seeded sample of the space stratified over parameter count, for
// building a ground-truth table (experiments/ground-truth/): every
// architecture of the space is lowered and sorted by parameters, the sorted
// list is cut into `sample_size` strata of (nearly) equal count, and one
// architecture is drawn uniformly from each. The warm start
// (StrategySettings::initial) is asked first; then the strata's picks in a
// seeded random order, so that a table cut short is still spread over the
// whole range; then nothing (the strategy is done).
//
// Only spaces small enough to enumerate: the sample is of the whole space.
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "controller/strategy.h"

namespace minas {

class StratifiedStrategy final : public Strategy {
 public:
  // At most this many architectures are enumerated and lowered.
  static constexpr uint64_t kMaxSpaceSize = 2'000'000;

  StratifiedStrategy(const Space& space, const StrategySettings& settings);
  std::optional<Candidate> ask() override;
  void tell(const Arch&, const Score&) override {}
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, const std::optional<Score>&) override {
    seen_.insert(space_.hash(arch));
  }
  std::string name() const override { return "stratified"; }

  // The strata's picks in the order they are asked (the warm start not included).
  const std::vector<Arch>& sample() const { return sample_; }

 private:
  const Space& space_;
  uint64_t seed_;
  std::vector<Arch> sample_;
  size_t next_ = 0;  // in the saved state
  std::unordered_set<uint64_t> seen_;
};

}  // namespace minas
