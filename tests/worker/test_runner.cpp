// Trial runners: the real CPU one on a small IDX folder, the simulated one on
// the NAS-Bench-201 table.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "searchspace/rng.h"
#include "searchspace/space.h"
#include "tests/support.h"
#include "tests/trainer/synthetic.h"
#include "trainer/data.h"
#include "worker/runner.h"

using namespace minas;

namespace {

// A folder of IDX files of random 12x12 images, 10 classes.
void write_folder(const std::string& dir, size_t n) {
  test::write_idx_folder(dir, n, 3);
}

TrialRequest request(const std::string& dir) {
  TrialRequest r;
  r.trial = 4;
  r.space = Space::load("small:input=1x12x12").spec();
  r.arch = "16|32|conv_k3|skip|64|conv_k3|skip";
  r.recipe = {{"epochs", 1}, {"val_size", 40}, {"threads", 1}, {"batch", 32}};
  r.data = dir;
  r.fidelity = 2;
  return r;
}

}  // namespace

TEST_CASE("runner: the CPU runner trains, reports each epoch, and fails cleanly on bad input") {
  const test::TempDir dir("runner");
  write_folder(dir.path.string(), 200);
  auto runner = make_cpu_runner();
  std::vector<int> epochs;
  const TrialOutcome ok = runner->run(
      request(dir.path.string()),
      [&](int e, const nlohmann::json& m) {
        epochs.push_back(e);
        CHECK(m.contains("train_loss"));
      },
      [] { return false; });
  REQUIRE(ok.kind == TrialOutcome::Kind::done);
  CHECK(epochs == std::vector<int>{1, 2});  // the fidelity, not the recipe's 1 epoch
  CHECK(ok.metrics["params"] == 24058);
  CHECK(ok.metrics["val_acc"].get<double>() >= 0.0);

  TrialRequest bad = request(dir.path.string());
  bad.arch = "16|32|conv_k9|skip|64|conv_k3|skip";
  TrialOutcome f = runner->run(
      bad, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(f.kind == TrialOutcome::Kind::failed);
  CHECK_FALSE(f.retryable);
  CHECK(test::contains(f.reason, "conv_k9"));

  bad = request(dir.path.string());
  bad.data_fingerprint = "0000000000000000";
  f = runner->run(
      bad, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(f.kind == TrialOutcome::Kind::failed);
  CHECK(test::contains(f.reason, "fingerprint"));

  bad = request(dir.path.string());
  bad.recipe["learning_rate"] = 0.1;
  f = runner->run(
      bad, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(test::contains(f.reason, "learning_rate"));

  int polls = 0;
  const TrialOutcome c = runner->run(
      request(dir.path.string()), [](int, const nlohmann::json&) {}, [&] { return ++polls > 3; });
  CHECK(c.kind == TrialOutcome::Kind::cancelled);
}

TEST_CASE("runner: the CPU runner reports validations inside an epoch with their point") {
  const test::TempDir dir("runner-points");
  write_folder(dir.path.string(), 200);
  auto runner = make_cpu_runner();
  TrialRequest req = request(dir.path.string());
  req.validate_at = {0.5, 1.25};  // ASHA's fractional rungs, as the train message lists them
  std::vector<std::pair<int, double>> seen;  // (epoch, at; 0 for a whole epoch)
  const TrialOutcome ok = runner->run(
      req,
      [&](int e, const nlohmann::json& m) {
        seen.emplace_back(e, m.value("at", 0.0));
        CHECK(m["val_acc"].is_number());
      },
      [] { return false; });
  REQUIRE(ok.kind == TrialOutcome::Kind::done);
  CHECK(seen == std::vector<std::pair<int, double>>{{1, 0.5}, {1, 0.0}, {2, 1.25}, {2, 0.0}});
  // The result holds scalars only, as a result message must: the points went out as progress.
  for (auto it = ok.metrics.begin(); it != ok.metrics.end(); ++it)
    CHECK_MESSAGE(!it.value().is_structured(), it.key());
}

TEST_CASE("runner: latency is measured on the request's latency device, not the training one") {
  const test::TempDir dir("runner-latency");
  write_folder(dir.path.string(), 200);
  auto runner = make_cpu_runner();
  TrialRequest r = request(dir.path.string());
  r.fidelity = 1;
  r.threads = 2;  // trains on two threads
  r.latency_device = "cpu:1";
  const TrialOutcome ok = runner->run(
      r, [](int, const nlohmann::json&) {}, [] { return false; });
  REQUIRE(ok.kind == TrialOutcome::Kind::done);
  CHECK(ok.metrics["latency_device"] == "cpu:1");
  CHECK(ok.metrics["latency_ms"].get<double>() > 0);
  // Without one, the latency is the training device's and no device is named.
  r.latency_device.clear();
  const TrialOutcome plain = runner->run(
      r, [](int, const nlohmann::json&) {}, [] { return false; });
  REQUIRE(plain.kind == TrialOutcome::Kind::done);
  CHECK_FALSE(plain.metrics.contains("latency_device"));
  CHECK(plain.metrics["latency_ms"].get<double>() > 0);
  // A device this worker cannot measure on fails the attempt, naming it.
  r.latency_device = "tpu:0";
  const TrialOutcome bad = runner->run(
      r, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(bad.kind == TrialOutcome::Kind::failed);
  CHECK(test::contains(bad.reason, "tpu:0"));
}

TEST_CASE("runner: the CPU runner hands over its state at an epoch and continues from it exactly") {
  const test::TempDir dir("runner-state");
  write_folder(dir.path.string(), 200);
  auto runner = make_cpu_runner();
  TrialRequest straight = request(dir.path.string());
  straight.fidelity = 3;
  std::string state;
  straight.checkpoint_epochs = {1};
  straight.on_checkpoint = [&](int epoch, std::string bytes) {
    CHECK(epoch == 1);
    state = std::move(bytes);
  };
  std::map<int, double> losses;
  const TrialOutcome a = runner->run(
      straight, [&](int e, const nlohmann::json& m) { losses[e] = m["train_loss"].get<double>(); },
      [] { return false; });
  REQUIRE(a.kind == TrialOutcome::Kind::done);
  REQUIRE(state.size() > 24058 * 4);  // weights and momentum at least

  TrialRequest resumed = request(dir.path.string());
  resumed.fidelity = 3;
  resumed.attempt = 1;
  resumed.resume = state;
  resumed.resume_epoch = 1;
  std::vector<int> epochs;
  const TrialOutcome b = runner->run(
      resumed,
      [&](int e, const nlohmann::json& m) {
        epochs.push_back(e);
        CHECK(m["train_loss"].get<double>() == losses[e]);
      },
      [] { return false; });
  REQUIRE(b.kind == TrialOutcome::Kind::done);
  CHECK(epochs == std::vector<int>{2, 3});
  CHECK(b.metrics["val_acc"] == a.metrics["val_acc"]);
  CHECK(b.metrics["test_acc"] == a.metrics["test_acc"]);

  // A state that cannot be used (damaged, or of another network) is dropped:
  // the attempt trains from scratch and says why.
  TrialRequest damaged = resumed;
  damaged.resume[damaged.resume.size() / 2] ^= 0x55;
  epochs.clear();
  TrialOutcome f = runner->run(
      damaged, [&](int e, const nlohmann::json&) { epochs.push_back(e); }, [] { return false; });
  CHECK(f.kind == TrialOutcome::Kind::done);
  CHECK(epochs == std::vector<int>{1, 2, 3});
  CHECK(test::contains(f.metrics["resume_refused"].get<std::string>(), "checksum"));
  TrialRequest other = resumed;
  other.arch = "16|32|conv_k5|skip|64|conv_k3|skip";
  f = runner->run(
      other, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(f.kind == TrialOutcome::Kind::done);
  CHECK(test::contains(f.metrics["resume_refused"].get<std::string>(), "architecture"));
}

TEST_CASE("runner: a warm-started attempt inherits its parent's unchanged layers and says so") {
  const test::TempDir dir("runner-inherit");
  write_folder(dir.path.string(), 200);
  auto runner = make_cpu_runner();
  TrialRequest parent = request(dir.path.string());
  std::string state;
  parent.checkpoint_epochs = {2};  // its last epoch: the state children inherit
  parent.on_checkpoint = [&](int, std::string bytes) { state = std::move(bytes); };
  const TrialOutcome p = runner->run(
      parent, [](int, const nlohmann::json&) {}, [] { return false; });
  REQUIRE(p.kind == TrialOutcome::Kind::done);
  REQUIRE_FALSE(state.empty());
  CHECK_FALSE(p.metrics.contains("inherited_from"));  // it inherited nothing

  // One op changed: stage2.layer1 conv_k3 -> sep_k3.
  TrialRequest child = request(dir.path.string());
  child.trial = 5;
  child.arch = "16|32|conv_k3|skip|64|sep_k3|skip";
  child.inherit = state;
  child.inherit_trial = 4;
  child.inherit_epoch = 2;
  std::string child_state;
  child.checkpoint_epochs = {1};
  child.on_checkpoint = [&](int, std::string bytes) { child_state = std::move(bytes); };
  const TrialOutcome c = runner->run(
      child, [](int, const nlohmann::json&) {}, [] { return false; });
  REQUIRE(c.kind == TrialOutcome::Kind::done);
  CHECK(c.metrics["inherited_from"] == 4);
  CHECK(c.metrics["inherited_epoch"] == 2);
  // The stem's conv and BN (1 + 4 tensors) and the head's linear layer (2): stage1's conv
  // inherits too, stage2's separable block does not.
  CHECK(c.metrics["inherited_tensors"] == 1 + 4 + 1 + 4 + 2);
  const int64_t inherited = c.metrics["inherited_params"].get<int64_t>();
  CHECK(inherited > 0);
  CHECK(inherited < c.metrics["params"].get<int64_t>());
  CHECK_FALSE(c.metrics.contains("inherit_refused"));

  // An attempt resumed from the child's own state reports what the child inherited.
  TrialRequest resumed = child;
  resumed.attempt = 1;
  resumed.resume = child_state;
  resumed.resume_epoch = 1;
  const TrialOutcome r = runner->run(
      resumed, [](int, const nlohmann::json&) {}, [] { return false; });
  REQUIRE(r.kind == TrialOutcome::Kind::done);
  CHECK_FALSE(r.metrics.contains("resume_refused"));
  CHECK(r.metrics["inherited_from"] == 4);
  CHECK(r.metrics["inherited_tensors"] == c.metrics["inherited_tensors"]);

  // A parent's state that cannot be used: the attempt trains from scratch and says why.
  TrialRequest damaged = child;
  damaged.inherit[damaged.inherit.size() / 2] ^= 0x55;
  TrialOutcome f = runner->run(
      damaged, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(f.kind == TrialOutcome::Kind::done);
  CHECK_FALSE(f.metrics.contains("inherited_from"));
  CHECK(test::contains(f.metrics["inherit_refused"].get<std::string>(), "checksum"));
  TrialRequest other_epoch = child;
  other_epoch.inherit_epoch = 1;
  f = runner->run(
      other_epoch, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(test::contains(f.metrics["inherit_refused"].get<std::string>(), "not of epoch 1"));
}

TEST_CASE("runner: the CPU runner trains one trial data parallel over several slots") {
  const test::TempDir dir("runner-ranks");
  write_folder(dir.path.string(), 300);
  auto runner = make_cpu_runner();
  TrialRequest req = request(dir.path.string());
  req.ranks = 2;
  std::vector<int> epochs;
  const TrialOutcome a = runner->run(
      req, [&](int e, const nlohmann::json&) { epochs.push_back(e); }, [] { return false; });
  REQUIRE(a.kind == TrialOutcome::Kind::done);
  CHECK(epochs == std::vector<int>{1, 2});  // rank 0 alone reports
  // 260 training images, 130 a rank, batches of 32: 4 steps an epoch.
  CHECK(a.metrics["steps"] == 8);
  CHECK(a.metrics["test_acc"].is_number());
  const TrialOutcome b = runner->run(
      req, [](int, const nlohmann::json&) {}, [] { return false; });
  CHECK(b.metrics["val_acc"] == a.metrics["val_acc"]);  // deterministic
  std::atomic<int> polls{0};
  const TrialOutcome c = runner->run(
      req, [](int, const nlohmann::json&) {}, [&] { return ++polls > 6; });
  CHECK(c.kind == TrialOutcome::Kind::cancelled);
}

TEST_CASE("runner: the simulated runner answers from the NAS-Bench-201 table") {
  const std::string table = test::nb201_table();
  if (!test::have_external(table)) return;
  auto sim = make_sim_runner(table, "cifar10_valid_12ep", 0.0);
  TrialRequest r;
  r.arch =
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_"
      "connect~2|";
  int calls = 0;
  const TrialOutcome o = sim->run(
      r, [&](int, const nlohmann::json&) { ++calls; }, [] { return false; });
  REQUIRE(o.kind == TrialOutcome::Kind::done);
  CHECK(o.metrics["val_acc"].get<double>() == doctest::Approx(0.82834));  // 82.8340 in the table
  CHECK(calls == 1);
  r.arch = "16|32|conv_k3|skip|64|conv_k3|skip";
  CHECK(sim->run(
               r, [](int, const nlohmann::json&) {}, [] { return false; })
            .kind == TrialOutcome::Kind::failed);

  auto slow = make_sim_runner(table, "cifar10_valid_12ep", 30.0);
  r.arch =
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_"
      "connect~2|";
  int polls = 0;
  CHECK(slow->run(
                r, [](int, const nlohmann::json&) {}, [&] { return ++polls > 5; })
            .kind == TrialOutcome::Kind::cancelled);
  CHECK_THROWS_WITH_AS(make_sim_runner(table, "cifar10_valid_13ep", 0.0),
                       doctest::Contains("no column 'cifar10_valid_13ep'"), Error);
  CHECK_THROWS_AS(make_sim_runner("/nonexistent.csv", "x", 0.0), Error);
}
