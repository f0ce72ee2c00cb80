#include "controller/checkpoints.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "controller/core.h"

namespace minas::loop {

namespace fs = std::filesystem;

void CheckpointStates::open() {
  const bool parents = what_ == Kept::parents;
  if (parents ? !core_.config.inherit : !core_.asha) return;  // nothing of this kind to keep
  const db::Store& store = core_.store;
  if (!core_.opt.state_dir.empty())
    dir_ = parents ? fs::path(core_.opt.state_dir) / "parents" : fs::path(core_.opt.state_dir);
  else if (!store.path().empty() && store.path() != ":memory:")
    dir_ = fs::path(store.path() + (parents ? ".parents" : ".states")) /
           std::to_string(core_.experiment);
  if (dir_.empty()) {
    if (parents)
      core_.log(
          "no folder to keep parents' states in (a store in memory and no "
          "state_dir): children train from scratch");
    return;
  }
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    core_.log("training states cannot be kept in " + dir_.string() + " (" + ec.message() +
              (parents ? "): children train from scratch" : "): retried trials start over"));
    dir_.clear();
    return;
  }
  // What a previous run of the controller kept: trial-ID-epoch-K.state.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    long long trial = 0;
    int epoch = 0;
    if (std::sscanf(entry.path().filename().c_str(), "trial-%lld-epoch-%d.state", &trial, &epoch) ==
        2)
      epoch_[trial] = std::max(epoch_[trial], epoch);
  }
}

fs::path CheckpointStates::file(int64_t trial, int epoch) const {
  return dir_ / ("trial-" + std::to_string(trial) + "-epoch-" + std::to_string(epoch) + ".state");
}

void CheckpointStates::drop(int64_t trial) {
  incoming_.erase(trial);
  auto it = epoch_.find(trial);
  if (it == epoch_.end()) return;
  std::error_code ec;
  for (int e = 0; e <= it->second; ++e) fs::remove(file(trial, e), ec);
  epoch_.erase(it);
}

void CheckpointStates::discard(int64_t trial, const std::string& why) {
  core_.log(why);
  incoming_.erase(trial);
}

void CheckpointStates::on_checkpoint(const std::string& worker, const proto::Checkpoint& c) {
  const int64_t trial = c.trial;
  const int attempt = c.attempt, epoch = c.epoch;
  if (!core_.owns(worker, trial, attempt)) return core_.refuse_unless_ran(worker, trial, attempt);
  if (dir_.empty()) return;  // not kept here
  const int64_t offset = c.offset, size = c.size;
  Incoming& in = incoming_[trial];
  if (offset == 0) in = {attempt, epoch, {}};
  const auto bytes = proto::base64_decode(c.bytes);
  if (!bytes || in.attempt != attempt || in.epoch != epoch ||
      offset != static_cast<int64_t>(in.bytes.size()) || size > kMaxStateBytes ||
      static_cast<int64_t>(in.bytes.size() + bytes->size()) > size)
    return discard(trial, "the training state of trial " + std::to_string(trial) + " after epoch " +
                              std::to_string(epoch) + " arrived damaged; not kept");
  in.bytes += *bytes;
  if (!c.last) return;
  if (static_cast<int64_t>(in.bytes.size()) != size)
    return discard(trial,
                   "the training state of trial " + std::to_string(trial) + " is short; not kept");
  const auto path = file(trial, epoch);
  const auto tmp = path.string() + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(in.bytes.data(), static_cast<std::streamsize>(in.bytes.size()));
    if (!out)
      return discard(trial, "cannot write " + tmp + ": the training state of trial " +
                                std::to_string(trial) + " is not kept");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return discard(trial, "cannot keep " + path.string() + ": " + ec.message());
  const auto before = epoch_.find(trial);
  if (before != epoch_.end() && before->second != epoch)
    fs::remove(file(trial, before->second), ec);
  epoch_[trial] = epoch;
  incoming_.erase(trial);
}

std::optional<std::pair<int, std::string>> CheckpointStates::latest(int64_t trial) const {
  auto s = epoch_.find(trial);
  if (s == epoch_.end()) return std::nullopt;
  std::ifstream in(file(trial, s->second), std::ios::binary);
  if (!in) return std::nullopt;
  return std::pair<int, std::string>(s->second,
                                     std::string(std::istreambuf_iterator<char>(in), {}));
}

std::vector<int64_t> CheckpointStates::trials() const {
  std::vector<int64_t> out;
  for (const auto& [trial, epoch] : epoch_) out.push_back(trial);
  return out;
}

void CheckpointStates::remove_all() {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
  fs::remove(dir_.parent_path(), ec);  // only if empty
}

}  // namespace minas::loop
