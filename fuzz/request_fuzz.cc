// libFuzzer target: arbitrary request bodies through every REST body decoder. None may crash,
// throw or accept a body that breaks its documented bounds.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "daemon/request_decode.h"
#include "engine/fork.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace forkd;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)daemon::decode_snapshot_create(body);
  if (auto f = daemon::decode_fork(body); f && (f->n < 1 || f->n > engine::kMaxForkChildren)) {
    std::abort();
  }
  (void)daemon::decode_exec(body);
  (void)daemon::decode_eval(body);
  if (auto b = daemon::decode_branch(body);
      b && (b->mode != "full" && b->mode != "diff" && b->mode != "live")) {
    std::abort();
  }
  if (auto to = daemon::decode_compact(body); to && (to->empty() || to->size() > 64)) std::abort();
  (void)daemon::decode_workspace_create(body);
  (void)daemon::decode_workspace_suspend(body);
  return 0;
}
