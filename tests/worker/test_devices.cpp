#include <doctest/doctest.h>

#include <sched.h>
#include <nlohmann/json.hpp>

#include "searchspace/error.h"
#include "trainer/network.h"
#include "worker/devices.h"
#include "worker/worker.h"

TEST_CASE("devices: a cpu slot with the threads of the affinity mask, then one slot per GPU") {
  const auto slots = minas::detect_slots();
  REQUIRE(!slots.empty());
  CHECK(slots[0].id == "cpu");
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  CHECK(slots[0].threads == CPU_COUNT(&set));
  CHECK(slots[0].memory_bytes > 0);
  // The CPU's model and the instruction set oneDNN runs on it.
  CHECK(slots[0].name.find(" (oneDNN " + minas::cpu_isa() + ")") != std::string::npos);
  for (size_t i = 1; i < slots.size(); ++i) {
    CHECK(slots[i].id == "cuda:" + std::to_string(i - 1));
    CHECK(slots[i].memory_bytes > 0);
    CHECK(!slots[i].name.empty());
  }
  if (!minas::built_with_cuda()) CHECK(slots.size() == 1);
  const auto j = minas::to_json(slots);
  CHECK(j[0]["id"] == "cpu");
  CHECK(j[0]["threads"] == slots[0].threads);
}

TEST_CASE("devices: the cpu slot shrinks with the affinity mask") {
  cpu_set_t all, one;
  REQUIRE(sched_getaffinity(0, sizeof all, &all) == 0);
  int first = 0;
  while (!CPU_ISSET(first, &all)) ++first;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  const auto slots = minas::detect_slots();
  REQUIRE(sched_setaffinity(0, sizeof all, &all) == 0);
  CHECK(slots[0].threads == 1);
}

TEST_CASE("devices: several slots on one GPU are written cuda:NxK, and checked") {
  const size_t gpus = minas::detect_slots().size() - 1;
  if (gpus == 0) {
    CHECK_THROWS_WITH_AS(minas::parse_devices("cuda:0x3"), doctest::Contains("no GPU cuda:0"),
                         minas::Error);
  } else {
    const auto slots = minas::parse_devices("cuda:0x3");
    REQUIRE(slots.size() == 3);
    CHECK(slots[0].id == "cuda:0");
    CHECK(slots[1].id == "cuda:0.1");
    CHECK(slots[2].id == "cuda:0.2");
  }
  CHECK_THROWS_WITH_AS(minas::parse_devices("cuda:0x0"), doctest::Contains("positive integer"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(minas::parse_devices("cuda:x2"), doctest::Contains("not cuda:N"),
                       minas::Error);
}
