#pragma once
// Bearer-token auth for the daemon: loading and vetting the token, and checking a request's
// Authorization header in constant time.
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::daemon {

inline constexpr size_t kMinTokenLength = 32;

// Reads the token file (surrounding whitespace trimmed) and refuses weak or placeholder tokens:
// shorter than kMinTokenLength, one repeated character, or a well-known placeholder.
Result<std::string> load_token(const std::string& path);

// kInvalidArgument naming why the token is weak; success when it is acceptable.
Status check_token_strength(std::string_view token);

// True when header is exactly "Bearer <token>". Constant time in the header's content: both
// sides are hashed and the digests compared with CRYPTO_memcmp.
bool bearer_matches(std::string_view header, std::string_view token);

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host);

}  // namespace forkd::daemon
