#include "store/snapshot_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "base/files.h"

namespace forkd::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-store-test");
    ASSERT_TRUE(d);
    home_ = std::make_unique<TempDir>(std::move(*d));
    store_ = std::make_unique<SnapshotStore>(home_->path());
  }
  SnapshotMeta make(const std::string& tag, const std::string& memory = "MEMORY") {
    auto staging = store_->stage(tag);
    EXPECT_TRUE(staging);
    EXPECT_TRUE(write_file_atomic(*staging + "/vmstate", "VMSTATE"));
    EXPECT_TRUE(write_file_atomic(*staging + "/memory", memory));
    EXPECT_TRUE(write_file_atomic(*staging + "/bzImage", "KERNEL"));
    SnapshotMeta m;
    m.tag = tag;
    m.image = "minimal";
    m.machine = "microvm";
    m.memory_mib = 256;
    m.files["vmstate"] = {};
    m.files["memory"] = {};
    m.files["kernel"] = {};
    EXPECT_TRUE(store_->commit(*staging, m, false));
    auto loaded = store_->load(tag);
    EXPECT_TRUE(loaded) << loaded.error().describe();
    return loaded ? *loaded : m;
  }
  std::unique_ptr<TempDir> home_;
  std::unique_ptr<SnapshotStore> store_;
};

TEST_F(StoreTest, CommitLoadVerify) {
  auto m = make("t1");
  EXPECT_EQ(m.files["memory"].size, 6u);
  EXPECT_EQ(m.files["memory"].sha256, sha256_hex("MEMORY"));
  EXPECT_TRUE(store_->verify(m));
  ASSERT_EQ(store_->list().size(), 1u);
  EXPECT_EQ(store_->list()[0].tag, "t1");
}

TEST_F(StoreTest, TruncatedFileNamedBeforeAnyHashing) {
  auto m = make("t1");
  ASSERT_EQ(::truncate((store_->dir("t1") + "/memory").c_str(), 3), 0);
  auto st = store_->verify(m);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kChecksumMismatch);
  EXPECT_NE(st.error().message().find("memory"), std::string::npos);
  EXPECT_NE(st.error().message().find("truncated"), std::string::npos);
}

TEST_F(StoreTest, CorruptionOfSameSizeIsCaughtDespiteStamp) {
  auto m = make("t1");
  ASSERT_TRUE(store_->verify(m));
  // Overwrite in place (same size): the stamp no longer matches, so the file is hashed again.
  auto fd = open_file(store_->dir("t1") + "/memory", O_WRONLY);
  ASSERT_TRUE(fd);
  ASSERT_EQ(::pwrite(fd->get(), "X", 1, 0), 1);
  fd->reset();
  auto st = store_->verify(m);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("memory"), std::string::npos);
  EXPECT_NE(st.error().message().find("checksum"), std::string::npos);
}

TEST_F(StoreTest, VmstateIsAlwaysHashed) {
  auto m = make("t1");
  m.files["vmstate"].sha256 = std::string(64, '0');
  auto st = store_->verify(m);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("vmstate"), std::string::npos);
}

TEST_F(StoreTest, UnknownTagListsKnownOnes) {
  make("alpha");
  auto r = store_->load("beta");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.error().message().find("alpha"), std::string::npos);
}

TEST_F(StoreTest, BadTagsRefused) {
  for (const std::string& t :
       std::vector<std::string>{"", "../x", "a/b", std::string(65, 'a'), "a b"}) {
    EXPECT_FALSE(store_->load(t)) << t;
    EXPECT_FALSE(store_->stage(t)) << t;
  }
}

TEST_F(StoreTest, NewerSchemaRefusedWithBothVersions) {
  auto m = make("t1");
  auto j = m.to_json();
  j["schema"] = kSnapshotSchema + 1;
  ASSERT_TRUE(write_file_atomic(store_->dir("t1") + "/snapshot.json", j.dump()));
  auto r = store_->load("t1");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("newer"), std::string::npos);
}

// ram_bytes: absent in older records (RAM is exactly memory_mib MiB), kept when written, and
// refused when it cannot be the RAM of memory_mib MiB.
TEST(SnapshotMetaRam, LegacyPaddedAndBad) {
  SnapshotMeta m;
  m.tag = "t";
  m.image = "minimal";
  m.machine = "microvm";
  m.memory_mib = 256;
  m.files["vmstate"] = {1, std::string(64, 'a')};
  m.files["memory"] = {1, std::string(64, 'b')};
  auto j = m.to_json();
  j.erase("ram_bytes");
  auto legacy = SnapshotMeta::from_json(j);
  ASSERT_TRUE(legacy) << legacy.error().describe();
  EXPECT_EQ(legacy->guest_ram_bytes(), 256u << 20);

  j["ram_bytes"] = (256u << 20) + 8192;
  auto padded = SnapshotMeta::from_json(j);
  ASSERT_TRUE(padded) << padded.error().describe();
  EXPECT_EQ(padded->guest_ram_bytes(), (256u << 20) + 8192);
  EXPECT_EQ(padded->to_json()["ram_bytes"], (256u << 20) + 8192);

  for (uint64_t bad : {uint64_t{255} << 20, (uint64_t{256} << 20) + 100, uint64_t{257} << 20}) {
    j["ram_bytes"] = bad;
    auto r = SnapshotMeta::from_json(j);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("ram_bytes"), std::string::npos);
  }
  j["ram_bytes"] = "big";
  EXPECT_FALSE(SnapshotMeta::from_json(j));
}

TEST_F(StoreTest, ExistingTagNeedsReplace) {
  make("t1", "one");
  auto staging = store_->stage("t1");
  ASSERT_TRUE(staging);
  ASSERT_TRUE(write_file_atomic(*staging + "/vmstate", "V2"));
  ASSERT_TRUE(write_file_atomic(*staging + "/memory", "two"));
  ASSERT_TRUE(write_file_atomic(*staging + "/bzImage", "K"));
  SnapshotMeta m;
  m.tag = "t1";
  m.image = "minimal";
  m.machine = "microvm";
  m.memory_mib = 256;
  m.files = {{"vmstate", {}}, {"memory", {}}, {"kernel", {}}};
  auto refused = store_->commit(*staging, m, false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  ASSERT_TRUE(store_->commit(*staging, m, true));
  auto loaded = store_->load("t1");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->files["memory"].sha256, sha256_hex("two"));
}

TEST_F(StoreTest, StaleStagingIsCleanedAndNeverListed) {
  std::string stale = store_->root() + "/.staging-x-999999";
  ASSERT_TRUE(make_dirs(stale));
  ASSERT_TRUE(write_file_atomic(stale + "/memory", "partial"));
  EXPECT_TRUE(store_->list().empty());
  EXPECT_FALSE(store_->load("x"));
  store_->cleanup_stale();
  EXPECT_FALSE(path_exists(stale));
}

TEST_F(StoreTest, RemoveTag) {
  make("t1");
  ASSERT_TRUE(store_->remove("t1"));
  EXPECT_FALSE(store_->exists("t1"));
  EXPECT_FALSE(store_->remove("t1"));
}

}  // namespace
}  // namespace forkd::store
