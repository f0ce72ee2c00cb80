// A worker on the far side of a real network link (its own network namespace, joined to the
// controller's by a veth pair) has the link cut mid-trial. Unlike a killed process, a cut link
// sends neither FIN nor RST: the controller can only notice the silence through heartbeats.
// Its trial must go back to the queue and finish on another worker, the budget done exactly.
// Needs root and a kernel that allows network namespaces and veth; skipped elsewhere.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "db/queries.h"
#include "tests/support.h"
#include "tests/wait.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

// Starts `ip` with args (found on PATH: /sbin or /usr/sbin), its output appended to `log`.
// Returns -1 when it cannot start, so that cleanup paths never throw.
pid_t spawn_ip(const std::vector<std::string>& args, const std::string& log) {
  return minas::test::spawn_logged("ip", args, log, /*search_path=*/true);
}

using minas::test::eventually;
using minas::test::kHangGuard;

// Waits for a process to end, killing it after `limit` (a hang guard); returns its exit
// status, -1 if it did not exit normally or had to be killed.
int wait_for(pid_t pid, std::chrono::milliseconds limit = kHangGuard) {
  int status = 0;
  if (!eventually([&] { return waitpid(pid, &status, WNOHANG) != 0; }, limit)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs one `ip` command to its end (bounded: a wedged netlink call must not hang the test).
int ip(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = spawn_ip(args, log);
  return pid < 0 ? -1 : wait_for(pid);
}

// The namespaces this test made, deleted at scope exit whatever happened. Declared before
// Children, so that the processes inside are gone first (a namespace outlives `ip netns del`
// while a process still runs in it).
struct Namespaces {
  std::string log;
  std::vector<std::string> names;
  explicit Namespaces(std::string l) : log(std::move(l)) {}
  ~Namespaces() {
    for (const auto& n : names) ip({"netns", "del", n}, log);
  }
  Namespaces(const Namespaces&) = delete;
  Namespaces& operator=(const Namespaces&) = delete;
  // Creates `name`; false when the machine does not allow it.
  bool add(const std::string& name) {
    ip({"netns", "del", name}, "/dev/null");  // left by an earlier run killed with this pid
    if (ip({"netns", "add", name}, log) != 0) return false;
    names.push_back(name);
    return true;
  }
};

// Processes started here: any still running at scope exit is killed and reaped, so that a
// failed check leaves no worker stuck in a namespace.
struct Children {
  std::vector<pid_t> pids;
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() {
    for (const pid_t p : pids) {
      if (waitpid(p, nullptr, WNOHANG) != 0) continue;  // reaped already (or not ours)
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
  // Starts the minas binary with args inside namespace `ns`. `ip netns exec` execs the
  // command in place (no fork), so the pid is the minas process itself.
  pid_t start(const std::string& ns, const std::vector<std::string>& args, const std::string& log) {
    std::vector<std::string> all{"netns", "exec", ns, MINAS_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    const pid_t pid = spawn_ip(all, log);
    REQUIRE(pid > 0);
    pids.push_back(pid);
    return pid;
  }
};

std::string slurp(const std::string& path) {
  return minas::test::file_text(path);
}

// The id of a trial the worker `name` is running, once there is one. The controller may not
// have created the store yet, hence the catch: the poll just goes on.
std::optional<int64_t> running_trial(const std::string& db, const std::string& name) {
  try {
    minas::db::Connection c = minas::db::open_store_readonly(db);
    minas::db::Statement s = c.prepare(
        "SELECT t.id FROM trials t JOIN workers w ON w.id = t.worker_id "
        "WHERE t.status = 'running' AND w.name = ?1");
    s.bind_text(1, name);
    if (s.step()) return s.column_int64(0);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// A veth pair from namespace a to namespace b, made with its ends already inside them (so
// nothing is ever left in the host's own namespace; deleting a namespace deletes its end and
// so the pair), each end with its /30 address and up, loopback up on both sides. False when
// the machine allows no veth pair.
bool veth_link(const std::string& ns_a, const std::string& veth_a, const std::string& addr_a,
               const std::string& ns_b, const std::string& veth_b, const std::string& addr_b,
               const std::string& log) {
  if (ip({"-n", ns_a, "link", "add", veth_a, "type", "veth", "peer", "name", veth_b, "netns", ns_b},
         log) != 0)
    return false;
  for (const auto& [n, veth, addr] :
       {std::tuple{ns_a, veth_a, addr_a + "/30"}, std::tuple{ns_b, veth_b, addr_b + "/30"}}) {
    REQUIRE(ip({"-n", n, "addr", "add", addr, "dev", veth}, log) == 0);
    REQUIRE(ip({"-n", n, "link", "set", "lo", "up"}, log) == 0);
    REQUIRE(ip({"-n", n, "link", "set", veth, "up"}, log) == 0);
  }
  return true;
}

// The trial `name` runs once it has one; nullopt if the controller or the worker ended first
// (a bad key, a missing table: no trial will ever run) or the hang guard passed.
std::optional<int64_t> await_running_trial(const std::string& db, const std::string& name,
                                           pid_t ctl, pid_t worker) {
  std::optional<int64_t> t;
  bool ended = false;
  eventually([&] {
    t = running_trial(db, name);
    ended = !t && (waitpid(ctl, nullptr, WNOHANG) != 0 || waitpid(worker, nullptr, WNOHANG) != 0);
    return t || ended;
  });
  return t;
}

// The trial cut off from its host ended done, on a later attempt, run by `worker`.
void check_ran_again_on(minas::db::Connection& c, int64_t trial, const std::string& worker) {
  minas::db::Statement cut = c.prepare(
      "SELECT t.status, t.attempt, w.name FROM trials t JOIN workers w ON w.id = t.worker_id "
      "WHERE t.id = ?1");
  cut.bind_int64(1, trial);
  REQUIRE(cut.step());
  CHECK(cut.column_text(0) == "done");
  CHECK(cut.column_int64(1) >= 1);
  CHECK(cut.column_text(2) == worker);
}

}  // namespace

TEST_CASE("netns: a worker whose link is cut mid-trial is detected and its trial re-queued") {
  if (geteuid() != 0) {
    MESSAGE("skipped: network namespaces need root");
    return;
  }
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("netns");
  const std::string db = dir.file("minas.db"), ip_log = dir.file("ip.log");
  const std::string ctl_log = dir.file("controller.log"), remote_log = dir.file("remote.log"),
                    local_log = dir.file("local.log");

  // Names and addresses from the pid, so that concurrent runs never meet. Interface names
  // must stay under 16 characters.
  const std::string pid = std::to_string(::getpid());
  const std::string ns_c = "minas-c-" + pid, ns_w = "minas-w-" + pid;
  const std::string veth_c = "mnc-" + pid, veth_w = "mnw-" + pid;
  const std::string net = "10.213." + std::to_string(::getpid() % 250) + ".";
  const std::string endpoint = "tcp://" + net + "1:5555";  // a private namespace: any port

  Namespaces ns(ip_log);
  // Some containers let root add a namespace but not enter it (no remount of /sys): skip too.
  if (!ns.add(ns_c) || !ns.add(ns_w) || ip({"netns", "exec", ns_c, "true"}, ip_log) != 0) {
    MESSAGE("skipped: no network namespaces here (" << slurp(ip_log) << ")");
    return;
  }
  if (!veth_link(ns_c, veth_c, net + "1", ns_w, veth_w, net + "2", ip_log)) {
    MESSAGE("skipped: no veth pair (" << slurp(ip_log) << ")");
    return;
  }

  // Beyond loopback the controller insists on CURVE. The allow-list is a folder holding only
  // the workers' public keys.
  const std::string ctl_keys = dir.file("controller-keys"), worker_keys = dir.file("workers");
  for (const auto& [out, name] :
       {std::pair{ctl_keys, "controller"}, std::pair{worker_keys, "remote"},
        std::pair{worker_keys, "local"}}) {
    const auto r = minas::test::run_minas("keygen --out " + out + " --name " + std::string(name));
    REQUIRE_MESSAGE(r.status == 0, r.out);
  }
  const std::string ctl_key = ctl_keys + "/controller.key", ctl_pub = ctl_keys + "/controller.pub",
                    tbl = minas::test::nb201_table();
  const auto worker = [&](const std::string& name, const std::string& delay) {
    const std::string key = worker_keys + "/" + name + ".key";
    return std::vector<std::string>{
        "worker",   "--connect",          endpoint,  "--trainer", "sim",    "--table", tbl,
        "--metric", "cifar10_valid_12ep", "--delay", delay,       "--name", name,      "--key",
        key,        "--server-key",       ctl_pub};
  };

  Children kids;
  // Read only when a check fails, so it shows the logs as they are then.
  INFO("controller log:\n"
       << slurp(ctl_log) << "\nremote worker log:\n"
       << slurp(remote_log) << "\nlocal worker log:\n"
       << slurp(local_log) << "\nip log:\n"
       << slurp(ip_log));
  // Heartbeats every 100 ms, lost after 5: the silence shows within half a second.
  const std::vector<std::string> ctl_args{
      "controller", "--db",       db,       "--bind",    endpoint,   "--name",  "netns",
      "--space",    "nb201",      "--data", "simulated", "--trials", "12",      "--heartbeat-ms",
      "100",        "--liveness", "5",      "--key",     ctl_key,    "--allow", worker_keys};
  const pid_t ctl = kids.start(ns_c, ctl_args, ctl_log);
  // A trial it never finishes: the link is surely cut while it runs, however late that comes.
  const pid_t remote = kids.start(ns_w, worker("remote", "3600"), remote_log);

  const std::optional<int64_t> cut_trial = await_running_trial(db, "remote", ctl, remote);
  REQUIRE_MESSAGE(cut_trial.has_value(), "the remote worker never had a trial running");

  // Down on the controller's side: its packets to the worker go nowhere and the worker's never
  // arrive, with no reset either way. The address stays local to the controller's namespace,
  // which is how the second worker still reaches the controller.
  REQUIRE(ip({"-n", ns_c, "link", "set", veth_c, "down"}, ip_log) == 0);
  const pid_t local = kids.start(ns_c, worker("local", "0.01"), local_log);

  const int ctl_status = wait_for(ctl);
  const int local_status = wait_for(local);
  kill(remote, SIGKILL);  // it waits for a controller it can no longer reach
  wait_for(remote);

  CHECK(ctl_status == 0);
  CHECK(local_status == 0);
  CHECK(minas::test::contains(slurp(ctl_log), "worker remote went silent"));

  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement all =
      c.prepare("SELECT count(*), sum(status = 'done'), count(DISTINCT arch_key) FROM trials");
  REQUIRE(all.step());
  CHECK(all.column_int64(0) == 12);
  CHECK(all.column_int64(1) == 12);
  CHECK(all.column_int64(2) == 12);
  // The cut trial ran again, on the worker that could still be reached.
  check_ran_again_on(c, *cut_trial, "local");
}

TEST_CASE(
    "netns: hosts in their own namespaces join with CURVE keys, the trial of a host cut "
    "off is re-queued and an unlisted host is refused") {
  if (geteuid() != 0) {
    MESSAGE("skipped: network namespaces need root");
    return;
  }
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("netns-hosts");
  const std::string db = dir.file("minas.db"), ip_log = dir.file("ip.log");
  const std::string ctl_log = dir.file("controller.log");

  // The controller's namespace and three hosts, each on its own veth link (a /30 of
  // 10.214.X.0/24): host1 and host2 hold listed keys, host3 a key of its own.
  const std::string pid = std::to_string(::getpid());
  const std::string ns_c = "minas-hc-" + pid;
  const std::string net = "10.214." + std::to_string(::getpid() % 250) + ".";
  struct Host {
    std::string ns, veth_c, veth_h, ctl_addr, addr, log;
  };
  std::vector<Host> hosts;
  for (int h = 1; h <= 3; ++h) {
    const std::string n = std::to_string(h);
    hosts.push_back({"minas-h" + n + "-" + pid, "mc" + n + "-" + pid, "mh" + n + "-" + pid,
                     net + std::to_string(4 * h + 1), net + std::to_string(4 * h + 2),
                     dir.file("host" + n + ".log")});
  }
  Namespaces ns(ip_log);
  if (!ns.add(ns_c) || ip({"netns", "exec", ns_c, "true"}, ip_log) != 0) {
    MESSAGE("skipped: no network namespaces here (" << slurp(ip_log) << ")");
    return;
  }
  for (const Host& h : hosts) {
    REQUIRE(ns.add(h.ns));
    if (!veth_link(ns_c, h.veth_c, h.ctl_addr, h.ns, h.veth_h, h.addr, ip_log)) {
      MESSAGE("skipped: no veth pair (" << slurp(ip_log) << ")");
      return;
    }
  }

  // Keys: the controller's; host1's and host2's on the allow-list (a folder of public keys);
  // host3's made apart, never listed.
  const std::string ctl_keys = dir.file("controller-keys"), listed = dir.file("listed"),
                    unlisted = dir.file("unlisted");
  for (const auto& [out, name] : {std::pair{ctl_keys, "controller"}, std::pair{listed, "host1"},
                                  std::pair{listed, "host2"}, std::pair{unlisted, "host3"}}) {
    const auto r = minas::test::run_minas("keygen --out " + out + " --name " + std::string(name));
    REQUIRE_MESSAGE(r.status == 0, r.out);
  }
  const std::string ctl_pub = ctl_keys + "/controller.pub", tbl = minas::test::nb201_table();
  const auto worker = [&](int h, const std::string& keys, const std::string& delay) {
    const std::string name = "host" + std::to_string(h);
    return std::vector<std::string>{"worker",
                                    "--connect",
                                    "tcp://" + hosts[static_cast<size_t>(h - 1)].ctl_addr + ":5555",
                                    "--trainer",
                                    "sim",
                                    "--table",
                                    tbl,
                                    "--metric",
                                    "cifar10_valid_12ep",
                                    "--delay",
                                    delay,
                                    "--name",
                                    name,
                                    "--pool",
                                    "netns",
                                    "--key",
                                    keys + "/" + name + ".key",
                                    "--server-key",
                                    ctl_pub};
  };

  Children kids;
  INFO("controller log:\n"
       << slurp(ctl_log) << "\nhost1:\n"
       << slurp(hosts[0].log) << "\nhost2:\n"
       << slurp(hosts[1].log) << "\nhost3:\n"
       << slurp(hosts[2].log) << "\nip log:\n"
       << slurp(ip_log));
  // Bound on every interface of its namespace: each host reaches it over its own link.
  const std::vector<std::string> ctl_args{"controller",
                                          "--db",
                                          db,
                                          "--bind",
                                          "tcp://0.0.0.0:5555",
                                          "--name",
                                          "hosts",
                                          "--space",
                                          "nb201",
                                          "--data",
                                          "simulated",
                                          "--trials",
                                          "12",
                                          "--heartbeat-ms",
                                          "100",
                                          "--liveness",
                                          "5",
                                          "--key",
                                          ctl_keys + "/controller.key",
                                          "--allow",
                                          listed};
  const pid_t ctl = kids.start(ns_c, ctl_args, ctl_log);
  const pid_t host1 = kids.start(hosts[0].ns, worker(1, listed, "3600"), hosts[0].log);
  const pid_t host3 = kids.start(hosts[2].ns, worker(3, unlisted, "0.01"), hosts[2].log);

  const std::optional<int64_t> cut_trial = await_running_trial(db, "host1", ctl, host1);
  REQUIRE_MESSAGE(cut_trial.has_value(), "host1 never had a trial running");
  // host3 has been knocking all along: refused, never registered.
  REQUIRE_MESSAGE(
      eventually([&] { return minas::test::contains(slurp(ctl_log), "refused a worker"); }),
      "waited " << kHangGuard.count() << " s for the controller to log 'refused a worker'");
  // Cut host1 off on the controller's side; host2 joins over its own link.
  REQUIRE(ip({"-n", ns_c, "link", "set", hosts[0].veth_c, "down"}, ip_log) == 0);
  const pid_t host2 = kids.start(hosts[1].ns, worker(2, listed, "0.01"), hosts[1].log);

  const int ctl_status = wait_for(ctl);
  const int host2_status = wait_for(host2);
  for (const pid_t p : {host1, host3}) {  // both wait for a controller they cannot use
    kill(p, SIGKILL);
    wait_for(p);
  }
  CHECK(ctl_status == 0);
  CHECK(host2_status == 0);
  const std::string log = slurp(ctl_log);
  CHECK(minas::test::contains(log, "worker host1 went silent"));
  CHECK(minas::test::contains(log, "refused a worker from " + hosts[2].addr));
  CHECK_FALSE(minas::test::contains(log, "refused a worker from " + hosts[0].addr));
  CHECK_FALSE(minas::test::contains(log, "refused a worker from " + hosts[1].addr));

  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement all =
      c.prepare("SELECT count(*), sum(status = 'done'), count(DISTINCT arch_key) FROM trials");
  REQUIRE(all.step());
  CHECK(all.column_int64(0) == 12);
  CHECK(all.column_int64(1) == 12);
  CHECK(all.column_int64(2) == 12);
  // Only the listed hosts registered, each from its own address, in pool netns.
  minas::db::Statement w = c.prepare("SELECT name, host, pool FROM workers ORDER BY name");
  std::vector<std::string> names;
  while (w.step()) {
    names.push_back(w.column_text(0));
    CHECK(w.column_text(2) == "netns");
  }
  CHECK(names == std::vector<std::string>{"host1", "host2"});
  // The cut trial ran again on host2.
  check_ran_again_on(c, *cut_trial, "host2");
}
