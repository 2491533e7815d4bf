#pragma once
// The `resumed` request as the host sends it, read and answered without nlohmann's parser and
// serializer (see flat_json.h for why). Everything here is a strict subset of the general path:
// a request it does not take, it leaves to parse_request and parse_resumed, which then answer
// it (errors included); a reply it cannot write, it leaves to ok_reply and to_wire.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "identity.h"

namespace forkd::agent {

struct FlatResumed {
  uint64_t id = 0;
  ResumedSpec spec;
};

// The id and spec of a valid resumed request without a network (the flat object a host sends
// most children), exactly as parse_request and parse_resumed would give them; else nullopt.
std::optional<FlatResumed> parse_flat_resumed(std::string_view json, std::string_view seed);

// to_wire(ok_reply(id, resumed_result(outcome))), byte for byte, or nullopt when the outcome
// has a network step or a string that would need an escape.
std::optional<std::string> resumed_reply_text(uint64_t id, const ResumedOutcome& outcome);

}  // namespace forkd::agent
