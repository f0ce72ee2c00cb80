#include <doctest/doctest.h>

#include "tests/support.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapt/validate.h"
#include "searchspace/error.h"
#include "searchspace/rng.h"

using minas::Error;
using minas::Rng;
using minas::test::contains;
using minas::test::error_of;
namespace adapt = minas::adapt;
using adapt::Finding;
using adapt::ImageRecord;
using adapt::Source;
using adapt::ValidationReport;
using adapt::ValidationSettings;

// Every case here is in suite "adapt" (run them with -ts='*adapt*') and has "validate" in its name.
TEST_SUITE_BEGIN("adapt");

namespace {

ImageRecord record(std::string path, int label, std::string split, int w, int h, int c,
                   std::vector<uint8_t> pixels) {
  ImageRecord r;
  r.path = std::move(path);
  r.label = label;
  r.split = std::move(split);
  r.width = w;
  r.height = h;
  r.channels = c;
  r.pixels = std::move(pixels);
  return r;
}

// Uniform noise in [lo, hi].
std::vector<uint8_t> noise(Rng& rng, int w, int h, int c, int lo = 0, int hi = 255) {
  std::vector<uint8_t> p(static_cast<size_t>(w) * h * c);
  for (auto& v : p) v = static_cast<uint8_t>(lo + static_cast<int>(rng.below(hi - lo + 1)));
  return p;
}

// A smooth picture in 20..200: a gradient, a few soft blobs and a little noise.
std::vector<uint8_t> picture(uint64_t seed, int w, int h) {
  Rng rng(seed);
  const double gx = rng.uniform() * 2 - 1, gy = rng.uniform() * 2 - 1;
  struct Blob {
    double x, y, r, a;
  };
  std::vector<Blob> blobs(4);
  for (auto& b : blobs)
    b = {rng.uniform(), rng.uniform(), 0.1 + 0.25 * rng.uniform(), rng.uniform() * 2 - 1};
  std::vector<uint8_t> p(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double u = (x + 0.5) / w, v = (y + 0.5) / h;
      double s = 0.5 + 0.2 * (gx * (u - 0.5) + gy * (v - 0.5));
      for (const Blob& b : blobs) {
        const double d2 = ((u - b.x) * (u - b.x) + (v - b.y) * (v - b.y)) / (b.r * b.r);
        s += 0.25 * b.a * std::exp(-d2);
      }
      s += (rng.uniform() - 0.5) * 0.02;
      p[static_cast<size_t>(y) * w + x] =
          static_cast<uint8_t>(std::clamp(20 + 180 * s, 20.0, 200.0));
    }
  return p;
}

// 2 x 2 box average of a grayscale image with even sides.
std::vector<uint8_t> halve(const std::vector<uint8_t>& p, int w, int h) {
  std::vector<uint8_t> q(static_cast<size_t>(w / 2) * (h / 2));
  for (int y = 0; y < h / 2; ++y)
    for (int x = 0; x < w / 2; ++x) {
      const int s = p[(2 * y) * w + 2 * x] + p[(2 * y) * w + 2 * x + 1] +
                    p[(2 * y + 1) * w + 2 * x] + p[(2 * y + 1) * w + 2 * x + 1];
      q[static_cast<size_t>(y) * (w / 2) + x] = static_cast<uint8_t>((s + 2) / 4);
    }
  return q;
}

// `counts[c]` distinct 12 x 12 noise images of class c in the train split, and `test[c]` in
// the test split.
Source source_of(const std::vector<int>& counts, const std::vector<int>& test = {},
                 uint64_t seed = 1) {
  Source s;
  s.kind = "folder";
  s.location = "/data";
  Rng rng(seed);
  for (size_t c = 0; c < counts.size(); ++c) {
    const std::string name = std::string(1, static_cast<char>('a' + c));
    s.classes.push_back(name);
    for (int i = 0; i < counts[c]; ++i)
      s.images.push_back(record("/data/train/" + name + "/" + std::to_string(i) + ".png",
                                static_cast<int>(c), "train", 12, 12, 1, noise(rng, 12, 12, 1)));
    for (int i = 0; i < (c < test.size() ? test[c] : 0); ++i)
      s.images.push_back(record("/data/test/" + name + "/" + std::to_string(i) + ".png",
                                static_cast<int>(c), "test", 12, 12, 1, noise(rng, 12, 12, 1)));
  }
  return s;
}

// No class-size findings for small test sources.
ValidationSettings relaxed() {
  ValidationSettings s;
  s.min_per_class_fail = 1;
  s.min_per_class_warn = 1;
  return s;
}

std::vector<const Finding*> of_kind(const ValidationReport& r, const std::string& kind) {
  std::vector<const Finding*> out;
  for (const Finding& f : r.findings)
    if (f.kind == kind) out.push_back(&f);
  return out;
}

bool excluded(const ValidationReport& r, size_t i) {
  return std::binary_search(r.excluded.begin(), r.excluded.end(), i);
}

}  // namespace

TEST_CASE("validate: perceptual hash is stable under brightness and resizing") {
  const std::vector<uint8_t> p = picture(7, 64, 64);
  const ImageRecord a = record("a", 0, "train", 64, 64, 1, p);
  std::vector<uint8_t> bright = p;
  for (auto& v : bright) v = static_cast<uint8_t>(v + 12);
  const ImageRecord b = record("b", 0, "train", 64, 64, 1, bright);
  const ImageRecord half = record("c", 0, "train", 32, 32, 1, halve(p, 64, 64));
  const uint64_t ha = adapt::perceptual_hash(a);
  CHECK(adapt::hamming(ha, adapt::perceptual_hash(b)) <= 4);
  CHECK(adapt::hamming(ha, adapt::perceptual_hash(half)) <= 4);

  // The same picture in colour (R = G = B) hashes as the grayscale one.
  std::vector<uint8_t> rgb;
  for (uint8_t v : p) rgb.insert(rgb.end(), {v, v, v});
  CHECK(adapt::perceptual_hash(record("d", 0, "train", 64, 64, 3, rgb)) == ha);

  // Unrelated pictures and noise are far apart.
  Rng rng(3);
  std::vector<uint64_t> far;
  for (int i = 0; i < 6; ++i)
    far.push_back(
        adapt::perceptual_hash(record("n", 0, "train", 40, 30, 1, noise(rng, 40, 30, 1))));
  for (size_t i = 0; i < far.size(); ++i)
    for (size_t j = i + 1; j < far.size(); ++j) CHECK(adapt::hamming(far[i], far[j]) > 20);
  CHECK(adapt::hamming(ha, adapt::perceptual_hash(
                               record("e", 0, "train", 64, 64, 1, picture(8, 64, 64)))) > 10);

  CHECK(adapt::hamming(0, ~uint64_t{0}) == 64);
  ImageRecord unreadable;
  unreadable.path = "x.png";
  unreadable.error = "bad";
  CHECK(contains(error_of([&] { adapt::perceptual_hash(unreadable); }).what(), "x.png: "));
}

TEST_CASE("validate: pixel hash sees dimensions and every byte") {
  const std::vector<uint8_t> p(24, 9);
  const uint64_t h = adapt::pixel_hash(record("a", 0, "train", 4, 6, 1, p));
  CHECK(h == adapt::pixel_hash(record("other name", 1, "test", 4, 6, 1, p)));
  CHECK(h != adapt::pixel_hash(record("a", 0, "train", 6, 4, 1, p)));
  std::vector<uint8_t> q = p;
  q[23] = 10;
  CHECK(h != adapt::pixel_hash(record("a", 0, "train", 4, 6, 1, q)));
}

TEST_CASE("validate: a clean data set is usable with no findings") {
  const Source s = source_of({60, 60, 60}, {10, 10, 10});
  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  CHECK(r.findings.empty());
  CHECK(r.excluded.empty());
  REQUIRE(r.class_counts.size() == 3);
  CHECK(r.class_counts[1].name == "b");
  CHECK(r.class_counts[1].train == 60);
  CHECK(r.class_counts[1].test == 10);
  CHECK(r.summary.images == 210);
  CHECK(r.summary.readable == 210);
  CHECK(r.summary.median_width == 12);
  CHECK(r.summary.grayscale == 210);
  CHECK(contains(r.to_text(), "usable (0 error(s), 0 warning(s))"));
}

TEST_CASE("validate: exact duplicates within a split keep the first copy") {
  Source s = source_of({60, 60});
  s.images.push_back(s.images[3]);  // a later copy, same class, same split
  s.images.back().path = "/data/train/a/copy.png";
  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  const auto f = of_kind(r, "exact_duplicate");
  REQUIRE(f.size() == 1);
  CHECK(f[0]->severity == "warning");
  CHECK(f[0]->paths == std::vector<std::string>{s.images[3].path, "/data/train/a/copy.png"});
  CHECK(r.excluded == std::vector<size_t>{s.images.size() - 1});
  CHECK(r.class_counts[0].train == 60);
  CHECK(of_kind(r, "near_duplicate").empty());  // the excluded copy is not also a near one
}

TEST_CASE("validate: an exact duplicate across splits leaves the train copy out") {
  Source s = source_of({60, 60}, {5, 5});
  // Index 0 is a train image of class a; copy it into the test split (records are in Source
  // order, the test copy last).
  ImageRecord leak = s.images[0];
  leak.split = "test";
  leak.path = "/data/test/a/leak.png";
  s.images.push_back(leak);
  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  const auto f = of_kind(r, "exact_duplicate_across_splits");
  REQUIRE(f.size() == 1);
  CHECK(contains(f[0]->message, "leaks into the test split"));
  CHECK(excluded(r, 0));
  CHECK_FALSE(excluded(r, s.images.size() - 1));
  CHECK(r.class_counts[0].train == 59);
  CHECK(r.class_counts[0].test == 6);
}

TEST_CASE("validate: exact copies with different labels are an error and all left out") {
  Source s = source_of({60, 60});
  ImageRecord twin = s.images[0];
  twin.label = 1;
  twin.path = "/data/train/b/twin.png";
  s.images.push_back(twin);
  const ValidationReport r = adapt::validate(s);
  CHECK_FALSE(r.usable);
  const auto f = of_kind(r, "conflicting_labels");
  REQUIRE(f.size() == 1);
  CHECK(f[0]->severity == "error");
  CHECK(contains(f[0]->message, "'a'"));
  CHECK(contains(f[0]->message, "'b'"));
  CHECK(excluded(r, 0));
  CHECK(excluded(r, s.images.size() - 1));
  CHECK(of_kind(r, "exact_duplicate").empty());
}

TEST_CASE("validate: small classes are errors or warnings by count") {
  const Source s = source_of({60, 3, 20});
  const ValidationReport r = adapt::validate(s);
  CHECK_FALSE(r.usable);
  const auto fail = of_kind(r, "class_too_small");
  REQUIRE(fail.size() == 1);
  CHECK(fail[0]->severity == "error");
  CHECK(contains(fail[0]->message, "class 'b' has 3 training image(s)"));
  CHECK(contains(fail[0]->fix, "add images of 'b', or remove the class folder 'b'"));
  const auto warn = of_kind(r, "class_small");
  REQUIRE(warn.size() == 1);
  CHECK(warn[0]->severity == "warning");
  CHECK(contains(warn[0]->message, "class 'c' has 20"));
  // 60:3 is 20:1, past the default warning of 10:1.
  CHECK(of_kind(r, "imbalance").size() == 1);
  // Errors come first, and the text says what to fix.
  CHECK(r.findings.front().severity == "error");
  const std::string text = r.to_text();
  CHECK(contains(text, "NOT USABLE"));
  CHECK(text.find("Errors") < text.find("Warnings"));
  CHECK(contains(text, "fix: add images of 'b'"));
}

TEST_CASE("validate: fewer than two classes, or no images, is an error") {
  const ValidationReport one = adapt::validate(source_of({60}));
  CHECK_FALSE(one.usable);
  CHECK(of_kind(one, "too_few_classes").size() == 1);
  Source none;
  none.kind = "folder";
  const ValidationReport empty = adapt::validate(none);
  CHECK_FALSE(empty.usable);
  CHECK(of_kind(empty, "no_images").size() == 1);
}

TEST_CASE("validate: class imbalance thresholds are settable and checked both ways") {
  ValidationSettings st = relaxed();
  // 60:6 = 10:1 is not past 10:1; 60:5 = 12:1 is.
  CHECK(of_kind(adapt::validate(source_of({60, 6}), st), "imbalance").empty());
  const ValidationReport warn = adapt::validate(source_of({60, 5}), st);
  REQUIRE(of_kind(warn, "imbalance").size() == 1);
  CHECK(of_kind(warn, "imbalance")[0]->severity == "warning");
  CHECK(contains(of_kind(warn, "imbalance")[0]->message, "12.0:1"));
  CHECK(warn.usable);

  // Past 100:1 by default is an error.
  const ValidationReport fail = adapt::validate(source_of({505, 5}), st);
  REQUIRE(of_kind(fail, "imbalance").size() == 1);
  CHECK(of_kind(fail, "imbalance")[0]->severity == "error");
  CHECK_FALSE(fail.usable);

  // Settable: 3:1 warns at 2, fails at 2.5; a looser limit turns the error into a warning.
  st.imbalance_warn = 2;
  st.imbalance_fail = 2.5;
  CHECK(of_kind(adapt::validate(source_of({60, 20}), st), "imbalance")[0]->severity == "error");
  st.imbalance_fail = 200;
  const ValidationReport loose = adapt::validate(source_of({505, 5}), st);
  CHECK(of_kind(loose, "imbalance")[0]->severity == "warning");
  CHECK(loose.usable);

  st.imbalance_fail = 1;  // below the warning
  CHECK(contains(error_of([&] {
                   adapt::validate(source_of({60, 60}), st);
                 }).what(),
                 "imbalance_fail"));
}

TEST_CASE("validate: unreadable files are listed with the reason, strict makes them errors") {
  Source s = source_of({60, 60});
  ImageRecord bad;
  bad.path = "/data/train/a/broken.png";
  bad.label = 0;
  bad.split = "train";
  bad.error = "bad PNG signature";
  s.images.insert(s.images.begin() + 5, bad);
  ImageRecord lies = s.images[0];  // says 12 x 12 but holds fewer bytes
  lies.path = "/data/train/a/short.png";
  lies.pixels.resize(10);
  s.images.insert(s.images.begin() + 6, lies);

  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  const auto f = of_kind(r, "unreadable");
  REQUIRE(f.size() == 2);
  CHECK(f[0]->severity == "warning");
  CHECK(f[0]->paths == std::vector<std::string>{"/data/train/a/broken.png"});
  CHECK(contains(f[0]->message, "bad PNG signature"));
  CHECK(contains(f[1]->message, "do not match 12 x 12 x 1"));
  CHECK(r.excluded == std::vector<size_t>{5, 6});
  CHECK(r.summary.readable == s.images.size() - 2);

  ValidationSettings strict;
  strict.strict = true;
  const ValidationReport rs = adapt::validate(s, strict);
  CHECK_FALSE(rs.usable);
  CHECK(of_kind(rs, "unreadable")[0]->severity == "error");
}

TEST_CASE("validate: too small images are listed and left out") {
  Source s = source_of({60, 60});
  Rng rng(9);
  s.images.push_back(record("/data/train/b/tiny.png", 1, "train", 30, 4, 1, noise(rng, 30, 4, 1)));
  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  const auto f = of_kind(r, "too_small");
  REQUIRE(f.size() == 1);
  CHECK(f[0]->paths == std::vector<std::string>{"/data/train/b/tiny.png"});
  CHECK(excluded(r, s.images.size() - 1));
  CHECK(r.summary.min_height == 4);

  ValidationSettings st;
  st.min_side = 4;
  CHECK(of_kind(adapt::validate(s, st), "too_small").empty());
}

TEST_CASE("validate: near duplicates are listed, kept, and flagged across splits") {
  Source s;
  s.kind = "folder";
  s.classes = {"a", "b"};
  for (int i = 0; i < 10; ++i) {
    s.images.push_back(record("/a/" + std::to_string(i), 0, "train", 64, 64, 1,
                              picture(100 + static_cast<uint64_t>(i), 64, 64)));
    s.images.push_back(record("/b/" + std::to_string(i), 1, "train", 64, 64, 1,
                              picture(200 + static_cast<uint64_t>(i), 64, 64)));
  }
  std::vector<uint8_t> brighter = s.images[0].pixels;
  for (auto& v : brighter) v = static_cast<uint8_t>(v + 6);
  s.images.push_back(record("/a/bright", 0, "train", 64, 64, 1, brighter));
  s.images.push_back(
      record("/test/b/half", 1, "test", 32, 32, 1, halve(s.images[1].pixels, 64, 64)));
  ValidationSettings st = relaxed();
  const ValidationReport r = adapt::validate(s, st);
  CHECK(r.usable);
  CHECK(r.excluded.empty());
  const auto within = of_kind(r, "near_duplicate");
  REQUIRE(within.size() == 1);
  CHECK(within[0]->paths == std::vector<std::string>{"/a/0", "/a/bright"});
  CHECK(contains(within[0]->message, "kept"));
  const auto across = of_kind(r, "near_duplicate_across_splits");
  REQUIRE(across.size() == 1);
  CHECK(across[0]->paths == std::vector<std::string>{"/b/0", "/test/b/half"});

  CHECK(of_kind(r, "class_not_in_test").size() == 1);  // class a has no test images

  st.near_duplicate_bits = -1;  // off
  const ValidationReport off = adapt::validate(s, st);
  CHECK(off.findings.size() == 1);
  CHECK(off.findings[0].kind == "class_not_in_test");
}

TEST_CASE("validate: near-duplicate search over 5000 images is not quadratic") {
  Rng rng(11);
  std::vector<ImageRecord> imgs;
  for (int i = 0; i < 5000; ++i)
    imgs.push_back(
        record("n" + std::to_string(i), i % 2, "train", 16, 16, 1, noise(rng, 16, 16, 1, 10, 240)));
  // Plant 25 near copies: brighter by 5, with one grey level of jitter.
  std::vector<std::pair<size_t, size_t>> planted;
  for (int k = 0; k < 25; ++k) {
    const size_t src = static_cast<size_t>(k) * 197;
    std::vector<uint8_t> p = imgs[src].pixels;
    for (auto& v : p) v = static_cast<uint8_t>(v + 5 + static_cast<int>(rng.below(2)));
    planted.push_back({src, imgs.size()});
    imgs.push_back(
        record("copy" + std::to_string(k), imgs[src].label, "train", 16, 16, 1, std::move(p)));
  }
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<uint64_t> hashes;
  for (const ImageRecord& r : imgs) hashes.push_back(adapt::perceptual_hash(r));
  const auto t1 = Clock::now();
  size_t comparisons = 0;
  const auto groups = adapt::near_duplicate_groups(hashes, 4, &comparisons);
  const auto t2 = Clock::now();
  const size_t n = hashes.size();
  CHECK(comparisons < n * n / 2 / 100);  // all pairs would be 12.6 million
  // The search against what one pass over the same images just took here (hashing them):
  // about a fiftieth of it on an idle machine; ten times it only if something is far off.
  const double hash_s = std::chrono::duration<double>(t1 - t0).count();
  const double search_s = std::chrono::duration<double>(t2 - t1).count();
  CAPTURE(hash_s);
  CHECK(search_s < 10 * hash_s);
  for (const auto& [a, b] : planted) {
    const auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return std::find(g.begin(), g.end(), a) != g.end();
    });
    REQUIRE(g != groups.end());
    CHECK(std::find(g->begin(), g->end(), b) != g->end());
  }
  CHECK(groups.size() <= planted.size() + 5);  // random noise rarely lands within 4 bits

  // The same through validate(): each planted pair is one finding, and nothing is left out.
  Source s;
  s.kind = "folder";
  s.classes = {"a", "b"};
  s.images = imgs;
  const ValidationReport r = adapt::validate(s);
  CHECK(r.usable);
  CHECK(r.excluded.empty());
  const auto f = of_kind(r, "near_duplicate");
  CHECK(f.size() == groups.size());
  for (const auto& [a, b] : planted) {
    const std::vector<std::string> pair = {imgs[a].path, imgs[b].path};
    CHECK(std::any_of(f.begin(), f.end(), [&](const Finding* x) { return x->paths == pair; }));
  }
}

TEST_CASE("validate: near-duplicate groups join equal hashes and chains, deterministically") {
  const std::vector<uint64_t> h = {0x0, 0xff00, 0x1, 0x0, 0x3, 0x7, 0xf00000000};
  size_t comparisons = 0;
  const auto g = adapt::near_duplicate_groups(h, 1, &comparisons);
  // 0, 0, 1, 3, 7 chain by one bit each; 0xff00 and 0xf00000000 stand alone.
  CHECK(comparisons > 0);
  REQUIRE(g.size() == 1);
  CHECK(g[0] == std::vector<size_t>{0, 2, 3, 4, 5});
  CHECK(adapt::near_duplicate_groups(h, 0) == std::vector<std::vector<size_t>>{{0, 3}});
  CHECK(adapt::near_duplicate_groups(h, -1).empty());
}

TEST_CASE("validate: the report round-trips through JSON") {
  Source s = source_of({60, 3}, {5, 0});
  s.images.push_back(s.images[2]);
  ImageRecord bad;
  bad.path = "/broken";
  bad.label = 0;
  bad.split = "train";
  bad.error = "truncated";
  s.images.push_back(bad);
  const ValidationReport r = adapt::validate(s);
  const nlohmann::json j = r.to_json();
  for (const char* key :
       {"usable", "errors", "warnings", "settings", "summary", "classes", "findings", "excluded"})
    CHECK(j.contains(key));
  CHECK(j["usable"] == false);
  CHECK(j["findings"][0]["severity"] == "error");
  for (const char* key : {"severity", "kind", "message", "fix", "paths"})
    CHECK(j["findings"][0].contains(key));
  CHECK(j["settings"]["min_per_class_fail"] == 5);
  const ValidationReport back = ValidationReport::from_json(nlohmann::json::parse(j.dump()));
  CHECK(back.to_json() == j);
  CHECK(back.to_text() == r.to_text());
  CHECK(contains(error_of([] {
                   ValidationReport::from_json(nlohmann::json{{"usable", 1}});
                 }).what(),
                 "validation report"));
}

TEST_CASE("validate: the fingerprint ignores order and measures similarity") {
  const Source s = source_of({60, 40, 20}, {10, 10, 10});
  const adapt::Fingerprint f = adapt::fingerprint(s, {});
  CHECK(f.content_hash.size() == 16);
  CHECK(f.classes == 3);
  CHECK(f.images == 150);
  CHECK(f.channels == 1);
  CHECK(f.median_width == 12);
  CHECK(f.class_shares[0] == doctest::Approx(70.0 / 150));
  REQUIRE(f.mean_intensity.size() == 1);
  CHECK(f.mean_intensity[0] == doctest::Approx(0.5).epsilon(0.02));
  REQUIRE(f.intensity_histogram.size() == 16);
  double total = 0;
  for (double b : f.intensity_histogram) total += b;
  CHECK(total == doctest::Approx(1));
  CHECK(adapt::similarity(f, f) == 1);

  // The same images in another order: the same fingerprint.
  Source shuffled = s;
  Rng rng(4);
  for (size_t i = shuffled.images.size() - 1; i > 0; --i)
    std::swap(shuffled.images[i], shuffled.images[rng.below(i + 1)]);
  const adapt::Fingerprint fs = adapt::fingerprint(shuffled, {});
  CHECK(fs.content_hash == f.content_hash);
  CHECK(adapt::similarity(f, fs) == 1);

  // Leaving an image out, or relabelling one, changes the hash but hardly the rest.
  const adapt::Fingerprint fx = adapt::fingerprint(s, {0});
  CHECK(fx.content_hash != f.content_hash);
  CHECK(fx.images == 149);
  Source relabelled = s;
  relabelled.images[0].label = 1;
  CHECK(adapt::fingerprint(relabelled, {}).content_hash != f.content_hash);
  const double near = adapt::similarity(f, fx);
  CHECK(near < 1);
  CHECK(near > 0.95);

  // A colour data set of larger, brighter images with 10 balanced classes is far less similar.
  Source other;
  other.kind = "folder";
  Rng r2(5);
  for (int c = 0; c < 10; ++c) {
    other.classes.push_back("k" + std::to_string(c));
    for (int i = 0; i < 8; ++i)
      other.images.push_back(record("o", c, "train", 48, 48, 3, noise(r2, 48, 48, 3, 150, 255)));
  }
  const adapt::Fingerprint fo = adapt::fingerprint(other, {});
  CHECK(fo.channels == 3);
  CHECK(fo.mean_intensity.size() == 3);
  const double far = adapt::similarity(f, fo);
  CHECK(far < 0.5);
  CHECK(far < near);
  CHECK(adapt::similarity(f, fo) == adapt::similarity(fo, f));

  const adapt::Fingerprint back =
      adapt::Fingerprint::from_json(nlohmann::json::parse(f.to_json().dump()));
  CHECK(back.to_json() == f.to_json());
  CHECK(contains(error_of([] { adapt::Fingerprint::from_json(nlohmann::json::object()); }).what(),
                 "fingerprint"));
  CHECK(contains(error_of([&] { adapt::fingerprint(s, {100000}); }).what(), "out of range"));
}

TEST_SUITE_END();
