#pragma once
// The training data pipeline: IDX files (MNIST, Fashion-MNIST) in and out, data sets in memory
// with a fingerprint, stratified seeded train/validation splits, normalization, augmentation
// (random crop with padding, horizontal flip) and a BatchLoader that prepares batches on a
// background thread. Every random draw comes from minas::Rng streams derived from a seed, so a
// seed means the same data order and the same augmentation on every machine, whatever the timing.
// Bad files throw minas::Error naming the file and the image, label or byte at fault.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "searchspace/layer_graph.h"
#include "searchspace/rng.h"

namespace minas::data {

// ---- IDX files ------------------------------------------------------------------------------
// Big-endian header: magic 0x00000803 then count, rows, cols for images; magic 0x00000801 then
// count for labels; then one unsigned byte per pixel or label. Readers take plain or gzip files
// (told apart by the gzip magic bytes 1f 8b, not by the name).

inline constexpr uint32_t kIdxImagesMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;
// Images of more than one channel (minas adapt's colour data sets): 4 dimensions, count,
// channels, rows, cols, each image planar (CHW). Grayscale images are always written 3-D.
inline constexpr uint32_t kIdxImages4Magic = 0x00000804;

enum class Compression { None, Gzip };

struct IdxImages {
  uint32_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count x channels x rows x cols
  uint32_t channels = 1;
};

IdxImages read_idx_images(const std::string& path);  // 3-D, or 4-D with channels
std::vector<uint8_t> read_idx_labels(const std::string& path);
// Both write to a temporary file renamed into place, so a failed write leaves no partial file.
// More than one channel writes the 4-D form.
void write_idx_images(const std::string& path, std::span<const uint8_t> pixels, uint32_t count,
                      uint32_t rows, uint32_t cols, Compression compression = Compression::None,
                      uint32_t channels = 1);
void write_idx_labels(const std::string& path, std::span<const uint8_t> labels,
                      Compression compression = Compression::None);

// ---- Data sets ------------------------------------------------------------------------------

struct Dataset {
  std::string source;           // the images file it was read from, for errors and records
  Shape shape;                  // of one image, C x H x W
  int classes = 0;              // labels are in [0, classes)
  std::vector<uint8_t> pixels;  // size() x C x H x W, row-major (NCHW), raw 0..255
  std::vector<uint8_t> labels;  // one per image

  size_t size() const { return labels.size(); }
  size_t image_size() const { return static_cast<size_t>(shape.elements()); }
  const uint8_t* image(size_t i) const { return pixels.data() + i * image_size(); }
  // 16 hex digits: FNV-1a 64 over C, H, W, count (4 bytes each, little-endian), the labels, then
  // the pixels. Experiments record it to say exactly what they trained on.
  std::string fingerprint() const;
};

struct TrainTest {
  Dataset train, test;
};

// An images file and its labels file as one data set. classes 0: max label + 1 (at least 2);
// otherwise every label must be below it. Counts must agree.
Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes = 0);
// Writes the four-file layout's images and labels of one set (4-D images when it has more than
// one channel).
void write_idx(const Dataset& ds, const std::string& images_path, const std::string& labels_path,
               Compression compression = Compression::None);

// "fashion-mnist" (/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist), "mnist"
// (/usr/share/datasets/mnist) or a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or with .gz (plain preferred).
// The test set takes the training set's classes and must have its image shape.
TrainTest load_dataset(const std::string& name_or_dir);
// The four files load_dataset reads for that name (train images, train labels, test images,
// test labels), as found: plain or .gz. A worker that lacks a data set is sent these.
std::vector<std::string> dataset_files(const std::string& name_or_dir);

// ---- Index sets -----------------------------------------------------------------------------

struct Split {
  std::vector<uint32_t> train, val;  // disjoint, each ascending
};

std::vector<uint32_t> all_indices(const Dataset& ds);  // 0 .. size()-1
// Holds val_count images of the pool out for validation, stratified: class k gives
// val_count * n_k / n of them, the remainders rounded by largest fraction (ties to the lower
// class). Which images of a class go is a seeded shuffle; val_count must be below the pool size.
Split split(const Dataset& ds, std::span<const uint32_t> pool, size_t val_count, uint64_t seed);
Split split(const Dataset& ds, size_t val_count, uint64_t seed);  // the pool is the whole set
// k indices of `indices` (all of them when k is larger): the first k without a seed, otherwise
// k drawn at random; kept in their order in `indices`.
std::vector<uint32_t> subset(std::span<const uint32_t> indices, size_t k,
                             std::optional<uint64_t> seed = std::nullopt);
// A new data set of the given images, in that order, with the same classes.
Dataset gather(const Dataset& ds, std::span<const uint32_t> indices);

// ---- Normalization and augmentation ---------------------------------------------------------

// Per channel, in units of pixel / 255: a pixel p becomes (p / 255 - mean) / stddev.
struct Normalization {
  std::vector<float> mean, stddev;
  static Normalization fashion_mnist() { return {{0.2860f}, {0.3530f}}; }  // its training set's
};

// Mean and population standard deviation of the pixels of the given images, per channel, from
// exact integer sums (the same on every machine). A constant channel gets stddev 1.
Normalization compute_normalization(const Dataset& ds, std::span<const uint32_t> indices);
Normalization compute_normalization(const Dataset& ds);

// Normalization tabulated: 256 floats per channel.
class Normalizer {
 public:
  Normalizer(const Normalization& norm, int channels);  // throws on a channel count mismatch
  const float* table(int c) const { return table_.data() + static_cast<size_t>(c) * 256; }
  int channels() const { return static_cast<int>(table_.size() / 256); }

 private:
  std::vector<float> table_;
};

// The common recipe (torchvision RandomCrop(padding=pad) then RandomHorizontalFlip): pad by raw
// pixel 0, which normalizes to -mean / stddev, then crop H x W at a uniform offset.
struct Augmentation {
  int pad = 0;        // random crop: offsets uniform in [0, 2 * pad] on each axis
  bool flip = false;  // horizontal flip with probability 1/2
};

// One image's draw. The crop window starts at (dy, dx) of the padded image, so the output pixel
// (y, x) is source pixel (y + dy - pad, x + dx - pad); the flip then mirrors the crop.
struct Transform {
  int pad = 0, dy = 0, dx = 0;
  bool flip = false;
};

// Draws dy, dx (when pad > 0) then flip (when enabled), in that order.
Transform draw_transform(const Augmentation& aug, Rng& rng);
// Normalizes and transforms one C x H x W image into out (C x H x W floats).
void transform_image(const uint8_t* image, Shape shape, const Transform& t, const Normalizer& norm,
                     float* out);
// Normalizes the given images without augmentation into x (indices.size() x C x H x W) and, when
// y is not null, their labels into y: the evaluation path.
void normalize(const Dataset& ds, std::span<const uint32_t> indices, const Normalization& norm,
               float* x, int32_t* y = nullptr);

// ---- Batches --------------------------------------------------------------------------------

struct Batch {
  int n = 0;                          // images: the batch size, or fewer in an epoch's last batch
  const float* x = nullptr;           // n x C x H x W, normalized and augmented
  const int32_t* y = nullptr;         // n labels
  const uint32_t* samples = nullptr;  // n data set indices, for per-sample records and checks
  uint64_t epoch = 0;
  size_t position = 0;  // the batch's place in its epoch, from 0
};

struct LoaderOptions {
  int batch_size = 128;
  bool shuffle = true;     // a fresh seeded permutation every epoch; otherwise the given order
  bool drop_last = false;  // skip an epoch's final partial batch
  Augmentation augment;    // none by default (the evaluation setting)
  Normalization norm = Normalization::fashion_mnist();  // one entry per channel of the data set
  uint64_t seed = 0;
  int prefetch = 2;  // batches prepared ahead of the one being consumed
  // Runs on the prefetch thread after augmentation, with that batch's own random stream (for
  // extra augmentation such as cutout); what it throws reaches the consumer at that batch.
  std::function<void(float* x, int32_t* y, int n, Rng& rng)> on_batch;
};

// What a BatchLoader with these options makes of epoch `epoch` of `indices`,
// without the pixels: for each position of the epoch (batch b holds positions
// b * batch_size ...), the image index and its crop offsets and flip, drawn
// from the same streams in the same order. A GPU gathers and augments its
// batches from a resident copy of the data set by this plan, so they equal
// the CPU loader's to the bit. on_batch is not part of it.
struct EpochPlan {
  std::vector<uint32_t> index;
  std::vector<uint8_t> dy, dx, flip;
  int pad = 0;
};
EpochPlan epoch_plan(std::span<const uint32_t> indices, const LoaderOptions& options,
                     uint64_t epoch);

// Batches of one data set's images in seeded order, prepared by a background thread into a ring
// of prefetch + 1 buffers allocated up front. The shuffle of epoch e and the augmentation of its
// batch b come from streams derived from (seed, e, b), so the batches are the same whatever the
// timing, and reset(e) reproduces epoch e exactly. The data set must outlive the loader.
class BatchLoader {
 public:
  BatchLoader(const Dataset& ds, std::vector<uint32_t> indices, LoaderOptions options);
  ~BatchLoader();  // stops and joins the thread, also mid-epoch
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch, valid until the next call to next() or reset(). False at the end of an
  // epoch; the call after that starts the next one. Rethrows what the thread threw for it.
  bool next(Batch& batch);
  size_t batches_per_epoch() const { return batches_per_epoch_; }
  uint64_t epoch() const;      // the epoch the next batch comes from
  void reset(uint64_t epoch);  // drops what was prepared and restarts at that epoch's batch 0

 private:
  struct Slot {
    std::vector<float> x;
    std::vector<int32_t> y;
    std::vector<uint32_t> samples;
    int n = 0;
  };

  void work();
  void fill(Slot& slot, uint64_t epoch, size_t position);
  void order_for(uint64_t epoch);
  uint64_t released() const { return consumed_ - (holding_ ? 1 : 0); }

  const Dataset& ds_;
  const std::vector<uint32_t> indices_;
  const LoaderOptions options_;
  const Normalizer normalizer_;
  size_t batches_per_epoch_ = 0;
  std::vector<Slot> ring_;

  // Owned by the worker thread: the permutation of indices_ for order_epoch_.
  std::vector<uint32_t> order_;
  uint64_t order_epoch_ = UINT64_MAX;

  // Guarded by mu_. Batches are numbered from the last reset: sequence s is batch s % per-epoch
  // of epoch start_epoch_ + s / per-epoch, in slot s % ring size. The worker fills s only while
  // s < released() + ring size, so it never writes the slot the consumer holds.
  mutable std::mutex mu_;
  std::condition_variable worker_cv_, consumer_cv_;
  uint64_t generation_ = 0;  // bumped by reset; the worker drops batches of older generations
  uint64_t start_epoch_ = 0;
  uint64_t produced_ = 0;  // sequences ready
  uint64_t consumed_ = 0;  // sequences handed out
  bool holding_ = false;   // the consumer still holds sequence consumed_ - 1
  uint64_t epoch_ = 0;     // the consumer's epoch and its position in it
  size_t position_ = 0;
  std::exception_ptr error_;  // what filling sequence produced_ threw
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace minas::data
