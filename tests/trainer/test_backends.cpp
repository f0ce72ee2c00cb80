// The backend registry (trainer/backends.h): the CPU's entry always, the GPU's
// exactly when the build configured the CUDA backend, and device names read
// and refused as before.
#include <doctest/doctest.h>

#include <functional>
#include <set>
#include <string>

#include "searchspace/error.h"
#include "trainer/backends.h"

using namespace minas;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("backends: the registry holds the CPU first, and the GPU as the build was configured") {
  REQUIRE(!backend_registry().empty());
  CHECK(std::string(backend_registry().front().kind) == "cpu");
  std::set<std::string> kinds;
  for (const BackendEntry& e : backend_registry()) {
    CAPTURE(e.kind);
    CHECK(kinds.insert(e.kind).second);
    const bool has_factory = e.make != nullptr;
    CHECK(has_factory);
    CHECK(find_backend(e.kind) == &e);
  }
  CHECK(find_backend("tpu") == nullptr);
  // MINAS_TEST_GPU_BACKEND: whether CMake configured the CUDA backend (tests/CMakeLists.txt).
  CHECK(built_with_gpu_backend() == bool(MINAS_TEST_GPU_BACKEND));
  CHECK((find_backend("cuda") != nullptr) == bool(MINAS_TEST_GPU_BACKEND));
}

TEST_CASE("backends: device names pick a backend or are refused with the reason") {
  CHECK(cuda_index("cpu") == -1);
  CHECK(cuda_index("cpu.3") == -1);
  CHECK(cuda_index("cuda:0") == 0);
  CHECK(cuda_index("cuda:12") == 12);
  CHECK(cuda_index("cuda:2.1") == 2);
  CHECK(contains(error_of([] { cuda_index("cuda:x"); }), "a GPU is cuda:N"));
  CHECK(contains(error_of([] { cuda_index("cuda:1234"); }), "a GPU is cuda:N"));
  CHECK(make_backend("cpu", 1) != nullptr);
  CHECK(make_backend("cpu.2", 1) != nullptr);
  CHECK(contains(error_of([] { make_backend("gpu", 1); }), "not a device: cpu or cuda:N"));
  CHECK(contains(error_of([] { make_backend("cuda:x", 1); }), "a GPU is cuda:N"));
  if (!built_with_gpu_backend()) {
    CHECK(contains(error_of([] { make_backend("cuda:0", 0); }), "this build has no GPU backend"));
    CHECK(contains(error_of([] { make_gang_nccl_id(); }), "this build has no GPU backend"));
  }
}
