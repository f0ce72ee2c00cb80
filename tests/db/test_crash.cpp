// Crash safety as SQLite tests itself: a child process writes batches of trials through the
// Writer and is killed with SIGKILL at random moments (during its first open and migration,
// mid-batch, mid-commit). After each kill the store must pass PRAGMA integrity_check, hold
// every trial the child had reported committed, and hold no trial half-written.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/schema.h"
#include "db/sqlite.h"
#include "db/store.h"

namespace {

namespace fs = std::filesystem;
using minas::db::Connection;
using minas::db::OpenMode;
using minas::db::Statement;
using minas::db::Store;
using minas::db::Writer;

constexpr int kRounds = 60;
constexpr int kRoundsPerStore = 12;  // a fresh store every so often: kills land in migrations
constexpr int kEpochs = 3;
constexpr const char* kExperiment = "crash";

struct TempPath {
  fs::path path;
  explicit TempPath(int index) {
    std::random_device random;
    path = fs::temp_directory_path() /
           ("minas-test-crash-" + std::to_string(::getpid()) + "-" + std::to_string(random()) +
            "-" + std::to_string(index) + ".sqlite");
  }
  ~TempPath() {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      fs::remove(path.string() + suffix, ec);
    }
  }
  std::string str() const { return path.string(); }
};

// What the child writes for trial `id`, so the parent can check the values, not just the rows.
double val_acc_of(int64_t id) {
  return static_cast<double>(id % 1000) / 1000.0;
}

// The child: opens the store (creating and migrating it the first time), then writes batches
// of complete trials (added, started, three epochs, result) and after each commit() reports
// the highest trial id committed. It only leaves by SIGKILL or _exit, never back into doctest.
[[noreturn]] void child(const std::string& path, uint32_t seed, int report_fd) {
  try {
    Store store = Store::open(path);
    int64_t experiment = 0;
    if (const auto found = store.find_experiment(kExperiment)) {
      experiment = found->id;
    } else {
      minas::db::ExperimentSpec spec;
      spec.name = kExperiment;
      spec.space = "chain";
      spec.dataset = "fashion-mnist";
      spec.dataset_fingerprint = "fp";
      spec.strategy = "random";
      spec.objective = "val_acc";
      experiment = store.create_experiment(spec, 0.0);
    }
    Writer writer(store);
    std::mt19937 random(seed);
    for (double now = 1.0;; now += 1.0) {
      const int batch = 20 + static_cast<int>(random() % 181);
      int64_t last = 0;
      for (int i = 0; i < batch; ++i) {
        minas::db::NewTrial trial;
        trial.experiment_id = experiment;
        trial.arch_key = "arch-" + std::to_string(random());
        trial.arch_hash = random();
        trial.arch_json = "{\"key\":\"" + trial.arch_key + "\"}";
        trial.fidelity = kEpochs;
        trial.queued_at = now;
        last = writer.add_trial(trial);
        writer.start_trial(last, 0, std::nullopt, "cpu", now);
        for (int e = 1; e <= kEpochs; ++e) {
          writer.record_epoch({last, 0, e, 1.0 / e, 0.1 * e, 0.1 * e, 0.05, 0.5});
        }
        minas::db::TrialResult result;
        result.trial_id = last;
        result.val_acc = val_acc_of(last);
        result.latency_ms = 1.0;
        result.params = 1000;
        result.macs = 2000;
        result.train_seconds = 1.5;
        result.finished_at = now;
        if (!writer.record_result(result)) _exit(4);
      }
      writer.commit();
      // 8 bytes are below PIPE_BUF: each report arrives whole or not at all.
      if (::write(report_fd, &last, sizeof last) != sizeof last) _exit(5);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash child: %s\n", e.what());
    _exit(2);
  } catch (...) {
    _exit(3);
  }
}

// Forks the child, takes its reports for `delay`, kills it and reaps it. Returns the highest
// trial id the child reported committed (0 for none).
int64_t run_and_kill(const std::string& path, uint32_t seed, std::chrono::microseconds delay) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    child(path, seed, fds[1]);
  }
  ::close(fds[1]);

  std::vector<char> reports;
  auto take = [&](int timeout_ms) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) return false;
    reports.insert(reports.end(), buf, buf + n);
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + delay;
  for (auto now = std::chrono::steady_clock::now(); now < deadline;
       now = std::chrono::steady_clock::now()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now);
    if (left.count() < 1000) {
      // poll counts milliseconds: wait out the rest without it.
      ::usleep(static_cast<useconds_t>(left.count()));
      break;
    }
    take(static_cast<int>(left.count() / 1000));
  }
  REQUIRE(::kill(pid, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  // What the child wrote before it died was reported after a commit: it counts too.
  while (take(0)) {
  }
  ::close(fds[0]);

  INFO("the child exited with status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
                                       << " instead of being killed");
  REQUIRE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  REQUIRE(reports.size() % sizeof(int64_t) == 0);
  int64_t last = 0;
  for (size_t i = 0; i < reports.size(); i += sizeof(int64_t)) {
    int64_t id;
    std::memcpy(&id, reports.data() + i, sizeof id);
    CHECK(id > last);  // reports only move forward
    last = id;
  }
  return last;
}

int64_t query_int(Connection& c, const std::string& sql) {
  Statement st = c.prepare(sql);
  REQUIRE(st.step());
  return st.column_int64(0);
}

// The tables the migrations up to `version` create.
int64_t tables_at(int version) {
  int64_t count = 0;
  for (int i = 0; i < version; ++i) {
    const std::string_view sql = minas::db::migrations()[static_cast<size_t>(i)].sql;
    for (size_t at = sql.find("CREATE TABLE"); at != std::string_view::npos;
         at = sql.find("CREATE TABLE", at + 1)) {
      ++count;
    }
  }
  return count;
}

// What a killed child must leave: a sound file at a whole schema version, every reported
// trial present with its result and epochs, and nothing half-written.
void check_store(const std::string& path, int64_t committed) {
  std::error_code ec;
  if (fs::exists(path, ec) && fs::file_size(path, ec) > 0) {
    // Before any read-write open repairs anything: a kill inside a migration leaves the
    // previous version whole. A read-only connection can neither rebuild the WAL index nor
    // play back the hot journal (a kill while the fresh file turned to WAL) a killed writer
    // left; then only the read-write check below applies.
    try {
      Connection look = Connection::open(path, OpenMode::ReadOnly);
      CHECK(minas::db::integrity_check(look) == "ok");
      const int version = minas::db::user_version(look);
      CHECK(query_int(look, "SELECT count(*) FROM sqlite_master WHERE type = 'table'") ==
            tables_at(version));
    } catch (const minas::db::SqliteError& e) {
      if (!minas::db::needs_writer_repair(e)) throw;
    }
  }

  Store store = Store::open(path);  // as the controller restarts
  Connection& c = store.connection();
  REQUIRE(minas::db::integrity_check(c) == "ok");
  const int64_t trials = query_int(c, "SELECT count(*) FROM trials");
  if (committed > 0) REQUIRE(store.find_experiment(kExperiment));
  // Ids are handed out as max + 1 and never deleted: the committed ones are 1..max.
  CHECK(query_int(c, "SELECT count(*) FROM trials WHERE id <= " + std::to_string(committed)) ==
        committed);
  CHECK(query_int(c, "SELECT coalesce(max(id), 0) FROM trials") == trials);
  CHECK(query_int(c, "SELECT coalesce(max(number), -1) + 1 FROM trials") == trials);
  // A batch lands whole: every trial is done, with its own result and all its epochs.
  CHECK(query_int(c,
                  "SELECT count(*) FROM trials WHERE status != 'done' OR attempt != 0 OR "
                  "val_acc != (id % 1000) / 1000.0 OR finished_at IS NULL") == 0);
  CHECK(query_int(c, "SELECT count(*) FROM epochs") == trials * kEpochs);
  CHECK(query_int(c,
                  "SELECT count(*) FROM trials t WHERE (SELECT count(*) FROM epochs e "
                  "WHERE e.trial_id = t.id AND e.attempt = 0) != " +
                      std::to_string(kEpochs)) == 0);
}

}  // namespace

TEST_CASE("crash: a writer killed at random moments keeps every commit it reported") {
  std::mt19937 random(20240611);  // the same kill schedule every run
  std::uniform_int_distribution<int> delay_us(0, 30000);
  int rounds_with_commits = 0;
  int64_t total = 0;
  for (int group = 0; group < kRounds / kRoundsPerStore; ++group) {
    TempPath tmp(group);
    int64_t committed = 0;  // the highest trial id any child reported for this store
    for (int round = 0; round < kRoundsPerStore; ++round) {
      const auto delay = std::chrono::microseconds(delay_us(random));
      CAPTURE(group);
      CAPTURE(round);
      CAPTURE(delay.count());
      const int64_t reported = run_and_kill(tmp.str(), random(), delay);
      if (reported > committed) {
        ++rounds_with_commits;
        committed = reported;
      }
      check_store(tmp.str(), committed);
    }
    total += committed;
  }
  MESSAGE(kRounds << " kills; " << rounds_with_commits << " rounds committed something; " << total
                  << " trials reported committed");
  CHECK(total > 0);
}
