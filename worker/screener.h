#pragma once
// What a worker does with a screening request: scores a batch of
// architectures at initialization, without training (zero-cost proxies,
// parameters, MACs: trainer/proxies.h), on one device slot. The controller
// screens many candidates this way before it trains any (docs/protocol.md,
// `screen`).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

struct ScreenRequest {
  nlohmann::json space;                 // the resolved space document
  std::vector<std::string> archs;       // canonical keys
  std::vector<std::string> evaluators;  // proxy names (trainer/proxies.h)
  std::string data;                     // data set name or folder of the minibatch
  std::string data_fingerprint;         // empty: accept what the name resolves to
  uint64_t seed = 0;                    // initialization and minibatch seed
  int batch_size = 64;                  // images in the minibatch
  std::string device = "cpu";           // the slot: cpu, cpu.K, cuda:N, cuda:N.K
  int threads = 0;                      // CPU threads of the slot's backend; 0: all
};

// One architecture's scores: by evaluator, those it could score (and found
// finite); `error` says what went wrong with the others, or with the whole.
struct ScreenedScores {
  std::string arch;
  std::map<std::string, double> scores;
  double seconds = 0;  // scoring it, every evaluator together
  std::string error;
};

class Screener {
 public:
  virtual ~Screener() = default;
  // One entry per architecture of the request, in its order. A user-caused
  // problem (an architecture not of the space, a data set not here, an
  // unknown evaluator) is an entry's error, never an exception. When
  // `cancelled` turns true it stops and returns the entries so far.
  virtual std::vector<ScreenedScores> screen(const ScreenRequest& request,
                                             const std::function<bool()>& cancelled) = 0;
};

// Scores through the trainer's backend on the request's device (oneDNN on a
// CPU slot, the GPU backend on a cuda slot in builds that have it); data sets
// and minibatches are loaded once and kept.
std::unique_ptr<Screener> make_proxy_screener();

}  // namespace minas
