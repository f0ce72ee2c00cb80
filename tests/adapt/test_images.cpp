#include <doctest/doctest.h>

#include "tests/support.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "adapt/images.h"
#include "searchspace/error.h"
#include "trainer/data.h"

namespace fs = std::filesystem;
namespace adapt = minas::adapt;
namespace data = minas::data;
using minas::test::contains;
using minas::test::error_of;

// Every case here is in suite "adapt" and has "images" in its name.
TEST_SUITE_BEGIN("adapt");

namespace {

struct TempDir : minas::test::TempDir {
  TempDir() : minas::test::TempDir("images") {}
};

// A w x h x c image whose pixel (y, x), channel k is (seed + 7y + 3x + 50k) % 256.
std::vector<uint8_t> pattern(int w, int h, int c, int seed = 0) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k)
        px[(static_cast<size_t>(y) * w + x) * c + k] =
            static_cast<uint8_t>((seed + 7 * y + 3 * x + 50 * k) % 256);
  return px;
}

void png(const fs::path& path, int w, int h, int c, int seed = 0) {
  fs::create_directories(path.parent_path());
  const std::vector<uint8_t> px = pattern(w, h, c, seed);
  adapt::write_png(path.string(), w, h, c, px.data());
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// Every path under dir with its size and modification time: what "never written" compares.
std::vector<std::string> snapshot(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string line = e.path().string();
    if (e.is_regular_file())
      line += " " + std::to_string(e.file_size()) + " " +
              std::to_string(e.last_write_time().time_since_epoch().count());
    out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

adapt::ImageRecord record(int w, int h, int c, int label = 0, uint8_t fill = 0) {
  adapt::ImageRecord r;
  r.path = "made-up-" + std::to_string(w) + "x" + std::to_string(h);
  r.label = label;
  r.split = "train";
  r.width = w;
  r.height = h;
  r.channels = c;
  r.pixels.assign(static_cast<size_t>(w) * h * c, fill);
  return r;
}

adapt::ImageRecord unreadable(int label = 0) {
  adapt::ImageRecord r;
  r.path = "broken.png";
  r.label = label;
  r.split = "train";
  r.error = "is corrupt";
  return r;
}

std::vector<std::string> tails(const adapt::Source& src, const fs::path& root) {
  std::vector<std::string> out;
  for (const auto& r : src.images)
    out.push_back(fs::path(r.path).lexically_relative(root).string());
  return out;
}

}  // namespace

TEST_CASE("images: a class folder is read, ordered, decoded, with bad files listed") {
  TempDir tmp;
  const fs::path root = tmp.path / "customer";
  png(root / "cat" / "b.png", 8, 6, 1);
  png(root / "cat" / "a.png", 5, 7, 3);
  png(root / "cat" / "sub" / "c.png", 4, 4, 2);  // gray + alpha, in a nested folder
  png(root / "cat" / "D.JPG", 3, 2, 4);          // RGBA, the extension matched in any case
  write_text(root / "cat" / "notes.txt", "not an image");
  png(root / "cat" / ".hidden.png", 2, 2, 1);
  png(root / ".cache" / "x.png", 2, 2, 1);
  png(root / "loose.png", 2, 2, 1);  // outside any class folder
  png(root / "dog" / "ok.png", 9, 9, 3, 5);
  write_text(root / "dog" / "empty.png", "");
  write_text(root / "dog" / "text.png", "hello, I am not a PNG");
  {
    png(root / "dog" / "broken.png", 32, 32, 3);
    const auto size = fs::file_size(root / "dog" / "broken.png");
    fs::resize_file(root / "dog" / "broken.png", size / 2);
  }
  fs::create_directories(root / "empty-class");
  const auto before = snapshot(root);

  const adapt::Source src = adapt::read_source(root.string(), "test");
  CHECK(snapshot(root) == before);
  CHECK(src.kind == "folder");
  CHECK(src.location == root.string());
  CHECK(src.classes == std::vector<std::string>{"cat", "dog", "empty-class"});
  CHECK(tails(src, root) ==
        std::vector<std::string>{"cat/D.JPG", "cat/a.png", "cat/b.png", "cat/sub/c.png",
                                 "dog/broken.png", "dog/empty.png", "dog/ok.png", "dog/text.png"});
  for (const auto& r : src.images) CHECK(r.split == "test");

  const auto& rgba = src.images[0];
  CHECK(rgba.ok());
  CHECK(rgba.label == 0);
  CHECK(rgba.channels == 3);  // alpha dropped
  CHECK((rgba.width == 3 && rgba.height == 2));
  const auto rgba_px = pattern(3, 2, 4);
  REQUIRE(rgba.pixels.size() == 3 * 2 * 3);
  for (size_t i = 0; i < 6; ++i)
    for (size_t k = 0; k < 3; ++k) CHECK(rgba.pixels[i * 3 + k] == rgba_px[i * 4 + k]);

  CHECK(src.images[1].channels == 3);
  CHECK(src.images[1].pixels == pattern(5, 7, 3));
  CHECK(src.images[2].channels == 1);
  CHECK((src.images[2].width == 8 && src.images[2].height == 6));
  CHECK(src.images[2].pixels == pattern(8, 6, 1));
  const auto& gray_alpha = src.images[3];
  CHECK(gray_alpha.channels == 1);
  REQUIRE(gray_alpha.pixels.size() == 16);
  const auto ga_px = pattern(4, 4, 2);
  for (size_t i = 0; i < 16; ++i) CHECK(gray_alpha.pixels[i] == ga_px[i * 2]);

  const auto& broken = src.images[4];
  CHECK(broken.label == 1);
  CHECK_FALSE(broken.ok());
  CHECK(broken.channels == 0);
  CHECK(broken.pixels.empty());
  CHECK(contains(broken.error, "corrupt"));
  CHECK(contains(src.images[5].error, "empty"));
  CHECK(src.images[6].ok());
  CHECK(src.images[6].pixels == pattern(9, 9, 3, 5));
  CHECK(contains(src.images[7].error, "not a readable"));
  CHECK(contains(src.images[7].error, "("));  // stb's reason follows
}

TEST_CASE("images: a missing path, an empty folder and loose images are errors") {
  TempDir tmp;
  auto e = error_of([&] { adapt::read_source(tmp.file("nowhere")); });
  CHECK(e.where() == "--data");
  CHECK(contains(e.reason(), "neither an image folder, a CSV"));
  CHECK(contains(e.reason(), "nothing is there"));

  write_text(tmp.path / "notes.txt", "x");
  e = error_of([&] { adapt::read_source(tmp.file("notes.txt")); });
  CHECK(e.where() == "--data");
  CHECK_FALSE(contains(e.reason(), "nothing is there"));

  const fs::path empty = tmp.path / "empty";
  fs::create_directories(empty / "cat");
  write_text(empty / "cat" / "readme.txt", "x");
  e = error_of([&] { adapt::read_source(empty.string()); });
  CHECK(e.where() == empty.string());
  CHECK(contains(e.reason(), "no images"));
  CHECK(contains(e.reason(), ".png .jpg .jpeg .bmp .pgm"));

  const fs::path flat = tmp.path / "flat";
  png(flat / "a.png", 2, 2, 1);
  png(flat / "b.png", 2, 2, 1);
  e = error_of([&] { adapt::read_source(flat.string()); });
  CHECK(contains(e.reason(), "2 images at the top level"));
  CHECK(contains(e.reason(), "sub-folder"));

  // An IDX file given instead of its prefix: the message says which prefix to give.
  const std::vector<uint8_t> px(4, 0);
  data::write_idx_images(tmp.file("set-images-idx3-ubyte"), px, 1, 2, 2);
  e = error_of([&] { adapt::read_source(tmp.file("set-images-idx3-ubyte")); });
  CHECK(contains(e.reason(), "give " + tmp.file("set")));
  // ... and a prefix without its labels names the missing file.
  e = error_of([&] { adapt::read_source(tmp.file("set")); });
  CHECK(e.where() == tmp.file("set-labels-idx1-ubyte"));
}

TEST_CASE("images: a CSV of path,label with a header, quotes and absolute paths") {
  TempDir tmp;
  png(tmp.path / "imgs" / "a,1.png", 4, 4, 1, 1);
  png(tmp.path / "imgs" / "b.png", 4, 4, 3, 2);
  png(tmp.path / "abs" / "c.png", 6, 5, 1, 3);
  const std::string abs_path = (tmp.path / "abs" / "c.png").string();
  write_text(tmp.path / "list" / "labels.csv",
             "\xEF\xBB\xBFpath,label\r\n"
             "\"../imgs/a,1.png\",zebra\r\n"
             "\r\n"
             " ../imgs/b.png , \"ant\"\r\n\"" +
                 abs_path + "\",zebra\r\n../imgs/missing.png,bee\n");
  const auto before = snapshot(tmp.path);
  const adapt::Source src = adapt::read_source(tmp.file("list/labels.csv"));
  CHECK(snapshot(tmp.path) == before);
  CHECK(src.kind == "csv");
  CHECK(src.classes == std::vector<std::string>{"ant", "bee", "zebra"});
  REQUIRE(src.images.size() == 4);
  const fs::path list = tmp.path / "list";
  CHECK(src.images[0].path == (list / "../imgs/b.png").string());
  CHECK(src.images[0].label == 0);
  CHECK(src.images[0].pixels == pattern(4, 4, 3, 2));
  CHECK(src.images[1].label == 1);
  CHECK(contains(src.images[1].error, "cannot be opened"));
  // zebra: by path, the absolute one first
  CHECK(src.images[2].path == abs_path);
  CHECK(src.images[2].pixels == pattern(6, 5, 1, 3));
  CHECK(src.images[3].path == (list / "../imgs/a,1.png").string());
  CHECK(src.images[3].pixels == pattern(4, 4, 1, 1));
  for (const auto& r : src.images) CHECK(r.split == "train");

  // A header is only a header on the first line; a data line is then read like any other.
  write_text(tmp.path / "bad.csv", "path,label\n../imgs/b.png,ant\nx.png,cat,extra\n");
  auto e = error_of([&] { adapt::read_source(tmp.file("bad.csv")); });
  CHECK(e.where() == tmp.file("bad.csv") + ":3");
  CHECK(contains(e.reason(), "expected 2 fields"));
  CHECK(contains(e.reason(), "found 3"));

  write_text(tmp.path / "open.csv", "a.png,cat\n\n\"b.png,dog\n");
  e = error_of([&] { adapt::read_source(tmp.file("open.csv")); });
  CHECK(e.where() == tmp.file("open.csv") + ":3");
  CHECK(contains(e.reason(), "not closed"));

  write_text(tmp.path / "nolabel.csv", "a.png,\n");
  e = error_of([&] { adapt::read_source(tmp.file("nolabel.csv")); });
  CHECK(e.where() == tmp.file("nolabel.csv") + ":1");
  CHECK(contains(e.reason(), "label is empty"));

  write_text(tmp.path / "header-only.csv", "path,label\n");
  e = error_of([&] { adapt::read_source(tmp.file("header-only.csv")); });
  CHECK(e.where() == tmp.file("header-only.csv"));
  CHECK(contains(e.reason(), "no images"));
}

TEST_CASE("images: an IDX prefix, plain or gzip") {
  TempDir tmp;
  // 4 images of 2 x 3; labels 2, 0, 2, 0 (no class 1: K is still max + 1).
  std::vector<uint8_t> px(4 * 6);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 10);
  const std::vector<uint8_t> labels = {2, 0, 2, 0};
  for (auto compression : {data::Compression::None, data::Compression::Gzip}) {
    const bool gz = compression == data::Compression::Gzip;
    const std::string prefix = tmp.file(gz ? "z/train" : "p/train");
    fs::create_directories(fs::path(prefix).parent_path());
    const std::string images = prefix + "-images-idx3-ubyte" + (gz ? ".gz" : "");
    data::write_idx_images(images, px, 4, 2, 3, compression);
    data::write_idx_labels(prefix + "-labels-idx1-ubyte" + (gz ? ".gz" : ""), labels, compression);
    const adapt::Source src = adapt::read_source(prefix, "test");
    CHECK(src.kind == "idx");
    CHECK(src.classes == std::vector<std::string>{"0", "1", "2"});
    REQUIRE(src.images.size() == 4);
    const size_t order[] = {1, 3, 0, 2};
    for (size_t j = 0; j < 4; ++j) {
      const auto& r = src.images[j];
      CHECK(r.path == images + "#" + std::to_string(order[j]));
      CHECK(r.label == labels[order[j]]);
      CHECK(r.split == "test");
      CHECK((r.width == 3 && r.height == 2 && r.channels == 1));
      CHECK(r.pixels ==
            std::vector<uint8_t>(px.begin() + order[j] * 6, px.begin() + order[j] * 6 + 6));
    }
  }
  // Counts that disagree name the labels file.
  data::write_idx_labels(tmp.file("p/train-labels-idx1-ubyte"), std::vector<uint8_t>{0, 1});
  auto e = error_of([&] { adapt::read_source(tmp.file("p/train")); });
  CHECK(e.where() == tmp.file("p/train-labels-idx1-ubyte"));
  CHECK(contains(e.reason(), "2 labels"));
}

TEST_CASE("images: choose_input picks channels and a square size by the rule") {
  // All grayscale, 28 x 28: taken as is.
  std::vector<adapt::ImageRecord> imgs(5, record(28, 28, 1));
  auto in = adapt::choose_input(imgs);
  CHECK((in.channels == 1 && in.height == 28 && in.width == 28));
  CHECK(contains(in.why, "1x28x28"));
  CHECK(contains(in.why, "all 5 readable images are grayscale"));
  CHECK(contains(in.why, "28 px"));

  // RGB with equal channels counts as gray; an unreadable image is not counted.
  imgs.push_back(record(28, 28, 3, 0, 90));
  imgs.push_back(unreadable());
  in = adapt::choose_input(imgs);
  CHECK(in.channels == 1);
  CHECK(contains(in.why, "1 stored as RGB"));
  CHECK(contains(in.why, "1 unreadable"));

  // One pixel of colour makes it 3 channels.
  imgs.push_back(record(28, 28, 3, 0, 90));
  imgs.back().pixels[4] = 91;
  in = adapt::choose_input(imgs);
  CHECK(in.channels == 3);
  CHECK(contains(in.why, "1 of the 7 readable images is in colour"));

  // The shorter side's median (the lower middle for an even count), rounded to a multiple of 4.
  in = adapt::choose_input({record(100, 30, 1), record(10, 200, 1), record(40, 50, 1)});
  CHECK((in.height == 32 && in.width == 32));  // median 30 -> 32
  CHECK(contains(in.why, "30 px"));
  CHECK(contains(in.why, "rounded to 32"));
  in = adapt::choose_input({record(29, 29, 1), record(50, 50, 1)});
  CHECK(in.height == 28);  // lower middle 29 -> 28
  in = adapt::choose_input({record(10, 10, 1), record(12, 300, 1), record(500, 500, 1)});
  CHECK(in.height == 16);
  CHECK(contains(in.why, "raised to the minimum of 16"));
  in = adapt::choose_input({record(640, 480, 3, 0, 7), record(800, 600, 3, 0, 7)});
  CHECK((in.channels == 1 && in.height == 64 && in.width == 64));
  CHECK(contains(in.why, "480 px, lowered to the maximum of 64"));

  auto e = error_of([] { adapt::choose_input({unreadable(), unreadable()}); });
  CHECK(contains(e.reason(), "none of the 2 images"));
}

TEST_CASE("images: to_dataset resizes, converts channels and lays out CHW") {
  // A constant 2 x 2 image resized to 4 x 4 keeps its value.
  std::vector<adapt::ImageRecord> imgs = {record(2, 2, 1, 1, 77)};
  // RGB -> gray by the BT.601 weights: (299 * 200 + 587 * 100 + 114 * 50 + 500) / 1000 = 124.
  imgs.push_back(record(4, 4, 3, 0));
  for (size_t i = 0; i < 16; ++i) {
    imgs[1].pixels[i * 3] = 200;
    imgs[1].pixels[i * 3 + 1] = 100;
    imgs[1].pixels[i * 3 + 2] = 50;
  }
  // A 2 x 1 RGB image of known pixels, for the layout.
  imgs.push_back(record(2, 1, 3, 2));
  imgs[2].pixels = {1, 2, 3, 4, 5, 6};
  imgs.push_back(unreadable(0));

  adapt::InputChoice gray{1, 4, 4, ""};
  data::Dataset ds = adapt::to_dataset(imgs, {1, 0}, 3, gray, "customer");
  CHECK(ds.source == "customer");
  CHECK(ds.shape == minas::Shape{1, 4, 4});
  CHECK(ds.classes == 3);
  CHECK(ds.labels == std::vector<uint8_t>{0, 1});
  REQUIRE(ds.pixels.size() == 32);
  for (size_t i = 0; i < 16; ++i) CHECK(ds.pixels[i] == 124);
  for (size_t i = 16; i < 32; ++i) CHECK(ds.pixels[i] == 77);

  // Gray to RGB replicates; RGB stays RGB, planar.
  adapt::InputChoice rgb2x1{3, 1, 2, ""};
  imgs.push_back(record(2, 1, 1, 1));
  imgs.back().pixels = {9, 8};
  ds = adapt::to_dataset(imgs, {2, 4}, 3, rgb2x1, "customer");
  CHECK(ds.shape == minas::Shape{3, 1, 2});
  CHECK(ds.pixels == std::vector<uint8_t>{1, 4, 2, 5, 3, 6, 9, 8, 9, 8, 9, 8});
  CHECK(ds.labels == std::vector<uint8_t>{2, 1});

  // RGB -> gray by the weights, rounded: 0.299 * 1 + 0.587 * 2 + 0.114 * 3 = 1.815 -> 2, and
  // 0.299 * 4 + 0.587 * 5 + 0.114 * 6 = 4.815 -> 5.
  ds = adapt::to_dataset(imgs, {2}, 3, adapt::InputChoice{1, 1, 2, ""}, "customer");
  CHECK(ds.pixels == std::vector<uint8_t>{2, 5});

  auto e = error_of([&] { adapt::to_dataset(imgs, {0, 3}, 3, gray, "customer"); });
  CHECK(e.where() == "broken.png");
  CHECK(contains(e.reason(), "is corrupt"));
  e = error_of([&] { adapt::to_dataset(imgs, {2}, 2, gray, "customer"); });
  CHECK(contains(e.reason(), "label 2 is not in [0, 2)"));
  e = error_of([&] { adapt::to_dataset(imgs, {0}, 3, adapt::InputChoice{2, 4, 4, ""}, "c"); });
  CHECK(contains(e.reason(), "1 or 3 channels"));
}

TEST_CASE("images: split_records is stratified, seeded and keeps a training image per class") {
  // Class 0: 10 images, class 1: 5, class 2: 1, class 3: 2; two unreadable ones in between.
  std::vector<adapt::ImageRecord> imgs;
  for (int k : {0, 1, 0, 2, 3, 1, 0, 3})
    for (int rep = 0; rep < (k == 0 ? 4 : k == 1 ? 3 : 1); ++rep)
      imgs.push_back(record(1, 1, 1, k));
  imgs.push_back(unreadable(0));
  imgs.push_back(unreadable(1));
  std::vector<int> count(4, 0);
  for (const auto& r : imgs)
    if (r.ok()) ++count[r.label];
  REQUIRE(count == std::vector<int>{12, 6, 1, 2});

  const auto s = adapt::split_records(imgs, 0.25, 0.25, 42);
  auto per_class = [&](const std::vector<size_t>& idx) {
    std::vector<int> n(4, 0);
    for (size_t i : idx) ++n[imgs[i].label];
    return n;
  };
  // round(12/4) = 3; round(6/4) = round(1.5) = 2; round(1/4) = 0; round(2/4) = 1 each for class 3,
  // which would leave it no training image, so val gives one up.
  CHECK(per_class(s.val) == std::vector<int>{3, 2, 0, 0});
  CHECK(per_class(s.test) == std::vector<int>{3, 2, 0, 1});
  CHECK(per_class(s.train) == std::vector<int>{6, 2, 1, 1});
  std::set<size_t> all;
  for (const auto* v : {&s.train, &s.val, &s.test}) {
    CHECK(std::is_sorted(v->begin(), v->end()));
    for (size_t i : *v) {
      CHECK(imgs[i].ok());
      CHECK(all.insert(i).second);  // disjoint
    }
  }
  CHECK(all.size() == 21);

  // The same seed gives the same split, another seed another one.
  const auto again = adapt::split_records(imgs, 0.25, 0.25, 42);
  CHECK((again.train == s.train && again.val == s.val && again.test == s.test));
  bool differs = false;
  for (uint64_t seed = 1; seed < 5 && !differs; ++seed)
    differs = adapt::split_records(imgs, 0.25, 0.25, seed).val != s.val;
  CHECK(differs);

  // Records the customer put in "test" all go to test; test_share is then not used.
  imgs[0].split = "test";
  imgs[5].split = "test";
  imgs.back().split = "test";  // unreadable: still left out
  const auto own = adapt::split_records(imgs, 0.25, 0.5, 42);
  CHECK(own.test == std::vector<size_t>{0, 5});
  CHECK(per_class(own.val) == std::vector<int>{3, 1, 0, 1});  // round(11/4) = 3, round(5/4) = 1
  CHECK(own.train.size() + own.val.size() + own.test.size() == 21);

  auto e = error_of([&] { adapt::split_records(imgs, 1.0, 0.0, 1); });
  CHECK(e.where() == "val_share");
  imgs[0].split = imgs[5].split = "train";
  e = error_of([&] { adapt::split_records(imgs, 0.5, 0.5, 1); });
  CHECK(contains(e.reason(), "below 1"));
}

TEST_CASE("images: large images are kept shrunk to kKeptSide on the shorter side") {
  TempDir tmp;
  const fs::path root = tmp.file("big");
  png(root / "a" / "wide.png", 3 * adapt::kKeptSide, 2 * adapt::kKeptSide, 3);
  png(root / "a" / "small.png", 40, 30, 1);
  const adapt::Source src = adapt::read_source(root.string());
  REQUIRE(src.images.size() == 2);
  const adapt::ImageRecord& wide = src.images[1];
  REQUIRE(wide.ok());
  CHECK(wide.file_width == 3 * adapt::kKeptSide);
  CHECK(wide.original_height() == 2 * adapt::kKeptSide);
  CHECK(wide.width == 3 * adapt::kKeptSide / 2);
  CHECK(wide.height == adapt::kKeptSide);
  CHECK(wide.pixels.size() == static_cast<size_t>(wide.width) * wide.height * 3);
  const adapt::ImageRecord& small = src.images[0];
  CHECK(small.width == 40);
  CHECK(small.original_width() == 40);
  // The input size follows the files' sizes, not the kept ones.
  CHECK(adapt::choose_input({wide}).height == 64);
}

TEST_CASE("images: write_png names the path it cannot write") {
  TempDir tmp;
  const uint8_t px[4] = {0, 1, 2, 3};
  auto e = error_of([&] { adapt::write_png(tmp.file("no/such/folder/x.png"), 2, 2, 1, px); });
  CHECK(e.where() == tmp.file("no/such/folder/x.png"));
  e = error_of([&] { adapt::write_png(tmp.file("x.png"), 0, 2, 1, px); });
  CHECK(contains(e.reason(), "1 to 4 channels"));
}

TEST_SUITE_END();
