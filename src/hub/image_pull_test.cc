#include "hub/image_pull.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "base/files.h"

namespace forkd::hub {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

std::string blob_digest(std::string_view data) { return "sha256:" + sha256_hex(data); }

// A tar (gzip-compressed when gzip) of regular files, in memory.
std::string make_tar(const std::vector<std::pair<std::string, std::string>>& files, bool gzip) {
  std::vector<char> buf(1 << 20);
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  archive_write_open_memory(a, buf.data(), buf.size(), &used);
  for (const auto& [name, data] : files) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_write_header(a, e);
    archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

// Manifests by reference and blobs by digest on 127.0.0.1, for repository "img".
class TinyRegistry {
 public:
  TinyRegistry() {
    svr_.Get(R"(/v2/img/manifests/([^/]+))", [this](const auto& req, auto& res) {
      std::lock_guard lock(mu_);
      auto it = manifests_.find(req.matches[1].str());
      if (it == manifests_.end()) {
        res.status = 404;
        res.set_content(R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})", "application/json");
        return;
      }
      res.set_content(it->second.second, it->second.first);
    });
    svr_.Get(R"(/v2/img/blobs/(sha256:[0-9a-f]{64}))", [this](const auto& req, auto& res) {
      std::lock_guard lock(mu_);
      blob_gets_++;
      auto it = blobs_.find(req.matches[1].str());
      if (it == blobs_.end()) {
        res.status = 404;
        return;
      }
      res.set_content(it->second, "application/octet-stream");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    for (int i = 0; i < 500 && !svr_.is_running(); ++i) std::this_thread::sleep_for(10ms);
  }
  ~TinyRegistry() {
    svr_.stop();
    thread_.join();
  }

  std::string blob(const std::string& data) {
    std::lock_guard lock(mu_);
    std::string d = blob_digest(data);
    blobs_[d] = data;
    return d;
  }
  void corrupt(const std::string& digest) {
    std::lock_guard lock(mu_);
    blobs_[digest][0] ^= 0x55;
  }
  // Stores body under tag (and its digest); returns the digest.
  std::string manifest(const std::string& tag, const std::string& type, const std::string& body) {
    std::lock_guard lock(mu_);
    std::string d = blob_digest(body);
    manifests_[tag] = {type, body};
    manifests_[d] = {type, body};
    return d;
  }
  // An image manifest of layers (each {data, mediaType}) with the given config media type.
  std::string image(const std::string& tag,
                    const std::vector<std::pair<std::string, std::string>>& layers,
                    const std::string& config_type = "application/vnd.oci.image.config.v1+json") {
    std::string config = R"({"architecture":"amd64","os":"linux"})";
    Json m = {
        {"schemaVersion", 2},
        {"mediaType", kOciManifestType},
        {"config", {{"mediaType", config_type}, {"digest", blob(config)}, {"size", config.size()}}},
        {"layers", Json::array()}};
    for (const auto& [data, type] : layers) {
      m["layers"].push_back({{"mediaType", type}, {"digest", blob(data)}, {"size", data.size()}});
    }
    return manifest(tag, std::string(kOciManifestType), m.dump());
  }
  size_t manifest_size(const std::string& digest) {
    std::lock_guard lock(mu_);
    return manifests_[digest].second.size();
  }
  int blob_gets() {
    std::lock_guard lock(mu_);
    return blob_gets_;
  }

  RegistryClient client() {
    RegistryClientOptions o;
    o.endpoint = {"http", "127.0.0.1", static_cast<uint16_t>(port_)};
    o.repository = "img";
    o.retry_backoff = {};
    return std::move(*RegistryClient::create(std::move(o)));
  }
  OciRef ref(const std::string& tag) {
    return *parse_oci_ref("127.0.0.1:" + std::to_string(port_) + "/img:" + tag);
  }

 private:
  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::pair<std::string, std::string>> manifests_;
  std::map<std::string, std::string> blobs_;
  int blob_gets_ = 0;
};

constexpr const char* kGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr const char* kTar = "application/vnd.oci.image.layer.v1.tar";

class ImagePullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::create("forkd-image-pull");
    ASSERT_TRUE(t);
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    opts_.blob_dir = tmp_->path() + "/blobs";
    opts_.root_dir = tmp_->path() + "/root";
    ASSERT_TRUE(make_dirs(opts_.blob_dir, 0700));
    ASSERT_TRUE(make_dirs(opts_.root_dir, 0700));
    opts_.progress = [this](std::string_view line) { lines_.emplace_back(line); };
  }
  Result<ImagePullResult> pull(const std::string& tag) {
    auto client = reg_.client();
    return pull_image_tree(client, reg_.ref(tag), opts_);
  }
  std::string in_tree(const std::string& rel) {
    return read_file(opts_.root_dir + "/" + rel).value_or("<missing>");
  }

  TinyRegistry reg_;
  std::unique_ptr<TempDir> tmp_;
  ImagePullOptions opts_;
  std::vector<std::string> lines_;
};

TEST_F(ImagePullTest, AppliesLayersInOrderThroughAnIndex) {
  std::string l1 = make_tar({{"etc/hello", "hi\n"}, {"etc/doomed", "x"}}, true);
  std::string l2 = make_tar({{"etc/.wh.doomed", ""}, {"etc/added", "two\n"}}, false);
  std::string man = reg_.image("inner", {{l1, kGzip}, {l2, kTar}});
  Json index = {{"schemaVersion", 2},
                {"mediaType", kOciIndexType},
                {"manifests",
                 {{{"mediaType", kOciManifestType},
                   {"digest", blob_digest("other")},
                   {"size", 10},
                   {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
                  {{"mediaType", kOciManifestType},
                   {"digest", man},
                   {"size", reg_.manifest_size(man)},
                   {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  std::string idx = reg_.manifest("multi", std::string(kOciIndexType), index.dump());
  auto r = pull("multi");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->manifest_digest, man);
  EXPECT_EQ(r->index_digest, idx);
  EXPECT_EQ(r->layers, 2u);
  EXPECT_EQ(r->layer_bytes, l1.size() + l2.size());
  EXPECT_EQ(r->stats.whiteouts, 1u);
  EXPECT_EQ(in_tree("etc/hello"), "hi\n");
  EXPECT_EQ(in_tree("etc/added"), "two\n");
  EXPECT_FALSE(path_exists(opts_.root_dir + "/etc/doomed"));
  EXPECT_TRUE(list_dir_names(opts_.blob_dir).empty());  // each blob removed once applied
  ASSERT_FALSE(lines_.empty());
  EXPECT_NE(lines_.back().find("layer 2/2"), std::string::npos) << lines_.back();
}

TEST_F(ImagePullTest, CorruptBlobIsRefusedAndDiscarded) {
  std::string l1 = make_tar({{"etc/hello", "hi\n"}}, true);
  reg_.image("bad", {{l1, kGzip}});
  reg_.corrupt(blob_digest(l1));
  auto r = pull("bad");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kChecksumMismatch) << r.error().describe();
  EXPECT_NE(r.error().message().find("layer 1/1"), std::string::npos) << r.error().message();
  EXPECT_TRUE(list_dir_names(opts_.blob_dir).empty());
  EXPECT_FALSE(path_exists(opts_.root_dir + "/etc/hello"));  // never applied
}

TEST_F(ImagePullTest, HostileLayerIsRefused) {
  std::string evil = make_tar({{"ok", "1"}, {"../escape", "2"}}, false);
  reg_.image("evil", {{evil, kTar}});
  auto r = pull("evil");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find(".."), std::string::npos) << r.error().message();
  EXPECT_FALSE(path_exists(tmp_->path() + "/escape"));
}

TEST_F(ImagePullTest, ArtifactsAndMissingReferencesFetchNoBlob) {
  std::string l1 = make_tar({{"a", "1"}}, false);
  reg_.image("chart", {{l1, kTar}}, "application/vnd.cncf.helm.config.v1+json");
  auto r = pull("chart");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("not a container image"), std::string::npos);
  r = pull("nope");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound) << r.error().describe();
  EXPECT_EQ(reg_.blob_gets(), 0);
}

}  // namespace
}  // namespace forkd::hub
