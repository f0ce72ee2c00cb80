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
//
// What a request gets (docs/dashboard.md has the whole list):
//   401  no token, or a wrong one, where one is required (checked first)
//   405  a method other than GET or HEAD
//   400  a request with a body; a target that is malformed (a '%' without two
//        hex digits), too long, not valid UTF-8 once decoded, or holding a
//        control character; a parameter given twice, unknown to the
//        endpoint, or of a bad value; a request head httplib cannot parse or
//        larger than the byte budget
//   414  a request line over 8 KiB
//   404  an unknown path (echoed escaped), experiment or trial
//   500  a fault of the server or the store (503: the store stayed locked):
//        a general message, the details in the server's log
// Every answer is JSON (the page and its scripts aside), valid UTF-8, and
// never carries an exception's text.
//
// Connections (dashboard/connection.h): a thread each, up to max_connections
// (more wait for one to end); idle ones are closed after idle_timeout, a
// request's head must arrive within read_timeout of its first byte, an answer
// be written within write_timeout, and a connection serves at most
// keep_alive_max_count requests. So clients that open sockets and send
// nothing, or half a request, or a byte now and then, cannot make another
// wait for them.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace minas::dashboard {

struct ServerOptions {
  std::string db;                  // the store, opened read-only
  std::string bind = "127.0.0.1";  // address to listen on
  int port = 8080;                 // 0: any free port (port() says which)
  std::string token;               // required when bind is not a loopback address
  std::string chart_js = "/usr/share/javascript/chart.js/chart.min.js";
  std::chrono::milliseconds idle_timeout{5000};    // >= 10 ms
  std::chrono::milliseconds read_timeout{10000};   // >= 10 ms
  std::chrono::milliseconds write_timeout{30000};  // >= 10 ms
  int keep_alive_max_count = 100;                  // 1 to 100,000
  int max_connections = 128;                       // 1 to 4,096
  // Where the server's log lines go (faults, with request text escaped and
  // cut short): standard error when empty. Called from any server thread.
  std::function<void(const std::string&)> log;
};

// Whether the address is loopback only (127.0.0.0/8, ::1, localhost).
bool is_loopback(const std::string& bind);

class Server {
 public:
  // A store of an older schema is migrated first (Store::open). Throws Error
  // for a store that cannot be read, a non-loopback bind without a token, a
  // token that is not 1 to 256 printable ASCII characters without spaces,
  // limits out of their ranges, or an address and port that cannot be bound.
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
