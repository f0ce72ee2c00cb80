#pragma once
// The controller-worker wire protocol (docs/protocol.md). Every message is one
// ZeroMQ frame holding a JSON object {"v": kVersion, "type": T, ...fields}.
// One table (message_specs()) says, for every type, who sends it and which
// fields it carries with their JSON types; parse() checks a payload against it
// and encode() builds one from it, so the two ends cannot drift apart.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "searchspace/error.h"

namespace minas::proto {

inline constexpr int kVersion = 1;
// A message larger than this is refused unread: no worker result comes close,
// and a cap keeps a bad peer from making the controller allocate at will.
inline constexpr size_t kMaxMessageBytes = size_t{1} << 20;

enum class Type {
  hello,       // worker -> controller: who it is and its device slots
  welcome,     // controller -> worker: accepted; its id and the heartbeat settings
  ready,       // worker -> controller: a slot is free for a trial
  train,       // controller -> worker: run this trial attempt on these slots
  progress,    // worker -> controller: one epoch of a running trial
  result,      // worker -> controller: a finished trial attempt and its metrics
  failure,     // worker -> controller: a trial attempt that failed, and why
  ack,         // controller -> worker: the result or failure is stored durably
  cancel,      // controller -> worker: stop this trial attempt now
  heartbeat,   // both ways: alive; from a worker, the attempts it is running
  bye,         // both ways: leaving (a worker's running attempts come back queued)
  error,       // both ways: the message you sent was refused, and why
  fetch,       // worker -> controller: send me this data set, I do not have it
  data,        // controller -> worker: one chunk of a data set's files
  checkpoint,  // both ways: one chunk of a trial's training state at an epoch
  rendezvous,  // worker -> controller: where the ranks of a trial over workers meet
};

const char* type_name(Type t);
std::optional<Type> type_from_name(std::string_view name);

enum class Sender { worker, controller, both };

enum class FieldType { string, integer, number, boolean, object, array };

struct FieldSpec {
  const char* name;
  FieldType type;
  bool required;
  const char* doc;  // one line, for docs/protocol.md
};

struct MessageSpec {
  Type type;
  Sender sender;
  const char* doc;
  std::vector<FieldSpec> fields;
};

// The protocol, one entry per type in enum order.
const std::vector<MessageSpec>& message_specs();
const MessageSpec& spec(Type t);

// A refused message: `code` is one of malformed, too_large, bad_version,
// unknown_type, bad_field; what() says what exactly and where.
class ProtocolError : public Error {
 public:
  ProtocolError(std::string code, std::string what)
      : Error("message", std::move(what)), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

struct Message {
  Type type;
  nlohmann::json body;  // the whole object, "v" and "type" included
};

// Checks size, JSON syntax, version, type and every field (presence, JSON
// type; integers must be integers; unknown fields are refused, so a typo in a
// peer is caught at once). Throws ProtocolError.
Message parse(std::string_view payload);

// The payload of a message of type t with the given fields; checked like
// parse() checks what it receives, so minas never sends what it would refuse.
std::string encode(Type t, nlohmann::json fields = nlohmann::json::object());

// The error reply to a refused payload: type error with code and message.
std::string error_reply(const ProtocolError& e);

// Base64 (RFC 4648, with padding) for the bytes a `data` message carries in JSON.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);  // nullopt: not base64

// The raw bytes a `data` or `checkpoint` message carries at most: base64 makes them 4/3 as
// large, and the message stays under kMaxMessageBytes.
inline constexpr size_t kDataChunkBytes = 512 * 1024;

// The `checkpoint` messages that carry a training state: its bytes in chunks
// of kDataChunkBytes, in order, the last one marked (one empty chunk for none).
std::vector<std::string> encode_checkpoint(int64_t trial, int attempt, int epoch,
                                           std::string_view state);

// The protocol's table as markdown, for docs/protocol.md.
std::string protocol_markdown();

}  // namespace minas::proto
