#include "dashboard/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace minas::dashboard {
namespace {

void address_of(const sockaddr_storage& addr, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    port = ntohs(a.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
  }
  ip = text;
}

}  // namespace

ConnectionStream::ConnectionStream(int sock, int stop_fd, const ConnectionLimits& limits)
    : sock_(sock), stop_fd_(stop_fd), limits_(limits) {}

ConnectionStream::Waited ConnectionStream::wait(short events, Clock::time_point deadline,
                                                bool stop_ends) const {
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline) return Waited::Deadline;
    // Rounded up, so that a wait never ends before its deadline.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    pollfd fds[2] = {{sock_, events, 0}, {stop_fd_, POLLIN, 0}};
    const int n =
        ::poll(fds, stop_ends ? 2 : 1, static_cast<int>(std::min<int64_t>(left, INT_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Waited::Failed;
    }
    if (n == 0) continue;  // the loop checks the deadline
    if (stop_ends && fds[1].revents != 0) return Waited::Stopping;
    if (fds[0].revents & (events | POLLHUP | POLLERR)) return Waited::Ready;
    if (fds[0].revents & POLLNVAL) return Waited::Failed;
  }
}

bool ConnectionStream::wait_for_request() {
  if (phase_ == Phase::Closed) return false;
  phase_ = Phase::Waiting;
  refusal_ = Refusal::None;
  request_bytes_ = 0;
  if (buf_at_ == buf_end_ && wait(POLLIN, Clock::now() + limits_.idle, true) != Waited::Ready) {
    phase_ = Phase::Closed;
    return false;
  }
  phase_ = Phase::Reading;
  deadline_ = Clock::now() + limits_.read;
  return true;
}

void ConnectionStream::drain_and_close() {
  phase_ = Phase::Closed;
  ::shutdown(sock_, SHUT_WR);
  // At most a second (or the read timeout, when shorter) and 1 MiB: enough
  // for what a peer had in flight when it was refused.
  const auto until =
      Clock::now() + std::min<Clock::duration>(limits_.read, std::chrono::seconds(1));
  size_t dropped = 0;
  char scratch[4096];
  while (dropped < (size_t{1} << 20) && wait(POLLIN, until, true) == Waited::Ready) {
    const ssize_t n = ::recv(sock_, scratch, sizeof scratch, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    dropped += static_cast<size_t>(n);
  }
}

bool ConnectionStream::is_readable() const {
  return phase_ == Phase::Reading &&
         (buf_at_ < buf_end_ || wait(POLLIN, deadline_, true) == Waited::Ready);
}

bool ConnectionStream::is_writable() const {
  const auto deadline = phase_ == Phase::Answering ? deadline_ : Clock::now() + limits_.write;
  return phase_ != Phase::Closed && wait(POLLOUT, deadline, false) == Waited::Ready;
}

ssize_t ConnectionStream::read(char* ptr, size_t size) {
  if (phase_ != Phase::Reading) return -1;
  if (buf_at_ == buf_end_) {
    if (const Waited w = wait(POLLIN, deadline_, true); w != Waited::Ready) {
      if (w == Waited::Deadline) refusal_ = Refusal::TimedOut;
      return -1;
    }
    ssize_t n;
    do {
      n = ::recv(sock_, buf_.data(), buf_.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return n;
    buf_at_ = 0;
    buf_end_ = static_cast<size_t>(n);
  }
  // Past the budget the request is refused (httplib answers a head it cannot
  // read with 400), however slowly or quickly it came.
  const size_t n = std::min({size, buf_end_ - buf_at_, limits_.max_request_bytes - request_bytes_});
  if (n == 0) {
    refusal_ = Refusal::TooLarge;
    return -1;
  }
  std::memcpy(ptr, buf_.data() + buf_at_, n);
  buf_at_ += n;
  request_bytes_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t ConnectionStream::write(const char* ptr, size_t size) {
  if (phase_ == Phase::Reading) {
    phase_ = Phase::Answering;
    deadline_ = Clock::now() + limits_.write;
  }
  if (phase_ != Phase::Answering || wait(POLLOUT, deadline_, false) != Waited::Ready) return -1;
  ssize_t n;
  do {
    n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

void ConnectionStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    address_of(addr, ip, port);
}

void ConnectionStream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    address_of(addr, ip, port);
}

ConnectionThreads::ConnectionThreads(size_t max_threads, std::chrono::milliseconds keep_idle)
    : max_threads_(std::max<size_t>(1, max_threads)), keep_idle_(keep_idle) {}

ConnectionThreads::~ConnectionThreads() {
  shutdown();
}

size_t ConnectionThreads::threads() const {
  std::lock_guard lock(mutex_);
  return threads_.size();
}

void ConnectionThreads::enqueue(std::function<void()> fn) {
  std::unique_lock lock(mutex_);
  join_ended(lock);
  jobs_.push_back(std::move(fn));
  // Every queued job beyond the idle threads gets a thread of its own, while
  // there may be more.
  if (jobs_.size() > idle_ && threads_.size() < max_threads_) {
    threads_.emplace_back();
    const auto self = std::prev(threads_.end());
    *self = std::thread(&ConnectionThreads::work, this, self);
  }
  cv_.notify_one();
}

void ConnectionThreads::join_ended(std::unique_lock<std::mutex>& lock) {
  std::vector<std::thread> ended = std::move(ended_);
  ended_.clear();
  lock.unlock();
  for (auto& t : ended) t.join();
  lock.lock();
}

void ConnectionThreads::work(std::list<std::thread>::iterator self) {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_;
    const bool woken = cv_.wait_for(lock, keep_idle_, [&] { return !jobs_.empty() || stopping_; });
    --idle_;
    if (!jobs_.empty()) {
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      try {
        job();
      } catch (...) {
        // A connection's own loop catches what its requests throw; nothing
        // more is known here, and the thread must go on serving.
      }
      lock.lock();
      continue;
    }
    if (stopping_) return;  // shutdown() joins it
    if (!woken) {
      // Idle for keep_idle_: leave, and let the next enqueue() join it.
      ended_.push_back(std::move(*self));
      threads_.erase(self);
      return;
    }
  }
}

void ConnectionThreads::shutdown() {
  std::unique_lock lock(mutex_);
  stopping_ = true;
  cv_.notify_all();
  std::list<std::thread> running = std::move(threads_);
  threads_.clear();
  std::vector<std::thread> ended = std::move(ended_);
  ended_.clear();
  lock.unlock();
  for (auto& t : running) t.join();
  for (auto& t : ended) t.join();
}

}  // namespace minas::dashboard
