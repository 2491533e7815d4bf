#pragma once
// Randomness from getrandom(2): seeds, epochs, unique names.
#include <cstddef>
#include <string>

namespace forkd {

// n bytes from getrandom(2).
std::string random_bytes(size_t n);

// Random lowercase hex of n bytes (2n characters).
std::string random_hex(size_t n_bytes);

}  // namespace forkd
