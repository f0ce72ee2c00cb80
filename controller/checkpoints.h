#pragma once
// Checkpoint states: the training states (ASHA's rung checkpoints) a running
// attempt sends after each rung, kept in files until its trial ends, so that
// a retried attempt continues from its last rung. Part of the controller's
// loop (controller/core.h).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "controller/protocol.h"

namespace minas::loop {

struct Core;

class CheckpointStates {
 public:
  explicit CheckpointStates(Core& core) : core_(core) {}
  // Where states are kept (the options' state_dir, else beside the store),
  // and what a previous run of the controller kept there. Only with ASHA.
  void open();
  bool kept() const { return !dir_.empty(); }
  // A chunk of a running attempt's training state after a rung.
  void on_checkpoint(const std::string& worker, const proto::Checkpoint& c);
  // The latest state kept of a trial: (epoch, bytes); nullopt: none (or unreadable).
  std::optional<std::pair<int, std::string>> latest(int64_t trial) const;
  // The trial has ended: its states are of no more use.
  void drop(int64_t trial);
  // Every trial has ended, and with it its states: the folder goes.
  void remove_all();

 private:
  std::filesystem::path file(int64_t trial, int epoch) const;
  void discard(int64_t trial, const std::string& why);

  static constexpr int64_t kMaxStateBytes = int64_t{1} << 30;
  struct Incoming {
    int attempt = 0, epoch = 0;
    std::string bytes;
  };
  Core& core_;
  std::filesystem::path dir_;     // empty: not kept
  std::map<int64_t, int> epoch_;  // the latest epoch kept per trial
  std::map<int64_t, Incoming> incoming_;
};

}  // namespace minas::loop
