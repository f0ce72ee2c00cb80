#include "worker/screener.h"

#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <tuple>

#include "searchspace/error.h"
#include "searchspace/space.h"
#include "trainer/backends.h"
#include "trainer/data.h"
#include "trainer/proxies.h"

namespace minas {
namespace {

using Clock = std::chrono::steady_clock;

class ProxyScreener final : public Screener {
 public:
  std::vector<ScreenedScores> screen(const ScreenRequest& req,
                                     const std::function<bool()>& cancelled) override {
    std::vector<ScreenedScores> out;
    // What fails for the whole batch (its space, an evaluator, the data set)
    // fails each of its architectures, with the same reason.
    auto fail_all = [&](const std::string& why) {
      for (size_t i = out.size(); i < req.archs.size(); ++i)
        out.push_back({req.archs[i], {}, 0.0, why});
      return out;
    };
    std::optional<Space> space;
    std::vector<Proxy> proxies;
    std::unique_ptr<Backend> backend;
    const ProxyMinibatch* batch = nullptr;
    try {
      space.emplace(Space::from_json(req.space, "screen space"));
      bool needs_data = false;
      for (const std::string& name : req.evaluators) {
        const auto p = proxy_from_name(name);
        if (!p)
          throw Error("screen",
                      "unknown evaluator '" + name + "' (evaluators: " + proxy_names() + ")");
        proxies.push_back(*p);
        needs_data |= proxy_info(*p).needs_backend && *p != Proxy::synflow;
      }
      backend = make_backend(req.device, req.threads);
      if (needs_data) batch = &minibatch(req);
    } catch (const std::exception& e) {
      return fail_all(e.what());
    }
    const ProxyBatch view = batch ? batch->view() : ProxyBatch{};
    for (const std::string& key : req.archs) {
      if (cancelled()) return out;
      ScreenedScores s{key, {}, 0.0, {}};
      const auto t0 = Clock::now();
      try {
        const LayerGraph graph = space->lower(space->parse_key(key));
        for (size_t k = 0; k < proxies.size(); ++k) {
          const double v = proxy_score(proxies[k], *backend, graph, req.seed, view);
          if (std::isfinite(v))
            s.scores[req.evaluators[k]] = v;
          else
            s.error += (s.error.empty() ? "" : "; ") + req.evaluators[k] + " is " +
                       (std::isnan(v) ? "NaN"
                        : v > 0       ? "+inf"
                                      : "-inf");
        }
      } catch (const std::exception& e) {
        s.error = e.what();
      }
      s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  // The request's minibatch, drawn once per (data set, size, seed) and kept.
  const ProxyMinibatch& minibatch(const ScreenRequest& req) {
    std::lock_guard lock(mu_);
    const auto key = std::make_tuple(req.data, req.data_fingerprint, req.batch_size, req.seed);
    if (auto it = batches_.find(key); it != batches_.end()) return it->second;
    const data::TrainTest d = data::load_dataset(req.data);
    if (!req.data_fingerprint.empty() && d.train.fingerprint() != req.data_fingerprint)
      throw Error("data " + req.data, "this worker's copy has fingerprint " +
                                          d.train.fingerprint() + ", the screen needs " +
                                          req.data_fingerprint);
    return batches_.emplace(key, proxy_minibatch(d.train, req.data, req.batch_size, req.seed))
        .first->second;
  }

  std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int, uint64_t>, ProxyMinibatch> batches_;
};

}  // namespace

std::unique_ptr<Screener> make_proxy_screener() {
  return std::make_unique<ProxyScreener>();
}

}  // namespace minas
