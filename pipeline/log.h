#pragma once
// Where the pipelines' progress goes. A pipeline writes log lines of a named
// part ("search", "adapt", "controller", a worker's name) and text printed as
// it is (the validation report, the final training's epochs); the defaults
// write both on stderr as `minas` always has, and a caller (a test, another
// front end) can take them instead.
#include <cstddef>
#include <functional>
#include <string>

namespace minas::pipeline {

// "HH:MM:SS WHO: LINE" on stderr, one line whatever LINE holds (printable_text
// with newlines escaped: a peer's text cannot forge a log line).
void log_line(const std::string& who, const std::string& line);
// Text for a terminal or a log: control characters and bytes that are not
// printable ASCII written as \xNN (newlines kept, or written as \n), each
// line cut after `max_line` characters. Backslashes stay: places that quote
// a value have escaped it already, and this is the last guard behind them.
std::string printable_text(const std::string& text, size_t max_line, bool keep_newlines = true);
// PREFIX-YYYYMMDD-HHMMSS, local time.
std::string default_experiment_name(const std::string& prefix);

struct Log {
  // A log line of `who`; null: log_line.
  std::function<void(const std::string& who, const std::string& line)> on_line;
  // Text written as it is, newlines included; null: on stderr.
  std::function<void(const std::string& text)> on_text;

  void line(const std::string& who, const std::string& text) const;
  void print(const std::string& text) const;
};

}  // namespace minas::pipeline
