#pragma once
// A TCP client for the dashboard's tests that writes requests byte for byte
// (malformed ones included) and reads the answers as they come, with a
// deadline on every wait (a hang guard, never a timing the test depends on).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace minas::test {

using Clock = std::chrono::steady_clock;

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(RawConnection&& o) noexcept
      : fd_(o.fd_), in_(std::move(o.in_)), closed_(o.closed_) {
    o.fd_ = -1;
  }
  RawConnection(const RawConnection&) = delete;

  // False once the server has closed or reset the connection.
  bool send_all(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // One answer (interim 1xx ones skipped), its body read by Content-Length
  // (none for HEAD); nullopt when the connection ends or the deadline passes
  // first.
  std::optional<RawResponse> read_response(Clock::time_point deadline, bool head = false) {
    for (;;) {
      size_t end;
      while ((end = in_.find("\r\n\r\n")) == std::string::npos)
        if (!fill(deadline)) return std::nullopt;
      RawResponse r;
      if (in_.rfind("HTTP/1.", 0) != 0 || in_.size() < 12) return std::nullopt;
      r.status = std::atoi(in_.substr(9, 3).c_str());
      size_t at = in_.find("\r\n") + 2;
      while (at < end) {
        const size_t eol = in_.find("\r\n", at);
        const std::string line = in_.substr(at, eol - at);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          std::transform(name.begin(), name.end(), name.begin(), ::tolower);
          const size_t v = line.find_first_not_of(' ', colon + 1);
          r.headers[name] = v == std::string::npos ? "" : line.substr(v);
        }
        at = eol + 2;
      }
      in_.erase(0, end + 4);
      if (r.status >= 100 && r.status < 200) continue;
      if (head) return r;
      if (const auto it = r.headers.find("content-length"); it != r.headers.end()) {
        const size_t length = std::stoul(it->second);
        while (in_.size() < length)
          if (!fill(deadline)) return std::nullopt;
        r.body = in_.substr(0, length);
        in_.erase(0, length);
      } else {
        while (fill(deadline)) {
        }
        r.body = std::move(in_);
        in_.clear();
      }
      return r;
    }
  }

  // Whether the server closed (or reset) the connection before the deadline;
  // whatever it sent first is kept for read_response.
  bool wait_closed(Clock::time_point deadline) {
    while (fill(deadline)) {
    }
    return closed_;
  }

 private:
  // Reads what is there; false at the end of the stream or the deadline.
  bool fill(Clock::time_point deadline) {
    for (;;) {
      const auto now = Clock::now();
      if (now >= deadline) return false;
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      pollfd p{fd_, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, INT_MAX)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[65536];
      const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        closed_ = true;
        return false;
      }
      in_.append(buf, static_cast<size_t>(got));
      return true;
    }
  }

  int fd_ = -1;
  std::string in_;
  bool closed_ = false;
};

}  // namespace minas::test
