#pragma once
// How the controller asks what to train next and tells what came of it. A
// strategy is asynchronous: ask may be called again before earlier asks are
// told, as workers free up. Higher objective is better.
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "searchspace/rng.h"
#include "searchspace/space.h"

namespace minas {

class Strategy {
 public:
  virtual ~Strategy() = default;
  // The next architecture to train; nullopt when the strategy has none left.
  virtual std::optional<Arch> ask() = 0;
  // A finished trial and its objective.
  virtual void tell(const Arch& arch, double objective) = 0;
  // A trial that failed for good (after its retries).
  virtual void tell_failure(const Arch& arch) = 0;
  // The whole state, so a search resumes where it stopped.
  virtual nlohmann::json save() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;
  // On resume, after restore(): a trial the store holds, so that what
  // happened after the last save is known too (its objective if it finished).
  virtual void replay(const Arch& arch, std::optional<double> objective) = 0;
  virtual std::string name() const = 0;
};

// Uniform over the space, never repeating an architecture already asked in
// this experiment; nullopt once every architecture has been asked.
class RandomStrategy final : public Strategy {
 public:
  RandomStrategy(const Space& space, uint64_t seed);
  std::optional<Arch> ask() override;
  void tell(const Arch&, double) override {}
  void tell_failure(const Arch&) override {}
  nlohmann::json save() const override;
  void restore(const nlohmann::json& state) override;
  void replay(const Arch& arch, std::optional<double>) override {
    asked_.insert(space_.hash(arch));
  }
  std::string name() const override { return "random"; }

 private:
  const Space& space_;
  Rng rng_;
  std::unordered_set<uint64_t> asked_;  // hashes of canonical keys
};

}  // namespace minas
