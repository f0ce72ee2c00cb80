// The trial book's transitions, walked from tables: each row is a story of
// one trial (steps, and the phase and attempt after each), then a table of
// every transition from every phase it must refuse, and what a peer's
// report is checked against (who runs, who ran, reports from before a restart).
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "controller/trial_book.h"

using namespace minas;

namespace {

constexpr int kMax = 3;  // max attempts in these stories

struct Step {
  const char* what;
  std::function<void(TrialBook&)> act;
  Phase phase;  // the trial's phase after the step
  int attempt;  // and its attempt
};

struct Story {
  const char* name;
  bool latency_pool;
  std::vector<Step> steps;
};

void expect_outcome(AttemptEnd got, AttemptEnd want) {
  CHECK(static_cast<int>(got) == static_cast<int>(want));
}

const std::vector<Story>& stories() {
  static const std::vector<Story> table = {
      {"trains and is done",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 10); }, Phase::running, 0},
        {"finish", [](TrialBook& b) { b.finish(1); }, Phase::done, 0}}},
      {"retried up to max attempts, then failed",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 1); }, Phase::running, 0},
        {"lost", [](TrialBook& b) { expect_outcome(b.lose(1, kMax, false), AttemptEnd::requeued); },
         Phase::queued, 1},
        {"start", [](TrialBook& b) { b.start(1, "w2", {"cpu0"}, 2); }, Phase::running, 1},
        {"lost", [](TrialBook& b) { expect_outcome(b.lose(1, kMax, false), AttemptEnd::requeued); },
         Phase::queued, 2},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu1"}, 3); }, Phase::running, 2},
        {"lost at the cap",
         [](TrialBook& b) { expect_outcome(b.lose(1, kMax, false), AttemptEnd::failed); },
         Phase::failed, 2}}},
      {"a failure not worth retrying",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 1); }, Phase::running, 0},
        {"fail", [](TrialBook& b) { b.fail(1); }, Phase::failed, 0}}},
      {"pruned at a rung",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 1); }, Phase::running, 0},
        {"prune", [](TrialBook& b) { b.prune(1); }, Phase::pruned, 0}}},
      {"a stop gives a running attempt back",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 1); }, Phase::running, 0},
        {"lost stopping",
         [](TrialBook& b) { expect_outcome(b.lose(1, kMax, true), AttemptEnd::given_back); },
         Phase::given_back, 1}}},
      {"a stop gives the queued back",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"give back", [](TrialBook& b) { b.give_back_queued(); }, Phase::given_back, 0}}},
      {"a gang forms, runs and is done",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start gang",
         [](TrialBook& b) {
           b.start_gang(1, {{"w1", {"cpu0"}, 0}, {"w2", {"cpu0"}, 1}}, 2, 1);
         },
         Phase::gang_forming, 0},
        {"rendezvous", [](TrialBook& b) { CHECK(b.rendezvous(1)); }, Phase::running, 0},
        {"rendezvous again", [](TrialBook& b) { CHECK_FALSE(b.rendezvous(1)); }, Phase::running, 0},
        {"finish", [](TrialBook& b) { b.finish(1); }, Phase::done, 0}}},
      {"a worker lost mid-gang: the whole gang is retried",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start gang",
         [](TrialBook& b) {
           b.start_gang(1, {{"w1", {"cpu0"}, 0}, {"w2", {"cpu0"}, 1}}, 2, 1);
         },
         Phase::gang_forming, 0},
        {"rendezvous", [](TrialBook& b) { b.rendezvous(1); }, Phase::running, 0},
        {"member w2 lost",
         [](TrialBook& b) {
           CHECK(b.gang_member("w2", 1, 0));
           expect_outcome(b.lose(1, kMax, false), AttemptEnd::requeued);
           CHECK(b.at(1).gang.empty());
           CHECK_FALSE(b.gang_member("w2", 1, 0));
           CHECK(b.busy_slots() == 0);
         },
         Phase::queued, 1},
        {"runs again on one worker",
         [](TrialBook& b) {
           b.start(1, "w1", {"cpu0", "cpu1"}, 2);
         },
         Phase::running, 1}}},
      {"a late result after a requeue finds the trial queued",
       false,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::queued, 0},
        {"start",
         [](TrialBook& b) {
           b.start(1, "w1", {"cpu0"}, 1);
           b.sent(1, 0, "w1");
         },
         Phase::running, 0},
        {"lost", [](TrialBook& b) { b.lose(1, kMax, false); }, Phase::queued, 1},
        {"late result of attempt 0",
         [](TrialBook& b) {
           CHECK_FALSE(b.runs("w1", 1, 0));  // not counted ...
           CHECK(b.ran_by("w1", 1, 0));      // ... but acknowledged as its own
           CHECK_FALSE(b.ran_by("w2", 1, 0));
           CHECK_THROWS_AS(b.finish(1), std::logic_error);
         },
         Phase::queued, 1}}},
      {"measured, then trained",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 1); }, Phase::measuring,
         0},
        {"measured",
         [](TrialBook& b) {
           CHECK(b.measures("lat", 1, 0));
           b.measured(1, Measured{1.5, 10, 20});
           REQUIRE(b.at(1).measured);
           CHECK(b.at(1).measured->latency_ms == 1.5);
         },
         Phase::queued, 0},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 2); }, Phase::running, 0},
        {"finish", [](TrialBook& b) { b.finish(1); }, Phase::done, 0}}},
      {"a measurement with no latency is measured again",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 1); }, Phase::measuring,
         0},
        {"none", [](TrialBook& b) { b.measured(1, std::nullopt); }, Phase::measure_queued, 0}}},
      {"a failed measurement is retried, then fails the trial",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 1); }, Phase::measuring,
         0},
        {"failed",
         [](TrialBook& b) {
           expect_outcome(b.measure_failed(1, true, kMax, false), AttemptEnd::requeued);
         },
         Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat2", "cpu0", 2); }, Phase::measuring,
         0},
        {"failed",
         [](TrialBook& b) {
           expect_outcome(b.measure_failed(1, true, kMax, false), AttemptEnd::requeued);
         },
         Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 3); }, Phase::measuring,
         0},
        {"failed a third time",
         [](TrialBook& b) {
           expect_outcome(b.measure_failed(1, true, kMax, false), AttemptEnd::failed);
         },
         Phase::failed, 0}}},
      {"a measurement failure that would repeat fails at once",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 1); }, Phase::measuring,
         0},
        {"failed",
         [](TrialBook& b) {
           expect_outcome(b.measure_failed(1, false, kMax, false), AttemptEnd::failed);
         },
         Phase::failed, 0}}},
      {"a measuring worker lost: measured first again",
       true,
       {{"add", [](TrialBook& b) { b.add(1, "a"); }, Phase::measure_queued, 0},
        {"add another", [](TrialBook& b) { b.add(2, "b"); }, Phase::measure_queued, 0},
        {"measure", [](TrialBook& b) { b.start_measuring(1, "lat", "cpu0", 1); }, Phase::measuring,
         0},
        {"lost",
         [](TrialBook& b) {
           b.measuring_lost(1, false);
           CHECK(b.next_to_measure() == 1);
         },
         Phase::measure_queued, 0}}},
      {"resumed running: its worker takes it back",
       false,
       {{"resumed", [](TrialBook& b) { b.add_unclaimed(1, "a", 2, std::nullopt, 7, "cpu0"); },
         Phase::unclaimed, 2},
        {"claim",
         [](TrialBook& b) {
           CHECK(b.at(1).claim_worker_id == 7);
           b.claim(1, "w1", {"cpu0"}, 5);
           CHECK(b.runs("w1", 1, 2));
         },
         Phase::running, 2}}},
      {"resumed running: nobody takes it back in time",
       true,
       {{"resumed",
         [](TrialBook& b) {
           b.add_unclaimed(1, "a", 0, Measured{2.0, {}, {}}, 7, "cpu0");
         },
         Phase::unclaimed, 0},
        {"resumed unmeasured", [](TrialBook& b) { b.add_unclaimed(2, "b", 1, {}, 7, "cpu1"); },
         Phase::unclaimed, 0},
        {"expire",
         [](TrialBook& b) {
           const auto expired = b.expire_unclaimed(false);
           REQUIRE(expired.size() == 2);
           CHECK(expired[0] == std::pair<int64_t, int>{1, 1});
           CHECK(expired[1] == std::pair<int64_t, int>{2, 2});
           CHECK(b.phase(2) == Phase::measure_queued);  // its latency is still to measure
           CHECK(b.unclaimed() == 0);
         },
         Phase::queued, 1}}},
      {"resumed running, expiring at a stop",
       false,
       {{"resumed", [](TrialBook& b) { b.add_unclaimed(1, "a", 0, {}, 7, "cpu0"); },
         Phase::unclaimed, 0},
        {"expire stopping", [](TrialBook& b) { b.expire_unclaimed(true); }, Phase::given_back, 1}}},
      {"resumed queued, then trained",
       false,
       {{"resumed", [](TrialBook& b) { b.add_resumed(1, "a", 1, 2, std::nullopt); }, Phase::queued,
         2},
        {"start", [](TrialBook& b) { b.start(1, "w1", {"cpu0"}, 1); }, Phase::running, 2}}},
  };
  return table;
}

}  // namespace

TEST_CASE("trial book: every story walks its phases") {
  for (const Story& story : stories()) {
    TrialBook book(story.latency_pool);
    for (const Step& step : story.steps) {
      const std::string story_name = story.name, step_name = step.what;
      CAPTURE(story_name);
      CAPTURE(step_name);
      step.act(book);
      REQUIRE(book.phase(1));
      CHECK(phase_name(*book.phase(1)) == std::string(phase_name(step.phase)));
      CHECK(book.at(1).attempt == step.attempt);
    }
  }
}

namespace {

// A trial brought to each phase, for the table of refused transitions.
TrialBook book_in(Phase p) {
  TrialBook b(p == Phase::measure_queued || p == Phase::measuring);
  switch (p) {
    case Phase::measure_queued:
    case Phase::queued:
      b.add(1, "a");
      break;
    case Phase::measuring:
      b.add(1, "a");
      b.start_measuring(1, "lat", "cpu0", 0);
      break;
    case Phase::gang_forming:
      b.add(1, "a");
      b.start_gang(1, {{"w1", {"cpu0"}, 0}, {"w2", {"cpu0"}, 1}}, 2, 0);
      break;
    case Phase::running:
      b.add(1, "a");
      b.start(1, "w1", {"cpu0"}, 0);
      break;
    case Phase::unclaimed:
      b.add_unclaimed(1, "a", 0, {}, 7, "cpu0");
      break;
    case Phase::done:
    case Phase::failed:
    case Phase::pruned:
      b.add_ended(1, p, 0);
      break;
    case Phase::given_back:
      b.add(1, "a");
      b.give_back_queued();
      break;
  }
  REQUIRE(b.phase(1) == p);
  return b;
}

struct Transition {
  const char* name;
  std::function<void(TrialBook&)> act;
  std::vector<Phase> from;  // the phases it may start from
};

const std::vector<Transition>& transitions() {
  using P = Phase;
  static const std::vector<Transition> table = {
      {"start", [](TrialBook& b) { b.start(1, "w", {"s"}, 0); }, {P::queued}},
      {"start_gang",
       [](TrialBook& b) {
         b.start_gang(1, {{"w1", {"s"}, 0}, {"w2", {"s"}, 1}}, 2, 0);
       },
       {P::queued}},
      {"rendezvous", [](TrialBook& b) { b.rendezvous(1); }, {P::gang_forming, P::running}},
      {"claim", [](TrialBook& b) { b.claim(1, "w", {"s"}, 0); }, {P::unclaimed}},
      {"finish", [](TrialBook& b) { b.finish(1); }, {P::gang_forming, P::running}},
      {"prune", [](TrialBook& b) { b.prune(1); }, {P::gang_forming, P::running}},
      {"fail", [](TrialBook& b) { b.fail(1); }, {P::gang_forming, P::running}},
      {"lose", [](TrialBook& b) { b.lose(1, kMax, false); }, {P::gang_forming, P::running}},
      {"start_measuring",
       [](TrialBook& b) { b.start_measuring(1, "w", "s", 0); },
       {P::measure_queued}},
      {"measured",
       [](TrialBook& b) {
         b.measured(1, Measured{1, {}, {}});
       },
       {P::measuring}},
      {"measure_failed",
       [](TrialBook& b) { b.measure_failed(1, true, kMax, false); },
       {P::measuring}},
      {"measuring_lost", [](TrialBook& b) { b.measuring_lost(1, false); }, {P::measuring}},
  };
  return table;
}

}  // namespace

TEST_CASE("trial book: a transition from any other phase is refused and changes nothing") {
  const std::vector<Phase> phases = {Phase::measure_queued, Phase::measuring, Phase::queued,
                                     Phase::gang_forming,   Phase::running,   Phase::unclaimed,
                                     Phase::done,           Phase::failed,    Phase::pruned,
                                     Phase::given_back};
  for (const Transition& t : transitions())
    for (Phase p : phases) {
      const std::string transition = t.name, from = phase_name(p);
      CAPTURE(transition);
      CAPTURE(from);
      TrialBook b = book_in(p);
      const bool allowed = std::find(t.from.begin(), t.from.end(), p) != t.from.end();
      if (allowed) {
        CHECK_NOTHROW(t.act(b));
      } else {
        CHECK_THROWS_AS(t.act(b), std::logic_error);
        CHECK(b.phase(1) == p);
      }
    }
  TrialBook b;
  CHECK_THROWS_AS(b.finish(42), std::logic_error);  // a trial it does not hold
  b.add(1, "a");
  CHECK_THROWS_AS(b.add(1, "a"), std::logic_error);  // nor twice the same
  CHECK_THROWS_AS(b.add_ended(2, Phase::queued, 0), std::logic_error);
}

TEST_CASE("trial book: queues keep their order, and the indexes follow the phases") {
  TrialBook b;
  for (int64_t id = 1; id <= 3; ++id) b.add(id, "a" + std::to_string(id));
  CHECK(b.queued() == 3);
  CHECK(b.next_queued() == 1);
  b.start(2, "w1", {"cpu0", "cpu1"}, 0);  // not the front: taken from the middle
  CHECK(b.next_queued() == 1);
  b.start(1, "w2", {"cpu0"}, 0);
  CHECK(b.in_flight() == std::set<int64_t>{1, 2});
  CHECK(b.busy_slots() == 3);
  b.lose(1, kMax, false);  // to the back, behind 3
  CHECK(b.next_queued() == 3);
  b.finish(2);
  CHECK(b.in_flight().empty());
  CHECK(b.busy_slots() == 0);
  CHECK(b.queued() == 2);
}

TEST_CASE("trial book: reports from before a restart") {
  TrialBook b;
  b.add_ended(1, Phase::done, 1);
  b.add_unclaimed(2, "b", 0, {}, 7, "cpu0");
  b.add_resumed(3, "c", 1, 2, {});
  CHECK(b.from_before_restart(1, 0));
  CHECK(b.from_before_restart(1, 1));
  CHECK_FALSE(b.from_before_restart(1, 2));  // never ran
  CHECK(b.from_before_restart(2, 0));
  CHECK(b.from_before_restart(3, 1));
  CHECK_FALSE(b.from_before_restart(4, 0));  // a trial it never knew
  b.start(3, "w1", {"cpu0"}, 0);
  b.sent(3, 2, "w1");
  CHECK_FALSE(b.from_before_restart(3, 2));  // sent in this run
  CHECK(b.ran_by("w1", 3, 2));
}

TEST_CASE("trial book: lineage by architecture") {
  TrialBook b;
  CHECK_FALSE(b.latest_with_arch(99));
  b.note_arch(99, 1);
  b.note_arch(99, 4);
  CHECK(b.latest_with_arch(99) == 4);
}

TEST_CASE("trial book: docs/architecture.md draws the phases the book has, and no other") {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/docs/architecture.md";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::set<std::string> drawn;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("stateDiagram", 0) == 0) inside = true;
    if (!inside) continue;
    if (line == "```") break;
    // "  from --> to: label": both ends are phases, or [*].
    const auto arrow = line.find(" --> ");
    if (arrow == std::string::npos) continue;
    const auto colon = line.find(':', arrow);
    const auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(' '));
      s.erase(s.find_last_not_of(' ') + 1);
      return s;
    };
    for (std::string end :
         {trim(line.substr(0, arrow)), trim(line.substr(arrow + 5, colon - arrow - 5))})
      if (end != "[*]") drawn.insert(end);
  }
  std::set<std::string> named;
  for (int p = 0; p <= static_cast<int>(Phase::given_back); ++p)
    named.insert(phase_name(static_cast<Phase>(p)));
  CHECK(drawn == named);
}
