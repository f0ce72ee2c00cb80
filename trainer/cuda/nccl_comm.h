#pragma once
// The Communicator of a data-parallel trial over this process's GPUs, through
// NCCL: rank i on GPU devices[i], each rank driven by its own thread (as the
// in-process CPU group). Buffers are device memory. Collectives run on each
// rank's own stream; wait() synchronizes with it, and stream() lets a GPU
// trainer order its kernels after a collective without the host waiting.
#include <cuda_runtime.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "trainer/comm.h"

namespace minas::cuda {

class NcclCommunicator : public Communicator {
 public:
  // The stream this rank's collectives are issued on (on its device).
  virtual cudaStream_t stream() const = 0;
  virtual int device() const = 0;
  // Enqueues the sum on stream() and returns at once, nothing awaited on the
  // host: what follows on that stream sees the result (and a CUDA graph being
  // captured there records it).
  virtual void enqueue_all_reduce_sum(std::span<float> data) = 0;
};

// One communicator per GPU listed, in one NCCL clique (ncclCommInitAll).
std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_group(const std::vector<int>& devices);

// The id by which the ranks of one NCCL group on several hosts meet, as its
// bytes: made on rank 0's host (ncclGetUniqueId opens NCCL's bootstrap
// listener there) and handed to every other host, as a trial's rendezvous.
std::string make_nccl_unique_id();

// This process's ranks first_rank, first_rank + 1, ... of a group of `world`
// ranks spread over hosts, one per GPU listed, joined under `unique_id`
// (ncclCommInitRank for each, inside one NCCL group call).
std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_ranks(const std::vector<int>& devices,
                                                               int world, int first_rank,
                                                               const std::string& unique_id);

}  // namespace minas::cuda
