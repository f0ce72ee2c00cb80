#pragma once
// Checkpoints: a trained network's weights with what produced them, in one
// binary file that is written atomically and verified when read.
//
// Format version 1, all integers little-endian:
//   magic        8 bytes  "MINASCKP"
//   version      u32      1
//   flags        u32      0 (reserved)
//   file size    u64      bytes in the whole file, checksum included
//   space        u32 length + UTF-8 bytes: the search space's name
//   arch key     u32 length + bytes: the architecture's canonical key
//   metadata     u64 length + bytes: a JSON document (recipe, accuracy, ...)
//   tensors      u32 count, then for each:
//                  name  u32 length + bytes
//                  rank  u32, then rank x u64 dimensions
//                  data  product(dimensions) x float32 (IEEE 754, little-endian)
//   crc32        u32      zlib's crc32 of every byte before it
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace minas {

inline constexpr uint32_t kCheckpointVersion = 1;

struct CheckpointMeta {
  std::string space;                               // the search space's name
  std::string arch_key;                            // Space::key of the architecture
  nlohmann::json info = nlohmann::json::object();  // free-form: recipe, accuracy, epoch, ...
  bool operator==(const CheckpointMeta&) const = default;
};

// A tensor to save, viewed where it lives (a trainer's buffer).
struct TensorView {
  std::string name;
  std::vector<uint64_t> shape;
  std::span<const float> data;  // product(shape) elements, row-major
};

// A tensor read back.
struct CheckpointTensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> data;
  bool operator==(const CheckpointTensor&) const = default;
};

// What a checkpoint must hold for a network: a tensor's name and shape.
struct TensorSpec {
  std::string name;
  std::vector<uint64_t> shape;
};

struct Checkpoint {
  CheckpointMeta meta;
  std::vector<CheckpointTensor> tensors;                      // in the order they were saved
  const CheckpointTensor* find(std::string_view name) const;  // nullptr if absent
};

// Writes a temporary file next to `path`, flushes it to disk and renames it over
// `path`, so a reader sees the old file or the new one, never a partial one.
// Throws Error for an I/O failure (the temporary is removed), a tensor whose
// data size does not match its shape, an empty or repeated tensor name.
void save_checkpoint(const std::string& path, const CheckpointMeta& meta,
                     std::span<const TensorView> tensors);
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);

// Reads and verifies a checkpoint. Throws Error naming the file (and the byte
// offset where it applies) when it is missing or unreadable, is not a minas
// checkpoint, has another format version, is truncated or longer than its
// header says (expected vs actual bytes), fails its checksum, or is malformed.
Checkpoint load_checkpoint(const std::string& path);

// Checks that `checkpoint` belongs to the architecture `arch_key` of `space` and
// holds exactly the tensors `expected` (any order), with their shapes. Throws
// Error naming `origin` (the file) and the first mismatch: the space, the arch
// key, then in `expected` order a missing tensor or a wrong shape, then a tensor
// not expected (unless allow_extra, e.g. optimizer state loaded for inference).
void check_checkpoint(const Checkpoint& checkpoint, std::string_view space,
                      std::string_view arch_key, std::span<const TensorSpec> expected,
                      const std::string& origin, bool allow_extra = false);

}  // namespace minas
