// minas::proto::parse, which every message from a peer goes through first: a payload is a
// Message whose fields have the types the protocol table says, or a ProtocolError whose
// reply can be built and sent.
#include <nlohmann/json.hpp>

#include "bench/fuzz/fuzz_common.h"
#include "controller/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace minas;
  const std::string_view text = fuzz::text_of(data, size);
  try {
    const proto::Message m = proto::parse(text);
    (void)m.body.dump();  // what a log or the store would do with it
  } catch (const proto::ProtocolError& e) {
    if (std::strlen(e.what()) > fuzz::kMaxErrorBytes)
      fuzz::finding("an error longer than 1 KiB", e.what(), text);
    const std::string reply = proto::error_reply(e);  // the controller's answer
    fuzz::refused_or_read(text, [&] {
      try {
        (void)proto::parse(reply);  // which a worker must be able to read
      } catch (const Error& bad) {
        fuzz::finding("an error reply that does not parse", bad.what(), text);
      }
    });
  } catch (const std::exception& e) {
    fuzz::finding(fuzz::kind_of(e), e.what(), text);
  }
  return 0;
}
