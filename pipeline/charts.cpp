#include "pipeline/charts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include <stb/stb_image_write.h>

#include "controller/protocol.h"  // base64_encode
#include "searchspace/error.h"

namespace minas::pipeline::charts {
namespace {

// The plot area inside a 640 x 400 document.
constexpr double kWidth = 640, kHeight = 400;
constexpr double kLeft = 72, kRight = 24, kTop = 40, kBottom = 56;

// The length of the valid UTF-8 sequence at text[i], 0 when it is not one.
size_t utf8_length(const std::string& text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) >> 6) != 2) return 0;
  return n;
}

// Text for an SVG document: XML's special characters escaped, control
// characters and bytes that are not UTF-8 as '?', at most `limit` characters.
std::string escape(const std::string& text, size_t limit = 200) {
  std::string out;
  size_t chars = 0;
  for (size_t i = 0; i < text.size() && chars < limit; ++chars) {
    const size_t n = utf8_length(text, i);
    const char c = text[i];
    if (n == 0 || (n == 1 && static_cast<unsigned char>(c) < 0x20)) {
      out += '?';
      i += 1;
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.append(text, i, n);
    }
    i += n;
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// A tick's label: few digits, thousands as k and millions as M.
std::string tick_label(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a >= 1e6 && std::fmod(a, 1e5) == 0) std::snprintf(buf, sizeof buf, "%gM", v / 1e6);
  else if (a >= 1e4 && std::fmod(a, 1e2) == 0) std::snprintf(buf, sizeof buf, "%gk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about five of them.
std::vector<double> linear_ticks(double lo, double hi) {
  const double raw = (hi - lo) / 5;
  const double p = std::pow(10, std::floor(std::log10(raw)));
  const double step = raw / p < 1.5 ? p : raw / p < 3.5 ? 2 * p : raw / p < 7.5 ? 5 * p : 10 * p;
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return t;
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return !(lo <= hi); }
  // Widened a little on each side, or around a single value.
  void pad(double share) {
    const double w = hi > lo ? (hi - lo) * share : std::max(std::fabs(lo) * 0.05, 1e-3);
    lo -= w;
    hi += w;
  }
};

class Frame {
 public:
  Frame(const Axes& a, Range x, Range y) : a_(a), x_(x), y_(y) {}
  double px(double v) const {
    const double t = a_.log_x ? (std::log10(v) - x_.lo) / (x_.hi - x_.lo) : (v - x_.lo) / (x_.hi - x_.lo);
    return kLeft + t * (kWidth - kLeft - kRight);
  }
  double py(double v) const {
    return kHeight - kBottom - (v - y_.lo) / (y_.hi - y_.lo) * (kHeight - kTop - kBottom);
  }
  // The axes, the grid and the tick labels.
  void draw(std::ostream& s) const {
    const double x0 = kLeft, x1 = kWidth - kRight, y0 = kHeight - kBottom, y1 = kTop;
    s << "<g stroke=\"#ddd\" stroke-width=\"1\">\n";
    std::ostringstream labels;
    for (double v : linear_ticks(y_.lo, y_.hi)) {
      s << "<line x1=\"" << num(x0) << "\" y1=\"" << num(py(v)) << "\" x2=\"" << num(x1)
        << "\" y2=\"" << num(py(v)) << "\"/>\n";
      labels << "<text x=\"" << num(x0 - 6) << "\" y=\"" << num(py(v) + 4)
             << "\" text-anchor=\"end\">" << escape(tick_label(v)) << "</text>\n";
    }
    std::vector<double> xt;
    if (a_.log_x)
      for (double e = std::ceil(x_.lo - 1e-9); e <= x_.hi + 1e-9; e += 1) xt.push_back(std::pow(10, e));
    else
      xt = linear_ticks(x_.lo, x_.hi);
    for (double v : xt) {
      s << "<line x1=\"" << num(px(v)) << "\" y1=\"" << num(y0) << "\" x2=\"" << num(px(v))
        << "\" y2=\"" << num(y1) << "\"/>\n";
      labels << "<text x=\"" << num(px(v)) << "\" y=\"" << num(y0 + 18)
             << "\" text-anchor=\"middle\">" << escape(tick_label(v)) << "</text>\n";
    }
    s << "</g>\n<rect x=\"" << num(x0) << "\" y=\"" << num(y1) << "\" width=\"" << num(x1 - x0)
      << "\" height=\"" << num(y0 - y1) << "\" fill=\"none\" stroke=\"#333\"/>\n"
      << "<g font-size=\"11\" fill=\"#333\">\n"
      << labels.str() << "</g>\n"
      << "<text x=\"" << num((x0 + x1) / 2) << "\" y=\"" << num(kHeight - 14)
      << "\" text-anchor=\"middle\" font-size=\"13\">" << escape(a_.x_label) << "</text>\n"
      << "<text transform=\"translate(18 " << num((y0 + y1) / 2)
      << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">" << escape(a_.y_label)
      << "</text>\n";
  }

 private:
  const Axes& a_;
  Range x_, y_;  // x in log10 units on a log axis
};

std::string header(double w, double h, const std::string& title) {
  std::ostringstream s;
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" "
       "width=\""
    << num(w) << "\" height=\"" << num(h) << "\" viewBox=\"0 0 " << num(w) << " " << num(h)
    << "\" font-family=\"sans-serif\">\n"
    << "<title>" << escape(title) << "</title>\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << num(w / 2) << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
    << escape(title) << "</text>\n";
  return s.str();
}

}  // namespace

std::string plot(const Axes& axes, const std::vector<Series>& series, const std::vector<Mark>& marks) {
  auto usable = [&](const Point& p) {
    return std::isfinite(p.x) && std::isfinite(p.y) && (!axes.log_x || p.x > 0);
  };
  Range x, y;
  auto take = [&](const Point& p) {
    if (!usable(p)) return;
    x.add(axes.log_x ? std::log10(p.x) : p.x);
    y.add(p.y);
  };
  for (const auto& s : series)
    for (const auto& p : s.points) take(p);
  for (const auto& m : marks) take(m.at);
  std::ostringstream s;
  s << header(kWidth, kHeight, axes.title);
  if (x.empty()) {
    s << "<text x=\"" << num(kWidth / 2) << "\" y=\"" << num(kHeight / 2)
      << "\" text-anchor=\"middle\" font-size=\"13\">no data to plot</text>\n</svg>\n";
    return s.str();
  }
  if (axes.log_x) {
    x.lo = std::floor(x.lo - 0.05);
    x.hi = std::ceil(x.hi + 0.05);
  } else {
    x.pad(0.03);
  }
  y.pad(0.08);
  const Frame f(axes, x, y);
  f.draw(s);
  int legend = 0;
  for (const auto& ser : series) {
    std::vector<Point> pts;
    for (const auto& p : ser.points)
      if (usable(p)) pts.push_back(p);
    if (pts.empty()) continue;
    const std::string color = escape(ser.color);
    if (ser.style == Style::dots) {
      s << "<g fill=\"" << color << "\" fill-opacity=\"0.6\">\n";
      for (const auto& p : pts)
        s << "<circle cx=\"" << num(f.px(p.x)) << "\" cy=\"" << num(f.py(p.y)) << "\" r=\"3\"/>\n";
      s << "</g>\n";
    } else {
      s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
      for (size_t i = 0; i < pts.size(); ++i) {
        if (ser.style == Style::step && i > 0)
          s << num(f.px(pts[i].x)) << "," << num(f.py(pts[i - 1].y)) << " ";
        s << num(f.px(pts[i].x)) << "," << num(f.py(pts[i].y)) << " ";
      }
      s << "\"/>\n";
    }
    if (!ser.name.empty()) {
      const double ly = kTop + 14 + 16 * legend++;
      s << "<rect x=\"" << num(kLeft + 10) << "\" y=\"" << num(ly - 9) << "\" width=\"12\" height=\"4\" fill=\""
        << color << "\"/>\n<text x=\"" << num(kLeft + 28) << "\" y=\"" << num(ly - 3)
        << "\" font-size=\"11\">" << escape(ser.name) << "</text>\n";
    }
  }
  for (const auto& m : marks) {
    if (!usable(m.at)) continue;
    const double cx = f.px(m.at.x), cy = f.py(m.at.y);
    // The label left of the ring when the point is in the plot's right half.
    const bool left = cx > (kLeft + kWidth - kRight) / 2;
    s << "<circle cx=\"" << num(cx) << "\" cy=\"" << num(cy)
      << "\" r=\"7\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>\n"
      << "<text x=\"" << num(cx + (left ? -11 : 11)) << "\" y=\"" << num(cy - 9)
      << "\" font-size=\"11\" fill=\"#d62728\" text-anchor=\"" << (left ? "end" : "start") << "\">"
      << escape(m.label) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::string confusion_matrix(const std::vector<std::string>& classes,
                             const std::vector<std::vector<int64_t>>& confusion) {
  const size_t k = confusion.size();
  for (size_t t = 0; t < k; ++t)
    if (confusion[t].size() != k)
      throw Error("confusion matrix", "row " + std::to_string(t) + " has " +
                                          std::to_string(confusion[t].size()) + " cells, not " +
                                          std::to_string(k));
  auto name = [&](size_t i) { return i < classes.size() ? classes[i] : std::to_string(i); };
  const double cell = k <= 10 ? 48 : std::max(14.0, 480.0 / static_cast<double>(k));
  const double left = 130, top = 110;
  const double w = left + cell * static_cast<double>(k) + 24, h = top + cell * static_cast<double>(k) + 60;
  std::ostringstream s;
  s << header(w, h, "Confusion matrix (test set)");
  s << "<text x=\"" << num(left + cell * static_cast<double>(k) / 2) << "\" y=\"46\" text-anchor=\"middle\" "
       "font-size=\"12\">predicted class</text>\n"
    << "<text transform=\"translate(16 " << num(top + cell * static_cast<double>(k) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">true class</text>\n";
  const bool text_in_cells = cell >= 24;
  for (size_t t = 0; t < k; ++t) {
    int64_t total = 0;
    for (const int64_t v : confusion[t]) total += v;
    const double y = top + cell * static_cast<double>(t);
    s << "<text x=\"" << num(left - 6) << "\" y=\"" << num(y + cell / 2 + 4)
      << "\" text-anchor=\"end\" font-size=\"11\">" << escape(name(t)) << "</text>\n";
    for (size_t p = 0; p < k; ++p) {
      const double x = left + cell * static_cast<double>(p);
      const double share = total ? static_cast<double>(confusion[t][p]) / static_cast<double>(total) : 0;
      // Correct predictions in blue, confusions in red, darker for a larger share.
      const int fade = static_cast<int>(std::lround(255 * (1 - share)));
      char fill[16];
      if (p == t) std::snprintf(fill, sizeof fill, "#%02x%02xff", fade, fade);
      else std::snprintf(fill, sizeof fill, "#ff%02x%02x", fade, fade);
      s << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(cell)
        << "\" height=\"" << num(cell) << "\" fill=\"" << fill << "\" stroke=\"#999\"/>\n";
      if (text_in_cells)
        s << "<text x=\"" << num(x + cell / 2) << "\" y=\"" << num(y + cell / 2 + 4)
          << "\" text-anchor=\"middle\" font-size=\"11\" fill=\"" << (share > 0.6 ? "white" : "black")
          << "\">" << confusion[t][p] << "</text>\n";
    }
  }
  for (size_t p = 0; p < k; ++p) {
    const double x = left + cell * static_cast<double>(p) + cell / 2;
    s << "<text transform=\"translate(" << num(x + 4) << " " << num(top - 6)
      << ") rotate(-45)\" font-size=\"11\">" << escape(name(p)) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::string png(const uint8_t* chw, int channels, int height, int width) {
  if (channels != 1 && channels != 3)
    throw Error("image", std::to_string(channels) + " channels: only 1 or 3 can be written");
  if (height <= 0 || width <= 0) throw Error("image", "empty image");
  std::vector<uint8_t> hwc(static_cast<size_t>(channels) * height * width);
  const size_t plane = static_cast<size_t>(height) * width;
  for (size_t c = 0; c < static_cast<size_t>(channels); ++c)
    for (size_t i = 0; i < plane; ++i) hwc[i * channels + c] = chw[c * plane + i];
  std::string out;
  const int ok = stbi_write_png_to_func(
      [](void* ctx, void* data, int size) {
        static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
      },
      &out, width, height, channels, hwc.data(), width * channels);
  if (!ok) throw Error("image", "stb_image_write could not encode a PNG");
  return out;
}

std::string image_grid(const std::string& title, const std::vector<Thumb>& images, int columns) {
  if (columns < 1) throw Error("image grid", "columns must be >= 1");
  double side = 56;  // each image's longer side in the picture
  for (const auto& im : images) {
    if (im.height <= 0 || im.width <= 0 || (im.channels != 1 && im.channels != 3) ||
        im.pixels.size() != static_cast<size_t>(im.channels) * im.height * im.width)
      throw Error("image grid", "an image's pixels do not match its shape " +
                                    std::to_string(im.channels) + "x" + std::to_string(im.height) +
                                    "x" + std::to_string(im.width));
    side = std::max(side, static_cast<double>(std::max(im.height, im.width)));
  }
  side = std::min(side, 160.0);
  const double cw = std::max(side, 120.0) + 12, ch = side + 44;
  const size_t cols = std::min<size_t>(static_cast<size_t>(columns), std::max<size_t>(images.size(), 1));
  const size_t rows = (images.size() + cols - 1) / cols;
  const double w = cw * static_cast<double>(cols) + 12, h = 40 + ch * static_cast<double>(std::max<size_t>(rows, 1));
  std::ostringstream s;
  s << header(w, h, title);
  if (images.empty())
    s << "<text x=\"" << num(w / 2) << "\" y=\"70\" text-anchor=\"middle\" font-size=\"13\">none</text>\n";
  for (size_t i = 0; i < images.size(); ++i) {
    const Thumb& im = images[i];
    const double scale = side / std::max(im.height, im.width);
    const double iw = im.width * scale, ih = im.height * scale;
    const double x = 12 + cw * static_cast<double>(i % cols), y = 40 + ch * static_cast<double>(i / cols);
    const std::string data = proto::base64_encode(png(im.pixels.data(), im.channels, im.height, im.width));
    s << "<image x=\"" << num(x + (cw - 12 - iw) / 2) << "\" y=\"" << num(y) << "\" width=\"" << num(iw)
      << "\" height=\"" << num(ih) << "\" style=\"image-rendering:pixelated\" "
      << "href=\"data:image/png;base64," << data << "\" xlink:href=\"data:image/png;base64," << data
      << "\"/>\n";
    // Two lines of caption, split at the first "\n" of it.
    const std::string& c = im.caption;
    const size_t nl = c.find('\n');
    const std::string first = c.substr(0, nl), second = nl == std::string::npos ? "" : c.substr(nl + 1);
    s << "<text x=\"" << num(x + (cw - 12) / 2) << "\" y=\"" << num(y + side + 15)
      << "\" text-anchor=\"middle\" font-size=\"11\">" << escape(first, 40) << "</text>\n";
    if (!second.empty())
      s << "<text x=\"" << num(x + (cw - 12) / 2) << "\" y=\"" << num(y + side + 29)
        << "\" text-anchor=\"middle\" font-size=\"11\" fill=\"#d62728\">" << escape(second, 40)
        << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace minas::pipeline::charts
