#pragma once
// `minas dashboard`'s HTTP server (Debian's cpp-httplib): the JSON API of
// api.h over read-only connections to the store (one per server thread, so
// requests never wait on each other and never block a writer: SQLite's WAL
// lets readers run beside it), and the page itself (embedded in the binary;
// Chart.js from Debian's libjs-chart.js, read at start).
//
// Bound to localhost unless told otherwise; anywhere else a bearer token is
// required, checked on every request (the `Authorization: Bearer TOKEN`
// header, or `?token=TOKEN` for the page a browser opens).
#include <cstdint>
#include <memory>
#include <string>

namespace minas::dashboard {

struct ServerOptions {
  std::string db;                  // the store, opened read-only
  std::string bind = "127.0.0.1";  // address to listen on
  int port = 8080;                 // 0: any free port (port() says which)
  std::string token;               // required when bind is not a loopback address
  std::string chart_js = "/usr/share/javascript/chart.js/chart.min.js";
};

// Whether the address is loopback only (127.0.0.0/8, ::1, localhost).
bool is_loopback(const std::string& bind);

class Server {
 public:
  // A store of an older schema is migrated first (Store::open). Throws Error
  // for a store that cannot be read, a non-loopback bind
  // without a token, or an address and port that cannot be bound.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  int port() const;
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace minas::dashboard
