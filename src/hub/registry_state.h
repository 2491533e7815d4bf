#pragma once
// Inside the registry client (registry_client.h), shared by its transport
// (registry_client.cc: connections, deadlines, redirects, authentication) and its operations
// (registry_ops.cc: blobs and manifests). Not for use elsewhere.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "hub/registry_client.h"

namespace forkd::hub {

inline constexpr size_t kMaxErrorBody = 64u << 10;

// One request, and how to take its answer.
struct Call {
  Call(std::string m, std::string t, std::string_view b = {}, size_t max = kMaxErrorBody)
      : method(std::move(m)), target(std::move(t)), body(b), max_body(max) {}

  std::string method;
  std::string target;  // "/path?query" on the endpoint it is sent to
  httplib::Headers headers;
  std::string_view body;  // sent with Content-Length; outlives the call
  size_t max_body;        // a buffered 2xx body larger than this fails the call
  // For a 2xx answer: true streams its body to on_data (no whole-request deadline from then on);
  // false buffers it. An error aborts the transfer and is returned as is, as are on_data's.
  std::function<Result<bool>(const httplib::Response&)> on_headers;
  std::function<Status(std::string_view)> on_data;
  uint64_t streamed = 0;  // bytes handed to on_data: no retry once there are any
};

struct Reply {
  int status = 0;
  httplib::Headers headers;
  std::string body;  // buffered answers only; error bodies cut at 64 KiB

  std::string header(const char* key) const {
    auto it = headers.find(key);
    return it == headers.end() ? std::string() : it->second;
  }
};

// At most 200 bytes of a registry's text, printable ASCII only.
std::string sanitize(std::string_view text);

struct RegistryClient::State {
  RegistryClientOptions opts;
  std::string context;  // "registry H repository R"
  std::string pull_scope, push_scope;
  TokenCache tokens;
  std::atomic<bool> use_basic{false};  // the registry asked for Basic credentials
  std::mutex mu;                       // guards idle
  std::vector<std::unique_ptr<httplib::Client>> idle;

  bool cancelled() const { return opts.cancel && opts.cancel->load(); }

  // "/v2/NAME/kind/rest"
  std::string path(std::string_view kind, const std::string& rest) const {
    return "/v2/" + opts.repository + "/" + std::string(kind) + "/" + rest;
  }

  Error fail(ErrorCode code, std::string_view op, const std::string& detail) const {
    return Error(code, context + ": " + std::string(op) + ": " + detail);
  }

  tl::unexpected<Error> bad_arg(std::string_view op, std::string_view why) const {
    return tl::unexpected(fail(ErrorCode::kInvalidArgument, op, std::string(why)));
  }

  Error http_error(std::string_view op, const Reply& r) const;

  std::unique_ptr<httplib::Client> make_client(const HttpEndpoint& ep) const;

  Result<Reply> send_once(const HttpEndpoint& ep, Call& call, std::string_view op);
  Result<Reply> send_authed(Call& call, const std::string& scope, std::string_view op);
  Status answer_challenge(const Reply& reply, const std::string& scope, std::string_view op,
                          bool sent_basic);
  Result<std::string> fetch_token(const AuthChallenge& ch, const std::string& scope,
                                  std::string_view op);
  Result<Reply> round_trip(const HttpEndpoint& ep, Call& call, std::string_view op,
                           const std::string* scope, bool idempotent);
  Result<Reply> get_following(Call& call, const std::string& scope, std::string_view op);
  Result<HttpUrl> resolve(const HttpEndpoint& base, const std::string& location,
                          std::string_view op) const;
};

}  // namespace forkd::hub
