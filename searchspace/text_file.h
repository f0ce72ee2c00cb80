#pragma once
// A small document read whole (a space, a recipe, an experiment file, a model
// description) with a bound on its size, so that a huge file, a FIFO or
// /dev/zero is refused after max_bytes + 1 bytes instead of filling memory.
#include <cstddef>
#include <string>
#include <string_view>

namespace minas {

// The file's bytes. Throws Error naming `path` when it cannot be opened
// ("cannot open the WHAT: reason") or read ("cannot read the WHAT: reason"),
// or holds more than max_bytes.
std::string read_text_file(const std::string& path, const std::string& what, size_t max_bytes);

// A line of a text table (a CSV) that holds bytes no text has: NUL and the
// other control characters but tab and carriage return. Empty if the line is
// text, else "binary data (byte 0xNN at column C)" for an error message.
std::string binary_in_line(std::string_view line);

}  // namespace minas
