#include "adapt/images.h"

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>
#include <tuple>
#include <utility>

#include "searchspace/error.h"
#include "searchspace/rng.h"

namespace minas::adapt {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool image_extension(const fs::path& p) {
  const std::string ext = lower(p.extension().string());
  return std::any_of(std::begin(kImageExtensions), std::end(kImageExtensions),
                     [&](const char* e) { return ext == e; });
}

std::string extension_list() {
  std::string s;
  for (const char* e : kImageExtensions) s += (s.empty() ? "" : " ") + std::string(e);
  return s;
}

// The whole file, or the reason it cannot be had.
bool read_file(const std::string& path, std::vector<uint8_t>& bytes, std::string& why) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    why = "is a folder, not an image file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = std::string("cannot be opened: ") + std::strerror(errno);
    return false;
  }
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) {
    why = "cannot be read";
    return false;
  }
  return true;
}

// Reads and decodes one file into rec (path, label and split already set); failures go to
// rec.error, never out as exceptions, so one bad file does not hide the others.
void decode(ImageRecord& rec) {
  std::vector<uint8_t> bytes;
  if (!read_file(rec.path, bytes, rec.error)) return;
  if (bytes.empty()) {
    rec.error = "is empty (0 bytes)";
    return;
  }
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    rec.error = "is too large to decode (over 2 GiB)";
    return;
  }
  const int len = static_cast<int>(bytes.size());
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &comp)) {
    rec.error = std::string("is not a readable PNG, JPEG, BMP or PGM image (") +
                stbi_failure_reason() + ")";
    return;
  }
  // 1: gray, 2: gray + alpha, 3: RGB, 4: RGBA; stb drops alpha when asked for 1 or 3.
  const int want = comp <= 2 ? 1 : 3;
  uint8_t* px = stbi_load_from_memory(bytes.data(), len, &w, &h, &comp, want);
  if (px == nullptr) {
    rec.error = std::string("is corrupt or unsupported (") + stbi_failure_reason() + ")";
    return;
  }
  rec.channels = want;
  rec.file_width = w;
  rec.file_height = h;
  if (std::min(w, h) <= kKeptSide) {
    rec.width = w;
    rec.height = h;
    rec.pixels.assign(px, px + static_cast<size_t>(w) * h * want);
    stbi_image_free(px);
    return;
  }
  const double scale = static_cast<double>(kKeptSide) / std::min(w, h);
  rec.width = std::max(1, static_cast<int>(std::lround(w * scale)));
  rec.height = std::max(1, static_cast<int>(std::lround(h * scale)));
  rec.pixels.resize(static_cast<size_t>(rec.width) * rec.height * want);
  const int ok = stbir_resize_uint8(px, w, h, 0, rec.pixels.data(), rec.width, rec.height, 0, want);
  stbi_image_free(px);
  if (!ok) {
    rec.pixels.clear();
    rec.width = rec.height = rec.channels = 0;
    rec.error = "could not be shrunk from " + std::to_string(w) + "x" + std::to_string(h);
  }
}

// ---- Image folder ----------------------------------------------------------------------------

// Image files under a class folder, recursively, hidden ones and hidden folders skipped.
std::vector<std::string> image_files(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) throw Error(dir.string(), "cannot be listed: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(dir.string(), "cannot be listed: " + ec.message());
    const fs::path& p = it->path();
    std::error_code entry;  // a broken link is no image; it does not stop the listing
    if (hidden(p)) {
      if (it->is_directory(entry)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(entry) && image_extension(p)) files.push_back(p.string());
  }
  if (ec) throw Error(dir.string(), "cannot be listed: " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

Source read_folder(const std::string& location, const std::string& split) {
  Source src;
  src.kind = "folder";
  src.location = location;
  std::error_code ec;
  size_t loose = 0;  // images at the top level, outside any class folder
  fs::directory_iterator it(location, ec), end;
  if (ec) throw Error(location, "cannot be listed: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(location, "cannot be listed: " + ec.message());
    const fs::path& p = it->path();
    if (hidden(p)) continue;
    std::error_code entry;
    if (it->is_directory(entry))
      src.classes.push_back(p.filename().string());
    else if (it->is_regular_file(entry) && image_extension(p))
      ++loose;
  }
  if (ec) throw Error(location, "cannot be listed: " + ec.message());
  std::sort(src.classes.begin(), src.classes.end());

  for (size_t k = 0; k < src.classes.size(); ++k)
    for (std::string& file : image_files(fs::path(location) / src.classes[k])) {
      ImageRecord rec;
      rec.path = std::move(file);
      rec.label = static_cast<int>(k);
      rec.split = split;
      decode(rec);
      src.images.push_back(std::move(rec));
    }

  if (src.images.empty()) {
    std::string what = "holds no images: looked for " + extension_list() +
                       " files (any case) in one sub-folder per class, e.g. " +
                       (fs::path(location) / "cat" / "0001.png").string();
    if (loose > 0)
      what += "; its " + std::to_string(loose) +
              " images at the top level belong to no class: move each into a sub-folder named "
              "after its class";
    throw Error(location, what);
  }
  return src;
}

// ---- CSV -------------------------------------------------------------------------------------

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// Splits one CSV line into fields (RFC 4180 quoting, without line breaks inside quotes). Returns
// what is wrong with the line, empty when nothing is.
std::string csv_fields(const std::string& line, std::vector<std::string>& fields) {
  size_t i = 0;
  while (true) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::string field;
    if (i < line.size() && line[i] == '"') {
      const size_t open = i++;
      while (true) {
        if (i >= line.size())
          return "the quote opened at column " + std::to_string(open + 1) +
                 " is not closed (a field may not span lines)";
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i < line.size() && line[i] != ',')
        return "unexpected text after the closing quote, at column " + std::to_string(i + 1) +
               " (write a quote inside a quoted field as \"\")";
    } else {
      const size_t comma = line.find(',', i);
      field = trim(line.substr(i, comma == std::string::npos ? std::string::npos : comma - i));
      if (field.find('"') != std::string::npos)
        return "a quote inside an unquoted field (quote the whole field: \"a,b.png\")";
      i = comma == std::string::npos ? line.size() : comma;
    }
    fields.push_back(std::move(field));
    if (i >= line.size()) break;
    ++i;  // the comma
  }
  return "";
}

Source read_csv(const std::string& location, const std::string& split) {
  Source src;
  src.kind = "csv";
  src.location = location;
  std::ifstream in(location);
  if (!in) throw Error(location, std::string("cannot be opened: ") + std::strerror(errno));
  const fs::path dir = fs::path(location).parent_path();
  std::vector<std::pair<std::string, std::string>> rows;  // path, label
  std::string line;
  bool first = true;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    const std::string where = location + ":" + std::to_string(number);
    std::vector<std::string> f;
    if (const std::string why = csv_fields(line, f); !why.empty()) throw Error(where, why);
    const bool header = first && f.size() == 2 && lower(f[0]) == "path" && lower(f[1]) == "label";
    first = false;
    if (header) continue;
    if (f.size() != 2)
      throw Error(where, "expected 2 fields, path,label, found " + std::to_string(f.size()) +
                             " (quote a path that holds a comma: \"a,b.png\",cat)");
    if (f[0].empty()) throw Error(where, "the path is empty");
    if (f[1].empty()) throw Error(where, "the label is empty");
    rows.emplace_back(std::move(f[0]), std::move(f[1]));
  }
  if (in.bad()) throw Error(location, "cannot be read");
  if (rows.empty())
    throw Error(location,
                "lists no images: expected lines of path,label, e.g. images/0001.png,cat");

  for (const auto& row : rows) src.classes.push_back(row.second);
  std::sort(src.classes.begin(), src.classes.end());
  src.classes.erase(std::unique(src.classes.begin(), src.classes.end()), src.classes.end());
  for (auto& [path, label] : rows) {
    ImageRecord rec;
    const fs::path p(path);
    rec.path = p.is_absolute() ? path : (dir / p).string();
    rec.label = static_cast<int>(std::lower_bound(src.classes.begin(), src.classes.end(), label) -
                                 src.classes.begin());
    rec.split = split;
    src.images.push_back(std::move(rec));
  }
  std::stable_sort(src.images.begin(), src.images.end(),
                   [](const ImageRecord& a, const ImageRecord& b) {
                     return std::tie(a.label, a.path) < std::tie(b.label, b.path);
                   });
  for (ImageRecord& rec : src.images) decode(rec);
  return src;
}

// ---- IDX prefix ------------------------------------------------------------------------------

// PREFIX + suffix, plain preferred over .gz; empty when neither is a file.
std::string idx_file(const std::string& prefix, const std::string& suffix) {
  std::error_code ec;
  for (const std::string& p : {prefix + suffix, prefix + suffix + ".gz"})
    if (fs::is_regular_file(p, ec)) return p;
  return "";
}

Source read_idx_prefix(const std::string& location, const std::string& images_path,
                       const std::string& split) {
  const std::string labels_path = idx_file(location, "-labels-idx1-ubyte");
  if (labels_path.empty())
    throw Error(location + "-labels-idx1-ubyte",
                "is missing: an IDX prefix needs both " + location + "-images-idx3-ubyte and " +
                    location + "-labels-idx1-ubyte (plain or .gz)");
  data::IdxImages idx = data::read_idx_images(images_path);
  const std::vector<uint8_t> labels = data::read_idx_labels(labels_path);
  if (labels.size() != idx.count)
    throw Error(labels_path, "holds " + std::to_string(labels.size()) + " labels but " +
                                 images_path + " holds " + std::to_string(idx.count) + " images");
  if (idx.count == 0) throw Error(images_path, "holds no images");

  Source src;
  src.kind = "idx";
  src.location = location;
  const int classes = *std::max_element(labels.begin(), labels.end()) + 1;
  for (int k = 0; k < classes; ++k) src.classes.push_back(std::to_string(k));
  std::vector<uint32_t> order(idx.count);
  for (uint32_t i = 0; i < idx.count; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return labels[a] < labels[b]; });
  if (idx.channels != 1 && idx.channels != 3)
    throw Error(images_path, "holds images of " + std::to_string(idx.channels) +
                                 " channels; minas adapt takes 1 (grayscale) or 3 (RGB)");
  const size_t plane = size_t{idx.rows} * idx.cols, c = idx.channels;
  src.images.reserve(idx.count);
  for (uint32_t i : order) {
    ImageRecord rec;
    rec.path = images_path + "#" + std::to_string(i);
    rec.label = labels[i];
    rec.split = split;
    rec.width = static_cast<int>(idx.cols);
    rec.height = static_cast<int>(idx.rows);
    rec.channels = static_cast<int>(c);
    const uint8_t* px = idx.pixels.data() + i * plane * c;  // CHW in the file, HWC here
    rec.pixels.resize(plane * c);
    for (size_t k = 0; k < c; ++k)
      for (size_t p = 0; p < plane; ++p) rec.pixels[p * c + k] = px[k * plane + p];
    src.images.push_back(std::move(rec));
  }
  return src;
}

// ---- Pixels ----------------------------------------------------------------------------------

bool all_gray(const ImageRecord& rec) {
  if (rec.channels == 1) return true;
  const uint8_t* p = rec.pixels.data();
  for (size_t i = 0; i + 2 < rec.pixels.size(); i += 3)
    if (p[i] != p[i + 1] || p[i] != p[i + 2]) return false;
  return true;
}

std::vector<uint8_t> to_gray(const std::vector<uint8_t>& rgb) {
  std::vector<uint8_t> gray(rgb.size() / 3);
  for (size_t i = 0; i < gray.size(); ++i) {
    const unsigned r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    gray[i] = static_cast<uint8_t>((299 * r + 587 * g + 114 * b + 500) / 1000);
  }
  return gray;
}

}  // namespace

Source read_source(const std::string& location, const std::string& split) {
  std::error_code ec;
  if (fs::is_directory(location, ec)) return read_folder(location, split);
  if (fs::is_regular_file(location, ec) && lower(fs::path(location).extension().string()) == ".csv")
    return read_csv(location, split);
  const std::string images_path = idx_file(location, "-images-idx3-ubyte");
  if (!images_path.empty()) return read_idx_prefix(location, images_path, split);

  std::string what =
      "'" + location + "' is neither an image folder, a CSV (.csv) nor an IDX prefix";
  what += fs::exists(location, ec) ? "" : " (nothing is there)";
  what +=
      ": give a folder with one sub-folder of images per class, a CSV of path,label lines, "
      "or PREFIX for PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte (plain or .gz)";
  const std::string name = fs::path(location).filename().string();
  for (const char* s : {"-images-idx3-ubyte", "-labels-idx1-ubyte"})
    if (name.find(s) != std::string::npos)
      what += "; for this IDX file, give " +
              location.substr(0, location.size() - name.size() + name.find(s));
  throw Error("--data", what);
}

ImageRecord read_image(const std::string& path) {
  ImageRecord rec;
  rec.path = path;
  decode(rec);
  return rec;
}

InputChoice choose_input(const std::vector<ImageRecord>& images) {
  size_t readable = 0, colour = 0, rgb_gray = 0;
  std::vector<int> sides;
  for (const ImageRecord& rec : images) {
    if (!rec.ok()) continue;
    ++readable;
    sides.push_back(std::min(rec.original_width(), rec.original_height()));
    if (rec.channels == 3) (all_gray(rec) ? rgb_gray : colour) += 1;
  }
  if (readable == 0)
    throw Error("--data", "none of the " + std::to_string(images.size()) +
                              " images can be read, so there is no input size to choose");

  InputChoice in;
  in.channels = colour > 0 ? 3 : 1;
  const size_t mid = (sides.size() - 1) / 2;
  std::nth_element(sides.begin(), sides.begin() + mid, sides.end());
  const int median = sides[mid];
  const int clamped = std::clamp(median, 16, 64);
  const int side = (clamped + 2) / 4 * 4;  // in [16, 64] already, as both ends are multiples of 4
  in.height = in.width = side;

  std::string why = "Input " + std::to_string(in.channels) + "x" + std::to_string(side) + "x" +
                    std::to_string(side) + " (channels x height x width) because ";
  // "all 3 readable images are", "the readable image is", "2 of the 5 readable images are"
  auto images_are = [&](size_t n) {
    if (n == readable)
      return readable == 1 ? std::string("the readable image is")
                           : "all " + std::to_string(n) + " readable images are";
    return std::to_string(n) + " of the " + std::to_string(readable) + " readable images " +
           (n == 1 ? "is" : "are");
  };
  if (colour > 0)
    why += images_are(colour) + " in colour";
  else
    why += images_are(readable) + " grayscale" +
           (rgb_gray > 0 ? " (" + std::to_string(rgb_gray) + " stored as RGB with equal channels)"
                         : "");
  why +=
      ", and the median shorter side of the readable images is " + std::to_string(median) + " px";
  if (median < 16)
    why += ", raised to the minimum of 16";
  else if (median > 64)
    why += ", lowered to the maximum of 64";
  else if (side != median)
    why +=
        ", rounded to " + std::to_string(side) + ", a multiple of 4 so two 2x2 poolings divide it";
  if (readable < images.size())
    why += " (" + std::to_string(images.size() - readable) + " unreadable image" +
           (images.size() - readable == 1 ? "" : "s") + " not counted)";
  in.why = why + ".";
  return in;
}

data::Dataset to_dataset(const std::vector<ImageRecord>& images, const std::vector<size_t>& which,
                         int classes, const InputChoice& in, const std::string& source) {
  if (in.channels != 1 && in.channels != 3)
    throw Error(source, "the input must have 1 or 3 channels, not " + std::to_string(in.channels));
  if (in.height < 1 || in.width < 1)
    throw Error(source, "the input size " + std::to_string(in.height) + "x" +
                            std::to_string(in.width) + " is not positive");
  if (classes < 1 || classes > 256)
    throw Error(source, std::to_string(classes) +
                            " classes: a data set holds 1 to 256 (labels are one byte)");
  data::Dataset ds;
  ds.source = source;
  ds.shape = {in.channels, in.height, in.width};
  ds.classes = classes;
  const size_t plane = static_cast<size_t>(in.height) * in.width;
  ds.pixels.resize(which.size() * plane * in.channels);
  ds.labels.resize(which.size());

  std::vector<uint8_t> resized;
  for (size_t n = 0; n < which.size(); ++n) {
    if (which[n] >= images.size())
      throw Error(source, "image index " + std::to_string(which[n]) + " is past the " +
                              std::to_string(images.size()) + " records");
    const ImageRecord& rec = images[which[n]];
    if (!rec.ok()) throw Error(rec.path, "cannot be used: it " + rec.error);
    if (rec.label < 0 || rec.label >= classes)
      throw Error(rec.path, "label " + std::to_string(rec.label) + " is not in [0, " +
                                std::to_string(classes) + ")");
    if ((rec.channels != 1 && rec.channels != 3) ||
        rec.pixels.size() != static_cast<size_t>(rec.width) * rec.height * rec.channels)
      throw Error(rec.path, "its pixels do not match its size " + std::to_string(rec.width) + "x" +
                                std::to_string(rec.height) + "x" + std::to_string(rec.channels));

    // Convert to gray before resizing (less to resize), replicate gray after (likewise).
    int c = rec.channels;
    std::vector<uint8_t> gray;
    const std::vector<uint8_t>* src = &rec.pixels;
    if (c == 3 && in.channels == 1) {
      gray = to_gray(rec.pixels);
      src = &gray;
      c = 1;
    }
    if (rec.width == in.width && rec.height == in.height) {
      resized = *src;
    } else {
      resized.resize(plane * c);
      if (!stbir_resize_uint8(src->data(), rec.width, rec.height, 0, resized.data(), in.width,
                              in.height, 0, c))
        throw Error(rec.path, "could not be resized to " + std::to_string(in.width) + "x" +
                                  std::to_string(in.height) + " (out of memory?)");
    }
    uint8_t* out = ds.pixels.data() + n * plane * in.channels;
    for (int ch = 0; ch < in.channels; ++ch)
      for (size_t i = 0; i < plane; ++i)
        out[ch * plane + i] = c == 1 ? resized[i] : resized[i * 3 + ch];
    ds.labels[n] = static_cast<uint8_t>(rec.label);
  }
  return ds;
}

SplitIndices split_records(const std::vector<ImageRecord>& images, double val_share,
                           double test_share, uint64_t seed) {
  auto check = [](const char* name, double share) {
    if (!(share >= 0 && share < 1)) throw Error(name, std::to_string(share) + " is not in [0, 1)");
  };
  check("val_share", val_share);
  check("test_share", test_share);

  SplitIndices s;
  std::map<int, std::vector<size_t>> pool;  // by class, in record order
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageRecord& rec = images[i];
    if (!rec.ok()) continue;
    if (rec.label < 0) throw Error(rec.path, "has no label");
    if (rec.split == "test")
      s.test.push_back(i);
    else
      pool[rec.label].push_back(i);
  }
  const bool own_test = !s.test.empty();
  if (!own_test && val_share + test_share >= 1)
    throw Error("val_share", "val_share + test_share is " + std::to_string(val_share + test_share) +
                                 ": it must be below 1 to leave images for training");

  Rng master(seed);
  for (int k = 0, last = pool.empty() ? -1 : pool.rbegin()->first; k <= last; ++k) {
    // One stream per class, drawn whether or not it has images, so a class's shuffle depends only
    // on the seed and its own images.
    Rng rng = master.split();
    auto it = pool.find(k);
    if (it == pool.end()) continue;
    std::vector<size_t>& idx = it->second;
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
    const size_t n = idx.size();
    size_t val = static_cast<size_t>(std::llround(static_cast<double>(n) * val_share));
    size_t test =
        own_test ? 0 : static_cast<size_t>(std::llround(static_cast<double>(n) * test_share));
    while (val + test > n - 1) (val > 0 ? val : test) -= 1;
    s.val.insert(s.val.end(), idx.begin(), idx.begin() + val);
    s.test.insert(s.test.end(), idx.begin() + val, idx.begin() + val + test);
    s.train.insert(s.train.end(), idx.begin() + val + test, idx.end());
  }
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.val.begin(), s.val.end());
  std::sort(s.test.begin(), s.test.end());
  return s;
}

void write_png(const std::string& path, int width, int height, int channels, const uint8_t* hwc) {
  if (width < 1 || height < 1 || channels < 1 || channels > 4 || hwc == nullptr)
    throw Error(path, "cannot write a PNG of " + std::to_string(width) + "x" +
                          std::to_string(height) + "x" + std::to_string(channels) +
                          " (width, height >= 1, 1 to 4 channels)");
  errno = 0;
  if (!stbi_write_png(path.c_str(), width, height, channels, hwc, width * channels)) {
    const int err = errno;
    throw Error(path, std::string("could not be written as a PNG") +
                          (err ? std::string(": ") + std::strerror(err) : std::string()));
  }
}

}  // namespace minas::adapt
