#pragma once
// How the dashboard's server holds its connections, in place of cpp-httplib's
// own (0.11): a fixed pool of 8 threads, each connection holding one for as
// long as it idles (keep-alive, 5 s) or stalls between bytes (5 s each, with
// no bound on the whole), so that 16 idle sockets made a normal request wait
// 17.5 s and one client sending a byte every few seconds could hold a thread
// for ever.
//
// Here every connection has its own thread (up to a bound; more wait for one
// to end), and each phase of it has a deadline for the whole phase: an idle
// connection is closed when its idle time is up, a request's head (request
// line and headers) must arrive whole within the read timeout of its first
// byte and within a byte budget, and an answer must be written within the
// write timeout. Stopping the server ends idle and reading connections at once.
#include <httplib.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <iterator>
#include <list>
#include <mutex>
#include <thread>
#include <vector>

namespace minas::dashboard {

using Clock = std::chrono::steady_clock;

struct ConnectionLimits {
  std::chrono::milliseconds idle{5000};   // waiting for a request (the first one too)
  std::chrono::milliseconds read{5000};   // a request's head, from its first byte
  std::chrono::milliseconds write{5000};  // an answer, from its first byte
  size_t max_request_bytes = 64 * 1024;   // a request's head
};

// One connection's socket as httplib reads and writes it: buffered reads, and
// the deadline and byte budget of the phase the connection is in.
class ConnectionStream final : public httplib::Stream {
 public:
  enum class Phase {
    Waiting,    // for the first byte of a request (idle deadline)
    Reading,    // the request's head (read deadline, byte budget)
    Answering,  // writing the answer (write deadline)
    Closed,     // no more requests: idle past the deadline, peer gone, or stopping
  };

  // Why the request being read could not be read whole, if it could not.
  enum class Refusal {
    None,
    TimedOut,  // not whole within the read timeout
    TooLarge,  // over the byte budget
  };

  // `stop_fd` becomes readable when the server stops.
  ConnectionStream(int sock, int stop_fd, const ConnectionLimits& limits);

  Phase phase() const { return phase_; }
  Refusal refusal() const { return refusal_; }
  const ConnectionLimits& limits() const { return limits_; }
  // Waiting, then Reading once a request's first byte is here (or already
  // buffered: a pipelined request); Closed, returning false, when none comes
  // within the idle timeout, the peer closed, or the server stops.
  bool wait_for_request();
  // Ends the connection politely after a refusal: no more writing, and what the
  // peer still sends is read and dropped for a moment (bounded in time and
  // bytes) so that closing does not reset the connection before the peer has
  // read the answer.
  void drain_and_close();

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return sock_; }

 private:
  enum class Waited { Ready, Deadline, Stopping, Failed };
  // Until `events` happen on the socket, the deadline passes, poll fails, or
  // (when `stop_ends`) the server stops.
  Waited wait(short events, Clock::time_point deadline, bool stop_ends) const;

  int sock_;
  int stop_fd_;
  ConnectionLimits limits_;
  Phase phase_ = Phase::Waiting;
  Refusal refusal_ = Refusal::None;
  Clock::time_point deadline_;
  size_t request_bytes_ = 0;
  std::array<char, 4096> buf_{};
  size_t buf_at_ = 0, buf_end_ = 0;
};

// The task queue httplib hands accepted connections to: a thread per
// connection, started when none is free, up to `max_threads` (further
// connections wait in order for one); a thread left idle for a while ends.
class ConnectionThreads final : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads,
                             std::chrono::milliseconds keep_idle = std::chrono::seconds(10));
  ~ConnectionThreads() override;
  void enqueue(std::function<void()> fn) override;
  // Runs what is queued, then joins every thread.
  void shutdown() override;
  size_t threads() const;

 private:
  void work(std::list<std::thread>::iterator self);
  void join_ended(std::unique_lock<std::mutex>& lock);

  const size_t max_threads_;
  const std::chrono::milliseconds keep_idle_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::list<std::thread> threads_;
  std::vector<std::thread> ended_;  // threads that left on their own, to join
  size_t idle_ = 0;                 // threads waiting for a job
  bool stopping_ = false;
};

}  // namespace minas::dashboard
