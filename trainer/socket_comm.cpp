#include "trainer/socket_comm.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "searchspace/error.h"

namespace minas {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x6d6e7363;  // "mnsc"

std::string errno_text() {
  return std::strerror(errno);
}

// What every rank shares: the sockets of this process's ranks, so abort()
// can shut them all down, and the flag that says it did.
struct Shared {
  std::mutex mu;
  std::vector<int> fds;
  std::atomic<bool> aborted{false};
  void add(int fd) {
    std::lock_guard lock(mu);
    fds.push_back(fd);
    if (aborted) ::shutdown(fd, SHUT_RDWR);
  }
  void abort() {
    std::lock_guard lock(mu);
    aborted = true;
    for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
  }
};

void write_all(int fd, const void* data, size_t n, int peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw Error("communicator", "rank " + std::to_string(peer) + " is gone (send: " +
                                      (w < 0 ? errno_text() : std::string("closed")) + ")");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void read_all(int fd, void* data, size_t n, int peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw Error("communicator", "rank " + std::to_string(peer) + " is gone (" +
                                      (r < 0 ? errno_text() : std::string("closed")) + ")");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// One collective's header: which (sequence number), its size, and for a
// broadcast its root (-1: a sum). Every rank must send the same. Sent as it
// is in memory: the ranks of a trial run one build on one kind of machine.
struct Header {
  uint32_t magic;
  uint32_t seq;
  uint64_t count;
  int32_t root;
  int32_t rank;
};

int connect_to(const std::string& rendezvous, std::chrono::milliseconds timeout,
               const Shared& shared) {
  const std::string tcp = "tcp://";
  const size_t colon = rendezvous.rfind(':');
  if (rendezvous.rfind(tcp, 0) != 0 || colon == std::string::npos || colon < tcp.size())
    throw Error("communicator", "rendezvous '" + rendezvous + "' is not tcp://HOST:PORT");
  const std::string host = rendezvous.substr(tcp.size(), colon - tcp.size());
  const std::string port = rendezvous.substr(colon + 1);
  const auto until = Clock::now() + timeout;
  std::string last = "no attempt";
  while (Clock::now() < until && !shared.aborted) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
      last = std::string("cannot resolve ") + host + ": " + gai_strerror(rc);
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
          last = errno_text();
          continue;
        }
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          ::freeaddrinfo(res);
          return fd;
        }
        last = errno_text();
        ::close(fd);
      }
      ::freeaddrinfo(res);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw Error("communicator", "cannot reach rank 0 at " + rendezvous + ": " + last);
}

class SocketCommunicator final : public QueuedCommunicator {
 public:
  SocketCommunicator(int rank, int world, std::shared_ptr<SocketListener> listener,
                     std::string rendezvous, std::chrono::milliseconds timeout,
                     std::shared_ptr<Shared> shared)
      : rank_(rank),
        world_(world),
        listener_(std::move(listener)),
        rendezvous_(std::move(rendezvous)),
        timeout_(timeout),
        shared_(std::move(shared)) {
    start();
  }
  ~SocketCommunicator() override {
    stop();
    for (int fd : peers_)
      if (fd >= 0) ::close(fd);
  }

  int rank() const override { return rank_; }
  int size() const override { return world_; }

 private:
  // Connects first; a failed connection or collective fails every later one.
  void run(std::span<float> data, int root) override {
    if (broken_) std::rethrow_exception(broken_);
    try {
      if (shared_->aborted) throw Error("communicator", "the group was aborted");
      if (!connected_) {
        connect();
        connected_ = true;
      }
      collective(data, root);
    } catch (...) {
      broken_ = std::current_exception();
      throw;
    }
  }

  // The hub accepts a connection from every other rank; the others connect.
  void connect() {
    peers_.assign(static_cast<size_t>(world_), -1);
    if (rank_ != 0) {
      const int fd = connect_to(rendezvous_, timeout_, *shared_);
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      peers_[0] = fd;
      shared_->add(fd);
      const Header hello{kMagic, 0, 0, -1, rank_};
      write_all(fd, &hello, sizeof hello, 0);
      return;
    }
    const auto until = Clock::now() + timeout_;
    for (int joined = 1; joined < world_;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0 || shared_->aborted)
        throw Error("communicator", "rank 0 heard from " + std::to_string(joined - 1) + " of " +
                                        std::to_string(world_ - 1) + " other ranks in time");
      pollfd p{listener_->fd(), POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200)));
      if (rc < 0 && errno != EINTR) throw Error("communicator", "poll: " + errno_text());
      if (rc <= 0) continue;
      const int fd = ::accept(listener_->fd(), nullptr, nullptr);
      if (fd < 0) continue;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      // A peer has 5 s to say its rank: a stranger that connects and says
      // nothing must not hold the hub.
      timeval limit{5, 0}, none{0, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      Header hello{};
      try {
        read_all(fd, &hello, sizeof hello, -1);
      } catch (const Error&) {
        ::close(fd);
        continue;
      }
      if (hello.magic != kMagic || hello.rank <= 0 || hello.rank >= world_ ||
          peers_[static_cast<size_t>(hello.rank)] >= 0) {
        ::close(fd);  // not one of ours, or a rank twice: ignored
        continue;
      }
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
      shared_->add(fd);
      peers_[static_cast<size_t>(hello.rank)] = fd;
      ++joined;
    }
  }

  // One collective: every rank's header (and buffer) to the hub, the result back.
  void collective(std::span<float> data, int root) {
    const Header mine{kMagic, ++seq_, data.size(), root, rank_};
    const size_t bytes = data.size() * sizeof(float);
    if (rank_ != 0) {
      write_all(peers_[0], &mine, sizeof mine, 0);
      if (root < 0 || root == rank_) write_all(peers_[0], data.data(), bytes, 0);
      Header back{};
      read_all(peers_[0], &back, sizeof back, 0);
      if (back.magic != kMagic || back.seq != mine.seq || back.count != mine.count)
        throw Error("communicator", "rank 0 answered collective " + std::to_string(back.seq) +
                                        " of " + std::to_string(back.count) +
                                        " elements to collective " + std::to_string(mine.seq) +
                                        " of " + std::to_string(mine.count));
      read_all(peers_[0], data.data(), bytes, 0);
      return;
    }
    // The hub: the sum in rank order, as the in-process group takes it.
    std::vector<std::vector<float>> posted(static_cast<size_t>(world_));
    for (int q = 1; q < world_; ++q) {
      Header h{};
      read_all(peers_[static_cast<size_t>(q)], &h, sizeof h, q);
      if (h.magic != kMagic || h.seq != mine.seq || h.count != mine.count || h.root != root)
        throw Error("communicator", "rank " + std::to_string(q) + " gave collective " +
                                        std::to_string(h.seq) + " of " + std::to_string(h.count) +
                                        " elements, rank 0 collective " + std::to_string(mine.seq) +
                                        " of " + std::to_string(mine.count));
      if (root < 0 || root == q) {
        posted[static_cast<size_t>(q)].resize(data.size());
        read_all(peers_[static_cast<size_t>(q)], posted[static_cast<size_t>(q)].data(), bytes, q);
      }
    }
    if (root < 0) {
      for (size_t j = 0; j < data.size(); ++j) {
        float s = 0;
        s += data[j];
        for (int q = 1; q < world_; ++q) s += posted[static_cast<size_t>(q)][j];
        data[j] = s;
      }
    } else if (root > 0) {
      std::copy(posted[static_cast<size_t>(root)].begin(), posted[static_cast<size_t>(root)].end(),
                data.begin());
    }
    for (int q = 1; q < world_; ++q) {
      write_all(peers_[static_cast<size_t>(q)], &mine, sizeof mine, q);
      write_all(peers_[static_cast<size_t>(q)], data.data(), bytes, q);
    }
  }

  const int rank_, world_;
  std::shared_ptr<SocketListener> listener_;
  const std::string rendezvous_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<Shared> shared_;
  std::vector<int> peers_;  // by rank: the hub's sockets to every rank, a rank's to the hub
  uint32_t seq_ = 0;
  bool connected_ = false;
  std::exception_ptr broken_;
};

}  // namespace

SocketListener::SocketListener(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw Error("communicator", "socket: " + errno_text());
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0) {
    const std::string why = errno_text();
    ::close(fd_);
    throw Error("communicator", "cannot listen on port " + std::to_string(port) + ": " + why);
  }
  socklen_t len = sizeof a;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string why = errno_text();
    ::close(fd_);
    throw Error("communicator", "getsockname: " + why);
  }
  port_ = ntohs(a.sin_port);
}

SocketListener::~SocketListener() {
  if (fd_ >= 0) ::close(fd_);
}

std::string SocketListener::rendezvous(const std::string& host) const {
  return "tcp://" + host + ":" + std::to_string(port_);
}

SocketGroup make_socket_group(int world, int first_rank, int local,
                              std::shared_ptr<SocketListener> listener,
                              const std::string& rendezvous, std::chrono::milliseconds timeout) {
  if (world < 1 || local < 1 || first_rank < 0 || first_rank + local > world)
    throw Error("communicator", "ranks " + std::to_string(first_rank) + ".." +
                                    std::to_string(first_rank + local - 1) + " are not of a " +
                                    "group of " + std::to_string(world));
  if (first_rank == 0 && !listener)
    throw Error("communicator", "rank 0 needs its listener (SocketListener)");
  if (first_rank == 0 && local > 1 && rendezvous.empty())
    throw Error("communicator", "rank 0's other local ranks need the rendezvous to connect to");
  if (first_rank > 0 && rendezvous.empty())
    throw Error("communicator", "ranks past 0 need the rendezvous (tcp://HOST:PORT of rank 0)");
  auto shared = std::make_shared<Shared>();
  SocketGroup g;
  for (int i = 0; i < local; ++i)
    g.ranks.push_back(std::make_unique<SocketCommunicator>(first_rank + i, world,
                                                           first_rank + i == 0 ? listener : nullptr,
                                                           rendezvous, timeout, shared));
  g.abort = [shared] { shared->abort(); };
  return g;
}

}  // namespace minas
