#include "worker/worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>
#include <zmq.hpp>

#include "controller/protocol.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "trainer/data.h"

namespace minas {
namespace {

using Clock = std::chrono::steady_clock;

// Files of one data set a controller may send (Fashion-MNIST has four).
constexpr size_t kMaxDataFiles = 64;
// Space documents kept by id (a search sends one).
constexpr size_t kMaxSpaces = 16;

std::string host_name() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return "localhost";
  return host;
}

std::string default_name() {
  return host_name() + ":" + std::to_string(::getpid());
}

// What a slot's thread hands the main loop (which alone touches the socket).
struct Event {
  // screened: (trial, attempt) are the batch's, and its scores are in the slot's `screened`.
  enum class Kind { progress, outcome, checkpoint, rendezvous, screened } kind;
  int64_t trial;
  int attempt;
  int epoch = 0;
  nlohmann::json metrics;
  TrialOutcome outcome;
  size_t slot = 0;
  std::string bytes;  // checkpoint: the training state; rendezvous: the hub's address
};

struct Slot {
  DeviceSlot device;
  std::thread thread;
  std::atomic<bool> cancel{false};
  bool busy = false;
  Clock::time_point ready_sent;
  int64_t trial = 0;
  int attempt = 0;
  std::vector<size_t> group;  // on a trial's first slot: all the slots it runs on
  bool screening = false;     // busy with a screening batch: (trial, attempt) are the batch's
  // Its scores, written by the slot's thread before it pushes the event that says so.
  std::vector<ScreenedScores> screened;
};

}  // namespace

std::vector<DeviceSlot> parse_devices(const std::string& text) {
  std::vector<DeviceSlot> out;
  const std::vector<DeviceSlot> here = detect_slots();
  int cpus = 0;
  std::string item;
  std::stringstream ss(text);
  std::vector<std::string> items;
  while (std::getline(ss, item, ',')) items.push_back(item);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& it = items[i];
    if (it == "cpu" || it.rfind("cpu:", 0) == 0) {
      DeviceSlot s = here.front();
      if (it.size() > 4) {
        const std::string n = it.substr(4);
        if (n.empty() || n.size() > 4 || n.find_first_not_of("0123456789") != std::string::npos ||
            std::stoi(n) < 1)
          throw Error("--devices " + text, "'" + it + "': threads must be a positive integer");
        s.threads = std::stoi(n);
      }
      s.id = cpus == 0 ? "cpu" : "cpu." + std::to_string(cpus);
      ++cpus;
      out.push_back(s);
    } else if (it.rfind("cuda:", 0) == 0) {
      // "cuda:0,1": the numbers after the first item belong to it.
      std::vector<std::string> ids{it.substr(5)};
      while (i + 1 < items.size() && !items[i + 1].empty() &&
             items[i + 1].find_first_not_of("0123456789x") == std::string::npos)
        ids.push_back(items[++i]);
      for (const std::string& item_id : ids) {
        // "cuda:0x3": three slots on GPU 0 (cuda:0, cuda:0.1, cuda:0.2), so
        // several small candidates keep one GPU busy.
        std::string id = item_id;
        int copies = 1;
        if (const size_t x = id.find('x'); x != std::string::npos) {
          const std::string k = id.substr(x + 1);
          if (k.empty() || k.size() > 3 || k.find_first_not_of("0123456789") != std::string::npos ||
              std::stoi(k) < 1)
            throw Error(
                "--devices " + text,
                "'cuda:" + item_id + "': the slots per GPU after x must be a positive integer");
          copies = std::stoi(k);
          id = id.substr(0, x);
        }
        if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
          throw Error("--devices " + text, "'cuda:" + item_id + "' is not cuda:N or cuda:NxK");
        const std::string slot = "cuda:" + id;
        auto d = std::find_if(here.begin(), here.end(),
                              [&](const DeviceSlot& s) { return s.id == slot; });
        if (d == here.end())
          throw Error("--devices " + text, "no GPU " + slot + " on this machine (" +
                                               std::to_string(here.size() - 1) + " found)");
        for (int c = 0; c < copies; ++c) {
          DeviceSlot s = *d;
          if (c > 0) s.id = slot + "." + std::to_string(c);
          out.push_back(s);
        }
      }
    } else {
      throw Error("--devices " + text, "'" + it + "' is not cpu, cpu:THREADS or cuda:N");
    }
  }
  if (out.empty()) throw Error("--devices", "no device slots given");
  return out;
}

struct Worker::Impl {
  explicit Impl(WorkerOptions o) : opt(std::move(o)) {
    if (opt.name.empty()) opt.name = default_name();
    if (!opt.runner) throw Error("worker", "no trial runner");
    if (!opt.screener) opt.screener = make_proxy_screener();
    for (const DeviceSlot& d : opt.slots) {
      slots.push_back(std::make_unique<Slot>());
      slots.back()->device = d;
    }
    if (slots.empty()) throw Error("worker", "no device slots");
    // Its name, pool, tags and slots as the controller will check them, before any connection.
    try {
      (void)hello_payload();
    } catch (const proto::ProtocolError& e) {
      throw Error("worker", e.reason());
    }
    // Slot threads ring this to wake the main loop's poll at once, so a
    // finished trial is reported without waiting out the poll timeout.
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0) throw Error("worker", std::string("eventfd: ") + std::strerror(errno));
  }

  ~Impl() {
    for (auto& s : slots) s->cancel = true;
    for (auto& s : slots)
      if (s->thread.joinable()) s->thread.join();
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void log(const std::string& line) const {
    if (opt.log) opt.log(line);
  }

  void connect() {
    socket = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::routing_id, opt.name);
    socket->set(zmq::sockopt::linger, 0);
    // Up to kMaxFrameBytes is read, so that a frame over kMaxMessageBytes gets its error reply.
    socket->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxFrameBytes));
    // A socket whose CURVE handshake was refused never tries again, so every
    // reconnect makes a new one (this function), which a refused key needs.
    if (opt.curve_key) auth::make_curve_client(*socket, *opt.curve_key, opt.server_public_key);
    try {
      socket->connect(opt.connect);
    } catch (const zmq::error_t& e) {
      throw Error("worker --connect " + opt.connect, std::string("cannot connect: ") + e.what());
    }
    welcomed = false;
    hello_sent = Clock::now();
    send(hello_payload());
    last_heard = Clock::now();
  }

  // Where the other ranks of a gang reach this worker's hub.
  std::string advertise_host() const {
    if (!opt.advertise.empty()) return opt.advertise;
    return host_name();
  }

  std::string hello_payload() const {
    nlohmann::json slot_list = nlohmann::json::array();
    for (const auto& s : slots)
      slot_list.push_back({{"id", s->device.id},
                           {"name", s->device.name},
                           {"threads", s->device.threads},
                           {"memory_bytes", s->device.memory_bytes}});
    nlohmann::json tags = nlohmann::json::object();
    for (const auto& [k, v] : opt.tags) tags[k] = v;
    if (!tags.contains("device") && !slots.empty())
      tags["device"] = slots.front()->device.id.rfind("cuda", 0) == 0 ? "cuda" : "cpu";
    return proto::encode(proto::Type::hello, {{"name", opt.name},
                                              {"host", host_name()},
                                              {"pid", static_cast<int64_t>(::getpid())},
                                              {"minas", "0.1.0"},
                                              {"slots", slot_list},
                                              {"pool", opt.pool},
                                              {"tags", tags}});
  }

  void send_ready(Slot& s) {
    s.ready_sent = Clock::now();
    send(proto::encode(proto::Type::ready, {{"slot", s.device.id}}));
  }

  // Once per wait for a welcome: the controller answers every message it had
  // queued from us with `unexpected`, and a hello for each would have it
  // welcome us (and take our unacknowledged results) as many times.
  void register_again() {
    const auto wait =
        std::chrono::milliseconds(static_cast<int64_t>(opt.heartbeat_ms) * opt.liveness);
    if (hello_sent && Clock::now() - *hello_sent < wait) return;
    welcomed = false;
    hello_sent = Clock::now();
    send(hello_payload());
  }

  // Never blocks: with its queue to the controller full (the controller is
  // gone or not reading), the message is dropped; results and failures are
  // kept until acknowledged and sent again at the next welcome.
  void send(const std::string& payload) {
    try {
      if (socket->send(zmq::buffer(payload), zmq::send_flags::dontwait)) {
        queue_full = false;
      } else if (!std::exchange(queue_full, true)) {
        log("the queue to the controller is full: messages are dropped until it reads again");
      }
    } catch (const zmq::error_t& e) {
      log(std::string("send failed: ") + e.what());
    }
  }

  void start(size_t i, const proto::Train& b) {
    Slot& s = *slots[i];
    TrialRequest req;
    req.trial = b.trial;
    req.attempt = b.attempt;
    req.space = spaces.at(b.space_id);
    req.arch = b.arch;
    req.recipe = b.recipe;
    req.data = b.data_name;
    req.data_fingerprint = b.data_fingerprint;
    req.fidelity = b.fidelity;
    req.validate_at = b.validate_at;
    req.latency_device = b.latency_device;
    req.measure_only = b.measure_only;
    if (b.gang) {
      // Ranks first_rank.. of a trial spread over several workers: rank 0's
      // worker opens the group's hub and says where it is; the others get
      // that address from the controller.
      req.world = b.gang->world;
      req.first_rank = b.gang->first_rank;
      req.rendezvous = b.gang->rendezvous;
      if (req.first_rank == 0)
        req.on_rendezvous = [this, trial = req.trial, attempt = req.attempt, i](
                                int port, const std::string& nccl_id) {
          std::string at = "tcp://" + advertise_host() + ":" + std::to_string(port);
          if (!nccl_id.empty()) at += "#nccl=" + nccl_id;
          push({Event::Kind::rendezvous, trial, attempt, 0, {}, {}, i, at});
        };
    }
    req.threads = s.device.threads;
    req.ranks = std::max<int>(1, static_cast<int>(s.group.size()));
    for (size_t k : s.group.empty() ? std::vector<size_t>{i} : s.group)
      req.devices.push_back(slots[k]->device.id);
    if (!b.checkpoint_epochs.empty()) {
      req.checkpoint_epochs = b.checkpoint_epochs;
      req.on_checkpoint = [this, trial = req.trial, attempt = req.attempt, i](int epoch,
                                                                              std::string bytes) {
        Event e{Event::Kind::checkpoint, trial, attempt, epoch, {}, {}, i, std::move(bytes)};
        push(std::move(e));
      };
    }
    if (auto st = states.find({req.trial, req.attempt}); st != states.end()) {
      if (b.resume_epoch) {
        req.resume = std::move(st->second.bytes);
        req.resume_epoch = st->second.epoch;
      } else if (b.inherit) {  // the parent's state of a warm start
        req.inherit = std::move(st->second.bytes);
        req.inherit_trial = b.inherit->trial;
        req.inherit_epoch = st->second.epoch;
      }
      states.erase(st);
    }
    if (s.thread.joinable()) s.thread.join();
    if (opt.on_dispatch)
      opt.on_dispatch(
          std::chrono::duration<double, std::milli>(Clock::now() - s.ready_sent).count());
    s.busy = true;
    s.trial = req.trial;
    s.attempt = req.attempt;
    s.cancel = false;
    s.thread = std::thread([this, i, req] {
      Slot& slot = *slots[i];
      TrialOutcome out = opt.runner->run(
          req,
          [&](int epoch, const nlohmann::json& m) {
            push({Event::Kind::progress, req.trial, req.attempt, epoch, m, {}, i, {}});
          },
          [&] { return slot.cancel.load(); });
      push({Event::Kind::outcome, req.trial, req.attempt, 0, {}, std::move(out), i, {}});
    });
  }

  // ------------------------------------------------------------ data sets

  std::filesystem::path cache_root() const {
    if (!opt.data_cache.empty()) return opt.data_cache;
    if (const char* d = std::getenv("MINAS_DATA_CACHE")) return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"))
      return std::filesystem::path(x) / "minas/data";
    if (const char* h = std::getenv("HOME")) return std::filesystem::path(h) / ".cache/minas/data";
    return std::filesystem::temp_directory_path() / "minas-data";
  }

  // NAME-FINGERPRINT, the name made a single path component; the name stays
  // in it so that what the trainer derives from the name holds for the copy.
  std::filesystem::path cache_folder(const std::string& name, const std::string& fp) const {
    std::string safe = std::filesystem::path(name).filename().string();
    if (safe.empty()) safe = "data";
    return cache_root() / (safe + "-" + fp);
  }

  // The local folder or name that holds the data set with fingerprint fp, if any.
  std::optional<std::string> local_data(const std::string& name, const std::string& fp) {
    if (auto it = data_ready.find(fp); it != data_ready.end()) return it->second;
    for (const std::string& candidate : {name, cache_folder(name, fp).string()}) {
      try {
        if (data::load_dataset(candidate).train.fingerprint() == fp) {
          data_ready[fp] = candidate;
          return candidate;
        }
      } catch (const Error&) {
        // Not here, or other content under that name: try the next place.
      }
    }
    return std::nullopt;
  }

  // The epoch of the state a train waits for: the one it resumes from, else
  // its parent's (a warm start); nullopt: none.
  static std::optional<int> awaited_epoch(const proto::Train& b) {
    if (b.resume_epoch) return b.resume_epoch;
    if (b.inherit) return b.inherit->epoch;
    return std::nullopt;
  }

  // Starts a train on slot i, or parks it until the training state it
  // resumes from (or inherits), and its data set, have arrived.
  void begin(size_t i, proto::Train b) {
    if (awaited_epoch(b)) {
      const std::pair<int64_t, int> key{b.trial, b.attempt};
      auto st = states.find(key);
      if (st == states.end() || !st->second.complete) {
        State& state = states[key];
        state.slot = i;
        state.train = std::move(b);
        slots[i]->busy = true;  // reserved for the waiting attempt
        slots[i]->trial = key.first;
        slots[i]->attempt = key.second;
        return;
      }
    }
    const std::string name = b.data_name;
    const std::string fp = b.data_fingerprint;
    if (!opt.runner->needs_data() || fp.empty() || b.measure_only) return start(i, b);
    if (auto where = local_data(name, fp)) {
      b.data_name = *where;
      return start(i, b);
    }
    slots[i]->busy = true;  // reserved for the parked attempt
    slots[i]->trial = b.trial;
    slots[i]->attempt = b.attempt;
    parked.push_back({i, std::move(b)});
    if (downloads.emplace(fp, Download{name, {}}).second) {
      log("data set " + name + " (" + fp + ") is not here: fetching it from the controller");
      send(proto::encode(proto::Type::fetch, {{"name", name}, {"fingerprint", fp}}));
    }
  }

  void on_data(const proto::Data& b) {
    const std::string& fp = b.fingerprint;
    auto d = downloads.find(fp);
    if (d == downloads.end()) return;  // not asked for, or already done
    if (d->second.files.size() >= kMaxDataFiles && !d->second.files.count(b.file)) {
      fail_download(fp, "more than " + std::to_string(kMaxDataFiles) + " files");
      return;
    }
    std::string& file = d->second.files[b.file];
    const auto bytes = proto::base64_decode(b.bytes);
    if (!bytes || b.offset != static_cast<int64_t>(file.size()) ||
        static_cast<int64_t>(file.size() + bytes->size()) > b.size) {
      fail_download(fp, "a chunk of the data set arrived damaged or out of order");
      return;
    }
    file += *bytes;
    if (!b.last) return;
    try {
      const auto folder = cache_folder(d->second.name, fp);
      const auto tmp = folder.string() + ".part-" + std::to_string(::getpid());
      std::filesystem::remove_all(tmp);
      std::filesystem::create_directories(tmp);
      for (const auto& [fname, content] : d->second.files) {
        if (fname.find('/') != std::string::npos || fname.empty() || fname[0] == '.')
          throw Error("data set " + d->second.name, "bad file name '" + fname + "'");
        std::ofstream out(std::filesystem::path(tmp) / fname, std::ios::binary);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
        if (!out) throw Error(tmp, "cannot write the data set here");
      }
      const std::string got = data::load_dataset(tmp).train.fingerprint();
      if (got != fp)
        throw Error("data set " + d->second.name,
                    "the files sent have fingerprint " + got + ", not " + fp);
      std::filesystem::remove_all(folder);
      std::filesystem::rename(tmp, folder);
      data_ready[fp] = folder.string();
      log("data set " + d->second.name + " kept in " + folder.string());
    } catch (const std::exception& e) {
      fail_download(fp, e.what());
      return;
    }
    downloads.erase(d);
    std::vector<std::pair<size_t, proto::Train>> ready;
    std::erase_if(parked, [&](std::pair<size_t, proto::Train>& p) {
      if (p.second.data_fingerprint != fp) return false;
      ready.push_back(std::move(p));
      return true;
    });
    for (auto& [i, b] : ready) {
      slots[i]->busy = false;
      b.data_name = data_ready[fp];
      start(i, b);
    }
  }

  // A chunk of the training state a parked attempt resumes from.
  void on_checkpoint(const proto::Checkpoint& b) {
    const std::pair<int64_t, int> key{b.trial, b.attempt};
    auto st = states.find(key);
    if (st == states.end() || st->second.complete) return;  // not waited for (cancelled)
    State& state = st->second;
    const auto bytes = proto::base64_decode(b.bytes);
    if (!bytes || b.offset != static_cast<int64_t>(state.bytes.size()) ||
        b.epoch != awaited_epoch(state.train).value_or(-1) ||
        static_cast<int64_t>(state.bytes.size() + bytes->size()) > b.size) {
      // Start over instead: the attempt runs from its first epoch.
      log("the training state of trial " + std::to_string(key.first) +
          " arrived damaged: it starts from scratch");
      state.train.resume_epoch.reset();
      state.train.inherit.reset();
      proto::Train train = std::move(state.train);
      const size_t slot = state.slot;
      states.erase(st);
      slots[slot]->busy = false;
      begin(slot, std::move(train));
      return;
    }
    state.bytes += *bytes;
    if (!b.last) return;
    state.complete = true;
    state.epoch = b.epoch;
    slots[state.slot]->busy = false;
    begin(state.slot, state.train);
  }

  // The parked attempts of that data set fail (retryable: another worker may
  // have it), and their slots are offered again.
  void fail_download(const std::string& fp, const std::string& why) {
    log("fetching data set " + fp + " failed: " + why);
    downloads.erase(fp);
    std::erase_if(parked, [&](std::pair<size_t, proto::Train>& p) {
      if (p.second.data_fingerprint != fp) return false;
      const size_t first = p.first;
      const std::string payload = failure_payload(
          p.second.trial, p.second.attempt, "data set not available on this worker: " + why, true);
      unacked[{p.second.trial, p.second.attempt}] = payload;
      send(payload);
      release(first);
      return true;
    });
  }

  void push(Event e) {
    {
      std::lock_guard lock(mu);
      events.push_back(std::move(e));
    }
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd, &one, sizeof one);  // EAGAIN: already rung
  }

  // Every message from the controller: parsed into its typed content with
  // every value bounded, and refused with an `error` and a log line when it
  // is malformed or not what a controller sends; nothing it says makes an
  // exception leave the worker's loop.
  void on_message(const std::string& payload) {
    std::optional<proto::Type> type;
    try {
      const proto::Message m = proto::parse(payload);
      type = m.type;
      last_heard = Clock::now();
      handle(m);
    } catch (const proto::ProtocolError& e) {
      refuse(e, type);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      refuse(proto::ProtocolError("bad_field", e.what()), type);
    }
  }

  void refuse(const proto::ProtocolError& e, std::optional<proto::Type> type) {
    log("refused " +
        (type ? std::string("a ") + proto::type_name(*type) : std::string("a message")) +
        " from the controller: " + e.code() + ": " + printable_excerpt(e.reason(), 300));
    send(proto::error_reply(e, type));
  }

  void handle(const proto::Message& m) {
    switch (m.type) {
      case proto::Type::welcome: {
        const auto& w = m.as<proto::Welcome>();
        welcomed = true;
        hello_sent.reset();
        opt.heartbeat_ms = std::max(10, w.heartbeat_ms);
        opt.liveness = w.liveness;
        backoff_s = 0.1;
        log("connected to " + opt.connect + " as worker " + std::to_string(w.worker_id));
        for (const auto& [key, payload] : unacked) send(payload);  // kept across a reconnect
        for (const auto& [key, payload] : unacked_screens) send(payload);
        for (const auto& s : slots)
          if (!s->busy) send_ready(*s);
        // What it runs, at once: a restarted controller gives it back to us.
        send_heartbeat();
        return;
      }
      case proto::Type::train:
        return on_train(m.as<proto::Train>());
      case proto::Type::data:
        return on_data(m.as<proto::Data>());
      case proto::Type::checkpoint:
        return on_checkpoint(m.as<proto::Checkpoint>());
      case proto::Type::ack: {
        const auto& a = m.as<proto::Ack>();
        unacked.erase({a.trial, a.attempt});
        return;
      }
      case proto::Type::cancel: {
        const auto& c = m.as<proto::Cancel>();
        if (auto st = states.find({c.trial, c.attempt});
            st != states.end() && !st->second.complete) {
          const size_t first = st->second.slot;
          states.erase(st);
          release(first);
          return;
        }
        for (auto& s : slots)
          if (s->busy && !s->screening && s->trial == c.trial && s->attempt == c.attempt)
            s->cancel = true;
        return;
      }
      case proto::Type::screen:
        return on_screen(m.as<proto::Screen>());
      case proto::Type::screen_ack: {
        const auto& a = m.as<proto::ScreenAck>();
        unacked_screens.erase({a.batch, a.attempt});
        return;
      }
      case proto::Type::heartbeat:
        return;
      case proto::Type::bye: {
        const std::string& reason = m.as<proto::Bye>().reason;
        log("the controller said goodbye: " +
            (reason.empty() ? "no reason" : printable_excerpt(reason, 200)));
        leaving = true;
        return;
      }
      case proto::Type::error: {
        const auto& r = m.as<proto::Refusal>();
        log("the controller refused " +
            (r.in_reply_to.empty() ? "a message" : "our " + printable_excerpt(r.in_reply_to, 40)) +
            ": " + printable_excerpt(r.code, 40) + ": " + printable_excerpt(r.message, 200));
        // A restarted controller does not know us (our socket reconnected on
        // its own): register again, then resend what is unacknowledged. Every
        // message it had queued gets this answer: one hello is enough.
        if (r.code == "unexpected" && !leaving && !stopping) register_again();
        return;
      }
      default:
        throw proto::ProtocolError(
            "not_allowed", std::string("a controller does not send ") + proto::type_name(m.type));
    }
  }

  void on_train(const proto::Train& b) {
    if (b.space) {
      // A search sends one space; a controller sending ever new ones is not
      // let fill the memory with them.
      if (spaces.size() >= kMaxSpaces && !spaces.count(b.space_id)) spaces.clear();
      spaces[b.space_id] = *b.space;
    }
    if (!spaces.count(b.space_id)) {
      send(failure_payload(b.trial, b.attempt,
                           "space " + printable_excerpt(b.space_id, 40) + " was never sent here",
                           true));
      return;
    }
    // Every slot asked for must be here and free; the first runs the
    // trial, the others are reserved for its other ranks.
    std::vector<size_t> group;
    for (const auto& id : b.slots)
      for (size_t k = 0; k < slots.size(); ++k)
        if (id == slots[k]->device.id && !slots[k]->busy &&
            std::find(group.begin(), group.end(), k) == group.end())
          group.push_back(k);
    if (group.empty() || group.size() != b.slots.size()) {
      std::string wanted;
      for (const auto& id : b.slots) wanted += (wanted.empty() ? "" : ",") + id;
      send(failure_payload(b.trial, b.attempt,
                           "slot " + printable_excerpt(wanted, 80) + " is not free here", true));
      return;
    }
    for (size_t k : group) {
      slots[k]->trial = b.trial;
      slots[k]->attempt = b.attempt;
      slots[k]->busy = k != group.front();  // the first is taken by begin()
    }
    slots[group.front()]->group = group;
    begin(group.front(), b);
  }

  // A failure report; the reason cut so that the message stays within the protocol's bounds.
  static std::string failure_payload(int64_t trial, int attempt, const std::string& reason,
                                     bool retryable) {
    return proto::encode(proto::Type::failure,
                         {{"trial", trial},
                          {"attempt", attempt},
                          {"reason", proto::bounded_text(reason, proto::kMaxTextBytes / 2)},
                          {"retryable", retryable}});
  }

  void send_heartbeat() {
    nlohmann::json running = nlohmann::json::array();
    for (const auto& s : slots)
      if (s->busy && !s->screening)
        running.push_back({{"trial", s->trial}, {"attempt", s->attempt}});
    if (welcomed) send(proto::encode(proto::Type::heartbeat, {{"running", running}}));
  }

  void drain_events() {
    std::vector<Event> batch;
    {
      std::lock_guard lock(mu);
      batch.swap(events);
    }
    for (Event& e : batch) {
      try {
        report(e);
      } catch (const proto::ProtocolError& x) {
        // What the runner produced breaks the protocol's bounds (a metric out
        // of range): said as a failure instead of a result nobody would take.
        log("trial " + std::to_string(e.trial) + ": cannot report " + x.what());
        if (e.kind == Event::Kind::screened) {
          // Not run, as far as the controller can tell: it sends the batch again.
          send_screen_result(e.trial, e.attempt, nlohmann::json::array());
        } else if (e.kind == Event::Kind::outcome) {
          const std::string payload = failure_payload(
              e.trial, e.attempt, std::string("its report broke the protocol: ") + x.what(), false);
          unacked[{e.trial, e.attempt}] = payload;
          send(payload);
        }
      }
      if (e.kind == Event::Kind::outcome || e.kind == Event::Kind::screened) release(e.slot);
    }
  }

  void report(const Event& e) {
    if (e.kind == Event::Kind::screened) {
      if (e.outcome.kind == TrialOutcome::Kind::cancelled) return;
      nlohmann::json archs = nlohmann::json::array();
      for (const ScreenedScores& x : slots[e.slot]->screened) {
        nlohmann::json a = {{"arch", x.arch}, {"scores", x.scores}, {"seconds", x.seconds}};
        // Bounded, so that a batch of errors stays one message.
        if (!x.error.empty()) a["error"] = proto::bounded_text(x.error, 500);
        archs.push_back(std::move(a));
      }
      send_screen_result(e.trial, e.attempt, std::move(archs));
      return;
    }
    if (e.kind == Event::Kind::rendezvous) {
      send(proto::encode(proto::Type::rendezvous,
                         {{"trial", e.trial}, {"attempt", e.attempt}, {"address", e.bytes}}));
      return;
    }
    if (e.kind == Event::Kind::checkpoint) {
      // Not acknowledged: a state that is lost only means a retry starts over.
      for (const std::string& chunk :
           proto::encode_checkpoint(e.trial, e.attempt, e.epoch, e.bytes))
        send(chunk);
      return;
    }
    if (e.kind == Event::Kind::progress) {
      nlohmann::json body = {
          {"trial", e.trial}, {"attempt", e.attempt}, {"epoch", e.epoch}, {"metrics", e.metrics}};
      if (e.metrics.contains("at")) {  // a validation inside the epoch (TrialRunner::run)
        body["at"] = e.metrics["at"];
        body["metrics"].erase("at");
      }
      send(proto::encode(proto::Type::progress, std::move(body)));
      return;
    }
    const TrialOutcome& o = e.outcome;
    std::string payload;
    if (o.kind == TrialOutcome::Kind::done) {
      payload = proto::encode(proto::Type::result,
                              {{"trial", e.trial}, {"attempt", e.attempt}, {"metrics", o.metrics}});
    } else if (o.kind == TrialOutcome::Kind::failed) {
      payload = failure_payload(e.trial, e.attempt, o.reason, o.retryable);
    }
    if (!payload.empty()) {
      unacked[{e.trial, e.attempt}] = payload;
      send(payload);
    }
  }

  // ------------------------------------------------------------ screening

  // A screening request: scored on its slot's thread by the screener. A slot
  // that is not ours or not free gets an empty answer, which the controller
  // takes as "not run" and sends the batch elsewhere.
  void on_screen(const proto::Screen& b) {
    if (b.space) {
      if (spaces.size() >= kMaxSpaces && !spaces.count(b.space_id)) spaces.clear();
      spaces[b.space_id] = *b.space;
    }
    size_t i = slots.size();
    for (size_t k = 0; k < slots.size(); ++k)
      if (slots[k]->device.id == b.slot && !slots[k]->busy) i = k;
    if (i == slots.size() || !spaces.count(b.space_id)) {
      // Said "not run" (no archs): the controller sends the batch again.
      log("screen batch " + std::to_string(b.batch) + ": " +
          (i == slots.size() ? "slot " + printable_excerpt(b.slot, 40) + " is not free here"
                             : "its space was never sent here") +
          ": not run");
      send_screen_result(b.batch, b.attempt, nlohmann::json::array());
      if (i < slots.size()) send_ready(*slots[i]);  // still free: offered again
      return;
    }
    ScreenRequest req;
    req.space = spaces.at(b.space_id);
    req.archs = b.archs;
    req.evaluators = b.evaluators;
    req.data = b.data_name;
    req.data_fingerprint = b.data_fingerprint;
    // A data set fetched for training earlier is found in the cache.
    if (!b.data_fingerprint.empty())
      if (auto where = local_data(b.data_name, b.data_fingerprint)) req.data = *where;
    req.seed = b.seed;
    req.batch_size = b.batch_size;
    Slot& s = *slots[i];
    req.device = s.device.id;
    req.threads = s.device.threads;
    if (s.thread.joinable()) s.thread.join();
    s.busy = true;
    s.screening = true;
    s.trial = b.batch;
    s.attempt = b.attempt;
    s.cancel = false;
    s.thread = std::thread([this, i, req, batch = b.batch, attempt = b.attempt] {
      Slot& slot = *slots[i];
      slot.screened = opt.screener->screen(req, [&] { return slot.cancel.load(); });
      Event e{Event::Kind::screened, batch, attempt, 0, {}, {}, i, {}};
      // Cancelled (the worker is stopping): no answer; its bye has the controller send it again.
      e.outcome.kind =
          slot.cancel.load() ? TrialOutcome::Kind::cancelled : TrialOutcome::Kind::done;
      push(std::move(e));
    });
  }

  // The answer to a screen, kept until the controller acknowledges it.
  void send_screen_result(int64_t batch, int attempt, nlohmann::json archs) {
    const bool ran = !archs.empty();
    const std::string payload = proto::encode(
        proto::Type::screen_result, {{"batch", batch}, {"attempt", attempt}, {"archs", archs}});
    if (ran) unacked_screens[{batch, attempt}] = payload;
    send(payload);
  }

  // The attempt on slot `first` is over: its slots are free and offered again.
  void release(size_t first) {
    std::vector<size_t> group = std::move(slots[first]->group);
    slots[first]->group.clear();
    if (group.empty()) group = {first};
    for (size_t k : group) {
      slots[k]->busy = false;
      slots[k]->screening = false;
      if (welcomed && !stopping && !leaving) send_ready(*slots[k]);
    }
  }

  // A poll that a signal interrupts (SIGTERM, SIGINT) returns false instead of throwing.
  static bool poll_once(zmq::pollitem_t* items, std::chrono::milliseconds timeout) {
    try {
      zmq::poll(items, 2, timeout);
      return true;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return false;
      throw;
    }
  }

  int run(std::atomic<bool>& stop) {
    connect();
    auto last_beat = Clock::now();
    while (true) {
      if (stop.load() && !stopping) {
        stopping = true;
        for (auto& s : slots) s->cancel = true;
      }
      const bool any_busy =
          std::any_of(slots.begin(), slots.end(), [](const auto& s) { return s->busy; });
      if ((stopping || leaving) && !any_busy) break;
      zmq::pollitem_t items[] = {{socket->handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, wake_fd, ZMQ_POLLIN, 0}};
      if (!poll_once(items, std::chrono::milliseconds(10))) continue;
      if (items[1].revents & ZMQ_POLLIN) {
        uint64_t count;
        [[maybe_unused]] const ssize_t n = ::read(wake_fd, &count, sizeof count);
      }
      if (items[0].revents & ZMQ_POLLIN) {
        zmq::message_t msg;
        while (socket->recv(msg, zmq::recv_flags::dontwait)) on_message(msg.to_string());
      }
      drain_events();
      const auto now = Clock::now();
      if (now - last_beat >= std::chrono::milliseconds(opt.heartbeat_ms)) {
        send_heartbeat();
        last_beat = now;
      }
      const auto silent =
          std::chrono::milliseconds(static_cast<int64_t>(opt.heartbeat_ms) * opt.liveness);
      if (!leaving && !stopping && now - last_heard > silent) {
        log("no word from the controller for " + std::to_string(silent.count()) + " ms" +
            (!welcomed && opt.curve_key ? " (if this goes on: is this worker's public key on the "
                                          "controller's allow-list?)"
                                        : "") +
            ": reconnecting in " + std::to_string(backoff_s) + " s");
        std::this_thread::sleep_for(std::chrono::duration<double>(backoff_s));
        backoff_s = std::min(opt.max_backoff_s, backoff_s * 2);
        connect();
      }
    }
    drain_events();
    if (stopping && !leaving) send(proto::encode(proto::Type::bye, {{"reason", "interrupted"}}));
    // Give the last messages a moment to leave before the socket closes.
    socket->set(zmq::sockopt::linger, 1000);
    socket.reset();
    return 0;
  }

  WorkerOptions opt;
  zmq::context_t ctx;
  std::unique_ptr<zmq::socket_t> socket;
  std::vector<std::unique_ptr<Slot>> slots;
  std::mutex mu;
  std::vector<Event> events;
  std::map<std::pair<int64_t, int>, std::string> unacked;  // (trial, attempt) -> result or failure
  std::map<std::string, nlohmann::json> spaces;            // space_id -> document as sent
  struct Download {
    std::string name;
    std::map<std::string, std::string> files;  // file name -> bytes so far
  };
  std::map<std::string, std::string> data_ready;        // fingerprint -> local name or folder
  std::map<std::string, Download> downloads;            // fingerprint -> arriving files
  std::vector<std::pair<size_t, proto::Train>> parked;  // (slot, train) waiting for data
  // Training states that resumed attempts wait for, by (trial, attempt).
  struct State {
    size_t slot = 0;
    proto::Train train;
    std::string bytes;  // so far
    int epoch = 0;
    bool complete = false;
  };
  std::map<std::pair<int64_t, int>, State> states;
  // Screening results kept until acknowledged, by (batch, attempt): batch ids are not trial ids.
  std::map<std::pair<int64_t, int>, std::string> unacked_screens;
  Clock::time_point last_heard;
  std::optional<Clock::time_point> hello_sent;  // while waiting for the welcome to it
  double backoff_s = 0.1;
  int wake_fd = -1;
  bool welcomed = false, stopping = false, leaving = false;
  bool queue_full = false;  // the last send found the queue to the controller full
};

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Worker::~Worker() = default;
int Worker::run() {
  return impl_->run(stop_);
}

}  // namespace minas
