// GradientReducer's buckets on the GPU (trainer/cuda/device_reducer.h).
#include "trainer/cuda/device_reducer.h"

#include <cuda_runtime.h>

#include <span>
#include <utility>

#include "trainer/cuda/check.h"
#include "trainer/cuda/ops.h"
#include "trainer/data_parallel.h"

namespace minas::cuda {

DeviceReducer::DeviceReducer(CudaNetwork& net, const Model& model, NcclCommunicator& comm,
                             size_t bucket_bytes)
    : net_(net), model_(model), comm_(comm) {
  for (GradientBucket& plan : plan_buckets(model, bucket_bytes, bucket_of_layer_)) {
    Bucket& b = buckets_.emplace_back();
    b.layers = plan.layers.size();
    b.params = std::move(plan.params);
    b.elements = plan.elements;
  }
  for (Bucket& b : buckets_) {
    b.flat = Buffer<float>(b.elements);
    MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&b.ready, cudaEventDisableTiming));
    MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
    b.remaining = b.layers;
  }
}

DeviceReducer::~DeviceReducer() {
  for (Bucket& b : buckets_) {
    if (b.ready) cudaEventDestroy(b.ready);
    if (b.done) cudaEventDestroy(b.done);
  }
}

void DeviceReducer::layer_enqueued(int layer) {
  const int b = bucket_of_layer_.at(static_cast<size_t>(layer));
  if (b < 0 || buckets_[static_cast<size_t>(b)].remaining == 0) return;
  if (--buckets_[static_cast<size_t>(b)].remaining == 0) launch(buckets_[static_cast<size_t>(b)]);
}

void DeviceReducer::finish() {
  for (Bucket& b : buckets_)
    if (!b.launched) launch(b);
  for (Bucket& b : buckets_) {
    MINAS_CUDA_CHECK(cudaStreamWaitEvent(net_.stream(), b.done, 0));
    b.launched = false;
    b.remaining = b.layers;
  }
}

void DeviceReducer::launch(Bucket& b) {
  const cudaStream_t compute = net_.stream(), comm = comm_.stream();
  size_t at = 0;
  for (int p : b.params) {
    const size_t n = model_.params()[static_cast<size_t>(p)].size();
    MINAS_CUDA_CHECK(cudaMemcpyAsync(b.flat.get() + at, net_.grad(static_cast<size_t>(p)),
                                     n * sizeof(float), cudaMemcpyDeviceToDevice, compute));
    at += n;
  }
  MINAS_CUDA_CHECK(cudaEventRecord(b.ready, compute));
  MINAS_CUDA_CHECK(cudaStreamWaitEvent(comm, b.ready, 0));
  comm_.enqueue_all_reduce_sum(std::span<float>(b.flat.get(), b.elements));
  scale(b.flat.get(), 1.0f / static_cast<float>(comm_.size()), b.elements, comm);
  at = 0;
  for (int p : b.params) {
    const size_t n = model_.params()[static_cast<size_t>(p)].size();
    MINAS_CUDA_CHECK(cudaMemcpyAsync(net_.grad(static_cast<size_t>(p)), b.flat.get() + at,
                                     n * sizeof(float), cudaMemcpyDeviceToDevice, comm));
    at += n;
  }
  MINAS_CUDA_CHECK(cudaEventRecord(b.done, comm));
  b.launched = true;
}

}  // namespace minas::cuda
