#include "worker/runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "controller/objective.h"
#include "controller/protocol.h"
#include "searchspace/csv_table.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "trainer/backends.h"
#include "trainer/comm.h"
#include "trainer/inherit.h"
#include "trainer/socket_comm.h"
#include "trainer/train.h"

namespace minas {
namespace {

// Calls `abort` once `cancelled` turns true (polled every 50 ms) while it
// lives: the ranks of a cancelled gang must not wait on a peer that is gone.
class AbortOnCancel {
 public:
  AbortOnCancel(std::function<bool()> cancelled, std::function<void()> abort)
      : thread_([this, cancelled = std::move(cancelled), abort = std::move(abort)] {
          while (!over_) {
            if (cancelled()) {
              abort();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }) {}
  ~AbortOnCancel() {
    over_ = true;
    thread_.join();
  }
  AbortOnCancel(const AbortOnCancel&) = delete;
  AbortOnCancel& operator=(const AbortOnCancel&) = delete;

 private:
  std::atomic<bool> over_{false};
  std::thread thread_;  // last: started once the flag exists
};

// The parent's weights copied into `model` where the mutation left its
// layers unchanged; what was inherited, as the result reports it. Throws
// Error for a state that is not usable: damaged, of another space, of
// another epoch than the train named, or not of its own architecture.
nlohmann::json inherit_from_parent(const TrialRequest& req, const Space& space,
                                   const std::filesystem::path& scratch, Model& model) {
  const std::string origin = "trial " + std::to_string(req.trial) + ": the state of parent trial " +
                             std::to_string(req.inherit_trial);
  {
    std::ofstream out(scratch, std::ios::binary | std::ios::trunc);
    out.write(req.inherit.data(), static_cast<std::streamsize>(req.inherit.size()));
    if (!out) throw Error(scratch.string(), "cannot write the parent's training state here");
  }
  const Checkpoint parent = load_checkpoint(scratch.string());
  if (parent.meta.space != space.name())
    throw Error(origin, "is of space '" + printable_excerpt(parent.meta.space, 60) + "', not '" +
                            space.name() + "'");
  const nlohmann::json& info = parent.meta.info;
  if (!info.contains("epoch") || info["epoch"] != req.inherit_epoch)
    throw Error(origin, "is not of epoch " + std::to_string(req.inherit_epoch));
  const LayerGraph graph = space.lower(space.parse_key(parent.meta.arch_key));
  const InheritReport r = inherit_weights(model, graph, parent, origin);
  return {{"inherited_from", req.inherit_trial},
          {"inherited_epoch", req.inherit_epoch},
          {"inherited_tensors", r.tensors},
          {"inherited_params", r.params}};
}

// What a resumed state says its attempt inherited (its "inherited" info, as
// inherit_from_parent made it); null when it inherited nothing.
nlohmann::json inherited_of(const nlohmann::json& info) {
  if (!info.contains("inherited") || !info["inherited"].is_object()) return nullptr;
  const nlohmann::json& in = info["inherited"];
  for (const char* k :
       {"inherited_from", "inherited_epoch", "inherited_tensors", "inherited_params"})
    if (!in.contains(k) || !in[k].is_number_integer()) return nullptr;
  return in;
}

class CpuRunner final : public TrialRunner {
 public:
  TrialOutcome run(const TrialRequest& req,
                   const std::function<void(int, const nlohmann::json&)>& on_epoch,
                   const std::function<bool()>& cancelled) override {
    TrialOutcome out;
    try {
      // Checked before training: a target this worker cannot measure on.
      std::optional<LatencyDevice> latency_target;
      if (!req.latency_device.empty()) {
        latency_target = parse_latency_device(req.latency_device);
        if (!latency_target)
          throw Error("latency_device",
                      "'" + req.latency_device + "' is not cpu:THREADS or cuda:N");
        if (latency_target->device != "cpu" && !built_with_gpu_backend())
          throw std::runtime_error("this worker has no GPU backend to measure latency on " +
                                   req.latency_device + " (another worker may)");
      }
      const Space space =
          Space::from_json(req.space, "trial " + std::to_string(req.trial) + " space");
      const Arch arch = space.parse_key(req.arch);
      Recipe recipe =
          Recipe::from_json(req.recipe, "trial " + std::to_string(req.trial) + " recipe");
      if (req.fidelity > 0) {
        recipe.set("epochs", std::to_string(req.fidelity), "train request");
        recipe.set("time_budget_s", "0", "train request");
      }
      if (req.threads > 0) recipe.set("threads", std::to_string(req.threads), "train request");
      Model model(space.lower(arch), recipe.seed);
      auto device = [&](int rank) {
        return static_cast<size_t>(rank) < req.devices.size()
                   ? req.devices[static_cast<size_t>(rank)]
                   : std::string("cpu");
      };
      if (req.measure_only) {
        // An experiment's latency pool: the network as it will be deployed,
        // its weights untrained (latency does not depend on them).
        auto be = latency_target ? make_backend(latency_target->device, latency_target->threads)
                                 : make_backend(device(0), static_cast<int>(recipe.threads));
        const LayerGraph& g = model.graph();
        out.metrics = {{"latency_ms", measure_latency(model, *be, 30, false).batch1_ms},
                       {"params", g.params()},
                       {"macs", g.macs()},
                       {"latency_device", latency_target ? req.latency_device : device(0)},
                       {"measure_only", true}};
        out.kind = TrialOutcome::Kind::done;
        return out;
      }
      const data::TrainTest& data = dataset(req.data, req.data_fingerprint);
      auto backend = make_backend(device(0), static_cast<int>(recipe.threads));
      TrainOptions opt;
      opt.measure_latency = req.latency_device.empty();  // else measured below, on that device
      bool stopped = false;
      opt.should_stop = [&] { return stopped = stopped || cancelled(); };
      opt.on_epoch = [&](const EpochRecord& e) {
        nlohmann::json m = {
            {"train_loss", e.train_loss},
            {"train_acc", e.train_acc},
            {"val_acc", std::isfinite(e.val_acc) ? nlohmann::json(e.val_acc) : nlohmann::json()},
            {"lr", e.lr},
            {"seconds", e.seconds}};
        if (e.at) m["at"] = *e.at;  // a validation inside the epoch
        on_epoch(e.epoch, m);
      };
      opt.validate_at = req.validate_at;
      opt.on_point = opt.on_epoch;
      // Training state goes through a file: checkpoints are written (and
      // verified when read) as files, atomically.
      const std::filesystem::path scratch =
          std::filesystem::temp_directory_path() /
          ("minas-trial-" + std::to_string(::getpid()) + "-" + std::to_string(req.trial) + "-" +
           std::to_string(req.attempt) + ".ckpt");
      struct Remove {
        std::filesystem::path p;
        ~Remove() {
          std::error_code ec;
          std::filesystem::remove(p, ec);
        }
      } remove_scratch{scratch};
      // What this attempt inherited, for its result and for every state it
      // hands over (so an attempt resumed from one reports it as well).
      nlohmann::json inherited;
      if (req.on_checkpoint && !req.checkpoint_epochs.empty()) {
        opt.checkpoint_epochs = req.checkpoint_epochs;
        opt.on_checkpoint = [&](const nlohmann::json& info, std::span<const TensorView> tensors) {
          nlohmann::json meta = info;
          if (!inherited.is_null()) meta["inherited"] = inherited;
          save_checkpoint(scratch.string(), {space.name(), req.arch, meta}, tensors);
          std::ifstream in(scratch, std::ios::binary);
          req.on_checkpoint(info["epoch"].get<int>(),
                            std::string(std::istreambuf_iterator<char>(in), {}));
        };
      }
      // A state that cannot be used (damaged, of another network: a bug
      // somewhere) is dropped: the attempt starts from scratch rather than fail.
      std::optional<Checkpoint> resume;
      if (!req.resume.empty()) {
        try {
          {
            std::ofstream out(scratch, std::ios::binary);
            out.write(req.resume.data(), static_cast<std::streamsize>(req.resume.size()));
            if (!out) throw Error(scratch.string(), "cannot write the training state here");
          }
          resume = load_checkpoint(scratch.string());
          check_checkpoint(*resume, space.name(), req.arch, checkpoint_specs(model),
                           "trial " + std::to_string(req.trial) + " training state", true);
          if (resume->meta.info.value("epoch", -1) != req.resume_epoch)
            throw Error(
                "trial " + std::to_string(req.trial),
                "the training state sent is not of epoch " + std::to_string(req.resume_epoch));
          opt.resume = &*resume;
        } catch (const Error& e) {
          resume.reset();
          out.metrics["resume_refused"] = e.what();
        }
      }
      if (resume) inherited = inherited_of(resume->meta.info);
      if (!req.inherit.empty() && !resume) {
        // A parent's state that cannot be used (damaged, of another space or
        // epoch) is refused: the attempt trains from scratch and says why.
        try {
          inherited = inherit_from_parent(req, space, scratch, model);
        } catch (const Error& e) {
          out.metrics["inherit_refused"] = e.what();
        }
      }
      TrainReport r;
      // Distinct GPUs for every rank: NCCL inside the GPU-resident step.
      std::vector<int> gpus;
      for (int k = 0; k < req.ranks; ++k) gpus.push_back(cuda_index(device(k)));
      // A gang on GPUs: NCCL across the hosts (unique id from rank 0's), the
      // host-side collectives over the socket group.
      const bool gpu_gang =
          req.world > 0 && std::all_of(req.devices.begin(), req.devices.end(),
                                       [](const std::string& d) { return cuda_index(d) >= 0; });
      if (req.world > 0 && !gpu_gang)
        for (int k = 0; k < req.ranks; ++k)
          if (cuda_index(device(k)) >= 0)
            throw Error("trial " + std::to_string(req.trial),
                        "a trial spread over several workers runs on GPUs only or on CPU slots "
                        "only, not on both");
      // Checkpoints and resume included: every rank runs train()'s one loop.
      const bool nccl = req.world == 0 && built_with_gpu_backend() && req.ranks > 1 &&
                        std::all_of(gpus.begin(), gpus.end(), [](int d) { return d >= 0; }) &&
                        std::set<int>(gpus.begin(), gpus.end()).size() == gpus.size();
      // A gang's ranks other than 0 report nothing: rank 0's worker does.
      const bool leader = req.world == 0 || req.first_rank == 0;
      if (!leader) {
        opt.on_epoch = nullptr;
        opt.on_point = nullptr;
        opt.on_checkpoint = nullptr;
        opt.measure_latency = false;
        opt.evaluate_test = false;
      }
      if (gpu_gang) {
        if (opt.resume || opt.on_checkpoint)
          throw Error("trial " + std::to_string(req.trial),
                      "a trial spread over several workers' GPUs keeps no training state");
        std::shared_ptr<SocketListener> listener;
        std::string at = req.rendezvous, nccl_id;
        if (req.first_rank == 0) {
          listener = std::make_shared<SocketListener>();
          at = listener->rendezvous("127.0.0.1");
          nccl_id = make_gang_nccl_id();
          if (req.on_rendezvous) req.on_rendezvous(listener->port(), proto::base64_encode(nccl_id));
        } else {
          const size_t mark = at.find("#nccl=");
          const auto id =
              mark == std::string::npos ? std::nullopt : proto::base64_decode(at.substr(mark + 6));
          if (!id)
            throw Error("trial " + std::to_string(req.trial),
                        "the rendezvous of a GPU gang carries no NCCL unique id: " + at);
          nccl_id = *id;
          at = at.substr(0, mark);
        }
        SocketGroup g = make_socket_group(req.world, req.first_rank, req.ranks, listener, at);
        GpuGang gang{req.world, req.first_rank, nccl_id, {}};
        for (auto& c : g.ranks) gang.host.push_back(c.get());
        const AbortOnCancel watch(cancelled, g.abort);
        r = train_on_gpus(gpus, space.lower(arch), model, recipe, data, opt, cancelled, &gang);
      } else if (req.ranks <= 1 && req.world == 0) {
        r = train(model, recipe, data, *backend, opt);
      } else if (nccl) {
        r = train_on_gpus(gpus, space.lower(arch), model, recipe, data, opt, cancelled);
      } else {
        // Data parallel over the trial's slots: rank 0 here, with the
        // callbacks; every other rank on a thread of its own with its own copy
        // of the network and its slot's CPU threads.
        // A gang talks over sockets (rank 0's worker opens the hub and says
        // where; its own other ranks connect over loopback); a cancelled
        // attempt aborts the group, so no rank waits on a peer that is gone.
        std::vector<std::unique_ptr<Communicator>> group;
        std::function<void()> abort;
        if (req.world > 0) {
          std::shared_ptr<SocketListener> listener;
          std::string at = req.rendezvous;
          if (req.first_rank == 0) {
            listener = std::make_shared<SocketListener>();
            at = listener->rendezvous("127.0.0.1");
            if (req.on_rendezvous) req.on_rendezvous(listener->port(), "");
          } else {
            at = at.substr(0, at.find("#nccl="));
          }
          SocketGroup g = make_socket_group(req.world, req.first_rank, req.ranks, listener, at);
          group = std::move(g.ranks);
          abort = std::move(g.abort);
        } else {
          group = make_thread_group(req.ranks);
        }
        std::optional<AbortOnCancel> watch;
        if (abort) watch.emplace(cancelled, abort);
        opt.comm = group[0].get();
        std::vector<std::exception_ptr> errors(static_cast<size_t>(req.ranks));
        std::vector<std::thread> others;
        for (int k = 1; k < req.ranks; ++k)
          others.emplace_back([&, k] {
            try {
              Model m(space.lower(arch), recipe.seed);
              auto be = make_backend(device(k), static_cast<int>(recipe.threads));
              TrainOptions o;
              o.comm = group[static_cast<size_t>(k)].get();
              o.resume = opt.resume;
              o.should_stop = [&] { return cancelled(); };
              o.measure_latency = false;
              o.evaluate_test = false;
              train(m, recipe, data, *be, o);
            } catch (...) {
              errors[static_cast<size_t>(k)] = std::current_exception();
            }
          });
        try {
          r = train(model, recipe, data, *backend, opt);
        } catch (...) {
          errors[0] = std::current_exception();
        }
        for (auto& t : others) t.join();
        for (auto& e : errors)
          if (e) std::rethrow_exception(e);
      }
      if (stopped) {
        out.kind = TrialOutcome::Kind::cancelled;
        return out;
      }
      if (!leader) {
        out.kind = TrialOutcome::Kind::done;
        out.metrics = {{"gang_member", true}};
        return out;
      }
      nlohmann::json m = r.to_json();
      // The curve went out as progress, epoch by epoch and inside epochs; a
      // result's metrics are scalars (the protocol refuses anything nested).
      m.erase("epochs");
      m.erase("points");
      if (!req.latency_device.empty()) {
        // The deployment target's latency at batch 1, not the training
        // device's: a GPU worker measures a CPU target on its own CPU threads.
        auto be = make_backend(latency_target->device, latency_target->threads);
        m["latency_ms"] = measure_latency(model, *be, 30, false).batch1_ms;
        m.erase("latency_ms_b64");
        m["latency_device"] = req.latency_device;
      }
      if (out.metrics.contains("resume_refused"))
        m["resume_refused"] = out.metrics["resume_refused"];
      if (inherited.is_object()) m.update(inherited);
      if (out.metrics.contains("inherit_refused"))
        m["inherit_refused"] = out.metrics["inherit_refused"];
      out.kind = TrialOutcome::Kind::done;
      out.metrics = std::move(m);
    } catch (const Error& e) {
      if (e.where() == "communicator" && cancelled()) {
        out.kind = TrialOutcome::Kind::cancelled;  // the group was aborted for the cancel
        return out;
      }
      out.kind = TrialOutcome::Kind::failed;
      out.reason = e.what();
      // The same inputs fail the same way, but a rank of a gang that went
      // away (its worker lost, or cancelled) is no fault of the trial's.
      out.retryable = e.where() == "communicator";
    } catch (const std::exception& e) {
      out.kind = TrialOutcome::Kind::failed;
      out.reason = std::string("internal error: ") + e.what();
      out.retryable = true;  // e.g. out of memory: another worker may manage
    }
    return out;
  }

 private:
  const data::TrainTest& dataset(const std::string& name, const std::string& fingerprint) {
    std::lock_guard lock(mu_);
    auto it = cache_.find(name);
    if (it == cache_.end()) it = cache_.emplace(name, data::load_dataset(name)).first;
    if (!fingerprint.empty() && it->second.train.fingerprint() != fingerprint)
      throw Error("data " + name, "this worker's copy has fingerprint " +
                                      it->second.train.fingerprint() + ", the trial needs " +
                                      fingerprint);
    return it->second;
  }

  std::mutex mu_;
  std::map<std::string, data::TrainTest> cache_;
};

std::string sim_state(int epoch) {
  return "minas-sim-state epoch=" + std::to_string(epoch);
}

// A simulated worker's table: NAS-Bench-201's 15,625 rows and more, not millions.
constexpr size_t kMaxSimRows = 2'000'000;

class SimRunner final : public TrialRunner {
 public:
  bool needs_data() const override { return false; }
  SimRunner(const std::string& path, const std::string& metric, double delay_s,
            const std::string& key_column)
      : delay_s_(delay_s) {
    if (!(delay_s >= 0)) throw Error("--delay", "must be >= 0");
    const CsvTable t = read_csv_table(path, kMaxSimRows, {{key_column, ""}, {metric, ""}});
    const size_t key = t.column(key_column), value = t.column(metric);
    bool percent = false;
    for (size_t r = 0; r < t.rows.size(); ++r) {
      const double v = t.number(r, value);
      percent = percent || v > 1.0;
      table_[t.rows[r].fields[key]] = v;
    }
    if (percent)
      for (auto& [k, v] : table_) v /= 100.0;
  }

  TrialOutcome run(const TrialRequest& req,
                   const std::function<void(int, const nlohmann::json&)>& on_epoch,
                   const std::function<bool()>& cancelled) override {
    TrialOutcome out;
    if (req.measure_only) {
      out.reason =
          "a simulated worker has no latency to measure: put workers that measure "
          "(--trainer cpu) in the experiment's latency pool";
      return out;  // not retryable: another simulated worker could not either
    }
    const auto it = table_.find(req.arch);
    if (it == table_.end()) {
      out.reason = "architecture '" + req.arch + "' is not in the table";
      return out;
    }
    // Rank 0 of a gang says where its (pretend) hub is, so the other ranks start.
    if (req.world > 0 && req.first_rank == 0 && req.on_rendezvous) req.on_rendezvous(0, "");
    // A learning curve that rises to the table's value at the last epoch,
    // the same shape for every architecture (so the ranking at any epoch is
    // the final one), each epoch taking an equal share of the delay.
    const int epochs = std::max(1, req.fidelity);
    const double per_epoch = delay_s_ / epochs;
    // Its training state is the epoch reached: "minas-sim-state epoch=K".
    // A state it cannot use is dropped, as the CPU runner drops one: the
    // attempt starts from scratch and says why.
    int first = 1;
    std::string refused;
    if (!req.resume.empty()) {
      if (req.resume == sim_state(req.resume_epoch))
        first = req.resume_epoch + 1;
      else
        refused = "not this simulator's state after epoch " + std::to_string(req.resume_epoch);
    }
    auto shape = [&](double at) {
      return (1 - 0.5 * std::exp(-3.0 * at / epochs)) / (1 - 0.5 * std::exp(-3.0));
    };
    // Each epoch's pretend training, in pieces up to each point inside it
    // (validate_at) and then to its end; false: cancelled meanwhile.
    auto pretend = [&](double seconds) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
      do {
        if (cancelled()) return false;
        if (seconds > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      } while (std::chrono::steady_clock::now() < until);
      return true;
    };
    for (int e = first; e <= epochs; ++e) {
      double done = e - 1;  // epochs pretended so far
      for (double at : req.validate_at) {
        if (!(at > e - 1 && at < e)) continue;
        if (!pretend((at - done) * per_epoch)) {
          out.kind = TrialOutcome::Kind::cancelled;
          return out;
        }
        done = at;
        on_epoch(e, {{"at", at},
                     {"val_acc", it->second * shape(at)},
                     {"seconds", (at - (e - 1)) * per_epoch}});
      }
      if (!pretend((e - done) * per_epoch)) {
        out.kind = TrialOutcome::Kind::cancelled;
        return out;
      }
      on_epoch(e, {{"val_acc", it->second * shape(e)}, {"seconds", per_epoch}});
      if (req.on_checkpoint && std::find(req.checkpoint_epochs.begin(), req.checkpoint_epochs.end(),
                                         e) != req.checkpoint_epochs.end())
        req.on_checkpoint(e, sim_state(e));
    }
    if (cancelled()) {
      out.kind = TrialOutcome::Kind::cancelled;
      return out;
    }
    out.kind = TrialOutcome::Kind::done;
    if (req.world > 0 && req.first_rank > 0) {
      out.metrics = {{"gang_member", true}};  // a gang's rank 0 reports the trial
      return out;
    }
    out.metrics = {{"val_acc", it->second}, {"test_acc", nullptr}, {"latency_ms", nullptr},
                   {"params", nullptr},     {"macs", nullptr},     {"train_seconds", delay_s_}};
    if (!refused.empty()) out.metrics["resume_refused"] = refused;
    return out;
  }

 private:
  double delay_s_;
  std::unordered_map<std::string, double> table_;
};

class InstantRunner final : public TrialRunner {
 public:
  bool needs_data() const override { return false; }
  TrialOutcome run(const TrialRequest& req, const std::function<void(int, const nlohmann::json&)>&,
                   const std::function<bool()>&) override {
    TrialOutcome out;
    out.kind = TrialOutcome::Kind::done;
    const double acc = 0.5 + 0.5 * static_cast<double>(fnv1a64(req.arch) % 10000) / 10000.0;
    out.metrics = {{"val_acc", acc}, {"train_seconds", 0.0}};
    return out;
  }
};

}  // namespace

std::unique_ptr<TrialRunner> make_instant_runner() {
  return std::make_unique<InstantRunner>();
}

std::unique_ptr<TrialRunner> make_cpu_runner() {
  return std::make_unique<CpuRunner>();
}

std::unique_ptr<TrialRunner> make_sim_runner(const std::string& csv_path,
                                             const std::string& metric_column, double delay_s,
                                             const std::string& key_column) {
  return std::make_unique<SimRunner>(csv_path, metric_column, delay_s, key_column);
}

}  // namespace minas
