#include "searchspace/text_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "searchspace/error.h"

namespace minas {

std::string read_text_file(const std::string& path, const std::string& what, size_t max_bytes) {
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }  // read-only: nothing to lose
  };
  std::unique_ptr<std::FILE, Closer> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error(path, "cannot open the " + what + ": " + std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    text.append(buf, n);
    if (text.size() > max_bytes)
      throw Error(path, "the " + what + " is larger than the " + std::to_string(max_bytes) +
                            " bytes this reader takes");
  }
  if (std::ferror(f.get()))
    throw Error(path, "cannot read the " + what + ": " + std::strerror(errno));
  return text;
}

std::string binary_in_line(std::string_view line) {
  for (size_t i = 0; i < line.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", c);
      return std::string("binary data (byte ") + hex + " at column " + std::to_string(i + 1) + ")";
    }
  }
  return {};
}

}  // namespace minas
