#pragma once
// What a worker does with one trial attempt: a TrialRunner turns a train
// request into epochs of progress and an outcome. The CPU runner trains for
// real; the simulated one answers from a table (NAS-Bench-201's, say) so the
// whole system can be run at scale without training.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

struct TrialRequest {
  int64_t trial = 0;
  int attempt = 0;
  nlohmann::json space;          // the resolved space document
  std::string arch;              // canonical key
  nlohmann::json recipe;         // training recipe
  std::string data;              // data set name or folder
  std::string data_fingerprint;  // empty: accept what the name resolves to
  int fidelity = 0;              // epochs; 0: the recipe's own
  // Points inside epochs, in epochs (0.25), where the runner validates too
  // (ASHA's fractional rungs), ascending; those past the run are ignored.
  std::vector<double> validate_at;
  int threads = 0;               // CPU threads for this attempt (per rank); 0: all
  // The slots it runs on ("cpu", "cpu.1", "cuda:0", ...), the first for rank 0.
  std::vector<std::string> devices;
  // Data parallel over this many device slots of the worker (the controller's
  // gpus_per_trial): ranks of one trial, rank 0 reporting.
  int ranks = 1;
  // After each of these epochs the runner hands its training state (the
  // bytes of a checkpoint file) to on_checkpoint, so that a later attempt can
  // continue from there.
  std::vector<int> checkpoint_epochs;
  std::function<void(int epoch, std::string bytes)> on_checkpoint;
  // Such a state: the attempt continues after resume_epoch instead of
  // starting over; empty: from scratch.
  std::string resume;
  int resume_epoch = 0;
  // A warm start (train.inherit): the parent trial's training state after
  // inherit_epoch (a checkpoint file's bytes); its weights go into every
  // layer the mutation left unchanged (trainer/inherit.h). Empty: none;
  // ignored when `resume` is given (that state holds what was inherited).
  std::string inherit;
  int64_t inherit_trial = 0;
  int inherit_epoch = 0;
  // Where the trained network's latency is measured ("cpu:THREADS",
  // "cuda:N"); empty: on the training device, as training measures it.
  std::string latency_device;
  // Do not train: build the network and measure its batch-1 latency (on
  // latency_device, else on devices[0]); done with latency_ms, params, macs.
  bool measure_only = false;
  // A gang: this worker runs ranks first_rank .. first_rank + ranks - 1 of a
  // trial of `world` ranks over several workers. The worker of rank 0 opens
  // the socket group's hub and, on GPUs, makes NCCL's unique id, and hands
  // both to on_rendezvous (port, id in base64; empty on CPUs); the controller
  // passes them on as `rendezvous`: tcp://HOST:PORT, then #nccl=ID on GPUs.
  // world 0: not a gang.
  int world = 0;
  int first_rank = 0;
  std::string rendezvous;
  std::function<void(int port, const std::string& nccl_id)> on_rendezvous;
};

struct TrialOutcome {
  enum class Kind { done, failed, cancelled } kind = Kind::failed;
  // done: val_acc, test_acc, latency_ms (and latency_device when the request
  // named one), params, macs, train_seconds
  nlohmann::json metrics;
  std::string reason;      // failed: what went wrong
  bool retryable = false;  // failed: whether another attempt could succeed
};

class TrialRunner {
 public:
  virtual ~TrialRunner() = default;
  // Runs one attempt. on_epoch gets (epoch from 1, metrics: train_loss,
  // train_acc, val_acc, lr, seconds) after each epoch, and after each point
  // of validate_at (epoch: the one it lies in; metrics with "at": the point,
  // as given, and the epoch's figures so far); cancelled is polled often and stops the
  // attempt promptly. User-caused errors (a bad arch, recipe or data set) come
  // back as a failed outcome, never as an exception.
  // Whether attempts read the data set named in the request (the simulated
  // runners do not, so their workers never fetch one).
  virtual bool needs_data() const { return true; }
  virtual TrialOutcome run(const TrialRequest& request,
                           const std::function<void(int, const nlohmann::json&)>& on_epoch,
                           const std::function<bool()>& cancelled) = 0;
};

// Trains on this machine's CPU or, for cuda:N slots in builds with the GPU
// backend, its GPUs; data sets are loaded once and kept by name.
std::unique_ptr<TrialRunner> make_cpu_runner();

// Answers from a CSV table: the row whose `key_column` equals the request's
// arch gives val_acc from `metric_column` (a percentage above 1 is read as
// percent and divided by 100), after `delay_s` seconds of pretend training
// spread over the request's epochs, each reporting a point of one fixed
// learning-curve shape that ends at the table's value.
std::unique_ptr<TrialRunner> make_sim_runner(const std::string& csv_path,
                                             const std::string& metric_column, double delay_s,
                                             const std::string& key_column = "arch");

// Answers at once, val_acc a fixed function of the arch key: for measuring
// the controller and the store without any training or table.
std::unique_ptr<TrialRunner> make_instant_runner();

}  // namespace minas
