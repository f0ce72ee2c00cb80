// GPU checks: run on a machine with a GPU; elsewhere the binary exits 77 and
// CTest reports it skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "trainer/cuda/device.h"
#include "worker/devices.h"

TEST_CASE("cuda: every GPU is listed with a name and memory, and is a worker slot") {
  const auto gpus = minas::cuda::devices();
  REQUIRE(!gpus.empty());
  for (const auto& d : gpus) {
    CHECK(!d.name.empty());
    CHECK(d.memory_bytes > (size_t{1} << 30));
    CHECK(d.compute_major >= 7);
  }
  CHECK(minas::detect_slots().size() == gpus.size() + 1);
}

TEST_CASE("cuda: a kernel built for this GPU runs and computes") {
  std::vector<float> a(1000), b(1000);
  for (int i = 0; i < 1000; ++i) {
    a[i] = static_cast<float>(i);
    b[i] = 0.5f * static_cast<float>(i);
  }
  const auto c = minas::cuda::add_on_device(0, a, b);
  REQUIRE(c.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(c[i] == doctest::Approx(1.5 * i));
}

int main(int argc, char** argv) {
  if (minas::cuda::devices().empty()) {
    std::printf("no GPU on this machine: skipped (%s)\n", minas::cuda::library_versions().c_str());
    return 77;
  }
  std::printf("%s\n", minas::cuda::library_versions().c_str());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
