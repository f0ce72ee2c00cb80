// The main of the GPU test binaries: on a machine without a GPU they exit 77,
// which CTest reports as skipped; with one, doctest runs every case.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "trainer/cuda/device.h"

int main(int argc, char** argv) {
  if (minas::cuda::devices().empty()) {
    std::printf("no GPU on this machine: skipped\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
