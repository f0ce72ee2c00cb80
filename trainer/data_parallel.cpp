#include "trainer/data_parallel.h"

#include <algorithm>

#include "searchspace/error.h"

namespace minas {

std::vector<GradientBucket> plan_buckets(const Model& model, size_t bucket_bytes,
                                         std::vector<int>& bucket_of_layer) {
  const int layers = model.graph().size();
  bucket_of_layer.assign(static_cast<size_t>(layers), -1);
  const size_t cap = std::max<size_t>(bucket_bytes / sizeof(float), 1);
  std::vector<GradientBucket> buckets;
  for (int i = layers - 1; i >= 0; --i) {
    const LayerState& st = model.state(i);
    std::vector<int> params;
    for (int p : {st.weight, st.bias, st.gamma, st.beta})
      if (p >= 0) params.push_back(p);
    if (params.empty()) continue;
    size_t elements = 0;
    for (int p : params) elements += model.params()[static_cast<size_t>(p)].size();
    if (buckets.empty() ||
        (buckets.back().elements > 0 && buckets.back().elements + elements > cap))
      buckets.emplace_back();
    GradientBucket& b = buckets.back();
    b.layers.push_back(i);
    b.params.insert(b.params.end(), params.begin(), params.end());
    b.elements += elements;
    bucket_of_layer[static_cast<size_t>(i)] = static_cast<int>(buckets.size() - 1);
  }
  return buckets;
}

GradientReducer::GradientReducer(Model& model, Communicator& comm, size_t bucket_bytes)
    : model_(model), comm_(comm), buckets_(plan_buckets(model, bucket_bytes, bucket_of_layer_)) {
  remaining_.resize(buckets_.size());
  flat_.resize(buckets_.size());
  pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    remaining_[b] = buckets_[b].layers.size();
    flat_[b].resize(buckets_[b].elements);
  }
}

void GradientReducer::launch(size_t b) {
  float* out = flat_[b].data();
  for (int p : buckets_[b].params) {
    const auto& g = model_.params()[static_cast<size_t>(p)].grad;
    out = std::copy(g.begin(), g.end(), out);
  }
  pending_[b] = comm_.all_reduce_sum_async(flat_[b]);
}

void GradientReducer::layer_ready(int layer) {
  if (layer < 0 || static_cast<size_t>(layer) >= bucket_of_layer_.size()) return;
  const int b = bucket_of_layer_[static_cast<size_t>(layer)];
  if (b < 0 || remaining_[static_cast<size_t>(b)] == 0) return;
  if (--remaining_[static_cast<size_t>(b)] == 0) launch(static_cast<size_t>(b));
}

void GradientReducer::finish() {
  // Buckets start in the same order on every rank only if backward reports
  // layers in the same order everywhere, which it does (one compiled plan);
  // those it never reported start here, in bucket order.
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (!pending_[b]) launch(b);
  const float ranks = static_cast<float>(comm_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_[b]->wait();
    pending_[b].reset();
    const float* in = flat_[b].data();
    for (int p : buckets_[b].params) {
      auto& g = model_.params()[static_cast<size_t>(p)].grad;
      for (float& x : g) x = *in++ / ranks;
    }
    remaining_[b] = buckets_[b].layers.size();
  }
}

void GradientReducer::broadcast_state(int root) {
  for (Param& p : model_.params()) comm_.broadcast(p.value, root);
  broadcast_buffers(root);
}

void GradientReducer::broadcast_buffers(int root) {
  for (Param& p : model_.buffers()) comm_.broadcast(p.value, root);
}

}  // namespace minas
