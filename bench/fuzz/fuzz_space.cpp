// minas::Space::parse, for a space file a user gives (minas space info, minas controller
// --space FILE): a document is a Space, or an Error. A Space it accepts can sample an
// architecture, name it by key, read the key back and lower it to a layer graph, as a search
// does with every trial.
#include "bench/fuzz/fuzz_common.h"
#include "searchspace/layer_graph.h"
#include "searchspace/rng.h"
#include "searchspace/space.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minas;
  const std::string_view text = fuzz::text_of(data, size);
  fuzz::refused_or_read(text, [&] {
    const Space space = Space::parse(text, "fuzz.json");
    Rng rng(size);
    const Arch arch = space.sample(rng);
    const std::string key = space.key(arch);
    try {
      if (!(space.parse_key(key) == arch))
        fuzz::finding("a key that reads back another architecture", key.c_str(), text);
    } catch (const Error& e) {
      fuzz::finding("a key that does not read back", e.what(), text);
    }
    (void)space.lower(arch);  // may refuse an architecture too small for the input: an Error
  });
  return 0;
}
