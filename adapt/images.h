#pragma once
// A customer's images as minas adapt reads them: an image folder with one sub-folder per class
// (PNG, JPEG, BMP, PGM; grayscale or colour; any size), a CSV of path,label, or an IDX prefix
// (PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte, plain or .gz). Every file is decoded
// (Debian's stb); what cannot be read stays in the list with the reason, for the validation
// report. Nothing in the customer's folder is ever written.
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/data.h"

namespace minas::adapt {

// One image of the customer's data, as decoded.
struct ImageRecord {
  std::string path;             // the file (for IDX: "FILE#INDEX")
  int label = -1;               // index into Source::classes
  std::string split;            // "train" or "test": where the customer put it
  int width = 0, height = 0;    // of `pixels`
  int channels = 0;             // 1 (grayscale) or 3 (RGB; alpha dropped); 0 when unreadable
  std::vector<uint8_t> pixels;  // height x width x channels, row-major (HWC); empty when unreadable
  std::string error;            // why it could not be read; empty when it was
  // The size in the file; 0 when it is that of `pixels`. A decoded image whose shorter side is
  // above kKeptSide is kept shrunk to kKeptSide on that side (aspect ratio kept): a search's
  // input is at most 64 pixels, and a folder of photos must fit in memory.
  int file_width = 0, file_height = 0;
  bool ok() const { return error.empty(); }
  int original_width() const { return file_width > 0 ? file_width : width; }
  int original_height() const { return file_height > 0 ? file_height : height; }
};

// The shorter side above which decoded images are kept shrunk (see ImageRecord).
inline constexpr int kKeptSide = 128;

struct Source {
  std::string kind;                  // "folder", "csv" or "idx"
  std::string location;              // what was given
  std::vector<std::string> classes;  // class names, sorted (folder, csv) or "0".."K-1" (idx)
  std::vector<ImageRecord> images;   // in a stable order: by class, then by path
};

// The image file extensions a class folder is searched for, lower case (matched in any case).
inline constexpr const char* kImageExtensions[] = {".png", ".jpg", ".jpeg", ".bmp", ".pgm"};

// Reads `location`, told apart in this order:
//  - a folder: one sub-folder per class (class = sub-folder name); each class folder is searched
//    recursively for the image extensions above; hidden files and folders (a leading '.') and
//    other files are ignored. A class folder without images still counts as a class.
//  - a file named *.csv: `path,label` lines, an optional `path,label` header, blank lines
//    skipped; fields may be double-quoted (RFC 4180: "" is a quote; a field may not span lines);
//    spaces around unquoted fields are trimmed. Paths are relative to the CSV's folder unless
//    absolute; labels are class names. A malformed line is an Error naming the file and line.
//  - an IDX prefix: PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte, plain (preferred) or
//    .gz. Image i becomes "FILE#i", one channel; classes are "0" .. "K-1", K = max label + 1.
//    Records are ordered by class, then by index.
// Anything else, or a source without a single image, is an Error. A file that cannot be read or
// decoded stays in the list with `error` set; grayscale files (1 or 2 channels) give 1 channel,
// colour files 3 (alpha dropped). `split` is copied into every record.
Source read_source(const std::string& location, const std::string& split = "train");

// One image file, decoded as read_source decodes each (errors in `error`, never thrown).
ImageRecord read_image(const std::string& path);

// The input shape a search uses for these images.
struct InputChoice {
  int channels = 0, height = 0, width = 0;
  std::string why;  // one sentence with the figures behind the choice, for the report
};

// The rule, over the readable images only (an Error when there are none):
//  - channels: 1 when every image is grayscale, counting RGB images whose three channels are
//    equal in every pixel as grayscale; otherwise 3.
//  - resolution: square, the median of the images' shorter sides (for an even count the lower
//    of the two middle values, so it is a size that occurs), clamped to [16, 64], then rounded
//    to the nearest multiple of 4 (halves up) so two 2x2 poolings divide it.
InputChoice choose_input(const std::vector<ImageRecord>& images);

// The images images[which[0]], images[which[1]], ... as a data set of the chosen input shape:
// RGB becomes gray by the ITU-R BT.601 luma weights, (299 R + 587 G + 114 B + 500) / 1000, and
// gray becomes RGB by replication; each image is resized to exactly height x width by
// stbir_resize_uint8 (Mitchell filter to shrink, Catmull-Rom to enlarge, edges clamped, pixel
// values taken as linear) with the aspect ratio not kept (no crop, no padding); then laid out CHW.
// An unreadable record, or a label outside [0, classes), is an Error; classes is at most 256.
minas::data::Dataset to_dataset(const std::vector<ImageRecord>& images,
                                const std::vector<size_t>& which, int classes,
                                const InputChoice& in, const std::string& source);

// Indices into a record list; disjoint, each ascending.
struct SplitIndices {
  std::vector<size_t> train, val, test;
};

// Splits the readable records. Records whose split is "test" all go to test, and then test_share
// is not used; the others form the pool. Per class of the pool (n_k records): a seeded shuffle,
// then the first round(n_k * val_share) go to val and the next round(n_k * test_share) to test
// (rounding halves away from zero), the rest to train; when that would leave a class with no
// training image, val gives up images first, then test, until one is left for train. Each class
// draws from its own stream of the seed, so the same records and seed give the same split.
// Shares must be in [0, 1), and val_share + test_share < 1 when test_share is used.
SplitIndices split_records(const std::vector<ImageRecord>& images, double val_share,
                           double test_share, uint64_t seed);

// Writes an 8-bit PNG of height x width x channels (HWC, channels 1 to 4); an Error naming the
// path when it cannot. For tests and for building example folders; never used on the customer's.
void write_png(const std::string& path, int width, int height, int channels, const uint8_t* hwc);

}  // namespace minas::adapt
