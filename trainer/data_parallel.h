#pragma once
// Data-parallel training of one trial over the ranks of a Communicator: each
// rank computes gradients on its own share of every batch, and the gradients
// are averaged over the ranks in buckets while the backward pass is still
// running (a bucket's all-reduce starts as soon as backward has written the
// last of its layers), so communication hides behind computation. Every rank
// then applies the same update to the same weights and stays in step with
// the others without ever exchanging weights.
#include <cstddef>
#include <memory>
#include <vector>

#include "trainer/comm.h"
#include "trainer/model.h"

namespace minas {

// The buckets gradients are averaged in: at most `bucket_bytes` of
// gradients each (a larger single layer gets a bucket of its own), filled in
// backward order (the output's layers first). bucket_of_layer gets, per layer,
// its bucket's index or -1 for a layer without parameters.
struct GradientBucket {
  std::vector<int> layers;  // whose gradients it holds
  std::vector<int> params;  // indices into Model::params(), in buffer order
  size_t elements = 0;
};
std::vector<GradientBucket> plan_buckets(const Model& model, size_t bucket_bytes,
                                         std::vector<int>& bucket_of_layer);

class GradientReducer {
 public:
  // Buckets of at most `bucket_bytes` of gradients (a larger single tensor
  // gets a bucket of its own), filled in backward order: the output's layers
  // first.
  GradientReducer(Model& model, Communicator& comm, size_t bucket_bytes = size_t{4} << 20);
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  using Bucket = GradientBucket;
  const std::vector<Bucket>& buckets() const { return buckets_; }

  // Backward has written layer `layer`'s gradients (a Network's
  // on_layer_gradients); a bucket whose layers are all written starts its
  // all-reduce.
  void layer_ready(int layer);
  // After a step's backward: starts any bucket not started, waits for all,
  // and leaves in every parameter's gradient the mean over the ranks.
  void finish();
  // Every rank's parameters and running statistics become root's: the same
  // start (and, before an evaluation, the same batch-norm statistics).
  void broadcast_state(int root = 0);
  void broadcast_buffers(int root = 0);

 private:
  void launch(size_t bucket);

  Model& model_;
  Communicator& comm_;
  std::vector<int> bucket_of_layer_;  // -1: a layer without parameters; before buckets_,
                                      // which plan_buckets fills it with
  std::vector<Bucket> buckets_;
  std::vector<size_t> remaining_;         // layers not yet written, per bucket
  std::vector<std::vector<float>> flat_;  // per bucket
  std::vector<std::unique_ptr<Communicator::Pending>> pending_;  // per bucket; null: not started
};

}  // namespace minas
