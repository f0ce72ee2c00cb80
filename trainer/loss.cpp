#include "trainer/loss.h"

#include <cmath>

namespace minas {

double softmax_cross_entropy(const float* logits, const int32_t* labels, int n, int k,
                             float smoothing, float* dlogits, int64_t* correct) {
  double total = 0;
  int64_t right = 0;
  const double off = static_cast<double>(smoothing) / k, on = 1.0 - smoothing + off;
  for (int i = 0; i < n; ++i) {
    const float* z = logits + static_cast<size_t>(i) * k;
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;
    right += best == labels[i];
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += std::exp(static_cast<double>(z[j] - z[best]));
    const double log_sum = std::log(sum) + z[best];
    double row = 0;
    for (int j = 0; j < k; ++j) {
      const double q = j == labels[i] ? on : off;
      row -= q * (z[j] - log_sum);
      if (dlogits)
        dlogits[static_cast<size_t>(i) * k + j] =
            static_cast<float>((std::exp(z[j] - log_sum) - q) / n);
    }
    total += row;
  }
  if (correct) *correct = right;
  return total / n;
}

}  // namespace minas
