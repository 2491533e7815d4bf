#pragma once
// Helpers for tests that drive a real `forkd serve` process.
#include <httplib.h>

#include <nlohmann/json.hpp>
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

// A loopback client of the daemon on port, with long timeouts (snapshot creation boots a VM) and
// the bearer token when one is given.
httplib::Client daemon_client(int port, const std::string& token);

// POSTs body as JSON.
httplib::Result post_json(httplib::Client& c, const std::string& path, const nlohmann::json& body);

// The response body as JSON (discarded when there is none or it is not JSON).
nlohmann::json body_json(const httplib::Result& r);

// Checks a 4xx/5xx answer: the status, and a body {"error": "<message>"} containing needle.
void expect_error(const httplib::Result& r, int status, const std::string& needle = "");

}  // namespace forkd::test
