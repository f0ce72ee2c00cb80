// The screening messages of the wire protocol (screen, screen_result,
// screen_ack): what they carry round-trips exactly, and every malformed or
// oversized one is refused with a ProtocolError naming the field.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "controller/protocol.h"

using namespace minas::proto;
using J = nlohmann::json;

namespace {

J screen_fields() {
  return {{"batch", 7},
          {"attempt", 1},
          {"slot", "cpu.1"},
          {"space_id", "0123456789abcdef"},
          {"archs", {"16|32|conv_k3|skip|64|conv_k3|skip", "8|8|skip|skip|8|skip|skip"}},
          {"evaluators", {"synflow", "params"}},
          {"data", {{"name", "fashion-mnist"}, {"fingerprint", "f"}}},
          {"seed", 3},
          {"batch_size", 64}};
}

J result_fields() {
  return {
      {"batch", 7},
      {"attempt", 1},
      {"archs",
       J::array(
           {{{"arch", "a"}, {"scores", {{"synflow", 12.5}, {"params", 1000}}}, {"seconds", 0.007}},
            {{"arch", "b"},
             {"scores", {{"synflow", nullptr}}},
             {"seconds", 0.001},
             {"error", "synflow is -inf"}}})}};
}

// The code of the refusal of `fields` as a message of type t (parse alone).
std::string refusal(Type t, J fields) {
  fields["v"] = kVersion;
  fields["type"] = type_name(t);
  try {
    parse(fields.dump());
  } catch (const ProtocolError& e) {
    return e.code() + ": " + e.reason();
  }
  return "accepted";
}

bool refused_as(const std::string& got, const std::string& code, const std::string& part) {
  return got.rfind(code + ": ", 0) == 0 && got.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("protocol: a screen carries its batch, archs, evaluators, data, seed and batch size") {
  const Message m = parse(encode(Type::screen, screen_fields()));
  REQUIRE(m.type == Type::screen);
  const Screen& s = m.as<Screen>();
  CHECK(s.batch == 7);
  CHECK(s.attempt == 1);
  CHECK(s.slot == "cpu.1");
  CHECK(s.archs.size() == 2);
  CHECK(s.archs[1] == "8|8|skip|skip|8|skip|skip");
  CHECK(s.evaluators == std::vector<std::string>{"synflow", "params"});
  CHECK(s.data_name == "fashion-mnist");
  CHECK(s.data_fingerprint == "f");
  CHECK(s.seed == 3);
  CHECK(s.batch_size == 64);
  CHECK_FALSE(s.space);
  // Any 64-bit seed, as the experiment's seed is.
  J big = screen_fields();
  big["seed"] = std::numeric_limits<uint64_t>::max();
  CHECK(parse(encode(Type::screen, big)).as<Screen>().seed == std::numeric_limits<uint64_t>::max());
}

TEST_CASE("protocol: a screen_result's scores come back exactly, null ones absent") {
  J fields = result_fields();
  fields["archs"][0]["scores"]["synflow"] = 0.1 + 0.2;  // a double that prints with 17 digits
  const Message m = parse(encode(Type::screen_result, fields));
  const ScreenResult& r = m.as<ScreenResult>();
  REQUIRE(r.archs.size() == 2);
  CHECK(r.archs[0].scores.at("synflow") == 0.1 + 0.2);
  CHECK(r.archs[0].scores.at("params") == 1000);
  CHECK(r.archs[0].error.empty());
  CHECK(r.archs[1].scores.empty());
  CHECK(r.archs[1].error == "synflow is -inf");
  CHECK(r.archs[1].seconds == 0.001);
  // No archs: the worker did not run the batch.
  CHECK(parse(encode(Type::screen_result, {{"batch", 1}, {"attempt", 0}, {"archs", J::array()}}))
            .as<ScreenResult>()
            .archs.empty());
  const ScreenAck a =
      parse(encode(Type::screen_ack, {{"batch", 9}, {"attempt", 2}, {"counted", false}}))
          .as<ScreenAck>();
  CHECK(a.batch == 9);
  CHECK(a.attempt == 2);
  CHECK_FALSE(a.counted);
}

TEST_CASE("protocol: malformed screens are refused, naming the field") {
  auto with = [](const char* key, J value) {
    J f = screen_fields();
    f[key] = std::move(value);
    return f;
  };
  auto without = [](const char* key) {
    J f = screen_fields();
    f.erase(key);
    return f;
  };
  CHECK(refused_as(refusal(Type::screen, without("archs")), "bad_field", "missing field 'archs'"));
  CHECK(refused_as(refusal(Type::screen, without("seed")), "bad_field", "'seed'"));
  CHECK(refused_as(refusal(Type::screen, with("archs", J::array())), "bad_field",
                   "at least one architecture"));
  CHECK(refused_as(refusal(Type::screen, with("archs", {1, 2})), "bad_field", "archs[]"));
  CHECK(refused_as(refusal(Type::screen, with("archs", {""})), "bad_field", "must not be empty"));
  CHECK(refused_as(refusal(Type::screen, with("archs", {"a\nb"})), "bad_field",
                   "control characters"));
  CHECK(refused_as(refusal(Type::screen, with("evaluators", J::array())), "bad_field",
                   "at least one evaluator"));
  CHECK(refused_as(refusal(Type::screen, with("evaluators", {"synflow", "synflow"})), "bad_field",
                   "listed twice"));
  CHECK(refused_as(refusal(Type::screen, with("batch", -1)), "bad_field", "screen: batch"));
  CHECK(refused_as(refusal(Type::screen, with("batch", 1.5)), "bad_field", "'batch'"));
  CHECK(refused_as(refusal(Type::screen, with("attempt", 2000000)), "bad_field", "attempt"));
  CHECK(refused_as(refusal(Type::screen, with("seed", -3)), "bad_field", "screen: seed"));
  CHECK(refused_as(refusal(Type::screen, with("batch_size", 1)), "bad_field", "batch_size"));
  CHECK(refused_as(refusal(Type::screen, with("batch_size", 5000)), "bad_field", "batch_size"));
  CHECK(refused_as(refusal(Type::screen, with("data", {{"name", "d"}, {"path", "/etc"}})),
                   "bad_field", "unknown field 'path'"));
  CHECK(refused_as(refusal(Type::screen, with("slot", "")), "bad_field", "screen: slot"));
  CHECK(refused_as(refusal(Type::screen, with("extra", 1)), "bad_field", "unknown field 'extra'"));
  // Bounds: at most 1024 architectures of 4 KiB each, 16 evaluators.
  J many = J::array();
  for (int i = 0; i < 1025; ++i) many.push_back("a");
  CHECK(refused_as(refusal(Type::screen, with("archs", many)), "too_large", "1025 entries"));
  CHECK(refused_as(refusal(Type::screen, with("archs", {std::string(4097, 'k')})), "too_large",
                   "4097 bytes"));
  J evaluators = J::array();
  for (int i = 0; i < 17; ++i) evaluators.push_back("e" + std::to_string(i));
  CHECK(
      refused_as(refusal(Type::screen, with("evaluators", evaluators)), "too_large", "17 entries"));
  // encode refuses what parse refuses: minas never sends such a screen.
  CHECK_THROWS_AS(encode(Type::screen, with("archs", J::array())), ProtocolError);
}

TEST_CASE("protocol: malformed screen results and acks are refused, naming the field") {
  auto arch = [](J entry) {
    J f = result_fields();
    f["archs"] = J::array({std::move(entry)});
    return f;
  };
  const J good = {{"arch", "a"}, {"scores", {{"synflow", 1.0}}}, {"seconds", 0.5}};
  auto changed = [&](const char* key, J value) {
    J e = good;
    e[key] = std::move(value);
    return arch(e);
  };
  auto dropped = [&](const char* key) {
    J e = good;
    e.erase(key);
    return arch(e);
  };
  CHECK(refusal(Type::screen_result, arch(good)) == "accepted");
  CHECK(refused_as(refusal(Type::screen_result, dropped("seconds")), "bad_field",
                   "needs arch, scores and seconds"));
  CHECK(refused_as(refusal(Type::screen_result, dropped("arch")), "bad_field",
                   "needs arch, scores and seconds"));
  CHECK(refused_as(refusal(Type::screen_result, changed("seconds", -1)), "bad_field",
                   "archs[0].seconds"));
  CHECK(refused_as(refusal(Type::screen_result, changed("seconds", nullptr)), "bad_field",
                   "archs[0].seconds"));
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", {1, 2})), "bad_field",
                   "archs[0].scores must be an object"));
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", {{"synflow", "high"}})),
                   "bad_field", "archs[0].scores.synflow"));
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", {{"synflow", 1e300}})),
                   "bad_field", "archs[0].scores.synflow"));
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", {{"synflow", {1.0}}})),
                   "bad_field", "archs[0].scores.synflow"));
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", {{"", 1.0}})), "bad_field",
                   "a key"));
  CHECK(
      refused_as(refusal(Type::screen_result, changed("error", 3)), "bad_field", "archs[0].error"));
  CHECK(refused_as(refusal(Type::screen_result, changed("rank", 1)), "bad_field",
                   "unknown field 'rank'"));
  CHECK(refused_as(refusal(Type::screen_result, arch("a")), "bad_field",
                   "archs[0] must be an object"));
  J scores = J::object();
  for (int i = 0; i < 17; ++i) scores["e" + std::to_string(i)] = 1.0;
  CHECK(refused_as(refusal(Type::screen_result, changed("scores", scores)), "too_large",
                   "17 entries"));
  CHECK(refused_as(refusal(Type::screen_result, changed("error", std::string(65537, 'e'))),
                   "too_large", "65537 bytes"));
  J many = result_fields();
  many["archs"] = J::array();
  for (int i = 0; i < 1025; ++i) many["archs"].push_back(good);
  CHECK(refused_as(refusal(Type::screen_result, many), "too_large", "1025 entries"));
  CHECK(refused_as(refusal(Type::screen_ack, {{"batch", 1}, {"attempt", 0}}), "bad_field",
                   "missing field 'counted'"));
  CHECK(refused_as(refusal(Type::screen_ack, {{"batch", "1"}, {"attempt", 0}, {"counted", true}}),
                   "bad_field", "'batch'"));
}
