#pragma once
// CURVE authentication between the controller and its workers (ZeroMQ's CurveZMQ with a ZAP
// handler, RFC 26 and RFC 27). The controller has a key pair and an allow-list of worker
// public keys; each worker has a key pair and the controller's public key:
//
//   minas keygen --out keys --name controller      # keys/controller.key, keys/controller.pub
//   minas keygen --out keys --name gpu-node-1      # one per worker host
//   cat keys/gpu-node-*.pub > keys/workers.allow   # or point the controller at a folder of .pub
//
// CURVE alone encrypts but admits any client key; the ZapHandler is what refuses the keys that
// are not listed. make_curve_server() also makes the server refuse everyone while no handler
// runs, so a missing or stopped handler fails closed.
#include <zmq.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>

namespace minas::auth {

// The length of a CURVE key as Z85 text (32 bytes).
inline constexpr size_t kKeyTextSize = 40;
// The ZAP domain of minas's CURVE servers; the handler refuses requests from any other domain.
inline constexpr const char* kZapDomain = "minas";

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// Throws Error unless this libzmq was built with CURVE (libsodium).
void require_curve();

// True if `text` is a CURVE key as Z85: 40 characters that decode.
bool is_key_text(std::string_view text);

KeyPair generate_keypair();

// Writes DIR/NAME.key (both keys, mode 0600) and DIR/NAME.pub (the public key alone, itself a
// one-key allow-list), creating DIR if missing. Refuses to overwrite either file; returns the
// pair written.
KeyPair write_keypair(const std::filesystem::path& dir, const std::string& name);

// Reads a NAME.key file; refuses one that group or others can access, and one whose public key
// does not belong to its secret key.
KeyPair read_keypair(const std::filesystem::path& path);

// Reads a NAME.pub file: exactly one key, '#' comment lines allowed.
std::string read_public_key(const std::filesystem::path& path);

// Reads an allow-list: a file with one public key per line (a key may be followed by whitespace
// and a '#' comment; blank lines and lines starting with '#' are skipped),
// or a folder whose *.pub files are read. Throws Error naming the file and line of a bad entry,
// and if the list holds no key at all (every worker would be refused).
std::set<std::string> read_allow_list(const std::filesystem::path& path);

// Before bind(): serve CURVE with `server`'s keys in kZapDomain, refusing every client while no
// ZAP handler runs in the socket's context.
void make_curve_server(zmq::socket_t& socket, const KeyPair& server);
// Before connect(): a CURVE client with `client`'s keys, talking only to `server_public`.
void make_curve_client(zmq::socket_t& socket, const KeyPair& client,
                       const std::string& server_public);

// True if binding `endpoint` cannot be reached from another machine: ipc://, inproc://, and
// tcp:// on 127.0.0.0/8, localhost or [::1]. Anything else, wildcards included, is false.
bool is_loopback_endpoint(std::string_view endpoint);

// The ZAP handler (RFC 27) of one zmq::context_t: admits a CURVE client whose public key is on
// the allow-list and refuses everything else. An admitted connection's messages carry the
// client's Z85 public key as their "User-Id" property (zmq::message_t::gets).
//
// Lifetime: construct it before the CURVE server socket accepts connections, destroy it after
// that socket, and before the context (declare the context first). Other sockets of the context
// are untouched unless they set a ZAP domain: libzmq asks ZAP about NULL-mechanism peers only
// then.
//
// libzmq 4.3 ends a refused client's connection for good: that socket never reconnects, and
// its queued messages are dropped. The client learns it from a socket monitor
// (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH); trying again takes a new socket.
class ZapHandler {
 public:
  // Called from the handler's thread with the peer's IP address and its Z85 key (empty when
  // it did not offer CURVE). A worker that keeps retrying would fill the log, so one
  // (address, key) is reported at most once per kRefusalReportInterval.
  using RefusedFn = std::function<void(const std::string& address, const std::string& key)>;
  static constexpr std::chrono::seconds kRefusalReportInterval{60};

  // Binds the context's ZAP endpoint before returning, so the first connection is already
  // checked; throws Error if another handler holds it. Without `on_refused`, refusals go to
  // stderr.
  ZapHandler(zmq::context_t& context, std::set<std::string> allowed, RefusedFn on_refused = {});
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Replaces the allow-list (a reload). Connections already admitted stay open; every new
  // handshake, a previously refused worker's next socket included, meets the new list.
  void set_allowed(std::set<std::string> allowed);

 private:
  void run(zmq::socket_t zap, zmq::socket_t control);
  void answer(zmq::socket_t& zap);
  bool is_allowed(const std::string& key) const;
  void report_refusal(const std::string& address, const std::string& key);

  zmq::socket_t stop_;  // the owner's end of a PAIR that wakes the thread to stop
  mutable std::mutex mutex_;
  std::set<std::string> allowed_;  // guarded by mutex_
  RefusedFn on_refused_;
  // When each refused (address, key) was last reported; touched by the thread only.
  std::map<std::string, std::chrono::steady_clock::time_point> reported_;
  std::thread thread_;  // last: starts once everything it reads is constructed
};

// Reports the clients a CURVE server refuses before ZAP is asked, which the
// ZapHandler never sees: one that offered no CURVE key (a mechanism mismatch,
// or the client closing on seeing it), one that expects another server key
// (its HELLO does not decrypt), and any other broken handshake. A
// socket monitor read on a thread of its own; libzmq names only the local
// endpoint in these events, so the peer's address is read from the connection
// when it is accepted (empty if it is gone by then).
//
// Lifetime: construct it after make_curve_server() and before bind(); destroy
// it before the socket, and the context after both.
class HandshakeMonitor {
 public:
  // Called from the monitor's thread with the peer's address ("IP:PORT", or
  // empty) and why it was refused. One (host, why) is reported at most once
  // per ZapHandler::kRefusalReportInterval.
  using RefusedFn = std::function<void(const std::string& address, const std::string& why)>;

  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, RefusedFn on_refused);
  ~HandshakeMonitor();
  HandshakeMonitor(const HandshakeMonitor&) = delete;
  HandshakeMonitor& operator=(const HandshakeMonitor&) = delete;

 private:
  void run(zmq::socket_t events, zmq::socket_t control);
  void on_event(uint16_t event, uint32_t value);

  zmq::socket_t stop_;  // the owner's end of a PAIR that wakes the thread to stop
  RefusedFn on_refused_;
  // Touched by the thread only: the peer of each accepted connection (by its
  // file descriptor), the failure waiting for its connection's disconnect, and
  // when each refused (host, why) was last reported.
  std::map<uint32_t, std::string> peers_;
  std::string pending_;
  std::map<std::string, std::chrono::steady_clock::time_point> reported_;
  std::thread thread_;  // last: starts once everything it reads is constructed
};

}  // namespace minas::auth
