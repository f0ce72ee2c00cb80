// The dashboard's corpus of bad requests (tests/dashboard/bad_requests.txt)
// against a real server on loopback, and answers over a store that holds
// what a hostile peer could have put there (text that is not UTF-8, JSON
// nested 10,000 deep).
#include <doctest/doctest.h>

#include <httplib.h>

#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "dashboard/api.h"
#include "dashboard/server.h"
#include "tests/dashboard/known_store.h"
#include "tests/dashboard/raw_http.h"
#include "tests/dashboard/running_server.h"
#include "tests/support.h"

using namespace minas;
using Json = nlohmann::json;
using test::Clock;

namespace {

const std::string kToken = "s3cret";

struct Case {
  int line = 0;
  int status = 0;
  std::string what;
  std::string bytes;  // the request, exactly
  bool head = false;  // a HEAD request: the answer has no body
};

// `text` with the corpus's escapes and macros expanded (see the file's header).
std::string unescape(std::string_view text, int line) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '{') {
      const size_t end = text.find('}', i);
      REQUIRE_MESSAGE(end != std::string_view::npos, "line " << line << ": '{' without '}'");
      const std::string_view macro = text.substr(i + 1, end - i - 1);
      if (macro == "auth") {
        out += "Authorization: Bearer " + kToken + "\r\n";
      } else {
        REQUIRE_MESSAGE(macro.rfind("rep ", 0) == 0, "line " << line << ": unknown macro");
        const size_t space = macro.find(' ', 4);
        REQUIRE(space != std::string_view::npos);
        const int n = std::stoi(std::string(macro.substr(4, space - 4)));
        const std::string piece = unescape(macro.substr(space + 1), line);
        for (int k = 0; k < n; ++k) out += piece;
      }
      i = end;
    } else if (c == '\\' && i + 1 < text.size()) {
      const char e = text[++i];
      switch (e) {
        case 'r':
          out += '\r';
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case '0':
          out += '\0';
          break;
        case 'x':
          REQUIRE(i + 2 < text.size());
          out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
          i += 2;
          break;
        default:
          out += e;
      }
    } else {
      out += c;
    }
  }
  return out;
}

std::string trim(std::string_view s) {
  const size_t a = s.find_first_not_of(' ');
  const size_t b = s.find_last_not_of(' ');
  return a == std::string_view::npos ? "" : std::string(s.substr(a, b - a + 1));
}

std::string request(std::string_view method_and_target, bool auth, int line) {
  const size_t space = method_and_target.find(' ');
  REQUIRE_MESSAGE(space != std::string_view::npos, "line " << line << ": METHOD TARGET");
  return std::string(method_and_target.substr(0, space)) + " " +
         unescape(method_and_target.substr(space + 1), line) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
         (auth ? "Authorization: Bearer " + kToken + "\r\n" : "") + "Connection: close\r\n\r\n";
}

// Good values for the parameters an endpoint requires, so that one parameter
// at a time can be bad.
std::string good_value(const std::string& param) {
  if (param == "experiment") return "e";
  if (param == "number" || param == "since") return "0";
  FAIL("the corpus driver needs a good value for the required parameter '" << param << "'");
  return "";
}

void expand_each(const std::string& kind, int status, const std::string& what,
                 const std::string& value, int line, std::vector<Case>& out) {
  for (const auto& e : dashboard::api_endpoints())
    for (const auto& p : e.params) {
      if (kind != "any" && kind != p.kind) continue;
      std::string target = e.path + "?";
      for (const auto& other : e.params)
        if (other.required && other.name != p.name)
          target += other.name + "=" + good_value(other.name) + "&";
      target += p.name + "=" + value;
      out.push_back({line, status, what + ", in " + p.name + " of " + e.path,
                     request("GET " + target, true, line), false});
    }
}

std::vector<Case> load_corpus(const std::string& path, size_t& lines) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::vector<Case> cases;
  std::string text;
  lines = 0;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.empty() || text[0] == '#') continue;
    ++lines;
    const size_t bar1 = text.find(" | ");
    const size_t bar2 = text.find(" | ", bar1 + 3);
    REQUIRE_MESSAGE(bar2 != std::string::npos, "line " << line << ": STATUS | what | REQUEST");
    const std::string head = trim(text.substr(0, bar1));
    const std::string what = trim(text.substr(bar1 + 3, bar2 - bar1 - 3));
    const std::string rest = text.substr(bar2 + 3);
    if (head.rfind("each ", 0) == 0) {
      std::istringstream words(head.substr(5));
      std::string kind;
      int status = 0;
      words >> kind >> status;
      REQUIRE_MESSAGE(status >= 200, "line " << line << ": each KIND STATUS");
      expand_each(kind, status, what, unescape(rest, line), line, cases);
      continue;
    }
    Case c{line, std::stoi(head), what, "", false};
    if (rest.rfind("raw ", 0) == 0) {
      c.bytes = unescape(rest.substr(4), line);
    } else if (rest.rfind("noauth ", 0) == 0) {
      c.bytes = request(rest.substr(7), false, line);
    } else {
      c.bytes = request(rest, true, line);
    }
    c.head = c.bytes.rfind("HEAD ", 0) == 0;
    cases.push_back(std::move(c));
  }
  return cases;
}

// What only an exception's text or a stack of library names would put in an answer.
bool looks_like_exception_text(const std::string& body) {
  for (const char* mark : {"exception", "what()", "type_error", "parse_error", "std::",
                           "basic_string", "sqlite", "SQLITE", ".cpp", "terminate", "errno"})
    if (test::contains(body, mark)) return true;
  return false;
}

// Printable ASCII only: what the server's log lines must be.
bool printable_ascii(const std::string& s) {
  for (const char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

// A normal request on a connection of its own: the status, or 0 without an answer.
int normal_request(int port, Clock::time_point deadline) {
  test::RawConnection c(port);
  if (!c.send_all("GET /api/experiments HTTP/1.1\r\nAuthorization: Bearer " + kToken +
                  "\r\nConnection: close\r\n\r\n"))
    return 0;
  const auto r = c.read_response(deadline);
  return r ? r->status : 0;
}

// Rows a hostile peer or an old store could leave: an experiment "h" whose
// trial's architecture key and error are not UTF-8, a worker whose tags are
// nested 10,000 deep and whose devices are not JSON, a strategy state cut short.
void add_hostile_rows(const std::string& path) {
  db::Store store = db::Store::open(path);
  db::ExperimentSpec s;
  s.name = "h";
  s.space = "small";
  s.space_json = {{"kind", "chain"}};
  s.dataset = "fashion-mnist";
  s.dataset_fingerprint = "00";
  s.strategy = "evolution";
  s.strategy_settings = {{"name", "evolution"}};
  s.recipe = {{"epochs", 1}};
  s.objective = "val_acc";
  const int64_t e = store.create_experiment(s, 10.0);
  db::Connection& c = store.connection();
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  c.exec(
      "INSERT INTO workers (id, name, host, devices, first_seen, last_seen, pool, tags) VALUES "
      "(2, CAST(X'77ff32' AS TEXT), 'node\x01', '{\"cut', 10, 20, 'p', '" +
      deep + "')");
  c.exec(
      "INSERT INTO trials (experiment_id, number, arch_key, arch_hash, arch_json, fidelity, "
      "status, queued_at, worker_id, error, finished_at) VALUES (" +
      std::to_string(e) +
      ", 0, CAST(X'61c3' AS TEXT), 1, '{}', 1, 'failed', 11, 2, "
      "CAST(X'6f6f6dff0a1b5b326a' AS TEXT), 12)");
  c.exec("INSERT INTO strategy_snapshots (experiment_id, results, at, state) VALUES (" +
         std::to_string(e) + ", 1, 12, '{\"population\":[0.5')");
}

}  // namespace

TEST_CASE("dashboard server: the corpus of bad requests is refused cleanly, the server serving") {
  test::KnownStore k;
  std::mutex log_mutex;
  std::vector<std::string> log;
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  o.token = kToken;
  o.log = [&](const std::string& line) {
    std::lock_guard lock(log_mutex);
    log.push_back(line);
  };
  test::RunningServer s(o);
  const int port = s.server.port();
  size_t lines = 0;
  const std::vector<Case> cases =
      load_corpus(std::string(MINAS_SOURCE_DIR) + "/tests/dashboard/bad_requests.txt", lines);
  MESSAGE("the corpus: " << lines << " lines, " << cases.size() << " cases");
  CHECK(cases.size() > 300);
  std::map<int, int> by_status;
  for (const Case& c : cases) {
    INFO("line " << c.line << ": " << c.what);
    // A hang guard only: every case is answered at once.
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    test::RawConnection conn(port);
    conn.send_all(c.bytes);  // the server may refuse before it has read everything
    conn.shutdown_write();
    const auto r = conn.read_response(deadline, c.head);
    REQUIRE_MESSAGE(r, "no answer");
    ++by_status[r->status];
    CHECK(r->status == c.status);
    CHECK(r->status < 500);
    if (!c.head) {
      CHECK(r->headers.count("content-type") == 1);
      CHECK(test::contains(r->headers.at("content-type"), "application/json"));
      Json body;
      REQUIRE_NOTHROW(body = Json::parse(r->body));  // valid JSON, valid UTF-8
      CHECK_MESSAGE(!looks_like_exception_text(r->body), r->body);
      if (r->status >= 400) {
        REQUIRE(body.is_object());
        REQUIRE(body["error"].is_string());
        const std::string message = body["error"];
        CHECK(message.size() <= 300);
        CHECK_MESSAGE(printable_ascii(message), r->body);
      }
    }
    // The server is still there.
    REQUIRE(normal_request(port, deadline) == 200);
  }
  std::ostringstream summary;
  for (const auto& [status, n] : by_status) summary << " " << status << ": " << n;
  MESSAGE("answers by status:" << summary.str());
  std::lock_guard lock(log_mutex);
  for (const std::string& line : log) {
    CHECK(line.size() <= 1000);
    CHECK_MESSAGE(printable_ascii(line), line);
  }
}

TEST_CASE("dashboard server: a store of text that is not UTF-8 and JSON nested deep answers") {
  test::KnownStore k;
  add_hostile_rows(k.path);
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  test::RunningServer s(o);
  httplib::Client client("127.0.0.1", s.server.port());
  for (const std::string target :
       {"/api/experiments", "/api/experiment?experiment=h", "/api/trials?experiment=h",
        "/api/trial?experiment=h&number=0", "/api/changes?experiment=h&since=0",
        "/api/failures?experiment=h", "/api/workers", "/api/workers?experiment=h",
        "/api/internals?experiment=h", "/api/pool?experiment=h", "/api/pareto?experiment=h"}) {
    INFO(target);
    const auto r = client.Get(target);
    REQUIRE(r);
    CHECK(r->status == 200);
    Json body;
    REQUIRE_NOTHROW(body = Json::parse(r->body));
  }
  // The bad bytes are replaced, the rest kept; what cannot be read is null.
  const Json t = Json::parse(client.Get("/api/trial?experiment=h&number=0")->body);
  CHECK(t["arch"] == "a\xef\xbf\xbd");
  CHECK(t["error"] == "oom\xef\xbf\xbd\n\x1b[2j");
  const Json w = Json::parse(client.Get("/api/workers")->body);
  REQUIRE(w["workers"].size() == 2);
  const Json& hostile = w["workers"][0]["host"] == "node\x01" ? w["workers"][0] : w["workers"][1];
  CHECK(hostile["name"] ==
        "w\xef\xbf\xbd"
        "2");
  CHECK(hostile["tags"].is_null());
  CHECK(hostile["devices"].is_null());
  const Json in = Json::parse(client.Get("/api/internals?experiment=h")->body);
  CHECK(in["snapshots"][0]["state"].is_null());
}
