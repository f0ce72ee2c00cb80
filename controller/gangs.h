#pragma once
// Gangs: a trial of gpus_per_trial slots when no training worker has that
// many, its ranks spread over several workers. Rank 0's worker is sent its
// train first, opens the group's hub and says where (rendezvous); the other
// ranks get their train with that address then. Part of the controller's
// loop (controller/core.h).
#include <cstdint>
#include <string>
#include <vector>

#include "controller/protocol.h"
#include "controller/trial_book.h"

namespace minas::loop {

struct Core;

class Gangs {
 public:
  explicit Gangs(Core& core) : core_(core) {}
  // Trials are spread over workers: no training worker has gpus_per_trial slots.
  bool gang_mode() const;
  // Gangs from the free slots of the training workers: the workers with the
  // most free slots first, so a trial spans as few as it can; rank 0 on the
  // first. Workers that cannot make one now wait.
  void dispatch();
  void on_rendezvous(const std::string& worker, const proto::Rendezvous& r);
  // The attempt is over for every part (a rank lost or failed, a stop): the
  // parts other than `except` are cancelled and let go. The trial's book
  // transition (lose, fail) follows.
  void end(int64_t trial, const std::string& except, const std::string& why);

 private:
  void start(int64_t trial, std::vector<GangPart> parts);
  Core& core_;
};

}  // namespace minas::loop
