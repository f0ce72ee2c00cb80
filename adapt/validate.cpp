#include "adapt/validate.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <numbers>
#include <numeric>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "searchspace/error.h"

namespace minas::adapt {

namespace {

using json = nlohmann::json;

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

struct Fnv {
  uint64_t h = kFnvOffset;
  void bytes(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes_one(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_one(static_cast<uint8_t>(v >> (8 * i)));
  }
  // The string and a terminating zero, so that ("ab", "c") and ("a", "bc") differ.
  void str(const std::string& s) {
    bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    bytes_one(0);
  }
  void bytes_one(uint8_t b) { h = (h ^ b) * kFnvPrime; }
};

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// A readable record whose pixels are what its dimensions say.
bool consistent(const ImageRecord& r) {
  return r.ok() && r.width > 0 && r.height > 0 && (r.channels == 1 || r.channels == 3) &&
         r.pixels.size() ==
             static_cast<size_t>(r.width) * static_cast<size_t>(r.height) * r.channels;
}

std::string inconsistency(const ImageRecord& r) {
  if (!r.ok()) return r.error;
  std::ostringstream s;
  s << "decoded pixels do not match " << r.width << " x " << r.height << " x " << r.channels << " ("
    << r.pixels.size() << " bytes)";
  return s.str();
}

// Luma of pixel i (an index into width x height) on 0..255.
double luma(const ImageRecord& r, size_t i) {
  if (r.channels == 1) return r.pixels[i];
  const uint8_t* p = &r.pixels[3 * i];
  return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
}

// For area-average resampling of n samples onto m: output o covers input [o n / m, (o+1) n / m);
// each input sample weighs the length of its overlap, normalised to sum to 1.
struct AreaTap {
  int first = 0;
  std::vector<double> weights;
};

std::vector<AreaTap> area_taps(int n, int m) {
  std::vector<AreaTap> taps(static_cast<size_t>(m));
  for (int o = 0; o < m; ++o) {
    const double lo = static_cast<double>(o) * n / m;
    const double hi = static_cast<double>(o + 1) * n / m;
    AreaTap& t = taps[static_cast<size_t>(o)];
    t.first = static_cast<int>(std::floor(lo));
    const int last = std::min(n - 1, static_cast<int>(std::ceil(hi)) - 1);
    for (int i = t.first; i <= last; ++i) {
      const double overlap = std::min(hi, i + 1.0) - std::max(lo, static_cast<double>(i));
      t.weights.push_back(std::max(0.0, overlap) / (hi - lo));
    }
  }
  return taps;
}

constexpr int kHashSide = 32;
constexpr int kLowFreq = 8;

// cos(pi (2x + 1) u / 64) times the orthonormal DCT-II scale, for u < 8 and x < 32.
const std::array<std::array<double, kHashSide>, kLowFreq>& dct_basis() {
  static const auto basis = [] {
    std::array<std::array<double, kHashSide>, kLowFreq> b{};
    for (int u = 0; u < kLowFreq; ++u) {
      const double scale = std::sqrt((u == 0 ? 1.0 : 2.0) / kHashSide);
      for (int x = 0; x < kHashSide; ++x)
        b[u][x] = scale * std::cos(std::numbers::pi * (2 * x + 1) * u / (2.0 * kHashSide));
    }
    return b;
  }();
  return basis;
}

// Union-find over indices, joining towards the smaller root so results do not depend on order.
struct Components {
  std::vector<size_t> parent;
  explicit Components(size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0); }
  size_t find(size_t i) {
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
  }
  void join(size_t a, size_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  }
};

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string fmt_ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", r);
  return buf;
}

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

bool is_test(const ImageRecord& r) {
  return r.split == "test";
}

// How to remove a class from this kind of source.
std::string remove_class_hint(const Source& s, const std::string& name) {
  if (s.kind == "csv") return "remove the rows labelled " + quoted(name) + " from the CSV";
  if (s.kind == "idx") return "remove the images labelled " + quoted(name) + " from the IDX files";
  return "remove the class folder " + quoted(name);
}

template <class T>
T get_or(const json& j, const char* key, T fallback) {
  return j.contains(key) ? j.at(key).get<T>() : fallback;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hashes

uint64_t perceptual_hash(const ImageRecord& image) {
  if (!consistent(image)) throw Error(image.path, "no perceptual hash: " + inconsistency(image));
  const int w = image.width, h = image.height;
  const std::vector<AreaTap> tx = area_taps(w, kHashSide), ty = area_taps(h, kHashSide);

  // Horizontal pass: h rows x 32 columns of luma, then vertical: 32 x 32.
  std::vector<double> rows(static_cast<size_t>(h) * kHashSide);
  for (int y = 0; y < h; ++y) {
    const size_t base = static_cast<size_t>(y) * w;
    for (int o = 0; o < kHashSide; ++o) {
      const AreaTap& t = tx[o];
      double s = 0;
      for (size_t k = 0; k < t.weights.size(); ++k)
        s += t.weights[k] * luma(image, base + t.first + k);
      rows[static_cast<size_t>(y) * kHashSide + o] = s;
    }
  }
  std::array<std::array<double, kHashSide>, kHashSide> small{};
  for (int o = 0; o < kHashSide; ++o) {
    const AreaTap& t = ty[o];
    for (int x = 0; x < kHashSide; ++x) {
      double s = 0;
      for (size_t k = 0; k < t.weights.size(); ++k)
        s += t.weights[k] * rows[(t.first + k) * kHashSide + x];
      small[o][x] = s;
    }
  }

  // Separable DCT-II of the 8 x 8 lowest frequencies: along rows, then along columns.
  const auto& b = dct_basis();
  std::array<std::array<double, kLowFreq>, kHashSide> along_rows{};
  for (int y = 0; y < kHashSide; ++y)
    for (int u = 0; u < kLowFreq; ++u) {
      double s = 0;
      for (int x = 0; x < kHashSide; ++x) s += small[y][x] * b[u][x];
      along_rows[y][u] = s;
    }
  std::array<double, kLowFreq * kLowFreq> coef{};
  for (int v = 0; v < kLowFreq; ++v)
    for (int u = 0; u < kLowFreq; ++u) {
      double s = 0;
      for (int y = 0; y < kHashSide; ++y) s += along_rows[y][u] * b[v][y];
      // Rounding residue of a flat image is not a frequency; snap it so such images hash alike.
      coef[v * kLowFreq + u] = std::abs(s) < 1e-6 ? 0.0 : s;
    }

  std::vector<double> ac(coef.begin() + 1, coef.end());  // 63 values: the median is ac[31]
  std::nth_element(ac.begin(), ac.begin() + 31, ac.end());
  const double median = ac[31];
  uint64_t bits = 0;
  for (int k = 0; k < kLowFreq * kLowFreq; ++k)
    if (coef[k] > median) bits |= uint64_t{1} << k;
  return bits;
}

int hamming(uint64_t a, uint64_t b) {
  return std::popcount(a ^ b);
}

uint64_t pixel_hash(const ImageRecord& image) {
  Fnv f;
  f.u32(static_cast<uint32_t>(image.width));
  f.u32(static_cast<uint32_t>(image.height));
  f.u32(static_cast<uint32_t>(image.channels));
  f.bytes(image.pixels.data(), image.pixels.size());
  return f.h;
}

std::vector<std::vector<size_t>> near_duplicate_groups(std::span<const uint64_t> hashes,
                                                       int max_bits, size_t* comparisons) {
  size_t compared = 0;
  if (comparisons) *comparisons = 0;
  if (max_bits < 0) return {};
  Components comp(hashes.size());

  // Equal hashes: one representative each (the first), the rest joined to it without pairs.
  std::vector<size_t> order(hashes.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return hashes[a] != hashes[b] ? hashes[a] < hashes[b] : a < b;
  });
  std::vector<size_t> reps;
  for (size_t k = 0; k < order.size(); ++k) {
    if (k > 0 && hashes[order[k]] == hashes[order[k - 1]])
      comp.join(order[k], reps.back());
    else
      reps.push_back(order[k]);
  }

  if (max_bits > 0 && reps.size() > 1) {
    // max_bits + 1 blocks (at most 64) of near-equal width covering the 64 bits.
    const int blocks = std::min(max_bits + 1, 64);
    std::vector<int> offset(static_cast<size_t>(blocks) + 1, 0);
    for (int k = 0; k < blocks; ++k) offset[k + 1] = offset[k] + 64 / blocks + (k < 64 % blocks);
    auto block = [&](uint64_t h, int k) {
      const int width = offset[k + 1] - offset[k];
      const uint64_t mask = width == 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1;
      return (h >> offset[k]) & mask;
    };
    std::vector<std::pair<uint64_t, size_t>> keyed(reps.size());
    for (int k = 0; k < blocks; ++k) {
      for (size_t r = 0; r < reps.size(); ++r) keyed[r] = {block(hashes[reps[r]], k), reps[r]};
      std::sort(keyed.begin(), keyed.end());
      for (size_t lo = 0; lo < keyed.size();) {
        size_t hi = lo + 1;
        while (hi < keyed.size() && keyed[hi].first == keyed[lo].first) ++hi;
        for (size_t i = lo; i < hi; ++i)
          for (size_t j = i + 1; j < hi; ++j) {
            const uint64_t a = hashes[keyed[i].second], c = hashes[keyed[j].second];
            // A pair that agrees on an earlier block was compared there already.
            bool seen = false;
            for (int e = 0; e < k && !seen; ++e) seen = block(a, e) == block(c, e);
            if (seen) continue;
            ++compared;
            if (hamming(a, c) <= max_bits) comp.join(keyed[i].second, keyed[j].second);
          }
        lo = hi;
      }
    }
  }

  std::map<size_t, std::vector<size_t>> by_root;  // the root is the smallest index
  for (size_t i = 0; i < hashes.size(); ++i) by_root[comp.find(i)].push_back(i);
  std::vector<std::vector<size_t>> groups;
  for (auto& [root, members] : by_root)
    if (members.size() > 1) groups.push_back(std::move(members));
  if (comparisons) *comparisons = compared;
  return groups;
}

// ---------------------------------------------------------------------------------------------
// Settings

void ValidationSettings::check() const {
  const std::string where = "validation settings";
  if (min_per_class_fail < 0) throw Error(where, "min_per_class_fail must be >= 0");
  if (min_per_class_warn < min_per_class_fail)
    throw Error(where, "min_per_class_warn must be >= min_per_class_fail");
  if (!(imbalance_warn >= 1)) throw Error(where, "imbalance_warn must be >= 1");
  if (!(imbalance_fail >= imbalance_warn))
    throw Error(where, "imbalance_fail must be >= imbalance_warn");
  if (min_side < 1) throw Error(where, "min_side must be >= 1");
  if (near_duplicate_bits > 32) throw Error(where, "near_duplicate_bits must be <= 32");
}

json ValidationSettings::to_json() const {
  return {{"min_per_class_fail", min_per_class_fail},
          {"min_per_class_warn", min_per_class_warn},
          {"imbalance_warn", imbalance_warn},
          {"imbalance_fail", imbalance_fail},
          {"min_side", min_side},
          {"near_duplicate_bits", near_duplicate_bits},
          {"strict", strict}};
}

ValidationSettings ValidationSettings::from_json(const json& j) {
  ValidationSettings s;
  try {
    if (!j.is_object()) throw Error("validation settings", "not a JSON object");
    s.min_per_class_fail = get_or(j, "min_per_class_fail", s.min_per_class_fail);
    s.min_per_class_warn = get_or(j, "min_per_class_warn", s.min_per_class_warn);
    s.imbalance_warn = get_or(j, "imbalance_warn", s.imbalance_warn);
    s.imbalance_fail = get_or(j, "imbalance_fail", s.imbalance_fail);
    s.min_side = get_or(j, "min_side", s.min_side);
    s.near_duplicate_bits = get_or(j, "near_duplicate_bits", s.near_duplicate_bits);
    s.strict = get_or(j, "strict", s.strict);
  } catch (const json::exception& e) {
    throw Error("validation settings", e.what());
  }
  s.check();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Validation

namespace {

// What the checks of validate() share: the images, which are left out, and
// the findings so far (about the data set, and about files).
struct Checks {
  const Source& source;
  const ValidationSettings& settings;
  const std::vector<ImageRecord>& imgs;
  std::vector<bool> out;
  std::vector<Finding> data_findings, file_findings;

  Checks(const Source& s, const ValidationSettings& v)
      : source(s), settings(v), imgs(s.images), out(s.images.size(), false) {}
  std::vector<std::string> paths_of(const std::vector<size_t>& idx) const {
    std::vector<std::string> p;
    for (size_t i : idx) p.push_back(imgs[i].path);
    return p;
  }
};

// The summary over the readable images.
void summarize(const std::vector<ImageRecord>& imgs, int num_classes, DataSummary& sum) {
  sum.images = imgs.size();
  sum.classes = num_classes;
  std::vector<double> widths, heights;
  for (const ImageRecord& r : imgs) {
    if (!consistent(r)) continue;
    ++sum.readable;
    (r.channels == 1 ? sum.grayscale : sum.colour)++;
    widths.push_back(r.original_width());
    heights.push_back(r.original_height());
  }
  if (!widths.empty()) {
    sum.min_width = static_cast<int>(*std::min_element(widths.begin(), widths.end()));
    sum.max_width = static_cast<int>(*std::max_element(widths.begin(), widths.end()));
    sum.min_height = static_cast<int>(*std::min_element(heights.begin(), heights.end()));
    sum.max_height = static_cast<int>(*std::max_element(heights.begin(), heights.end()));
    sum.median_width = median_of(widths);
    sum.median_height = median_of(heights);
  }
}

// Per file: unreadable, bad label, too small.
void check_files(Checks& c) {
  const int num_classes = static_cast<int>(c.source.classes.size());
  const ValidationSettings& settings = c.settings;
  std::vector<size_t> small;
  for (size_t i = 0; i < c.imgs.size(); ++i) {
    const ImageRecord& r = c.imgs[i];
    if (!consistent(r)) {
      c.out[i] = true;
      c.file_findings.push_back({settings.strict ? "error" : "warning",
                                 "unreadable",
                                 "cannot be read: " + inconsistency(r) +
                                     (settings.strict ? " (strict: the run stops)" : "; left out"),
                                 "replace or delete the file",
                                 {r.path}});
    } else if (r.label < 0 || r.label >= num_classes) {
      c.out[i] = true;
      c.file_findings.push_back({"error",
                                 "bad_label",
                                 "label " + std::to_string(r.label) + " is not one of the " +
                                     std::to_string(num_classes) + " classes; left out",
                                 "give the image one of the classes",
                                 {r.path}});
    } else if (std::min(r.original_width(), r.original_height()) < settings.min_side) {
      c.out[i] = true;
      small.push_back(i);
    }
  }
  if (!small.empty()) {
    c.file_findings.push_back(
        {"warning", "too_small",
         std::to_string(small.size()) + " image(s) with a side shorter than " +
             std::to_string(settings.min_side) + " pixels; left out",
         "replace them with larger images, or lower the minimum side", c.paths_of(small)});
  }
}

// Exact copies: the same pixel hash and the same pixels, among the images
// still kept; each group ascending, the groups ordered by first index.
std::vector<std::vector<size_t>> exact_copies(const std::vector<ImageRecord>& imgs,
                                              const std::vector<bool>& out) {
  std::unordered_map<uint64_t, std::vector<size_t>> by_hash;
  std::vector<uint64_t> order_hashes;  // first-seen order, for deterministic output
  for (size_t i = 0; i < imgs.size(); ++i) {
    if (out[i]) continue;
    const uint64_t h = pixel_hash(imgs[i]);
    auto& v = by_hash[h];
    if (v.empty()) order_hashes.push_back(h);
    v.push_back(i);
  }
  std::vector<std::vector<size_t>> copies;
  for (uint64_t h : order_hashes) {
    std::vector<size_t> rest = by_hash[h];
    while (rest.size() > 1) {  // split a (vanishingly rare) hash collision by the pixels
      std::vector<size_t> same, other;
      for (size_t i : rest) {
        const ImageRecord &a = imgs[rest[0]], &b = imgs[i];
        (a.width == b.width && a.height == b.height && a.channels == b.channels &&
                 a.pixels == b.pixels
             ? same
             : other)
            .push_back(i);
      }
      if (same.size() > 1) copies.push_back(std::move(same));
      rest = std::move(other);
    }
  }
  std::sort(copies.begin(), copies.end());
  return copies;
}

// One group of exact copies: all left out when their labels differ, the
// train copies when it spans both splits, all but the first otherwise.
void check_copy_group(Checks& c, const std::vector<size_t>& g) {
  const std::vector<ImageRecord>& imgs = c.imgs;
  bool labels_differ = false, in_train = false, in_test = false;
  for (size_t i : g) {
    labels_differ |= imgs[i].label != imgs[g[0]].label;
    (is_test(imgs[i]) ? in_test : in_train) = true;
  }
  const std::string count = std::to_string(g.size()) + " copies of one image";
  if (labels_differ) {
    std::string labels;
    for (size_t i : g) {
      c.out[i] = true;
      const std::string name = c.source.classes[static_cast<size_t>(imgs[i].label)];
      if (labels.find(quoted(name)) == std::string::npos)
        labels += (labels.empty() ? "" : ", ") + quoted(name);
    }
    c.file_findings.push_back({"error", "conflicting_labels",
                               count + " with different labels (" + labels + "); all left out",
                               "keep one copy, in the right class", c.paths_of(g)});
  } else if (in_train && in_test) {
    bool first_test = true;
    for (size_t i : g) {
      if (is_test(imgs[i]) && first_test)
        first_test = false;
      else
        c.out[i] = true;
    }
    c.file_findings.push_back(
        {"warning", "exact_duplicate_across_splits",
         count + " in both train and test: it leaks into the test split; the train copies (and "
                 "any further test copies) are left out",
         "keep the image in one split only", c.paths_of(g)});
  } else {
    for (size_t k = 1; k < g.size(); ++k) c.out[g[k]] = true;
    c.file_findings.push_back(
        {"warning", "exact_duplicate",
         count + " in the " + imgs[g[0]].split + " split; all but the first are left out",
         "delete the extra copies", c.paths_of(g)});
  }
}

// Near copies among the images kept: listed, not left out.
void check_near_copies(Checks& c) {
  const std::vector<ImageRecord>& imgs = c.imgs;
  const int bits = c.settings.near_duplicate_bits;
  std::vector<size_t> kept;
  std::vector<uint64_t> ph;
  for (size_t i = 0; i < imgs.size(); ++i)
    if (!c.out[i]) {
      kept.push_back(i);
      ph.push_back(perceptual_hash(imgs[i]));
    }
  for (const std::vector<size_t>& local : near_duplicate_groups(ph, bits)) {
    std::vector<size_t> g;
    bool in_train = false, in_test = false, labels_differ = false;
    for (size_t k : local) {
      const size_t i = kept[k];
      g.push_back(i);
      (is_test(imgs[i]) ? in_test : in_train) = true;
      labels_differ |= imgs[i].label != imgs[kept[local[0]]].label;
    }
    const bool across = in_train && in_test;
    std::string msg = std::to_string(g.size()) + " near-identical images (perceptual hash within " +
                      std::to_string(bits) + " bits)";
    if (across) msg += " in both train and test: the test accuracy may be optimistic";
    if (labels_differ) msg += "; their labels differ";
    msg += "; kept (a near copy may be a genuine second picture)";
    c.file_findings.push_back({"warning",
                               across ? "near_duplicate_across_splits" : "near_duplicate", msg,
                               across ? "keep such images in one split only"
                                      : "check them, and delete the ones that are copies",
                               c.paths_of(g)});
  }
}

// The classes' counts over the kept images; whether any is a test image.
bool count_classes(const Checks& c, std::vector<ClassCount>& counts) {
  const size_t num_classes = c.source.classes.size();
  counts.resize(num_classes);
  for (size_t k = 0; k < num_classes; ++k) counts[k].name = c.source.classes[k];
  bool any_test = false;
  for (size_t i = 0; i < c.imgs.size(); ++i) {
    if (c.out[i]) continue;
    ClassCount& cc = counts[static_cast<size_t>(c.imgs[i].label)];
    (is_test(c.imgs[i]) ? cc.test : cc.train)++;
    any_test |= is_test(c.imgs[i]);
  }
  return any_test;
}

// No image at all, or none kept; fewer than two classes with training images.
void check_enough(Checks& c, const std::vector<ClassCount>& counts) {
  size_t kept_total = 0;
  for (bool o : c.out) kept_total += !o;
  if (c.imgs.empty()) {
    c.data_findings.push_back({"error",
                               "no_images",
                               "the data set has no images",
                               "point minas adapt at a folder, CSV or IDX files with images",
                               {}});
  } else if (kept_total == 0) {
    c.data_findings.push_back(
        {"error", "no_images", "no image can be used (see below)", "fix the findings below", {}});
  }
  int populated = 0;
  for (const ClassCount& cc : counts) populated += cc.train > 0;
  if (populated < 2) {
    c.data_findings.push_back(
        {"error",
         "too_few_classes",
         std::to_string(populated) + " class(es) with training images; at least 2 are needed",
         "give the training images at least two classes",
         {}});
  }
}

// Classes too small to learn or to judge, and classes without test images.
void check_class_sizes(Checks& c, const std::vector<ClassCount>& counts, bool any_test) {
  const ValidationSettings& settings = c.settings;
  for (const ClassCount& cc : counts) {
    const std::string counted =
        "class " + quoted(cc.name) + " has " + std::to_string(cc.train) + " training image(s)";
    if (cc.train < static_cast<size_t>(settings.min_per_class_fail)) {
      c.data_findings.push_back(
          {"error",
           "class_too_small",
           counted + "; at least " + std::to_string(settings.min_per_class_fail) + " are needed",
           "add images of " + quoted(cc.name) + ", or " + remove_class_hint(c.source, cc.name),
           {}});
    } else if (cc.train < static_cast<size_t>(settings.min_per_class_warn)) {
      c.data_findings.push_back({"warning",
                                 "class_small",
                                 counted + "; fewer than " +
                                     std::to_string(settings.min_per_class_warn) +
                                     " make its accuracy unreliable",
                                 "add images of " + quoted(cc.name),
                                 {}});
    }
  }
  if (any_test) {
    for (const ClassCount& cc : counts)
      if (cc.train > 0 && cc.test == 0)
        c.data_findings.push_back({"warning",
                                   "class_not_in_test",
                                   "class " + quoted(cc.name) + " has no test images",
                                   "add test images of " + quoted(cc.name),
                                   {}});
  }
}

// Imbalance over the classes that have training images (empty ones are
// errors of check_class_sizes).
void check_imbalance(Checks& c, const std::vector<ClassCount>& counts) {
  const ValidationSettings& settings = c.settings;
  const ClassCount* smallest = nullptr;
  const ClassCount* largest = nullptr;
  for (const ClassCount& cc : counts) {
    if (cc.train == 0) continue;
    if (!smallest || cc.train < smallest->train) smallest = &cc;
    if (!largest || cc.train > largest->train) largest = &cc;
  }
  if (!smallest || !largest || smallest == largest) return;
  const double ratio = static_cast<double>(largest->train) / static_cast<double>(smallest->train);
  const bool fail = ratio > settings.imbalance_fail;
  if (!fail && !(ratio > settings.imbalance_warn)) return;
  const double limit = fail ? settings.imbalance_fail : settings.imbalance_warn;
  c.data_findings.push_back(
      {fail ? "error" : "warning",
       "imbalance",
       "classes are imbalanced " + fmt_ratio(ratio) + ":1 (" + quoted(largest->name) + " has " +
           std::to_string(largest->train) + " training images, " + quoted(smallest->name) + " " +
           std::to_string(smallest->train) + "), past " + fmt_ratio(limit) + ":1",
       "add images to the small classes or remove some from the large ones" +
           std::string(fail ? ", or raise the imbalance limit" : ""),
       {}});
}

}  // namespace

ValidationReport validate(const Source& source, const ValidationSettings& settings) {
  settings.check();
  ValidationReport rep;
  rep.settings = settings;
  summarize(source.images, static_cast<int>(source.classes.size()), rep.summary);
  Checks c(source, settings);
  check_files(c);
  for (const std::vector<size_t>& g : exact_copies(c.imgs, c.out)) check_copy_group(c, g);
  if (settings.near_duplicate_bits >= 0) check_near_copies(c);
  const bool any_test = count_classes(c, rep.class_counts);
  check_enough(c, rep.class_counts);
  check_class_sizes(c, rep.class_counts, any_test);
  check_imbalance(c, rep.class_counts);

  // Data-set findings before file findings, errors before warnings.
  rep.findings = std::move(c.data_findings);
  rep.findings.insert(rep.findings.end(), std::make_move_iterator(c.file_findings.begin()),
                      std::make_move_iterator(c.file_findings.end()));
  std::stable_partition(rep.findings.begin(), rep.findings.end(),
                        [](const Finding& f) { return f.severity == "error"; });
  for (size_t i = 0; i < c.imgs.size(); ++i)
    if (c.out[i]) rep.excluded.push_back(i);
  rep.summary.excluded = rep.excluded.size();
  rep.usable = rep.errors() == 0;
  return rep;
}

size_t ValidationReport::errors() const {
  return static_cast<size_t>(std::count_if(findings.begin(), findings.end(),
                                           [](const Finding& f) { return f.severity == "error"; }));
}

size_t ValidationReport::warnings() const {
  return findings.size() - errors();
}

json ValidationReport::to_json() const {
  json j;
  j["usable"] = usable;
  j["errors"] = errors();
  j["warnings"] = warnings();
  j["settings"] = settings.to_json();
  j["summary"] = {{"images", summary.images},
                  {"readable", summary.readable},
                  {"excluded", summary.excluded},
                  {"grayscale", summary.grayscale},
                  {"colour", summary.colour},
                  {"classes", summary.classes},
                  {"min_width", summary.min_width},
                  {"max_width", summary.max_width},
                  {"min_height", summary.min_height},
                  {"max_height", summary.max_height},
                  {"median_width", summary.median_width},
                  {"median_height", summary.median_height}};
  j["classes"] = json::array();
  for (const ClassCount& c : class_counts)
    j["classes"].push_back({{"name", c.name}, {"train", c.train}, {"test", c.test}});
  j["findings"] = json::array();
  for (const Finding& f : findings)
    j["findings"].push_back({{"severity", f.severity},
                             {"kind", f.kind},
                             {"message", f.message},
                             {"fix", f.fix},
                             {"paths", f.paths}});
  j["excluded"] = excluded;
  return j;
}

ValidationReport ValidationReport::from_json(const json& j) {
  ValidationReport r;
  try {
    r.usable = j.at("usable").get<bool>();
    r.settings = ValidationSettings::from_json(j.at("settings"));
    const json& s = j.at("summary");
    DataSummary& d = r.summary;
    d.images = s.at("images").get<size_t>();
    d.readable = s.at("readable").get<size_t>();
    d.excluded = s.at("excluded").get<size_t>();
    d.grayscale = s.at("grayscale").get<size_t>();
    d.colour = s.at("colour").get<size_t>();
    d.classes = s.at("classes").get<int>();
    d.min_width = s.at("min_width").get<int>();
    d.max_width = s.at("max_width").get<int>();
    d.min_height = s.at("min_height").get<int>();
    d.max_height = s.at("max_height").get<int>();
    d.median_width = s.at("median_width").get<double>();
    d.median_height = s.at("median_height").get<double>();
    for (const json& c : j.at("classes"))
      r.class_counts.push_back({c.at("name").get<std::string>(), c.at("train").get<size_t>(),
                                c.at("test").get<size_t>()});
    for (const json& f : j.at("findings"))
      r.findings.push_back({f.at("severity").get<std::string>(), f.at("kind").get<std::string>(),
                            f.at("message").get<std::string>(), f.at("fix").get<std::string>(),
                            f.at("paths").get<std::vector<std::string>>()});
    r.excluded = j.at("excluded").get<std::vector<size_t>>();
  } catch (const json::exception& e) {
    throw Error("validation report", e.what());
  }
  return r;
}

std::string ValidationReport::to_text() const {
  constexpr size_t kShownPaths = 5;
  std::ostringstream o;
  o << "Data validation: " << (usable ? "usable" : "NOT USABLE") << " (" << errors()
    << " error(s), " << warnings() << " warning(s))\n";
  o << "  " << summary.images << " images, " << summary.readable << " readable, "
    << summary.excluded << " left out; " << summary.classes << " classes; ";
  if (summary.readable > 0)
    o << summary.min_width << "x" << summary.min_height << " to " << summary.max_width << "x"
      << summary.max_height << " (median " << summary.median_width << "x" << summary.median_height
      << "); ";
  o << summary.grayscale << " grayscale, " << summary.colour << " colour\n";
  for (const char* severity : {"error", "warning"}) {
    bool header = false;
    for (const Finding& f : findings) {
      if (f.severity != severity) continue;
      if (!header) o << (f.severity == "error" ? "Errors (fix these):\n" : "Warnings:\n");
      header = true;
      o << "  - [" << f.kind << "] " << f.message << "\n";
      if (!f.fix.empty()) o << "    fix: " << f.fix << "\n";
      for (size_t k = 0; k < f.paths.size() && k < kShownPaths; ++k)
        o << "    " << f.paths[k] << "\n";
      if (f.paths.size() > kShownPaths)
        o << "    ... and " << f.paths.size() - kShownPaths << " more\n";
    }
  }
  // All classes when few; otherwise the five smallest and five largest by training images.
  std::vector<const ClassCount*> shown;
  for (const ClassCount& c : class_counts) shown.push_back(&c);
  const bool cut = shown.size() > 20;
  if (cut) {
    std::stable_sort(shown.begin(), shown.end(),
                     [](const ClassCount* a, const ClassCount* b) { return a->train < b->train; });
    shown.erase(shown.begin() + 5, shown.end() - 5);
  }
  if (!shown.empty())
    o << "Images per class (train / test)" << (cut ? ", smallest and largest" : "") << ":\n";
  for (size_t k = 0; k < shown.size(); ++k) {
    if (cut && k == 5) o << "    ...\n";
    o << "    " << shown[k]->name << ": " << shown[k]->train << " / " << shown[k]->test << "\n";
  }
  return o.str();
}

// ---------------------------------------------------------------------------------------------
// Fingerprint

Fingerprint fingerprint(const Source& source, const std::vector<size_t>& excluded) {
  const size_t n = source.images.size();
  std::vector<bool> out(n, false);
  for (size_t i : excluded) {
    if (i >= n) throw Error("fingerprint", "excluded index " + std::to_string(i) + " out of range");
    out[i] = true;
  }
  const int num_classes = static_cast<int>(source.classes.size());
  Fingerprint fp;
  fp.classes = num_classes;
  fp.class_shares.assign(static_cast<size_t>(num_classes), 0.0);
  constexpr int kBins = 16;
  fp.intensity_histogram.assign(kBins, 0.0);
  std::array<double, 3> mean{};
  std::vector<uint64_t> keys;
  std::vector<double> widths, heights;
  bool colour = false;
  for (size_t i = 0; i < n; ++i) {
    const ImageRecord& r = source.images[i];
    if (out[i] || !consistent(r) || r.label < 0 || r.label >= num_classes) continue;
    const std::string& name = source.classes[static_cast<size_t>(r.label)];
    Fnv key;
    key.u64(pixel_hash(r));
    key.str(r.split);
    key.str(name);
    keys.push_back(key.h);
    widths.push_back(r.original_width());
    heights.push_back(r.original_height());
    colour |= r.channels == 3;
    fp.class_shares[static_cast<size_t>(r.label)] += 1;

    const size_t pixels = static_cast<size_t>(r.width) * static_cast<size_t>(r.height);
    std::array<double, 3> sums{};
    std::array<double, kBins> hist{};
    for (size_t p = 0; p < pixels; ++p) {
      for (int c = 0; c < 3; ++c) sums[c] += r.pixels[p * r.channels + (r.channels == 3 ? c : 0)];
      const double y = luma(r, p);
      hist[std::min(kBins - 1, static_cast<int>(y * kBins / 256.0))] += 1;
    }
    for (int c = 0; c < 3; ++c) mean[c] += sums[c] / (255.0 * pixels);
    for (int b = 0; b < kBins; ++b) fp.intensity_histogram[b] += hist[b] / pixels;
  }
  fp.images = keys.size();
  fp.channels = fp.images == 0 ? 0 : colour ? 3 : 1;
  if (fp.images > 0) {
    const double count = static_cast<double>(fp.images);
    for (double& s : fp.class_shares) s /= count;
    for (double& b : fp.intensity_histogram) b /= count;
    for (int c = 0; c < fp.channels; ++c) fp.mean_intensity.push_back(mean[c] / count);
  }
  fp.median_width = median_of(widths);
  fp.median_height = median_of(heights);

  std::vector<std::string> names = source.classes;
  std::sort(names.begin(), names.end());
  std::sort(keys.begin(), keys.end());
  Fnv all;
  all.u64(names.size());
  for (const std::string& s : names) all.str(s);
  for (uint64_t k : keys) all.u64(k);
  fp.content_hash = hex16(all.h);
  return fp;
}

json Fingerprint::to_json() const {
  return {{"content_hash", content_hash},
          {"classes", classes},
          {"images", images},
          {"channels", channels},
          {"median_width", median_width},
          {"median_height", median_height},
          {"class_shares", class_shares},
          {"mean_intensity", mean_intensity},
          {"intensity_histogram", intensity_histogram}};
}

Fingerprint Fingerprint::from_json(const json& j) {
  Fingerprint f;
  try {
    f.content_hash = j.at("content_hash").get<std::string>();
    f.classes = j.at("classes").get<int>();
    f.images = j.at("images").get<size_t>();
    f.channels = j.at("channels").get<int>();
    f.median_width = j.at("median_width").get<double>();
    f.median_height = j.at("median_height").get<double>();
    f.class_shares = j.at("class_shares").get<std::vector<double>>();
    f.mean_intensity = j.at("mean_intensity").get<std::vector<double>>();
    f.intensity_histogram = j.at("intensity_histogram").get<std::vector<double>>();
  } catch (const json::exception& e) {
    throw Error("fingerprint", e.what());
  }
  return f;
}

double similarity(const Fingerprint& a, const Fingerprint& b) {
  if (a.content_hash == b.content_hash) return 1.0;
  const double c = a.channels == b.channels ? 1.0 : 0.0;
  const int kmax = std::max(a.classes, b.classes);
  const double k = kmax == 0 ? 1.0 : static_cast<double>(std::min(a.classes, b.classes)) / kmax;
  double r = 0;
  if (a.median_width > 0 && b.median_width > 0 && a.median_height > 0 && b.median_height > 0) {
    const double d = std::abs(std::log2(a.median_width / b.median_width)) +
                     std::abs(std::log2(a.median_height / b.median_height));
    r = std::max(0.0, 1.0 - d / 8.0);
  }
  double h = 0;
  for (size_t i = 0; i < std::min(a.intensity_histogram.size(), b.intensity_histogram.size()); ++i)
    h += std::min(a.intensity_histogram[i], b.intensity_histogram[i]);
  std::vector<double> sa = a.class_shares, sb = b.class_shares;
  std::sort(sa.rbegin(), sa.rend());
  std::sort(sb.rbegin(), sb.rend());
  double s = 0;
  for (size_t i = 0; i < std::min(sa.size(), sb.size()); ++i) s += std::min(sa[i], sb[i]);
  return std::clamp(0.2 * (c + k + r + h + s), 0.0, 0.999);
}

}  // namespace minas::adapt
