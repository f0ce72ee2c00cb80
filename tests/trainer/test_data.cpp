#include <doctest/doctest.h>

#include "tests/support.h"
#include "tests/wait.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "searchspace/error.h"
#include "trainer/data.h"

namespace fs = std::filesystem;
using minas::Error;
using minas::Rng;
using minas::Shape;
namespace data = minas::data;

// Every case here is in suite "data" (run them with -ts='*data*') and has "data" in its name.
TEST_SUITE_BEGIN("data");

namespace {

struct TempDir : minas::test::TempDir {
  TempDir() : minas::test::TempDir("data") {}
};

// n images of 1 x h x w with seeded pixels; label i is (i * 7 + i / 3) % classes, so every class
// occurs but not in a simple cycle.
data::Dataset make_dataset(size_t n, int classes, int h, int w, uint64_t seed = 1) {
  data::Dataset ds;
  ds.source = "made-up";
  ds.shape = {1, h, w};
  ds.classes = classes;
  Rng rng(seed);
  ds.pixels.resize(n * h * w);
  for (auto& p : ds.pixels) p = static_cast<uint8_t>(rng.below(256));
  ds.labels.resize(n);
  for (size_t i = 0; i < n; ++i) ds.labels[i] = static_cast<uint8_t>((i * 7 + i / 3) % classes);
  return ds;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The message of the minas::Error that f throws; fails the test if it throws nothing or another
// exception type.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("not a minas::Error: " << e.what());
    return "";
  }
  FAIL_CHECK("no error thrown");
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

#define CHECK_MESSAGE_HAS(message, part) \
  CHECK_MESSAGE(contains(message, part), "message: " << (message) << "\nlacks: " << (part))

}  // namespace

// ---- IDX files ------------------------------------------------------------------------------

TEST_CASE("data: IDX files round trip, plain and gzip") {
  TempDir dir;
  const data::Dataset ds = make_dataset(37, 5, 6, 4);
  for (auto compression : {data::Compression::None, data::Compression::Gzip}) {
    const bool gz = compression == data::Compression::Gzip;
    CAPTURE(gz);
    const std::string images = dir.file(gz ? "images.gz" : "images");
    const std::string labels = dir.file(gz ? "labels.gz" : "labels");
    data::write_idx(ds, images, labels, compression);
    CHECK_FALSE(fs::exists(images + ".tmp"));

    const std::vector<uint8_t> raw = read_bytes(images);
    REQUIRE(raw.size() >= 4);
    if (gz) {
      CHECK(raw[0] == 0x1f);
      CHECK(raw[1] == 0x8b);
    } else {
      CHECK(raw.size() == 16 + ds.pixels.size());
      CHECK(std::vector<uint8_t>(raw.begin(), raw.begin() + 16) ==
            std::vector<uint8_t>{0, 0, 8, 3, 0, 0, 0, 37, 0, 0, 0, 6, 0, 0, 0, 4});
    }

    const data::IdxImages read = data::read_idx_images(images);
    CHECK(read.count == 37);
    CHECK(read.rows == 6);
    CHECK(read.cols == 4);
    CHECK(read.pixels == ds.pixels);
    CHECK(data::read_idx_labels(labels) == ds.labels);

    const data::Dataset back = data::read_idx(images, labels);
    CHECK(back.shape == Shape{1, 6, 4});
    CHECK(back.classes == 5);
    CHECK(back.pixels == ds.pixels);
    CHECK(back.labels == ds.labels);
    CHECK(back.source == images);
    CHECK(back.fingerprint() == ds.fingerprint());
  }
}

TEST_CASE("data: colour images round trip as 4-D IDX (count, channels, rows, cols)") {
  TempDir dir;
  data::Dataset ds = make_dataset(9, 3, 5, 4);
  ds.shape = Shape{3, 5, 4};
  ds.pixels.resize(ds.size() * ds.image_size());
  for (size_t i = 0; i < ds.pixels.size(); ++i) ds.pixels[i] = static_cast<uint8_t>(i * 7 % 251);
  for (auto compression : {data::Compression::None, data::Compression::Gzip}) {
    const bool gz = compression == data::Compression::Gzip;
    CAPTURE(gz);
    const std::string images = dir.file(gz ? "c.gz" : "c"), labels = dir.file("cl");
    data::write_idx(ds, images, labels, compression);
    if (!gz) {
      const std::vector<uint8_t> raw = read_bytes(images);
      REQUIRE(raw.size() == 20 + ds.pixels.size());
      CHECK(std::vector<uint8_t>(raw.begin(), raw.begin() + 20) ==
            std::vector<uint8_t>{0, 0, 8, 4, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4});
    }
    const data::IdxImages read = data::read_idx_images(images);
    CHECK(read.channels == 3);
    CHECK(read.rows == 5);
    CHECK(read.cols == 4);
    const data::Dataset back = data::read_idx(images, labels);
    CHECK(back.shape == Shape{3, 5, 4});
    CHECK(back.pixels == ds.pixels);
    CHECK(back.fingerprint() == ds.fingerprint());
  }
  // A 4-D file cut short says so in its own terms.
  std::vector<uint8_t> raw = read_bytes(dir.file("c"));
  raw.resize(raw.size() - 10);
  write_bytes(dir.file("cut"), raw);
  try {
    data::read_idx_images(dir.file("cut"));
    FAIL("a truncated 4-D file was read");
  } catch (const Error& e) {
    CHECK_MESSAGE_HAS(std::string(e.what()), "9 images of 3x5x4");
  }
}

namespace {

std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& in) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&z, in.size()) + 32);
  z.next_in = const_cast<uint8_t*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  REQUIRE(deflateEnd(&z) == Z_OK);
  return out;
}

std::vector<uint8_t> concat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("data: IDX reader takes concatenated gzip members") {
  TempDir dir;
  const std::vector<uint8_t> labels = {3, 1, 4, 1, 5, 9, 2, 6};
  const std::vector<uint8_t> header = {0, 0, 8, 1, 0, 0, 0, 8};
  write_bytes(dir.file("l.gz"), concat(gzip_bytes(header), gzip_bytes(labels)));
  CHECK(data::read_idx_labels(dir.file("l.gz")) == labels);
}

TEST_CASE("data: bad IDX files give errors that say what and where") {
  TempDir dir;
  const data::Dataset ds = make_dataset(50, 4, 5, 5);
  const std::string images = dir.file("images"), labels = dir.file("labels");
  const std::string images_gz = dir.file("images.gz");
  data::write_idx(ds, images, labels);
  data::write_idx_images(images_gz, ds.pixels, 50, 5, 5, data::Compression::Gzip);

  SUBCASE("missing file") {
    const std::string m = error_of([&] { data::read_idx_images(dir.file("nope")); });
    CHECK_MESSAGE_HAS(m, dir.file("nope"));
    CHECK_MESSAGE_HAS(m, "cannot open");
    CHECK_MESSAGE_HAS(m, "No such file");
  }
  SUBCASE("wrong magic: labels read as images and images as labels") {
    std::string m = error_of([&] { data::read_idx_images(labels); });
    CHECK_MESSAGE_HAS(m, labels + ", byte 0");
    CHECK_MESSAGE_HAS(m, "wrong magic 0x00000801 (an IDX labels file)");
    CHECK_MESSAGE_HAS(m, "expected 0x00000803");
    m = error_of([&] { data::read_idx_labels(images_gz); });
    CHECK_MESSAGE_HAS(m, "wrong magic 0x00000803 (an IDX images file)");
    CHECK_MESSAGE_HAS(m, "expected 0x00000801");
    write_bytes(dir.file("text"),
                {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!'});
    m = error_of([&] { data::read_idx_images(dir.file("text")); });
    CHECK_MESSAGE_HAS(m, "wrong magic 0x68656C6C (not an IDX file)");
  }
  SUBCASE("truncated pixels, plain") {
    std::vector<uint8_t> bytes = read_bytes(images);
    bytes.resize(bytes.size() - 30);  // 1220 of 1250 pixel bytes: 48 whole images, then a cut
    write_bytes(images, bytes);
    const std::string m = error_of([&] { data::read_idx_images(images); });
    CHECK_MESSAGE_HAS(m, images + ", image 48");
    CHECK_MESSAGE_HAS(m, "truncated: 50 images of 5x5 need 1250 bytes");
    CHECK_MESSAGE_HAS(m, "the file holds 1220");
  }
  SUBCASE("truncated pixels, gzip") {
    std::vector<uint8_t> bytes = read_bytes(images_gz);
    bytes.resize(bytes.size() / 2);
    write_bytes(images_gz, bytes);
    const std::string m = error_of([&] { data::read_idx_images(images_gz); });
    CHECK_MESSAGE_HAS(m, "truncated: 50 images of 5x5 need 1250 bytes");
    CHECK_MESSAGE_HAS(m, "(the gzip stream ends early)");
  }
  SUBCASE("gzip cut in its trailer") {
    std::vector<uint8_t> bytes = read_bytes(images_gz);
    bytes.resize(bytes.size() - 4);
    write_bytes(images_gz, bytes);
    const std::string m = error_of([&] { data::read_idx_images(images_gz); });
    CHECK_MESSAGE_HAS(m, "the gzip stream ends before its checksum");
  }
  SUBCASE("truncated header") {
    write_bytes(images, {0, 0, 8, 3, 0, 0, 0, 1, 0, 0});
    const std::string m = error_of([&] { data::read_idx_images(images); });
    CHECK_MESSAGE_HAS(m, images + ", byte 10");
    CHECK_MESSAGE_HAS(m, "the header needs 16 bytes, the file holds 10");
    write_bytes(labels, {});
    CHECK_MESSAGE_HAS(error_of([&] { data::read_idx_labels(labels); }),
                      "the header needs 8 bytes, the file holds 0");
  }
  SUBCASE("a header claiming far more images than the file holds") {
    std::vector<uint8_t> bytes = read_bytes(images);
    bytes[4] = 0xff;  // 4278190130 images of 5x5: must fail without allocating 100 GB
    write_bytes(images, bytes);
    const std::string m = error_of([&] { data::read_idx_images(images); });
    CHECK_MESSAGE_HAS(m, "need 106954753250 bytes");
    CHECK_MESSAGE_HAS(m, "the file holds 1250");
    write_bytes(images_gz, gzip_bytes(bytes));
    CHECK_MESSAGE_HAS(error_of([&] { data::read_idx_images(images_gz); }), "the file holds 1250");
  }
  SUBCASE("bytes after the last image") {
    write_bytes(images, concat(read_bytes(images), {1, 2, 3}));
    const std::string m = error_of([&] { data::read_idx_images(images); });
    CHECK_MESSAGE_HAS(m, images + ", byte 1266");
    CHECK_MESSAGE_HAS(m, "3 bytes after the last image");
  }
  SUBCASE("trailing garbage after the gzip stream") {
    write_bytes(images_gz, concat(read_bytes(images_gz), {0, 0, 0}));
    CHECK_MESSAGE_HAS(error_of([&] { data::read_idx_images(images_gz); }),
                      "3 bytes of trailing data after the gzip stream");
  }
  SUBCASE("corrupt gzip data") {
    std::vector<uint8_t> bytes = read_bytes(images_gz);
    for (size_t i = bytes.size() / 2; i < bytes.size() - 10; i += 7) bytes[i] ^= 0x5a;
    write_bytes(images_gz, bytes);
    const std::string m = error_of([&] { data::read_idx_images(images_gz); });
    CHECK_MESSAGE_HAS(m, images_gz + ", byte ");
    CHECK_MESSAGE_HAS(m, "corrupt gzip data");
  }
  SUBCASE("zero-sized images") {
    data::write_idx_images(images, {}, 3, 0, 5);
    CHECK_MESSAGE_HAS(error_of([&] { data::read_idx_images(images); }), "dimension 1 is 0");
  }
  SUBCASE("label count not matching the image count") {
    data::write_idx_labels(labels, std::vector<uint8_t>(49, 0));
    const std::string m = error_of([&] { data::read_idx(images, labels); });
    CHECK_MESSAGE_HAS(m, labels);
    CHECK_MESSAGE_HAS(m, "holds 49 labels but " + images + " holds 50 images");
  }
  SUBCASE("a label not below the number of classes") {
    std::vector<uint8_t> l = ds.labels;
    l[23] = 12;
    data::write_idx_labels(labels, l);
    const std::string m = error_of([&] { data::read_idx(images, labels, 10); });
    CHECK_MESSAGE_HAS(m, labels + ", label 23");
    CHECK_MESSAGE_HAS(m, "value 12 is not below the number of classes, 10");
    CHECK(data::read_idx(images, labels).classes == 13);  // inferred
  }
  SUBCASE("a writer given the wrong number of pixels") {
    CHECK_MESSAGE_HAS(error_of([&] { data::write_idx_images(images, ds.pixels, 51, 5, 5); }),
                      "1250 pixels given for 51 images of 5x5");
  }
}

TEST_CASE("data: mangled IDX files only ever give minas::Error") {
  // A small bad-input corpus made on the fly: byte flips, cuts and junk in plain and gzip files.
  TempDir dir;
  const data::Dataset ds = make_dataset(12, 3, 4, 4);
  data::write_idx(ds, dir.file("i"), dir.file("l"));
  data::write_idx(ds, dir.file("i.gz"), dir.file("l.gz"), data::Compression::Gzip);
  Rng rng(77);
  int errors = 0;
  for (const std::string name : {"i", "l", "i.gz", "l.gz"}) {
    const std::vector<uint8_t> good = read_bytes(dir.file(name));
    for (int round = 0; round < 100; ++round) {
      std::vector<uint8_t> bad = good;
      switch (rng.below(3)) {
        case 0:
          for (int k = 0; k < 1 + static_cast<int>(rng.below(4)); ++k)
            bad[rng.below(bad.size())] ^= static_cast<uint8_t>(1 + rng.below(255));
          break;
        case 1:
          bad.resize(rng.below(bad.size()));
          break;
        default:
          for (int k = 0; k < 1 + static_cast<int>(rng.below(20)); ++k)
            bad.push_back(static_cast<uint8_t>(rng.below(256)));
      }
      write_bytes(dir.file("bad"), bad);
      try {
        if (name[0] == 'i')
          data::read_idx_images(dir.file("bad"));
        else
          data::read_idx_labels(dir.file("bad"));
      } catch (const Error& e) {
        ++errors;
        CHECK(contains(e.what(), dir.file("bad")));
      } catch (const std::exception& e) {
        FAIL_CHECK("not a minas::Error: " << e.what());
      }
    }
  }
  CHECK(errors > 300);  // a few flips land in pixels and labels and are valid files
}

// ---- Data sets ------------------------------------------------------------------------------

TEST_CASE("data: load_dataset reads a folder of the four files, plain or gzip") {
  TempDir dir;
  const data::Dataset train = make_dataset(60, 3, 4, 4, 1), test = make_dataset(20, 3, 4, 4, 2);
  data::write_idx(train, dir.file("train-images-idx3-ubyte.gz"),
                  dir.file("train-labels-idx1-ubyte"), data::Compression::Gzip);
  data::write_idx(test, dir.file("t10k-images-idx3-ubyte"), dir.file("t10k-labels-idx1-ubyte.gz"));
  data::write_idx_labels(dir.file("t10k-labels-idx1-ubyte.gz"), test.labels,
                         data::Compression::Gzip);
  fs::remove(dir.file("t10k-labels-idx1-ubyte"));

  const data::TrainTest tt = data::load_dataset(dir.path.string());
  CHECK(tt.train.size() == 60);
  CHECK(tt.test.size() == 20);
  CHECK(tt.train.classes == 3);
  CHECK(tt.test.classes == 3);
  CHECK(tt.train.pixels == train.pixels);
  CHECK(tt.test.labels == test.labels);
  CHECK(tt.train.source == dir.file("train-images-idx3-ubyte.gz"));

  SUBCASE("a test label beyond the training set's classes") {
    std::vector<uint8_t> l = test.labels;
    l[5] = 3;
    data::write_idx_labels(dir.file("t10k-labels-idx1-ubyte.gz"), l, data::Compression::Gzip);
    const std::string m = error_of([&] { data::load_dataset(dir.path.string()); });
    CHECK_MESSAGE_HAS(m, "t10k-labels-idx1-ubyte.gz, label 5");
    CHECK_MESSAGE_HAS(m, "value 3 is not below the number of classes, 3");
  }
  SUBCASE("test images of another shape") {
    const data::Dataset other = make_dataset(20, 3, 5, 4);
    data::write_idx_images(dir.file("t10k-images-idx3-ubyte"), other.pixels, 20, 5, 4);
    CHECK_MESSAGE_HAS(error_of([&] { data::load_dataset(dir.path.string()); }),
                      "images are 1x5x4, the training set's are 1x4x4");
  }
  SUBCASE("a missing file") {
    fs::remove(dir.file("train-labels-idx1-ubyte"));
    const std::string m = error_of([&] { data::load_dataset(dir.path.string()); });
    CHECK_MESSAGE_HAS(m, dir.path.string());
    CHECK_MESSAGE_HAS(m, "no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz");
  }
  SUBCASE("neither a name nor a folder") {
    CHECK_MESSAGE_HAS(error_of([&] { data::load_dataset(dir.file("absent")); }),
                      "neither a data set name (fashion-mnist, mnist) nor a folder");
  }
}

TEST_CASE("data: mnist either loads or says where it belongs") {
  if (fs::is_directory("/usr/share/datasets/mnist")) {
    MESSAGE("MNIST is installed; loading it is covered by the folder tests");
    return;
  }
  CHECK_MESSAGE_HAS(error_of([] { data::load_dataset("mnist"); }),
                    "/usr/share/datasets/mnist is missing");
}

TEST_CASE("data: fingerprint is pinned and sees every byte") {
  const data::Dataset ds = make_dataset(10, 2, 3, 3);
  CHECK(ds.fingerprint() == "c2808e378037e684");
  data::Dataset other = ds;
  CHECK(other.fingerprint() == ds.fingerprint());
  other.pixels[89] ^= 1;
  CHECK(other.fingerprint() != ds.fingerprint());
  other = ds;
  other.labels[0] ^= 1;
  CHECK(other.fingerprint() != ds.fingerprint());
  other = ds;
  other.shape = {1, 9, 1};  // same bytes, another shape
  CHECK(other.fingerprint() != ds.fingerprint());
}

// ---- Index sets -----------------------------------------------------------------------------

TEST_CASE("data: split is stratified, disjoint, complete and seeded") {
  // Unequal classes: class k has 100 + 20 k images, 700 in all.
  data::Dataset ds = make_dataset(700, 5, 2, 2);
  size_t i = 0;
  for (int k = 0; k < 5; ++k)
    for (int j = 0; j < 100 + 20 * k; ++j) ds.labels[i++] = static_cast<uint8_t>(k);
  Rng rng(9);  // scatter the classes over the indices
  for (size_t j = ds.size(); j > 1; --j) std::swap(ds.labels[j - 1], ds.labels[rng.below(j)]);

  const data::Split s = data::split(ds, 100, 42);
  REQUIRE(s.val.size() == 100);
  REQUIRE(s.train.size() == 600);
  CHECK(std::is_sorted(s.val.begin(), s.val.end()));
  CHECK(std::is_sorted(s.train.begin(), s.train.end()));
  std::vector<uint32_t> all = s.train;
  all.insert(all.end(), s.val.begin(), s.val.end());
  std::sort(all.begin(), all.end());
  CHECK(all == data::all_indices(ds));  // disjoint and covering: a permutation of 0..699

  // Shares 100 * (100, 120, 140, 160, 180) / 700 = 14.29, 17.14, 20, 22.86, 25.71: the floors
  // make 98, and the 2 left go to the largest fractions, classes 3 and 4.
  std::map<int, int> per_class;
  for (uint32_t v : s.val) ++per_class[ds.labels[v]];
  CHECK(per_class == std::map<int, int>{{0, 14}, {1, 17}, {2, 20}, {3, 23}, {4, 26}});

  CHECK(data::split(ds, 100, 42).val == s.val);
  CHECK(data::split(ds, 100, 43).val != s.val);
  CHECK(std::vector<uint32_t>(s.val.begin(), s.val.begin() + 6) ==
        std::vector<uint32_t>{3, 7, 18, 23, 28, 40});  // pinned: the same split on every machine

  const data::Split none = data::split(ds, 0, 42);
  CHECK(none.val.empty());
  CHECK(none.train == data::all_indices(ds));

  SUBCASE("of a pool") {
    const std::vector<uint32_t> pool = data::subset(data::all_indices(ds), 350, 5);
    const data::Split p = data::split(ds, pool, 50, 1);
    CHECK(p.val.size() == 50);
    CHECK(p.train.size() == 300);
    for (uint32_t v : p.val) CHECK(std::binary_search(pool.begin(), pool.end(), v));
  }
  SUBCASE("an empty pool, a pool with a repeat") {
    const data::Split empty = data::split(ds, std::vector<uint32_t>{}, 0, 1);
    CHECK((empty.train.empty() && empty.val.empty()));
    CHECK_MESSAGE_HAS(error_of([&] {
                        data::split(ds, std::vector<uint32_t>{4, 9, 4}, 1, 1);
                      }),
                      "image 4 is in the pool twice");
  }
  SUBCASE("too many held out") {
    CHECK_MESSAGE_HAS(error_of([&] { data::split(ds, 700, 1); }),
                      "cannot hold out 700 validation images of 700");
  }
}

TEST_CASE("data: subset takes the first k or k seeded at random") {
  std::vector<uint32_t> v(100);
  for (uint32_t i = 0; i < 100; ++i) v[i] = 1000 + i;
  CHECK(data::subset(v, 3) == std::vector<uint32_t>{1000, 1001, 1002});
  CHECK(data::subset(v, 500).size() == 100);
  const std::vector<uint32_t> r = data::subset(v, 10, 7);
  CHECK(r.size() == 10);
  CHECK(std::is_sorted(r.begin(), r.end()));
  CHECK(std::set<uint32_t>(r.begin(), r.end()).size() == 10);
  for (uint32_t x : r) CHECK((x >= 1000 && x < 1100));
  CHECK(data::subset(v, 10, 7) == r);
  CHECK(data::subset(v, 10, 8) != r);
  CHECK(r != data::subset(v, 10));

  const data::Dataset ds = make_dataset(20, 4, 2, 3);
  const data::Dataset g = data::gather(ds, std::vector<uint32_t>{7, 2});
  CHECK(g.size() == 2);
  CHECK(g.classes == 4);
  CHECK(g.labels == std::vector<uint8_t>{ds.labels[7], ds.labels[2]});
  CHECK(std::equal(g.image(0), g.image(0) + 6, ds.image(7)));
  CHECK(std::equal(g.image(1), g.image(1) + 6, ds.image(2)));
  CHECK_MESSAGE_HAS(error_of([&] { data::gather(ds, std::vector<uint32_t>{20}); }),
                    "index 20 at position 0 is outside the data set's 20 images");
  data::Dataset broken = ds;
  broken.pixels.pop_back();
  CHECK_MESSAGE_HAS(error_of([&] { data::gather(broken, std::vector<uint32_t>{0}); }),
                    "119 pixels for 20 images of 1x2x3");
}

// ---- Normalization and augmentation ---------------------------------------------------------

TEST_CASE("data: normalization statistics and tables") {
  data::Dataset ds;
  ds.shape = {2, 1, 2};
  ds.classes = 2;
  ds.pixels = {0,   255, 7, 7,  // image 0: channel 0 = {0, 255}, channel 1 = {7, 7}
               255, 0,   7, 7};
  ds.labels = {0, 1};
  const data::Normalization n = data::compute_normalization(ds);
  REQUIRE(n.mean.size() == 2);
  CHECK(n.mean[0] == doctest::Approx(0.5));
  CHECK(n.stddev[0] == doctest::Approx(0.5));
  CHECK(n.mean[1] == doctest::Approx(7.0 / 255));
  CHECK(n.stddev[1] == 1.0f);  // constant channel

  const data::Normalizer table(n, 2);
  CHECK(table.table(0)[0] == doctest::Approx(-1.0));
  CHECK(table.table(0)[255] == doctest::Approx(1.0));
  CHECK(table.table(1)[7] == doctest::Approx(0.0));

  std::vector<float> x(8);
  std::vector<int32_t> y(2);
  data::normalize(ds, std::vector<uint32_t>{1, 0}, n, x.data(), y.data());
  CHECK(x[0] == doctest::Approx(1.0));
  CHECK(x[1] == doctest::Approx(-1.0));
  CHECK(x[4] == doctest::Approx(-1.0));
  CHECK(y == std::vector<int32_t>{1, 0});

  CHECK_MESSAGE_HAS(error_of([&] { data::Normalizer(data::Normalization::fashion_mnist(), 2); }),
                    "1 means and 1 standard deviations for 2 channels");
  CHECK_MESSAGE_HAS(error_of([&] { data::Normalizer({{0.5f}, {0.0f}}, 1); }), "channel 0");
}

TEST_CASE("data: crop and flip move pixels as the recipe says") {
  // A 1 x 3 x 4 image with pixel value 10 * (row + 1) + col; mean 0, stddev 1 keeps p / 255.
  const std::vector<uint8_t> img = {10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33};
  const Shape shape{1, 3, 4};
  const data::Normalizer unit({{0.0f}, {1.0f}}, 1);
  std::vector<float> out(12);
  auto raw = [&](int y, int x) { return static_cast<int>(std::lround(out[y * 4 + x] * 255)); };

  data::transform_image(img.data(), shape, {1, 1, 1, false}, unit, out.data());  // the centre
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x) CHECK(raw(y, x) == img[y * 4 + x]);

  data::transform_image(img.data(), shape, {1, 0, 0, false}, unit, out.data());  // down-right
  CHECK(std::vector<int>{raw(0, 0), raw(0, 1), raw(0, 3)} == std::vector<int>{0, 0, 0});
  CHECK(std::vector<int>{raw(1, 0), raw(1, 1), raw(1, 2), raw(1, 3)} ==
        std::vector<int>{0, 10, 11, 12});
  CHECK(std::vector<int>{raw(2, 0), raw(2, 1), raw(2, 3)} == std::vector<int>{0, 20, 22});

  data::transform_image(img.data(), shape, {2, 4, 3, false}, unit, out.data());  // up-left
  CHECK(std::vector<int>{raw(0, 0), raw(0, 1), raw(0, 2), raw(0, 3)} ==
        std::vector<int>{31, 32, 33, 0});
  CHECK(std::vector<int>{raw(1, 0), raw(2, 0)} == std::vector<int>{0, 0});

  data::transform_image(img.data(), shape, {0, 0, 0, true}, unit, out.data());  // flip only
  CHECK(std::vector<int>{raw(0, 0), raw(0, 1), raw(0, 2), raw(0, 3)} ==
        std::vector<int>{13, 12, 11, 10});
  CHECK(std::vector<int>{raw(2, 0), raw(2, 3)} == std::vector<int>{33, 30});

  data::transform_image(img.data(), shape, {1, 1, 0, true}, unit, out.data());  // right, flipped
  CHECK(std::vector<int>{raw(0, 0), raw(0, 1), raw(0, 2), raw(0, 3)} ==
        std::vector<int>{12, 11, 10, 0});

  // Padding is raw pixel 0 normalized, as torchvision pads before Normalize.
  const data::Normalizer fashion(data::Normalization::fashion_mnist(), 1);
  data::transform_image(img.data(), shape, {2, 0, 0, false}, fashion, out.data());
  CHECK(out[0] == doctest::Approx(-0.2860 / 0.3530));
  CHECK(out[2 * 4 + 2] == doctest::Approx((10 / 255.0 - 0.2860) / 0.3530));
}

TEST_CASE("data: transform draws cover their ranges") {
  Rng rng(3);
  std::set<int> dy, dx;
  int flips = 0;
  for (int i = 0; i < 2000; ++i) {
    const data::Transform t = data::draw_transform({2, true}, rng);
    CHECK(t.pad == 2);
    dy.insert(t.dy);
    dx.insert(t.dx);
    flips += t.flip;
  }
  CHECK(dy == std::set<int>{0, 1, 2, 3, 4});
  CHECK(dx == std::set<int>{0, 1, 2, 3, 4});
  CHECK(flips > 900);
  CHECK(flips < 1100);
  const data::Transform none = data::draw_transform({}, rng);
  CHECK((none.pad == 0 && none.dy == 0 && none.dx == 0 && !none.flip));
}

// ---- Batches --------------------------------------------------------------------------------

namespace {

struct Recorded {
  int n;
  uint64_t epoch;
  size_t position;
  std::vector<float> x;
  std::vector<int32_t> y;
  std::vector<uint32_t> samples;
  bool operator==(const Recorded&) const = default;
};

// How many batches a loader's thread has filled, counted by its on_batch hook, so a test can
// wait for the thread instead of sleeping. Declared before the loader it counts for, which
// calls it until its destructor has joined the thread.
struct Filled {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t count = 0;

  std::function<void(float*, int32_t*, int, Rng&)> hook() {
    return [this](float*, int32_t*, int, Rng&) {
      {
        std::lock_guard lock(mu);
        ++count;
      }
      cv.notify_all();
    };
  }
  // Whether `n` batches were filled within `limit` (a hang guard by default).
  bool await(uint64_t n, std::chrono::milliseconds limit = minas::test::kHangGuard) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, limit, [&] { return count >= n; });
  }
};

// The batches of `epochs` epochs. With `ahead` (the loader's on_batch counter and its
// prefetch), each batch is taken only once the thread has filled the whole ring: the consumer
// is as far behind as it can be, the opposite of a consumer that takes each batch at once.
std::vector<Recorded> record(data::BatchLoader& loader, size_t image_size, int epochs,
                             Filled* ahead = nullptr, int prefetch = 0) {
  std::vector<Recorded> out;
  data::Batch b;
  uint64_t taken = 0;
  for (int e = 0; e < epochs; ++e) {
    while (true) {
      // The ring holds prefetch + 1 batches, one of them the batch still held (none before
      // the first): the thread fills up to max(taken, 1) + prefetch.
      if (ahead)
        REQUIRE_MESSAGE(
            ahead->await(std::max<uint64_t>(taken, 1) + static_cast<uint64_t>(prefetch)),
            "the loader's thread did not fill its ring ahead of batch " << taken);
      if (!loader.next(b)) break;
      ++taken;
      out.push_back({b.n,
                     b.epoch,
                     b.position,
                     {b.x, b.x + b.n * image_size},
                     {b.y, b.y + b.n},
                     {b.samples, b.samples + b.n}});
    }
  }
  return out;
}

}  // namespace

TEST_CASE("data: loader yields every index once per epoch") {
  const data::Dataset ds = make_dataset(103, 4, 3, 3);
  data::LoaderOptions o;
  o.batch_size = 10;
  o.seed = 11;
  std::vector<uint32_t> idx = data::all_indices(ds);
  data::BatchLoader loader(ds, idx, o);
  CHECK(loader.batches_per_epoch() == 11);

  std::vector<std::vector<uint32_t>> orders;
  for (uint64_t e = 0; e < 3; ++e) {
    CHECK(loader.epoch() == e);
    std::vector<uint32_t> seen;
    std::vector<float> expected(10 * 9);
    data::Batch b;
    size_t position = 0;
    while (loader.next(b)) {
      CHECK(b.epoch == e);
      CHECK(b.position == position++);
      CHECK(b.n == (b.position == 10 ? 3 : 10));
      data::normalize(ds, {b.samples, static_cast<size_t>(b.n)}, o.norm, expected.data());
      CHECK(std::equal(b.x, b.x + b.n * 9, expected.data()));  // no augmentation: exact
      for (int i = 0; i < b.n; ++i) CHECK(b.y[i] == ds.labels[b.samples[i]]);
      seen.insert(seen.end(), b.samples, b.samples + b.n);
    }
    CHECK(position == 11);
    orders.push_back(seen);
    std::sort(seen.begin(), seen.end());
    CHECK(seen == idx);
  }
  CHECK(orders[0] != orders[1]);  // reshuffled every epoch

  SUBCASE("drop_last drops the partial batch") {
    o.drop_last = true;
    data::BatchLoader dropping(ds, idx, o);
    CHECK(dropping.batches_per_epoch() == 10);
    const std::vector<Recorded> r = record(dropping, 9, 1);
    CHECK(r.size() == 10);
    for (const Recorded& x : r) CHECK(x.n == 10);
  }
  SUBCASE("without shuffle the order is the given one") {
    o.shuffle = false;
    std::reverse(idx.begin(), idx.end());
    data::BatchLoader plain(ds, idx, o);
    std::vector<uint32_t> seen;
    for (const Recorded& x : record(plain, 9, 1))
      seen.insert(seen.end(), x.samples.begin(), x.samples.end());
    CHECK(seen == idx);
  }
  SUBCASE("an empty index list gives empty epochs") {
    data::BatchLoader empty(ds, {}, o);
    data::Batch b;
    CHECK(empty.batches_per_epoch() == 0);
    CHECK_FALSE(empty.next(b));
    CHECK_FALSE(empty.next(b));
    CHECK(empty.epoch() == 2);
  }
}

TEST_CASE("data: loader batches depend on the seed only, not on timing") {
  const data::Dataset ds = make_dataset(90, 3, 6, 5);
  data::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 5;
  o.augment = {2, true};
  const size_t size = ds.image_size();
  const std::vector<uint32_t> idx = data::all_indices(ds);

  data::BatchLoader fast(ds, idx, o);
  const std::vector<Recorded> a = record(fast, size, 3);
  o.prefetch = 1;
  Filled filled;
  o.on_batch = filled.hook();
  data::BatchLoader slow(ds, idx, o);
  const std::vector<Recorded> b = record(slow, size, 3, &filled, o.prefetch);
  o.on_batch = nullptr;
  REQUIRE(a.size() == 36);
  CHECK(a == b);

  // The augmentation is there: some batch differs from the plain normalized images.
  std::vector<float> plain(8 * size);
  data::normalize(ds, a[0].samples, o.norm, plain.data());
  CHECK(a[0].x != plain);

  SUBCASE("reset reproduces an epoch") {
    data::BatchLoader again(ds, idx, o);
    again.reset(2);
    CHECK(again.epoch() == 2);
    const std::vector<Recorded> c = record(again, size, 1);
    CHECK(std::equal(c.begin(), c.end(), a.begin() + 24));
    data::Batch batch;  // mid-epoch reset
    again.reset(1);
    REQUIRE(again.next(batch));
    again.reset(1);
    const std::vector<Recorded> d = record(again, size, 1);
    CHECK(std::equal(d.begin(), d.end(), a.begin() + 12));
  }
  SUBCASE("another seed, another order and augmentation") {
    o.seed = 6;
    data::BatchLoader other(ds, idx, o);
    const std::vector<Recorded> c = record(other, size, 1);
    CHECK(c[0].samples != a[0].samples);
  }
}

TEST_CASE("data: an epoch plan gives the loader's batches exactly (the GPU's data path)") {
  const data::Dataset ds = make_dataset(90, 3, 6, 5);
  data::LoaderOptions o;
  o.batch_size = 8;
  o.seed = 5;
  o.augment = {2, true};
  o.drop_last = true;
  o.norm = data::compute_normalization(ds);
  const size_t size = ds.image_size();
  std::vector<uint32_t> idx = data::all_indices(ds);
  idx.resize(85);  // not every image, and not a whole number of batches
  data::BatchLoader loader(ds, idx, o);
  const data::Normalizer normalizer(o.norm, 1);
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    const data::EpochPlan plan = data::epoch_plan(idx, o, epoch);
    REQUIRE(plan.index.size() == 85);
    data::Batch b;
    for (size_t batch = 0; loader.next(b); ++batch) {
      std::vector<float> x(static_cast<size_t>(b.n) * size);
      for (int i = 0; i < b.n; ++i) {
        const size_t k = batch * 8 + static_cast<size_t>(i);
        const data::Transform t{plan.pad, plan.dy[k], plan.dx[k], plan.flip[k] != 0};
        data::transform_image(ds.image(plan.index[k]), ds.shape, t, normalizer,
                              x.data() + static_cast<size_t>(i) * size);
        CHECK(b.y[i] == ds.labels[plan.index[k]]);
      }
      CHECK(std::equal(x.begin(), x.end(), b.x));
    }
  }
}

TEST_CASE("data: loader never overwrites the batch being consumed") {
  const data::Dataset ds = make_dataset(200, 3, 8, 8);
  data::LoaderOptions o;
  o.batch_size = 4;
  o.prefetch = 2;
  o.augment = {1, true};
  Filled filled;
  o.on_batch = filled.hook();
  data::BatchLoader loader(ds, data::all_indices(ds), o);
  data::Batch b;
  using Clock = std::chrono::steady_clock;
  Clock::duration fill_time{};  // the longest the thread took for one batch so far
  for (uint64_t i = 0; i < 10; ++i) {
    REQUIRE(loader.next(b));
    const std::vector<float> copy(b.x, b.x + b.n * ds.image_size());
    const std::vector<uint32_t> samples(b.samples, b.samples + b.n);
    // The thread fills the rest of the ring (batch i held, i + 1 .. i + prefetch ready)...
    const auto start = Clock::now();
    REQUIRE_MESSAGE(filled.await(i + 1 + static_cast<uint64_t>(o.prefetch)),
                    "the loader's thread did not fill its ring while batch " << i << " was held");
    fill_time = std::max(fill_time, Clock::now() - start);
    // ...and no further: it must not touch the held slot, however long it is given. Given
    // four times what the last fill took, a thread that would go on does so within it.
    CHECK_FALSE(filled.await(i + 2 + static_cast<uint64_t>(o.prefetch),
                             std::chrono::ceil<std::chrono::milliseconds>(4 * fill_time)));
    CHECK(std::equal(copy.begin(), copy.end(), b.x));
    CHECK(std::equal(samples.begin(), samples.end(), b.samples));
  }
}

TEST_CASE("data: loader destructor does not hang, whatever the consumer did") {
  const data::Dataset ds = make_dataset(500, 3, 10, 10);
  auto scenario = [&](int take, int prefetch) {
    data::LoaderOptions o;
    o.batch_size = 7;
    o.prefetch = prefetch;
    o.augment = {2, true};
    data::BatchLoader loader(ds, data::all_indices(ds), o);
    data::Batch b;
    for (int i = 0; i < take; ++i) loader.next(b);
  };
  std::promise<void> finished;
  std::future<void> done = finished.get_future();
  std::thread t([&] {
    for (int round = 0; round < 8; ++round)
      for (int take : {0, 1, 5, 71, 72, 73, 200})
        for (int prefetch : {1, 3}) scenario(take, prefetch);
    finished.set_value();
  });
  if (done.wait_for(minas::test::kHangGuard) != std::future_status::ready) {
    t.detach();
    FAIL("a BatchLoader destructor hangs");
  }
  t.join();
}

TEST_CASE("data: loader rethrows what the worker threw, at that batch") {
  const data::Dataset ds = make_dataset(40, 2, 2, 2);
  data::LoaderOptions o;
  o.batch_size = 5;
  int calls = 0;
  o.on_batch = [&](float*, int32_t*, int, Rng&) {
    if (++calls == 3) throw Error("hook", "batch 2 is broken");
  };
  data::BatchLoader loader(ds, data::all_indices(ds), o);
  data::Batch b;
  CHECK(loader.next(b));
  CHECK(loader.next(b));
  CHECK_MESSAGE_HAS(error_of([&] { loader.next(b); }), "batch 2 is broken");
  CHECK_MESSAGE_HAS(error_of([&] { loader.next(b); }), "batch 2 is broken");  // still there
  loader.reset(0);  // the hook now passes: the epoch runs through
  int batches = 0;
  while (loader.next(b)) ++batches;
  CHECK(batches == 8);
}

TEST_CASE("data: loader checks its options") {
  const data::Dataset ds = make_dataset(10, 2, 4, 4);
  data::LoaderOptions o;
  o.batch_size = 0;
  CHECK_MESSAGE_HAS(error_of([&] { data::BatchLoader(ds, data::all_indices(ds), o); }),
                    "batch size must be positive");
  o.batch_size = 4;
  CHECK_MESSAGE_HAS(error_of([&] {
                      data::BatchLoader(ds, {0, 10}, o);
                    }),
                    "index 10 at position 1 is outside the data set's 10 images");
  o.augment.pad = 5;
  CHECK_MESSAGE_HAS(error_of([&] { data::BatchLoader(ds, {0}, o); }),
                    "crop padding 5 is outside [0, 4]");
  o.augment.pad = 1;
  o.norm = {{0.5f, 0.5f}, {0.2f, 0.2f}};
  CHECK_MESSAGE_HAS(error_of([&] { data::BatchLoader(ds, {0}, o); }),
                    "2 means and 2 standard deviations for 1 channels");
}

// ---- The real data set ----------------------------------------------------------------------

TEST_CASE("data: Fashion-MNIST from dataset-fashion-mnist") {
  if (!fs::is_directory("/usr/share/datasets/fashion-mnist")) {
    MESSAGE("skipped: /usr/share/datasets/fashion-mnist is missing (Debian dataset-fashion-mnist)");
    return;
  }
  const data::TrainTest tt = data::load_dataset("fashion-mnist");
  CHECK(tt.train.size() == 60000);
  CHECK(tt.test.size() == 10000);
  CHECK(tt.train.classes == 10);
  CHECK(tt.test.classes == 10);
  CHECK(tt.train.shape == Shape{1, 28, 28});
  CHECK(tt.test.shape == Shape{1, 28, 28});
  std::vector<int> train_counts(10), test_counts(10);
  for (uint8_t l : tt.train.labels) ++train_counts[l];
  for (uint8_t l : tt.test.labels) ++test_counts[l];
  CHECK(train_counts == std::vector<int>(10, 6000));
  CHECK(test_counts == std::vector<int>(10, 1000));
  CHECK(tt.train.fingerprint() == "6b83bf8a57fe8bf9");
  CHECK(tt.test.fingerprint() == "558bb3357b95bfd7");

  const data::Normalization n = data::compute_normalization(tt.train);
  CHECK(n.mean[0] == doctest::Approx(0.2860).epsilon(0.002));
  CHECK(n.stddev[0] == doctest::Approx(0.3530).epsilon(0.002));

  const data::Split s = data::split(tt.train, 5000, 0);
  std::vector<int> val_counts(10);
  for (uint32_t v : s.val) ++val_counts[tt.train.labels[v]];
  CHECK(val_counts == std::vector<int>(10, 500));

  data::LoaderOptions o;
  o.batch_size = 256;
  o.augment = {2, true};
  data::BatchLoader loader(tt.train, s.train, o);
  data::Batch b;
  size_t images = 0;
  while (loader.next(b)) images += b.n;
  CHECK(images == 55000);
}

TEST_SUITE_END();
