// The dashboard in a real browser: headless Chromium driven over WebDriver
// (Debian's chromium and chromium-driver) opens the overview while a writer
// adds trials, sees the trial count rise without a reload, opens a trial
// page from the table, and saves screenshots (test-artifacts/ in the build
// folder).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "dashboard/server.h"
#include "db/store.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "tests/support.h"

using namespace minas;
using Json = nlohmann::json;

namespace {

const char* const kElement = "element-6066-11e4-a52e-4f735466cecf";

std::string base64_decode(const std::string& in) {
  std::string out;
  int val = 0, bits = -8;
  for (unsigned char c : in) {
    int d;
    if (c >= 'A' && c <= 'Z')
      d = c - 'A';
    else if (c >= 'a' && c <= 'z')
      d = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      d = c - '0' + 52;
    else if (c == '+')
      d = 62;
    else if (c == '/')
      d = 63;
    else
      continue;
    val = (val << 6) + d;
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

// chromedriver on a port of its own, in a process group of its own with the
// browser it starts; its output goes to a log file (never to the test's own
// output, which CTest reads to the end), and the group is killed at scope
// exit, or by the kernel if the test process dies first.
struct Driver {
  pid_t pid = -1;
  int port = 0;
  Driver(int p, const std::string& log) : port(p) {
    std::filesystem::create_directories(std::filesystem::path(log).parent_path());
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
      }
      const std::string arg = "--port=" + std::to_string(p);
      execl("/usr/bin/chromedriver", "chromedriver", arg.c_str(), "--log-level=WARNING",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    setpgid(pid, pid);
  }
  ~Driver() {
    if (pid <= 0) return;
    kill(-pid, SIGTERM);
    for (int i = 0; i < 50; ++i) {  // 5 s to go, then killed
      if (waitpid(pid, nullptr, WNOHANG) == pid) {
        kill(-pid, SIGKILL);  // what the driver left behind of the browser
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(-pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

// The WebDriver session. Reads go through one script run in the page, so an
// element the page redraws between a lookup and a read is never stale.
struct Session {
  httplib::Client http;
  std::string id;
  explicit Session(int port) : http("127.0.0.1", port) {
    http.set_read_timeout(30);
    http.set_connection_timeout(5);
  }
  Json call(const std::string& method, const std::string& path, const Json& body = Json::object()) {
    const std::string url = "/session/" + id + path;
    httplib::Result r = method == "GET"      ? http.Get(url)
                        : method == "DELETE" ? http.Delete(url)
                                             : http.Post(url, body.dump(), "application/json");
    if (!r)
      throw std::runtime_error(method + " " + url + ": no answer (" + to_string(r.error()) + ")");
    if (r->status != 200) throw std::runtime_error(method + " " + url + ": " + r->body);
    const Json j = Json::parse(r->body, nullptr, false);
    return j.is_object() ? j.value("value", Json()) : Json();
  }
  Json script(const std::string& js, const Json& args = Json::array()) {
    return call("POST", "/execute/sync", {{"script", js}, {"args", args}});
  }
  std::string find(const std::string& css) {
    return call("POST", "/element", {{"using", "css selector"}, {"value", css}})[kElement];
  }
  // The element's text, or "" while there is none.
  std::string text(const std::string& css) {
    const Json t = script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.innerText : null;",
        Json::array({css}));
    return t.is_string() ? t.get<std::string>() : "";
  }
  void screenshot(const std::string& file) {
    const std::string png = base64_decode(call("GET", "/screenshot").get<std::string>());
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    REQUIRE(png.rfind("\x89PNG", 0) == 0);
    std::ofstream(file, std::ios::binary) << png;
    MESSAGE("screenshot: " << file);
  }
};

// A port free now: bound to port 0, read back, closed.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

TEST_CASE("dashboard in a browser: the overview goes live, and a trial opens from the table") {
  if (!std::filesystem::exists("/usr/bin/chromedriver") ||
      !std::filesystem::exists("/usr/bin/chromium")) {
    MESSAGE("skipped: no /usr/bin/chromium and /usr/bin/chromedriver (scripts/install-deps.sh)");
    return;
  }
  test::TempDir dir("dashboard-browser");
  const std::string path = dir.file("minas.db");
  db::Store store = db::Store::open(path);
  db::ExperimentSpec s;
  s.name = "live";
  s.space = "nb201";
  const Space space = Space::load("nb201");
  s.space_json = space.spec();
  s.dataset = "simulated";
  s.dataset_fingerprint = "0000000000000000";
  s.strategy = "evolution";
  s.strategy_settings = {{"name", "evolution"}};
  s.recipe = {{"epochs", 1}};
  s.objective = "val_acc";
  const int64_t e = store.create_experiment(s, 0);
  const int64_t worker = store.upsert_worker("w1", "localhost", {"cpu"}, 0.0);
  db::Writer writer(store);
  Rng rng(5);
  std::vector<double> population;  // what an evolution of P = 10 would show
  // A sampled architecture's trial, queued and started at `at`.
  auto start = [&](int fidelity, int at) {
    db::NewTrial t;
    t.experiment_id = e;
    t.arch_key = space.key(space.sample(rng));
    t.arch_hash = fnv1a64(t.arch_key);
    t.arch_json = "{}";
    t.fidelity = fidelity;
    t.queued_at = at;
    const int64_t id = writer.add_trial(t);
    writer.start_trial(id, 0, worker, "cpu", at);
    return id;
  };
  auto add = [&](int i) {
    const int64_t id = start(1, i);
    db::TrialResult r;
    r.trial_id = id;
    r.val_acc = 0.5 + 0.4 * (i % 10) / 10.0;
    r.params = 1000 + i;
    r.finished_at = i + 1;
    r.worker_id = worker;
    writer.record_epoch({id, 0, 1, 1.0, r.val_acc, r.val_acc, 0.1, 1.0, std::nullopt});
    writer.record_result(r);
    population.push_back(r.val_acc);
    if (population.size() > 10) population.erase(population.begin());
    store.add_strategy_snapshot(e, i + 1, {{"population", population}}, i + 1);
    store.add_pool_sample(e, i + 0.5, 1, 2, 1 + i % 2, 3);
    writer.commit();
  };
  for (int i = 0; i < 5; ++i) add(i);
  // Trial 5 runs on, an epoch at a time.
  const int64_t slow_id = start(1000, 5);
  writer.commit();
  dashboard::ServerOptions o;
  o.db = path;
  o.port = 0;
  o.token = "t0k";  // the page carries it to its scripts and its API calls
  dashboard::Server server(o);

  // The server runs until the end of the test, however it ends: a failed REQUIRE or a
  // WebDriver error stops and joins it here.
  struct Background {
    dashboard::Server& server;
    std::thread serving;
    ~Background() {
      server.stop();
      if (serving.joinable()) serving.join();
    }
  } background{server, {}};
  background.serving = std::thread([&] { server.run(); });
  // The simulated search goes on when the test makes it, while the page is open: a trial
  // more, and an epoch more of trial 5. The page must show each step without a reload.
  int next = 6;
  auto advance = [&] {
    writer.record_epoch(
        {slow_id, 0, next - 5, 1.0 / (next - 5), 0.5, 0.5 + 0.001 * next, 0.1, 1.0, std::nullopt});
    add(next++);
  };

  // Every wait on the page below returns when what it waits for shows; this bound only ends
  // a test whose page never shows it (within the test's own 300 s).
  constexpr double kGuard = 60;
  const int dport = free_port();
  Driver driver(dport, "test-artifacts/chromedriver.log");
  Session browser(dport);
  // Up to `seconds` (a hang guard) for `done` to hold; what the page threw meanwhile (a
  // slow page, an element not drawn yet) is retried, the last of it returned.
  auto wait_for = [&](double seconds, const std::function<bool()>& done) {
    std::string why;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      try {
        if (done()) return std::string();
        why.clear();
      } catch (const std::exception& x) {
        why = x.what();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return why.empty() ? std::string("timed out") : why;
  };
  CHECK(wait_for(kGuard, [&] {  // chromedriver listening
          auto r = browser.http.Get("/status");
          return r && r->status == 200;
        }) == "");
  const Json caps = {{"capabilities",
                      {{"alwaysMatch",
                        {{"browserName", "chrome"},
                         {"goog:chromeOptions",
                          {{"binary", "/usr/bin/chromium"},
                           {"args",
                            {"--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"}}}}}}}}};
  browser.http.set_read_timeout(90);  // a first start of the browser on a busy machine
  auto created = browser.http.Post("/session", caps.dump(), "application/json");
  browser.http.set_read_timeout(30);
  REQUIRE_MESSAGE(created, "chromedriver did not answer");
  REQUIRE_MESSAGE(created->status == 200, created->body);
  browser.id = Json::parse(created->body)["value"]["sessionId"];
  // Every later step is bounded: a page that stops answering fails the test
  // with what it said, never hangs it.
  browser.call("POST", "/timeouts", {{"script", 20000}, {"pageLoad", 60000}});

  const std::string base = "http://127.0.0.1:" + std::to_string(server.port()) + "/";
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/live"}});
  auto total = [&] {
    const std::string t = browser.text("[data-count=total]");  // "total N"
    const size_t space_at = t.find(' ');
    if (space_at == std::string::npos) throw std::runtime_error("no count yet: '" + t + "'");
    return std::stoi(t.substr(space_at + 1));
  };
  int first = 0;
  const std::string why = wait_for(kGuard, [&] { return (first = total()) >= 5; });
  if (!why.empty())
    MESSAGE("the count could not be read (" << why
                                            << "); the page shows: " << browser.text("body"));
  REQUIRE(first >= 5);
  // A mark on the page: a reload would lose it. And a zoom: a drag across the
  // best-so-far chart by trial count, which live updates must keep.
  browser.script("window.minasMark = 42;");
  const char* const kDrag = R"(
    const canvas = document.querySelectorAll('canvas')[1];
    const r = canvas.getBoundingClientRect();
    const at = (type, x) => canvas.dispatchEvent(new MouseEvent(type, {
      clientX: r.left + x, clientY: r.top + r.height / 2, bubbles: true }));
    at('mousedown', 120);
    at('mouseup', 320);
    const x = Chart.getChart(canvas).options.scales.x;
    return [x.min ?? null, x.max ?? null];)";
  const Json zoom = browser.script(kDrag);
  REQUIRE_MESSAGE(zoom[0].is_number(), zoom.dump());
  CHECK(zoom[0].get<double>() < zoom[1].get<double>());
  // Two steps of the search, each shown live.
  int later = first;
  for (int step = 0; step < 2; ++step) {
    const int before = later;
    advance();
    CHECK(wait_for(kGuard, [&] { return (later = total()) > before; }) == "");
    CHECK(later > before);
  }
  CHECK(browser.script("return window.minasMark;") == 42);
  const Json kept = browser.script(
      "const x = Chart.getChart(document.querySelectorAll('canvas')[1]).options.scales.x;"
      "return [x.min ?? null, x.max ?? null];");
  CHECK(kept == zoom);  // the new data did not reset the zoom
  browser.screenshot("test-artifacts/dashboard-overview.png");

  // A trial from the table: a real click on its link (looked up again if the
  // table was redrawn between the lookup and the click).
  std::string number;
  CHECK(wait_for(kGuard, [&] {
          const std::string link = browser.find("#trials a");
          number = browser.call("GET", "/element/" + link + "/text").get<std::string>();
          browser.call("POST", "/element/" + link + "/click");
          return true;
        }) == "");
  std::string heading;
  wait_for(kGuard, [&] { return (heading = browser.text("main h2")) == "Trial " + number; });
  CHECK(heading == "Trial " + number);
  CHECK(browser.text("#trial").find("~0|") != std::string::npos);  // an nb201 cell
  // Its layer graph by block, from the stem to the head.
  std::string blocks;
  wait_for(kGuard,
           [&] { return (blocks = browser.text("#blocks")).find("head") != std::string::npos; });
  CHECK(blocks.find("stem") != std::string::npos);
  CHECK(blocks.find("head") != std::string::npos);
  CHECK(blocks.find("10 classes") != std::string::npos);
  browser.screenshot("test-artifacts/dashboard-trial.png");
  auto wait_text = [&](const std::string& css, const std::string& want) {
    std::string got;
    wait_for(kGuard, [&] { return (got = browser.text(css)).find(want) != std::string::npos; });
    return got;
  };
  // The running trial's page follows its epochs without a reload.
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/live/t/5"}});
  auto epochs = [&] {
    const std::string facts = wait_text("#trial", "epochs");
    const size_t at = facts.find("epochs");
    return at == std::string::npos ? -1 : std::atoi(facts.c_str() + at + 7);
  };
  const int epochs_first = epochs();
  CHECK(epochs_first >= 1);
  int epochs_later = epochs_first;
  advance();
  CHECK(wait_for(kGuard, [&] { return (epochs_later = epochs()) > epochs_first; }) == "");
  CHECK(epochs_later > epochs_first);
  CHECK(browser
            .script("return Chart.getChart(document.querySelector('canvas'))"
                    ".data.datasets[0].data.length;")
            .get<int>() >= epochs_later);
  // Search internals: the population's scores as results came in.
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/live/internals"}});
  CHECK(wait_text("#internals-note", "snapshots shown").find("snapshots shown") !=
        std::string::npos);
  CHECK(browser.text("main h2") == "Search internals of live (evolution)");
  browser.screenshot("test-artifacts/dashboard-internals.png");
  // Workers: the pool over time and the worker now.
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/live/workers"}});
  CHECK(wait_text("#workers", "w1").find("localhost") != std::string::npos);
  int pool_points = 0;
  wait_for(kGuard, [&] {
    pool_points =
        browser.script("return Chart.getChart('pool-chart').data.datasets[0].data.length;")
            .get<int>();
    return pool_points >= 5;
  });
  CHECK(pool_points >= 5);
  browser.screenshot("test-artifacts/dashboard-workers.png");
  // Every trial, sorted on the server by validation accuracy.
  browser.call("POST", "/url",
               {{"url", base + "?token=t0k#/e/live/trials?sort=val_acc&status=done"}});
  const std::string all = wait_text("#all-trials", "~0|");
  CHECK(all.find("done") != std::string::npos);
  CHECK(wait_text("main h2", "Trials of") == "Trials of live, by val_acc, done");

  // A finished one-click search: 14 minutes of search over two runs, the
  // trial budget minas search sets (which 14 minutes never reach). The
  // budget line shows the store's seconds and the budget that ended it.
  s.name = "one-click";
  const int64_t done_e = store.create_experiment(s, 0);
  store.set_experiment_status(done_e, "running", 100);
  store.set_experiment_budget(done_e, 1'000'000, 840, 100);
  store.add_seconds_run(done_e, 300);
  store.add_seconds_run(done_e, 540);
  // One trial of it pruned at its first rung: the table says where and at what accuracy.
  {
    db::NewTrial t;
    t.experiment_id = done_e;
    t.arch_key = space.key(space.sample(rng));
    t.arch_hash = fnv1a64(t.arch_key);
    t.arch_json = "{}";
    t.fidelity = 3;
    t.queued_at = 200;
    const int64_t id = writer.add_trial(t);
    writer.start_trial(id, 0, worker, "cpu", 200);
    writer.record_epoch({id, 0, 1, 1.0, 0.375, 0.375, 0.1, 1.0, std::nullopt});
    writer.mark_pruned(id, 0, 300);
    writer.commit();
  }
  store.set_experiment_status(done_e, "finished", 1000);
  const double stored = store.experiment("one-click").seconds_run;
  CHECK(stored == 840.0);
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/one-click"}});
  const std::string line = wait_text("#budget", "ended by");
  INFO(line);
  CHECK(browser.text("#budget-seconds") == "14 min 0 s of 14 min 0 s");  // 840 s, as stored
  CHECK(browser.text("#budget-trials") == "1 trials");  // the unreachable trial budget not shown
  CHECK(wait_text("#trials", "pruned at").find("pruned at 1 ep: 37.50%") != std::string::npos);
  CHECK(browser.text("#budget-ends") == "ended by its time budget");
  browser.screenshot("test-artifacts/dashboard-budget.png");
  browser.call("DELETE", "");
}
