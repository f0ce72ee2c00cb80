#include <doctest/doctest.h>

#include <set>

#include "controller/strategy.h"
#include "searchspace/error.h"

TEST_CASE("strategy: random never repeats and exhausts a small space exactly") {
  const auto space = minas::Space::load("nb201");
  minas::RandomStrategy s(space, 1);
  std::set<std::string> seen;
  while (auto a = s.ask()) REQUIRE(seen.insert(space.key(*a)).second);
  CHECK(seen.size() == 15625);
  CHECK_FALSE(s.ask().has_value());
}

TEST_CASE("strategy: random resumes from its saved state with the same draws") {
  const auto space = minas::Space::load("small");
  minas::RandomStrategy a(space, 5);
  for (int i = 0; i < 100; ++i) a.ask();
  const auto state = a.save();
  minas::RandomStrategy b(space, 999);
  b.restore(nlohmann::json::parse(state.dump()));
  for (int i = 0; i < 100; ++i) CHECK(space.key(*a.ask()) == space.key(*b.ask()));
  nlohmann::json wrong = state;
  wrong["strategy"] = "evolution";
  CHECK_THROWS_AS(b.restore(wrong), minas::Error);
  CHECK_THROWS_AS(b.restore(nlohmann::json{{"strategy", "random"}}), minas::Error);
}
