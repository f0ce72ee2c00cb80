#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "trainer/cuda/memory.h"
#include "trainer/cuda/nccl_comm.h"
#include "trainer/cuda/network.h"
#include "trainer/model.h"

namespace minas::cuda {

// GradientReducer's buckets on the GPU: a bucket's gradients are copied into
// its flat buffer on the compute stream as soon as backward has enqueued its
// last layer; the communicator's stream waits for that, sums the bucket over
// the ranks, scales it to the mean and copies it back; the compute stream
// waits for every bucket before the optimizer. All stream-ordered, so a
// captured step holds the all-reduces overlapping backward.
class DeviceReducer {
 public:
  // The buckets of plan_buckets (trainer/data_parallel.h) for net's model,
  // each with its flat buffer and its two events.
  DeviceReducer(CudaNetwork& net, const Model& model, NcclCommunicator& comm, size_t bucket_bytes);
  ~DeviceReducer();
  DeviceReducer(const DeviceReducer&) = delete;
  DeviceReducer& operator=(const DeviceReducer&) = delete;

  // Layer `layer`'s backward is enqueued (CudaNetwork::on_enqueued): its
  // bucket starts once that was its last layer.
  void layer_enqueued(int layer);

  // After the step's backward is enqueued: what is left starts, and the
  // compute stream waits for every bucket.
  void finish();

 private:
  struct Bucket {
    size_t layers = 0, remaining = 0, elements = 0;
    std::vector<int> params;
    Buffer<float> flat;
    cudaEvent_t ready = nullptr, done = nullptr;
    bool launched = false;
  };
  // Copies b's gradients in, all-reduces and scales them, copies them back.
  void launch(Bucket& b);

  CudaNetwork& net_;
  const Model& model_;
  NcclCommunicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_layer_;
};

}  // namespace minas::cuda
