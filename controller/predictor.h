#pragma once
// A performance predictor: an ensemble of small MLPs regressing a score from a
// feature vector (an architecture's one-hot encoding, optionally with
// measured columns), after BANANAS (White et al. 2021) and deep ensembles
// (Lakshminarayanan et al. 2017). Each member has two ReLU hidden layers, its
// own seeded initialization and its own shuffling of the data, and is trained
// by Adam on the squared error of the standardized target. The members'
// spread is the prediction's uncertainty.
//
// A fit may start from the members' current weights (warm start), so a
// predictor refit as results arrive needs only a few passes each time. The
// whole model (weights, each member's RNG, the target's scaling) is in
// save(): a restored predictor predicts and refits exactly as the saved one.
// Everything is deterministic for a seed and the data's order.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "searchspace/rng.h"

namespace minas {

struct PredictorSettings {
  int members = 5;
  int hidden = 16;              // units in each of the two hidden layers
  double learning_rate = 0.01;  // Adam's step
  int batch = 16;               // samples per Adam step
  double weight_decay = 0;      // L2 on the weights, added to the gradient
  uint64_t seed = 0;
};

struct Prediction {
  double mean = 0;
  double std = 0;  // over the members (population standard deviation)
};

class Predictor {
 public:
  // Throws Error naming the setting that is out of range (inputs >= 1,
  // members >= 1, hidden >= 1, batch >= 1, learning_rate > 0, weight_decay >= 0).
  Predictor(size_t inputs, const PredictorSettings& settings);

  // Trains every member for `epochs` passes over (x, y), from its current
  // weights: the first fit starts from the seeded initialization. The target
  // is standardized by this data's mean and spread. Throws Error when the
  // sizes disagree or there is no data.
  void fit(const std::vector<std::vector<float>>& x, const std::vector<double>& y, int epochs);
  // Back to the seeded initialization, as constructed (fits forgotten).
  void reset();
  bool fitted() const { return fitted_; }

  // The members' mean and spread; every member's own prediction. Before any
  // fit the members predict from their initialization (meaningless but defined).
  Prediction predict(const std::vector<float>& x) const;
  std::vector<double> member_predictions(const std::vector<float>& x) const;

  size_t inputs() const { return inputs_; }
  const PredictorSettings& settings() const { return settings_; }

  nlohmann::json save() const;
  // Throws Error naming `where` when the state is not of a predictor of this shape.
  void restore(const nlohmann::json& state, const std::string& where);

 private:
  struct Member {
    // Layer by layer: w1 [inputs][hidden] (a sparse input adds whole rows),
    // b1, w2 [hidden][hidden] (output-major), b2, w3 [hidden], b3.
    std::vector<float> params;
    Rng rng{0};
  };
  // Offsets into Member::params.
  size_t w1() const { return 0; }
  size_t b1() const { return w1() + hidden_ * inputs_; }
  size_t w2() const { return b1() + hidden_; }
  size_t b2() const { return w2() + hidden_ * hidden_; }
  size_t w3() const { return b2() + hidden_; }
  size_t b3() const { return w3() + hidden_; }
  size_t param_count() const { return b3() + 1; }

  void initialize(Member& m, uint64_t member_seed) const;
  // The member's output for x, standardized scale.
  double forward(const Member& m, const std::vector<float>& x) const;
  void train(Member& m, const std::vector<std::vector<float>>& x, const std::vector<double>& t,
             int epochs) const;

  size_t inputs_, hidden_;
  PredictorSettings settings_;
  std::vector<Member> members_;
  double y_mean_ = 0, y_scale_ = 1;
  bool fitted_ = false;
};

}  // namespace minas
