#pragma once
// Validation of a customer's images before minas adapt trains on them, and the data set
// fingerprint by which later runs find the most similar earlier data sets.
//
// validate() checks a decoded Source and says, as a list of findings, what is wrong and what to
// fix: unreadable files, too-small images, exact and near duplicates (within and across the
// train/test splits), exact copies with conflicting labels, classes with too few images, class
// imbalance, fewer than two classes. A finding of severity "error" makes the data set unusable;
// the report is stored either way.
//
// What is left out (ValidationReport::excluded), and why:
//   - unreadable records (and records whose pixels do not match width x height x channels);
//   - images whose shorter side is below ValidationSettings::min_side;
//   - records whose label is not a class of the Source;
//   - every copy of an image that occurs with two or more different labels;
//   - exact copies within one split: all but the first in Source order;
//   - exact copies across the splits: every train copy (the test split stays clean), and all but
//     the first test copy.
// Near duplicates are listed, never left out: a perceptual hash cannot tell a copy from a close
// but genuine second shot of the same scene.
//
// Fingerprint::content_hash is independent of the order of Source::images: it is FNV-1a 64 over
// the sorted class names and the sorted per-image keys FNV-1a(pixel_hash, split, class name) of
// the images that are kept. The same pictures with the same labels in the same splits give the
// same hash however they are listed; moving one image between splits or relabelling it changes it.
//
// similarity(a, b) in [0, 1]:
//   1 when a.content_hash == b.content_hash; otherwise
//   min(0.999, 0.2 * (C + K + R + H + S)) with
//     C = 1 if a.channels == b.channels, else 0;
//     K = min(a.classes, b.classes) / max(a.classes, b.classes)          (1 when both are 0);
//     R = max(0, 1 - (|log2(a.median_width / b.median_width)|
//                   + |log2(a.median_height / b.median_height)|) / 8)     (0 if a size is 0);
//     H = sum_i min(a.intensity_histogram[i], b.intensity_histogram[i])   (= 1 - L1 / 2);
//     S = sum_i min(sa[i], sb[i]), where sa, sb are the class shares sorted in descending order
//         and padded with zeros to the same length (the shape of the class distribution, not
//         which class is which: class names differ between customers).
//   So a data set at the same resolution but twice as large on each side loses 0.05 through R,
//   10 classes against 100 lose 0.18 through K, grayscale against colour loses 0.2 through C.
//   The cap keeps 1 for identical content only.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "adapt/images.h"

namespace minas::adapt {

// DCT perceptual hash: luma (0.299 R + 0.587 G + 0.114 B), area-average resize to 32 x 32,
// orthonormal 2-D DCT-II, the 8 x 8 lowest frequencies; bit v * 8 + u (bit 0 = least
// significant) is set when coefficient (row v, column u) is above the median of the 63
// coefficients other than DC. Throws Error for a record that is not readable.
uint64_t perceptual_hash(const ImageRecord& image);

// Number of bits in which a and b differ.
int hamming(uint64_t a, uint64_t b);

// FNV-1a 64 over width, height, channels (4 bytes each, little endian) and the decoded pixels:
// equal for exact copies whatever the file format or name.
uint64_t pixel_hash(const ImageRecord& image);

// Groups of hashes within max_bits of one another (connected components of the graph "Hamming
// distance <= max_bits"), each of two or more indices into `hashes`, sorted; groups in order of
// their first index. Equal hashes are joined first; the distinct ones are matched by
// multi-index hashing (max_bits + 1 blocks of the 64 bits; two hashes within max_bits agree
// exactly on at least one block), so only hashes that share a block are compared.
// `comparisons`, when given, receives the number of Hamming distances computed.
std::vector<std::vector<size_t>> near_duplicate_groups(std::span<const uint64_t> hashes,
                                                       int max_bits, size_t* comparisons = nullptr);

struct ValidationSettings {
  int min_per_class_fail = 5;   // a class with fewer training images is an error
  int min_per_class_warn = 50;  // ... and with fewer than this a warning
  double imbalance_warn = 10;   // largest / smallest class above this: a warning
  double imbalance_fail = 100;  // ... and above this an error
  int min_side = 8;             // images with a shorter side are listed and left out
  int near_duplicate_bits = 4;  // perceptual hashes this close are near duplicates (<= 32);
                                // < 0: no check
  bool strict = false;          // an unreadable file is an error rather than a warning

  // Throws Error when a value is out of range (negative counts, warn above fail, ...).
  void check() const;
  nlohmann::json to_json() const;
  static ValidationSettings from_json(const nlohmann::json& j);  // missing keys keep defaults
};

struct Finding {
  std::string severity;  // "error" or "warning"
  // "no_images", "too_few_classes", "class_too_small", "class_small", "imbalance",
  // "class_not_in_test", "unreadable", "bad_label", "conflicting_labels", "too_small",
  // "exact_duplicate", "exact_duplicate_across_splits", "near_duplicate",
  // "near_duplicate_across_splits"
  std::string kind;
  std::string message;             // what is wrong, and what was left out
  std::string fix;                 // what the customer should do
  std::vector<std::string> paths;  // the records concerned (ImageRecord::path), in Source order
};

// Training (train split) and test images of one class that are kept.
struct ClassCount {
  std::string name;
  size_t train = 0;
  size_t test = 0;
};

struct DataSummary {
  size_t images = 0;    // records in the Source
  size_t readable = 0;  // of which decoded
  size_t excluded = 0;  // left out for any reason
  size_t grayscale = 0, colour = 0;
  int classes = 0;  // Source::classes
  // Over the readable images; 0 when there are none.
  int min_width = 0, max_width = 0, min_height = 0, max_height = 0;
  double median_width = 0, median_height = 0;
};

struct ValidationReport {
  bool usable = false;  // no finding of severity "error"
  ValidationSettings settings;
  DataSummary summary;
  std::vector<ClassCount> class_counts;  // in Source::classes order, after exclusion
  // Errors first, then warnings; within each, data-set findings (classes, imbalance) before
  // per-file ones, then in Source order.
  std::vector<Finding> findings;
  std::vector<size_t> excluded;  // indices into Source::images, ascending

  size_t errors() const;
  size_t warnings() const;
  nlohmann::json to_json() const;
  static ValidationReport from_json(const nlohmann::json& j);  // throws Error when malformed
  // For a person: the verdict, the summary, every finding (errors first) with its fix and
  // paths (the first few of a long list), and the class counts.
  std::string to_text() const;
};

// Throws Error for settings out of range.
ValidationReport validate(const Source& source, const ValidationSettings& settings = {});

// What a data set looks like, stored with each experiment (see the file comment for the hash
// and for similarity()).
struct Fingerprint {
  std::string content_hash;  // 16 lowercase hex digits
  int classes = 0;
  size_t images = 0;  // kept images, both splits
  int channels = 0;   // 3 when any kept image is colour, 1 when all are grayscale, 0 when none
  double median_width = 0, median_height = 0;
  std::vector<double> class_shares;         // per class (Source order), of the kept images
  std::vector<double> mean_intensity;       // per channel, 0..1, mean over images of image means
  std::vector<double> intensity_histogram;  // 16 bins of luma, mean over images, sums to 1

  nlohmann::json to_json() const;
  static Fingerprint from_json(const nlohmann::json& j);  // throws Error when malformed
};

// The fingerprint of the readable images of `source` not in `excluded` (indices, any order).
Fingerprint fingerprint(const Source& source, const std::vector<size_t>& excluded);

// In [0, 1]; see the file comment for the formula.
double similarity(const Fingerprint& a, const Fingerprint& b);

}  // namespace minas::adapt
