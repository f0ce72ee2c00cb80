// `minas dashboard`: a live web page over an experiment store.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "dashboard/server.h"
#include "searchspace/error.h"

namespace minas::cli {
namespace {

struct DashboardFlags {
  std::string db = "minas.db", bind = "127.0.0.1", token;
  int port = 8080;
};

std::atomic<dashboard::Server*> g_server{nullptr};

extern "C" void on_dashboard_signal(int) {
  if (dashboard::Server* s = g_server.load()) s->stop();
}

}  // namespace

void add_dashboard_command(CLI::App& app) {
  auto f = std::make_shared<DashboardFlags>();
  CLI::App* cmd = app.add_subcommand(
      "dashboard", "Serve a live web page over an experiment store (read-only; docs/dashboard.md)");
  cmd->add_option("--db", f->db, "The experiment store")->default_val("minas.db");
  cmd->add_option("--port", f->port, "Port to listen on (0: any free one)")
      ->default_val(8080)
      ->check(in_range(0, 65535));
  cmd->add_option("--bind", f->bind, "Address to listen on; beyond loopback, --token is required")
      ->default_val("127.0.0.1");
  cmd->add_option("--token", f->token,
                  "Bearer token every request must carry (header Authorization: Bearer TOKEN, "
                  "or ?token=TOKEN in the page's address)");
  cmd->callback([f] {
    dashboard::ServerOptions o;
    o.db = f->db;
    o.bind = f->bind;
    o.port = f->port;
    o.token = f->token;
    dashboard::Server server(o);
    std::fprintf(
        stderr, "minas dashboard: http://%s:%d/%s (store %s, read-only); Ctrl-C stops\n",
        f->bind.find(':') != std::string::npos ? ("[" + f->bind + "]").c_str() : f->bind.c_str(),
        server.port(), f->token.empty() ? "" : "?token=TOKEN", f->db.c_str());
    g_server = &server;
    struct sigaction sa {};
    sa.sa_handler = on_dashboard_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    server.run();
    g_server = nullptr;
  });
}

}  // namespace minas::cli
