#include "hub/image_manifest.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hub/registry_client.h"

namespace forkd::hub {
namespace {

using Json = nlohmann::json;

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');
const std::string kC = "sha256:" + std::string(64, 'c');
constexpr const char* kOciConfig = "application/vnd.oci.image.config.v1+json";
constexpr const char* kOciGzip = "application/vnd.oci.image.layer.v1.tar+gzip";

Json oci_manifest() {
  return {{"schemaVersion", 2},
          {"mediaType", kOciManifestType},
          {"config", {{"mediaType", kOciConfig}, {"digest", kA}, {"size", 300}}},
          {"layers",
           {{{"mediaType", kOciGzip}, {"digest", kB}, {"size", 1000}},
            {{"mediaType", "application/vnd.oci.image.layer.v1.tar+zstd"},
             {"digest", kC},
             {"size", 2000}}}}};
}

Json index_of(Json entries) {
  return {{"schemaVersion", 2}, {"mediaType", kOciIndexType}, {"manifests", std::move(entries)}};
}

Json entry(const std::string& os, const std::string& arch, const std::string& digest,
           std::string_view type = kOciManifestType) {
  return {{"mediaType", type},
          {"digest", digest},
          {"size", 500},
          {"platform", {{"os", os}, {"architecture", arch}}}};
}

void expect_refused(const Json& m, std::string_view needle, std::string_view type = "") {
  auto r = parse_image_manifest(type.empty() ? kOciManifestType : type, m.dump());
  ASSERT_FALSE(r) << m.dump();
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
}

TEST(ImageManifestTest, ParsesOciManifest) {
  auto r = parse_image_manifest(kOciManifestType, oci_manifest().dump());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->config.digest, kA);
  EXPECT_EQ(r->config.size, 300u);
  ASSERT_EQ(r->layers.size(), 2u);
  EXPECT_EQ(r->layers[0].digest, kB);
  EXPECT_EQ(r->layers[1].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_EQ(r->layer_bytes, 3000u);
}

TEST(ImageManifestTest, ParsesDockerSchema2) {
  Json m = {{"schemaVersion", 2},
            {"mediaType", kDockerManifestType},
            {"config",
             {{"mediaType", "application/vnd.docker.container.image.v1+json"},
              {"digest", kA},
              {"size", 10}}},
            {"layers",
             {{{"mediaType", "application/vnd.docker.image.rootfs.diff.tar.gzip"},
               {"digest", kB},
               {"size", 5}}}}};
  auto r = parse_image_manifest(kDockerManifestType, m.dump());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->layers.size(), 1u);
  // The body alone may say what it is (a registry answering application/json).
  EXPECT_TRUE(parse_image_manifest("", m.dump()));
}

TEST(ImageManifestTest, RefusesWrongMediaTypes) {
  expect_refused(oci_manifest(), "not a container image", "application/vnd.foo+json");
  expect_refused(oci_manifest(), "schema 1",
                 "application/vnd.docker.distribution.manifest.v1+prettyjws");
  expect_refused(oci_manifest(), "an index", kOciIndexType);
  expect_refused(oci_manifest(), "the registry said", kDockerManifestType);

  Json m = oci_manifest();
  m["config"]["mediaType"] = "application/vnd.forkd.tag.config.v1+json";
  expect_refused(m, "forkd pull");
  m = oci_manifest();
  m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json";
  expect_refused(m, "config media type");
  m = oci_manifest();
  m["artifactType"] = "application/vnd.example.sbom";
  expect_refused(m, "artifactType");
  m = oci_manifest();
  m["layers"][1]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
  expect_refused(m, "foreign");
  m = oci_manifest();
  m["layers"][0]["mediaType"] = "application/octet-stream";
  expect_refused(m, "layer 1 has media type");
}

TEST(ImageManifestTest, RefusesMalformedDescriptors) {
  expect_refused(Json::array(), "not a JSON object");
  Json m = oci_manifest();
  m["schemaVersion"] = 1;
  expect_refused(m, "schemaVersion");
  m = oci_manifest();
  m.erase("config");
  expect_refused(m, "no config");
  m = oci_manifest();
  m["layers"] = Json::array();
  expect_refused(m, "no layers");
  m = oci_manifest();
  m["layers"] = "x";
  expect_refused(m, "no layers array");
  for (const char* bad : {"sha256:abc", "sha512:aa", "",
                          "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                          "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}) {
    m = oci_manifest();
    m["layers"][0]["digest"] = bad;
    expect_refused(m, "bad digest");
  }
  m = oci_manifest();
  m["layers"][0]["digest"] = "sha256:../../" + std::string(58, 'a');
  expect_refused(m, "bad digest");
  m = oci_manifest();
  m["layers"][0]["size"] = -1;
  expect_refused(m, "no valid size");
  m = oci_manifest();
  m["layers"][0]["size"] = 1.5;
  expect_refused(m, "no valid size");
  m = oci_manifest();
  m["layers"][0]["size"] = 0;
  expect_refused(m, "empty");
  m = oci_manifest();
  m["layers"][0] = "sha256:x";
  expect_refused(m, "not an object");
}

TEST(ImageManifestTest, RefusesHugeSizes) {
  Json m = oci_manifest();
  m["layers"][0]["size"] = 1ull << 62;
  expect_refused(m, "more than");
  m = oci_manifest();
  m["layers"][0]["size"] = Json::number_unsigned_t(18446744073709551615ull);
  expect_refused(m, "more than");
  m = oci_manifest();
  m["config"]["size"] = 64ull << 20;
  expect_refused(m, "config size");
  // Each layer within its bound, their sum beyond the total.
  ImageManifestLimits lim;
  lim.max_layer_bytes = 1500;
  lim.max_total_bytes = 2400;
  m = oci_manifest();
  m["layers"][1]["size"] = 1500;
  auto r = parse_image_manifest(kOciManifestType, m.dump(), lim);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("add up"), std::string::npos);
  lim.max_layers = 1;
  r = parse_image_manifest(kOciManifestType, oci_manifest().dump(), lim);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("2 layers"), std::string::npos);
}

TEST(ImageManifestTest, SelectsLinuxAmd64FromAnIndex) {
  Json idx = index_of(
      {entry("linux", "arm64", kA), entry("unknown", "unknown", kC), entry("linux", "amd64", kB)});
  auto d = select_platform(idx.dump());
  ASSERT_TRUE(d) << d.error().describe();
  EXPECT_EQ(d->digest, kB);
  // A Docker manifest list, the same way.
  Json list = index_of({entry("linux", "amd64", kC, kDockerManifestType)});
  list["mediaType"] = kDockerListType;
  d = select_platform(list.dump());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->digest, kC);
}

TEST(ImageManifestTest, IndexWithoutAmd64IsNotFound) {
  Json idx = index_of({entry("linux", "arm64", kA), entry("windows", "amd64", kB),
                       // A nested index for amd64 is not followed.
                       entry("linux", "amd64", kC, kOciIndexType)});
  auto d = select_platform(idx.dump());
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(d.error().message().find("'linux'/'arm64'"), std::string::npos) << d.error().message();
  EXPECT_FALSE(select_platform(index_of(Json::array()).dump()));
}

TEST(ImageManifestTest, RefusesMalformedIndexes) {
  EXPECT_FALSE(select_platform("not json"));
  EXPECT_FALSE(select_platform(Json({{"schemaVersion", 2}}).dump()));
  Json idx = index_of({entry("linux", "amd64", "sha256:nothex")});
  EXPECT_FALSE(select_platform(idx.dump()));
  idx = index_of({entry("linux", "amd64", kA)});
  idx["manifests"][0]["size"] = 1ull << 40;
  auto d = select_platform(idx.dump());
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("larger than"), std::string::npos);
  Json many = Json::array();
  for (int i = 0; i < 1025; ++i) many.push_back(entry("linux", "arm64", kA));
  EXPECT_FALSE(select_platform(index_of(many).dump()));
  // Depth bombs never become values.
  EXPECT_FALSE(select_platform(std::string(100000, '[')));
}

TEST(ImageManifestTest, ChecksTheConfig) {
  Json c = {{"architecture", "amd64"},
            {"os", "linux"},
            {"rootfs", {{"type", "layers"}, {"diff_ids", {kA, kB}}}}};
  auto r = parse_image_config(c.dump(), 2);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->diff_ids, 2u);
  EXPECT_FALSE(parse_image_config(c.dump(), 3));
  c["architecture"] = "arm64";
  EXPECT_FALSE(parse_image_config(c.dump(), 2));
  c["architecture"] = "amd64";
  c["os"] = "windows";
  EXPECT_FALSE(parse_image_config(c.dump(), 2));
  EXPECT_TRUE(parse_image_config("{}", 5));
  EXPECT_FALSE(parse_image_config("[]", 0));
}

}  // namespace
}  // namespace forkd::hub
