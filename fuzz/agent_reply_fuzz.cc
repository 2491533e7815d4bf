// libFuzzer target: arbitrary agent reply frames (what a hostile guest can send) through the
// frame decoder and every typed reply decoder. None may crash or throw, and what they accept
// must keep its documented bounds.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "engine/agent_replies.h"
#include "proto/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace forkd;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // As the host's reader sees them: frames (if any), then each JSON body as a reply; and the
  // raw bytes as a JSON body too, so the decoders see arbitrary JSON even without a header.
  proto::FrameDecoder dec;
  dec.feed(bytes);
  std::vector<std::string> bodies{std::string(bytes)};
  for (int i = 0; i < 64; ++i) {
    auto f = dec.next();
    if (!f) break;
    if (*f) bodies.push_back((*f)->json);
  }
  for (const auto& b : bodies) {
    engine::Json j = engine::Json::parse(b, nullptr, false);
    if (j.is_discarded()) continue;
    (void)engine::decode_exec_reply(j);
    (void)engine::decode_eval_reply(j);
    if (auto r = engine::decode_resumed_reply(j); r && r->reseed_error.size() > (64u << 10)) {
      std::abort();
    }
    (void)engine::decode_hello_reply(j);
    (void)engine::decode_stat_reply(j);
    if (auto l = engine::decode_list_reply(j); l && l->size() > engine::kMaxListEntries) {
      std::abort();
    }
    if (auto r = engine::decode_read_reply(j, size, size / 2); r && size > size / 2) std::abort();
  }
  return 0;
}
