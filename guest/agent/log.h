#pragma once
// Minimal logging to stderr (the serial console in the guest). One line per call, prefixed with
// "forkd-agent: ". Never pass command output or file contents here.
#include <string_view>

namespace forkd::agent {

void log_line(std::string_view msg);

// Like log_line, but at most a handful of lines per second across all callers; for paths a
// host can trigger at will (malformed frames).
void log_limited(std::string_view msg);

}  // namespace forkd::agent
