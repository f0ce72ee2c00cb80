// The wire protocol: every type round-trips, every malformed payload of the
// corpus and of a seeded fuzzer is refused with a ProtocolError (never
// another exception, never a crash).
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "controller/protocol.h"
#include "searchspace/rng.h"
#include "tests/controller/corpus.h"

using namespace minas::proto;

namespace {

// A valid message of each type: its required fields, and with optional_too
// every optional one as well, each holding a value the typed reader accepts.
nlohmann::json full(const MessageSpec& s, bool optional_too) {
  using J = nlohmann::json;
  J j, opt = J::object();
  switch (s.type) {
    case Type::hello:
      j = {{"name", "w"},
           {"host", "h"},
           {"pid", 7},
           {"minas", "0.1.0"},
           {"slots", J::array({{{"id", "cpu"}, {"name", "x86"}, {"threads", 2}}})}};
      opt = {{"data", {"f1"}}, {"pool", "p"}, {"tags", {{"device", "cpu"}}}};
      break;
    case Type::welcome:
      j = {{"worker_id", 1}, {"heartbeat_ms", 1000}, {"liveness", 5}};
      break;
    case Type::ready:
      j = {{"slot", "cpu"}};
      break;
    case Type::train:
      j = {{"trial", 1},
           {"attempt", 0},
           {"slots", {"cpu"}},
           {"space_id", "x"},
           {"arch", "a"},
           {"recipe", {{"epochs", 1}}},
           {"data", {{"name", "d"}, {"fingerprint", "f"}}},
           {"fidelity", 1}};
      opt = {{"space", {{"k", 1}}},
             {"checkpoint_epochs", {1}},
             {"resume_epoch", 1},
             {"latency_device", "cpu:1"},
             {"measure_only", false},
             {"gang", {{"world", 2}, {"first_rank", 0}}},
             {"validate_at", {0.25, 0.5}},
             {"inherit", {{"trial", 0}, {"epoch", 2}}}};
      break;
    case Type::progress:
      j = {{"trial", 1}, {"attempt", 0}, {"epoch", 1}, {"metrics", {{"val_acc", 0.5}}}};
      opt = {{"at", 0.25}};
      break;
    case Type::result:
      j = {{"trial", 1}, {"attempt", 0}, {"metrics", {{"val_acc", 0.5}, {"params", 10}}}};
      break;
    case Type::failure:
      j = {{"trial", 1}, {"attempt", 0}, {"reason", "r"}, {"retryable", true}};
      break;
    case Type::ack:
      j = {{"trial", 1}, {"attempt", 0}, {"counted", true}};
      break;
    case Type::cancel:
      j = {{"trial", 1}, {"attempt", 0}};
      opt = {{"reason", "r"}};
      break;
    case Type::heartbeat:
      j = J::object();
      opt = {{"running", J::array({{{"trial", 1}, {"attempt", 0}}})}};
      break;
    case Type::bye:
      j = J::object();
      opt = {{"reason", "r"}};
      break;
    case Type::error:
      j = {{"code", "bad_field"}, {"message", "m"}};
      opt = {{"in_reply_to", "ready"}};
      break;
    case Type::fetch:
      j = {{"name", "d"}, {"fingerprint", "f"}};
      break;
    case Type::data:
      j = {{"fingerprint", "f"}, {"name", "d"},     {"file", "x"}, {"offset", 0},
           {"size", 1},          {"bytes", "YQ=="}, {"last", true}};
      break;
    case Type::checkpoint:
      j = {{"trial", 1}, {"attempt", 0},    {"epoch", 1},  {"offset", 0},
           {"size", 1},  {"bytes", "YQ=="}, {"last", true}};
      break;
    case Type::rendezvous:
      j = {{"trial", 1}, {"attempt", 0}, {"address", "tcp://h:1"}};
      break;
    case Type::screen:
      j = {{"batch", 1},
           {"attempt", 0},
           {"slot", "cpu"},
           {"space_id", "x"},
           {"archs", {"a", "b"}},
           {"evaluators", {"synflow"}},
           {"data", {{"name", "d"}, {"fingerprint", "f"}}},
           {"seed", 3},
           {"batch_size", 64}};
      opt = {{"space", {{"k", 1}}}};
      break;
    case Type::screen_result:
      j = {{"batch", 1},
           {"attempt", 0},
           {"archs", J::array({{{"arch", "a"}, {"scores", {{"synflow", 2.5}}}, {"seconds", 0.1}},
                               {{"arch", "b"}, {"scores", J::object()}, {"seconds", 0},
                                {"error", "e"}}})}};
      break;
    case Type::screen_ack:
      j = {{"batch", 1}, {"attempt", 0}, {"counted", true}};
      break;
  }
  if (optional_too) j.update(opt);
  for (const auto& f : s.fields) {
    const bool present = j.contains(f.name) || !(f.required || optional_too);
    REQUIRE_MESSAGE(present, type_name(s.type) << " sample lacks " << f.name);
  }
  return j;
}

}  // namespace

TEST_CASE("protocol: every message type encodes and parses back") {
  REQUIRE(message_specs().size() == 19);
  for (const auto& s : message_specs()) {
    CAPTURE(std::string(type_name(s.type)));
    CHECK(type_from_name(type_name(s.type)) == s.type);
    for (bool opt : {false, true}) {
      const std::string payload = encode(s.type, full(s, opt));
      const Message m = parse(payload);
      CHECK(m.type == s.type);
      CHECK(m.body["v"] == kVersion);
      const nlohmann::json fields = full(s, opt);
      for (const auto& f : s.fields)
        if (f.required || opt) CHECK(m.body[f.name] == fields[f.name]);
      CHECK(m.content.index() == static_cast<size_t>(s.type) + 1);
    }
  }
  // encode refuses what parse would refuse: minas never sends a bad message.
  CHECK_THROWS_AS(encode(Type::ready, {}), ProtocolError);
  CHECK_THROWS_AS(encode(Type::ready, {{"slot", 1}}), ProtocolError);
}

TEST_CASE("protocol: validations inside an epoch: train's validate_at and progress's at") {
  nlohmann::json train = full(spec(Type::train), false);
  train["validate_at"] = {0.25, 0.5, 2.75};
  const Message m = parse(encode(Type::train, train));
  CHECK(m.as<Train>().validate_at == std::vector<double>{0.25, 0.5, 2.75});
  CHECK(parse(encode(Type::train, full(spec(Type::train), false))).as<Train>().validate_at.empty());
  for (const nlohmann::json& bad : {nlohmann::json{0.5, 0.25}, nlohmann::json{0.5, 0.5},
                                    nlohmann::json{-1}, nlohmann::json{"0.5"}}) {
    CAPTURE(bad.dump());
    train["validate_at"] = bad;
    CHECK_THROWS_WITH_AS(encode(Type::train, train), doctest::Contains("validate_at"),
                         ProtocolError);
  }
  nlohmann::json progress = full(spec(Type::progress), false);
  CHECK_FALSE(parse(encode(Type::progress, progress)).as<Progress>().at);
  progress["at"] = 0.125;
  CHECK(parse(encode(Type::progress, progress)).as<Progress>().at == 0.125);
}

TEST_CASE("protocol: the hostile corpus is refused by parse alone where it says so") {
  // Placeholders as a running controller would give them; what parse refuses
  // does not depend on them.
  const std::map<std::string, std::string> vars = {
      {"OWN_TRIAL", "3"},     {"OWN_ATTEMPT", "0"},     {"OWN_NEXT_ATTEMPT", "1"},
      {"FOREIGN_TRIAL", "4"}, {"FOREIGN_ATTEMPT", "0"}, {"HONEST_NAME", "\"honest\""},
      {"PID", "4242"}};
  const std::set<std::string> parse_codes = {"malformed", "too_large", "bad_version",
                                             "unknown_type", "bad_field"};
  const std::set<std::string> all_codes = {"malformed",    "too_large", "bad_version",
                                           "unknown_type", "bad_field", "unexpected",
                                           "not_allowed",  "accepted",  "welcome"};
  int refused = 0, passed_on = 0;
  std::set<std::string> names;
  for (const auto& c : minas::test::read_corpus()) {
    CAPTURE(c.line);
    CAPTURE(c.name);
    REQUIRE(all_codes.count(c.code));
    CHECK_MESSAGE(names.insert(c.name).second, "case name used twice: " << c.name);
    const std::string payload = minas::test::expand(c.payload, vars);
    if (!parse_codes.count(c.code)) {
      // Refused (or taken) by the controller for who sends it, not by parse.
      CHECK_NOTHROW(parse(payload));
      ++passed_on;
      continue;
    }
    ++refused;
    try {
      parse(payload);
      FAIL_CHECK("accepted");
    } catch (const ProtocolError& e) {
      CHECK(e.code() == c.code);
      // The reply quotes at most a short excerpt of what was sent.
      CHECK(e.reason().size() < 1000);
      const Message reply = parse(error_reply(e));
      CHECK(reply.type == Type::error);
      CHECK(reply.body["code"] == c.code);
    }
  }
  CHECK(refused >= 80);
  CHECK(passed_on >= 30);
  MESSAGE(refused << " cases refused by parse, " << passed_on << " left to the controller");
  const std::string big(kMaxMessageBytes + 1, ' ');
  CHECK_THROWS_WITH_AS(parse(big), doctest::Contains("more than"), ProtocolError);
}

TEST_CASE("protocol: a seeded fuzzer never gets anything but a ProtocolError out of parse") {
  minas::Rng rng(11);
  std::vector<std::string> seeds;
  for (const auto& s : message_specs()) seeds.push_back(encode(s.type, full(s, true)));
  int refused = 0, accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string p = seeds[rng.below(seeds.size())];
    const int edits = 1 + static_cast<int>(rng.below(4));
    for (int e = 0; e < edits && !p.empty(); ++e) {
      const size_t at = rng.below(p.size());
      switch (rng.below(4)) {
        case 0:
          p[at] = static_cast<char>(rng.below(256));
          break;
        case 1:
          p.erase(at, 1 + rng.below(8));
          break;
        case 2:
          p.insert(at, 1, "{}[]\":,0-e\\"[rng.below(11)]);
          break;
        default:
          p.resize(at);
      }
    }
    try {
      const Message m = parse(p);
      // Whatever is accepted satisfies the spec of its type.
      CHECK_NOTHROW(encode(m.type, m.body));
      ++accepted;
    } catch (const ProtocolError&) {
      ++refused;
    }
  }
  CHECK(refused > 10000);
  MESSAGE(accepted << " mutants still valid, " << refused << " refused");
}

TEST_CASE("protocol: a warm-started train names its parent, and its result what it inherited") {
  nlohmann::json train = full(spec(Type::train), false);
  train["trial"] = 9;
  train["inherit"] = {{"trial", 4}, {"epoch", 3}};
  const Train t = parse(encode(Type::train, train)).as<Train>();
  REQUIRE(t.inherit);
  CHECK(t.inherit->trial == 4);
  CHECK(t.inherit->epoch == 3);
  CHECK_FALSE(parse(encode(Type::train, full(spec(Type::train), false))).as<Train>().inherit);
  nlohmann::json result = full(spec(Type::result), false);
  result["metrics"]["inherited_from"] = 4;
  result["metrics"]["inherited_epoch"] = 3;
  result["metrics"]["inherited_tensors"] = 21;
  result["metrics"]["inherited_params"] = 123456789012;
  const Result r = parse(encode(Type::result, result)).as<Result>();
  CHECK(r.inherited_from == 4);
  CHECK(r.inherited_epoch == 3);
  CHECK(r.inherited_tensors == 21);
  CHECK(r.inherited_params == 123456789012);
  CHECK(r.inherit_refused.empty());
  // Out of bounds or malformed: refused as bad_field, naming the field.
  auto refused = [](const nlohmann::json& body, const std::string& field) {
    try {
      parse(body.dump());
      FAIL_CHECK("accepted: " << body.dump());
    } catch (const ProtocolError& e) {
      CHECK(e.code() == "bad_field");
      CHECK_MESSAGE(e.reason().find(field) != std::string::npos, e.reason());
    }
  };
  auto train_with = [&](const nlohmann::json& inherit) {
    nlohmann::json j = train;
    j["v"] = kVersion;
    j["type"] = "train";
    j["inherit"] = inherit;
    return j;
  };
  using J = nlohmann::json;
  refused(train_with(J{{"trial", 9}, {"epoch", 3}}), "inherit.trial");  // itself
  refused(train_with(J{{"trial", -1}, {"epoch", 3}}), "inherit: trial");
  refused(train_with(J{{"trial", 4}, {"epoch", 0}}), "inherit.epoch");
  refused(train_with(J{{"trial", 4}, {"epoch", 2000000}}), "inherit.epoch");
  refused(train_with(J{{"trial", 4}, {"epoch", 1.5}}), "inherit.epoch");
  refused(train_with(J{{"trial", 4}}), "needs trial and epoch");
  refused(train_with(J{{"trial", 4}, {"epoch", 1}, {"from", 1}}), "unknown field 'from'");
  refused(train_with(J(4)), "inherit");
  // A metric set (null: left out) on the valid result above.
  auto result_with = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json j = result;
    j["v"] = kVersion;
    j["type"] = "result";
    if (value.is_null())
      j["metrics"].erase(key);
    else
      j["metrics"][key] = value;
    return j;
  };
  refused(result_with("inherited_from", -1), "inherited_from");
  refused(result_with("inherited_from", 2.5), "inherited_from");
  refused(result_with("inherited_tensors", nullptr), "needs inherited_tensors");
  refused(result_with("inherited_params", nullptr), "needs inherited_params");
  refused(result_with("inherited_epoch", 0), "inherited_epoch");
  refused(result_with("inherited_tensors", 1e12), "inherited_tensors");
  refused(result_with("inherited_tensors", int64_t{1} << 40), "inherited_tensors");
  refused(result_with("inherited_params", -5), "inherited_params");
}

TEST_CASE("protocol: docs/protocol.md holds the message table as the code defines it") {
  const std::string path = std::string(MINAS_SOURCE_DIR) + "/docs/protocol.md";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str(), table = protocol_markdown();
  REQUIRE(doc.size() >= table.size());
  CHECK_MESSAGE(doc.compare(doc.size() - table.size(), table.size(), table) == 0,
                path << " differs from protocol_markdown(): regenerate its message tables");
}

TEST_CASE("protocol: base64 round-trips any bytes and refuses what is not base64") {
  minas::Rng rng(3);
  for (size_t n : {0u, 1u, 2u, 3u, 4u, 5u, 100u, 4097u}) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = static_cast<char>(rng.below(256));
    const std::string text = base64_encode(bytes);
    CHECK(text.size() == (n + 2) / 3 * 4);
    CHECK(base64_decode(text) == bytes);
  }
  CHECK(base64_encode("foobar") == "Zm9vYmFy");  // RFC 4648 test vectors
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_decode("Zm9vYg==") == std::string("foob"));
  CHECK_FALSE(base64_decode("Zm9").has_value());
  CHECK_FALSE(base64_decode("Zm9*").has_value());
  // A whole chunk stays under the message cap once encoded.
  CHECK(encode(Type::data, {{"fingerprint", "f"},
                            {"name", "n"},
                            {"file", "x"},
                            {"offset", 0},
                            {"size", 1},
                            {"bytes", base64_encode(std::string(kDataChunkBytes, 'a'))},
                            {"last", true}})
            .size() < kMaxMessageBytes);
}

TEST_CASE("protocol: a refused message quoting a peer's bytes still has an error reply") {
  // Found by bench/fuzz (protocol target): nlohmann's message quoted a key holding "'; " and
  // bytes that are not UTF-8, and error_reply's dump threw out of the controller's loop.
  const std::string payload("{\"b'; \xdf\x01\x00\x00nning$:[{\"trial\":1}]}", 29);
  try {
    minas::proto::parse(payload);
    FAIL("accepted");
  } catch (const minas::proto::ProtocolError& e) {
    const std::string reply = minas::proto::error_reply(e);
    const minas::proto::Message m = minas::proto::parse(reply);
    CHECK(m.type == minas::proto::Type::error);
    CHECK(m.body["code"] == "malformed");
  }
  // encode itself replaces what is not UTF-8 rather than throwing.
  const std::string bye = minas::proto::encode(minas::proto::Type::bye, {{"reason",
                                                                          "a\xff"
                                                                          "b"}});
  CHECK(minas::proto::parse(bye).body["reason"] ==
        "a\xef\xbf\xbd"
        "b");
}
