#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas {

namespace {

constexpr char kMagic[8] = {'M', 'I', 'N', 'A', 'S', 'C', 'K', 'P'};
constexpr size_t kHeaderBytes = 24;  // magic, version, flags, file size
constexpr uint32_t kMaxRank = 16;

std::string errno_text() {
  return std::strerror(errno);
}

std::string shape_text(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The element count of a shape, or false if it overflows 64 bits.
bool elements(std::span<const uint64_t> shape, uint64_t& count) {
  count = 1;
  for (uint64_t d : shape) {
    if (d != 0 && count > UINT64_MAX / d) return false;
    count *= d;
  }
  return true;
}

// Serializes the format, either only counting bytes (f null) or writing them
// and folding them into the checksum; one code path gives both the size the
// header declares and the bytes that follow it.
class Writer {
 public:
  Writer(std::FILE* f, const std::string& path) : f_(f), path_(path) {}

  void bytes(const void* p, size_t n) {
    size_ += n;
    if (!f_ || n == 0) return;
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(p), n);
    if (std::fwrite(p, 1, n, f_) != n) throw Error(path_, "cannot write: " + errno_text());
  }
  void u32(uint32_t v) {
    unsigned char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    bytes(b, 4);
  }
  void u64(uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    bytes(b, 8);
  }
  void str32(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void floats(std::span<const float> data) {
    if constexpr (std::endian::native == std::endian::little) {
      bytes(data.data(), data.size_bytes());
    } else {
      for (float x : data) u32(std::bit_cast<uint32_t>(x));
    }
  }
  uint64_t size() const { return size_; }
  uint32_t crc() const { return static_cast<uint32_t>(crc_); }

 private:
  std::FILE* f_;
  const std::string& path_;
  uint64_t size_ = 0;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

void write_all(Writer& w, uint64_t file_size, const CheckpointMeta& meta, const std::string& info,
               std::span<const TensorView> tensors) {
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kCheckpointVersion);
  w.u32(0);
  w.u64(file_size);
  w.str32(meta.space);
  w.str32(meta.arch_key);
  w.u64(info.size());
  w.bytes(info.data(), info.size());
  w.u32(static_cast<uint32_t>(tensors.size()));
  for (const auto& t : tensors) {
    w.str32(t.name);
    w.u32(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t d : t.shape) w.u64(d);
    w.floats(t.data);
  }
}

// Reads the verified bytes of a loaded file; every read is bounds-checked, so
// a malformed file (one that passes the checksum, from a buggy writer) still
// gets an error with the offset instead of a crash.
class Reader {
 public:
  Reader(const std::string& path, const std::string& bytes, size_t pos, size_t end)
      : path_(path), bytes_(bytes), pos_(pos), end_(end) {}

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw Error(path_ + " @ byte " + std::to_string(at), "malformed checkpoint: " + what);
  }
  const char* take(uint64_t n, const char* what) {
    if (n > end_ - pos_)
      fail(pos_, std::string(what) + " of " + std::to_string(n) + " bytes runs past the data (" +
                     std::to_string(end_ - pos_) + " bytes left)");
    const char* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint32_t u32(const char* what) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(4, what));
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
    return v;
  }
  uint64_t u64(const char* what) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(8, what));
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
    return v;
  }
  std::string str32(const char* what) {
    const uint32_t n = u32(what);
    return std::string(take(n, what), n);
  }
  size_t pos() const { return pos_; }
  size_t left() const { return end_ - pos_; }

 private:
  const std::string& path_;
  const std::string& bytes_;
  size_t pos_, end_;
};

uint32_t le32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

uint64_t le64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

// Makes a finished rename durable; the rename itself is already atomic.
void sync_directory(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // an unreadable directory can still hold the file; nothing to sync with
  const bool failed = ::fsync(fd) != 0 && errno != EINVAL;  // EINVAL: no fsync on directories
  const std::string why = failed ? errno_text() : "";
  ::close(fd);
  if (failed) throw Error(path, "written, but syncing its directory failed: " + why);
}

}  // namespace

const CheckpointTensor* Checkpoint::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void save_checkpoint(const std::string& path, const CheckpointMeta& meta,
                     std::span<const TensorView> tensors) {
  std::string info;
  try {
    info = meta.info.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a string that is not UTF-8
    throw Error(path, std::string("the metadata cannot be written as JSON: ") + e.what());
  }
  if (meta.space.size() > UINT32_MAX || meta.arch_key.size() > UINT32_MAX)
    throw Error(path, "space name or arch key too long");
  if (tensors.size() > UINT32_MAX) throw Error(path, "too many tensors");
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    const std::string what = "tensor '" + t.name + "'";
    if (t.name.empty()) throw Error(path, "a tensor has an empty name");
    if (t.name.size() > UINT32_MAX) throw Error(path, what + ": name too long");
    if (!names.insert(t.name).second) throw Error(path, what + " appears twice");
    if (t.shape.size() > kMaxRank)
      throw Error(path, what + ": rank " + std::to_string(t.shape.size()) + " exceeds " +
                            std::to_string(kMaxRank));
    uint64_t n = 0;
    if (!elements(t.shape, n) || n != t.data.size())
      throw Error(path, what + ": shape " + shape_text(t.shape) + " does not match its " +
                            std::to_string(t.data.size()) + " elements");
  }

  Writer counter(nullptr, path);
  write_all(counter, 0, meta, info, tensors);
  const uint64_t file_size = counter.size() + 4;  // and the checksum

  // A unique name in the same directory, so the rename cannot cross file systems.
  static std::atomic<uint64_t> serial{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(path, "cannot create the temporary file " + tmp + ": " + errno_text());
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    const std::string why = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(tmp, "cannot open the checkpoint for writing: " + why);
  }
  try {
    Writer w(f, tmp);
    write_all(w, file_size, meta, info, tensors);
    w.u32(w.crc());
    if (std::fflush(f) != 0) throw Error(tmp, "cannot write: " + errno_text());
    if (::fsync(::fileno(f)) != 0) throw Error(tmp, "cannot sync to disk: " + errno_text());
  } catch (...) {
    std::fclose(f);  // the error being reported matters more than one from closing
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(tmp, "cannot close the checkpoint: " + why);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(path, "cannot move the checkpoint into place from " + tmp + ": " + why);
  }
  sync_directory(path);
}

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  std::vector<TensorView> views;
  views.reserve(checkpoint.tensors.size());
  for (const auto& t : checkpoint.tensors) views.push_back({t.name, t.shape, t.data});
  save_checkpoint(path, checkpoint.meta, views);
}

Checkpoint load_checkpoint(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path, "cannot open the checkpoint: " + errno_text());
  std::string bytes;
  {
    char buf[1 << 16];
    // The header first, so a foreign file is rejected without reading all of it.
    size_t n = std::fread(buf, 1, kHeaderBytes, f);
    bytes.append(buf, n);
    const bool foreign = std::memcmp(buf, kMagic, std::min(n, sizeof kMagic)) != 0;
    if (!foreign && n == kHeaderBytes) {
      // No more than the header says and one byte, to tell a longer file: a
      // file that never ends (a FIFO) cannot fill memory.
      const uint64_t declared = le64(bytes.data() + 16);
      while (bytes.size() <= declared && (n = std::fread(buf, 1, sizeof buf, f)) > 0)
        bytes.append(buf, n);
    }
    const bool failed = std::ferror(f) != 0;
    const std::string why = errno_text();
    if (std::fclose(f) != 0 && !failed)
      throw Error(path, "cannot read the checkpoint: " + errno_text());
    if (failed) throw Error(path, "cannot read the checkpoint: " + why);
    if (bytes.empty()) throw Error(path, "the file is empty: not a minas checkpoint");
    if (foreign)
      throw Error(path, "not a minas checkpoint (it does not start with the magic \"MINASCKP\")");
    if (bytes.size() < kHeaderBytes)
      throw Error(path, "truncated: expected at least " + std::to_string(kHeaderBytes) +
                            " bytes of header, found " + std::to_string(bytes.size()));
  }

  const uint32_t version = le32(bytes.data() + 8);
  if (version != kCheckpointVersion)
    throw Error(path + " @ byte 8", "checkpoint format version " + std::to_string(version) +
                                        "; this build reads version " +
                                        std::to_string(kCheckpointVersion));
  if (const uint32_t flags = le32(bytes.data() + 12); flags != 0)
    throw Error(path + " @ byte 12", "unknown flags " + hex32(flags) + " in a version 1 file");
  const uint64_t expected = le64(bytes.data() + 16);
  if (bytes.size() < expected)
    throw Error(path, "truncated: expected " + std::to_string(expected) + " bytes, found " +
                          std::to_string(bytes.size()));
  if (bytes.size() > expected) {
    // Reading stopped past the declared size; the file's own size says how far.
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    throw Error(path, "longer than its header says: expected " + std::to_string(expected) +
                          " bytes, found " +
                          (ec ? "more" : std::to_string(std::max<uintmax_t>(size, bytes.size()))));
  }
  if (expected < kHeaderBytes + 4)
    throw Error(path + " @ byte 16", "malformed checkpoint: declared size " +
                                         std::to_string(expected) + " is below the minimum");

  const size_t body_end = bytes.size() - 4;
  const uint32_t stored = le32(bytes.data() + body_end);
  const uint32_t computed = static_cast<uint32_t>(
      crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), body_end));
  if (stored != computed)
    throw Error(path, "checksum mismatch (stored " + hex32(stored) + ", computed " +
                          hex32(computed) + "): the file is corrupt");

  Reader r(path, bytes, kHeaderBytes, body_end);
  Checkpoint ck;
  ck.meta.space = r.str32("space name");
  ck.meta.arch_key = r.str32("arch key");
  const size_t info_at = r.pos();
  const uint64_t info_size = r.u64("metadata length");
  const char* info = r.take(info_size, "metadata");
  try {
    // Bounded in depth: a checkpoint is a file from outside, whatever its checksum says.
    ck.meta.info = read_json(std::string_view(info, info_size), "metadata");
  } catch (const Error& e) {
    r.fail(info_at, "the metadata JSON is refused: " + e.reason());
  }
  const uint32_t count = r.u32("tensor count");
  // Each tensor takes at least 8 bytes (name length, rank), which bounds the
  // reservation by the file's size.
  if (count > r.left() / 8) r.fail(r.pos() - 4, std::to_string(count) + " tensors cannot fit");
  ck.tensors.reserve(count);
  std::set<std::string> names;
  for (uint32_t i = 0; i < count; ++i) {
    const size_t at = r.pos();
    CheckpointTensor t;
    t.name = r.str32("tensor name");
    if (!names.insert(t.name).second)
      r.fail(at, "tensor '" + printable_excerpt(t.name, 60) + "' appears twice");
    const uint32_t rank = r.u32("tensor rank");
    if (rank > kMaxRank)
      r.fail(r.pos() - 4,
             "tensor '" + printable_excerpt(t.name, 60) + "' has rank " + std::to_string(rank));
    for (uint32_t k = 0; k < rank; ++k) t.shape.push_back(r.u64("tensor dimension"));
    uint64_t n = 0;
    if (!elements(t.shape, n) || n > r.left() / 4)
      r.fail(at, "tensor '" + printable_excerpt(t.name, 60) + "' of shape " + shape_text(t.shape) +
                     " does not fit in the file");
    const char* data = r.take(n * 4, "tensor data");
    t.data.resize(n);
    if constexpr (std::endian::native == std::endian::little) {
      if (n > 0) std::memcpy(t.data.data(), data, n * 4);  // an empty vector has no storage
    } else {
      for (uint64_t k = 0; k < n; ++k) t.data[k] = std::bit_cast<float>(le32(data + 4 * k));
    }
    ck.tensors.push_back(std::move(t));
  }
  if (r.left() != 0) r.fail(r.pos(), std::to_string(r.left()) + " bytes after the last tensor");
  return ck;
}

void check_checkpoint(const Checkpoint& checkpoint, std::string_view space,
                      std::string_view arch_key, std::span<const TensorSpec> expected,
                      const std::string& origin, bool allow_extra) {
  const CheckpointMeta& m = checkpoint.meta;
  if (m.space != space)
    throw Error(origin, "the checkpoint is of space '" + printable_excerpt(m.space, 60) +
                            "', expected '" + std::string(space) + "'");
  if (m.arch_key != arch_key)
    throw Error(origin, "the checkpoint is of architecture '" + printable_excerpt(m.arch_key, 120) +
                            "', expected '" + std::string(arch_key) + "'");
  std::set<std::string_view> wanted;
  for (const auto& spec : expected) {
    wanted.insert(spec.name);
    const CheckpointTensor* t = checkpoint.find(spec.name);
    if (!t) throw Error(origin, "tensor '" + spec.name + "' is missing from the checkpoint");
    if (t->shape != spec.shape)
      throw Error(origin, "tensor '" + spec.name + "' has shape " + shape_text(t->shape) +
                              ", expected " + shape_text(spec.shape));
  }
  if (allow_extra) return;
  for (const auto& t : checkpoint.tensors)
    if (!wanted.contains(t.name))
      throw Error(origin, "tensor '" + printable_excerpt(t.name, 60) +
                              "' in the checkpoint is not part of the network");
}

}  // namespace minas
