// The report's pictures (pipeline/charts.h): well-formed SVG whatever the
// text in them, the marks and series drawn, PNG images that decode to the
// pixels given.
#include <doctest/doctest.h>

#include <stb/stb_image.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "controller/protocol.h"
#include "pipeline/charts.h"
#include "searchspace/error.h"
#include "tests/xml_check.h"

namespace ch = minas::pipeline::charts;
using minas::test::check_xml;

namespace {

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Decodes a PNG to channels x height x width bytes.
std::vector<uint8_t> decode_png(const std::string& bytes, int want_channels, int& h, int& w) {
  int comp = 0;
  unsigned char* px = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(bytes.data()),
                                            static_cast<int>(bytes.size()), &w, &h, &comp,
                                            want_channels);
  REQUIRE(px != nullptr);
  std::vector<uint8_t> chw(static_cast<size_t>(want_channels) * h * w);
  const size_t plane = static_cast<size_t>(h) * w;
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < want_channels; ++c) chw[c * plane + i] = px[i * want_channels + c];
  stbi_image_free(px);
  return chw;
}

}  // namespace

TEST_CASE("xml check: the checker itself refuses what a parser refuses") {
  CHECK(check_xml("<svg><g></g></svg>").error.empty());
  CHECK(check_xml("<?xml version=\"1.0\"?>\n<svg a=\"1\" b='2'>x &amp; y</svg>\n").error.empty());
  CHECK_FALSE(check_xml("<svg><g></svg>").error.empty());
  CHECK_FALSE(check_xml("<svg>a & b</svg>").error.empty());
  CHECK_FALSE(check_xml("<svg a=1></svg>").error.empty());
  CHECK_FALSE(check_xml("<svg a=\"1\" a=\"2\"></svg>").error.empty());
  CHECK_FALSE(check_xml("<svg a=\"<\"></svg>").error.empty());
  CHECK_FALSE(check_xml("<svg></svg><svg></svg>").error.empty());
  CHECK_FALSE(check_xml("<svg>\xff</svg>").error.empty());
  CHECK_FALSE(check_xml("<svg>").error.empty());
}

TEST_CASE("charts: a plot draws its series and marks, and any text stays well formed") {
  const std::string hostile = "</text><script>alert('&')</script> \"x\" \x01 \xc3";  // + bad UTF-8
  ch::Series step{"best " + hostile, {{0, 90}, {30, 91.5}, {95, 92.25}}, ch::Style::step};
  ch::Series dots{"", {{10, 85}, {20, 88}, {40, std::numeric_limits<double>::quiet_NaN()}},
                  ch::Style::dots, "#777"};
  const std::string svg = ch::plot({hostile, "seconds", "accuracy (%)"}, {step, dots},
                                   {{{95, 92.25}, "chosen " + hostile}});
  const auto x = check_xml(svg);
  INFO(svg);
  REQUIRE_MESSAGE(x.error.empty(), x.error);
  CHECK(x.root == "svg");
  CHECK(svg.find("<script") == std::string::npos);
  CHECK(x.elements.at("polyline") == 1);
  // Two finite dots and the mark's ring: the NaN point is left out.
  CHECK(x.elements.at("circle") == 3);
  // A step curve turns at each new value: 3 points and 2 corners.
  const size_t pts = svg.find("points=\"");
  REQUIRE(pts != std::string::npos);
  CHECK(count(svg.substr(pts, svg.find('"', pts + 8) - pts), ",") == 5);

  // Nothing drawable: a frame that says so, still well formed.
  const std::string none = ch::plot({"t", "x", "y", true}, {{"", {{0, 1}, {-5, 2}}}});
  CHECK(check_xml(none).error.empty());
  CHECK(none.find("no data to plot") != std::string::npos);
  // On a log axis: ticks at powers of ten over the data.
  const std::string logx = ch::plot({"t", "params", "y", true}, {{"", {{2e3, 1}, {3e5, 2}}}});
  CHECK(check_xml(logx).error.empty());
  for (const char* tick : {">1000<", ">10k<", ">100k<", ">1M<"})
    CHECK_MESSAGE(logx.find(tick) != std::string::npos, tick);
}

TEST_CASE("charts: the confusion matrix has a cell per pair, and a ragged one is refused") {
  const std::vector<std::vector<int64_t>> m = {{50, 2, 0}, {3, 40, 7}, {0, 0, 0}};
  const std::string svg = ch::confusion_matrix({"t-shirt", "<bag>"}, m);
  const auto x = check_xml(svg);
  REQUIRE_MESSAGE(x.error.empty(), x.error);
  CHECK(x.elements.at("rect") == 1 + 9);  // the background and the cells
  CHECK(svg.find("&lt;bag&gt;") != std::string::npos);
  CHECK(svg.find(">2<") != std::string::npos);  // past the names given, classes are numbered
  CHECK(svg.find(">40<") != std::string::npos);
  CHECK_THROWS_AS(ch::confusion_matrix({}, {{1, 2}, {3}}), minas::Error);
}

TEST_CASE("charts: PNG images and the image grid decode to the pixels given") {
  // 2 x 3 gray and 3 x 2 x 2 colour images, channels-first as data sets hold them.
  const std::vector<uint8_t> gray = {0, 50, 100, 150, 200, 255};
  int h = 0, w = 0;
  CHECK(decode_png(ch::png(gray.data(), 1, 2, 3), 1, h, w) == gray);
  CHECK((h == 2 && w == 3));
  std::vector<uint8_t> rgb(12);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(20 * i);
  CHECK(decode_png(ch::png(rgb.data(), 3, 2, 2), 3, h, w) == rgb);
  CHECK_THROWS_AS(ch::png(rgb.data(), 2, 2, 2), minas::Error);

  const std::string svg = ch::image_grid(
      "wrong", {{gray, 1, 2, 3, "true: bag\npredicted: <coat>"}, {rgb, 3, 2, 2, "x"}}, 6);
  const auto x = check_xml(svg);
  REQUIRE_MESSAGE(x.error.empty(), x.error);
  CHECK(x.elements.at("image") == 2);
  CHECK(svg.find("predicted: &lt;coat&gt;") != std::string::npos);
  const std::string tag = "href=\"data:image/png;base64,";
  const size_t at = svg.find(tag) + tag.size();
  const auto png = minas::proto::base64_decode(svg.substr(at, svg.find('"', at) - at));
  REQUIRE(png.has_value());
  CHECK(decode_png(*png, 1, h, w) == gray);
  CHECK(check_xml(ch::image_grid("none", {}, 4)).error.empty());
  CHECK_THROWS_AS(ch::image_grid("bad", {{gray, 1, 3, 3, ""}}, 2), minas::Error);
}
