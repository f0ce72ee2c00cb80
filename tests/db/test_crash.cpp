// Crash safety as SQLite tests itself: a child process writes batches of trials through the
// Writer and is killed with SIGKILL at random moments (during its first open and migration,
// mid-batch, mid-commit). After each kill the store must pass PRAGMA integrity_check, hold
// every trial the child had reported committed, and hold no trial half-written.
//
// The moments come from a seeded stream as parts of times measured here (how long a child
// takes to open a fresh store, to its first commit, between commits), never as fixed
// milliseconds: on a slow machine a fixed window ends before anything was committed.
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
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
constexpr int kRoundsPerStore = 6;  // a fresh store every so often: kills land in migrations
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

// The child: opens the store (creating and migrating it the first time) and reports 0, then
// writes batches of complete trials (added, started, three epochs, result) and after each
// commit() reports the highest trial id committed. It only leaves by SIGKILL or _exit, never back
// into doctest.
[[noreturn]] void child(const std::string& path, uint32_t seed, int report_fd) {
  try {
    Store store = Store::open(path);
    const int64_t opened = 0;  // no trial has id 0
    if (::write(report_fd, &opened, sizeof opened) != sizeof opened) _exit(5);
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
          writer.record_epoch({last, 0, e, 1.0 / e, 0.1 * e, 0.1 * e, 0.05, 0.5, std::nullopt});
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

using Clock = std::chrono::steady_clock;

// One child as the parent sees it: the store opened (0 on the pipe, once, first) and then the
// trial id of each commit, each with when the parent read it.
class Child {
 public:
  Child(const std::string& path, uint32_t seed) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    started_ = Clock::now();
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(fds[0]);
      child(path, seed, fds[1]);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) {  // a failed REQUIRE left it running
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool opened() const { return opened_at_.has_value(); }
  size_t commits() const { return commit_at_.size(); }
  int64_t last() const { return last_; }
  // Since the fork: until the open was reported, until commit i (from 0) was.
  Clock::duration open_time() const { return *opened_at_ - started_; }
  Clock::duration commit_time(size_t i) const { return commit_at_.at(i) - started_; }

  // Takes reports until `done` holds; false if the child ended first (it never ends by
  // itself: a failure) or `limit` passed, a hang guard only.
  template <class Done>
  bool await(Done done, Clock::duration limit) {
    const auto until = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() >= until || !take(until)) return false;
    }
    return true;
  }
  // Takes reports until `at`.
  void run_until(Clock::time_point at) {
    while (Clock::now() < at && take(at)) {
    }
    // The pipe closed early (the child ended): wait out the time all the same.
    std::this_thread::sleep_until(at);
  }
  void run_for(Clock::duration d) { run_until(Clock::now() + d); }

  // SIGKILLs and reaps the child, then takes what it wrote before it died: each report came
  // after a commit, so it counts too. Returns the highest trial id reported committed.
  int64_t kill_and_reap() {
    REQUIRE(::kill(pid_, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    while (take(Clock::now())) {
    }
    INFO("the child exited with status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
                                         << " instead of being killed");
    REQUIRE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
    REQUIRE(pending_.size() % sizeof(int64_t) == 0);
    return last_;
  }

 private:
  // Reads what is there by `until` (at once if it is past); false once the pipe is closed.
  bool take(Clock::time_point until) {
    const auto left = std::max(Clock::duration::zero(), until - Clock::now());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    const timespec wait{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    pollfd p{fd_, POLLIN, 0};
    const int rc = ::ppoll(&p, 1, &wait, nullptr);
    if (rc < 0 && errno == EINTR) return true;
    REQUIRE(rc >= 0);
    if (rc == 0) return true;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    const auto now = Clock::now();
    pending_.insert(pending_.end(), buf, buf + n);
    size_t at = 0;
    for (; at + sizeof(int64_t) <= pending_.size(); at += sizeof(int64_t)) {
      int64_t id;
      std::memcpy(&id, pending_.data() + at, sizeof id);
      if (!opened_at_) {
        CHECK(id == 0);  // the open is reported first
        opened_at_ = now;
        continue;
      }
      CHECK(id > last_);  // reports only move forward
      last_ = id;
      commit_at_.push_back(now);
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(at));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  Clock::time_point started_;
  std::optional<Clock::time_point> opened_at_;
  std::vector<Clock::time_point> commit_at_;
  int64_t last_ = 0;
  std::vector<char> pending_;
};

// A hang guard for a child that should report: generous, it only ends a test that would hang.
constexpr auto kReportLimit = std::chrono::seconds(120);

// How fast a child goes on this machine now: measured, never assumed.
struct Pace {
  Clock::duration fresh_open;    // fork to the open reported, on a fresh store (migrations)
  Clock::duration first_commit;  // fork to the first commit reported
  Clock::duration interval;      // between two commits

  // Folds in what a child showed (on a fresh store or not); half old, half new, so the pace
  // follows a machine whose load changes during the test.
  void learn(const Child& c, bool fresh_store) {
    const auto blend = [](Clock::duration& old, Clock::duration seen) { old = (old + seen) / 2; };
    if (fresh_store && c.opened()) blend(fresh_open, c.open_time());
    if (c.commits() >= 1) blend(first_commit, c.commit_time(0));
    if (c.commits() >= 2)
      blend(interval, (c.commit_time(c.commits() - 1) - c.commit_time(0)) /
                          static_cast<int64_t>(c.commits() - 1));
  }
};

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

// The pace of a child on a fresh store, from one that runs to its third commit (and is then
// killed and checked like any other).
Pace measure_pace(uint32_t seed) {
  TempPath tmp(-1);
  Child c(tmp.str(), seed);
  REQUIRE_MESSAGE(c.await([&] { return c.commits() >= 3; }, kReportLimit),
                  "waited " << kReportLimit.count() << " s for a child on a fresh store to report "
                            << "3 commits; it reported " << c.commits()
                            << (c.opened() ? " after opening the store" : " and no open"));
  const Pace pace{c.open_time(), c.commit_time(0), (c.commit_time(2) - c.commit_time(0)) / 2};
  check_store(tmp.str(), c.kill_and_reap());
  return pace;
}

std::string ms(Clock::duration d) {
  return std::to_string(std::chrono::duration<double, std::milli>(d).count()) + " ms";
}

}  // namespace

TEST_CASE("crash: a writer killed at random moments keeps every commit it reported") {
  std::mt19937 random(20240611);  // the same kill schedule every run, scaled to this machine
  // A random part of a measured time: where in it the kill lands.
  const auto part_of = [&](Clock::duration d) {
    return d * static_cast<int64_t>(random() % 1024) / 1024;
  };
  Pace pace = measure_pace(random());
  MESSAGE("pace of a child here: the fresh store opened after "
          << ms(pace.fresh_open) << ", first commit after " << ms(pace.first_commit)
          << ", then one every " << ms(pace.interval));
  int in_open = 0, before_commit = 0, after_commit = 0, rounds_with_commits = 0;
  int64_t total = 0;
  for (int group = 0; group < kRounds / kRoundsPerStore; ++group) {
    TempPath tmp(group);
    int64_t committed = 0;  // the highest trial id any child reported for this store
    for (int round = 0; round < kRoundsPerStore; ++round) {
      // Where the kill lands: in a fresh store's open and migrations (the first two rounds of
      // a store: the second may find the first's migration cut short), anywhere before the
      // first commit (a reopen, a repair, the first batch), or at a random point of the batch
      // after the n-th commit (mid-batch, mid-commit).
      const uint32_t kind = round < 2 ? 0 : 1 + random() % 4;
      const uint32_t seed = random();
      CAPTURE(group);
      CAPTURE(round);
      CAPTURE(kind);
      Child c(tmp.str(), seed);
      if (kind == 0) {
        c.run_for(part_of(pace.fresh_open));
      } else if (kind == 1) {
        c.run_for(part_of(pace.first_commit));
      } else {
        const size_t n = kind - 1;
        REQUIRE_MESSAGE(c.await([&] { return c.commits() >= n; }, kReportLimit),
                        "waited " << kReportLimit.count() << " s for commit " << n
                                  << " of the child; it reported " << c.commits()
                                  << (c.opened() ? " after opening the store" : " and no open"));
        c.run_for(part_of(pace.interval));
      }
      const int64_t reported = c.kill_and_reap();
      pace.learn(c, round == 0);
      ++(c.commits() > 0 ? after_commit : c.opened() ? before_commit : in_open);
      if (reported > committed) {
        ++rounds_with_commits;
        committed = reported;
      }
      check_store(tmp.str(), committed);
    }
    total += committed;
  }
  MESSAGE(kRounds << " kills: " << in_open << " before the open was reported, " << before_commit
                  << " after it and before a commit, " << after_commit << " after a commit; "
                  << rounds_with_commits << " rounds committed something; " << total
                  << " trials reported committed");
  // Half the rounds wait for a commit before the kill, whatever the machine's speed.
  CHECK(after_commit >= kRounds / 4);
  CHECK(total > 0);
}
