#pragma once
// The built-in spaces: searchspace/spaces/*.json, compiled into the binary at
// build time (cmake/embed_spaces.cmake) so that `--space NAME` works anywhere.
#include <span>
#include <string_view>

namespace minas::detail {

struct BuiltinSpace {
  const char* name;       // the file name without .json
  std::string_view text;  // the file's bytes
};

std::span<const BuiltinSpace> builtin_spaces();

}  // namespace minas::detail
