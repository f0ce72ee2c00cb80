#include "trainer/data.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "searchspace/error.h"

namespace minas::data {
namespace {

namespace fs = std::filesystem;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

uint32_t big_endian32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

void put_big_endian32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

std::string at(const std::string& path, const std::string& place) {
  return path + ", " + place;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }  // read-only: nothing to lose
};

// Bytes of a plain or gzip file, read in order. A gzip file may hold several members (as
// `cat a.gz b.gz` makes); anything else after the last member is an error.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path), file_(nullptr) {
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
    std::error_code ec;
    stored_size_ = fs::file_size(path, ec);
    if (ec) throw Error(path, "cannot read its size: " + ec.message());
    in_.resize(1 << 16);
    refill();
    gzip_ = in_end_ >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzip_) {
      std::memset(&z_, 0, sizeof z_);
      const int rc = inflateInit2(&z_, 15 + 16);  // 16: expect a gzip wrapper and check its CRC
      if (rc != Z_OK)
        throw Error(path,
                    "cannot start gzip decompression (zlib error " + std::to_string(rc) + ")");
      z_ready_ = true;
    }
  }
  ~ByteSource() {
    if (z_ready_) inflateEnd(&z_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  bool gzip() const { return gzip_; }
  uint64_t stored_size() const { return stored_size_; }
  // True when the gzip data ended before its end-of-stream marker and checksum.
  bool cut_short() const { return cut_short_; }

  // Up to n bytes; fewer only at the end of the data.
  size_t read(uint8_t* dst, size_t n) { return gzip_ ? read_gzip(dst, n) : read_plain(dst, n); }

  // Reads to the end, returning how many bytes were left.
  uint64_t drain() {
    uint8_t buf[1 << 14];
    uint64_t total = 0;
    for (size_t got; (got = read(buf, sizeof buf)) > 0;) total += got;
    return total;
  }

 private:
  // Keeps the unread bytes [in_pos_, in_end_) and appends what the file has next.
  void refill() {
    std::memmove(in_.data(), in_.data() + in_pos_, in_end_ - in_pos_);
    in_end_ -= in_pos_;
    in_pos_ = 0;
    const size_t got = std::fread(in_.data() + in_end_, 1, in_.size() - in_end_, file_.get());
    if (got == 0 && std::ferror(file_.get()))
      throw Error(path_, std::string("read error: ") + std::strerror(errno));
    in_end_ += got;
    file_read_ += got;
  }

  size_t read_plain(uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      if (in_pos_ == in_end_) {
        refill();
        if (in_end_ == 0) break;
      }
      const size_t k = std::min(n - done, in_end_ - in_pos_);
      std::memcpy(dst + done, in_.data() + in_pos_, k);
      in_pos_ += k;
      done += k;
    }
    return done;
  }

  uint64_t compressed_offset() const { return file_read_ - (in_end_ - in_pos_); }

  size_t read_gzip(uint8_t* dst, size_t n) {
    size_t done = 0;
    while (done < n && !finished_) {
      if (in_pos_ == in_end_) {
        refill();
        if (in_end_ == 0) {  // the file ends inside a gzip member
          cut_short_ = true;
          finished_ = true;
          break;
        }
      }
      z_.next_in = in_.data() + in_pos_;
      z_.avail_in = static_cast<uInt>(in_end_ - in_pos_);
      z_.next_out = dst + done;
      z_.avail_out = static_cast<uInt>(std::min<size_t>(n - done, UINT_MAX));
      const uInt out_before = z_.avail_out;
      const int rc = inflate(&z_, Z_NO_FLUSH);
      done += out_before - z_.avail_out;
      in_pos_ = in_end_ - z_.avail_in;
      switch (rc) {
        case Z_OK:
          break;
        case Z_BUF_ERROR:  // no progress possible: only when the input ran out, refilled above
          if (in_pos_ != in_end_)
            throw Error(at(path_, "byte " + std::to_string(compressed_offset())),
                        "gzip decompression made no progress");
          break;
        case Z_STREAM_END:
          next_member();
          break;
        case Z_DATA_ERROR:
        case Z_NEED_DICT:
          throw Error(at(path_, "byte " + std::to_string(compressed_offset())),
                      std::string("corrupt gzip data: ") + (z_.msg ? z_.msg : "invalid stream"));
        case Z_MEM_ERROR:
          throw Error(path_, "out of memory while decompressing");
        default:
          throw Error(path_, "gzip decompression failed (zlib error " + std::to_string(rc) + ")");
      }
    }
    return done;
  }

  // After a member's end: the file ends, or another member follows.
  void next_member() {
    if (in_end_ - in_pos_ < 2) refill();
    if (in_pos_ == in_end_) {
      finished_ = true;
      return;
    }
    if (in_end_ - in_pos_ < 2 || in_[in_pos_] != 0x1f || in_[in_pos_ + 1] != 0x8b) {
      const uint64_t offset = compressed_offset();
      throw Error(
          at(path_, "byte " + std::to_string(offset)),
          std::to_string(stored_size_ - offset) + " bytes of trailing data after the gzip stream");
    }
    const int rc = inflateReset(&z_);
    if (rc != Z_OK)
      throw Error(path_,
                  "cannot restart gzip decompression (zlib error " + std::to_string(rc) + ")");
  }

  std::string path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  uint64_t stored_size_ = 0;
  std::vector<uint8_t> in_;
  size_t in_pos_ = 0, in_end_ = 0;
  uint64_t file_read_ = 0;
  bool gzip_ = false;
  z_stream z_;
  bool z_ready_ = false;
  bool finished_ = false;
  bool cut_short_ = false;
};

std::string describe_magic(uint32_t magic) {
  if (magic == kIdxImagesMagic) return "an IDX images file";
  if (magic == kIdxImages4Magic) return "an IDX file of images with channels";
  if (magic == kIdxLabelsMagic) return "an IDX labels file";
  if ((magic >> 16) == 0 && (magic >> 8 & 0xff) >= 0x08)
    return "an IDX file of element type " + std::to_string(magic >> 8 & 0xff) + " with " +
           std::to_string(magic & 0xff) + " dimensions";
  if ((magic >> 16) == 0x1f8b) return "a gzip header in the decompressed data";
  return "not an IDX file";
}

std::string truncation(const ByteSource& src) {
  return src.cut_short() ? " (the gzip stream ends early)" : "";
}

struct IdxFile {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

// An unsigned-byte IDX file of the given magic; unit names one item of the first dimension
// ("image", "label") in errors.
IdxFile read_idx_file(const std::string& path, uint32_t magic, const std::string& what,
                      const std::string& unit) {
  ByteSource src(path);
  const size_t rank = magic & 0xff;
  const size_t header_size = 4 + 4 * rank;
  uint8_t header[4 + 4 * 4];
  const size_t got_header = src.read(header, header_size);
  if (got_header >= 4 && big_endian32(header) != magic)
    throw Error(at(path, "byte 0"), "wrong magic " + hex32(big_endian32(header)) + " (" +
                                        describe_magic(big_endian32(header)) + "), expected " +
                                        hex32(magic) + " (" + what + ")");
  if (got_header < header_size)
    throw Error(at(path, "byte " + std::to_string(got_header)),
                "truncated: the header needs " + std::to_string(header_size) +
                    " bytes, the file holds " + std::to_string(got_header) + truncation(src));

  IdxFile f;
  uint64_t unit_size = 1;
  for (size_t d = 0; d < rank; ++d) {
    f.dims.push_back(big_endian32(header + 4 + 4 * d));
    if (d > 0) {
      if (f.dims[d] == 0 || f.dims[d] > INT_MAX)
        throw Error(at(path, "byte " + std::to_string(4 + 4 * d)),
                    "dimension " + std::to_string(d) + " is " + std::to_string(f.dims[d]));
      unit_size *= f.dims[d];
    }
  }
  if (unit_size > INT_MAX)
    throw Error(at(path, "byte 4"), "each " + unit + " has " + std::to_string(unit_size) +
                                        " bytes, more than this reader takes");
  const uint64_t expected = f.dims[0] * unit_size;  // < 2^32 * 2^31: no overflow

  auto truncated = [&](uint64_t present) {
    std::string shape = std::to_string(f.dims[0]) + " " + unit + "s";
    if (rank == 3) shape += " of " + std::to_string(f.dims[1]) + "x" + std::to_string(f.dims[2]);
    if (rank == 4)
      shape += " of " + std::to_string(f.dims[1]) + "x" + std::to_string(f.dims[2]) + "x" +
               std::to_string(f.dims[3]);
    return Error(at(path, unit + " " + std::to_string(present / unit_size)),
                 "truncated: " + shape + " need " + std::to_string(expected) + " bytes after the " +
                     std::to_string(header_size) + "-byte header, the file holds " +
                     std::to_string(present) + truncation(src));
  };
  // Deflate expands at most 1032:1; a header claiming more than the file can hold is a truncated
  // file (or a corrupt count), found without allocating what the header claims.
  const uint64_t bound =
      src.gzip() ? src.stored_size() * 1032 + 1024
                 : src.stored_size() - std::min(src.stored_size(), uint64_t{header_size});
  if (expected > bound) throw truncated(src.drain());

  // The data grows as it arrives, so a gzip header that claims more than its
  // stream holds (up to 1032 times the file) costs only what the stream holds.
  constexpr uint64_t kStep = uint64_t{16} << 20;
  uint64_t got = 0;
  while (got < expected) {
    const uint64_t step = std::min(expected - got, kStep);
    f.data.resize(got + step);
    const size_t n = src.read(f.data.data() + got, step);
    got += n;
    if (n < step) break;
  }
  if (got < expected) throw truncated(got);
  const uint64_t extra = src.drain();  // for gzip this also reads and checks the CRC trailer
  if (extra > 0)
    throw Error(at(path, "byte " + std::to_string(header_size + expected)),
                std::to_string(extra) + " bytes after the last " + unit + "; the header says " +
                    std::to_string(f.dims[0]) + " " + unit + "s");
  if (src.cut_short()) throw Error(path, "truncated: the gzip stream ends before its checksum");
  return f;
}

// Writes bytes to a temporary file, then renames it to path.
class ByteSink {
 public:
  ByteSink(const std::string& path, Compression compression)
      : path_(path), tmp_(path + ".tmp"), gzip_(compression == Compression::Gzip) {
    if (gzip_) {
      gz_ = gzopen(tmp_.c_str(), "wb");
      if (!gz_) throw Error(path, std::string("cannot create: ") + std::strerror(errno));
    } else {
      file_ = std::fopen(tmp_.c_str(), "wb");
      if (!file_) throw Error(path, std::string("cannot create: ") + std::strerror(errno));
    }
  }
  ~ByteSink() {
    if (gz_) gzclose(gz_);
    if (file_) std::fclose(file_);
    if (!committed_) std::remove(tmp_.c_str());
  }
  ByteSink(const ByteSink&) = delete;
  ByteSink& operator=(const ByteSink&) = delete;

  void write(const uint8_t* p, size_t n) {
    while (n > 0) {
      const size_t k = std::min<size_t>(n, 1u << 30);
      if (gzip_) {
        if (gzwrite(gz_, p, static_cast<unsigned>(k)) != static_cast<int>(k)) {
          int code = 0;
          const char* msg = gzerror(gz_, &code);
          throw Error(path_, std::string("write failed: ") +
                                 (code == Z_ERRNO ? std::strerror(errno) : msg));
        }
      } else if (std::fwrite(p, 1, k, file_) != k) {
        throw Error(path_, std::string("write failed: ") + std::strerror(errno));
      }
      p += k;
      n -= k;
    }
  }

  void commit() {
    if (gzip_) {
      const int rc = gzclose(gz_);
      gz_ = nullptr;
      if (rc != Z_OK) throw Error(path_, "write failed (zlib error " + std::to_string(rc) + ")");
    } else {
      const int rc = std::fclose(file_);
      file_ = nullptr;
      if (rc != 0) throw Error(path_, std::string("write failed: ") + std::strerror(errno));
    }
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) throw Error(path_, "cannot rename the written file into place: " + ec.message());
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  bool gzip_;
  gzFile gz_ = nullptr;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t mix64(uint64_t z) {  // the SplitMix64 finalizer: a bijection that scatters bits
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The seed of one random stream: the loader's shuffle of an epoch, or its augmentation of one
// batch. A function of its arguments only, so it does not depend on which thread asks or when.
enum class Stream : uint64_t { Shuffle = 1, Augment = 2, Split = 3, Subset = 4 };
uint64_t stream_seed(uint64_t seed, Stream stream, uint64_t epoch = 0, uint64_t batch = 0) {
  uint64_t h = mix64(seed ^ 0x6d696e6173646174ULL);  // "minasdat"
  h = mix64(h + static_cast<uint64_t>(stream));
  h = mix64(h + epoch);
  return mix64(h + batch);
}

void shuffle(std::vector<uint32_t>& v, Rng& rng) {  // Fisher-Yates
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

// Every function that reads images by index checks them here, and the data set's own sizes.
void check_indices(const Dataset& ds, std::span<const uint32_t> indices) {
  if (ds.shape.c <= 0 || ds.shape.h <= 0 || ds.shape.w <= 0 ||
      ds.pixels.size() != ds.size() * ds.image_size())
    throw Error(ds.source, std::to_string(ds.pixels.size()) + " pixels for " +
                               std::to_string(ds.size()) + " images of " + to_string(ds.shape));
  for (size_t i = 0; i < indices.size(); ++i)
    if (indices[i] >= ds.size())
      throw Error(ds.source, "index " + std::to_string(indices[i]) + " at position " +
                                 std::to_string(i) + " is outside the data set's " +
                                 std::to_string(ds.size()) + " images");
}

const char* const kFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

std::string find_file(const fs::path& dir, const char* name) {
  std::error_code ec;
  for (const std::string& candidate : {std::string(name), std::string(name) + ".gz"})
    if (fs::is_regular_file(dir / candidate, ec)) return (dir / candidate).string();
  throw Error(dir.string(), std::string("no ") + name + " or " + name + ".gz in this folder");
}

}  // namespace

// ---- IDX files ------------------------------------------------------------------------------

IdxImages read_idx_images(const std::string& path) {
  uint32_t magic = 0;
  {
    ByteSource peek(path);
    uint8_t head[4];
    if (peek.read(head, 4) == 4) magic = big_endian32(head);
  }
  if (magic == kIdxImages4Magic) {
    IdxFile f = read_idx_file(path, kIdxImages4Magic, "IDX images with channels", "image");
    if (f.dims[1] > 4096)
      throw Error(at(path, "byte 8"), std::to_string(f.dims[1]) + " channels is not an image");
    IdxImages im{f.dims[0], f.dims[2], f.dims[3], std::move(f.data)};
    im.channels = f.dims[1];
    return im;
  }
  IdxFile f = read_idx_file(path, kIdxImagesMagic, "IDX images", "image");
  return {f.dims[0], f.dims[1], f.dims[2], std::move(f.data)};
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  return read_idx_file(path, kIdxLabelsMagic, "IDX labels", "label").data;
}

void write_idx_images(const std::string& path, std::span<const uint8_t> pixels, uint32_t count,
                      uint32_t rows, uint32_t cols, Compression compression, uint32_t channels) {
  if (channels < 1 || pixels.size() != uint64_t{count} * channels * rows * cols)
    throw Error(path, std::to_string(pixels.size()) + " pixels given for " + std::to_string(count) +
                          " images of " + (channels == 1 ? "" : std::to_string(channels) + "x") +
                          std::to_string(rows) + "x" + std::to_string(cols));
  uint8_t header[20];
  size_t size = 0;
  put_big_endian32(header, channels == 1 ? kIdxImagesMagic : kIdxImages4Magic);
  put_big_endian32(header + 4, count);
  if (channels == 1) {
    put_big_endian32(header + 8, rows);
    put_big_endian32(header + 12, cols);
    size = 16;
  } else {
    put_big_endian32(header + 8, channels);
    put_big_endian32(header + 12, rows);
    put_big_endian32(header + 16, cols);
    size = 20;
  }
  ByteSink sink(path, compression);
  sink.write(header, size);
  sink.write(pixels.data(), pixels.size());
  sink.commit();
}

void write_idx_labels(const std::string& path, std::span<const uint8_t> labels,
                      Compression compression) {
  if (labels.size() > UINT32_MAX)
    throw Error(path, std::to_string(labels.size()) + " labels do not fit an IDX count");
  uint8_t header[8];
  put_big_endian32(header, kIdxLabelsMagic);
  put_big_endian32(header + 4, static_cast<uint32_t>(labels.size()));
  ByteSink sink(path, compression);
  sink.write(header, sizeof header);
  sink.write(labels.data(), labels.size());
  sink.commit();
}

// ---- Data sets ------------------------------------------------------------------------------

std::string Dataset::fingerprint() const {
  uint8_t dims[16];
  const uint32_t values[4] = {static_cast<uint32_t>(shape.c), static_cast<uint32_t>(shape.h),
                              static_cast<uint32_t>(shape.w), static_cast<uint32_t>(size())};
  for (int i = 0; i < 4; ++i)
    for (int b = 0; b < 4; ++b) dims[4 * i + b] = static_cast<uint8_t>(values[i] >> (8 * b));
  uint64_t h = 0xcbf29ce484222325ULL;  // the FNV-1a 64 offset basis
  h = fnv1a(h, dims, sizeof dims);
  h = fnv1a(h, labels.data(), labels.size());
  h = fnv1a(h, pixels.data(), pixels.size());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  if (classes != 0 && (classes < 2 || classes > 256))
    throw Error(labels_path,
                "the number of classes must be in [2, 256], not " + std::to_string(classes));
  IdxImages images = read_idx_images(images_path);
  std::vector<uint8_t> labels = read_idx_labels(labels_path);
  if (labels.size() != images.count)
    throw Error(labels_path, "holds " + std::to_string(labels.size()) + " labels but " +
                                 images_path + " holds " + std::to_string(images.count) +
                                 " images");
  if (classes == 0) {
    const uint8_t top = labels.empty() ? 0 : *std::max_element(labels.begin(), labels.end());
    classes = std::max(2, top + 1);
  }
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] >= classes)
      throw Error(at(labels_path, "label " + std::to_string(i)),
                  "value " + std::to_string(labels[i]) + " is not below the number of classes, " +
                      std::to_string(classes));
  Dataset ds;
  ds.source = images_path;
  ds.shape = {static_cast<int>(images.channels), static_cast<int>(images.rows),
              static_cast<int>(images.cols)};
  ds.classes = classes;
  ds.pixels = std::move(images.pixels);
  ds.labels = std::move(labels);
  return ds;
}

void write_idx(const Dataset& ds, const std::string& images_path, const std::string& labels_path,
               Compression compression) {
  if (ds.shape.c < 1)
    throw Error(images_path, "the data set has " + std::to_string(ds.shape.c) + " channels");
  if (ds.size() > UINT32_MAX || ds.pixels.size() != ds.size() * ds.image_size())
    throw Error(images_path, "the data set's pixels do not match its labels and shape");
  write_idx_images(images_path, ds.pixels, static_cast<uint32_t>(ds.size()),
                   static_cast<uint32_t>(ds.shape.h), static_cast<uint32_t>(ds.shape.w),
                   compression, static_cast<uint32_t>(ds.shape.c));
  write_idx_labels(labels_path, ds.labels, compression);
}

namespace {

// The folder a data set name stands for, checked to exist, and its class count if known.
fs::path dataset_dir(const std::string& name_or_dir, int* classes) {
  fs::path dir = name_or_dir;
  std::error_code ec;
  if (name_or_dir == "fashion-mnist" || name_or_dir == "mnist") {
    dir = "/usr/share/datasets/" + name_or_dir;
    *classes = 10;
    if (!fs::is_directory(dir, ec))
      throw Error(name_or_dir,
                  dir.string() + " is missing: " +
                      (name_or_dir == "fashion-mnist"
                           ? "install the Debian package dataset-fashion-mnist"
                           : "no Debian package ships MNIST; put its four IDX files in that "
                             "folder, or pass a folder holding them"));
  } else if (!fs::is_directory(dir, ec)) {
    throw Error(name_or_dir, "neither a data set name (fashion-mnist, mnist) nor a folder");
  }
  return dir;
}

}  // namespace

std::vector<std::string> dataset_files(const std::string& name_or_dir) {
  int classes = 0;
  const fs::path dir = dataset_dir(name_or_dir, &classes);
  std::vector<std::string> files;
  for (const char* f : kFiles) files.push_back(find_file(dir, f));
  return files;
}

TrainTest load_dataset(const std::string& name_or_dir) {
  int classes = 0;
  const fs::path dir = dataset_dir(name_or_dir, &classes);
  TrainTest tt;
  tt.train = read_idx(find_file(dir, kFiles[0]), find_file(dir, kFiles[1]), classes);
  if (tt.train.size() == 0) throw Error(tt.train.source, "the training set holds no images");
  tt.test = read_idx(find_file(dir, kFiles[2]), find_file(dir, kFiles[3]), tt.train.classes);
  if (tt.test.shape != tt.train.shape)
    throw Error(tt.test.source, "images are " + to_string(tt.test.shape) +
                                    ", the training set's are " + to_string(tt.train.shape));
  return tt;
}

// ---- Index sets -----------------------------------------------------------------------------

std::vector<uint32_t> all_indices(const Dataset& ds) {
  std::vector<uint32_t> v(ds.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint32_t>(i);
  return v;
}

Split split(const Dataset& ds, std::span<const uint32_t> pool, size_t val_count, uint64_t seed) {
  check_indices(ds, pool);
  const size_t n = pool.size();
  if (n == 0 && val_count == 0) return {};
  if (val_count >= n)
    throw Error(ds.source, "cannot hold out " + std::to_string(val_count) +
                               " validation images of " + std::to_string(n) +
                               ": none would be left to train on");
  std::vector<std::vector<uint32_t>> by_class(ds.classes);
  std::vector<bool> taken(ds.size());
  for (uint32_t i : pool) {
    if (taken[i]) throw Error(ds.source, "image " + std::to_string(i) + " is in the pool twice");
    taken[i] = true;
    if (ds.labels[i] >= by_class.size())
      throw Error(ds.source, "image " + std::to_string(i) + " has label " +
                                 std::to_string(ds.labels[i]) + ", not below the " +
                                 std::to_string(ds.classes) + " classes");
    by_class[ds.labels[i]].push_back(i);
  }
  // Largest remainder: floor(val_count * n_k / n) each, then one more for the classes with the
  // largest fractions until the total is val_count. Never more than n_k, as val_count < n.
  const size_t k = by_class.size();
  std::vector<size_t> quota(k);
  std::vector<uint64_t> remainder(k);
  size_t assigned = 0;
  for (size_t c = 0; c < k; ++c) {
    const unsigned __int128 share = static_cast<unsigned __int128>(val_count) * by_class[c].size();
    quota[c] = static_cast<size_t>(share / n);
    remainder[c] = static_cast<uint64_t>(share % n);
    assigned += quota[c];
  }
  std::vector<size_t> order(k);
  for (size_t c = 0; c < k; ++c) order[c] = c;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
  for (size_t i = 0; assigned < val_count; ++i, ++assigned) ++quota[order[i]];

  Rng rng(stream_seed(seed, Stream::Split));
  Split s;
  s.train.reserve(n - val_count);
  s.val.reserve(val_count);
  for (size_t c = 0; c < k; ++c) {
    shuffle(by_class[c], rng);
    s.val.insert(s.val.end(), by_class[c].begin(), by_class[c].begin() + quota[c]);
    s.train.insert(s.train.end(), by_class[c].begin() + quota[c], by_class[c].end());
  }
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.val.begin(), s.val.end());
  return s;
}

Split split(const Dataset& ds, size_t val_count, uint64_t seed) {
  return split(ds, all_indices(ds), val_count, seed);
}

std::vector<uint32_t> subset(std::span<const uint32_t> indices, size_t k,
                             std::optional<uint64_t> seed) {
  k = std::min(k, indices.size());
  if (!seed) return {indices.begin(), indices.begin() + k};
  // A seeded partial Fisher-Yates over positions picks k of them; sorting keeps the given order.
  std::vector<uint32_t> positions(indices.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<uint32_t>(i);
  Rng rng(stream_seed(*seed, Stream::Subset));
  for (size_t i = 0; i < k; ++i)
    std::swap(positions[i], positions[i + rng.below(positions.size() - i)]);
  positions.resize(k);
  std::sort(positions.begin(), positions.end());
  std::vector<uint32_t> out(k);
  for (size_t i = 0; i < k; ++i) out[i] = indices[positions[i]];
  return out;
}

Dataset gather(const Dataset& ds, std::span<const uint32_t> indices) {
  check_indices(ds, indices);
  Dataset out;
  out.source = ds.source;
  out.shape = ds.shape;
  out.classes = ds.classes;
  const size_t size = ds.image_size();
  out.pixels.resize(indices.size() * size);
  out.labels.resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::memcpy(out.pixels.data() + i * size, ds.image(indices[i]), size);
    out.labels[i] = ds.labels[indices[i]];
  }
  return out;
}

// ---- Normalization and augmentation ---------------------------------------------------------

Normalization compute_normalization(const Dataset& ds, std::span<const uint32_t> indices) {
  check_indices(ds, indices);
  const int channels = ds.shape.c;
  const size_t plane = static_cast<size_t>(ds.shape.h) * ds.shape.w;
  // Exact integer sums; sum_sq overflows only past 2.8e14 pixels.
  std::vector<uint64_t> sum(channels), sum_sq(channels);
  for (uint32_t i : indices) {
    const uint8_t* img = ds.image(i);
    for (int c = 0; c < channels; ++c) {
      uint64_t s = 0, q = 0;
      for (size_t p = 0; p < plane; ++p) {
        const uint32_t v = img[c * plane + p];
        s += v;
        q += v * v;
      }
      sum[c] += s;
      sum_sq[c] += q;
    }
  }
  Normalization norm;
  const double count = static_cast<double>(indices.size()) * plane;
  for (int c = 0; c < channels; ++c) {
    const double mean = count > 0 ? sum[c] / count / 255.0 : 0.0;
    const double var = count > 0 ? sum_sq[c] / count / (255.0 * 255.0) - mean * mean : 0.0;
    const double stddev = var > 1e-12 ? std::sqrt(var) : 1.0;
    norm.mean.push_back(static_cast<float>(mean));
    norm.stddev.push_back(static_cast<float>(stddev));
  }
  return norm;
}

Normalization compute_normalization(const Dataset& ds) {
  return compute_normalization(ds, all_indices(ds));
}

Normalizer::Normalizer(const Normalization& norm, int channels) {
  if (norm.mean.size() != static_cast<size_t>(channels) ||
      norm.stddev.size() != static_cast<size_t>(channels))
    throw Error("normalization", std::to_string(norm.mean.size()) + " means and " +
                                     std::to_string(norm.stddev.size()) +
                                     " standard deviations for " + std::to_string(channels) +
                                     " channels");
  table_.resize(static_cast<size_t>(channels) * 256);
  for (int c = 0; c < channels; ++c) {
    if (!(norm.stddev[c] > 0.0f) || !std::isfinite(norm.mean[c]))
      throw Error("normalization", "channel " + std::to_string(c) + " has mean " +
                                       std::to_string(norm.mean[c]) + " and standard deviation " +
                                       std::to_string(norm.stddev[c]));
    for (int p = 0; p < 256; ++p)
      table_[c * 256 + p] = (static_cast<float>(p) / 255.0f - norm.mean[c]) / norm.stddev[c];
  }
}

Transform draw_transform(const Augmentation& aug, Rng& rng) {
  Transform t;
  t.pad = aug.pad;
  t.dy = t.dx = aug.pad;  // the centre: no shift
  if (aug.pad > 0) {
    t.dy = static_cast<int>(rng.below(2 * static_cast<uint64_t>(aug.pad) + 1));
    t.dx = static_cast<int>(rng.below(2 * static_cast<uint64_t>(aug.pad) + 1));
  }
  if (aug.flip) t.flip = rng.below(2) == 1;
  return t;
}

void transform_image(const uint8_t* image, Shape shape, const Transform& t, const Normalizer& norm,
                     float* out) {
  if (shape.c != norm.channels())
    throw Error("normalization", "a table for " + std::to_string(norm.channels()) +
                                     " channels given images of " + to_string(shape));
  const int h = shape.h, w = shape.w;
  for (int c = 0; c < shape.c; ++c) {
    const float* table = norm.table(c);
    const float padding = table[0];  // raw pixel 0, as torchvision pads before normalizing
    const uint8_t* src = image + static_cast<size_t>(c) * h * w;
    float* dst = out + static_cast<size_t>(c) * h * w;
    for (int y = 0; y < h; ++y) {
      float* row = dst + static_cast<size_t>(y) * w;
      const int sy = y + t.dy - t.pad;
      if (sy < 0 || sy >= h) {
        std::fill(row, row + w, padding);
        continue;
      }
      const uint8_t* src_row = src + static_cast<size_t>(sy) * w;
      for (int x = 0; x < w; ++x) {
        const int sx = x + t.dx - t.pad;
        row[t.flip ? w - 1 - x : x] = sx >= 0 && sx < w ? table[src_row[sx]] : padding;
      }
    }
  }
}

void normalize(const Dataset& ds, std::span<const uint32_t> indices, const Normalization& norm,
               float* x, int32_t* y) {
  check_indices(ds, indices);
  const Normalizer normalizer(norm, ds.shape.c);
  const size_t size = ds.image_size();
  const size_t plane = static_cast<size_t>(ds.shape.h) * ds.shape.w;
  for (size_t i = 0; i < indices.size(); ++i) {
    const uint8_t* src = ds.image(indices[i]);
    float* dst = x + i * size;
    for (int c = 0; c < ds.shape.c; ++c) {
      const float* table = normalizer.table(c);
      for (size_t p = c * plane; p < (c + 1) * plane; ++p) dst[p] = table[src[p]];
    }
    if (y) y[i] = ds.labels[indices[i]];
  }
}

// ---- Batches --------------------------------------------------------------------------------

BatchLoader::BatchLoader(const Dataset& ds, std::vector<uint32_t> indices, LoaderOptions options)
    : ds_(ds),
      indices_(std::move(indices)),
      options_(std::move(options)),
      normalizer_(options_.norm, ds.shape.c) {
  check_indices(ds, indices_);
  if (options_.batch_size <= 0)
    throw Error("loader",
                "batch size must be positive, not " + std::to_string(options_.batch_size));
  if (options_.prefetch < 1 || options_.prefetch > 64)
    throw Error("loader", "prefetch must be in [1, 64], not " + std::to_string(options_.prefetch));
  if (options_.augment.pad < 0 || options_.augment.pad > std::min(ds.shape.h, ds.shape.w))
    throw Error("loader", "crop padding " + std::to_string(options_.augment.pad) +
                              " is outside [0, " +
                              std::to_string(std::min(ds.shape.h, ds.shape.w)) + "]");
  const size_t b = static_cast<size_t>(options_.batch_size);
  batches_per_epoch_ = options_.drop_last ? indices_.size() / b : (indices_.size() + b - 1) / b;

  ring_.resize(static_cast<size_t>(options_.prefetch) + 1);
  for (Slot& slot : ring_) {
    slot.x.resize(b * ds.image_size());
    slot.y.resize(b);
    slot.samples.resize(b);
  }
  order_.resize(indices_.size());
  if (batches_per_epoch_ > 0) worker_ = std::thread([this] { work(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  worker_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

uint64_t BatchLoader::epoch() const {
  std::lock_guard lock(mu_);
  return epoch_;
}

bool BatchLoader::next(Batch& batch) {
  std::unique_lock lock(mu_);
  if (holding_) {
    holding_ = false;
    worker_cv_.notify_one();
  }
  if (position_ == batches_per_epoch_) {
    ++epoch_;
    position_ = 0;
    return false;
  }
  const uint64_t seq = consumed_;
  consumer_cv_.wait(lock, [&] { return produced_ > seq || error_; });
  if (produced_ <= seq) std::rethrow_exception(error_);  // the batch that failed is this one
  const Slot& slot = ring_[seq % ring_.size()];
  batch.n = slot.n;
  batch.x = slot.x.data();
  batch.y = slot.y.data();
  batch.samples = slot.samples.data();
  batch.epoch = epoch_;
  batch.position = position_;
  ++consumed_;
  holding_ = true;
  ++position_;
  return true;
}

void BatchLoader::reset(uint64_t epoch) {
  {
    std::lock_guard lock(mu_);
    ++generation_;
    start_epoch_ = epoch;
    produced_ = consumed_ = 0;
    holding_ = false;
    epoch_ = epoch;
    position_ = 0;
    error_ = nullptr;
  }
  worker_cv_.notify_all();
}

void BatchLoader::work() {
  uint64_t generation = UINT64_MAX, seq = 0, start = 0;
  bool failed = false;  // this generation threw; wait for a reset
  for (;;) {
    {
      std::unique_lock lock(mu_);
      worker_cv_.wait(lock, [&] {
        return stop_ || generation != generation_ || (!failed && seq < released() + ring_.size());
      });
      if (stop_) return;
      if (generation != generation_) {
        generation = generation_;
        start = start_epoch_;
        seq = 0;
        failed = false;
        continue;  // recheck room in the ring
      }
    }
    std::exception_ptr failure;
    try {
      fill(ring_[seq % ring_.size()], start + seq / batches_per_epoch_, seq % batches_per_epoch_);
    } catch (...) {
      failure = std::current_exception();
    }
    std::lock_guard lock(mu_);
    if (generation != generation_) continue;  // a reset while filling makes this batch stale
    if (failure) {
      // Moved under the lock: this thread keeps no reference the consumer could outlive.
      error_ = std::move(failure);
      failed = true;
    } else {
      produced_ = seq + 1;
      ++seq;
    }
    consumer_cv_.notify_one();
  }
}

EpochPlan epoch_plan(std::span<const uint32_t> indices, const LoaderOptions& options,
                     uint64_t epoch) {
  if (options.batch_size < 1) throw Error("loader", "batch size must be at least 1");
  if (options.augment.pad < 0 || options.augment.pad > 255)
    throw Error("loader", "crop padding " + std::to_string(options.augment.pad) + " out of range");
  EpochPlan plan;
  plan.pad = options.augment.pad;
  plan.index.assign(indices.begin(), indices.end());
  if (options.shuffle) {
    Rng rng(stream_seed(options.seed, Stream::Shuffle, epoch));
    shuffle(plan.index, rng);
  }
  const size_t n = plan.index.size(), b = static_cast<size_t>(options.batch_size);
  plan.dy.resize(n);
  plan.dx.resize(n);
  plan.flip.resize(n);
  for (size_t first = 0, position = 0; first < n; first += b, ++position) {
    Rng rng(stream_seed(options.seed, Stream::Augment, epoch, position));
    for (size_t i = first; i < std::min(n, first + b); ++i) {
      const Transform t = draw_transform(options.augment, rng);
      plan.dy[i] = static_cast<uint8_t>(t.dy);
      plan.dx[i] = static_cast<uint8_t>(t.dx);
      plan.flip[i] = t.flip ? 1 : 0;
    }
  }
  return plan;
}

void BatchLoader::order_for(uint64_t epoch) {
  if (order_epoch_ == epoch) return;
  std::copy(indices_.begin(), indices_.end(), order_.begin());
  if (options_.shuffle) {
    Rng rng(stream_seed(options_.seed, Stream::Shuffle, epoch));
    shuffle(order_, rng);
  }
  order_epoch_ = epoch;
}

void BatchLoader::fill(Slot& slot, uint64_t epoch, size_t position) {
  order_for(epoch);
  const size_t b = static_cast<size_t>(options_.batch_size);
  const size_t first = position * b;
  const int n = static_cast<int>(std::min(b, indices_.size() - first));
  const size_t size = ds_.image_size();
  Rng rng(stream_seed(options_.seed, Stream::Augment, epoch, position));
  for (int i = 0; i < n; ++i) {
    const uint32_t index = order_[first + i];
    transform_image(ds_.image(index), ds_.shape, draw_transform(options_.augment, rng), normalizer_,
                    slot.x.data() + i * size);
    slot.y[i] = ds_.labels[index];
    slot.samples[i] = index;
  }
  slot.n = n;
  if (options_.on_batch) options_.on_batch(slot.x.data(), slot.y.data(), n, rng);
}

}  // namespace minas::data
