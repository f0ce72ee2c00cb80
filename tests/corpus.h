#pragma once
// Data-driven corpora of bad input (DuckDB style): one text file of cases,
// each naming what it tries, the files it writes and the refusal it expects.
// Read by tests/searchspace/test_bad_specs.cpp (bad_specs.txt) and
// tests/files/test_bad_files.cpp (tests/files/*.txt).
//
// A corpus file:
//   # comment (outside a case's content: before the first case)
//   @run: COMMAND           minas's arguments for every case; {file} is the
//                           case's main file, {dir} its folder (shell-quoted)
//   @file: NAME             the main file's name (default case.txt)
//   @raw                    every case's lines are joined without newlines
//   @base: NAME             a file every case gets (unless it writes NAME
//                           itself); its content follows, up to the next
//                           line starting with '@' or '==='
//   === NAME                a case; the name says what it tries
//   --- expect: TEXT        a substring of the refusal
//   --- run: COMMAND        this case's own command
//   --- names: TEXT         what the refusal must name instead of the main
//                           file's path ("-": nothing to check)
//   --- raw                 this case's lines are joined without newlines
//   --- gzip                the main file is written gzip-compressed
//   --- cut: N              the main file loses its last N bytes (after gzip)
//   --- after: TEXT         TEXT (generators expanded) is appended to the
//                           main file (after gzip)
//   --- file: NAME          the following lines are the file NAME; the first
//                           such line names the case's main file
//   any other line          content of the current file
//
// Content may hold generators, expanded when the case is written:
//   <<deep:N>>              N '[' then N ']' (arrays nested N deep)
//   <<deepobj:N>>           {"a": nested N deep around 1
//   <<repeat:N:TEXT>>       TEXT N times
//   <<hex:HH HH ...>>       those bytes
//   <<fill:N:HH>>           N bytes of HH
//   <<u32be:V>> <<u32le:V>> <<u64le:V>>   V (decimal or 0x hex) as bytes
//   <<len32>> ... <<end>>   the byte length of what lies between, u32le
//   <<len64>> ... <<end>>   the same, u64le
//   <<filesize64>>          the whole file's size, u64le
//   <<crc32>>               zlib's crc32 of every byte before it, u32le
//   <<nl>>                  a newline (in raw content)
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace minas::test {

struct CorpusFile {
  std::string name;
  std::string text;  // before generators are expanded
};

struct CorpusCase {
  std::string name, expect, run, names;
  bool raw = false, gzip = false;
  size_t cut = 0;
  std::string after;
  std::vector<CorpusFile> files;  // the first is the main file
};

struct Corpus {
  std::string run, main_file = "case.txt";
  bool raw = false;
  std::vector<CorpusFile> base;
  std::vector<CorpusCase> cases;
};

namespace corpus_detail {

inline void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>(v >> (8 * i) & 0xff);
}

inline uint64_t number(const std::string& s) {
  size_t used = 0;
  const uint64_t v = std::stoull(s, &used, 0);
  if (used != s.size()) throw std::invalid_argument("not a number: " + s);
  return v;
}

inline uint32_t crc_of(const std::string& bytes) {
  return static_cast<uint32_t>(
      crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

}  // namespace corpus_detail

// The bytes `text` stands for, generators expanded.
inline std::string expand(const std::string& text) {
  using namespace corpus_detail;
  std::string out;
  std::vector<std::pair<size_t, int>> lengths;  // open <<lenN>>: where, bytes
  std::vector<size_t> file_sizes;               // <<filesize64>> places
  size_t at = 0;
  while (at < text.size()) {
    const size_t open = text.find("<<", at);
    if (open == std::string::npos) {
      out += text.substr(at);
      break;
    }
    out += text.substr(at, open - at);
    const size_t close = text.find(">>", open + 2);
    if (close == std::string::npos) throw std::invalid_argument("unclosed << in corpus text");
    const std::string gen = text.substr(open + 2, close - open - 2);
    at = close + 2;
    const size_t colon = gen.find(':');
    const std::string op = gen.substr(0, colon);
    const std::string arg = colon == std::string::npos ? "" : gen.substr(colon + 1);
    if (op == "deep") {
      const size_t n = number(arg);
      out += std::string(n, '[') + std::string(n, ']');
    } else if (op == "deepobj") {
      const size_t n = number(arg);
      std::string s;
      for (size_t i = 0; i < n; ++i) s += "{\"a\":";
      out += s + "1" + std::string(n, '}');
    } else if (op == "repeat") {
      const size_t c = arg.find(':');
      const size_t n = number(arg.substr(0, c));
      const std::string piece = arg.substr(c + 1);
      for (size_t i = 0; i < n; ++i) out += piece;
    } else if (op == "hex") {
      std::istringstream in(arg);
      std::string byte;
      while (in >> byte) out += static_cast<char>(std::stoul(byte, nullptr, 16));
    } else if (op == "fill") {
      const size_t c = arg.find(':');
      out += std::string(number(arg.substr(0, c)),
                         static_cast<char>(std::stoul(arg.substr(c + 1), nullptr, 16)));
    } else if (op == "u32be") {
      const uint64_t v = number(arg);
      for (int i = 3; i >= 0; --i) out += static_cast<char>(v >> (8 * i) & 0xff);
    } else if (op == "u32le") {
      put_le(out, number(arg), 4);
    } else if (op == "u64le") {
      put_le(out, number(arg), 8);
    } else if (op == "len32" || op == "len64") {
      lengths.push_back({out.size(), op == "len32" ? 4 : 8});
      out += std::string(op == "len32" ? 4 : 8, '\0');
    } else if (op == "end") {
      if (lengths.empty()) throw std::invalid_argument("<<end>> without <<lenN>>");
      const auto [where, bytes] = lengths.back();
      lengths.pop_back();
      std::string len;
      put_le(len, out.size() - where - bytes, bytes);
      out.replace(where, bytes, len);
    } else if (op == "filesize64") {
      file_sizes.push_back(out.size());
      out += std::string(8, '\0');
    } else if (op == "crc32") {
      // Sizes first: the checksum covers them.
      for (size_t where : file_sizes) {
        std::string size;
        put_le(size, out.size() + 4, 8);
        out.replace(where, 8, size);
      }
      file_sizes.clear();
      put_le(out, crc_of(out), 4);
    } else if (op == "nl") {
      out += '\n';
    } else {
      throw std::invalid_argument("unknown generator <<" + gen + ">>");
    }
  }
  for (size_t where : file_sizes) {
    std::string size;
    put_le(size, out.size(), 8);
    out.replace(where, 8, size);
  }
  return out;
}

// `bytes` as a gzip stream.
inline std::string gzipped(const std::string& bytes) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
          Z_OK);
  std::string out(deflateBound(&z, bytes.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The bytes of file `i` of case `c` as written: generators expanded, and for
// the main file the case's gzip, cut and suffix.
inline std::string file_bytes(const CorpusCase& c, size_t i) {
  std::string b = expand(c.files[i].text);
  if (i != 0) return b;
  if (c.gzip) b = gzipped(b);
  b.resize(b.size() - std::min(c.cut, b.size()));
  return b + expand(c.after);
}

inline Corpus read_corpus(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in, "cannot read " << path);
  Corpus c;
  std::string line;
  CorpusFile* base = nullptr;  // a base file being read
  CorpusCase* cur = nullptr;
  std::string* content = nullptr;
  auto starts = [&](const char* prefix) { return line.rfind(prefix, 0) == 0; };
  auto rest = [&](const char* prefix) { return line.substr(std::string(prefix).size()); };
  while (std::getline(in, line)) {
    if (starts("=== ")) {
      c.cases.push_back({rest("=== "), "", "", "", c.raw, false, 0, "", {}});
      cur = &c.cases.back();
      base = nullptr;
      content = nullptr;
    } else if (!cur && starts("@")) {
      base = nullptr;
      if (starts("@run: ")) {
        c.run = rest("@run: ");
      } else if (starts("@file: ")) {
        c.main_file = rest("@file: ");
      } else if (line == "@raw") {
        c.raw = true;
      } else if (starts("@base: ")) {
        c.base.push_back({rest("@base: "), ""});
        base = &c.base.back();
      } else {
        FAIL("unknown corpus directive: " << line);
      }
    } else if (!cur) {
      if (base && !starts("#")) base->text += line + (c.raw ? "" : "\n");
    } else if (starts("--- expect: ")) {
      cur->expect = rest("--- expect: ");
    } else if (starts("--- run: ")) {
      cur->run = rest("--- run: ");
    } else if (starts("--- names: ")) {
      cur->names = rest("--- names: ");
    } else if (line == "--- raw") {
      cur->raw = true;
    } else if (line == "--- gzip") {
      cur->gzip = true;
    } else if (starts("--- cut: ")) {
      cur->cut = std::stoul(rest("--- cut: "));
    } else if (starts("--- after: ")) {
      cur->after = rest("--- after: ");
    } else if (starts("--- file: ")) {
      cur->files.push_back({rest("--- file: "), ""});
      content = &cur->files.back().text;
    } else {
      if (!content) {
        cur->files.push_back({c.main_file, ""});
        content = &cur->files.back().text;
      }
      *content += line + (cur->raw ? "" : "\n");
    }
  }
  for (CorpusCase& k : c.cases)
    if (k.run.empty()) k.run = c.run;
  return c;
}

}  // namespace minas::test
