// minas::read_json, the reader of every JSON text from outside the process: what it accepts
// can be written back out (dump recurses: the depth limit must hold), and what it refuses is
// an Error with a short excerpt.
#include <nlohmann/json.hpp>

#include "bench/fuzz/fuzz_common.h"
#include "searchspace/json_read.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minas;
  const std::string_view text = fuzz::text_of(data, size);
  fuzz::refused_or_read(text, [&] {
    const nlohmann::json j = read_json(text, "fuzz.json");
    const std::string out = j.dump();
    // What it wrote it reads again, to the same value.
    if (read_json(out, "dumped") != j)
      fuzz::finding("a value that does not read back", out.c_str(), text);
  });
  (void)json_depth(text, 64);
  const std::string excerpt = printable_excerpt(text);
  if (excerpt.size() > 4 * kExcerptChars + 32)
    fuzz::finding("a long excerpt", excerpt.c_str(), text);
  return 0;
}
