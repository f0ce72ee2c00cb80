#pragma once
// Data transfer: a worker that lacks the experiment's data set fetches it
// from the controller, in chunks. Part of the controller's loop (controller/core.h).
#include <string>
#include <utility>
#include <vector>

#include "controller/protocol.h"

namespace minas::loop {

struct Core;

class DataTransfer {
 public:
  explicit DataTransfer(Core& core) : core_(core) {}
  // Reads the data set's files now, beside their fingerprint, so that what a
  // worker is sent later is what was fingerprinted even if the folder changes.
  void load();
  void on_fetch(const std::string& worker, const proto::Fetch& f);

 private:
  Core& core_;
  std::vector<std::pair<std::string, std::string>> files_;  // (file name, bytes), read once
};

}  // namespace minas::loop
