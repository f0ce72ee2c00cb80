// The dashboard in a real browser: headless Chromium driven over WebDriver
// (Debian's chromium and chromium-driver) opens the overview while a writer
// adds trials, sees the trial count rise without a reload, opens a trial
// page from the table, and saves screenshots (test-artifacts/ in the build
// folder).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
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

// chromedriver on a port of its own, killed at scope exit.
struct Driver {
  pid_t pid = -1;
  int port = 0;
  explicit Driver(int p) : port(p) {
    pid = fork();
    if (pid == 0) {
      const std::string arg = "--port=" + std::to_string(p);
      execl("/usr/bin/chromedriver", "chromedriver", arg.c_str(), "--log-level=OFF",
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Driver() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

struct Session {
  httplib::Client http;
  std::string id;
  explicit Session(int port) : http("127.0.0.1", port) {
    http.set_read_timeout(60);
    http.set_connection_timeout(5);
  }
  Json call(const std::string& method, const std::string& path, const Json& body = Json::object()) {
    const std::string url = "/session/" + id + path;
    httplib::Result r = method == "GET"      ? http.Get(url)
                        : method == "DELETE" ? http.Delete(url)
                                             : http.Post(url, body.dump(), "application/json");
    if (!r) throw std::runtime_error(method + " " + url + ": no answer");
    if (r->status != 200) throw std::runtime_error(method + " " + url + ": " + r->body);
    const Json j = Json::parse(r->body, nullptr, false);
    return j.is_object() ? j.value("value", Json()) : Json();
  }
  std::string find(const std::string& css) {
    return call("POST", "/element", {{"using", "css selector"}, {"value", css}})[kElement];
  }
  std::string text(const std::string& css) {
    return call("GET", "/element/" + find(css) + "/text").get<std::string>();
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
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  Rng rng(5);
  std::vector<double> population;  // what an evolution of P = 10 would show
  auto add = [&](int i) {
    db::NewTrial t;
    t.experiment_id = e;
    t.arch_key = space.key(space.sample(rng));
    t.arch_hash = fnv1a64(t.arch_key);
    t.arch_json = "{}";
    t.fidelity = 1;
    t.queued_at = i;
    const int64_t id = writer.add_trial(t);
    writer.start_trial(id, 0, worker, "cpu", i);
    db::TrialResult r;
    r.trial_id = id;
    r.val_acc = 0.5 + 0.4 * (i % 10) / 10.0;
    r.params = 1000 + i;
    r.finished_at = i + 1;
    r.worker_id = worker;
    writer.record_epoch({id, 0, 1, 1.0, r.val_acc, r.val_acc, 0.1, 1.0});
    writer.record_result(r);
    population.push_back(r.val_acc);
    if (population.size() > 10) population.erase(population.begin());
    store.add_strategy_snapshot(e, i + 1, {{"population", population}}, i + 1);
    store.add_pool_sample(e, i + 0.5, 1, 2, 1 + i % 2, 3);
    writer.commit();
    ++written;
  };
  for (int i = 0; i < 5; ++i) add(i);
  // Trial 5 runs on, an epoch at a time.
  db::NewTrial slow;
  slow.experiment_id = e;
  slow.arch_key = space.key(space.sample(rng));
  slow.arch_hash = fnv1a64(slow.arch_key);
  slow.arch_json = "{}";
  slow.fidelity = 1000;
  slow.queued_at = 5;
  const int64_t slow_id = writer.add_trial(slow);
  writer.start_trial(slow_id, 0, worker, "cpu", 5);
  writer.commit();
  // A simulated search keeps writing: a trial every 200 ms, and an epoch of
  // trial 5 with each.
  std::thread search([&] {
    for (int i = 6; !stop; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      writer.record_epoch({slow_id, 0, i - 5, 1.0 / (i - 5), 0.5, 0.5 + 0.001 * i, 0.1, 1.0});
      add(i);
    }
  });

  dashboard::ServerOptions o;
  o.db = path;
  o.port = 0;
  o.token = "t0k";  // the page carries it to its scripts and its API calls
  dashboard::Server server(o);
  std::thread serving([&] { server.run(); });

  const int dport = free_port();
  Driver driver(dport);
  Session browser(dport);
  for (int i = 0; i < 100; ++i) {  // up to 10 s for chromedriver to listen
    if (auto r = browser.http.Get("/status"); r && r->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const Json caps = {{"capabilities",
                      {{"alwaysMatch",
                        {{"browserName", "chrome"},
                         {"goog:chromeOptions",
                          {{"binary", "/usr/bin/chromium"},
                           {"args",
                            {"--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"}}}}}}}}};
  auto created = browser.http.Post("/session", caps.dump(), "application/json");
  REQUIRE_MESSAGE(created, "chromedriver did not answer");
  REQUIRE_MESSAGE(created->status == 200, created->body);
  browser.id = Json::parse(created->body)["value"]["sessionId"];

  const std::string base = "http://127.0.0.1:" + std::to_string(server.port()) + "/";
  browser.call("POST", "/url", {{"url", base + "?token=t0k#/e/live"}});
  auto total = [&] {
    const std::string t = browser.text("[data-count=total]");  // "total N"
    return std::stoi(t.substr(t.find(' ') + 1));
  };
  int first = 0;
  std::string why;
  for (int i = 0; i < 50 && first == 0; ++i) {  // the page's first answer
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      first = total();
    } catch (const std::exception& x) {
      why = x.what();
    }
  }
  if (first == 0) MESSAGE("the count could not be read: " << why);
  if (first < 5)
    MESSAGE("the page shows: " << browser
                                      .call("POST", "/execute/sync",
                                            {{"script", "return document.body.innerText;"},
                                             {"args", Json::array()}})
                                      .dump());
  REQUIRE(first >= 5);
  // A mark on the page: a reload would lose it. And a zoom: a drag across the
  // best-so-far chart by trial count, which live updates must keep.
  browser.call("POST", "/execute/sync",
               {{"script", "window.minasMark = 42;"}, {"args", Json::array()}});
  const char* const kDrag = R"(
    const canvas = document.querySelectorAll('canvas')[1];
    const r = canvas.getBoundingClientRect();
    const at = (type, x) => canvas.dispatchEvent(new MouseEvent(type, {
      clientX: r.left + x, clientY: r.top + r.height / 2, bubbles: true }));
    at('mousedown', 120);
    at('mouseup', 320);
    const x = Chart.getChart(canvas).options.scales.x;
    return [x.min ?? null, x.max ?? null];)";
  const Json zoom =
      browser.call("POST", "/execute/sync", {{"script", kDrag}, {"args", Json::array()}});
  REQUIRE_MESSAGE(zoom[0].is_number(), zoom.dump());
  CHECK(zoom[0].get<double>() < zoom[1].get<double>());
  int later = first;
  for (int i = 0; i < 40 && later <= first; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    later = total();
  }
  CHECK(later > first);
  CHECK(browser.call("POST", "/execute/sync",
                     {{"script", "return window.minasMark;"}, {"args", Json::array()}}) == 42);
  const Json kept = browser.call(
      "POST", "/execute/sync",
      {{"script",
        "const x = Chart.getChart(document.querySelectorAll('canvas')[1]).options.scales.x;"
        "return [x.min ?? null, x.max ?? null];"},
       {"args", Json::array()}});
  CHECK(kept == zoom);  // the new data did not reset the zoom
  browser.screenshot("test-artifacts/dashboard-overview.png");

  // A trial from the table.
  const std::string link = browser.find("#trials a");
  const std::string number = browser.call("GET", "/element/" + link + "/text").get<std::string>();
  browser.call("POST", "/element/" + link + "/click");
  std::string heading;
  for (int i = 0; i < 50 && heading.rfind("Trial", 0) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      heading = browser.text("main h2");
    } catch (...) {
    }
  }
  CHECK(heading == "Trial " + number);
  CHECK(browser.text("#trial").find("~0|") != std::string::npos);  // an nb201 cell
  // Its layer graph by block, from the stem to the head.
  const std::string blocks = browser.text("#blocks");
  CHECK(blocks.find("stem") != std::string::npos);
  CHECK(blocks.find("head") != std::string::npos);
  CHECK(blocks.find("10 classes") != std::string::npos);
  browser.screenshot("test-artifacts/dashboard-trial.png");
  auto wait_text = [&](const std::string& css, const std::string& want) {
    std::string got;
    for (int i = 0; i < 50 && got.find(want) == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      try {
        got = browser.text(css);
      } catch (...) {
      }
    }
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
  for (int i = 0; i < 40 && epochs_later <= epochs_first; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    epochs_later = epochs();
  }
  CHECK(epochs_later > epochs_first);
  CHECK(browser.call("POST", "/execute/sync",
                     {{"script", "return Chart.getChart(document.querySelector('canvas'))"
                                 ".data.datasets[0].data.length;"},
                      {"args", Json::array()}})
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
  CHECK(browser
            .call("POST", "/execute/sync",
                  {{"script", "return Chart.getChart('pool-chart').data.datasets[0].data.length;"},
                   {"args", Json::array()}})
            .get<int>() >= 5);
  browser.screenshot("test-artifacts/dashboard-workers.png");
  // Every trial, sorted on the server by validation accuracy.
  browser.call("POST", "/url",
               {{"url", base + "?token=t0k#/e/live/trials?sort=val_acc&status=done"}});
  std::string all;
  for (int i = 0; i < 50 && all.find("~0|") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    try {
      all = browser.text("#all-trials");
    } catch (...) {
    }
  }
  CHECK(all.find("done") != std::string::npos);
  CHECK(browser.text("main h2") == "Trials of live, by val_acc, done");
  browser.call("DELETE", "");

  stop = true;
  search.join();
  server.stop();
  serving.join();
}
