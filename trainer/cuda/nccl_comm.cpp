#include "trainer/cuda/nccl_comm.h"

#include <algorithm>
#include <string>

#include "searchspace/error.h"
#include "trainer/cuda/check.h"

namespace minas::cuda {
namespace {

// The NCCL clique's handles, destroyed once every rank's communicator is gone.
struct Clique {
  std::vector<ncclComm_t> comms;
  ~Clique() {
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);  // nothing to report to from a destructor
  }
};

class Rank final : public NcclCommunicator {
 public:
  // Rank `rank` of `world`, the clique's local-th handle.
  Rank(std::shared_ptr<Clique> clique, int local, int rank, int world, int device)
      : clique_(std::move(clique)), local_(local), rank_(rank), world_(world), device_(device) {
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~Rank() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return world_; }
  cudaStream_t stream() const override { return stream_; }
  int device() const override { return device_; }

  std::unique_ptr<Pending> all_reduce_sum_async(std::span<float> data) override {
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_NCCL_CHECK(
        ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, comm(), stream_));
    return done_event();
  }

  void enqueue_all_reduce_sum(std::span<float> data) override {
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_NCCL_CHECK(
        ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, comm(), stream_));
  }

  std::unique_ptr<Pending> broadcast_async(std::span<float> data, int root) override {
    if (root < 0 || root >= size())
      throw Error("nccl", "broadcast root " + std::to_string(root) + " is not a rank");
    MINAS_CUDA_CHECK(cudaSetDevice(device_));
    MINAS_NCCL_CHECK(
        ncclBroadcast(data.data(), data.data(), data.size(), ncclFloat, root, comm(), stream_));
    return done_event();
  }

 private:
  class Event final : public Pending {
   public:
    Event(int device, cudaStream_t stream) : device_(device) {
      MINAS_CUDA_CHECK(cudaSetDevice(device_));
      MINAS_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
      MINAS_CUDA_CHECK(cudaEventRecord(event_, stream));
    }
    ~Event() override {
      cudaSetDevice(device_);
      cudaEventSynchronize(event_);
      cudaEventDestroy(event_);
    }
    void wait() override {
      MINAS_CUDA_CHECK(cudaSetDevice(device_));
      MINAS_CUDA_CHECK(cudaEventSynchronize(event_));
    }

   private:
    int device_;
    cudaEvent_t event_ = nullptr;
  };

  ncclComm_t comm() const { return clique_->comms[static_cast<size_t>(local_)]; }
  std::unique_ptr<Pending> done_event() { return std::make_unique<Event>(device_, stream_); }

  std::shared_ptr<Clique> clique_;
  int local_, rank_, world_, device_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_group(const std::vector<int>& devices) {
  if (devices.empty()) throw Error("nccl", "a group needs at least one GPU");
  auto clique = std::make_shared<Clique>();
  clique->comms.assign(devices.size(), nullptr);
  MINAS_NCCL_CHECK(
      ncclCommInitAll(clique->comms.data(), static_cast<int>(devices.size()), devices.data()));
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  for (size_t r = 0; r < devices.size(); ++r)
    out.push_back(std::make_unique<Rank>(clique, static_cast<int>(r), static_cast<int>(r),
                                         static_cast<int>(devices.size()), devices[r]));
  return out;
}

std::string make_nccl_unique_id() {
  ncclUniqueId id;
  MINAS_NCCL_CHECK(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof id.internal);
}

std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_ranks(const std::vector<int>& devices,
                                                               int world, int first_rank,
                                                               const std::string& unique_id) {
  if (devices.empty()) throw Error("nccl", "a group needs at least one GPU");
  if (first_rank < 0 || first_rank + static_cast<int>(devices.size()) > world)
    throw Error("nccl", "ranks from " + std::to_string(first_rank) + " on " +
                            std::to_string(devices.size()) + " GPUs are not of a group of " +
                            std::to_string(world));
  ncclUniqueId id;
  if (unique_id.size() != sizeof id.internal)
    throw Error("nccl", "a unique id of " + std::to_string(unique_id.size()) + " bytes, not " +
                            std::to_string(sizeof id.internal));
  std::copy(unique_id.begin(), unique_id.end(), id.internal);
  auto clique = std::make_shared<Clique>();
  clique->comms.assign(devices.size(), nullptr);
  // Several ranks of one process join in one group call, or each would wait
  // for the others forever.
  MINAS_NCCL_CHECK(ncclGroupStart());
  for (size_t i = 0; i < devices.size(); ++i) {
    MINAS_CUDA_CHECK(cudaSetDevice(devices[i]));
    MINAS_NCCL_CHECK(
        ncclCommInitRank(&clique->comms[i], world, id, first_rank + static_cast<int>(i)));
  }
  MINAS_NCCL_CHECK(ncclGroupEnd());
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  for (size_t i = 0; i < devices.size(); ++i)
    out.push_back(std::make_unique<Rank>(clique, static_cast<int>(i),
                                         first_rank + static_cast<int>(i), world, devices[i]));
  return out;
}

}  // namespace minas::cuda
