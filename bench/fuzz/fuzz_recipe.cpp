// minas::Recipe::parse, for a recipe file a user gives (--recipe FILE): a document is a
// Recipe, or an Error. A recipe it accepts, written out (to_json, as the controller sends it
// to workers), reads back to the same recipe.
#include <nlohmann/json.hpp>

#include "bench/fuzz/fuzz_common.h"
#include "trainer/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minas;
  const std::string_view text = fuzz::text_of(data, size);
  fuzz::refused_or_read(text, [&] {
    const Recipe r = Recipe::parse(text, "fuzz.json");
    const nlohmann::json out = r.to_json();
    try {
      if (Recipe::from_json(out, "written").to_json() != out)
        fuzz::finding("a recipe that reads back different", out.dump().c_str(), text);
    } catch (const Error& e) {
      fuzz::finding("a recipe written out that does not read back", e.what(), text);
    }
  });
  return 0;
}
