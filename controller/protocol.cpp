#include "controller/protocol.h"

#include <algorithm>
#include <cctype>

namespace minas::proto {
namespace {

using F = FieldType;

const char* field_type_name(FieldType t) {
  switch (t) {
    case F::string:
      return "string";
    case F::integer:
      return "integer";
    case F::number:
      return "number";
    case F::boolean:
      return "boolean";
    case F::object:
      return "object";
    case F::array:
      return "array";
  }
  return "?";
}

bool has_type(const nlohmann::json& v, FieldType t) {
  switch (t) {
    case F::string:
      return v.is_string();
    case F::integer:
      return v.is_number_integer();
    case F::number:
      return v.is_number();
    case F::boolean:
      return v.is_boolean();
    case F::object:
      return v.is_object();
    case F::array:
      return v.is_array();
  }
  return false;
}

const char* sender_name(Sender s) {
  return s == Sender::worker ? "worker" : s == Sender::controller ? "controller" : "both";
}

// Checks a message object against its spec; `side` says whose message it is in errors.
void check_fields(const nlohmann::json& j, const MessageSpec& ms) {
  const std::string t = type_name(ms.type);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "v" || it.key() == "type") continue;
    const auto f = std::find_if(ms.fields.begin(), ms.fields.end(),
                                [&](const FieldSpec& s) { return it.key() == s.name; });
    if (f == ms.fields.end()) {
      std::string known;
      for (const auto& s : ms.fields) known += (known.empty() ? "" : ", ") + std::string(s.name);
      throw ProtocolError("bad_field", t + ": unknown field '" + it.key() +
                                           "' (fields: " + (known.empty() ? "none" : known) + ")");
    }
    if (!has_type(it.value(), f->type))
      throw ProtocolError("bad_field", t + ": field '" + it.key() + "' must be " +
                                           field_type_name(f->type) + ", got " +
                                           it.value().type_name());
  }
  for (const auto& s : ms.fields)
    if (s.required && !j.contains(s.name))
      throw ProtocolError("bad_field", t + ": missing field '" + s.name + "'");
}

}  // namespace

const std::vector<MessageSpec>& message_specs() {
  static const std::vector<MessageSpec> specs = {
      {Type::hello,
       Sender::worker,
       "first message of a worker; answered by welcome or error",
       {{"name", F::string, true,
         "the worker's identity, unique per process (host:pid by default)"},
        {"host", F::string, true, "host name"},
        {"pid", F::integer, true, "process id"},
        {"minas", F::string, true, "the worker's minas version"},
        {"slots", F::array, true,
         "device slots: objects {id: \"cpu\" or \"cuda:N\", name, threads (cpu), memory_bytes}"},
        {"data", F::array, false, "fingerprints of the data sets it has cached"},
        {"pool", F::string, false,
         "the pool it belongs to (default \"default\"): an experiment may train on one pool "
         "and measure latency on another"},
        {"tags", F::object, false,
         "free-form labels, string values: device type, GPU model, site, ..."}}},
      {Type::welcome,
       Sender::controller,
       "the worker is registered",
       {{"worker_id", F::integer, true, "the worker's id in the store"},
        {"heartbeat_ms", F::integer, true, "how often each side sends a heartbeat"},
        {"liveness", F::integer, true, "missed heartbeats after which the peer counts as lost"}}},
      {Type::ready,
       Sender::worker,
       "a device slot is free",
       {{"slot", F::string, true, "the slot's id"}}},
      {Type::train,
       Sender::controller,
       "run one attempt of a trial",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true,
         "attempt number, from 0; results are idempotent by (trial, attempt)"},
        {"slots", F::array, true, "the slot ids to run on"},
        {"space_id", F::string, true, "FNV-1a 64 (hex) of the space document's JSON text"},
        {"space", F::object, false,
         "the resolved search-space document; sent with a worker's first trial of that space, "
         "which the worker keeps by space_id"},
        {"arch", F::string, true, "the architecture's canonical key"},
        {"recipe", F::object, true, "the training recipe"},
        {"data", F::object, true, "the data set: {name, fingerprint}"},
        {"fidelity", F::integer, true, "epochs to train"},
        {"checkpoint_epochs", F::array, false,
         "epochs after which the worker sends the training state in checkpoint messages "
         "(ASHA's rungs), so a retried attempt continues from there"},
        {"resume_epoch", F::integer, false,
         "the attempt continues after this epoch, from the training state the controller sends "
         "next in checkpoint messages"},
        {"latency_device", F::string, false,
         "where to measure the trained network's batch-1 latency (cpu:THREADS or cuda:N, the "
         "deployment target) instead of on the training device"},
        {"measure_only", F::boolean, false,
         "true: do not train; build the network and measure its batch-1 latency (on "
         "latency_device, else on the slot), answering with a result of latency_ms, params and "
         "macs (an experiment's latency pool)"},
        {"gang", F::object, false,
         "a trial whose ranks are spread over several workers: {world (all ranks), first_rank "
         "(this worker's first; its slots are ranks first_rank, first_rank + 1, ...), rendezvous "
         "(rank 0's rendezvous address; absent for rank 0's worker, which opens the hub, makes "
         "NCCL's unique id on GPUs, and answers with a rendezvous message)}"}}},
      {Type::progress,
       Sender::worker,
       "one finished epoch of a running attempt",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"epoch", F::integer, true, "epoch number, from 1"},
        {"metrics", F::object, true, "train_loss, train_acc, val_acc, lr, seconds"}}},
      {Type::result,
       Sender::worker,
       "a finished attempt; the worker keeps it until acked",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"metrics", F::object, true,
         "val_acc, test_acc, latency_ms, params, macs, train_seconds"}}},
      {Type::failure,
       Sender::worker,
       "an attempt that failed; the worker keeps it until acked",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"reason", F::string, true, "what went wrong, for the store and the user"},
        {"retryable", F::boolean, true,
         "false when another attempt would fail the same way (a network that cannot be built)"}}},
      {Type::ack,
       Sender::controller,
       "the result or failure of (trial, attempt) is stored durably",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"counted", F::boolean, true,
         "false when the attempt was no longer current (a late result): recorded, not counted"}}},
      {Type::cancel,
       Sender::controller,
       "stop an attempt now and free its slots",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"reason", F::string, false, "why (pruned, budget spent, experiment stopped)"}}},
      {Type::heartbeat,
       Sender::both,
       "alive",
       {{"running", F::array, false, "from a worker: [{trial, attempt}] it is running"}}},
      {Type::bye,
       Sender::both,
       "leaving; a worker's running attempts are re-queued at once",
       {{"reason", F::string, false, "why"}}},
      {Type::error,
       Sender::both,
       "the last message was refused",
       {{"code", F::string, true,
         "malformed, too_large, bad_version, unknown_type, bad_field, unexpected, not_allowed"},
        {"message", F::string, true, "what was wrong, for the log"},
        {"in_reply_to", F::string, false, "the refused message's type, when it had one"}}},
      {Type::fetch,
       Sender::worker,
       "the worker lacks the data set of a trial (or holds other content under its name)",
       {{"name", F::string, true, "the data set's name, as in train"},
        {"fingerprint", F::string, true, "the content wanted, as in train"}}},
      {Type::data,
       Sender::controller,
       "one chunk of a data set's files, in order; the worker checks the fingerprint of the "
       "whole before it uses it, and keeps it",
       {{"fingerprint", F::string, true, "the data set's fingerprint"},
        {"name", F::string, true, "the data set's name"},
        {"file", F::string, true, "the file's name (train-images-idx3-ubyte.gz, ...)"},
        {"offset", F::integer, true, "where this chunk starts in the file"},
        {"size", F::integer, true, "the whole file's size in bytes"},
        {"bytes", F::string, true, "the chunk, base64 (at most 512 KiB before encoding)"},
        {"last", F::boolean, true, "true on the last chunk of the last file"}}},
      {Type::checkpoint,
       Sender::both,
       "one chunk, in order, of an attempt's training state after an epoch (a minas checkpoint "
       "file): from a worker at each of the train's checkpoint_epochs, kept by the controller; "
       "from the controller after a train with resume_epoch",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"epoch", F::integer, true, "the epoch the state is after"},
        {"offset", F::integer, true, "where this chunk starts in the file"},
        {"size", F::integer, true, "the whole file's size in bytes"},
        {"bytes", F::string, true, "the chunk, base64 (at most 512 KiB before encoding)"},
        {"last", F::boolean, true, "true on the last chunk"}}},
      {Type::rendezvous,
       Sender::worker,
       "where the ranks of a trial spread over several workers meet: rank 0's worker sends it "
       "once its group's hub listens, and the controller passes the address on in the train "
       "(gang.rendezvous) of every other worker of the trial",
       {{"trial", F::integer, true, "trial id"},
        {"attempt", F::integer, true, "attempt number"},
        {"address", F::string, true,
         "tcp://HOST:PORT of rank 0's hub, then #nccl= and NCCL's unique id (base64) when the "
         "trial is on GPUs"}}},
  };
  return specs;
}

const MessageSpec& spec(Type t) {
  return message_specs().at(static_cast<size_t>(t));
}

const char* type_name(Type t) {
  static const char* names[] = {
      "hello",  "welcome",   "ready", "train", "progress", "result", "failure",    "ack",
      "cancel", "heartbeat", "bye",   "error", "fetch",    "data",   "checkpoint", "rendezvous"};
  return names[static_cast<size_t>(t)];
}

std::optional<Type> type_from_name(std::string_view name) {
  for (const auto& s : message_specs())
    if (name == type_name(s.type)) return s.type;
  return std::nullopt;
}

Message parse(std::string_view payload) {
  if (payload.size() > kMaxMessageBytes)
    throw ProtocolError("too_large", std::to_string(payload.size()) + " bytes, more than the " +
                                         std::to_string(kMaxMessageBytes) + " a message may hold");
  nlohmann::json j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded()) throw ProtocolError("malformed", "not valid JSON");
  if (!j.is_object()) throw ProtocolError("malformed", "a message is a JSON object");
  if (!j.contains("v") || !j["v"].is_number_integer())
    throw ProtocolError("bad_version", "missing protocol version 'v'");
  if (j["v"] != kVersion)
    throw ProtocolError("bad_version", "protocol version " + j["v"].dump() +
                                           ", this minas speaks " + std::to_string(kVersion));
  if (!j.contains("type") || !j["type"].is_string())
    throw ProtocolError("unknown_type", "missing message 'type'");
  const auto t = type_from_name(j["type"].get<std::string>());
  if (!t)
    throw ProtocolError("unknown_type",
                        "unknown message type '" + j["type"].get<std::string>() + "'");
  check_fields(j, spec(*t));
  return {*t, std::move(j)};
}

std::string encode(Type t, nlohmann::json fields) {
  if (!fields.is_object()) throw ProtocolError("malformed", "message fields must be an object");
  fields["v"] = kVersion;
  fields["type"] = type_name(t);
  check_fields(fields, spec(t));
  std::string out = fields.dump();
  if (out.size() > kMaxMessageBytes)
    throw ProtocolError("too_large", std::string(type_name(t)) + " message of " +
                                         std::to_string(out.size()) + " bytes");
  return out;
}

std::string error_reply(const ProtocolError& e) {
  return encode(Type::error, {{"code", e.code()}, {"message", e.reason()}});
}

namespace {
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v =
        (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kBase64[(v >> k) & 63];
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += rest == 2 ? kBase64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = in[i + static_cast<size_t>(k)];
      const int d = (c == '=' && k >= 4 - pad) ? 0 : value(c);
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<uint32_t>(d);
    }
    out += static_cast<char>((v >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

std::vector<std::string> encode_checkpoint(int64_t trial, int attempt, int epoch,
                                           std::string_view state) {
  std::vector<std::string> out;
  for (size_t at = 0; at < state.size() || at == 0; at += kDataChunkBytes) {
    const size_t n = std::min(kDataChunkBytes, state.size() - at);
    out.push_back(encode(Type::checkpoint, {{"trial", trial},
                                            {"attempt", attempt},
                                            {"epoch", epoch},
                                            {"offset", static_cast<int64_t>(at)},
                                            {"size", static_cast<int64_t>(state.size())},
                                            {"bytes", base64_encode(state.substr(at, n))},
                                            {"last", at + n >= state.size()}}));
    if (state.empty()) break;
  }
  return out;
}

std::string protocol_markdown() {
  std::string md;
  for (const auto& s : message_specs()) {
    std::string doc = s.doc;
    doc[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(doc[0])));
    md += "### `" + std::string(type_name(s.type)) + "` (" + sender_name(s.sender) + ")\n\n" + doc +
          ".\n\n";
    if (s.fields.empty()) {
      md += "No fields.\n\n";
      continue;
    }
    md += "| field | type | required | meaning |\n|---|---|---|---|\n";
    for (const auto& f : s.fields)
      md += "| `" + std::string(f.name) + "` | " + field_type_name(f.type) + " | " +
            (f.required ? "yes" : "no") + " | " + f.doc + " |\n";
    md += "\n";
  }
  return md;
}

}  // namespace minas::proto
