#pragma once
// A dashboard server on its own thread for a test's scope.
#include <thread>
#include <utility>

#include "dashboard/server.h"

namespace minas::test {

struct RunningServer {
  dashboard::Server server;
  std::thread thread;
  explicit RunningServer(dashboard::ServerOptions o) : server(std::move(o)) {
    thread = std::thread([this] { server.run(); });
  }
  ~RunningServer() {
    server.stop();
    thread.join();
  }
  RunningServer(const RunningServer&) = delete;
  int port() const { return server.port(); }
};

}  // namespace minas::test
