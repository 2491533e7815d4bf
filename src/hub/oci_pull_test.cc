// pull_tag against an in-process registry that serves whatever a test puts in it: manifests and
// blobs that lie, chains too deep, a blob cut short (then resumed). Nothing may become a tag.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "base/files.h"
#include "hub/chunk_codec.h"
#include "hub/oci_tag.h"
#include "store/chain.h"

namespace forkd::hub {
namespace {

using Json = nlohmann::json;

class FakeRegistry {
 public:
  FakeRegistry() {
    svr_.Get(R"(/v2/t/manifests/(.+))",
             [this](const httplib::Request& req, httplib::Response& res) {
               std::lock_guard lock(mu_);
               auto it = manifests_.find(req.matches[1]);
               if (it == manifests_.end()) {
                 res.status = 404;
                 return;
               }
               res.set_content(it->second, std::string(kOciManifestType));
             });
    svr_.Get(R"(/v2/t/blobs/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      auto it = blobs_.find(req.matches[1]);
      if (it == blobs_.end()) {
        res.status = 404;
        return;
      }
      std::string body = it->second;  // httplib itself answers a Range request with a 206
      if (cut_ == req.matches[1]) {   // the connection drops halfway
        cut_.clear();
        size_t half = body.size() / 2;
        res.set_content_provider(body.size(), "application/octet-stream",
                                 [body, half](size_t off, size_t, httplib::DataSink& sink) {
                                   if (off >= half) return false;
                                   sink.write(body.data() + off, half - off);
                                   return true;
                                 });
        return;
      }
      res.set_content(body, "application/octet-stream");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    while (!svr_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeRegistry() {
    svr_.stop();
    thread_.join();
  }
  std::string put_blob(const std::string& data) {
    std::string d = "sha256:" + sha256_hex(data);
    std::lock_guard lock(mu_);
    blobs_[d] = data;
    return d;
  }
  void put_raw_blob(const std::string& digest, const std::string& data) {
    std::lock_guard lock(mu_);
    blobs_[digest] = data;
  }
  std::string put_manifest(const std::string& tag, const Json& m) {
    std::string body = m.dump();
    std::string d = "sha256:" + sha256_hex(body);
    std::lock_guard lock(mu_);
    manifests_[d] = body;
    if (!tag.empty()) manifests_[tag] = body;
    return d;
  }
  void cut_next(const std::string& digest) {
    std::lock_guard lock(mu_);
    cut_ = digest;
  }
  int port() const { return port_; }

 private:
  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::string> manifests_, blobs_;
  std::string cut_;
};

class OciPullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-oci-pull-test");
    ASSERT_TRUE(d);
    dir_ = std::make_unique<TempDir>(std::move(*d));
    store_ = std::make_unique<store::SnapshotStore>(dir_->path() + "/home");
  }
  // A tag whose memory and vmstate are both content as a forkd manifest in the registry; returns
  // its digest.
  std::string push_tag(const std::string& name, const std::string& content,
                       const std::string& ref_tag, const std::string& parent = "",
                       const std::string& parent_hash = "", const std::string& parent_manifest = "",
                       const std::function<void(Json& config, Json& manifest)>& edit = {}) {
    store::SnapshotMeta meta;
    meta.tag = name;
    meta.image = "minimal";
    meta.machine = "microvm";
    meta.memory_mib = 256;
    meta.memory_sha256 = sha256_hex(name);
    meta.files["vmstate"] = store::FileEntry::with_sha256(content.size(), sha256_hex(content));
    meta.files["memory"] = store::FileEntry::with_sha256(content.size(), sha256_hex(content));
    PackManifest pm;
    if (!parent.empty()) {
      meta.parent_tag = parent;
      meta.parent_content_hash = parent_hash;
      pm.requires_tags.push_back({parent, parent_hash});
    }
    pm.tags.push_back({meta, {}});
    Json layers = Json::array();
    ChunkCodec codec;
    for (const auto& pos : chunk_plan(pm)) {  // memory, then vmstate: both hold content
      std::string blob;
      EXPECT_TRUE(codec.encode(std::string_view(content).substr(pos.offset, pos.length), &blob));
      layers.push_back(
          {{"mediaType", kForkdChunkType}, {"digest", reg_.put_blob(blob)}, {"size", blob.size()}});
    }
    Json config = pm.to_json();
    config["parent_manifest"] = parent_manifest;
    Json manifest = {{"schemaVersion", 2},
                     {"mediaType", kOciManifestType},
                     {"layers", layers},
                     {"config", {{"mediaType", kForkdConfigType}}}};
    if (edit) edit(config, manifest);
    std::string ctext = config.dump();
    manifest["config"]["digest"] = reg_.put_blob(ctext);
    manifest["config"]["size"] = ctext.size();
    return reg_.put_manifest(ref_tag, manifest);
  }
  Result<PullResult> pull(const std::string& ref_tag, const std::string& new_tag = "") {
    std::string ref_text = "127.0.0.1:" + std::to_string(reg_.port()) + "/t:" + ref_tag;
    OciRef ref;
    auto client = open_registry(ref_text, false, "", "", &ref);
    if (!client) return tl::unexpected(client.error());
    return pull_tag(*store_, dir_->path() + "/cache", *client, ref, new_tag);
  }
  bool nothing_left() const {
    for (const auto& n : list_dir_names(store_->root())) {
      if (n.rfind(".lock-", 0) != 0) return false;
    }
    return true;
  }

  FakeRegistry reg_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<store::SnapshotStore> store_;
};

TEST_F(OciPullTest, ChainPullsRootFirst) {
  std::string a = push_tag("a", std::string(100000, 'a'), "");
  push_tag("b", "bbbb", "b", "a", sha256_hex("a"), a);
  auto r = pull("b");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->tags.created, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*read_file(store_->dir("b") + "/vmstate"), "bbbb");
}

TEST_F(OciPullTest, ChainsDeeperThanTheLimitAreRefused) {
  std::string prev = push_tag("t0", "x", "");
  for (int i = 1; i <= store::kMaxChainDepth + 2; i++) {
    std::string name = "t" + std::to_string(i);
    prev = push_tag(name, "x", i == store::kMaxChainDepth + 2 ? "deep" : "",
                    "t" + std::to_string(i - 1), sha256_hex("t" + std::to_string(i - 1)), prev);
  }
  auto r = pull("deep");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("deeper"), std::string::npos) << r.error().message();
  EXPECT_TRUE(nothing_left());
}

TEST_F(OciPullTest, LyingManifestsAreRefusedWithNothingLeft) {
  auto refused = [&](const std::string& tag, const std::string& why) {
    auto r = pull(tag);
    EXPECT_FALSE(r) << why;
    EXPECT_TRUE(nothing_left()) << why;
    return r ? std::string() : r.error().message();
  };
  push_tag("x", "hello", "extra-layer", "", "", "",
           [](Json&, Json& m) { m["layers"].push_back(m["layers"][0]); });
  EXPECT_NE(refused("extra-layer", "more layers than chunks").find("layers"), std::string::npos);
  push_tag("x", "hello", "huge-layer", "", "", "",
           [](Json&, Json& m) { m["layers"][0]["size"] = 1ull << 40; });
  refused("huge-layer", "a layer size past any chunk");
  push_tag("x", "hello", "newer", "", "", "", [](Json& c, Json&) { c["format"] = 9; });
  EXPECT_NE(refused("newer", "newer format").find("newer"), std::string::npos);
  push_tag("x", "hello", "image", "", "", "", [](Json&, Json& m) {
    m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json";
  });
  EXPECT_NE(refused("image", "a container image").find("image import"), std::string::npos);
  push_tag("x", "hello", "lying-hash", "", "", "", [](Json& c, Json&) {
    c["tags"][0]["meta"]["files"]["vmstate"]["sha256"] = std::string(64, 'b');
  });
  refused("lying-hash", "a file hash that lies");
  push_tag("x", "hello", "orphan", "gone", std::string(64, 'c'), "sha256:" + std::string(64, 'd'));
  refused("orphan", "a parent manifest the registry lacks");
  EXPECT_FALSE(pull("no-such-tag"));
}

TEST_F(OciPullTest, BlobThatLiesIsRefusedAndACutOneResumes) {
  std::string content(3 * kChunkBytes / 2, '\0');
  for (size_t i = 0; i < content.size(); i += 4096) content[i] = static_cast<char>(i / 4096);
  push_tag("big", content, "big");
  // Serve garbage under the first layer's digest.
  ChunkCodec codec;
  std::string first;
  ASSERT_TRUE(codec.encode(std::string_view(content).substr(0, kChunkBytes), &first));
  std::string d = "sha256:" + sha256_hex(first);
  reg_.put_raw_blob(d, std::string(first.size(), 'g'));
  auto bad = pull("big");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kChecksumMismatch) << bad.error().message();
  EXPECT_TRUE(nothing_left());
  // The right bytes, but the connection drops halfway: the pull fails, the next one resumes.
  reg_.put_raw_blob(d, first);
  reg_.cut_next(d);
  auto cut = pull("big");
  ASSERT_FALSE(cut);
  EXPECT_TRUE(nothing_left());
  auto r = pull("big");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->blobs_resumed, 1u);
  EXPECT_EQ(*read_file(store_->dir("big") + "/vmstate", 64u << 20), content);
}

}  // namespace
}  // namespace forkd::hub
