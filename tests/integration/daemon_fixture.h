#pragma once
// Helpers for tests that drive a real `forkd serve` process.
#include <optional>
#include <string>
#include <vector>

#include "base/subprocess.h"

namespace forkd::test {

// A loopback TCP port that was free a moment ago; 0 on failure.
int free_port();

// Starts `forkd serve --listen 127.0.0.1:port --token-file token_file extra...` and waits for
// /healthz to answer 200; nullopt (the process killed) when it never does. With tls_ca (extra
// then holds --tls-cert/--tls-key), /healthz is asked over https, trusting that PEM file.
std::optional<Child> start_daemon(int port, const std::string& token_file,
                                  std::vector<std::string> extra = {},
                                  const std::string& tls_ca = "");

}  // namespace forkd::test
