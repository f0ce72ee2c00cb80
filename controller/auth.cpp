#include "controller/auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq_addon.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "searchspace/error.h"

namespace minas::auth {
namespace {

namespace fs = std::filesystem;

// Where libzmq sends the ZAP requests of every socket in a context (RFC 27).
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
// ZMQ_ZAP_ENFORCE_DOMAIN: declared only with libzmq's draft API, yet honoured by the stable
// 4.3 library; with it a CURVE server refuses clients while no ZAP handler is bound.
using ZapEnforceDomain = zmq::sockopt::integral_option<93, int, true>;
// The Z85 alphabet (ZeroMQ RFC 32), to say which character of a bad key is wrong.
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// Runs one cppzmq call, turning its zmq::error_t into an Error that names the call.
template <class F>
decltype(auto) zmq_call(const std::string& call, F&& f) {
  try {
    return f();
  } catch (const zmq::error_t& e) {
    throw Error(call, e.what());
  }
}

std::string errno_text() {
  return std::strerror(errno);
}

std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// Why `text` is not a key, without echoing it: it may be a secret pasted in the wrong place.
std::string why_not_key(std::string_view text, const char* what) {
  if (text.size() != kKeyTextSize)
    return std::string(what) + " is " + std::to_string(text.size()) +
           " characters; a CURVE key as Z85 text is " + std::to_string(kKeyTextSize);
  for (size_t i = 0; i < text.size(); ++i)
    if (kZ85Alphabet.find(text[i]) == std::string_view::npos)
      return std::string(what) + " is not Z85 text: character " + std::to_string(i + 1) +
             " is outside the Z85 alphabet";
  return std::string(what) + " is not Z85 text: a group of 5 characters decodes beyond 32 bits";
}

void check_key(std::string_view text, const std::string& where, const char* what) {
  if (!is_key_text(text)) throw Error(where, why_not_key(text, what));
}

std::string line_where(const fs::path& path, size_t line) {
  return path.string() + ":" + std::to_string(line);
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string(), "cannot open: " + errno_text());
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  if (in.bad()) throw Error(path.string(), "read error: " + errno_text());
  return lines;
}

// The key on one line of a key list, if any: a key, optionally followed by whitespace and a
// '#' comment. '#' is a Z85 character, but no key starts with it: the first character of a
// 5-character group encodes at most 2^32 / 85^4 < 83, and '#' is 84.
std::optional<std::string> key_on_line(std::string_view line, const std::string& where) {
  line = trim(line);
  if (line.empty() || line.front() == '#') return std::nullopt;
  const size_t end = line.find_first_of(" \t");
  const std::string_view token = line.substr(0, end);
  const std::string_view rest = end == std::string_view::npos ? "" : trim(line.substr(end));
  const bool key = is_key_text(token);
  if (key && (rest.empty() || rest.front() == '#')) return std::string(token);
  if (token == "public-key" || token == "secret-key")
    throw Error(where,
                "this is a key pair file (NAME.key), which holds a secret; use its NAME.pub");
  if (key) throw Error(where, "expected one key per line, then at most a '#' comment");
  throw Error(where, why_not_key(token, "the key"));
}

// Every key of a key-list file, in file order.
std::vector<std::string> keys_in_file(const fs::path& path) {
  const auto lines = read_lines(path);
  std::vector<std::string> keys;
  for (size_t i = 0; i < lines.size(); ++i)
    if (auto key = key_on_line(lines[i], line_where(path, i + 1))) keys.push_back(std::move(*key));
  return keys;
}

void require_exists(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw Error(path.string(),
                "no such file (make key pairs with `minas keygen --out DIR --name NAME`)");
}

// Creates `path` with `text`, never replacing a file: O_EXCL makes the check and the creation
// one step. The file is synced, so a key reported written survives a crash.
void write_new_file(const fs::path& path, const std::string& text, mode_t mode, bool exact_mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) throw Error(path.string(), "exists; keygen never overwrites a key");
    throw Error(path.string(), "cannot create: " + errno_text());
  }
  const auto fail = [&](const char* what) {
    const std::string why = errno_text();
    ::close(fd);
    ::unlink(path.c_str());
    throw Error(path.string(), what + why);
  };
  // The umask may only clear bits; fchmod makes the secret file exactly owner-only.
  if (exact_mode && ::fchmod(fd, mode) != 0) fail("cannot set the mode: ");
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write failed: ");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail("sync failed: ");
  if (::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(path.c_str());
    throw Error(path.string(), "close failed: " + why);
  }
}

bool valid_key_name(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.size() > 100) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void default_refusal_log(const std::string& address, const std::string& key) {
  const std::string why =
      key.empty() ? "it offered no CURVE key" : "key " + key + " is not on the allow-list";
  std::fprintf(stderr, "minas: refused a connection from %s: %s\n",
               address.empty() ? "an unknown address" : address.c_str(), why.c_str());
}

}  // namespace

void require_curve() {
  if (!zmq_has("curve"))
    throw Error("libzmq",
                "this libzmq was built without CURVE security (libsodium); install a "
                "libzmq with CURVE (Debian's libzmq5 has it)");
}

bool is_key_text(std::string_view text) {
  if (text.size() != kKeyTextSize || text.find('\0') != std::string_view::npos) return false;
  const std::string z85(text);  // zmq_z85_decode reads up to a NUL
  std::array<uint8_t, 32> bytes;
  return zmq_z85_decode(bytes.data(), z85.c_str()) != nullptr;
}

KeyPair generate_keypair() {
  require_curve();
  std::array<char, kKeyTextSize + 1> pub, sec;
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    throw Error("zmq_curve_keypair", zmq_strerror(zmq_errno()));
  return {pub.data(), sec.data()};
}

KeyPair write_keypair(const fs::path& dir, const std::string& name) {
  if (!valid_key_name(name))
    throw Error("key name '" + name + "'",
                "use letters, digits, '-', '_' and '.' (not first), at most 100 characters");
  const fs::path secret = dir / (name + ".key");
  const fs::path pub = dir / (name + ".pub");
  // Checked up front too, so that an existing .pub leaves no new .key behind.
  for (const auto& p : {secret, pub})
    if (std::error_code ec; fs::exists(fs::symlink_status(p, ec)))
      throw Error(p.string(), "exists; keygen never overwrites a key");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir.string(), "cannot create the folder: " + ec.message());

  const KeyPair keys = generate_keypair();
  write_new_file(secret,
                 "# minas CURVE key pair \"" + name +
                     "\". The secret key stays on this host: keep this file mode 0600 and give\n"
                     "# peers " +
                     name + ".pub instead.\npublic-key " + keys.public_key + "\nsecret-key " +
                     keys.secret_key + "\n",
                 0600, true);
  try {
    write_new_file(pub,
                   "# minas CURVE public key \"" + name +
                       "\": a worker's goes on the controller's allow-list,\n"
                       "# the controller's goes to every worker.\n" +
                       keys.public_key + "\n",
                   0644, false);
  } catch (...) {
    ::unlink(secret.c_str());  // a pair is written whole or not at all
    throw;
  }
  return keys;
}

KeyPair read_keypair(const fs::path& path) {
  require_exists(path);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw Error(path.string(), "cannot stat: " + errno_text());
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(path.string(), std::string("holds a secret key but group or others can access "
                                           "it (mode ") +
                                   mode + "); run: chmod 600 " + path.string());
  }
  const auto lines = read_lines(path);
  std::optional<std::string> pub, sec;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view line = trim(lines[i]);
    if (line.empty() || line.front() == '#') continue;
    const std::string where = line_where(path, i + 1);
    const size_t end = line.find_first_of(" \t");
    const std::string_view field = line.substr(0, end);
    const std::string_view value = end == std::string_view::npos ? "" : trim(line.substr(end));
    std::optional<std::string>* slot = field == "public-key"   ? &pub
                                       : field == "secret-key" ? &sec
                                                               : nullptr;
    if (!slot)
      throw Error(where, "expected 'public-key KEY' or 'secret-key KEY', found '" +
                             std::string(field.substr(0, 20)) + "'");
    if (slot->has_value()) throw Error(where, "a second " + std::string(field) + " line");
    check_key(value, where, field == "public-key" ? "the public key" : "the secret key");
    *slot = std::string(value);
  }
  if (!pub) throw Error(path.string(), "no 'public-key KEY' line");
  if (!sec) throw Error(path.string(), "no 'secret-key KEY' line");
  std::array<char, kKeyTextSize + 1> derived;
  if (zmq_curve_public(derived.data(), sec->c_str()) != 0)
    throw Error("zmq_curve_public", zmq_strerror(zmq_errno()));
  if (*pub != derived.data())
    throw Error(path.string(), "the public key does not belong to the secret key");
  return {*pub, *sec};
}

std::string read_public_key(const fs::path& path) {
  require_exists(path);
  const auto keys = keys_in_file(path);
  if (keys.size() != 1)
    throw Error(path.string(), "holds " + std::to_string(keys.size()) +
                                   " keys; a public key file holds exactly one");
  return keys.front();
}

std::set<std::string> read_allow_list(const fs::path& path) {
  require_exists(path);
  std::set<std::string> keys;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(path, ec))
      if (entry.path().extension() == ".pub") files.push_back(entry.path());
    if (ec) throw Error(path.string(), "cannot list the folder: " + ec.message());
    std::sort(files.begin(), files.end());  // the first bad file reported is the same every time
    for (const auto& f : files) keys.insert(read_public_key(f));
  } else {
    for (auto& key : keys_in_file(path)) keys.insert(std::move(key));
  }
  if (keys.empty())
    throw Error(path.string(), fs::is_directory(path, ec)
                                   ? "no *.pub file: every worker would be refused"
                                   : "lists no key: every worker would be refused");
  return keys;
}

void make_curve_server(zmq::socket_t& socket, const KeyPair& server) {
  require_curve();
  check_key(server.secret_key, "CURVE server", "the secret key");
  zmq_call("zmq_setsockopt(ZMQ_CURVE_SERVER)",
           [&] { socket.set(zmq::sockopt::curve_server, true); });
  zmq_call("zmq_setsockopt(ZMQ_CURVE_SECRETKEY)",
           [&] { socket.set(zmq::sockopt::curve_secretkey, server.secret_key); });
  zmq_call("zmq_setsockopt(ZMQ_ZAP_DOMAIN)",
           [&] { socket.set(zmq::sockopt::zap_domain, kZapDomain); });
  zmq_call("zmq_setsockopt(ZMQ_ZAP_ENFORCE_DOMAIN)", [&] { socket.set(ZapEnforceDomain{}, true); });
}

void make_curve_client(zmq::socket_t& socket, const KeyPair& client,
                       const std::string& server_public) {
  require_curve();
  check_key(server_public, "CURVE client", "the server's public key");
  check_key(client.public_key, "CURVE client", "the public key");
  check_key(client.secret_key, "CURVE client", "the secret key");
  zmq_call("zmq_setsockopt(ZMQ_CURVE_SERVERKEY)",
           [&] { socket.set(zmq::sockopt::curve_serverkey, server_public); });
  zmq_call("zmq_setsockopt(ZMQ_CURVE_PUBLICKEY)",
           [&] { socket.set(zmq::sockopt::curve_publickey, client.public_key); });
  zmq_call("zmq_setsockopt(ZMQ_CURVE_SECRETKEY)",
           [&] { socket.set(zmq::sockopt::curve_secretkey, client.secret_key); });
}

bool is_loopback_endpoint(std::string_view endpoint) {
  if (endpoint.starts_with("inproc://") || endpoint.starts_with("ipc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view address = endpoint.substr(6);
  // A connect endpoint may name a source first ("tcp://src;dst"); the destination decides.
  if (const size_t semi = address.rfind(';'); semi != std::string_view::npos)
    address.remove_prefix(semi + 1);
  std::string_view host;
  if (address.starts_with('[')) {
    const size_t close = address.find(']');
    if (close == std::string_view::npos) return false;
    host = address.substr(1, close - 1);
  } else {
    host = address.substr(0, address.rfind(':'));
  }
  const std::string name = to_lower(host);
  if (name == "localhost") return true;
  in_addr v4;
  if (::inet_pton(AF_INET, name.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (::inet_pton(AF_INET6, name.c_str(), &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  return false;
}

// ------------------------------------------------------------------------------ ZapHandler

namespace {

struct ZapRequest {
  std::string id, domain, address, mechanism;
  std::string key;  // the client's public key as Z85; empty unless mechanism is CURVE
  bool well_formed = false;
};

// RFC 27 request frames: version, request id, domain, address, identity, mechanism, then the
// mechanism's credentials (for CURVE, the client's 32-byte public key).
ZapRequest parse_request(const std::vector<zmq::message_t>& frames) {
  ZapRequest r;
  if (frames.size() >= 2) r.id = frames[1].to_string();
  if (frames.size() < 6 || frames[0].to_string_view() != "1.0") return r;
  r.domain = frames[2].to_string();
  r.address = frames[3].to_string();
  r.mechanism = frames[5].to_string();
  if (r.mechanism == "CURVE") {
    if (frames.size() != 7 || frames[6].size() != 32) return r;
    std::array<char, kKeyTextSize + 1> z85;
    if (!zmq_z85_encode(z85.data(), frames[6].data<uint8_t>(), 32)) return r;
    r.key = z85.data();
  }
  r.well_formed = true;
  return r;
}

// Why a request is refused; empty if it may be admitted once its key is found on the list.
const char* refusal(const ZapRequest& r) {
  if (!r.well_formed) return "malformed ZAP request";
  if (r.domain != kZapDomain) return "unknown ZAP domain";
  if (r.mechanism != "CURVE") return "CURVE required";
  return "";
}

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& context, std::set<std::string> allowed, RefusedFn on_refused)
    : stop_(zmq_call("zmq_socket(ZMQ_PAIR)",
                     [&] { return zmq::socket_t(context, zmq::socket_type::pair); })),
      on_refused_(on_refused ? std::move(on_refused) : RefusedFn(default_refusal_log)) {
  require_curve();
  set_allowed(std::move(allowed));
  static std::atomic<uint64_t> handlers{0};
  const std::string control_endpoint = "inproc://minas.zap.stop." + std::to_string(handlers++);

  zmq::socket_t zap = zmq_call("zmq_socket(ZMQ_REP)",
                               [&] { return zmq::socket_t(context, zmq::socket_type::rep); });
  zmq::socket_t control = zmq_call("zmq_socket(ZMQ_PAIR)",
                                   [&] { return zmq::socket_t(context, zmq::socket_type::pair); });
  for (auto* s : {&zap, &control, &stop_})
    zmq_call("zmq_setsockopt(ZMQ_LINGER)", [&] { s->set(zmq::sockopt::linger, 0); });
  try {
    zap.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    throw Error(
        std::string("zmq_bind(") + kZapEndpoint + ")",
        e.num() == EADDRINUSE ? "another ZAP handler already runs in this context" : e.what());
  }
  zmq_call("zmq_bind(" + control_endpoint + ")", [&] { control.bind(control_endpoint); });
  zmq_call("zmq_connect(" + control_endpoint + ")", [&] { stop_.connect(control_endpoint); });
  // Sockets may change threads across a full memory barrier, which starting a thread is.
  thread_ = std::thread(&ZapHandler::run, this, std::move(zap), std::move(control));
}

ZapHandler::~ZapHandler() {
  try {
    // dontwait: if the thread already ended (context shut down), nobody reads the PAIR.
    (void)stop_.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    // ETERM: the context is shutting down, which ends the thread as well.
  }
  thread_.join();
}

void ZapHandler::set_allowed(std::set<std::string> allowed) {
  size_t n = 0;
  for (const auto& key : allowed) {
    ++n;
    check_key(key, "allow-list entry " + std::to_string(n), "the key");
  }
  std::lock_guard lock(mutex_);
  allowed_ = std::move(allowed);
}

bool ZapHandler::is_allowed(const std::string& key) const {
  std::lock_guard lock(mutex_);
  return allowed_.count(key) > 0;
}

void ZapHandler::run(zmq::socket_t zap, zmq::socket_t control) {
  // Signals go to the process's other threads: an EINTR here would stop the handler, and with
  // it every new connection (SIGCHLD from local workers, SIGTERM for a clean stop).
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  try {
    std::array<zmq::pollitem_t, 2> items{
        {{zap.handle(), 0, ZMQ_POLLIN, 0}, {control.handle(), 0, ZMQ_POLLIN, 0}}};
    // No timeout: a request, the stop message or the context's shutdown (ETERM) wakes it.
    for (;;) {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) break;
      if (items[0].revents & ZMQ_POLLIN) answer(zap);
    }
  } catch (const zmq::error_t& e) {
    // ETERM is the context shutting down; anything else leaves the servers refusing everyone
    // (make_curve_server enforces the ZAP domain), so stopping fails closed.
    if (e.num() != ETERM) std::fprintf(stderr, "minas: the ZAP handler stopped: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "minas: the ZAP handler stopped: %s\n", e.what());
  }
  try {
    // Unbound now, not when the reaper gets to the socket, so a new handler can bind at once.
    zap.unbind(kZapEndpoint);
  } catch (const zmq::error_t&) {
    // ETERM: the context is going away, and the endpoint with it.
  }
}

void ZapHandler::answer(zmq::socket_t& zap) {
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(zap, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
  const ZapRequest r = parse_request(frames);
  std::string why = refusal(r);
  if (why.empty() && !is_allowed(r.key)) why = "key not on the allow-list";
  const bool ok = why.empty();
  const std::string status_text = ok ? "OK" : why;
  // The user id is the client's key: its messages carry it as their "User-Id" property.
  const std::string user_id = ok ? r.key : std::string();
  const std::array<zmq::const_buffer, 6> reply{zmq::str_buffer("1.0"),
                                               zmq::buffer(r.id),
                                               zmq::buffer(std::string_view(ok ? "200" : "400")),
                                               zmq::buffer(status_text),
                                               zmq::buffer(user_id),
                                               zmq::const_buffer()};
  if (!zmq::send_multipart(zap, reply, zmq::send_flags::dontwait))
    std::fprintf(stderr, "minas: the ZAP handler could not answer a request (EAGAIN)\n");
  if (!ok) report_refusal(r.address, r.key);
}

void ZapHandler::report_refusal(const std::string& address, const std::string& key) {
  const auto now = std::chrono::steady_clock::now();
  if (reported_.size() > 1024) reported_.clear();  // many peers: memory stays bounded
  auto [it, fresh] = reported_.try_emplace(address + " " + key, now);
  if (!fresh && now - it->second < kRefusalReportInterval) return;
  it->second = now;
  try {
    on_refused_(address, key);
  } catch (...) {
    // The refusal stands whatever the report does.
  }
}

// ------------------------------------------------------------------------------ HandshakeMonitor

namespace {

// "IP:PORT" of the peer of a connected socket; empty if it is closed.
std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    if (!::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host)) return {};
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (!::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host)) return {};
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return {};
}

std::string handshake_failure(uint32_t code) {
  switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
      return "it offered no CURVE key (another security mechanism, or none)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
      return "its CURVE handshake does not decrypt: it expects another server key";
    default: {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", code);
      return std::string("its handshake broke the protocol (ZMTP error ") + hex + ")";
    }
  }
}

}  // namespace

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket,
                                   RefusedFn on_refused)
    : stop_(zmq_call("zmq_socket(ZMQ_PAIR)",
                     [&] { return zmq::socket_t(context, zmq::socket_type::pair); })),
      on_refused_(std::move(on_refused)) {
  static std::atomic<uint64_t> monitors{0};
  const std::string n = std::to_string(monitors++);
  const std::string events_endpoint = "inproc://minas.monitor." + n;
  const std::string control_endpoint = "inproc://minas.monitor.stop." + n;
  if (zmq_socket_monitor(socket.handle(), events_endpoint.c_str(),
                         ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
    throw Error("zmq_socket_monitor(" + events_endpoint + ")", zmq_strerror(zmq_errno()));
  zmq::socket_t events = zmq_call("zmq_socket(ZMQ_PAIR)",
                                  [&] { return zmq::socket_t(context, zmq::socket_type::pair); });
  zmq::socket_t control = zmq_call("zmq_socket(ZMQ_PAIR)",
                                   [&] { return zmq::socket_t(context, zmq::socket_type::pair); });
  for (auto* s : {&events, &control, &stop_})
    zmq_call("zmq_setsockopt(ZMQ_LINGER)", [&] { s->set(zmq::sockopt::linger, 0); });
  zmq_call("zmq_connect(" + events_endpoint + ")", [&] { events.connect(events_endpoint); });
  zmq_call("zmq_bind(" + control_endpoint + ")", [&] { control.bind(control_endpoint); });
  zmq_call("zmq_connect(" + control_endpoint + ")", [&] { stop_.connect(control_endpoint); });
  thread_ = std::thread(&HandshakeMonitor::run, this, std::move(events), std::move(control));
}

HandshakeMonitor::~HandshakeMonitor() {
  try {
    (void)stop_.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    // ETERM: the context is shutting down, which ends the thread as well.
  }
  thread_.join();
}

void HandshakeMonitor::run(zmq::socket_t events, zmq::socket_t control) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);  // as the ZAP handler: signals are for other threads
  try {
    std::array<zmq::pollitem_t, 2> items{
        {{events.handle(), 0, ZMQ_POLLIN, 0}, {control.handle(), 0, ZMQ_POLLIN, 0}}};
    for (;;) {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) break;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      // An event is two frames: 16-bit event and 32-bit value, then the endpoint.
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(events, std::back_inserter(frames), zmq::recv_flags::dontwait))
        continue;
      if (frames.empty() || frames[0].size() != 6) continue;
      uint16_t event = 0;
      uint32_t value = 0;
      std::memcpy(&event, frames[0].data(), sizeof event);
      std::memcpy(&value, static_cast<const char*>(frames[0].data()) + 2, sizeof value);
      on_event(event, value);
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != ETERM)
      std::fprintf(stderr, "minas: the handshake monitor stopped: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "minas: the handshake monitor stopped: %s\n", e.what());
  }
}

// libzmq's one I/O thread emits, for a refused client, ACCEPTED(fd), then
// HANDSHAKE_FAILED_PROTOCOL(code) or _NO_DETAIL(errno), then at once
// DISCONNECTED(fd).
void HandshakeMonitor::on_event(uint16_t event, uint32_t value) {
  if (event == ZMQ_EVENT_ACCEPTED) {
    if (peers_.size() > 4096) peers_.clear();  // bounded, whatever libzmq reports
    peers_[value] = peer_address(static_cast<int>(value));
    return;
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    pending_ = handshake_failure(value);
    return;
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
    // A client without CURVE that sees this server's greeting first closes
    // the connection itself, before the server reads the mismatch.
    pending_ = std::string("it closed the connection during the handshake (") +
               std::strerror(static_cast<int>(value)) +
               "; a client that offered no CURVE key does)";
    return;
  }
  if (event != ZMQ_EVENT_DISCONNECTED) return;
  const auto peer = peers_.find(value);
  const std::string address = peer == peers_.end() ? std::string() : peer->second;
  if (peer != peers_.end()) peers_.erase(peer);
  if (pending_.empty()) return;
  const std::string why = std::exchange(pending_, {});
  const std::string host = address.substr(0, address.rfind(':'));
  const auto now = std::chrono::steady_clock::now();
  if (reported_.size() > 1024) reported_.clear();
  auto [it, fresh] = reported_.try_emplace(host + " " + why, now);
  if (!fresh && now - it->second < ZapHandler::kRefusalReportInterval) return;
  it->second = now;
  try {
    if (on_refused_) on_refused_(address, why);
  } catch (...) {
    // The refusal stands whatever the report does.
  }
}

}  // namespace minas::auth
