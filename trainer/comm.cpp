#include "trainer/comm.h"

#include <algorithm>
#include <barrier>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "searchspace/error.h"

namespace minas {
namespace {

// What the ranks of an in-process group share. A collective is four
// meetings of the ranks' threads: every rank has posted its buffer; the
// scratch is sized; rank r has written slice r of the result (the sum in rank
// order, or root's values) into it; every rank has copied it back, so both
// can be reused by the next collective.
struct Group {
  explicit Group(int n) : ranks(n), posted(static_cast<size_t>(n)), sync(n) {}
  const int ranks;
  std::vector<std::span<float>> posted;
  std::vector<float> scratch;
  std::barrier<> sync;

  // One collective on rank r: a sum (root < 0) or a broadcast from root.
  void run(int r, std::span<float> data, int root) {
    posted[static_cast<size_t>(r)] = data;
    sync.arrive_and_wait();
    // Every rank sees the same sizes and so throws, or not, alike.
    for (int q = 0; q < ranks; ++q)
      if (posted[static_cast<size_t>(q)].size() != data.size())
        throw Error("communicator", "rank " + std::to_string(q) + " gave " +
                                        std::to_string(posted[static_cast<size_t>(q)].size()) +
                                        " elements, rank " + std::to_string(r) + " gave " +
                                        std::to_string(data.size()));
    const size_t n = data.size();
    if (r == 0) scratch.resize(n);
    sync.arrive_and_wait();
    const size_t per = (n + static_cast<size_t>(ranks) - 1) / static_cast<size_t>(ranks);
    const size_t lo = std::min(n, per * static_cast<size_t>(r)), hi = std::min(n, lo + per);
    if (root >= 0) {
      std::copy(posted[static_cast<size_t>(root)].begin() + static_cast<std::ptrdiff_t>(lo),
                posted[static_cast<size_t>(root)].begin() + static_cast<std::ptrdiff_t>(hi),
                scratch.begin() + static_cast<std::ptrdiff_t>(lo));
    } else {
      for (size_t j = lo; j < hi; ++j) {
        float s = 0;
        for (int q = 0; q < ranks; ++q) s += posted[static_cast<size_t>(q)][j];
        scratch[j] = s;
      }
    }
    sync.arrive_and_wait();
    std::copy(scratch.begin(), scratch.end(), data.begin());
    sync.arrive_and_wait();
  }
};

// Rank r of an in-process group.
class ThreadCommunicator final : public QueuedCommunicator {
 public:
  ThreadCommunicator(std::shared_ptr<Group> g, int rank) : group_(std::move(g)), rank_(rank) {
    start();
  }
  ~ThreadCommunicator() override { stop(); }
  int rank() const override { return rank_; }
  int size() const override { return group_->ranks; }

 private:
  void run(std::span<float> data, int root) override { group_->run(rank_, data, root); }

  std::shared_ptr<Group> group_;
  const int rank_;
};

}  // namespace

struct QueuedCommunicator::Job {
  std::span<float> data;
  int root;
  bool done = false;
  std::exception_ptr error;
};

class QueuedCommunicator::Ticket final : public Pending {
 public:
  Ticket(QueuedCommunicator& c, std::shared_ptr<Job> j) : c_(c), job_(std::move(j)) {}
  ~Ticket() override {
    try {
      wait();
    } catch (...) {
      // Reported to whoever waited; a destructor must not throw.
    }
  }
  void wait() override {
    std::unique_lock lock(c_.mu_);
    c_.cv_.wait(lock, [&] { return job_->done; });
    if (job_->error) {
      auto e = job_->error;
      job_->error = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  QueuedCommunicator& c_;
  std::shared_ptr<Job> job_;
};

std::unique_ptr<Communicator::Pending> QueuedCommunicator::all_reduce_sum_async(
    std::span<float> data) {
  return submit(data, -1);
}

std::unique_ptr<Communicator::Pending> QueuedCommunicator::broadcast_async(std::span<float> data,
                                                                           int root) {
  if (root < 0 || root >= size())
    throw Error("communicator", "broadcast root " + std::to_string(root) + " is not a rank");
  return submit(data, root);
}

void QueuedCommunicator::start() {
  thread_ = std::thread([this] { loop(); });
}

void QueuedCommunicator::stop() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<Communicator::Pending> QueuedCommunicator::submit(std::span<float> data, int root) {
  auto job = std::make_shared<Job>();
  job->data = data;
  job->root = root;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(job);
  }
  cv_.notify_all();
  return std::make_unique<Ticket>(*this, job);
}

// Runs the queue until stop(): the jobs left then still run, so no ticket waits forever.
void QueuedCommunicator::loop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
    }
    try {
      run(job->data, job->root);
    } catch (...) {
      job->error = std::current_exception();
    }
    {
      std::lock_guard lock(mu_);
      job->done = true;
    }
    cv_.notify_all();
  }
}

std::vector<std::unique_ptr<Communicator>> make_thread_group(int ranks) {
  if (ranks < 1) throw Error("communicator", "a group needs at least one rank");
  auto group = std::make_shared<Group>(ranks);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < ranks; ++r) out.push_back(std::make_unique<ThreadCommunicator>(group, r));
  return out;
}

}  // namespace minas
