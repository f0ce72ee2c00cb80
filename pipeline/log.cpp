#include "pipeline/log.h"

#include <cstdio>
#include <ctime>

namespace minas::pipeline {

std::string printable_text(const std::string& text, size_t max_line, bool keep_newlines) {
  std::string out;
  size_t column = 0;  // characters written on the current line
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\n' && keep_newlines) {
      out += '\n';
      column = 0;
      continue;
    }
    if (column >= max_line) {
      if (column == max_line) out += "...";
      ++column;
      continue;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
    ++column;
  }
  return out;
}

void log_line(const std::string& who, const std::string& line) {
  // Longer than any line minas writes; a line this long quotes something whole.
  constexpr size_t kMaxLogLine = 4000;
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&t));
  std::fprintf(stderr, "%s %s: %s\n", stamp, printable_text(who, 200, false).c_str(),
               printable_text(line, kMaxLogLine, false).c_str());
}

std::string default_experiment_name(const std::string& prefix) {
  char name[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(name, sizeof name, "-%Y%m%d-%H%M%S", std::localtime(&t));
  return prefix + name;
}

void Log::line(const std::string& who, const std::string& text) const {
  if (on_line)
    on_line(who, text);
  else
    log_line(who, text);
}

void Log::print(const std::string& text) const {
  if (on_text)
    on_text(text);
  else
    std::fputs(text.c_str(), stderr);
}

}  // namespace minas::pipeline
