#include "dashboard/server.h"

#include <httplib.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "dashboard/api.h"
#include "dashboard/connection.h"
#include "dashboard/request.h"
#include "dashboard/web_assets.h"
#include "db/queries.h"
#include "db/schema.h"
#include "db/store.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::dashboard {

bool is_loopback(const std::string& bind) {
  return bind == "localhost" || bind == "::1" || bind.rfind("127.", 0) == 0;
}

namespace {

// What the connection loop and the handlers of one request tell each other
// (both run on the connection's thread, inside httplib's process_request).
struct Exchange {
  const ConnectionStream* stream = nullptr;
  bool ours = false;   // the head was parsed and reached our handler
  bool close = false;  // end the connection after this answer
};
thread_local Exchange* t_exchange = nullptr;

void close_after_this() {
  if (t_exchange) t_exchange->close = true;
}

// Equal without saying where they differ, through the time taken.
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Range requests are not served: the whole answer always (RFC 9110 lets a
// server ignore Range), so that no answer is a slice of JSON. httplib parsed
// them into its own request object, which is not const where it lives.
void ignore_ranges(const httplib::Request& req) {
  const_cast<httplib::Request&>(req).ranges.clear();
}

void answer(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(error_body(message), "application/json");
}

// The status line httplib writes for statuses it sets itself, as a message.
const char* generic_message(int status) {
  switch (status) {
    case 400:
      return "the request cannot be read (its request line or headers are malformed or too "
             "large)";
    case 404:
      return "no such page";
    case 408:
      return "the request did not arrive whole in time";
    case 431:
      return "the request's head is larger than the server reads";
    case 413:
      return "the request is too large";
    case 414:
      return "the request line is too long";
    case 416:
      return "the range cannot be served";
    default:
      return status >= 500 ? "the server failed to answer; its log says why"
                           : "the request cannot be served";
  }
}

// The connection side of httplib's server replaced (connection.h): its
// accept loop stays, each accepted socket is served here.
class HttpServer final : public httplib::Server {
 public:
  HttpServer(const ConnectionLimits& limits, int stop_fd, size_t max_requests,
             std::function<void(const std::string&)> log)
      : limits_(limits), stop_fd_(stop_fd), max_requests_(max_requests), log_(std::move(log)) {}

 private:
  bool process_and_close_socket(socket_t sock) override {
    ConnectionStream strm(sock, stop_fd_, limits_);
    bool ok = true, drain = false;
    for (size_t served = 0; served < max_requests_ && svr_sock_ != INVALID_SOCKET; ++served) {
      if (!strm.wait_for_request()) break;
      Exchange ex{&strm};
      t_exchange = &ex;
      bool closed = false;
      try {
        ok = process_request(strm, served + 1 == max_requests_, closed, nullptr);
      } catch (const std::exception& e) {
        log_("a request failed outside its handler: " + printable_excerpt(e.what(), 200));
        ok = false;
      } catch (...) {
        log_("a request failed outside its handler");
        ok = false;
      }
      t_exchange = nullptr;
      drain = ex.close;
      if (!ok && strm.phase() == ConnectionStream::Phase::Reading &&
          strm.refusal() != ConnectionStream::Refusal::None) {
        // httplib gave up on the request line without answering.
        answer_refusal(strm);
        drain = true;
      }
      if (!ok || closed || ex.close) break;
    }
    if (drain) strm.drain_and_close();
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  // 408 for a request line that did not arrive in time, 414 for one over
  // the byte budget.
  static void answer_refusal(ConnectionStream& strm) {
    const bool late = strm.refusal() == ConnectionStream::Refusal::TimedOut;
    const std::string body = error_body(generic_message(late ? 408 : 414));
    const std::string head =
        std::string("HTTP/1.1 ") + (late ? "408 Request Timeout" : "414 URI Too Long") +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n";
    const std::string all = head + body;
    for (size_t at = 0; at < all.size();) {
      const ssize_t n = strm.write(all.data() + at, all.size() - at);
      if (n <= 0) return;
      at += static_cast<size_t>(n);
    }
  }

  ConnectionLimits limits_;
  int stop_fd_;
  size_t max_requests_;
  std::function<void(const std::string&)> log_;
};

void check_options(const ServerOptions& o) {
  for (const auto& [name, value] :
       {std::pair{"idle_timeout", o.idle_timeout}, std::pair{"read_timeout", o.read_timeout},
        std::pair{"write_timeout", o.write_timeout}})
    if (value < std::chrono::milliseconds(10) || value > std::chrono::hours(1))
      throw Error(std::string("dashboard ") + name, "must be from 10 ms to an hour");
  if (o.keep_alive_max_count < 1 || o.keep_alive_max_count > 100000)
    throw Error("dashboard keep_alive_max_count", "must be from 1 to 100,000");
  if (o.max_connections < 1 || o.max_connections > 4096)
    throw Error("dashboard max_connections", "must be from 1 to 4,096");
  if (!o.token.empty()) {
    bool printable = o.token.size() <= 256;
    for (const char c : o.token) printable = printable && c > 0x20 && c < 0x7f;
    if (!printable)
      throw Error("--token", "must be 1 to 256 printable ASCII characters without spaces");
  }
  if (!is_loopback(o.bind) && o.token.empty())
    throw Error("--bind " + o.bind,
                "serving beyond this machine needs --token (a bearer token checked on every "
                "request)");
}

int make_stop_fd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw Error("dashboard", "cannot create an eventfd");
  return fd;
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  std::function<void(const std::string&)> log;
  int stop_fd;
  HttpServer http;
  std::string chart_js;
  int port = 0;

  explicit Impl(ServerOptions o)
      : opt(std::move(o)),
        log(opt.log ? opt.log
                    : std::function<void(const std::string&)>([](const std::string& line) {
                        std::fprintf(stderr, "minas dashboard: %s\n", line.c_str());
                      })),
        stop_fd(make_stop_fd()),
        http(ConnectionLimits{opt.idle_timeout, opt.read_timeout, opt.write_timeout}, stop_fd,
             static_cast<size_t>(opt.keep_alive_max_count), log) {}
  ~Impl() { ::close(stop_fd); }

  // One read-only connection per server thread: SQLite connections are not
  // shared between threads, and readers never wait for the writer (WAL).
  db::Connection& connection() {
    thread_local std::map<std::string, std::unique_ptr<db::Connection>> by_path;
    auto& c = by_path[opt.db];
    if (!c) c = std::make_unique<db::Connection>(db::open_store_readonly(opt.db));
    return *c;
  }

  bool authorized(const httplib::Request& req, const Target& target) const {
    if (opt.token.empty()) return true;
    // The scheme's name is case-insensitive (RFC 9110, 11.1).
    if (const std::string h = req.get_header_value("Authorization");
        h.size() > 7 && strncasecmp(h.c_str(), "Bearer ", 7) == 0 &&
        same_secret(std::string_view(h).substr(7), opt.token))
      return true;
    if (!target.error.empty()) return false;
    for (const auto& [name, value] : target.params)
      if (name == "token") return same_secret(value, opt.token);
    return false;
  }

  void handle(const httplib::Request& req, httplib::Response& res);
  void serve_file(const Target& t, httplib::Response& res, const std::string& body,
                  const char* type);
  void serve_api(const Target& t, httplib::Response& res);
  void log_request(const httplib::Request& req, const std::string& what) const {
    log(req.method.substr(0, 8) + " " + printable_excerpt(req.target, 120) + ": " +
        printable_excerpt(what, 300));
  }
};

void Server::Impl::handle(const httplib::Request& req, httplib::Response& res) {
  if (t_exchange) t_exchange->ours = true;
  ignore_ranges(req);
  const Target t = decode_target(req.target);
  if (!authorized(req, t)) {
    res.set_header("WWW-Authenticate", "Bearer");
    return answer(res, 401, "a bearer token is required");
  }
  if (req.method != "GET" && req.method != "HEAD") {
    res.set_header("Allow", "GET, HEAD");
    if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding"))
      close_after_this();  // its body is never read
    return answer(res, 405, "only GET and HEAD are served");
  }
  if ((req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0") ||
      req.has_header("Transfer-Encoding")) {
    close_after_this();
    return answer(res, 400, "a GET request with a body is not served");
  }
  if (!t.error.empty()) return answer(res, 400, t.error);
  if (t.path == "/") return serve_file(t, res, web::kIndexHtml, "text/html; charset=utf-8");
  if (t.path == "/app.js") return serve_file(t, res, web::kAppJs, "text/javascript; charset=utf-8");
  if (t.path == "/chart.js") {
    res.set_header("Cache-Control", "max-age=86400");
    return serve_file(t, res, chart_js, "text/javascript; charset=utf-8");
  }
  if (t.path.rfind("/api/", 0) == 0) return serve_api(t, res);
  answer(res, 404, "'" + printable_excerpt(t.path, 80) + "': no such page");
}

void Server::Impl::serve_file(const Target& t, httplib::Response& res, const std::string& body,
                              const char* type) {
  for (const auto& [name, value] : t.params)
    if (name != "token")
      return answer(res, 400,
                    "unknown parameter '" + printable_excerpt(name, 40) + "' (" + t.path +
                        " takes only token)");
  res.set_content(body, type);
}

void Server::Impl::serve_api(const Target& t, httplib::Response& res) {
  std::map<std::string, std::string> params;
  for (const auto& [name, value] : t.params)
    if (name != "token") params[name] = value;
  ApiResponse r;
  try {
    r = handle_api(connection(), t.path, params);
  } catch (const std::exception& e) {
    // The store could not be opened for this thread (gone, unreadable).
    r = {500, error_body("the server failed to answer; its log says why"), e.what()};
  }
  if (!r.fault.empty()) log(printable_excerpt(t.path, 80) + ": " + printable_excerpt(r.fault, 300));
  res.status = r.status;
  res.set_header("Cache-Control", "no-store");
  if (r.status == 503) res.set_header("Retry-After", "1");
  res.set_content(r.body, "application/json");
}

Server::Server(ServerOptions options) {
  check_options(options);
  impl_ = std::make_unique<Impl>(std::move(options));
  Impl& m = *impl_;
  // The store must be readable now, not at the first request. A store of an
  // older minas is first brought to the current schema (the change cursor
  // and the counts the API reads): the one write the dashboard makes.
  {
    db::Connection c = db::open_store_readonly(m.opt.db);
    if (db::check_store(c) < db::current_schema_version()) db::Store::open(m.opt.db);
  }
  {
    std::ifstream in(m.opt.chart_js, std::ios::binary);
    if (!in)
      throw Error(m.opt.chart_js,
                  "cannot read Chart.js (Debian's libjs-chart.js; scripts/install-deps.sh "
                  "installs it)");
    std::ostringstream ss;
    ss << in.rdbuf();
    m.chart_js = ss.str();
  }
  const size_t threads = static_cast<size_t>(m.opt.max_connections);
  m.http.new_task_queue = [threads] { return new ConnectionThreads(threads); };
  // httplib's own settings: the socket timeouts it sets on each accepted
  // socket and the Keep-Alive header it writes (the deadlines are kept by
  // ConnectionStream).
  m.http.set_read_timeout(m.opt.read_timeout);
  m.http.set_write_timeout(m.opt.write_timeout);
  m.http.set_keep_alive_max_count(static_cast<size_t>(m.opt.keep_alive_max_count));
  m.http.set_keep_alive_timeout(
      std::max<time_t>(1, std::chrono::ceil<std::chrono::seconds>(m.opt.idle_timeout).count()));
  m.http.set_payload_max_length(64 * 1024);
  m.http.set_tcp_nodelay(true);  // small JSON answers: no Nagle wait
  // Every request is answered here, before httplib's routing (which would
  // match paths with std::regex and read bodies).
  m.http.set_pre_routing_handler([&m](const httplib::Request& req, httplib::Response& res) {
    try {
      m.handle(req, res);
    } catch (const std::exception& e) {
      m.log_request(req, e.what());
      res.headers.clear();
      answer(res, 500, generic_message(500));
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  m.http.set_exception_handler(
      [&m](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          m.log_request(req, e.what());
        } catch (...) {
          m.log_request(req, "an exception of unknown type");
        }
        answer(res, 500, generic_message(500));
      });
  // httplib's own refusals (a head it cannot parse, a request line too long)
  // get a JSON body that says what in general terms, and end the connection:
  // the rest of what the client sent cannot be trusted to start a request.
  m.http.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (t_exchange && t_exchange->ours) return httplib::Server::HandlerResponse::Unhandled;
        ignore_ranges(req);
        // A head httplib could not read because the stream refused it: say why.
        if (t_exchange && t_exchange->stream) {
          if (t_exchange->stream->refusal() == ConnectionStream::Refusal::TimedOut)
            res.status = 408;
          if (t_exchange->stream->refusal() == ConnectionStream::Refusal::TooLarge)
            res.status = 431;
        }
        close_after_this();
        res.set_header("Connection", "close");
        answer(res, res.status, generic_message(res.status));
        return httplib::Server::HandlerResponse::Handled;
      }));
  if (m.opt.port == 0) {
    m.port = m.http.bind_to_any_port(m.opt.bind);
    if (m.port < 0) throw Error("--bind " + m.opt.bind, "cannot listen on any port there");
  } else {
    if (!m.http.bind_to_port(m.opt.bind, m.opt.port))
      throw Error("--bind " + m.opt.bind + " --port " + std::to_string(m.opt.port),
                  "cannot listen there (in use, or not an address of this machine)");
    m.port = m.opt.port;
  }
}

Server::~Server() {
  stop();
}

int Server::port() const {
  return impl_->port;
}

void Server::run() {
  impl_->http.listen_after_bind();
}

void Server::stop() {
  // Wakes every connection waiting for or reading a request (async-signal
  // safe: a signal handler calls this).
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(impl_->stop_fd, &one, sizeof one);
  impl_->http.stop();
}

}  // namespace minas::dashboard
