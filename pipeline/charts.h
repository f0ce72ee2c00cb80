#pragma once
// The pictures of a report, as self-contained SVG documents written by our own
// code (no script, no external reference: a browser, a markdown viewer or an
// image viewer shows them as they are): x-y plots (the best-so-far curve, the
// Pareto front with the chosen model marked), the confusion matrix as a grid of
// shaded counts, and a grid of images with captions (each image an embedded
// PNG written by Debian's stb_image_write).
//
// Every text drawn (class names, architecture keys, labels) is escaped, so a
// customer's folder name cannot break the document. Values that are not
// finite, and points a log axis cannot show (x <= 0), are left out.
#include <cstdint>
#include <string>
#include <vector>

namespace minas::pipeline::charts {

struct Point {
  double x = 0, y = 0;
};

enum class Style {
  line,  // points joined in order
  step,  // a value that holds until the next point (a best-so-far curve)
  dots,  // points alone
};

struct Series {
  std::string name;  // in the legend; empty: none
  std::vector<Point> points;
  Style style = Style::line;
  std::string color = "#1f77b4";  // an SVG colour: "#rrggbb" or a name
};

// A point called out with a ring and a label.
struct Mark {
  Point at;
  std::string label;
};

struct Axes {
  std::string title, x_label, y_label;
  bool log_x = false;  // powers of ten on x (parameters, MACs)
};

// An x-y plot: the axes fitted to the series' points and the marks, ticks at
// round values. With no point to draw, a frame saying so.
std::string plot(const Axes& axes, const std::vector<Series>& series,
                 const std::vector<Mark>& marks = {});

// confusion[true][predicted] as a grid, each cell shaded by its share of the
// true class's images and labelled with its count; rows and columns named by
// `classes` (as many as the matrix has rows, else "0", "1", ...). Throws Error
// when the matrix is not square.
std::string confusion_matrix(const std::vector<std::string>& classes,
                             const std::vector<std::vector<int64_t>>& confusion);

// One image of a grid: channels x height x width bytes (1 or 3 channels),
// as data sets hold them, and the line under it.
struct Thumb {
  std::vector<uint8_t> pixels;
  int channels = 1, height = 0, width = 0;
  std::string caption;
};

// The images in rows of `columns`, each scaled to at least 56 pixels on its
// longer side (pixels kept sharp), captioned. Throws Error for an image whose
// pixels do not match its shape.
std::string image_grid(const std::string& title, const std::vector<Thumb>& images, int columns);

// The PNG file of an image given as channels x height x width bytes.
std::string png(const uint8_t* chw, int channels, int height, int width);

}  // namespace minas::pipeline::charts
