// The GPU trainer's own kernels against their CPU specifications: batches by
// an epoch plan against the CPU loader's, softmax cross entropy against
// trainer/loss.h, the momentum update and LARS against trainer/optim.h. Run on
// a machine with a GPU; elsewhere the binary exits 77 and CTest reports it
// skipped (tests/gpu/gpu_main.cpp). Tolerances are stated per kernel.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <span>
#include <thread>
#include <vector>

#include "searchspace/rng.h"
#include "trainer/cuda/check.h"
#include "trainer/cuda/device.h"
#include "trainer/cuda/kernels.h"
#include "trainer/cuda/nccl_comm.h"
#include "trainer/data.h"
#include "trainer/loss.h"
#include "trainer/optim.h"

using namespace minas;

namespace {

// A device copy of a host vector, copied back on request.
template <class T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& host) : n_(host.size()) {
    MINAS_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(1, n_) * sizeof(T)));
    if (n_) MINAS_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(size_t n) : Dev(std::vector<T>(n)) {}
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() { return p_; }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    MINAS_CUDA_CHECK(cudaDeviceSynchronize());
    if (n_) MINAS_CUDA_CHECK(cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

}  // namespace

TEST_CASE("cuda kernels: batches by the epoch plan are the CPU loader's, bit for bit") {
  data::Dataset ds;
  ds.source = "made-up";
  ds.shape = {3, 7, 6};
  ds.classes = 4;
  Rng rng(3);
  ds.pixels.resize(50 * ds.image_size());
  for (auto& p : ds.pixels) p = static_cast<uint8_t>(rng.below(256));
  ds.labels.resize(50);
  for (auto& l : ds.labels) l = static_cast<uint8_t>(rng.below(4));
  data::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 9;
  o.augment = {2, true};
  o.drop_last = true;
  o.norm = data::compute_normalization(ds);
  const auto idx = data::all_indices(ds);
  const data::Normalizer normalizer(o.norm, 3);
  std::vector<float> table;
  for (int c = 0; c < 3; ++c)
    table.insert(table.end(), normalizer.table(c), normalizer.table(c) + 256);
  Dev<uint8_t> pixels(ds.pixels), labels(ds.labels);
  Dev<float> tab(table);
  data::BatchLoader loader(ds, idx, o);
  for (uint64_t epoch = 0; epoch < 2; ++epoch) {
    const data::EpochPlan plan = data::epoch_plan(idx, o, epoch);
    Dev<uint32_t> index(plan.index);
    Dev<uint8_t> dy(plan.dy), dx(plan.dx), flip(plan.flip);
    const cuda::DeviceData dd{pixels.get(), labels.get(), 3, 7, 6, tab.get()};
    const cuda::DevicePlan dp{index.get(), dy.get(), dx.get(), flip.get(), plan.pad};
    data::Batch b;
    const int64_t per_epoch = static_cast<int64_t>(idx.size()) / 8;
    for (int64_t batch = 0; loader.next(b); ++batch) {
      // Any step of this epoch's position `batch`: the step modulo the epoch.
      Dev<int64_t> step(std::vector<int64_t>{static_cast<int64_t>(epoch) * per_epoch + batch});
      Dev<float> x(static_cast<size_t>(b.n) * ds.image_size());
      Dev<int32_t> y(static_cast<size_t>(b.n));
      cuda::gather_batch(dd, dp, step.get(), per_epoch, b.n, x.get(), y.get(), nullptr);
      const auto gx = x.host();
      const auto gy = y.host();
      CHECK(std::equal(gx.begin(), gx.end(), b.x));  // the same table entries: exact
      CHECK(std::equal(gy.begin(), gy.end(), b.y));
    }
  }
}

TEST_CASE("cuda kernels: softmax cross entropy agrees with the CPU's within 1e-6") {
  const int n = 37, k = 10;
  Rng rng(4);
  std::vector<float> z(n * k);
  std::vector<int32_t> y(n);
  for (float& v : z) v = static_cast<float>(rng.uniform() * 8 - 4);
  for (int32_t& l : y) l = static_cast<int32_t>(rng.below(k));
  std::vector<float> dz(n * k);
  int64_t right = 0;
  const double loss = softmax_cross_entropy(z.data(), y.data(), n, k, 0.1f, dz.data(), &right);
  Dev<float> gz(z), gdz(static_cast<size_t>(n * k));
  Dev<int32_t> gy(y);
  Dev<double> sum(1);
  Dev<unsigned long long> correct(1);
  cuda::softmax_xent(gz.get(), gy.get(), n, k, 0.1f, gdz.get(), sum.get(), correct.get(), nullptr);
  CHECK(sum.host()[0] / n == doctest::Approx(loss).epsilon(1e-9));
  CHECK(static_cast<int64_t>(correct.host()[0]) == right);
  const auto got = gdz.host();
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(dz[i]).epsilon(1e-6));
}

TEST_CASE("cuda kernels: the momentum update and LARS agree with the CPU's within 1e-5") {
  const size_t n = 10007;
  Rng rng(5);
  std::vector<float> w(n), g(n), buf(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = static_cast<float>(rng.uniform() - 0.5);
    g[i] = static_cast<float>(rng.uniform() - 0.5) * 0.1f;
    buf[i] = static_cast<float>(rng.uniform() - 0.5) * 0.01f;
  }
  const std::vector<float> lr{0.0f, 0.05f, 0.2f}, mom{0.0f, 0.9f, 0.85f};
  for (int variant = 0; variant < 4; ++variant) {
    CAPTURE(variant);
    const bool nesterov = variant & 1, lars = variant & 2;
    cuda::DeviceRule dr;
    dr.nesterov = nesterov;
    dr.lars = lars;
    dr.l2 = 5e-4f;
    dr.weight_decay = 5e-4f;
    UpdateRule r;
    r.lr = lr[2];
    r.momentum = mom[2];
    r.l2 = 5e-4f;
    r.nesterov = nesterov;
    r.trust_ratio = lars ? lars_trust_ratio(w.data(), g.data(), n, 0.001, 5e-4) : 1.0f;
    std::vector<float> cw = w, cbuf = buf;
    momentum_update(cw.data(), g.data(), cbuf.data(), n, r);
    Dev<float> gw(w), gg(g), gb(buf), glr(lr), gm(mom), norms(cuda::kNormFloats);
    Dev<int64_t> step(std::vector<int64_t>{2});
    cuda::squared_norms(gw.get(), gg.get(), n, norms.get(), nullptr);
    double ww = 0, gg2 = 0;
    for (size_t i = 0; i < n; ++i) {
      ww += static_cast<double>(w[i]) * w[i];
      gg2 += static_cast<double>(g[i]) * g[i];
    }
    const auto hn = norms.host();
    CHECK(hn[0] == doctest::Approx(ww).epsilon(1e-5));
    CHECK(hn[1] == doctest::Approx(gg2).epsilon(1e-5));
    cuda::momentum_update(gw.get(), gg.get(), gb.get(), n, glr.get(), gm.get(), step.get(), dr,
                          norms.get(), nullptr, nullptr);
    const auto hw = gw.host(), hb = gb.host();
    for (size_t i = 0; i < n; i += 97) {
      CHECK(hw[i] == doctest::Approx(cw[i]).epsilon(1e-5));
      CHECK(hb[i] == doctest::Approx(cbuf[i]).epsilon(1e-5));
    }
  }
  Dev<int64_t> step(std::vector<int64_t>{41});
  cuda::advance_step(step.get(), nullptr);
  CHECK(step.host()[0] == 42);
}

TEST_CASE("nccl: a single-rank group runs end to end, with two GPUs, ranks sum across them") {
  auto one = cuda::make_nccl_group({0});
  REQUIRE(one.size() == 1);
  CHECK(one[0]->size() == 1);
  std::vector<float> v{1.5f, -2.0f, 3.25f};
  Dev<float> d(v);
  one[0]->all_reduce_sum(std::span<float>(d.get(), v.size()));
  one[0]->broadcast(std::span<float>(d.get(), v.size()), 0);
  CHECK(d.host() == v);
  if (cuda::devices().size() < 2) {
    MESSAGE("one GPU: the two-rank case is not run");
    return;
  }
  auto two = cuda::make_nccl_group({0, 1});
  std::vector<std::vector<float>> got(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      MINAS_CUDA_CHECK(cudaSetDevice(r));
      Dev<float> buf(std::vector<float>{static_cast<float>(r + 1), 10.0f});
      two[static_cast<size_t>(r)]->all_reduce_sum(std::span<float>(buf.get(), 2));
      got[static_cast<size_t>(r)] = buf.host();
    });
  for (auto& t : ranks) t.join();
  CHECK(got[0] == std::vector<float>{3.0f, 20.0f});
  CHECK(got[1] == got[0]);
}
