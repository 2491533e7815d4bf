#include "hub/registry_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "base/files.h"
#include "base/unique_fd.h"

namespace forkd::hub {
namespace {

using namespace std::chrono_literals;

constexpr char kUser[] = "alice";
constexpr char kPass[] = "secret";
constexpr char kToken[] = "good-token";

std::string digest_of(std::string_view data) { return "sha256:" + sha256_hex(data); }

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7919) >> 3);
  return s;
}

template <typename T>
::testing::AssertionResult Is(const Result<T>& r, const T& want) {
  if (!r) return ::testing::AssertionFailure() << r.error().describe();
  if (!(*r == want)) return ::testing::AssertionFailure() << "unexpected value";
  return ::testing::AssertionSuccess();
}

bool has(const Error& e, std::string_view text) {
  return e.message().find(text) != std::string::npos;
}

// A tiny OCI registry on 127.0.0.1. A repository's first component picks the authentication
// ("basic", "bearer", anything else: none), its second the behaviour: "app" is well behaved;
// "slow", "drip", "big", "lying", "trunc", "cut", "norange", "garbage", "flaky", "redirect" and
// "abs" misbehave as their names say. Blob storage for redirects is a second server.
class FakeRegistry {
 public:
  FakeRegistry() {
    routes();
    storage_.Get(R"(/blob/(sha256:[0-9a-f]{64}))", [this](const auto& req, auto& res) {
      std::lock_guard lock(mu_);
      if (req.has_header("Authorization")) {
        res.status = 400;  // S3 refuses a second authentication mechanism
        return;
      }
      storage_targets_.push_back(req.target);
      res.set_content(blobs_[req.matches[1].str()], "application/octet-stream");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    storage_port_ = storage_.bind_to_any_port("127.0.0.1");
    threads_.emplace_back([this] { svr_.listen_after_bind(); });
    threads_.emplace_back([this] { storage_.listen_after_bind(); });
    for (int i = 0; i < 500 && !(svr_.is_running() && storage_.is_running()); ++i) {
      std::this_thread::sleep_for(10ms);
    }
  }
  ~FakeRegistry() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    svr_.stop();
    storage_.stop();
    for (auto& t : threads_) t.join();
  }

  HttpEndpoint endpoint() const { return {"http", "127.0.0.1", static_cast<uint16_t>(port_)}; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  void put_blob(const std::string& data) {
    std::lock_guard lock(mu_);
    blobs_[digest_of(data)] = data;
  }
  template <typename T>
  T get(T FakeRegistry::*member) {
    std::lock_guard lock(mu_);
    return this->*member;
  }

  int token_requests_ = 0;
  int flaky_hits_ = 0;
  int deletes_ = 0;
  std::vector<std::string> token_scopes_;
  std::vector<std::string> storage_targets_;

 private:
  static std::pair<std::string, std::string> split(const std::string& repo) {
    size_t slash = repo.find('/');
    return {repo.substr(0, slash), slash == std::string::npos ? "" : repo.substr(slash + 1)};
  }

  // Waits (at most 5 s) for the test to finish: the server side of a slow registry.
  void stall() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 5s, [&] { return released_; });
  }

  // False (with the answer written) when the request must not go on.
  bool admit(const httplib::Request& req, httplib::Response& res, const std::string& repo) {
    auto [auth, mode] = split(repo);
    if (mode == "slow") stall();
    if (mode == "flaky") {
      std::lock_guard lock(mu_);
      if (++flaky_hits_ <= 2) {
        res.status = 503;
        return false;
      }
    }
    std::string have = req.get_header_value("Authorization");
    if (auth == "basic" && have != basic_authorization({kUser, kPass})) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Basic realm=\"fake registry\"");
      res.set_content(R"({"errors":[{"code":"UNAUTHORIZED","message":"who are you?"}]})",
                      "application/json");
      return false;
    }
    if (auth == "bearer" && have != std::string("Bearer ") + kToken) {
      res.status = 401;
      res.set_header("WWW-Authenticate",
                     "Bearer realm=\"http://" + address() +
                         "/token\",service=\"fake,registry\",scope=\"repository:" + repo +
                         ":pull\"");
      return false;
    }
    return true;
  }

  void routes() {
    svr_.Get("/token", [this](const auto& req, auto& res) {
      std::lock_guard lock(mu_);
      ++token_requests_;
      for (size_t i = 0; i < req.get_param_value_count("scope"); ++i) {
        token_scopes_.push_back(req.get_param_value("scope", i));
      }
      bool ok = req.get_header_value("Authorization") == basic_authorization({kUser, kPass}) &&
                req.get_param_value("service") == "fake,registry";
      if (!ok) {
        res.status = 401;
        res.set_content(R"({"details":"incorrect username or password"})", "application/json");
        return;
      }
      res.set_content(std::string(R"({"token":")") + kToken + R"(","expires_in":300})",
                      "application/json");
    });
    svr_.Post(R"(/v2/(.+)/blobs/uploads/)", [this](const auto& req, auto& res) {
      std::string repo = req.matches[1];
      if (!admit(req, res, repo)) return;
      std::lock_guard lock(mu_);
      if (req.has_param("mount")) {
        if (blobs_.count(req.get_param_value("mount")) && req.has_param("from")) {
          res.status = 201;
          return;
        }
      }
      std::string id = std::to_string(++next_upload_);
      std::string location = "/v2/" + repo + "/blobs/uploads/" + id + "?_state=s" + id;
      if (split(repo).second == "abs") location = "http://" + address() + location;
      res.status = 202;
      res.set_header("Location", location);
    });
    svr_.Put(R"(/v2/(.+)/blobs/uploads/([0-9]+))", [this](const auto& req, auto& res) {
      if (!admit(req, res, req.matches[1])) return;
      std::lock_guard lock(mu_);
      std::string digest = req.get_param_value("digest");
      if (req.get_param_value("_state") != "s" + req.matches[2].str() ||
          digest != digest_of(req.body) ||
          req.get_header_value("Content-Type") != "application/octet-stream") {
        res.status = 400;
        res.set_content(R"({"errors":[{"code":"DIGEST_INVALID"}]})", "application/json");
        return;
      }
      blobs_[digest] = req.body;
      res.status = 201;
    });
    svr_.Delete(R"(/v2/(.+)/blobs/uploads/([0-9]+))", [this](const auto&, auto& res) {
      std::lock_guard lock(mu_);
      ++deletes_;
      res.status = 204;
    });
    svr_.Get(R"(/v2/(.+)/blobs/(sha256:[0-9a-f]{64}))", [this](const auto& req, auto& res) {
      std::string repo = req.matches[1];
      if (!admit(req, res, repo)) return;
      std::string mode = split(repo).second;
      std::unique_lock lock(mu_);
      auto it = blobs_.find(req.matches[2]);
      if (it == blobs_.end()) {
        res.status = 404;
        res.set_content(R"({"errors":[{"code":"BLOB_UNKNOWN"}]})", "application/json");
        return;
      }
      std::string data = it->second;
      lock.unlock();
      if (mode == "redirect") {
        res.status = 307;
        res.set_header("Location", "http://127.0.0.1:" + std::to_string(storage_port_) + "/blob/" +
                                       req.matches[2].str() + "?sig=a%2Bb%2Fc&x=1");
      } else if (mode == "trunc") {
        res.set_content(data.substr(0, data.size() / 2), "application/octet-stream");
      } else if (mode == "cut") {
        res.set_content_provider(data.size(), "application/octet-stream",
                                 [data](size_t off, size_t len, httplib::DataSink& sink) {
                                   size_t half = data.size() / 2;
                                   if (off >= half) return false;  // drops the connection
                                   sink.write(data.data() + off, std::min(len, half - off));
                                   return true;
                                 });
      } else if (mode == "norange") {
        // A chunked body: httplib's server would otherwise apply the Range itself.
        res.status = 200;
        res.set_chunked_content_provider("application/octet-stream",
                                         [data](size_t, httplib::DataSink& sink) {
                                           sink.write(data.data(), data.size());
                                           sink.done();
                                           return true;
                                         });
      } else {
        res.set_content(data, "application/octet-stream");
      }
    });
    svr_.Put(R"(/v2/(.+)/manifests/([^/]+))", [this](const auto& req, auto& res) {
      if (!admit(req, res, req.matches[1])) return;
      std::lock_guard lock(mu_);
      std::string digest = digest_of(req.body);
      auto value = std::make_pair(req.get_header_value("Content-Type"), req.body);
      manifests_[req.matches[1].str() + "@" + req.matches[2].str()] = value;
      manifests_[req.matches[1].str() + "@" + digest] = value;
      res.status = 201;
      res.set_header("Docker-Content-Digest", digest);
    });
    svr_.Get(R"(/v2/(.+)/manifests/([^/]+))", [this](const auto& req, auto& res) {
      std::string repo = req.matches[1], ref = req.matches[2];
      if (!admit(req, res, repo)) return;
      std::string mode = split(repo).second;
      if (mode == "big") {
        res.set_content(std::string(5u << 20, ' '), "application/vnd.oci.image.manifest.v1+json");
      } else if (mode == "lying") {
        res.set_content(R"({"schemaVersion":2})", "application/vnd.oci.image.manifest.v1+json");
      } else if (mode == "garbage") {
        std::string junk =
            std::string("\x01\x02<html>\n\tInternal\xff junk ") + std::string(100000, 'x');
        if (ref == "junk") {
          res.set_content(std::string("\x00\x01garbage{", 11),
                          "application/vnd.oci.image.manifest.v1+json");
        } else {
          res.status = 500;
          res.set_content(junk, "text/html");
        }
      } else if (mode == "drip") {
        res.set_chunked_content_provider("application/json",
                                         [this](size_t off, httplib::DataSink& sink) {
                                           std::unique_lock lock(mu_);
                                           if (released_ || off > 100) return false;
                                           cv_.wait_for(lock, 50ms);
                                           sink.write(" ", 1);
                                           return true;
                                         });
      } else {
        std::lock_guard lock(mu_);
        auto it = manifests_.find(repo + "@" + ref);
        if (it == manifests_.end()) {
          res.status = 404;
          return;
        }
        res.set_content(it->second.second, it->second.first + "; charset=utf-8");
      }
    });
  }

  httplib::Server svr_, storage_;
  int port_ = 0, storage_port_ = 0;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  int next_upload_ = 0;
  std::map<std::string, std::string> blobs_;
  std::map<std::string, std::pair<std::string, std::string>> manifests_;
};

class RegistryClientTest : public ::testing::Test {
 protected:
  RegistryClient client(const std::string& repo, std::optional<Credentials> creds = {},
                        std::chrono::milliseconds read_timeout = 5s) {
    RegistryClientOptions o;
    o.endpoint = registry_.endpoint();
    o.repository = repo;
    o.credentials = std::move(creds);
    o.connect_timeout = 300ms;
    o.read_timeout = read_timeout;
    o.retry_backoff = {10ms, 10ms, 10ms};
    auto c = RegistryClient::create(std::move(o));
    EXPECT_TRUE(c) << c.error().describe();
    return std::move(*c);
  }

  // The whole blob from offset, and how many pieces it came in.
  static Result<std::pair<std::string, int>> fetch(RegistryClient& c, const std::string& data,
                                                   uint64_t offset = 0) {
    std::string got;
    int pieces = 0;
    auto st = c.fetch_blob(digest_of(data), data.size(), offset, [&](std::string_view p) {
      got.append(p);
      ++pieces;
      return Status();
    });
    if (!st) return tl::unexpected(st.error());
    return std::make_pair(got, pieces);
  }

  FakeRegistry registry_;
};

TEST_F(RegistryClientTest, PushExistsFetchRoundTrip) {
  auto c = client("open/app");
  std::string data = pattern(300 << 10);
  std::string digest = digest_of(data);
  ASSERT_TRUE(Is(c.blob_exists(digest), false));
  auto pushed = c.push_blob(digest, data);
  ASSERT_TRUE(pushed) << pushed.error().describe();
  ASSERT_TRUE(Is(c.blob_exists(digest), true));
  auto got = fetch(c, data);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->first, data);
  EXPECT_GT(got->second, 1);                                             // streamed in pieces
  EXPECT_TRUE(c.fetch_blob(digest, data.size(), data.size(), nullptr));  // nothing left
  EXPECT_EQ(c.fetch_blob(digest, 1, 2, nullptr).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(c.blob_exists("sha256:xyz").error().code(), ErrorCode::kInvalidArgument);
  auto missing = fetch(c, "not there");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(has(missing.error(), "registry " + registry_.address() + " repository open/app"));
  EXPECT_TRUE(has(missing.error(), "fetch blob")) << missing.error().message();
  EXPECT_TRUE(has(missing.error(), "HTTP 404: {\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}"));
}

TEST_F(RegistryClientTest, AbsoluteUploadLocationAndBadDigest) {
  auto c = client("open/abs");
  std::string data = pattern(1000);
  ASSERT_TRUE(c.push_blob(digest_of(data), data));
  auto wrong = c.push_blob(digest_of("other"), data);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kIo);
  EXPECT_TRUE(has(wrong.error(), "HTTP 400")) << wrong.error().message();
  EXPECT_TRUE(has(wrong.error(), "DIGEST_INVALID"));
}

TEST_F(RegistryClientTest, RangeFetchFromOffset) {
  std::string data = pattern(200 << 10);
  registry_.put_blob(data);
  for (const char* repo : {"open/app", "open/norange"}) {
    auto c = client(repo);
    auto got = fetch(c, data, 12345);
    ASSERT_TRUE(got) << repo << ": " << got.error().describe();
    EXPECT_TRUE(got->first == data.substr(12345)) << repo;
  }
}

TEST_F(RegistryClientTest, RedirectToStorageDropsAuthorizationAndKeepsQuery) {
  std::string data = pattern(70000);
  registry_.put_blob(data);
  auto c = client("bearer/redirect", Credentials{kUser, kPass});
  auto got = fetch(c, data, 100);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_TRUE(got->first == data.substr(100));
  auto targets = registry_.get(&FakeRegistry::storage_targets_);
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_NE(targets[0].find("?sig=a%2Bb%2Fc&x=1"), std::string::npos) << targets[0];
}

TEST_F(RegistryClientTest, BearerAuthWithBasicCredentialsToTokenEndpoint) {
  auto c = client("bearer/app", Credentials{kUser, kPass});
  std::string data = pattern(5000);
  ASSERT_TRUE(c.push_blob(digest_of(data), data));
  ASSERT_TRUE(Is(c.blob_exists(digest_of(data)), true));
  ASSERT_TRUE(fetch(c, data));
  ASSERT_TRUE(fetch(c, data));
  auto digest = c.put_manifest("v1", kOciManifestType, R"({"schemaVersion":2})");
  ASSERT_TRUE(digest) << digest.error().describe();
  // One token per scope (push, pull), cached after that.
  EXPECT_EQ(registry_.get(&FakeRegistry::token_requests_), 2);
  auto scopes = registry_.get(&FakeRegistry::token_scopes_);
  EXPECT_NE(std::find(scopes.begin(), scopes.end(), "repository:bearer/app:pull,push"),
            scopes.end());
}

TEST_F(RegistryClientTest, BasicAuth) {
  auto c = client("basic/app", Credentials{kUser, kPass});
  std::string data = pattern(4096);
  ASSERT_TRUE(c.push_blob(digest_of(data), data));
  auto got = fetch(c, data);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->first, data);
}

TEST_F(RegistryClientTest, WrongOrMissingCredentialsAreClearErrors) {
  std::string data = pattern(100);
  registry_.put_blob(data);
  for (const char* repo : {"basic/app", "bearer/app"}) {
    auto c = client(repo, Credentials{kUser, "wrong"});
    auto r = c.blob_exists(digest_of(data));
    ASSERT_FALSE(r) << repo;
    EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition) << r.error().message();
    EXPECT_TRUE(has(r.error(), "authentication failed")) << r.error().message();
    EXPECT_TRUE(has(r.error(), repo));
    EXPECT_FALSE(has(r.error(), "wrong"));  // never the password
  }
  auto anonymous = client("basic/app");
  auto r = anonymous.blob_exists(digest_of(data));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(has(r.error(), "FORKD_REGISTRY_USER")) << r.error().message();
}

TEST_F(RegistryClientTest, ManifestRoundTripAndDigestChecks) {
  auto c = client("open/app");
  std::string body =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})";
  auto digest = c.put_manifest("v1", kOciManifestType, body);
  ASSERT_TRUE(digest) << digest.error().describe();
  EXPECT_EQ(*digest, digest_of(body));
  for (const std::string& ref : {std::string("v1"), *digest}) {
    auto m = c.get_manifest(ref);
    ASSERT_TRUE(m) << m.error().describe();
    EXPECT_EQ(m->body, body);
    EXPECT_EQ(m->digest, *digest);
    EXPECT_EQ(m->media_type, kOciManifestType);
  }
  EXPECT_EQ(c.get_manifest("v2").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(c.put_manifest(digest_of("x"), kOciManifestType, body).error().code(),
            ErrorCode::kChecksumMismatch);

  auto lying = client("open/lying");
  auto m = lying.get_manifest(*digest);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kChecksumMismatch);
}

TEST_F(RegistryClientTest, OversizedManifestRefused) {
  auto c = client("open/big");
  auto m = c.get_manifest("v1");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kIo);
  EXPECT_TRUE(has(m.error(), "larger than")) << m.error().message();
}

TEST_F(RegistryClientTest, TruncatedAndOverlongBlobsReported) {
  std::string data = pattern(100000);
  registry_.put_blob(data);
  for (const char* repo : {"open/trunc", "open/cut"}) {
    auto c = client(repo);
    auto got = fetch(c, data);
    ASSERT_FALSE(got) << repo;
    EXPECT_EQ(got.error().code(), ErrorCode::kIo) << got.error().message();
    EXPECT_TRUE(has(got.error(), "truncated")) << got.error().message();
  }
  auto c = client("open/app");
  uint64_t received = 0;
  auto st = c.fetch_blob(digest_of(data), data.size() - 10, 0, [&](std::string_view p) {
    received += p.size();
    return Status();
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kIo);
  EXPECT_LE(received, data.size() - 10);
  // A sink's error comes back as is.
  auto sunk = c.fetch_blob(digest_of(data), data.size(), 0, [](std::string_view) -> Status {
    return make_error(ErrorCode::kNoSpace, "disk full");
  });
  ASSERT_FALSE(sunk);
  EXPECT_EQ(sunk.error().code(), ErrorCode::kNoSpace);
}

TEST_F(RegistryClientTest, SlowServerTimesOutWithinBound) {
  auto c = client("open/slow", {}, 300ms);
  auto start = std::chrono::steady_clock::now();
  auto r = c.blob_exists(digest_of("x"));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout) << r.error().message();
  EXPECT_LT(took, 2s);
}

TEST_F(RegistryClientTest, CancelStopsTheRequestInFlightAndEveryLaterOne) {
  RegistryClientOptions o;
  o.endpoint = registry_.endpoint();
  o.repository = "open/slow";
  o.read_timeout = 5s;  // the stalled request would otherwise wait this long
  o.cancel = std::make_shared<std::atomic<bool>>(false);
  auto c = RegistryClient::create(o);
  ASSERT_TRUE(c) << c.error().describe();
  auto start = std::chrono::steady_clock::now();
  std::jthread canceller([flag = o.cancel] {
    std::this_thread::sleep_for(200ms);
    flag->store(true);
  });
  auto r = c->blob_exists(digest_of("x"));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kCancelled) << r.error().message();
  EXPECT_LT(took, 2s);
  auto again = c->get_manifest("v1");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kCancelled);
}

TEST_F(RegistryClientTest, DribblingServerHitsTheWholeRequestDeadline) {
  auto c = client("open/drip", {}, 300ms);
  auto start = std::chrono::steady_clock::now();
  auto m = c.get_manifest("v1");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kTimeout) << m.error().message();
  EXPECT_LT(took, 2s);
}

TEST_F(RegistryClientTest, GarbageAnswersAreErrorsWithSanitizedBodies) {
  auto c = client("open/garbage");
  auto m = c.get_manifest("v1");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kUnavailable);
  const std::string& msg = m.error().message();
  EXPECT_TRUE(has(m.error(),
                  "HTTP 500: ?"
                  "?<html>  Internal? junk xxx"))
      << msg;
  EXPECT_LT(msg.size(), 400u);
  for (char ch : msg) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f);
  auto junk = c.get_manifest("junk");
  ASSERT_FALSE(junk);
  EXPECT_TRUE(has(junk.error(), "not a JSON object")) << junk.error().message();
}

TEST_F(RegistryClientTest, TransientErrorsAreRetried) {
  auto c = client("open/flaky");
  EXPECT_TRUE(Is(c.blob_exists(digest_of("x")), false));
  EXPECT_EQ(registry_.get(&FakeRegistry::flaky_hits_), 3);
}

TEST_F(RegistryClientTest, MountOrFallBack) {
  std::string data = pattern(3000);
  registry_.put_blob(data);
  auto c = client("open/other");
  EXPECT_TRUE(c.mount_blob(digest_of(data), "open/app"));
  auto missing = c.mount_blob(digest_of("absent"), "open/app");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(registry_.get(&FakeRegistry::deletes_), 1);
}

TEST(RegistryClientRawTest, NonHttpPeerIsAnError) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(sock.get(), 8), 0);
  ASSERT_EQ(getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::atomic<bool> done{false};
  std::thread peer([&] {
    while (!done) {
      pollfd p{sock.get(), POLLIN, 0};
      if (poll(&p, 1, 50) != 1) continue;
      UniqueFd conn(accept4(sock.get(), nullptr, nullptr, SOCK_CLOEXEC));
      const char junk[] = "\x00\xffNOT HTTP AT ALL\r\n\r\n";
      (void)!write(conn.get(), junk, sizeof(junk));
    }
  });
  RegistryClientOptions o;
  o.endpoint = {"http", "127.0.0.1", ntohs(addr.sin_port)};
  o.repository = "open/app";
  o.retry_backoff = {1ms};
  auto c = RegistryClient::create(o);
  ASSERT_TRUE(c);
  auto r = c->blob_exists(digest_of("x"));
  done = true;
  peer.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().message();
}

TEST(RegistryClientRawTest, CreateValidates) {
  RegistryClientOptions o;
  o.endpoint = {"http", "127.0.0.1", 5000};
  o.repository = "Bad/Name";
  EXPECT_EQ(RegistryClient::create(o).error().code(), ErrorCode::kInvalidArgument);
  o.repository = "ok/name";
  o.endpoint.scheme = "ftp";
  EXPECT_FALSE(RegistryClient::create(o));
  o.endpoint.scheme = "https";
  o.ca_file = "/nonexistent/ca.pem";
  EXPECT_FALSE(RegistryClient::create(o));
}

TEST(WwwAuthenticateTest, ParsesBasicAndBearer) {
  auto basic = parse_www_authenticate("Basic realm=\"Registry Realm\"");
  ASSERT_TRUE(basic);
  EXPECT_EQ(basic->scheme, AuthChallenge::Scheme::kBasic);
  EXPECT_EQ(basic->realm, "Registry Realm");

  auto bearer = parse_www_authenticate(
      "bEaReR realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
      "scope=\"repository:samalba/my-app:pull,push\"");
  ASSERT_TRUE(bearer) << bearer.error().describe();
  EXPECT_EQ(bearer->scheme, AuthChallenge::Scheme::kBearer);
  EXPECT_EQ(bearer->realm, "https://auth.docker.io/token");
  EXPECT_EQ(bearer->service, "registry.docker.io");
  EXPECT_EQ(bearer->scope, "repository:samalba/my-app:pull,push");

  auto spaced = parse_www_authenticate(
      "  Bearer   realm = \"http://a/t\" ,  service=\"a \\\"quoted\\\", svc\" , scope=tok ");
  ASSERT_TRUE(spaced) << spaced.error().describe();
  EXPECT_EQ(spaced->service, "a \"quoted\", svc");
  EXPECT_EQ(spaced->scope, "tok");

  auto two = parse_www_authenticate("Bearer realm=\"http://a/t\", Basic realm=\"x\"");
  ASSERT_TRUE(two);
  EXPECT_EQ(two->realm, "http://a/t");
}

TEST(WwwAuthenticateTest, RefusesBadHeaders) {
  EXPECT_EQ(parse_www_authenticate("Digest realm=\"x\", nonce=\"y\"").error().code(),
            ErrorCode::kFailedPrecondition);
  for (const std::string& bad : std::vector<std::string>{
           std::string(""), std::string("Bearer"), std::string("Bearer realm=\"x"),
           std::string("Bearer realm=http://a/t"), std::string("Bearer scope=\"x\""),
           "Bearer realm=\"" + std::string(9000, 'a') + "\""}) {
    auto r = parse_www_authenticate(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), ErrorCode::kProtocol) << bad;
    }
  }
}

TEST(TokenRequestTest, RealmServiceAndScopes) {
  AuthChallenge ch;
  ch.scheme = AuthChallenge::Scheme::kBearer;
  ch.realm = "https://auth.example.com/token?client=x";
  ch.service = "reg svc";
  ch.scope = "repository:a/b:pull repository:c:pull";
  auto url = token_request_url(ch, "repository:a/b:pull,push repository:c:pull", true);
  ASSERT_TRUE(url) << url.error().describe();
  EXPECT_EQ(url->endpoint.base_url(), "https://auth.example.com:443");
  EXPECT_EQ(url->target,
            "/token?client=x&service=reg%20svc&scope=repository%3Aa%2Fb%3Apull%2Cpush"
            "&scope=repository%3Ac%3Apull&scope=repository%3Aa%2Fb%3Apull");
  ch.realm = "http://auth.example.com/token";
  EXPECT_EQ(token_request_url(ch, "", true).error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(token_request_url(ch, "", false));
  ch.realm = "http://127.0.0.1:1/token";
  EXPECT_TRUE(token_request_url(ch, "", true));
  ch.realm = "file:///etc/passwd";
  EXPECT_EQ(token_request_url(ch, "", false).error().code(), ErrorCode::kProtocol);
}

TEST(TokenReplyTest, TokenOrAccessToken) {
  EXPECT_TRUE(Is(parse_token_reply(R"({"token":"abc"})"), std::string("abc")));
  EXPECT_TRUE(Is(parse_token_reply(R"({"token":"","access_token":"xyz"})"), std::string("xyz")));
  for (const char* bad :
       {"", "garbage", "[]", R"({"token":5})", R"({"token":"a b"})", R"({"token":"a\r\nX: y"})"}) {
    EXPECT_FALSE(parse_token_reply(bad)) << bad;
  }
}

TEST(CredentialsTest, AuthFileShapes) {
  std::string auth = base64_encode("bob:pa:ss");
  std::string text = R"({"auths": {"127.0.0.1:5000": {"auth": ")" + auth +
                     R"("}, "https://reg.example.com/v1/": {"username": "u", "password": "p"},
                     "broken.io": {"auth": "!!!"}, "helper.io": {}}})";
  auto a = parse_auth_file(text, "127.0.0.1:5000", "cfg");
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->username, "bob");
  EXPECT_EQ((*a)->password, "pa:ss");
  auto b = parse_auth_file(text, "REG.example.com", "cfg");
  ASSERT_TRUE(b && *b) << (b ? "none" : b.error().describe());
  EXPECT_EQ((*b)->username, "u");
  EXPECT_EQ((*b)->password, "p");
  auto none = parse_auth_file(text, "127.0.0.1:5001", "cfg");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  EXPECT_FALSE(parse_auth_file(text, "broken.io", "cfg"));
  EXPECT_FALSE(parse_auth_file(text, "helper.io", "cfg"));
  EXPECT_FALSE(parse_auth_file("not json", "x", "cfg"));
  EXPECT_EQ(base64_decode(base64_encode("a")), std::optional<std::string>("a"));
  EXPECT_EQ(base64_decode(base64_encode("ab")), std::optional<std::string>("ab"));
  EXPECT_EQ(base64_decode("YWJj"), std::optional<std::string>("abc"));
  EXPECT_FALSE(base64_decode("YWJ"));
  EXPECT_FALSE(base64_decode("Y=Jj"));
}

class CredentialsEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    unsetenv("FORKD_REGISTRY_USER");
    unsetenv("FORKD_REGISTRY_PASSWORD");
    unsetenv("FORKD_REGISTRY_AUTH_FILE");
  }
  static std::string write_config(const TempDir& dir, const std::string& name,
                                  const std::string& user) {
    std::string path = dir.path() + "/" + name;
    std::string text = R"({"auths":{"r.io":{"username":")" + user + R"(","password":"pw"}}})";
    EXPECT_TRUE(write_file_atomic(path, text));
    return path;
  }
};

TEST_F(CredentialsEnvTest, Precedence) {
  auto dir = TempDir::create("regauth");
  ASSERT_TRUE(dir);
  std::string env_file = write_config(*dir, "env.json", "from-env-file");
  std::string arg_file = write_config(*dir, "arg.json", "from-arg-file");

  auto none = load_credentials("r.io");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  setenv("FORKD_REGISTRY_AUTH_FILE", env_file.c_str(), 1);
  EXPECT_EQ((*load_credentials("r.io"))->username, "from-env-file");
  EXPECT_EQ((*load_credentials("r.io", arg_file))->username, "from-arg-file");
  EXPECT_FALSE(*load_credentials("other.io"));

  setenv("FORKD_REGISTRY_USER", "env-user", 1);
  EXPECT_EQ(load_credentials("r.io").error().code(), ErrorCode::kInvalidArgument);  // no password
  setenv("FORKD_REGISTRY_PASSWORD", "env-pass", 1);
  auto env = load_credentials("r.io", arg_file);
  ASSERT_TRUE(env && *env);
  EXPECT_EQ((*env)->username, "env-user");
  EXPECT_EQ((*env)->password, "env-pass");

  clear();
  EXPECT_FALSE(load_credentials("r.io", dir->path() + "/missing.json"));
}

}  // namespace
}  // namespace forkd::hub
