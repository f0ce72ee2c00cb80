// CURVE authentication over real loopback sockets: a ROUTER server with CURVE and the ZAP
// handler, DEALER workers with and without listed keys. Every wait is a bounded poll, so a
// broken handler fails the test instead of hanging it.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <array>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "controller/auth.h"
#include "searchspace/error.h"
#include "tests/support.h"
#include "tests/wait.h"

using minas::Error;
using minas::test::contains;
using minas::test::error_of;
using minas::test::run_minas;
using minas::test::TempDir;
namespace auth = minas::auth;
using namespace std::chrono_literals;

namespace {

// How long a message that should arrive may take: a hang guard only (it comes in milliseconds
// when it comes). How long to watch for one that must not arrive is measured: quiet_window().
constexpr std::chrono::milliseconds kArrives = minas::test::kHangGuard;

std::optional<std::vector<zmq::message_t>> receive(zmq::socket_t& s,
                                                   std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
  std::vector<zmq::message_t> frames;
  REQUIRE(zmq::recv_multipart(s, std::back_inserter(frames)));
  return frames;
}

// The refusals the handler reports, from its thread.
struct Refusals {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::string>> seen;  // (address, key)

  auth::ZapHandler::RefusedFn callback() {
    return [this](const std::string& address, const std::string& key) {
      std::lock_guard lock(mutex);
      seen.emplace_back(address, key);
      cv.notify_all();
    };
  }
  // The first refusal reported for `key`, waiting up to kArrives for it.
  std::optional<std::string> address_of(const std::string& key) {
    std::unique_lock lock(mutex);
    std::optional<std::string> address;
    cv.wait_for(lock, kArrives, [&] {
      for (const auto& [a, k] : seen) {
        if (k != key) continue;
        address = a;
        return true;
      }
      return false;
    });
    return address;
  }
  size_t count(const std::optional<std::string>& key = std::nullopt) {
    std::lock_guard lock(mutex);
    size_t n = 0;
    for (const auto& [a, k] : seen) n += !key || k == *key;
    return n;
  }
};

// A CURVE ROUTER on an ephemeral loopback port, guarded by a ZapHandler in the same context.
struct Server {
  zmq::context_t ctx;
  auth::KeyPair keys = auth::generate_keypair();
  Refusals refusals;
  std::optional<auth::ZapHandler> zap;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::string endpoint;

  explicit Server(std::set<std::string> allowed) {
    zap.emplace(ctx, std::move(allowed), refusals.callback());
    router.set(zmq::sockopt::linger, 0);
    auth::make_curve_server(router, keys);
    router.bind("tcp://127.0.0.1:*");
    endpoint = router.get(zmq::sockopt::last_endpoint);
  }
  ~Server() { router.close(); }  // before the handler, as auth.h asks

  zmq::socket_t client(const auth::KeyPair* keys_or_null) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    if (keys_or_null) auth::make_curve_client(s, *keys_or_null, keys.public_key);
    s.connect(endpoint);
    return s;
  }
};

void send(zmq::socket_t& s, const std::string& text) {
  REQUIRE(s.send(zmq::buffer(text), zmq::send_flags::dontwait));
}

// Sends from a client the server will refuse. libzmq may have finished the handshake, been
// refused and dropped the connection's queue before this runs (a busy machine delays the
// caller, not the I/O thread): then there is nowhere to queue, and that refusal is the
// outcome the tests want, so a send that finds no queue is no failure.
void offer(zmq::socket_t& s, const std::string& text) {
  (void)s.send(zmq::buffer(text), zmq::send_flags::dontwait);
}

// How long to watch for a message that must not arrive, from what this machine shows now: a
// listed client's first message (connect, CURVE handshake, ZAP, delivery) timed, ten times
// over, plus three of libzmq's reconnect intervals, so that a handler that refused a first
// try but admitted a retry would be seen too.
std::chrono::milliseconds quiet_window() {
  const auto key = auth::generate_keypair();
  Server server({key.public_key});
  const auto start = std::chrono::steady_clock::now();
  auto client = server.client(&key);
  send(client, "timing");
  REQUIRE_MESSAGE(receive(server.router, kArrives),
                  "a listed client's message did not arrive within " << kArrives.count() << " ms");
  const auto took =
      std::chrono::ceil<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  const std::chrono::milliseconds reconnect(client.get(zmq::sockopt::reconnect_ivl));
  return 10 * took + 3 * reconnect;
}

std::string mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return buf;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("auth: key pairs are 40-character Z85 keys, and the public key is the secret's") {
  const auto a = auth::generate_keypair();
  const auto b = auth::generate_keypair();
  CHECK(a.public_key.size() == auth::kKeyTextSize);
  CHECK(a.secret_key.size() == auth::kKeyTextSize);
  CHECK(auth::is_key_text(a.public_key));
  CHECK(auth::is_key_text(a.secret_key));
  CHECK(a.public_key != b.public_key);
  CHECK(a.secret_key != b.secret_key);
  CHECK_FALSE(auth::is_key_text(a.public_key.substr(1)));
  CHECK_FALSE(auth::is_key_text(a.public_key.substr(1) + " "));
  // No key starts with '#' (a group's first character is at most the 83rd), so a '#' line
  // of a key list is always a comment.
  CHECK_FALSE(auth::is_key_text("#" + a.public_key.substr(1)));
}

TEST_CASE("auth: a listed worker's message arrives and the reply comes back") {
  const auto worker = auth::generate_keypair();
  Server server({worker.public_key});
  auto client = server.client(&worker);
  send(client, "hello");
  auto got = receive(server.router, kArrives);
  REQUIRE(got);
  REQUIRE(got->size() == 2);
  CHECK(got->at(1).to_string() == "hello");
  // The handler names the client by its key, so the controller knows which worker spoke.
  CHECK(std::string(got->at(1).gets("User-Id")) == worker.public_key);

  server.router.send(got->at(0), zmq::send_flags::sndmore);
  server.router.send(zmq::str_buffer("welcome"), zmq::send_flags::none);
  auto reply = receive(client, kArrives);
  REQUIRE(reply);
  CHECK(reply->at(0).to_string() == "welcome");
  CHECK(server.refusals.count() == 0);
}

TEST_CASE("auth: an unlisted worker gets nowhere and is reported with its address and key") {
  const auto listed = auth::generate_keypair();
  const auto stranger = auth::generate_keypair();
  Server server({listed.public_key});
  const auto quiet = quiet_window();
  auto client = server.client(&stranger);
  offer(client, "let me in");
  CHECK(server.refusals.address_of(stranger.public_key) == "127.0.0.1");
  CHECK_FALSE(receive(server.router, quiet));
  CHECK_FALSE(receive(client, 0ms));

  // A worker that retries with new sockets is reported once, not once per try.
  for (int i = 0; i < 3; ++i) {
    auto retry = server.client(&stranger);
    offer(retry, "again");
    CHECK_FALSE(receive(server.router, quiet));
  }
  CHECK(server.refusals.count(stranger.public_key) == 1);
}

TEST_CASE("auth: a worker without CURVE, or expecting another server key, gets nowhere") {
  const auto worker = auth::generate_keypair();
  const auto quiet = quiet_window();
  Server server({worker.public_key});
  auto plain = server.client(nullptr);
  offer(plain, "no keys");

  // A listed worker given the wrong server key cannot finish the handshake either.
  zmq::socket_t misled(server.ctx, zmq::socket_type::dealer);
  misled.set(zmq::sockopt::linger, 0);
  auth::make_curve_client(misled, worker, auth::generate_keypair().public_key);
  misled.connect(server.endpoint);
  offer(misled, "wrong server");

  CHECK_FALSE(receive(server.router, quiet));
}

TEST_CASE("auth: an allow-list replaced at runtime admits a new key and drops an old one") {
  const auto first = auth::generate_keypair();
  const auto second = auth::generate_keypair();
  const auto quiet = quiet_window();
  Server server({first.public_key});
  auto refused = server.client(&second);
  offer(refused, "sent while unlisted");
  REQUIRE(server.refusals.address_of(second.public_key));
  CHECK_FALSE(receive(server.router, quiet));

  server.zap->set_allowed({second.public_key});
  // The refused socket stays dead (libzmq drops it and its queue); a new one gets in.
  auto retry = server.client(&second);
  send(retry, "listed now");
  auto got = receive(server.router, kArrives);
  REQUIRE(got);
  CHECK(got->at(1).to_string() == "listed now");
  CHECK(std::string(got->at(1).gets("User-Id")) == second.public_key);
  CHECK_FALSE(receive(server.router, quiet));  // nor what the refused socket had queued

  auto dropped = server.client(&first);
  offer(dropped, "no longer listed");
  CHECK(server.refusals.address_of(first.public_key));
  CHECK_FALSE(receive(server.router, quiet));

  CHECK(error_of([&] { server.zap->set_allowed({"not a key"}); }).reason() ==
        "the key is 9 characters; a CURVE key as Z85 text is 40");
}

TEST_CASE("auth: the handler answers ZAP requests as RFC 27 says") {
  const auto worker = auth::generate_keypair();
  Server server({worker.public_key});
  zmq::socket_t zap(server.ctx, zmq::socket_type::req);
  zap.set(zmq::sockopt::linger, 0);
  zap.connect("inproc://zeromq.zap.01");
  std::array<uint8_t, 32> key_bytes;
  REQUIRE(zmq_z85_decode(key_bytes.data(), worker.public_key.c_str()));
  const std::string curve_key(key_bytes.begin(), key_bytes.end());
  const auto ask = [&](std::vector<std::string> frames) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& f : frames) parts.push_back(zmq::buffer(f));
    REQUIRE(zmq::send_multipart(zap, parts));
    auto reply = receive(zap, kArrives);
    REQUIRE(reply);
    std::vector<std::string> texts;
    for (const auto& f : *reply) texts.push_back(f.to_string());
    return texts;
  };
  using Frames = std::vector<std::string>;

  CHECK(ask({"1.0", "1", "minas", "10.0.0.9", "", "CURVE", curve_key}) ==
        Frames{"1.0", "1", "200", "OK", worker.public_key, ""});
  CHECK(ask({"1.0", "2", "minas", "10.0.0.9", "", "PLAIN", "user", "password"}) ==
        Frames{"1.0", "2", "400", "CURVE required", "", ""});
  CHECK(ask({"1.0", "3", "other", "10.0.0.9", "", "CURVE", curve_key}) ==
        Frames{"1.0", "3", "400", "unknown ZAP domain", "", ""});
  CHECK(ask({"1.0", "4", "minas", "10.0.0.9", "", "CURVE", "short"}) ==
        Frames{"1.0", "4", "400", "malformed ZAP request", "", ""});
  CHECK(ask({"2.0", "5"}) == Frames{"1.0", "5", "400", "malformed ZAP request", "", ""});
  CHECK(server.refusals.address_of("") == "10.0.0.9");
}

TEST_CASE("auth: with no ZAP handler running, a CURVE server refuses everyone") {
  const auto quiet = quiet_window();
  zmq::context_t ctx;
  const auto server_keys = auth::generate_keypair();
  const auto worker = auth::generate_keypair();
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  auth::make_curve_server(router, server_keys);
  router.bind("tcp://127.0.0.1:*");
  zmq::socket_t client(ctx, zmq::socket_type::dealer);
  client.set(zmq::sockopt::linger, 0);
  auth::make_curve_client(client, worker, server_keys.public_key);
  client.connect(router.get(zmq::sockopt::last_endpoint));
  offer(client, "anyone home?");
  CHECK_FALSE(receive(router, quiet));
}

TEST_CASE("auth: sockets without CURVE in the handler's context are left alone") {
  Server server({auth::generate_keypair().public_key});
  for (const char* bind : {"tcp://127.0.0.1:*", "inproc://auth-test-plain"}) {
    CAPTURE(bind);
    zmq::socket_t plain_router(server.ctx, zmq::socket_type::router);
    plain_router.set(zmq::sockopt::linger, 0);
    plain_router.bind(bind);
    zmq::socket_t plain_client(server.ctx, zmq::socket_type::dealer);
    plain_client.set(zmq::sockopt::linger, 0);
    plain_client.connect(plain_router.get(zmq::sockopt::last_endpoint));
    send(plain_client, "local pool");
    auto got = receive(plain_router, kArrives);
    REQUIRE(got);
    CHECK(got->at(1).to_string() == "local pool");
  }
  CHECK(server.refusals.count() == 0);
}

TEST_CASE("auth: a ZAP handler starts and stops 20 times without hanging, and still works") {
  zmq::context_t ctx;
  const auto worker = auth::generate_keypair();
  for (int i = 0; i < 20; ++i) auth::ZapHandler handler(ctx, {worker.public_key});

  {
    auth::ZapHandler handler(ctx, {});
    const Error e = error_of([&] { auth::ZapHandler second(ctx, {}); });
    CHECK(e.where() == "zmq_bind(inproc://zeromq.zap.01)");
    CHECK(contains(e.reason(), "another ZAP handler"));
  }

  // The endpoint is free again, and a handler made after all that admits as it should.
  Server server({worker.public_key});
  auto client = server.client(&worker);
  send(client, "still here");
  CHECK(receive(server.router, kArrives));

  // A context shut down under a running handler ends its thread; destroying it does not hang.
  zmq::context_t doomed;
  std::optional<auth::ZapHandler> handler(std::in_place, doomed, std::set<std::string>{});
  doomed.shutdown();
  handler.reset();
}

TEST_CASE("auth: write_keypair and read_keypair round-trip, the secret file is 0600") {
  TempDir dir("auth");
  const auto written = auth::write_keypair(dir.path / "keys", "worker-1");
  CHECK(mode_of(dir.file("keys/worker-1.key")) == "0600");
  CHECK(auth::read_public_key(dir.path / "keys/worker-1.pub") == written.public_key);
  const auto read = auth::read_keypair(dir.path / "keys/worker-1.key");
  CHECK(read.public_key == written.public_key);
  CHECK(read.secret_key == written.secret_key);
  // A .pub file is a one-key allow-list too.
  CHECK(auth::read_allow_list(dir.path / "keys/worker-1.pub") ==
        std::set<std::string>{written.public_key});

  const Error again = error_of([&] { auth::write_keypair(dir.path / "keys", "worker-1"); });
  CHECK(again.where() == dir.file("keys/worker-1.key"));
  CHECK(contains(again.reason(), "never overwrites"));
  CHECK(auth::read_keypair(dir.path / "keys/worker-1.key").secret_key == written.secret_key);

  // An existing .pub stops the pair before its .key is written.
  write_text(dir.file("keys/lonely.pub"), written.public_key + "\n");
  CHECK(error_of([&] { auth::write_keypair(dir.path / "keys", "lonely"); }).where() ==
        dir.file("keys/lonely.pub"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "keys/lonely.key"));

  CHECK(contains(error_of([&] { auth::write_keypair(dir.path, "../escape"); }).reason(),
                 "letters, digits"));
}

TEST_CASE("auth: minas keygen writes the pair with the right modes and refuses to overwrite") {
  TempDir dir("auth");
  const std::string out = dir.file("new/keys");
  const auto run = run_minas("keygen --out " + out + " --name controller");
  INFO(run.out);
  REQUIRE(run.status == 0);
  const auto keys = auth::read_keypair(out + "/controller.key");
  CHECK(contains(run.out, "public key: " + keys.public_key));
  CHECK(contains(run.out, out + "/controller.key"));
  CHECK(contains(run.out, out + "/controller.pub"));
  CHECK(mode_of(out + "/controller.key") == "0600");
  CHECK(mode_of(out + "/controller.pub").substr(0, 2) == "06");  // owner rw; the rest is umask's
  CHECK(auth::read_public_key(out + "/controller.pub") == keys.public_key);

  const auto again = run_minas("keygen --out " + out + " --name controller");
  CHECK(again.status != 0);
  CHECK(contains(again.out, out + "/controller.key: exists; keygen never overwrites a key"));
  CHECK(auth::read_keypair(out + "/controller.key").secret_key == keys.secret_key);

  const auto default_name = run_minas("keygen --out " + out);
  CHECK(default_name.status == 0);
  CHECK(std::filesystem::exists(out + "/minas.key"));
  CHECK(run_minas("keygen").status != 0);  // --out is required
}

TEST_CASE("auth: bad key files are refused with what is wrong and where") {
  TempDir dir("auth");
  const auto keys = auth::write_keypair(dir.path, "k");
  const std::string secret = dir.file("k.key");

  Error e = error_of([&] { auth::read_keypair(dir.file("missing.key")); });
  CHECK(e.where() == dir.file("missing.key"));
  CHECK(contains(e.reason(), "no such file"));

  REQUIRE(::chmod(secret.c_str(), 0640) == 0);
  e = error_of([&] { auth::read_keypair(secret); });
  CHECK(e.where() == secret);
  CHECK(contains(e.reason(), "group or others can access it (mode 0640)"));
  CHECK(contains(e.reason(), "chmod 600 " + secret));
  REQUIRE(::chmod(secret.c_str(), 0600) == 0);

  const auto write_secret = [&](const std::string& text) {
    write_text(secret, text);
    REQUIRE(::chmod(secret.c_str(), 0600) == 0);
  };
  write_secret("# pair\npublic-key " + keys.public_key + "\nsecret-key " +
               keys.secret_key.substr(0, 39) + "\n");
  e = error_of([&] { auth::read_keypair(secret); });
  CHECK(e.where() == secret + ":3");
  CHECK(e.reason() == "the secret key is 39 characters; a CURVE key as Z85 text is 40");

  write_secret("public-key " + keys.public_key + "\nsecret-key " + keys.secret_key.substr(0, 39) +
               "~\n");
  e = error_of([&] { auth::read_keypair(secret); });
  CHECK(e.where() == secret + ":2");
  CHECK(e.reason() == "the secret key is not Z85 text: character 40 is outside the Z85 alphabet");

  write_secret("public-key " + auth::generate_keypair().public_key + "\nsecret-key " +
               keys.secret_key + "\n");
  CHECK(error_of([&] { auth::read_keypair(secret); }).reason() ==
        "the public key does not belong to the secret key");

  write_secret("secret-key " + keys.secret_key + "\n");
  CHECK(error_of([&] { auth::read_keypair(secret); }).reason() == "no 'public-key KEY' line");

  // A secret key file where a public key file belongs is named for what it is.
  e = error_of([&] { auth::read_public_key(secret); });
  CHECK(e.where() == secret + ":1");
  CHECK(contains(e.reason(), "key pair file"));

  write_text(dir.file("two.pub"), keys.public_key + "\n" + keys.public_key + "\n");
  CHECK(contains(error_of([&] { auth::read_public_key(dir.file("two.pub")); }).reason(),
                 "holds 2 keys"));
}

TEST_CASE("auth: allow-lists: comments, blank lines, folders of .pub files, bad lines named") {
  TempDir dir("auth");
  const auto a = auth::generate_keypair().public_key;
  const auto b = auth::generate_keypair().public_key;
  const std::string list = dir.file("workers.allow");
  write_text(list, "# workers\n\n" + a + "\n  " + b + "   # gpu-node-2\r\n#" + a + "\n#" +
                       b.substr(1) + "\n");
  CHECK(auth::read_allow_list(list) == std::set<std::string>{a, b});

  write_text(list, a + "\n" + b.substr(0, 30) + "\n");
  Error e = error_of([&] { auth::read_allow_list(list); });
  CHECK(e.where() == list + ":2");
  CHECK(e.reason() == "the key is 30 characters; a CURVE key as Z85 text is 40");
  CHECK_FALSE(contains(e.what(), b.substr(0, 30)));  // a bad entry may be a pasted secret

  write_text(list, a + " gpu-node-1\n");
  e = error_of([&] { auth::read_allow_list(list); });
  CHECK(e.where() == list + ":1");
  CHECK(contains(e.reason(), "one key per line"));

  write_text(list, "# nobody yet\n");
  CHECK(contains(error_of([&] { auth::read_allow_list(list); }).reason(), "lists no key"));

  const auto folder = dir.path / "workers";
  auth::write_keypair(folder, "w1");
  const auto w2 = auth::write_keypair(folder, "w2");
  write_text((folder / "README").string(), "not a key, and not read\n");
  CHECK(auth::read_allow_list(folder) ==
        std::set<std::string>{auth::read_public_key(folder / "w1.pub"), w2.public_key});

  write_text((folder / "w3.pub").string(), "# broken\nxyz\n");
  e = error_of([&] { auth::read_allow_list(folder); });
  CHECK(e.where() == (folder / "w3.pub").string() + ":2");

  e = error_of([&] { auth::read_allow_list(dir.path / "nowhere"); });
  CHECK(contains(e.reason(), "no such file"));
}

TEST_CASE("auth: which endpoints are loopback-only") {
  for (const char* local :
       {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:*", "tcp://127.1.2.3:80", "tcp://localhost:5555",
        "tcp://LocalHost:1", "tcp://[::1]:5555", "tcp://[::ffff:127.0.0.1]:5555", "ipc:///tmp/x",
        "ipc://@abstract", "inproc://pool"}) {
    CAPTURE(local);
    CHECK(auth::is_loopback_endpoint(local));
  }
  for (const char* remote :
       {"tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555", "tcp://10.0.0.7:5555",
        "tcp://192.168.1.1:*", "tcp://eth0:5555", "tcp://lo:5555", "tcp://example.org:5555",
        "tcp://128.0.0.1:5555", "tcp://[::2]:5555", "tcp://", "tcp://[::1",
        "pgm://eth0;239.1.1.1:5555", "ws://127.0.0.1:5555", "", "127.0.0.1:5555"}) {
    CAPTURE(remote);
    CHECK_FALSE(auth::is_loopback_endpoint(remote));
  }
}
