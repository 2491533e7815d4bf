#include "hub/registry_client.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <thread>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "hub/registry_state.h"

namespace forkd::hub {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kMaxTokenReply = 64u << 10;
constexpr size_t kUploadSlice = 1u << 20;
constexpr size_t kMaxIdleClients = 4;
constexpr int kMaxRedirects = 5;
// Request bodies are allowed this rate on top of the whole-request deadline.
constexpr uint64_t kMinUploadBytesPerSecond = 64u << 10;

// Calls stop() on a client whose request outlives a deadline, or whose client was cancelled
// (RegistryClient::cancel_flag). httplib's timeouts bound each read and write, so without this a
// registry that dribbles bytes (or endless headers) holds a request forever. Destroy it before
// the client is reused: its destructor joins.
class Watchdog {
 public:
  static constexpr milliseconds kCancelPoll{100};

  Watchdog(httplib::Client& cli, Clock::time_point deadline, const std::atomic<bool>* cancel)
      : thread_([this, &cli, deadline, cancel](std::stop_token stop) {
          std::unique_lock lock(mu_);
          while (!stop.stop_requested()) {
            auto now = Clock::now();
            if ((!deadline_off_ && now >= deadline) || (cancel && cancel->load())) {
              fired_ = true;
              cli.stop();
              return;
            }
            auto next = deadline_off_ ? now + std::chrono::hours(24) : deadline;
            if (cancel) next = std::min(next, now + kCancelPoll);
            cv_.wait_until(lock, stop, next, [] { return false; });
          }
        }) {}
  // The deadline no longer applies (a body being streamed); cancelling still does.
  void disarm() { deadline_off_ = true; }
  bool fired() const { return fired_; }

 private:
  std::atomic<bool> fired_{false};
  std::atomic<bool> deadline_off_{false};
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;  // last: it starts once the rest is built
};

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// httplib 0.11 percent-decodes every response header value, so a Location's query arrives
// decoded ("X-Amz-Security-Token=a+b/c=" for "a%2Bb%2Fc%3D") and a signed storage URL would no
// longer match its signature. Re-encoding each key and value strictly restores what signers
// (S3, GCS, the registry's own _state) produce.
std::string reencode_query(const std::string& target) {
  size_t q = target.find('?');
  if (q == std::string::npos) return target;
  std::string out = target.substr(0, q + 1);
  std::string_view query = std::string_view(target).substr(q + 1);
  for (size_t pos = 0; pos <= query.size();) {
    size_t amp = std::min(query.find('&', pos), query.size());
    std::string_view item = query.substr(pos, amp - pos);
    size_t eq = item.find('=');
    if (pos > 0) out += '&';
    out += percent_encode(item.substr(0, eq));
    if (eq != std::string_view::npos) out += "=" + percent_encode(item.substr(eq + 1));
    pos = amp + 1;
  }
  return out;
}

void set_timeout(milliseconds ms, const std::function<void(time_t, time_t)>& set) {
  set(static_cast<time_t>(ms.count() / 1000), static_cast<time_t>((ms.count() % 1000) * 1000));
}

}  // namespace

std::string sanitize(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 200)) {
    out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (text.size() > 200) out += "...";
  return out;
}

Error RegistryClient::State::http_error(std::string_view op, const Reply& r) const {
  ErrorCode code = ErrorCode::kIo;
  std::string what = "HTTP " + std::to_string(r.status);
  if (r.status == 401 || r.status == 403) {
    code = ErrorCode::kFailedPrecondition;
    what = "authentication failed (" + what +
           (opts.credentials ? ")"
                             : "; set FORKD_REGISTRY_USER and FORKD_REGISTRY_PASSWORD, or "
                               "FORKD_REGISTRY_AUTH_FILE)");
  } else if (r.status == 404) {
    code = ErrorCode::kNotFound;
  } else if (r.status == 429 || r.status >= 500) {
    code = ErrorCode::kUnavailable;
  }
  std::string body = sanitize(r.body);
  return fail(code, op, body.empty() ? what : what + ": " + body);
}

std::unique_ptr<httplib::Client> RegistryClient::State::make_client(const HttpEndpoint& ep) const {
  std::unique_ptr<httplib::Client> cli;
  try {
    cli = std::make_unique<httplib::Client>(ep.base_url());
  } catch (...) {
    return nullptr;
  }
  if (!cli->is_valid()) return nullptr;
  set_timeout(opts.connect_timeout,
              [&](time_t s, time_t us) { cli->set_connection_timeout(s, us); });
  set_timeout(opts.read_timeout, [&](time_t s, time_t us) { cli->set_read_timeout(s, us); });
  set_timeout(opts.read_timeout, [&](time_t s, time_t us) { cli->set_write_timeout(s, us); });
  cli->set_keep_alive(true);
  cli->set_follow_location(false);  // fetch_blob follows, dropping Authorization off-origin
  cli->set_url_encode(false);       // targets are built encoded (Locations: reencode_query)
  if (ep.scheme == "https") {
    if (!opts.ca_file.empty()) cli->set_ca_cert_path(opts.ca_file);
    cli->enable_server_certificate_verification(true);
  }
  return cli;
}

Result<Reply> RegistryClient::State::send_once(const HttpEndpoint& ep, Call& call,
                                               std::string_view op) {
  if (cancelled()) return tl::unexpected(fail(ErrorCode::kCancelled, op, "cancelled"));
  const bool pooled = ep.same_origin(opts.endpoint);
  std::unique_ptr<httplib::Client> cli;
  if (pooled) {
    std::lock_guard lock(mu);
    if (!idle.empty()) {
      cli = std::move(idle.back());
      idle.pop_back();
    }
  }
  if (!cli) cli = make_client(ep);
  if (!cli) {
    return tl::unexpected(fail(ErrorCode::kInvalidArgument, op, "bad address " + ep.base_url()));
  }
  const auto start = Clock::now();
  auto last_progress = start;  // tells a read timeout from a connection lost later
  httplib::Request req;
  req.method = call.method;
  req.path = call.target;
  req.headers = call.headers;
  req.headers.erase("Host");
  req.headers.emplace("Host", ep.host_header());
  req.headers.emplace("User-Agent", "forkd-registry-client");
  if (!call.body.empty()) {
    std::string_view body = call.body;
    req.content_length_ = body.size();  // httplib 0.11's way to stream a request body
    req.content_provider_ = [body, &last_progress](size_t off, size_t len,
                                                   httplib::DataSink& sink) {
      last_progress = Clock::now();
      sink.write(body.data() + off, std::min({len, body.size() - off, kUploadSlice}));
      return true;  // a failed write ends the request as Error::Write
    };
  }
  Reply reply;
  bool streaming = false, cut_error_body = false, too_large = false;
  std::optional<Error> aborted;
  std::optional<Watchdog> watchdog;
  req.response_handler = [&](const httplib::Response& res) {
    last_progress = Clock::now();
    reply.status = res.status;
    reply.headers = res.headers;
    if (res.status / 100 != 2) return true;
    if (call.on_headers) {
      auto s = call.on_headers(res);
      if (!s) {
        aborted = s.error();
        return false;
      }
      streaming = *s;
      if (streaming && watchdog) watchdog->disarm();
    }
    if (!streaming && res.get_header_value<uint64_t>("Content-Length") > call.max_body) {
      too_large = true;
      return false;
    }
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    last_progress = Clock::now();
    if (streaming) {
      auto s = call.on_data(std::string_view(data, n));
      if (!s) aborted = s.error();
      call.streamed += n;
      return s.has_value();
    }
    const bool ok = reply.status / 100 == 2;
    const size_t cap = ok ? call.max_body : kMaxErrorBody;
    if (reply.body.size() + n > cap) {
      (ok ? too_large : cut_error_body) = true;
      if (!ok) reply.body.append(data, cap - reply.body.size());
      return false;
    }
    reply.body.append(data, n);
    return true;
  };

  const auto deadline = start + opts.connect_timeout + opts.read_timeout +
                        std::chrono::seconds(call.body.size() / kMinUploadBytesPerSecond);
  std::optional<httplib::Result> res;
  std::string exception;
  try {
    watchdog.emplace(*cli, deadline, opts.cancel.get());
    res.emplace(cli->send(req));
  } catch (const std::exception& e) {
    exception = e.what();
  } catch (...) {
    exception = "unknown exception";
  }
  const bool fired = watchdog && watchdog->fired();
  watchdog.reset();  // joined: nothing touches cli any more
  const auto now = Clock::now();
  if (cancelled()) return tl::unexpected(fail(ErrorCode::kCancelled, op, "cancelled"));

  if (res && *res) {
    reply.status = (*res)->status;
    reply.headers = (*res)->headers;
    std::lock_guard lock(mu);
    if (pooled && !fired && idle.size() < kMaxIdleClients) idle.push_back(std::move(cli));
    return reply;
  }
  if (aborted) return tl::unexpected(*aborted);
  if (too_large) {
    return tl::unexpected(fail(ErrorCode::kIo, op,
                               "HTTP " + std::to_string(reply.status) + " answer larger than " +
                                   std::to_string(call.max_body) + " bytes; refused"));
  }
  if (cut_error_body) return reply;
  if (!exception.empty()) {
    return tl::unexpected(fail(ErrorCode::kIo, op, "HTTP client failed: " + sanitize(exception)));
  }
  auto err = res ? res->error() : httplib::Error::Unknown;
  const bool read_or_write = err == httplib::Error::Read || err == httplib::Error::Write;
  if (fired || err == httplib::Error::ConnectionTimeout ||
      (read_or_write && now - last_progress >= opts.read_timeout * 9 / 10)) {
    const auto ms = std::chrono::duration_cast<milliseconds>(now - start).count();
    return tl::unexpected(fail(ErrorCode::kTimeout, op,
                               "no answer from " + ep.base_url() + " in time (gave up after " +
                                   std::to_string(ms) + " ms)"));
  }
  std::string why = httplib::to_string(err);
  if (read_or_write || err == httplib::Error::Connection) {
    return tl::unexpected(fail(ErrorCode::kUnavailable, op, ep.base_url() + ": " + why));
  }
  if (err == httplib::Error::SSLServerVerification) {
    why += " (the certificate is not trusted: pass the registry's CA file)";
  }
  return tl::unexpected(fail(ErrorCode::kIo, op, ep.base_url() + ": " + why));
}

Result<Reply> RegistryClient::State::round_trip(const HttpEndpoint& ep, Call& call,
                                                std::string_view op, const std::string* scope,
                                                bool idempotent) {
  for (size_t attempt = 0;; ++attempt) {
    auto r = scope ? send_authed(call, *scope, op) : send_once(ep, call, op);
    bool retriable =
        r ? (r->status == 429 || r->status >= 500) : r.error().code() == ErrorCode::kUnavailable;
    if (!retriable || !idempotent || call.streamed > 0 || attempt >= opts.retry_backoff.size()) {
      return r;
    }
    logger("hub")->debug("registry retry op=\"{}\" attempt={} status={}", op, attempt + 1,
                         r ? r->status : 0);
    std::this_thread::sleep_for(opts.retry_backoff[attempt]);
  }
}

Result<Reply> RegistryClient::State::send_authed(Call& call, const std::string& scope,
                                                 std::string_view op) {
  bool sent_basic = false;
  auto apply = [&] {
    call.headers.erase("Authorization");
    sent_basic = false;
    if (auto token = tokens.get(scope)) {
      call.headers.emplace("Authorization", "Bearer " + *token);
    } else if (use_basic && opts.credentials) {
      call.headers.emplace("Authorization", basic_authorization(*opts.credentials));
      sent_basic = true;
    }
  };
  apply();
  auto r = send_once(opts.endpoint, call, op);
  if (!r || r->status != 401) return r;
  FORKD_TRY(answer_challenge(*r, scope, op, sent_basic));
  apply();
  return send_once(opts.endpoint, call, op);
}

Status RegistryClient::State::answer_challenge(const Reply& reply, const std::string& scope,
                                               std::string_view op, bool sent_basic) {
  std::optional<AuthChallenge> challenge;
  std::optional<Error> first_error;
  auto [it, end] = reply.headers.equal_range("WWW-Authenticate");
  for (int n = 0; it != end && n < 8 && !challenge; ++it, ++n) {
    auto parsed = parse_www_authenticate(it->second);
    if (parsed) {
      challenge = *parsed;
    } else if (!first_error) {
      first_error = parsed.error();
    }
  }
  if (!challenge) {
    if (first_error) return tl::unexpected(first_error->wrap(context + ": " + std::string(op)));
    return tl::unexpected(http_error(op, reply));
  }
  if (challenge->scheme == AuthChallenge::Scheme::kBasic) {
    if (!opts.credentials || sent_basic) return tl::unexpected(http_error(op, reply));
    use_basic = true;
    return {};
  }
  auto token = fetch_token(*challenge, scope, op);
  if (!token) return tl::unexpected(token.error());
  tokens.put(scope, std::move(*token));
  return {};
}

Result<std::string> RegistryClient::State::fetch_token(const AuthChallenge& ch,
                                                       const std::string& scope,
                                                       std::string_view op) {
  auto url = token_request_url(ch, scope, opts.endpoint.scheme == "https");
  if (!url) return tl::unexpected(url.error().wrap(context + ": " + std::string(op)));
  Call call("GET", url->target, {}, kMaxTokenReply);
  if (opts.credentials) {
    call.headers.emplace("Authorization", basic_authorization(*opts.credentials));
  }
  const std::string token_op = std::string(op) + ": token from " + sanitize(ch.realm);
  auto r = round_trip(url->endpoint, call, token_op, nullptr, true);
  if (!r) return tl::unexpected(r.error());
  if (r->status / 100 != 2) return tl::unexpected(http_error(token_op, *r));
  auto token = parse_token_reply(r->body);
  if (!token) return tl::unexpected(token.error().wrap(context + ": " + token_op));
  return token;
}

Result<HttpUrl> RegistryClient::State::resolve(const HttpEndpoint& base,
                                               const std::string& location,
                                               std::string_view op) const {
  if (location.empty()) return tl::unexpected(fail(ErrorCode::kIo, op, "no Location in answer"));
  auto url = location.front() == '/' ? parse_http_url(base.base_url() + location)
                                     : parse_http_url(location);
  if (!url) return tl::unexpected(fail(ErrorCode::kIo, op, "Location: " + url.error().message()));
  url->target = reencode_query(url->target);
  if (base.scheme == "https" && url->endpoint.scheme == "http" &&
      !is_loopback_host(url->endpoint.host)) {
    return tl::unexpected(
        fail(ErrorCode::kIo, op, "refusing a redirect from https to " + sanitize(location)));
  }
  return url;
}

Result<Reply> RegistryClient::State::get_following(Call& call, const std::string& scope,
                                                   std::string_view op) {
  auto r = round_trip(opts.endpoint, call, op, &scope, true);
  HttpEndpoint at = opts.endpoint;
  for (int hop = 0; r && is_redirect(r->status); ++hop) {
    if (hop == kMaxRedirects) return tl::unexpected(fail(ErrorCode::kIo, op, "too many redirects"));
    auto next = resolve(at, r->header("Location"), op);
    if (!next) return tl::unexpected(next.error());
    // Storage (S3 and the like) signs its URLs; our token must not travel there.
    if (!next->endpoint.same_origin(opts.endpoint)) call.headers.erase("Authorization");
    at = next->endpoint;
    call.target = next->target;
    r = round_trip(at, call, op, nullptr, true);
  }
  return r;
}

RegistryClient::RegistryClient(std::unique_ptr<State> state) : state_(std::move(state)) {}
RegistryClient::RegistryClient(RegistryClient&&) noexcept = default;
RegistryClient& RegistryClient::operator=(RegistryClient&&) noexcept = default;
RegistryClient::~RegistryClient() = default;

const RegistryClientOptions& RegistryClient::options() const { return state_->opts; }

Result<RegistryClient> RegistryClient::create(RegistryClientOptions options) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "registry client: " + why);
  };
  const HttpEndpoint& ep = options.endpoint;
  if (ep.scheme != "http" && ep.scheme != "https") return bad("scheme must be http or https");
  if (auto url = parse_http_url(ep.base_url()); !url || ep.host.empty()) {
    return bad("bad registry host \"" + sanitize(ep.host) + "\"");
  }
  if (!is_valid_repository(options.repository)) {
    return bad("bad repository name \"" + sanitize(options.repository) + "\"");
  }
  if (!options.ca_file.empty() && ::access(options.ca_file.c_str(), R_OK) != 0) {
    return errno_error(errno, "registry CA file " + options.ca_file);
  }
  if (options.connect_timeout.count() <= 0 || options.read_timeout.count() <= 0) {
    return bad("timeouts must be positive");
  }
  auto state = std::make_unique<State>();
  state->context = "registry " + ep.host_header() + " repository " + options.repository;
  state->pull_scope = "repository:" + options.repository + ":pull";
  state->push_scope = "repository:" + options.repository + ":pull,push";
  state->opts = std::move(options);
  return RegistryClient(std::move(state));
}

}  // namespace forkd::hub
