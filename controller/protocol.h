#pragma once
// The controller-worker wire protocol (docs/protocol.md). Every message is one
// ZeroMQ frame holding a JSON object {"v": kVersion, "type": T, ...fields}.
// One table (message_specs()) says, for every type, who sends it and which
// fields it carries with their JSON types; parse() checks a payload against it
// and encode() builds one from it, so the two ends cannot drift apart.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "searchspace/error.h"

namespace minas::proto {

inline constexpr int kVersion = 1;
// A message larger than this is refused unread (error too_large): no worker
// result comes close, and a cap keeps a bad peer from making the other side
// allocate at will.
inline constexpr size_t kMaxMessageBytes = size_t{1} << 20;
// Frames up to this size are received so that a too large one gets its
// error reply; a larger frame makes libzmq drop the connection before minas
// sees it (ZMQ_MAXMSGSIZE).
inline constexpr size_t kMaxFrameBytes = size_t{16} << 20;

// What a message may hold (docs/protocol.md, "Limits"). Arrays and objects
// nested deeper than kMaxDepth, and strings or lists longer than their bound,
// are refused (too_large) before any of the message is used.
inline constexpr int kMaxDepth = 32;                // a train's space document is under 16
inline constexpr size_t kMaxNameBytes = 256;        // names, hosts, slot ids, pools, tags, codes
inline constexpr size_t kMaxPathBytes = 4096;       // data set names, arch keys, addresses
inline constexpr size_t kMaxTextBytes = 64 * 1024;  // reasons and messages, for people
inline constexpr size_t kMaxSlots = 256;            // of one worker
inline constexpr size_t kMaxTags = 64;              // a hello's tags
inline constexpr size_t kMaxListed = 1024;          // data sets, running attempts, epochs
inline constexpr size_t kMaxMetrics = 64;           // keys of a metrics object
inline constexpr int kMaxAttempt = 1'000'000;       // attempt, epoch and fidelity numbers
inline constexpr int64_t kMaxBlobBytes = int64_t{1} << 40;  // offsets and sizes of chunks

inline constexpr size_t kMaxScreenBatch = 1024;  // architectures of one screen
inline constexpr size_t kMaxEvaluators = 16;     // evaluators of one screen

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

  // Screening (controller/screening.h): architectures scored at initialization.
  screen,         // controller -> worker: score a batch of architectures on one slot
  screen_result,  // worker -> controller: a batch's scores; the worker keeps them until acked
  screen_ack,     // controller -> worker: a batch's scores are stored durably
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
// unknown_type, bad_field (from parse), unexpected or not_allowed (from the
// receiver's state); what() says what exactly and where, quoting at most a
// short, escaped excerpt of what the peer sent.
class ProtocolError : public Error {
 public:
  ProtocolError(std::string code, std::string what)
      : Error("message", std::move(what)), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// The typed content of each message, read from its JSON with every value
// checked (type, range, length) by parse(): code that handles a message uses
// these, never the raw JSON.
struct SlotInfo {
  std::string id;  // "cpu", "cpu.1", "cuda:0", "cuda:0.1": unique in its hello
  std::string name;
  std::optional<int64_t> threads, memory_bytes;
};
struct Hello {
  std::string name, host, minas, pool = "default";
  int64_t pid = 0;
  std::vector<SlotInfo> slots;    // 1 to kMaxSlots
  std::vector<std::string> data;  // fingerprints
  std::map<std::string, std::string> tags;
};
struct Welcome {
  int64_t worker_id = 0;
  int heartbeat_ms = 0, liveness = 0;
};
struct Ready {
  std::string slot;
};
struct GangInfo {
  int world = 0, first_rank = 0;
  std::string rendezvous;  // empty for rank 0's worker
};
struct Train {
  int64_t trial = 0;
  int attempt = 0;
  std::vector<std::string> slots;
  std::string space_id;
  std::optional<nlohmann::json> space;  // an object
  std::string arch;
  nlohmann::json recipe;  // an object; the trainer checks its fields
  std::string data_name = "fashion-mnist", data_fingerprint;
  int fidelity = 0;
  std::vector<int> checkpoint_epochs;
  std::optional<int> resume_epoch;
  std::vector<double> validate_at;  // points inside epochs, in epochs, ascending
  std::string latency_device;
  bool measure_only = false;
  std::optional<GangInfo> gang;
  // A warm-started training: the parent trial whose state after `epoch` the
  // controller sends next in checkpoint messages; the worker maps its
  // weights into this network (trainer/inherit.h).
  struct Inherit {
    int64_t trial = 0;
    int epoch = 0;
  };
  std::optional<Inherit> inherit;
};
// A metric a worker sent as null (not measured, or not finite) is absent.
struct Progress {
  int64_t trial = 0;
  int attempt = 0, epoch = 0;
  std::optional<double> at;  // a validation inside `epoch`, in epochs (0.25); none: its end
  std::optional<double> train_loss, train_acc, val_acc, lr, seconds;
};
struct Result {
  int64_t trial = 0;
  int attempt = 0;
  std::optional<double> val_acc, test_acc, latency_ms, train_seconds;
  std::optional<int64_t> params, macs;
  bool measure_only = false;  // a latency pool's measurement, not a training
  bool gang_member = false;   // a rank past 0 of a gang: rank 0's worker reports the trial
  std::string resume_refused;
  // A warm-started training: the parent trial and epoch its weights came
  // from, the tensors and trainable parameters inherited; or why the
  // parent's state was refused (the attempt then trained from scratch).
  std::optional<int64_t> inherited_from;
  int inherited_epoch = 0;
  int64_t inherited_tensors = 0, inherited_params = 0;
  std::string inherit_refused;
};
struct Failure {
  int64_t trial = 0;
  int attempt = 0;
  std::string reason;
  bool retryable = false;
};
struct Ack {
  int64_t trial = 0;
  int attempt = 0;
  bool counted = false;
};
struct Cancel {
  int64_t trial = 0;
  int attempt = 0;
  std::string reason;
};
struct Heartbeat {
  // (trial, attempt) of each attempt a worker runs; absent in the controller's.
  std::optional<std::vector<std::pair<int64_t, int>>> running;
};
struct Bye {
  std::string reason;
};
struct Refusal {  // an `error` message
  std::string code, message, in_reply_to;
};
struct Fetch {
  std::string name, fingerprint;
};
struct Data {
  std::string fingerprint, name, file, bytes;  // bytes: base64, decoded by the receiver
  int64_t offset = 0, size = 0;
  bool last = false;
};
struct Checkpoint {
  int64_t trial = 0;
  int attempt = 0, epoch = 0;
  int64_t offset = 0, size = 0;
  std::string bytes;  // base64
  bool last = false;
};
struct Rendezvous {
  int64_t trial = 0;
  int attempt = 0;
  std::string address;
};

// A screening request: score `archs` with each of `evaluators` (trainer/proxies.h's names) on
// one slot, networks initialized from `seed`, minibatches of `batch_size` images of the data set.
// Batch ids are the controller's own (not trial ids); (batch, attempt) names one sending.
struct Screen {
  int64_t batch = 0;
  int attempt = 0;
  std::string slot;
  std::string space_id;
  std::optional<nlohmann::json> space;  // an object
  std::vector<std::string> archs;       // 1 to kMaxScreenBatch canonical keys
  std::vector<std::string> evaluators;  // 1 to kMaxEvaluators names, each once
  std::string data_name = "fashion-mnist", data_fingerprint;
  uint64_t seed = 0;
  int batch_size = 64;
};
// One architecture of a screen's answer: a score per evaluator (absent: not finite, or the
// architecture could not be scored), the seconds it took, and what went wrong if anything did.
struct ScreenedArch {
  std::string arch;
  std::map<std::string, double> scores;
  double seconds = 0;
  std::string error;
};
struct ScreenResult {
  int64_t batch = 0;
  int attempt = 0;
  std::vector<ScreenedArch> archs;  // the screen's, in its order
};
struct ScreenAck {
  int64_t batch = 0;
  int attempt = 0;
  bool counted = false;
};

struct Message {
  Type type;
  nlohmann::json body;  // the whole object, "v" and "type" included
  // The typed content, in Type order (index = type + 1).
  std::variant<std::monostate, Hello, Welcome, Ready, Train, Progress, Result, Failure, Ack, Cancel,
               Heartbeat, Bye, Refusal, Fetch, Data, Checkpoint, Rendezvous, Screen, ScreenResult,
               ScreenAck>
      content;
  template <class T>
  const T& as() const {
    return std::get<T>(content);
  }
};

// Checks size and nesting depth (too_large) before parsing, then JSON syntax
// (malformed), version, type and every field (presence, JSON type; integers
// must be integers; unknown fields are refused, so a typo in a peer is caught
// at once), and reads the typed content with every value checked: ranges and
// the shapes of nested objects (bad_field), string lengths and list counts
// (too_large). Throws ProtocolError, and nothing else, for any payload.
Message parse(std::string_view payload);

// The payload of a message of type t with the given fields; checked like
// parse() checks what it receives, so minas never sends what it would refuse.
std::string encode(Type t, nlohmann::json fields = nlohmann::json::object());

// The error reply to a refused payload: type error with code and message
// (cut to fit kMaxTextBytes), and the refused message's type when known.
std::string error_reply(const ProtocolError& e, std::optional<Type> in_reply_to = std::nullopt);

// Peer text (a reason, a message) as kept in the store: at most max_bytes,
// cut at a UTF-8 character boundary, with "... (N bytes)" when cut.
std::string bounded_text(std::string_view text, size_t max_bytes = 2000);

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
