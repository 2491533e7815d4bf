#include "hub/oci_ref.h"

#include <gtest/gtest.h>

#include <vector>

namespace forkd::hub {
namespace {

const std::string kHex(64, 'a');

TEST(OciRefTest, ParsesHostPortNameAndTag) {
  auto ref = parse_oci_ref("127.0.0.1:5000/tags/python:v1");
  ASSERT_TRUE(ref) << ref.error().describe();
  EXPECT_EQ(ref->registry, "127.0.0.1");
  EXPECT_EQ(ref->port, 5000);
  EXPECT_EQ(ref->repository, "tags/python");
  EXPECT_EQ(ref->tag, "v1");
  EXPECT_EQ(ref->digest, "");
  EXPECT_EQ(ref->registry_address(), "127.0.0.1:5000");
  EXPECT_EQ(ref->reference(), "v1");
  EXPECT_EQ(ref->to_string(), "127.0.0.1:5000/tags/python:v1");
}

TEST(OciRefTest, DefaultsToLatestAndKeepsDigest) {
  auto ref = parse_oci_ref("registry.example.com/a/b/c");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->port, 0);
  EXPECT_EQ(ref->tag, "latest");

  auto pinned = parse_oci_ref("localhost/app@sha256:" + kHex);
  ASSERT_TRUE(pinned) << pinned.error().describe();
  EXPECT_EQ(pinned->registry, "localhost");
  EXPECT_EQ(pinned->tag, "");
  EXPECT_EQ(pinned->digest, "sha256:" + kHex);
  EXPECT_EQ(pinned->reference(), "sha256:" + kHex);

  auto both = parse_oci_ref("localhost:5000/app:v2@sha256:" + kHex);
  ASSERT_TRUE(both);
  EXPECT_EQ(both->tag, "v2");
  EXPECT_EQ(both->digest, "sha256:" + kHex);
  EXPECT_EQ(parse_oci_ref(both->to_string())->to_string(), both->to_string());
}

TEST(OciRefTest, AcceptsSpecSeparatorsAndIpv6) {
  for (const char* text : {"r.io/a.b/c_d/e__f/g-h/i---j:T_1.x-y", "[::1]:5000/x:_tag",
                           "Registry.Example.COM:443/n0/1a"}) {
    auto ref = parse_oci_ref(text);
    EXPECT_TRUE(ref) << text << ": " << ref.error().describe();
  }
  EXPECT_EQ(parse_oci_ref("[::1]:5000/x")->registry, "[::1]");
}

TEST(OciRefTest, MissingHostIsExplained) {
  for (const char* text : {"python:3.11", "library/python:3.11", "tags/python"}) {
    auto ref = parse_oci_ref(text);
    ASSERT_FALSE(ref) << text;
    EXPECT_EQ(ref.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(ref.error().message().find("no registry host"), std::string::npos);
    EXPECT_NE(ref.error().message().find("127.0.0.1:5000/tags/python:v1"), std::string::npos);
  }
}

TEST(OciRefTest, RejectsBadNames) {
  for (const std::string& text : std::vector<std::string>{
           "r.io/Tags/python",  // uppercase repository
           "r.io/a/../b",       // ..
           "r.io/a..b",         // double dot separator
           "r.io/.a",
           "r.io/a.",
           "r.io/a//b",
           "r.io/a/",
           "r.io/",
           "r.io/-a",
           "r.io/a___b",
           "r.io/a b",
           "r.io/a\nb",
           "r.io/a%2fb",
           "",
       }) {
    auto ref = parse_oci_ref(text);
    EXPECT_FALSE(ref) << text;
    if (!ref) {
      EXPECT_EQ(ref.error().code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(OciRefTest, RejectsBadTagsDigestsHostsPorts) {
  for (const std::string& text : std::vector<std::string>{
           "r.io/a:",
           "r.io/a:.x",
           "r.io/a:-x",
           "r.io/a:" + std::string(129, 'x'),
           "r.io/a@sha256:" + std::string(63, 'a'),
           "r.io/a@sha256:" + std::string(64, 'A'),
           "r.io/a@sha512:" + kHex,
           "r.io/a@",
           "r.io/a@sha256:" + kHex + "@sha256:" + kHex,
           "r.io:0/a",
           "r.io:65536/a",
           "r.io:x/a",
           "r.io:/a",
           "-r.io/a",
           "r..io/a",
           "::1:5000/a",
           "[::1/a",
           "[zz]:1/a",
           "us@r.io/a",
       }) {
    EXPECT_FALSE(parse_oci_ref(text)) << text;
  }
  EXPECT_TRUE(parse_oci_ref("r.io/a:" + std::string(128, 'x')));
}

TEST(OciRefTest, VeryLongInputIsRefusedQuickly) {
  std::string huge = "r.io/" + std::string(1 << 20, 'a');
  auto ref = parse_oci_ref(huge);
  ASSERT_FALSE(ref);
  EXPECT_LT(ref.error().message().size(), 400u);  // the input is not echoed whole

  std::string long_name = "r.io/" + std::string(256, 'a');
  EXPECT_FALSE(parse_oci_ref(long_name));
  EXPECT_TRUE(parse_oci_ref("r.io/" + std::string(255, 'a')));
}

TEST(OciRefTest, LoopbackAndScheme) {
  for (const char* h : {"localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "[::1]"}) {
    EXPECT_TRUE(is_loopback_host(h)) << h;
  }
  for (const char* h : {"128.0.0.1", "10.0.0.1", "example.com", "localhost.example.com", "[::2]",
                        "127.0.0.1.nip.io", ""}) {
    EXPECT_FALSE(is_loopback_host(h)) << h;
  }
  EXPECT_EQ(registry_scheme("127.0.0.1", false), "http");
  EXPECT_EQ(registry_scheme("ghcr.io", false), "https");
  EXPECT_EQ(registry_scheme("ghcr.io", true), "http");
  EXPECT_EQ(registry_scheme("127.0.0.1", false, true), "https");  // a CA file asks for TLS
  EXPECT_EQ(registry_scheme("127.0.0.1", true, true), "http");
  auto ref = parse_oci_ref("127.0.0.1:5000/a");
  HttpEndpoint ep = registry_endpoint(*ref, false);
  EXPECT_EQ(ep.base_url(), "http://127.0.0.1:5000");
  EXPECT_EQ(ep.host_header(), "127.0.0.1:5000");
  EXPECT_EQ(registry_endpoint(*parse_oci_ref("r.io/a"), false).base_url(), "https://r.io:443");
}

TEST(OciRefTest, HttpUrls) {
  auto u = parse_http_url("https://auth.example.com/token?x=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->endpoint.scheme, "https");
  EXPECT_EQ(u->endpoint.host, "auth.example.com");
  EXPECT_EQ(u->endpoint.effective_port(), 443);
  EXPECT_EQ(u->target, "/token?x=1");
  auto v = parse_http_url("HTTP://127.0.0.1:8080?a=b");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->endpoint.port, 8080);
  EXPECT_EQ(v->target, "/?a=b");
  EXPECT_TRUE(u->endpoint.same_origin(HttpEndpoint{"https", "AUTH.example.com", 443}));
  for (const std::string& bad : std::vector<std::string>{
           "ftp://x/", "/relative", "http://u:p@x/", "http://x/a b", "http://x/\r\nHost: y",
           "http:///", "http://x:99999/", "http://x/" + std::string(9000, 'a')}) {
    EXPECT_FALSE(parse_http_url(bad)) << bad;
  }
  EXPECT_EQ(percent_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
}

}  // namespace
}  // namespace forkd::hub
