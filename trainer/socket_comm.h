#pragma once
// The in-process group's counterpart across processes and hosts: the ranks of
// one data-parallel trial over TCP, for a trial whose ranks are on several
// workers (a gang). Rank 0 is the hub: it listens, every other rank connects
// to it and says its rank, and each collective is every rank's buffer sent to
// the hub, summed there in rank order (the same bits as the in-process group
// gives) and sent back. The hub's address is the group's rendezvous, which
// the controller hands from rank 0's worker to the others (for NCCL it would
// be the unique id).
//
// A rank that leaves (its process ends, its host is cut off and abort() is
// called) makes the collectives of the others fail with an Error naming it:
// the trial fails on every rank instead of hanging.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/comm.h"

namespace minas {

// Rank 0's listening socket, opened before anything else so that its port
// can be handed to the other ranks.
class SocketListener {
 public:
  // Listens on every interface at a free port (or `port`). Throws Error.
  explicit SocketListener(int port = 0);
  ~SocketListener();
  SocketListener(const SocketListener&) = delete;
  SocketListener& operator=(const SocketListener&) = delete;
  int port() const { return port_; }
  int fd() const { return fd_; }
  // "tcp://HOST:PORT": what the other ranks connect to.
  std::string rendezvous(const std::string& host) const;

 private:
  int fd_ = -1;
  int port_ = 0;
};

struct SocketGroup {
  // This process's ranks, first_rank + i at index i, each used by its own
  // thread (as make_thread_group's).
  std::vector<std::unique_ptr<Communicator>> ranks;
  // Makes every pending and later collective of these ranks fail at once
  // (sockets shut down): for a cancelled trial whose peers may never answer.
  std::function<void()> abort;
};

// `local` ranks of a group of `world`, numbered from `first_rank`. The
// process holding rank 0 passes its listener (first_rank must be 0); the
// others pass the rendezvous ("tcp://HOST:PORT"). Connections are made by the
// ranks' own threads, so this returns at once; a rank that cannot connect,
// or a hub that has not heard from every rank, within `timeout` fails its
// first collective.
SocketGroup make_socket_group(int world, int first_rank, int local,
                              std::shared_ptr<SocketListener> listener,
                              const std::string& rendezvous,
                              std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace minas
