#pragma once
// Collective communication between the ranks of one data-parallel trial: the
// interface the trainer's data-parallel logic (gradient buckets, averaging,
// LARS on the averaged gradients) is written against. Implementations: ranks
// as threads of this process (here, tested in CI with several ranks), and
// NCCL across GPUs (trainer/cuda/).
//
// As with NCCL, every rank issues the same collectives with the same sizes in
// the same order; a collective completes when every rank has issued it.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace minas {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // A collective started and not yet finished: the buffer it was given must
  // stay untouched until wait() returns.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };

  // Every rank's `data` becomes the element-wise sum over the ranks, the same
  // on every rank to the bit (the sum is taken in rank order).
  virtual std::unique_ptr<Pending> all_reduce_sum_async(std::span<float> data) = 0;
  void all_reduce_sum(std::span<float> data) { all_reduce_sum_async(data)->wait(); }
  // Every rank's `data` becomes root's.
  virtual std::unique_ptr<Pending> broadcast_async(std::span<float> data, int root) = 0;
  void broadcast(std::span<float> data, int root) { broadcast_async(data, root)->wait(); }
};

// A Communicator whose collectives run one at a time, in issue order, on a
// thread of its own, so a caller can go on computing (the backward pass)
// while they run. A subclass implements run() and calls start() last in its
// constructor and stop() first in its destructor.
class QueuedCommunicator : public Communicator {
 public:
  std::unique_ptr<Pending> all_reduce_sum_async(std::span<float> data) override;
  std::unique_ptr<Pending> broadcast_async(std::span<float> data, int root) override;

 protected:
  // One collective, on the communicator's thread: a sum (root < 0) or a
  // broadcast from root. What it throws reaches whoever waits on it.
  virtual void run(std::span<float> data, int root) = 0;
  void start();
  void stop();

 private:
  struct Job;
  class Ticket;
  std::unique_ptr<Pending> submit(std::span<float> data, int root);
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool closing_ = false;
  std::thread thread_;
};

// `ranks` communicators of one in-process group, rank i at index i, each to be
// used by its own thread. The group lives as long as any of them.
std::vector<std::unique_ptr<Communicator>> make_thread_group(int ranks);

}  // namespace minas
