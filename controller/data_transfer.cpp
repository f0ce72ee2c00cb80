#include "controller/data_transfer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "controller/core.h"
#include "searchspace/error.h"

namespace minas::loop {

void DataTransfer::load() {
  for (const std::string& path : core_.config.data_files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "cannot read the data set file");
    files_.emplace_back(std::filesystem::path(path).filename().string(),
                        std::string(std::istreambuf_iterator<char>(in), {}));
  }
}

void DataTransfer::on_fetch(const std::string& worker, const proto::Fetch& f) {
  const ExperimentConfig& config = core_.config;
  const std::string& fp = f.fingerprint;
  if (fp != config.data_fingerprint || config.data_files.empty())
    throw proto::ProtocolError("not_allowed", "this controller serves only data set " +
                                                  config.data + " (" + config.data_fingerprint +
                                                  "), and only if it can read it");
  core_.log("sending data set " + config.data + " to " + core_.sessions.label(worker));
  for (size_t i = 0; i < files_.size(); ++i) {
    const auto& [name, bytes] = files_[i];
    for (size_t at = 0; at < bytes.size() || at == 0; at += proto::kDataChunkBytes) {
      const size_t n = std::min(proto::kDataChunkBytes, bytes.size() - at);
      const bool last = i + 1 == files_.size() && at + n >= bytes.size();
      core_.sessions.send(
          worker,
          proto::encode(proto::Type::data,
                        {{"fingerprint", fp},
                         {"name", config.data},
                         {"file", name},
                         {"offset", static_cast<int64_t>(at)},
                         {"size", static_cast<int64_t>(bytes.size())},
                         {"bytes", proto::base64_encode(std::string_view(bytes).substr(at, n))},
                         {"last", last}}));
      if (bytes.empty()) break;
    }
  }
}

}  // namespace minas::loop
