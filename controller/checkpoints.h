#pragma once
// Checkpoint states: the training states (ASHA's rung checkpoints) a running
// attempt sends after each rung, kept in files until its trial ends, so that
// a retried attempt continues from its last rung; and, in a search with
// weight inheritance, each trial's state after its last epoch, kept while a
// child may still inherit it (Kept::parents: Core::keep_parents decides).
// Part of the controller's loop (controller/core.h).
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "controller/protocol.h"

namespace minas::loop {

struct Core;

class CheckpointStates {
 public:
  enum class Kept { rungs, parents };
  explicit CheckpointStates(Core& core, Kept what = Kept::rungs) : core_(core), what_(what) {}
  // Where states are kept (the options' state_dir, else beside the store;
  // parents' in a folder "parents" there), and what a previous run of the
  // controller kept there. Rungs only with ASHA, parents only with inherit.
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
  // The trials whose states are kept.
  std::vector<int64_t> trials() const;

 private:
  std::filesystem::path file(int64_t trial, int epoch) const;
  void discard(int64_t trial, const std::string& why);

  static constexpr int64_t kMaxStateBytes = int64_t{1} << 30;
  struct Incoming {
    int attempt = 0, epoch = 0;
    std::string bytes;
  };
  Core& core_;
  Kept what_;
  std::filesystem::path dir_;     // empty: not kept
  std::map<int64_t, int> epoch_;  // the latest epoch kept per trial
  std::map<int64_t, Incoming> incoming_;
};

}  // namespace minas::loop
