// Fault tests with real processes on loopback: SIGKILL a worker mid-trial,
// SIGKILL the controller mid-search and resume it. The store must hold every
// trial of the budget exactly once, done.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "adapt/images.h"
#include "db/queries.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "tests/wait.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/model.h"
#include "trainer/network.h"
#include "trainer/train.h"

extern char** environ;

namespace {

// Starts the minas binary with args, its output sent to `log`.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = minas::test::spawn_logged(MINAS_BINARY, args, log);
  REQUIRE(pid > 0);
  return pid;
}

using minas::test::eventually;
using minas::test::kHangGuard;

// Waits for a process to end, killing it after `limit` (a hang guard); returns its exit
// status, -1 if it did not exit by itself.
int wait_for(pid_t pid, std::chrono::seconds limit = kHangGuard) {
  int status = 0;
  if (!eventually([&] { return waitpid(pid, &status, WNOHANG) != 0; }, limit)) {
    MESSAGE("process " << pid << " still running after " << limit.count() << " s: killed");
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The first column of `sql`'s first row on the store at `path`; nullopt while the controller
// has not created the store or its tables yet.
std::optional<int64_t> store_int(const std::string& path, const std::string& sql) {
  try {
    if (!std::filesystem::exists(path)) return std::nullopt;
    minas::db::Connection c = minas::db::open_store_readonly(path);
    minas::db::Statement s = c.prepare(sql);
    if (s.step() && !s.is_null(0)) return s.column_int64(0);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// Waits until the store at `path` has at least `n` trials done (a hang guard bounds it).
void await_done(const std::string& path, int64_t n) {
  REQUIRE_MESSAGE(
      eventually([&] {
        return store_int(path, "SELECT count(*) FROM trials WHERE status = 'done'").value_or(0) >=
               n;
      }),
      "waited " << kHangGuard.count() << " s for " << n << " trials done in " << path);
}

// Waits until worker `name` runs a trial (a hang guard bounds it); returns its number.
int64_t await_running(const std::string& path, const std::string& name) {
  std::optional<int64_t> number;
  REQUIRE_MESSAGE(
      eventually([&] {
        return (number = store_int(path,
                                   "SELECT t.number FROM trials t JOIN workers w ON w.id = "
                                   "t.worker_id WHERE t.status = 'running' AND w.name = '" +
                                       name + "'"))
            .has_value();
      }),
      "waited " << kHangGuard.count() << " s for worker " << name << " to run a trial");
  return *number;
}

struct Tally {
  int64_t trials = 0, done = 0, distinct = 0;
};

Tally tally(const std::string& path) {
  minas::db::Connection c = minas::db::open_store_readonly(path);
  minas::db::Statement s =
      c.prepare("SELECT count(*), sum(status = 'done'), count(DISTINCT arch_key) FROM trials");
  REQUIRE(s.step());
  return {s.column_int64(0), s.column_int64(1), s.column_int64(2)};
}

int free_port() {
  static int next = 20000 + static_cast<int>(::getpid() % 20000);
  return next++;
}

std::vector<std::string> worker_args(const std::string& endpoint, const std::string& name,
                                     const std::string& delay) {
  return {"worker",
          "--connect",
          endpoint,
          "--trainer",
          "sim",
          "--table",
          minas::test::nb201_table(),
          "--metric",
          "cifar10_valid_12ep",
          "--delay",
          delay,
          "--name",
          name};
}

}  // namespace

TEST_CASE("faults: a worker killed mid-trial, its trial completes on another worker") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("fault-worker");
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl =
      spawn({"controller", "--db", db, "--bind", endpoint, "--name", "w", "--space", "nb201",
             "--data", "simulated", "--trials", "30", "--heartbeat-ms", "100", "--liveness", "3"},
            log);
  // A trial it never finishes: the kill surely lands while it runs, however late it comes.
  const pid_t slow = spawn(worker_args(endpoint, "slow", "3600"), log);
  await_running(db, "slow");
  kill(slow, SIGKILL);
  waitpid(slow, nullptr, 0);
  const pid_t fast = spawn(worker_args(endpoint, "fast", "0.01"), log);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(fast) == 0);
  const Tally t = tally(db);
  CHECK(t.trials == 30);
  CHECK(t.done == 30);
  CHECK(t.distinct == 30);
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT max(attempt) FROM trials");
  REQUIRE(s.step());
  CHECK(s.column_int64(0) >= 1);  // the killed worker's trial ran again
}

TEST_CASE("faults: the controller killed mid-search resumes and ends with its full budget") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("fault-controller");
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const std::vector<std::string> ctl_args{
      "controller", "--db",           db,      "--bind",     endpoint,    "--name",
      "r",          "--space",        "nb201", "--data",     "simulated", "--trials",
      "150",        "--heartbeat-ms", "100",   "--liveness", "3"};
  const pid_t worker = spawn(worker_args(endpoint, "w", "0.005"), log);
  // Killed once the experiment is in the store (before any result), then after 10 and 25
  // trials done: far from the 150, whatever the machine's speed.
  for (const int64_t done : {0, 10, 25}) {
    const pid_t ctl = spawn(ctl_args, log);
    REQUIRE_MESSAGE(eventually([&] {
                      return store_int(db, "SELECT count(*) FROM experiments").value_or(0) > 0;
                    }),
                    "waited " << kHangGuard.count() << " s for the experiment in the store");
    await_done(db, done);
    kill(ctl, SIGKILL);
    waitpid(ctl, nullptr, 0);
  }
  const Tally mid = tally(db);
  CHECK(mid.done < 150);  // the kills landed mid-search
  const pid_t ctl = spawn(ctl_args, log);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(worker) == 0);
  const Tally t = tally(db);
  CHECK(t.trials == 150);
  CHECK(t.done == 150);
  CHECK(t.distinct == 150);
}

TEST_CASE(
    "faults: a search whose controller is SIGKILLed and resumed makes the decisions of one "
    "never killed") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  for (const std::string strategy : {"evolution", "reinforce"}) {
    CAPTURE(strategy);
    // One worker with one slot: the order of results, and so every decision,
    // is fixed; what a kill loses is redone from the store.
    auto keys = [&](const std::string& tag, int kills) {
      const minas::test::TempDir dir("kill-resume-" + strategy + "-" + tag);
      const std::string db = dir.file("minas.db"), log = dir.file("log");
      INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
      const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
      const std::vector<std::string> ctl_args{
          "controller", "--db",       db,      "--bind",     endpoint,    "--name",
          "k",          "--space",    "nb201", "--data",     "simulated", "--trials",
          "80",         "--seed",     "5",     "--strategy", strategy,    "--heartbeat-ms",
          "100",        "--liveness", "3"};
      const pid_t worker = spawn(worker_args(endpoint, "w", "0.02"), log);
      // Each kill once the search has gone on by a few results: after 5, 20 and 35 of 80.
      for (int round = 0; round < kills; ++round) {
        const pid_t ctl = spawn(ctl_args, log);
        await_done(db, 5 + 15 * round);
        kill(ctl, SIGKILL);
        waitpid(ctl, nullptr, 0);
      }
      if (kills) CHECK(tally(db).done < 80);  // the kills landed mid-search
      const pid_t ctl = spawn(ctl_args, log);
      CHECK(wait_for(ctl) == 0);
      CHECK(wait_for(worker) == 0);
      minas::db::Connection c = minas::db::open_store_readonly(db);
      minas::db::Statement s = c.prepare("SELECT arch_key FROM trials ORDER BY number");
      std::vector<std::string> k;
      while (s.step()) k.push_back(s.column_text(0));
      return k;
    };
    const auto straight = keys("straight", 0);
    REQUIRE(straight.size() == 80);
    CHECK(keys("killed", 3) == straight);
  }
}

TEST_CASE("faults: a worker restarted under the same name mid-trial, the lost attempt is retried") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("fault-same-name");
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl =
      spawn({"controller", "--db", db, "--bind", endpoint, "--name", "s", "--space", "nb201",
             "--data", "simulated", "--trials", "10", "--heartbeat-ms", "100", "--liveness", "3"},
            log);
  const pid_t first = spawn(worker_args(endpoint, "same", "3600"), log);
  REQUIRE(await_running(db, "same") == 0);
  kill(first, SIGKILL);
  waitpid(first, nullptr, 0);
  // Its successor takes over the identity at once, so no heartbeat is missed:
  // only the heartbeat's list of running attempts tells the trial is gone.
  const pid_t second = spawn(worker_args(endpoint, "same", "0.01"), log);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(second) == 0);
  const Tally t = tally(db);
  CHECK(t.done == 10);
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT attempt FROM trials WHERE number = 0");
  REQUIRE(s.step());
  CHECK(s.column_int64(0) == 1);
}

TEST_CASE(
    "faults: a worker killed mid-attempt of a warm-started child loses nothing: the child "
    "trains again from its parent's weights") {
  const minas::test::TempDir dir("fault-inherit");
  const std::string d = dir.file("digits");
  minas::test::write_idx_folder(d, 300, 4);
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"epochs": 1, "val_size": 60, "batch": 32, "threads": 1})";
  // The victim answers from a table of every architecture of the space, after an hour: the
  // kill surely lands while it runs a child, however late it comes. A worker is lost after 5 s
  // of silence, as by default: the training worker's heartbeats stall on a loaded machine.
  const std::string table = dir.file("all.csv");
  {
    std::ofstream t(table);
    t << "arch,acc\n";
    const minas::Space space = minas::Space::load("small:input=1x12x12");
    space.enumerate([&](const minas::Arch& a) {
      t << space.key(a) << ",50\n";
      return true;
    });
  }
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl = spawn({"controller",
                           "--db",
                           db,
                           "--bind",
                           endpoint,
                           "--name",
                           "inh",
                           "--space",
                           "small:input=1x12x12",
                           "--data",
                           d,
                           "--recipe",
                           recipe,
                           "--trials",
                           "8",
                           "--fidelity",
                           "1",
                           "--strategy",
                           "evolution",
                           "--population",
                           "3",
                           "--tournament",
                           "2",
                           "--inherit",
                           "--heartbeat-ms",
                           "100",
                           "--liveness",
                           "50"},
                          log);
  const pid_t fast = spawn({"worker", "--connect", endpoint, "--name", "fast"}, log);
  await_done(db, 3);  // the first population is in: every trial from now on is a child
  const pid_t victim = spawn({"worker", "--connect", endpoint, "--trainer", "sim", "--table", table,
                              "--metric", "acc", "--delay", "3600", "--name", "victim"},
                             log);
  const int64_t number = await_running(db, "victim");
  kill(victim, SIGKILL);
  waitpid(victim, nullptr, 0);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(fast) == 0);
  const Tally t = tally(db);
  CHECK(t.trials == 8);
  CHECK(t.done == 8);
  CHECK(t.distinct == 8);
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare(
      "SELECT t.attempt, t.parent_id, w.parent_trial_id, w.tensors FROM trials t LEFT JOIN "
      "weight_inheritance w ON w.trial_id = t.id WHERE t.number = " +
      std::to_string(number));
  REQUIRE(s.step());
  CHECK(s.column_int64(0) >= 1);  // the killed attempt ran again
  REQUIRE_FALSE(s.is_null(1));    // a child
  REQUIRE_FALSE(s.is_null(2));    // which inherited all the same
  CHECK(s.column_int64(2) == s.column_int64(1));
  CHECK(s.column_int64(3) > 0);
  // Every child inherited; the states kept for them are gone with the search.
  minas::db::Statement all = c.prepare(
      "SELECT count(*), count(w.trial_id) FROM trials t LEFT JOIN weight_inheritance w ON "
      "w.trial_id = t.id WHERE t.parent_id IS NOT NULL");
  REQUIRE(all.step());
  CHECK(all.column_int64(0) == 5);
  CHECK(all.column_int64(1) == 5);
  CHECK_FALSE(std::filesystem::exists(db + ".parents"));
}

TEST_CASE("faults: --inherit with a strategy that names no parents is refused before any file") {
  const minas::test::TempDir dir("inherit-refused");
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  const pid_t ctl =
      spawn({"controller", "--db", db, "--bind", "tcp://127.0.0.1:" + std::to_string(free_port()),
             "--name", "r", "--space", "nb201", "--data", "simulated", "--fidelity", "1",
             "--strategy", "random", "--inherit"},
            log);
  CHECK(wait_for(ctl) == 1);
  CHECK(minas::test::contains(minas::test::file_text(log), "(evolution), not 'random'"));
  CHECK_FALSE(std::filesystem::exists(db));
}

TEST_CASE("faults: minas search runs a local pool end to end on a small data folder") {
  const minas::test::TempDir dir("search-local");
  // 12x12 random images: the mechanics, not the accuracy.
  const std::string d = dir.path.string();
  minas::test::write_idx_folder(d, 300, 4);
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"epochs": 1, "val_size": 60, "batch": 32, "threads": 1})";
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const pid_t p =
      spawn({"search", "--db", db, "--name", "local", "--space", "small:input=1x12x12", "--data", d,
             "--recipe", recipe, "--trials", "4", "--workers", "2", "--no-final", "--pipeline",
             "classic"},
            log);
  CHECK(wait_for(p) == 0);
  const Tally t = tally(db);
  CHECK(t.trials == 4);
  CHECK(t.done == 4);
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT count(*) FROM workers");
  REQUIRE(s.step());
  CHECK(s.column_int64(0) == 2);

  // The same search data parallel: each trial on two slots of one worker.
  const pid_t dp = spawn({"search", "--db", db, "--name", "dp", "--space", "small:input=1x12x12",
                          "--data", d, "--recipe", recipe, "--trials", "3", "--workers", "1",
                          "--gpus-per-trial", "2", "--no-final", "--pipeline", "classic"},
                         log);
  CHECK(wait_for(dp) == 0);
  minas::db::Connection after = minas::db::open_store_readonly(db);
  minas::db::Statement q = after.prepare(
      "SELECT count(*), sum(t.device = 'cpu,cpu.1') FROM trials t JOIN experiments e ON "
      "e.id = t.experiment_id WHERE e.name = 'dp' AND t.status = 'done'");
  REQUIRE(q.step());
  CHECK(q.column_int64(0) == 3);
  CHECK(q.column_int64(1) == 3);
}

TEST_CASE("faults: minas search --pipeline screened sets what it stands for, where not given") {
  const minas::test::TempDir dir("search-pipeline");
  const std::string d = dir.path.string();
  minas::test::write_idx_folder(d, 300, 4);
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"epochs": 1, "val_size": 60, "batch": 32, "threads": 1})";
  const std::string db = dir.file("minas.db"), log = dir.file("log");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  auto search = [&](const std::string& name, std::vector<std::string> more) {
    std::vector<std::string> args = {"search",
                                     "--db",
                                     db,
                                     "--name",
                                     name,
                                     "--space",
                                     "small:input=1x12x12",
                                     "--data",
                                     d,
                                     "--recipe",
                                     recipe,
                                     "--trials",
                                     "3",
                                     "--fidelity",
                                     "1",
                                     "--workers",
                                     "2",
                                     "--no-final",
                                     "--pipeline",
                                     "screened",
                                     "--screen-batch",
                                     "10"};
    args.insert(args.end(), more.begin(), more.end());
    CHECK(wait_for(spawn(args, log)) == 0);
  };
  // Given: the strategy and the screen count; from the pipeline: trials of a
  // quarter of their epoch, planned as short runs, without ASHA.
  search("given", {"--strategy", "random", "--screen", "20"});
  // Given: no early stopping, asked for: trials keep whole epochs.
  search("no-asha", {"--no-asha", "--screen", "15"});
  // Given: ASHA's rungs: trials keep whole epochs, judged at the quarter.
  search("rungs", {"--asha-rungs", "0.25", "--screen", "10"});
  minas::db::Connection c = minas::db::open_store_readonly(db);
  auto count = [&](const std::string& sql) {
    minas::db::Statement s = c.prepare(sql);
    REQUIRE(s.step());
    return s.column_int64(0);
  };
  auto strategy = [&](const std::string& name) {
    minas::db::Statement s = c.prepare("SELECT strategy FROM experiments WHERE name = ?");
    s.bind_text(1, name);
    REQUIRE(s.step());
    return s.column_text(0);
  };
  const std::string of = " JOIN experiments e ON e.id = x.experiment_id WHERE e.name = ";
  CHECK(strategy("given") == "random");
  CHECK(strategy("no-asha") == "predictor");
  // The trials' recipe, as stored: a quarter of the run, its schedule planned over it.
  auto recipe_of = [&](const std::string& name) {
    minas::db::Statement s = c.prepare("SELECT recipe FROM experiments WHERE name = ?");
    s.bind_text(1, name);
    REQUIRE(s.step());
    return nlohmann::json::parse(s.column_text(0));
  };
  CHECK(recipe_of("given").value("run_fraction", 1.0) == doctest::Approx(0.25));
  CHECK(recipe_of("given").value("fraction_schedule", "") == "short");
  CHECK(recipe_of("no-asha").value("run_fraction", 1.0) == 1.0);
  CHECK(recipe_of("rungs").value("run_fraction", 1.0) == 1.0);
  // Scored by the pipeline's synflow+params: a row of each per architecture.
  for (const char* evaluator : {"synflow", "params"}) {
    const std::string by = std::string(" AND x.evaluator = '") + evaluator + "'";
    CHECK(count("SELECT count(*) FROM screening_scores x" + of + "'given'" + by) == 20);
    CHECK(count("SELECT count(*) FROM screening_scores x" + of + "'no-asha'" + by) == 15);
  }
  CHECK(count("SELECT count(*) FROM screening_scores x" + of + "'given'") == 40);
  const std::string sub =
      "SELECT count(*) FROM sub_epochs s JOIN trials x ON x.id = s.trial_id" + of;
  CHECK(count(sub + "'rungs' AND s.at = 0.25") >= 1);
  // Every trial ended done or pruned: a result after validations inside an epoch is accepted.
  CHECK(count("SELECT count(*) FROM trials x" + of + "'rungs' AND x.status = 'done'") >= 1);
  CHECK(count("SELECT count(*) FROM trials x" + of +
              "'rungs' AND x.status IN ('done', 'pruned')") == 3);
  // Short trials: no rungs, each done with its one (partial) epoch's figures.
  CHECK(count(sub + "'given'") == 0);
  CHECK(count("SELECT count(*) FROM trials x" + of + "'given' AND x.status = 'done'") == 3);
  CHECK(count("SELECT count(*) FROM epochs p JOIN trials x ON x.id = p.trial_id" + of +
              "'given' AND p.epoch = 1 AND p.val_acc IS NOT NULL") == 3);
  CHECK(count(sub + "'no-asha'") == 0);
  // The time-aware reward with a quarter epoch's exponent, for short trials
  // only: whole-epoch trials (ASHA asked for) learn on another curve.
  auto objective = [&](const std::string& name) {
    minas::db::Statement s =
        c.prepare("SELECT strategy_settings, objective FROM experiments WHERE name = ?");
    s.bind_text(1, name);
    REQUIRE(s.step());
    const nlohmann::json settings = nlohmann::json::parse(s.column_text(0));
    // The stored objective's name says what the score is.
    CHECK((s.column_text(1) == "1-(1-val_acc)*train_seconds^a") ==
          settings.value("objective", nlohmann::json::object()).contains("time_exponent"));
    return settings.value("objective", nlohmann::json::object());
  };
  CHECK(objective("given").value("time_exponent", 0.0) == doctest::Approx(0.237));
  CHECK_FALSE(objective("no-asha").contains("time_exponent"));
  CHECK_FALSE(objective("rungs").contains("time_exponent"));
}

TEST_CASE(
    "faults: a worker without the data set fetches it from the controller once and keeps it") {
  const minas::test::TempDir dir("fetch");
  const std::string data = dir.file("digits"), moved = dir.file("elsewhere");
  minas::test::write_idx_folder(data, 300, 6, minas::data::Compression::Gzip);
  const std::string fingerprint = minas::data::load_dataset(data).train.fingerprint();
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"epochs": 1, "val_size": 60, "batch": 32, "threads": 1})";
  const std::string db = dir.file("minas.db"), log = dir.file("log"), cache = dir.file("cache");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl = spawn({"controller", "--db", db, "--bind", endpoint, "--name", "fetch",
                           "--space", "small:input=1x12x12", "--data", data, "--recipe", recipe,
                           "--trials", "3", "--heartbeat-ms", "100"},
                          log);
  // Once the controller has read the files it fingerprinted (it marks the experiment running
  // only after), they vanish from where the trials say they are, as on a worker machine that
  // never had them.
  REQUIRE_MESSAGE(eventually([&] {
                    return store_int(db,
                                     "SELECT count(*) FROM experiments WHERE status = "
                                     "'running'")
                               .value_or(0) > 0;
                  }),
                  "waited " << kHangGuard.count() << " s for the experiment to be running");
  std::filesystem::rename(data, moved);
  setenv("MINAS_DATA_CACHE", cache.c_str(), 1);
  const pid_t w = spawn({"worker", "--connect", endpoint, "--name", "far"}, log);
  unsetenv("MINAS_DATA_CACHE");
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(w) == 0);
  const Tally t = tally(db);
  CHECK(t.done == 3);
  const auto kept = std::filesystem::path(cache) / ("digits-" + fingerprint);
  CHECK(std::filesystem::exists(kept / "train-images-idx3-ubyte"));  // gzip inside, as sent
  CHECK(minas::data::load_dataset(kept.string()).train.fingerprint() == fingerprint);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t fetches = 0;
  for (size_t at = text.find("fetching it from the controller"); at != std::string::npos;
       at = text.find("fetching it from the controller", at + 1))
    ++fetches;
  CHECK(fetches == 1);  // once, then kept for the other trials
}

TEST_CASE(
    "faults: minas controller reads an experiment file, flags override it, bad fields refused") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("experiment-file");
  const std::string db = dir.file("minas.db"), log = dir.file("log"), exp = dir.file("exp.json");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  std::ofstream(exp) << R"({"name": "from-file", "space": "nb201", "data": "simulated",
                            "strategy": "random", "trials": 50, "seed": 3,
                            "recipe": {"epochs": 2}})";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl = spawn({"controller", "--db", db, "--bind", endpoint, "--experiment", exp,
                           "--trials", "7", "--heartbeat-ms", "100"},
                          log);
  const pid_t w = spawn(worker_args(endpoint, "w", "0.001"), log);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(w) == 0);
  CHECK(tally(db).done == 7);  // --trials 7 beat the file's 50
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT name, space, recipe FROM experiments");
  REQUIRE(s.step());
  CHECK(s.column_text(0) == "from-file");
  CHECK(s.column_text(1) == "nb201");
  CHECK(minas::test::contains(s.column_text(2), "\"epochs\":2"));

  std::ofstream(exp) << R"({"name": "x", "trails": 5})";
  const minas::test::Run bad =
      minas::test::run_minas("controller --db " + db + " --experiment " + exp);
  CHECK(bad.status != 0);
  CHECK(minas::test::contains(bad.out, "exp.json: /trails: unknown field 'trails'"));
}

TEST_CASE(
    "faults: minas controller runs the file's strategy, objective and ASHA, a resume with "
    "other settings is refused") {
  if (!minas::test::have_external(minas::test::nb201_table())) return;
  const minas::test::TempDir dir("experiment-strategy");
  const std::string db = dir.file("minas.db"), log = dir.file("log"), exp = dir.file("exp.json");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  std::ofstream(exp) << R"({"name": "evo", "space": "nb201", "data": "simulated",
                            "strategy": "evolution", "trials": 30, "seed": 3, "fidelity": 4,
                            "strategy_settings": {"population": 6, "tournament": 2},
                            "objective": {"max_macs": 60000000},
                            "asha": {"eta": 3, "rungs": [1, 2]}})";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  const pid_t ctl = spawn({"controller", "--db", db, "--bind", endpoint, "--experiment", exp,
                           "--tournament", "3", "--heartbeat-ms", "100"},
                          log);
  const pid_t w = spawn(worker_args(endpoint, "w", "0.02"), log);
  CHECK(wait_for(ctl) == 0);
  CHECK(wait_for(w) == 0);
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT strategy, strategy_settings FROM experiments");
  REQUIRE(s.step());
  CHECK(s.column_text(0) == "evolution");
  const auto settings = nlohmann::json::parse(s.column_text(1));
  CHECK(settings["population"] == 6);
  CHECK(settings["tournament"] == 3);  // the flag beat the file
  CHECK(settings["objective"]["max_macs"] == 60000000.0);
  CHECK(settings["asha"]["rungs"] == nlohmann::json::array({1, 2}));
  minas::db::Statement t =
      c.prepare("SELECT count(*), sum(status = 'pruned'), max(macs), count(parent_id) FROM trials");
  REQUIRE(t.step());
  CHECK(t.column_int64(0) == 30);
  CHECK(t.column_int64(1) > 0);
  CHECK(t.column_int64(2) <= 60000000);
  CHECK(t.column_int64(3) > 0);

  const minas::test::Run other = minas::test::run_minas("controller --db " + db + " --experiment " +
                                                        exp + " --strategy reinforce");
  CHECK(other.status != 0);
  CHECK(minas::test::contains(other.out, "experiment 'evo'"));
  CHECK(minas::test::contains(other.out, "resume it with the same ones or pick a new name"));

  std::ofstream(exp) << R"({"name": "x", "space": "nb201", "data": "simulated", "fidelity": 2,
                            "asha": {"rungs": [1, 2]}})";
  const minas::test::Run late =
      minas::test::run_minas("controller --db " + db + " --experiment " + exp);
  CHECK(late.status != 0);
  CHECK(minas::test::contains(late.out, "every rung must lie below the trials' 2 epochs"));

  std::ofstream(exp) << R"({"name": "x", "objective": {"max_params": "many"}})";
  const minas::test::Run bad =
      minas::test::run_minas("controller --db " + db + " --experiment " + exp);
  CHECK(bad.status != 0);
  CHECK(minas::test::contains(bad.out, "exp.json: /objective/max_params: must be a number > 0"));
}

TEST_CASE("faults: minas search runs the whole path: search, final training, export, report") {
  const minas::test::TempDir dir("search-e2e");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 400, 7);
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"val_size": 80, "batch": 32, "threads": 1})";
  const std::string db = dir.file("minas.db"), log = dir.file("log"), out = dir.file("out");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  // The default pipeline (screened) but the budget and its screen count (300 of these small
  // nets, so that a loaded machine still trains trials in the search's 20 s): the predictor
  // with ASHA (the file's "no_asha": false asks for it: trials keep whole epochs), then the
  // final training chosen for its time. The budget comes from an experiment file, whose
  // "workers" the command line overrides.
  const std::string exp = dir.file("exp.json");
  std::ofstream(exp)
      << R"({"budget": "40s", "final_epochs": 2, "workers": 1, "no_asha": false, "screen": 300})";
  const pid_t p =
      spawn({"search", "--db", db, "--name", "e2e", "--space", "small:input=1x12x12", "--data", d,
             "--recipe", recipe, "--experiment", exp, "--workers", "2", "--out", out},
            log);
  CHECK(wait_for(p, std::chrono::seconds(300)) == 0);  // a 40 s budget, then the final training
  const Tally t = tally(db);
  CHECK(t.done >= 3);
  {
    minas::db::Connection c = minas::db::open_store_readonly(db);
    minas::db::Statement w = c.prepare("SELECT count(*) FROM workers");
    REQUIRE(w.step());
    CHECK(w.column_int64(0) == 2);  // --workers 2 beat the file's 1
    minas::db::Statement e = c.prepare("SELECT strategy, recipe FROM experiments");
    REQUIRE(e.step());
    CHECK(e.column_text(0) == "predictor");  // the default pipeline's
    // ASHA asked for without rungs: whole epochs, the fidelity's default 3 (1 leaves no rung)
    CHECK(nlohmann::json::parse(e.column_text(1)).value("run_fraction", 1.0) == 1.0);
    minas::db::Statement f = c.prepare("SELECT max(fidelity) FROM trials");
    REQUIRE(f.step());
    CHECK(f.column_int64(0) == 3);
  }
  for (const char* f : {"arch.json", "model.ckpt", "model.onnx", "report.md"})
    CHECK_MESSAGE(std::filesystem::exists(std::filesystem::path(out) / f), f);
  std::ifstream report(std::filesystem::path(out) / "report.md");
  const std::string text((std::istreambuf_iterator<char>(report)), {});
  CHECK(minas::test::contains(text, "test accuracy"));
  CHECK(minas::test::contains(text, "## Top 5 by validation accuracy"));
  CHECK(minas::test::contains(text, "accepted by ONNX's checker"));
  // Reproduce: every option given, from the command line or the file, and the seed.
  for (const std::string& part : std::vector<std::string>{
           "minas search --db " + db, "--space small:input=1x12x12", "--experiment " + exp,
           "--workers 2", "--budget 40s", "--final-epochs 2", "--seed 0", "--strategy predictor",
           "--final-pick final-time"})
    CHECK_MESSAGE(minas::test::contains(text, part), part);
  CHECK_FALSE(minas::test::contains(text, "--no-asha"));  // the file's false sets nothing

  // minas predict classifies image files with the export as the runtime does: the test images
  // as PNG files, predicted one by one, get the runtime's classes (the exported weights run
  // here on the IDX pixels) and the reported test accuracy.
  const minas::data::TrainTest data = minas::data::load_dataset(d);
  std::ifstream model_json(std::filesystem::path(out) / "model.json");
  const nlohmann::json info = nlohmann::json::parse(model_json);
  const minas::Space space = minas::Space::load(info.at("space_ref").get<std::string>());
  minas::Model model(space.lower(space.parse_key(info.at("arch").get<std::string>())), 0);
  minas::load_weights(model,
                      minas::load_checkpoint((std::filesystem::path(out) / "model.ckpt").string()));
  auto backend = minas::make_cpu_backend(1);
  auto net = backend->compile(model, 1, minas::NetMode::eval, {});
  minas::data::Normalization norm;
  norm.mean = info.at("normalization").at("mean").get<std::vector<float>>();
  norm.stddev = info.at("normalization").at("stddev").get<std::vector<float>>();
  const std::string pngs = dir.file("png");
  std::filesystem::create_directories(pngs);
  std::string args = "predict --model " + out;
  for (size_t i = 0; i < data.test.size(); ++i) {
    const std::string png = pngs + "/" + std::to_string(i) + ".png";
    minas::adapt::write_png(png, 12, 12, 1, data.test.image(i));
    args += " " + png;
  }
  const minas::test::Run pred = minas::test::run_minas(args);
  REQUIRE(pred.status == 0);
  std::istringstream lines(pred.out);
  std::string line;
  size_t n = 0, correct = 0, same = 0;
  while (std::getline(lines, line)) {
    const size_t tab = line.find('\t'), tab2 = line.rfind('\t');
    REQUIRE(tab != std::string::npos);
    CHECK(line.substr(0, tab) == pngs + "/" + std::to_string(n) + ".png");
    const double p = std::stod(line.substr(tab2 + 1));
    CHECK((p > 0.09 && p <= 1.0));  // at least the uniform 1/10
    const int predicted = std::stoi(line.substr(tab + 1, tab2 - tab - 1));
    correct += predicted == data.test.labels[n];
    std::vector<float> x(144), logits(10);
    const std::vector<uint32_t> one = {static_cast<uint32_t>(n)};
    minas::data::normalize(data.test, one, norm, x.data());
    net->infer(x.data(), logits.data());
    same += predicted == std::max_element(logits.begin(), logits.end()) - logits.begin();
    ++n;
  }
  CHECK(n == data.test.size());
  CHECK(same == n);
  CHECK(std::abs(static_cast<double>(correct) / static_cast<double>(n) -
                 info.at("test_acc").get<double>()) <= 1.5 / static_cast<double>(n));
  const minas::test::Run no_model = minas::test::run_minas("predict --model " + pngs + " x.png");
  CHECK(no_model.status != 0);
  CHECK(minas::test::contains(no_model.out, "model.json: cannot be read"));

  const minas::test::Run bad = minas::test::run_minas("search --budget 20x --db " + db);
  CHECK(bad.status != 0);
  CHECK(minas::test::contains(bad.out, "--budget 20x: unknown unit 'x'"));
}

TEST_CASE("faults: Ctrl-C stops minas search cleanly and says how to resume, --resume continues") {
  const minas::test::TempDir dir("search-sigint");
  const std::string d = dir.file("data");
  minas::test::write_idx_folder(d, 400, 8);
  const std::string recipe = dir.file("recipe.json");
  std::ofstream(recipe) << R"({"val_size": 80, "batch": 32, "threads": 1})";
  const std::string db = dir.file("minas.db"), log = dir.file("log"), out = dir.file("out");
  INFO("the processes' log:\n" << minas::test::file_text(log));  // read when a check fails
  const std::vector<std::string> args{
      "search",   "--db", db,          "--space", "small:input=1x12x12", "--data", d,
      "--recipe", recipe, "--workers", "2",       "--final-epochs",      "1",      "--out",
      out,        "--pipeline", "classic"};
  std::vector<std::string> first = args;
  first.insert(first.end(), {"--budget", "10m"});
  const pid_t p = spawn(first, log);
  // Wait for a few finished trials, then Ctrl-C.
  await_done(db, 2);
  kill(p, SIGINT);
  CHECK(wait_for(p) == 0);
  const Tally before = tally(db);
  CHECK(before.done >= 2);
  double spent = 0;
  {
    minas::db::Connection c = minas::db::open_store_readonly(db);
    minas::db::Statement s = c.prepare("SELECT seconds_run, status FROM experiments");
    REQUIRE(s.step());
    spent = s.column_double(0);
    CHECK(spent > 0);  // what the resumed budget subtracts
    CHECK(s.column_text(1) == "stopped");
  }
  CHECK_FALSE(std::filesystem::exists(out));  // stopped: no final training
  {
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    CHECK(minas::test::contains(text, "continue with: minas search --resume"));
  }
  // A budget that leaves the resumed search twice the time the first part took for its
  // trials (whatever this machine's pace), after the part spent and the final training's
  // default share (0.3).
  const int budget = static_cast<int>(std::ceil(3 * spent / (1 - 0.3))) + 1;
  std::vector<std::string> again = args;
  again.insert(again.end(), {"--resume", "--budget", std::to_string(budget) + "s"});
  const pid_t q = spawn(again, log);
  CHECK(wait_for(q, std::chrono::seconds(120 + budget)) == 0);  // the budget, then the final
  const Tally after = tally(db);
  CHECK(after.done > before.done);  // the same experiment went on
  minas::db::Connection c = minas::db::open_store_readonly(db);
  minas::db::Statement s = c.prepare("SELECT count(*) FROM experiments");
  REQUIRE(s.step());
  CHECK(s.column_int64(0) == 1);
  CHECK(std::filesystem::exists(std::filesystem::path(out) / "report.md"));
}

TEST_CASE("faults: two worker processes train two-slot trials as gangs, to one worker's bits") {
  // Real CPU training of small networks on synthetic images, each trial data
  // parallel over two slots: first on two worker processes of one slot each
  // (ranks over the socket group across processes), then on one process with
  // two slots (the in-process group). The same search gives the same
  // validation accuracy, trial by trial, to the bit.
  const minas::test::TempDir dir("fault-gang");
  const std::string data = dir.file("synthetic"), recipe = dir.file("recipe.json");
  minas::test::write_idx_folder(data, 240, 13);
  {
    std::ofstream out(recipe);
    out << R"({"epochs": 1, "val_size": 40, "batch": 16, "threads": 1})";
  }
  auto search = [&](const std::string& tag, const std::vector<std::vector<std::string>>& workers) {
    const std::string db = dir.file(tag + ".db"), log = dir.file(tag + ".log");
    const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
    const pid_t ctl = spawn({"controller",
                             "--db",
                             db,
                             "--bind",
                             endpoint,
                             "--name",
                             "g",
                             "--space",
                             "mobile:input=1x12x12,stem.channels=8,head.channels=16",
                             "--data",
                             data,
                             "--recipe",
                             recipe,
                             "--strategy",
                             "random",
                             "--seed",
                             "4",
                             "--trials",
                             "2",
                             "--gpus-per-trial",
                             "2",
                             "--heartbeat-ms",
                             "200"},
                            log);
    std::vector<pid_t> pids;
    for (const auto& w : workers) {
      std::vector<std::string> args{"worker", "--connect", endpoint, "--advertise", "127.0.0.1"};
      args.insert(args.end(), w.begin(), w.end());
      pids.push_back(spawn(args, log));
    }
    INFO("log:\n"
         << [&] {
              std::ifstream in(log);
              std::stringstream s;
              s << in.rdbuf();
              return s.str();
            }());
    CHECK(wait_for(ctl) == 0);
    for (const pid_t p : pids) CHECK(wait_for(p) == 0);
    minas::db::Connection c = minas::db::open_store_readonly(db);
    minas::db::Statement s =
        c.prepare("SELECT number, val_acc, device FROM trials WHERE status = 'done'");
    std::map<int64_t, std::pair<double, std::string>> out;
    while (s.step()) out[s.column_int64(0)] = {s.column_double(1), s.column_text(2)};
    return out;
  };
  const auto spread = search(
      "spread", {{"--devices", "cpu:1", "--name", "a"}, {"--devices", "cpu:1", "--name", "b"}});
  const auto together = search("together", {{"--devices", "cpu:1,cpu:1", "--name", "ab"}});
  REQUIRE(spread.size() == 2);
  REQUIRE(together.size() == 2);
  for (const auto& [number, r] : spread) {
    CAPTURE(number);
    CHECK(minas::test::contains(r.second, "a:cpu"));
    CHECK(minas::test::contains(r.second, "b:cpu"));
    CHECK(r.first == together.at(number).first);
  }
}
