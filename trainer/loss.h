#pragma once
// Softmax cross entropy with label smoothing, on plain (n, k) logits.
#include <cstdint>

namespace minas {

// Mean over the n rows of -sum_j q_j log softmax(z)_j with q = (1 - e) onehot(y) + e / k,
// as PyTorch's cross_entropy(label_smoothing=e). If dlogits is given it gets
// the gradient of that mean, (softmax(z) - q) / n. If correct is given it gets
// the number of rows whose argmax (first maximum) is the label.
double softmax_cross_entropy(const float* logits, const int32_t* labels, int n, int k,
                             float smoothing, float* dlogits, int64_t* correct);

}  // namespace minas
