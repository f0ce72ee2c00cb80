#include "dashboard/server.h"

#include <httplib.h>

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "dashboard/api.h"
#include "dashboard/web_assets.h"
#include "db/queries.h"
#include "db/schema.h"
#include "db/store.h"
#include "searchspace/error.h"

namespace minas::dashboard {

bool is_loopback(const std::string& bind) {
  return bind == "localhost" || bind == "::1" || bind.rfind("127.", 0) == 0;
}

struct Server::Impl {
  ServerOptions opt;
  httplib::Server http;
  std::string chart_js;
  int port = 0;

  // One read-only connection per server thread: SQLite connections are not
  // shared between threads, and readers never wait for the writer (WAL).
  db::Connection& connection() {
    thread_local std::map<std::string, std::unique_ptr<db::Connection>> by_path;
    auto& c = by_path[opt.db];
    if (!c) c = std::make_unique<db::Connection>(db::open_store_readonly(opt.db));
    return *c;
  }

  bool authorized(const httplib::Request& req) const {
    if (opt.token.empty()) return true;
    const std::string bearer = "Bearer " + opt.token;
    if (req.has_header("Authorization") && req.get_header_value("Authorization") == bearer)
      return true;
    return req.has_param("token") && req.get_param_value("token") == opt.token;
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = std::move(options);
  if (!is_loopback(m.opt.bind) && m.opt.token.empty())
    throw Error("--bind " + m.opt.bind,
                "serving beyond this machine needs --token (a bearer token checked on every "
                "request)");
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
  m.http.set_tcp_nodelay(true);  // small JSON answers: no Nagle wait
  m.http.set_pre_routing_handler([&m](const httplib::Request& req, httplib::Response& res) {
    if (m.authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(R"({"error":"a bearer token is required"})", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  m.http.Get("/", [&m](const httplib::Request&, httplib::Response& res) {
    res.set_content(web::kIndexHtml, "text/html; charset=utf-8");
  });
  m.http.Get("/app.js", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(web::kAppJs, "text/javascript; charset=utf-8");
  });
  m.http.Get("/chart.js", [&m](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "max-age=86400");
    res.set_content(m.chart_js, "text/javascript; charset=utf-8");
  });
  m.http.Get(R"(/api/[a-z_]+)", [&m](const httplib::Request& req, httplib::Response& res) {
    std::map<std::string, std::string> params;
    for (const auto& [k, v] : req.params) params[k] = v;  // the last of a repeated one
    ApiResponse r;
    try {
      r = handle_api(m.connection(), req.path, params);
    } catch (const std::exception& e) {
      // The store itself failed (locked past the timeout, corrupt): the
      // server stays up and says so.
      r = {503, nlohmann::json{{"error", e.what()}}.dump()};
    }
    res.status = r.status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(r.body, "application/json");
  });
  m.http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(
          nlohmann::json{{"error", req.path + ": " + std::to_string(res.status)}}.dump(),
          "application/json");
  });
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
  impl_->http.stop();
}

}  // namespace minas::dashboard
