// The warm start of minas adapt: architectures from the store's most similar data sets, then a
// fixed portfolio.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "adapt/warm_start.h"
#include "db/store.h"
#include "searchspace/space.h"

using namespace minas;

TEST_SUITE_BEGIN("adapt");

namespace {

adapt::Fingerprint gray28(const std::string& hash) {
  adapt::Fingerprint f;
  f.content_hash = hash;
  f.classes = 10;
  f.images = 1000;
  f.channels = 1;
  f.median_width = f.median_height = 28;
  f.class_shares.assign(10, 0.1);
  f.mean_intensity = {0.3};
  f.intensity_histogram.assign(16, 1.0 / 16);
  return f;
}

adapt::Fingerprint colour224() {
  adapt::Fingerprint f = gray28("c0c0");
  f.classes = 100;
  f.channels = 3;
  f.median_width = f.median_height = 224;
  f.class_shares.assign(100, 0.01);
  f.mean_intensity = {0.5, 0.4, 0.3};
  f.intensity_histogram.assign(16, 0.0);
  f.intensity_histogram[15] = 1.0;
  return f;
}

db::ExperimentSpec spec(const std::string& name) {
  db::ExperimentSpec s;
  s.name = name;
  s.space = "small";
  s.space_json = {{"name", "small"}};
  s.dataset = "/data/" + name;
  s.dataset_fingerprint = "fp-" + name;
  s.strategy = "evolution";
  s.objective = "val_acc";
  return s;
}

// An experiment whose done trials have these architectures and validation accuracies.
void experiment_with(db::Store& store, const std::string& name,
                     const std::vector<std::pair<std::string, double>>& trials) {
  const int64_t e = store.create_experiment(spec(name), 1.0);
  db::Writer w(store);
  for (const auto& [arch, val] : trials) {
    db::NewTrial t;
    t.experiment_id = e;
    t.arch_key = arch;
    t.arch_hash = fnv1a64(arch);
    t.arch_json = "{}";
    t.fidelity = 3;
    t.queued_at = 2.0;
    const int64_t id = w.add_trial(t);
    w.start_trial(id, 0, std::nullopt, "cpu", 3.0);
    db::TrialResult r;
    r.trial_id = id;
    r.val_acc = val;
    r.finished_at = 4.0;
    CHECK(w.record_result(r));
  }
  w.commit();
}

void report(db::Store& store, const std::string& experiment, const adapt::Fingerprint& f,
            bool usable = true) {
  db::DataReport r;
  r.experiment = experiment;
  r.location = "/data/" + experiment;
  r.usable = usable;
  r.fingerprint = f.to_json();
  r.created_at = 5.0;
  store.add_data_report(r);
}

}  // namespace

TEST_CASE("warm start: the best of the most similar data sets first, then the portfolio") {
  db::Store store = db::Store::open("", db::OpenMode::Memory);
  experiment_with(store, "shoes", {{"a1", 0.70}, {"a2", 0.90}, {"a3", 0.80}, {"a4", 0.60}});
  experiment_with(store, "photos", {{"p1", 0.99}});
  experiment_with(store, "shirts", {{"s1", 0.95}});
  report(store, "shoes", gray28("5405"));
  report(store, "photos", colour224());
  report(store, "stopped", gray28("0000"), false);  // unusable: never a source
  report(store, "shirts", gray28("5417"));
  report(store, "mine", gray28("1111"));  // the experiment itself: never a source

  const adapt::Fingerprint mine = gray28("1111");
  CHECK(adapt::similarity(mine, gray28("5405")) > 0.99);
  CHECK(adapt::similarity(mine, colour224()) < 0.6);

  adapt::WarmStartSettings one;
  one.sources = 1;
  one.per_source = 3;
  adapt::WarmStart w = adapt::choose_warm_start(store, mine, "mine", {"x1", "a2", "x2"}, one);
  // Equal similarity: the newer report (shirts) wins the one place.
  REQUIRE(w.sources.size() == 1);
  CHECK(w.sources[0].experiment == "shirts");
  CHECK(w.initial == std::vector<std::string>{"s1", "x1", "a2", "x2"});

  adapt::WarmStartSettings two;
  two.sources = 5;
  two.per_source = 3;
  w = adapt::choose_warm_start(store, mine, "mine", {"x1", "a2"}, two);
  REQUIRE(w.sources.size() == 2);  // photos is too different, stopped unusable, mine excluded
  CHECK(w.sources[1].experiment == "shoes");
  CHECK(w.sources[1].archs == std::vector<std::string>{"a2", "a3", "a1"});
  CHECK(w.initial == std::vector<std::string>{"s1", "a2", "a3", "a1", "x1"});

  // An empty store, or nothing similar: the portfolio alone.
  db::Store empty = db::Store::open("", db::OpenMode::Memory);
  w = adapt::choose_warm_start(empty, mine, "mine", {"x1"});
  CHECK(w.sources.empty());
  CHECK(w.initial == std::vector<std::string>{"x1"});
  w = adapt::choose_warm_start(store, colour224(), "mine", {"x1"});
  CHECK(w.sources.size() == 1);  // photos' own fingerprint: the same content
  CHECK(w.initial == std::vector<std::string>{"p1", "x1"});
}
