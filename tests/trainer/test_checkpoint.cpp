#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>
#include "tests/support.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "searchspace/error.h"
#include "trainer/checkpoint.h"

using minas::Checkpoint;
using minas::CheckpointTensor;
using minas::TensorSpec;
namespace fs = std::filesystem;

namespace {

using minas::test::contains;
using minas::test::error_of;

// A fresh directory per test case, removed at the end.
struct TempDir : minas::test::TempDir {
  explicit TempDir(const std::string& name) : minas::test::TempDir("ckpt-" + name), dir(path) {}
  fs::path dir;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

Checkpoint sample() {
  Checkpoint ck;
  ck.meta.space = "nb201";
  ck.meta.arch_key = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|";
  ck.meta.info = {{"recipe", {{"lr", 0.2}, {"batch", 128}}}, {"val_acc", 0.9123}};
  ck.tensors.push_back({"stem.conv.weight", {4, 1, 3, 3}, {}});
  for (int i = 0; i < 36; ++i)
    ck.tensors.back().data.push_back(0.01f * static_cast<float>(i) - 0.1f);
  ck.tensors.push_back({"stem.bn.scale", {4}, {1.0f, -0.0f, INFINITY, 1e-30f}});
  ck.tensors.push_back({"empty", {0, 3}, {}});
  ck.tensors.push_back({"scalar", {}, {42.0f}});
  return ck;
}

std::vector<TensorSpec> specs(const Checkpoint& ck) {
  std::vector<TensorSpec> s;
  for (const auto& t : ck.tensors) s.push_back({t.name, t.shape});
  return s;
}

}  // namespace

TEST_SUITE_BEGIN("checkpoint");

TEST_CASE("checkpoint round trip keeps metadata and tensors bit for bit") {
  TempDir tmp("roundtrip");
  const std::string path = tmp.file("model.ckpt");
  const Checkpoint ck = sample();
  minas::save_checkpoint(path, ck);
  const Checkpoint back = minas::load_checkpoint(path);
  CHECK(back.meta == ck.meta);
  REQUIRE(back.tensors.size() == ck.tensors.size());
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    CHECK(back.tensors[i].name == ck.tensors[i].name);
    CHECK(back.tensors[i].shape == ck.tensors[i].shape);
    REQUIRE(back.tensors[i].data.size() == ck.tensors[i].data.size());
    for (size_t k = 0; k < ck.tensors[i].data.size(); ++k)
      CHECK(std::bit_cast<uint32_t>(back.tensors[i].data[k]) ==
            std::bit_cast<uint32_t>(ck.tensors[i].data[k]));
  }
  CHECK(std::signbit(back.find("stem.bn.scale")->data[1]));
  CHECK(back.find("nope") == nullptr);
  CHECK_NOTHROW(minas::check_checkpoint(back, ck.meta.space, ck.meta.arch_key, specs(ck), path));

  // Overwriting replaces the file and leaves no temporary behind.
  Checkpoint second = ck;
  second.meta.info["val_acc"] = 0.95;
  minas::save_checkpoint(path, second);
  CHECK(minas::load_checkpoint(path).meta.info["val_acc"] == 0.95);
  CHECK(std::distance(fs::directory_iterator(tmp.dir), fs::directory_iterator()) == 1);

  // The header states magic, version and size; the last 4 bytes are the CRC.
  const std::string bytes = read_bytes(path);
  CHECK(bytes.substr(0, 8) == "MINASCKP");
  CHECK(bytes[8] == 1);
  uint64_t declared = 0;
  std::memcpy(&declared, bytes.data() + 16, 8);
  CHECK(declared == bytes.size());
}

TEST_CASE("checkpoint of no tensors, and views of a trainer's buffers") {
  TempDir tmp("views");
  const std::string path = tmp.file("v.ckpt");
  std::vector<float> weights{1, 2, 3, 4, 5, 6};
  const minas::TensorView views[] = {{"fc.weight", {2, 3}, weights}};
  minas::save_checkpoint(path, {"chain", "a|b", nlohmann::json::object()}, views);
  const Checkpoint back = minas::load_checkpoint(path);
  CHECK(back.find("fc.weight")->data == weights);

  minas::save_checkpoint(path, {"", "", nullptr}, {});
  CHECK(minas::load_checkpoint(path).tensors.empty());
  CHECK(minas::load_checkpoint(path).meta.info.is_null());
}

TEST_CASE("checkpoint save rejects inconsistent tensors and writes nothing") {
  TempDir tmp("badsave");
  const std::string path = tmp.file("bad.ckpt");
  std::vector<float> five(5, 0.0f);
  const minas::TensorView wrong[] = {{"w", {2, 3}, five}};
  CHECK(contains(error_of([&] { minas::save_checkpoint(path, {}, wrong); }).reason(),
                 "tensor 'w': shape [2, 3] does not match its 5 elements"));
  const minas::TensorView twice[] = {{"w", {5}, five}, {"w", {5}, five}};
  CHECK(contains(error_of([&] { minas::save_checkpoint(path, {}, twice); }).reason(),
                 "appears twice"));
  const minas::TensorView unnamed[] = {{"", {5}, five}};
  CHECK_THROWS_AS(minas::save_checkpoint(path, {}, unnamed), minas::Error);
  const minas::TensorView overflow[] = {{"o", {1ull << 40, 1ull << 40}, five}};
  CHECK_THROWS_AS(minas::save_checkpoint(path, {}, overflow), minas::Error);
  minas::CheckpointMeta bad_utf8;
  bad_utf8.info = {{"note", "\xff\xfe"}};
  CHECK(contains(error_of([&] { minas::save_checkpoint(path, bad_utf8, {}); }).reason(),
                 "metadata cannot be written as JSON"));
  const auto missing_dir =
      error_of([&] { minas::save_checkpoint(tmp.file("no/such.ckpt"), {}, {}); });
  CHECK(contains(missing_dir.reason(), "cannot create the temporary file"));
  CHECK(fs::is_empty(tmp.dir));
}

TEST_CASE("checkpoint load: truncated file says expected and actual bytes") {
  TempDir tmp("truncated");
  const std::string path = tmp.file("t.ckpt");
  minas::save_checkpoint(path, sample());
  const std::string bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 10));
  const auto e = error_of([&] { minas::load_checkpoint(path); });
  CHECK(e.where() == path);
  CHECK(e.reason() == "truncated: expected " + std::to_string(bytes.size()) + " bytes, found " +
                          std::to_string(bytes.size() - 10));
  // Cut inside the header, and at every length, always an Error and never a crash.
  write_bytes(path, bytes.substr(0, 12));
  CHECK(contains(error_of([&] { minas::load_checkpoint(path); }).reason(),
                 "truncated: expected at least 24 bytes of header, found 12"));
  for (size_t n = 1; n < bytes.size(); n += 7) {
    write_bytes(path, bytes.substr(0, n));
    CHECK_THROWS_AS(minas::load_checkpoint(path), minas::Error);
  }
  write_bytes(path, bytes + "xyz");
  CHECK(contains(error_of([&] { minas::load_checkpoint(path); }).reason(),
                 "longer than its header says"));
}

TEST_CASE("checkpoint load: a flipped byte anywhere fails") {
  TempDir tmp("flipped");
  const std::string path = tmp.file("f.ckpt");
  minas::save_checkpoint(path, sample());
  const std::string bytes = read_bytes(path);
  // In the body: the checksum catches it.
  std::string corrupt = bytes;
  corrupt[bytes.size() / 2] ^= 0x10;
  write_bytes(path, corrupt);
  const auto e = error_of([&] { minas::load_checkpoint(path); });
  CHECK(e.where() == path);
  CHECK(contains(e.reason(), "checksum mismatch"));
  CHECK(contains(e.reason(), "the file is corrupt"));
  // Every header byte, every checksum byte and a stride through the rest.
  for (size_t i = 0; i < bytes.size(); i += (i < 24 || i + 5 > bytes.size()) ? 1 : 13) {
    std::string b = bytes;
    b[i] ^= 0x01;
    write_bytes(path, b);
    CAPTURE(i);
    CHECK_THROWS_AS(minas::load_checkpoint(path), minas::Error);
  }
}

// Files that pass the checksum but are malformed (as a buggy writer would make
// them): each gets an Error with the byte offset, never a crash or a huge allocation.
// Layout of the file below: header 24 bytes, space "s" at 24 (4 + 1), key "k" at 29,
// metadata "{}" at 34 (8 + 2), tensor count at 44, name "w" at 48, rank at 53,
// dimension at 57, data at 65 (3 floats), checksum at 77.
TEST_CASE("checkpoint load: malformed content with a valid checksum") {
  TempDir tmp("malformed");
  const std::string path = tmp.file("m.ckpt");
  std::vector<float> w{1, 2, 3};
  const minas::TensorView views[] = {{"w", {3}, w}};
  minas::save_checkpoint(path, {"s", "k", nlohmann::json::object()}, views);
  const std::string good = read_bytes(path);
  REQUIRE(good.size() == 81);
  auto patched = [&](size_t at, std::string_view bytes) {
    std::string b = good;
    b.replace(at, bytes.size(), bytes);
    const uint32_t crc = static_cast<uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(b.data()), 77));
    for (int i = 0; i < 4; ++i) b[77 + i] = static_cast<char>(crc >> (8 * i));
    write_bytes(path, b);
    return error_of([&] { minas::load_checkpoint(path); });
  };
  CHECK_NOTHROW(minas::load_checkpoint(path));
  auto e = patched(44, std::string("\xff\xff\xff\x7f", 4));
  CHECK(e.where() == path + " @ byte 44");
  CHECK(contains(e.reason(), "tensors cannot fit"));
  e = patched(53, std::string("\x63\0\0\0", 4));
  CHECK(e.where() == path + " @ byte 53");
  CHECK(contains(e.reason(), "tensor 'w' has rank 99"));
  e = patched(57, std::string("\0\0\0\0\0\0\0\x40", 8));
  CHECK(e.where() == path + " @ byte 48");
  CHECK(contains(e.reason(), "does not fit in the file"));
  e = patched(42, "[");
  CHECK(e.where() == path + " @ byte 34");
  CHECK(contains(e.reason(), "the metadata JSON is refused: line 1, column 2: JSON syntax error"));
  e = patched(44, std::string("\0\0\0\0", 4));
  CHECK(e.where() == path + " @ byte 48");
  CHECK(contains(e.reason(), "29 bytes after the last tensor"));
  e = patched(29, std::string("\xff\0\0\0", 4));
  CHECK(contains(e.reason(), "arch key of 255 bytes runs past the data"));
}

TEST_CASE("checkpoint load: foreign, empty, future-version and missing files") {
  TempDir tmp("foreign");
  const std::string path = tmp.file("x.ckpt");
  write_bytes(path, "{\"this\": \"is json\"}\n");
  auto e = error_of([&] { minas::load_checkpoint(path); });
  CHECK(e.where() == path);
  CHECK(contains(e.reason(), "not a minas checkpoint"));
  write_bytes(path, "PK");
  CHECK(
      contains(error_of([&] { minas::load_checkpoint(path); }).reason(), "not a minas checkpoint"));
  write_bytes(path, "");
  CHECK(contains(error_of([&] { minas::load_checkpoint(path); }).reason(), "empty"));

  minas::save_checkpoint(path, sample());
  std::string future = read_bytes(path);
  future[8] = 2;
  write_bytes(path, future);
  e = error_of([&] { minas::load_checkpoint(path); });
  CHECK(e.where() == path + " @ byte 8");
  CHECK(e.reason() == "checkpoint format version 2; this build reads version 1");

  const std::string missing = tmp.file("missing.ckpt");
  e = error_of([&] { minas::load_checkpoint(missing); });
  CHECK(e.where() == missing);
  CHECK(contains(e.reason(), "No such file or directory"));
  CHECK(contains(error_of([&] { minas::load_checkpoint(tmp.dir.string()); }).reason(),
                 "cannot read the checkpoint"));
}

TEST_CASE("checkpoint check names the first mismatch") {
  const Checkpoint ck = sample();
  const std::string key = ck.meta.arch_key;
  const auto ok = specs(ck);
  auto e = error_of([&] { minas::check_checkpoint(ck, "nb201", "|other|", ok, "m.ckpt"); });
  CHECK(e.where() == "m.ckpt");
  CHECK(e.reason() == "the checkpoint is of architecture '" + key + "', expected '|other|'");
  e = error_of([&] { minas::check_checkpoint(ck, "mobilenet", key, ok, "m.ckpt"); });
  CHECK(contains(e.reason(), "of space 'nb201', expected 'mobilenet'"));

  auto wrong_shape = ok;
  wrong_shape[0].shape = {8, 1, 3, 3};
  e = error_of([&] { minas::check_checkpoint(ck, "nb201", key, wrong_shape, "m.ckpt"); });
  CHECK(e.reason() == "tensor 'stem.conv.weight' has shape [4, 1, 3, 3], expected [8, 1, 3, 3]");

  auto more = ok;
  more.push_back({"head.weight", {10, 4}});
  e = error_of([&] { minas::check_checkpoint(ck, "nb201", key, more, "m.ckpt"); });
  CHECK(e.reason() == "tensor 'head.weight' is missing from the checkpoint");

  auto fewer = ok;
  fewer.pop_back();
  e = error_of([&] { minas::check_checkpoint(ck, "nb201", key, fewer, "m.ckpt"); });
  CHECK(e.reason() == "tensor 'scalar' in the checkpoint is not part of the network");
  CHECK_NOTHROW(minas::check_checkpoint(ck, "nb201", key, fewer, "m.ckpt", true));
}

TEST_SUITE_END();
