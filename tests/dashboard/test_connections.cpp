// The dashboard's server under connections that hold on without asking:
// sockets that send nothing, half a request line, half the headers, or a
// byte at a time. A normal request must not wait for them, and each must be
// ended by the deadline of its phase. Every bound below is derived from the
// timeouts the test configures; the only other waits are hang guards.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "dashboard/server.h"
#include "tests/dashboard/known_store.h"
#include "tests/dashboard/raw_http.h"
#include "tests/dashboard/running_server.h"

using namespace minas;
using test::Clock;

namespace {

using Seconds = std::chrono::duration<double>;

int normal_request(int port, Clock::time_point deadline) {
  test::RawConnection c(port);
  if (!c.send_all("GET /api/experiments HTTP/1.1\r\nConnection: close\r\n\r\n")) return 0;
  const auto r = c.read_response(deadline);
  return r ? r->status : 0;
}

struct Holder {
  test::RawConnection conn;
  Clock::time_point since;  // before its connect, or before its first byte
  const char* kind;
};

}  // namespace

TEST_CASE("dashboard server: idle, half-sent and trickling connections do not hold up a request") {
  // With httplib's own pool (8 threads here) the 53 connections below made a
  // normal request wait for them in turn: at least T. Half of T is the bound.
  const auto T = std::chrono::milliseconds(6000);
  test::KnownStore k;
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  o.idle_timeout = T;
  o.read_timeout = T;
  test::RunningServer s(o);
  const int port = s.port();
  const auto guard = [&] { return Clock::now() + 4 * T; };  // hang guard only

  std::vector<Holder> holders;
  for (int i = 0; i < 40; ++i) {
    const auto since = Clock::now();
    holders.push_back({test::RawConnection(port), since, "idle"});
  }
  for (int i = 0; i < 8; ++i) {
    test::RawConnection c(port);
    const auto since = Clock::now();
    REQUIRE(c.send_all("GET /api/experiments HT"));
    holders.push_back({std::move(c), since, "half a request line"});
  }
  for (int i = 0; i < 4; ++i) {
    test::RawConnection c(port);
    const auto since = Clock::now();
    REQUIRE(c.send_all("GET /api/experiments HTTP/1.1\r\nHost: x\r\nX-Half: "));
    holders.push_back({std::move(c), since, "half the headers"});
  }
  // One sends a byte every T/8 and never finishes: no pause is as long as the
  // read timeout, only the whole is.
  int trickle_status = 0;
  Seconds trickle_took{0};
  std::thread trickler([&] {
    test::RawConnection c(port);
    const auto since = Clock::now();
    const std::string start = "GET /api/experiments HTTP/1.1\r\nX-Slow: ";
    bool open = true;
    for (size_t i = 0; open && Clock::now() < since + 4 * T; ++i) {
      open = c.send_all(std::string(1, i < start.size() ? start[i] : 'a'));
      // Paces the bytes, and returns as soon as an answer arrives.
      if (const auto r = c.read_response(Clock::now() + T / 8)) {
        trickle_status = r->status;
        break;
      }
    }
    trickle_took = Clock::now() - since;
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{trickler};

  // Normal requests, each on a connection of its own, while all those hold on.
  Seconds longest{0};
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    CHECK(normal_request(port, guard()) == 200);
    longest = std::max<Seconds>(longest, Clock::now() - start);
  }
  MESSAGE("with " << holders.size() + 1
                  << " connections holding on, the longest of 5 requests took " << longest.count()
                  << " s (read and idle timeout " << Seconds(T).count() << " s)");
  CHECK(longest < T / 2);

  // Each ends by its deadline: the idle ones closed without a word no sooner
  // than the idle timeout, the half-sent ones answered 408 no sooner than the
  // read timeout after their first byte.
  for (auto& h : holders) {
    INFO(std::string(h.kind));
    if (std::string(h.kind) == "idle") {
      CHECK(h.conn.wait_closed(guard()));
    } else {
      const auto r = h.conn.read_response(guard());
      REQUIRE(r);
      CHECK(r->status == 408);
      CHECK(h.conn.wait_closed(guard()));
    }
    const Seconds took = Clock::now() - h.since;
    CHECK(took >= T);
    CHECK(took < 2 * T);
  }
  trickler.join();
  CHECK(trickle_status == 408);
  CHECK(trickle_took >= T);
  CHECK(trickle_took < 2 * T);
  MESSAGE("a connection sending a byte every " << Seconds(T / 8).count() << " s was answered "
                                               << trickle_status << " after "
                                               << trickle_took.count() << " s");
  CHECK(normal_request(port, guard()) == 200);
}

TEST_CASE("dashboard server: stopping ends idle connections at once") {
  const auto T = std::chrono::milliseconds(30000);
  test::KnownStore k;
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  o.idle_timeout = T;
  o.read_timeout = T;
  auto s = std::make_unique<test::RunningServer>(o);
  std::vector<test::RawConnection> idle;
  for (int i = 0; i < 10; ++i) idle.emplace_back(s->port());
  idle.back().send_all("GET /api/exp");
  REQUIRE(normal_request(s->port(), Clock::now() + T) == 200);
  const auto start = Clock::now();
  s.reset();  // stop() and join
  const Seconds took = Clock::now() - start;
  MESSAGE("stopped with 10 connections open in " << took.count() << " s");
  CHECK(took < T / 2);
  for (auto& c : idle) CHECK(c.wait_closed(Clock::now() + T));
}

TEST_CASE("dashboard server: connections beyond the bound wait their turn and are served") {
  // One thread: a second connection waits until the first has been served
  // and closed, then is served in turn.
  test::KnownStore k;
  dashboard::ServerOptions o;
  o.db = k.path;
  o.port = 0;
  o.max_connections = 1;
  o.idle_timeout = std::chrono::seconds(30);
  test::RunningServer s(o);
  test::RawConnection first(s.port());
  REQUIRE(first.send_all("GET /api/experiments HTTP/1.1\r\n\r\n"));  // kept alive
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  REQUIRE(first.read_response(deadline));
  test::RawConnection second(s.port());
  REQUIRE(second.send_all("GET /api/experiments HTTP/1.1\r\nConnection: close\r\n\r\n"));
  // The first still holds the only thread: ending it lets the second in.
  first.send_all("GET /api/experiments HTTP/1.1\r\nConnection: close\r\n\r\n");
  const auto r1 = first.read_response(deadline);
  REQUIRE(r1);
  CHECK(r1->status == 200);
  const auto r2 = second.read_response(deadline);
  REQUIRE(r2);
  CHECK(r2->status == 200);
}
