#include "store/snapshot_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "base/files.h"
#include "base/xxh3.h"
#include "store/tag_write.h"

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
  static SnapshotMeta meta_of(const std::string& tag) {
    SnapshotMeta m;
    m.tag = tag;
    m.image = "minimal";
    m.machine = "microvm";
    m.memory_mib = 256;
    m.files = {{"vmstate", {}}, {"memory", {}}, {"kernel", {}}};
    return m;
  }
  static void fill(const TagWrite& w, const std::string& memory) {
    EXPECT_TRUE(write_file_atomic(w.staging() + "/vmstate", "VMSTATE"));
    EXPECT_TRUE(write_file_atomic(w.staging() + "/memory", memory));
    EXPECT_TRUE(write_file_atomic(w.staging() + "/bzImage", "KERNEL"));
  }
  SnapshotMeta make(const std::string& tag, const std::string& memory = "MEMORY") {
    auto w = TagWrite::begin(*store_, tag, false);
    EXPECT_TRUE(w) << w.error().describe();
    if (!w) return meta_of(tag);
    fill(*w, memory);
    EXPECT_TRUE(w->commit(meta_of(tag)));
    auto loaded = store_->load(tag);
    EXPECT_TRUE(loaded) << loaded.error().describe();
    return loaded ? *loaded : meta_of(tag);
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

// A file whose record holds an XXH3 checksum is checked by XXH3, stamp or not.
TEST_F(StoreTest, AnXxh3ChecksumIsCheckedAsXxh3) {
  auto m = make("t1");
  m.files["memory"] = FileEntry::with_xxh3(6, xxh3_hex("MEMORY"));
  EXPECT_TRUE(store_->verify(m));  // the SHA-256 stamp does not stand for it: hashed again
  EXPECT_TRUE(store_->verify(m));  // and now stamped
  m.files["memory"].xxh3 = xxh3_hex("MEMORX");
  auto wrong = store_->verify(m);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kChecksumMismatch);
  m.files["memory"].xxh3 = xxh3_hex("MEMORY");
  auto fd = open_file(store_->dir("t1") + "/memory", O_WRONLY);
  ASSERT_TRUE(fd);
  ASSERT_EQ(::pwrite(fd->get(), "X", 1, 0), 1);
  fd->reset();
  EXPECT_FALSE(store_->verify(m));
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
    EXPECT_FALSE(TagWrite::begin(*store_, t, false)) << t;
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

// A valid record of a 256 MiB microvm tag "t" (files with placeholder hashes).
SnapshotMeta minimal_meta() {
  SnapshotMeta m;
  m.tag = "t";
  m.image = "minimal";
  m.machine = "microvm";
  m.memory_mib = 256;
  m.files["vmstate"] = FileEntry::with_sha256(1, std::string(64, 'a'));
  m.files["memory"] = FileEntry::with_sha256(1, std::string(64, 'b'));
  return m;
}

// ram_bytes: absent in older records (RAM is exactly memory_mib MiB), kept when written, and
// refused when it cannot be the RAM of memory_mib MiB.
TEST(SnapshotMetaRam, LegacyPaddedAndBad) {
  SnapshotMeta m = minimal_meta();
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
  auto refused = TagWrite::begin(*store_, "t1", false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  auto w = TagWrite::begin(*store_, "t1", true);
  ASSERT_TRUE(w) << w.error().describe();
  fill(*w, "two");
  ASSERT_TRUE(w->commit(meta_of("t1")));
  auto loaded = store_->load("t1");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->files["memory"].sha256, sha256_hex("two"));
  // The exchanged-out old tag is gone, and nothing else is left beside the tag.
  for (const auto& name : list_dir_names(store_->root())) {
    EXPECT_TRUE(name == "t1" || name == ".lock-t1") << "left behind: " << name;
  }
}

TEST_F(StoreTest, SecondWriterOfATagIsRefusedWhileTheFirstRuns) {
  auto first = TagWrite::begin(*store_, "t1", false);
  ASSERT_TRUE(first);
  auto second = TagWrite::begin(*store_, "t1", false);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(second.error().message().find("another operation"), std::string::npos);
  // Other tags are independent, and each writer has its own staging dir.
  auto other = TagWrite::begin(*store_, "t2", false);
  ASSERT_TRUE(other);
  EXPECT_NE(first->staging(), other->staging());
  std::string staging = first->staging();
  first = tl::unexpected(Error(ErrorCode::kCancelled, "dropped"));  // destroys the writer
  EXPECT_FALSE(path_exists(staging)) << "an abandoned write leaves its staging dir";
  EXPECT_TRUE(TagWrite::begin(*store_, "t1", false));
}

TEST_F(StoreTest, ReplaceIsRefusedWhileTheTagHasDependents) {
  make("parent", "P");
  auto link = meta_of("child");
  link.parent_tag = "parent";
  link.parent_content_hash = store_->load("parent")->content_hash();
  link.memory_sha256 = std::string(64, 'b');
  link.files.erase("memory");
  link.files["memory_diff"] = {};
  link.files["memory_pages"] = {};
  {
    auto w = TagWrite::begin(*store_, "child", false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(write_file_atomic(w->staging() + "/vmstate", "V"));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/bzImage", "K"));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/memory.diff", "D"));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/memory.pages", "P"));
    ASSERT_TRUE(w->commit(link)) << "link commit";
  }
  auto w = TagWrite::begin(*store_, "parent", true);
  ASSERT_TRUE(w);
  fill(*w, "P2");
  auto st = w->commit(meta_of("parent"));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(st.error().message().find("child"), std::string::npos) << st.error().message();
  auto still = store_->load("parent");
  ASSERT_TRUE(still);
  EXPECT_EQ(still->files["memory"].sha256, sha256_hex("P"));
}

TEST_F(StoreTest, LeftoversGoOnlyWhenTheirTagIsFree) {
  // A dead writer's staging dir of tag x, and a live writer's of tag y.
  std::string stale = store_->root() + "/.staging-x-0123456789abcdef";
  ASSERT_TRUE(make_dirs(stale));
  ASSERT_TRUE(write_file_atomic(stale + "/memory", "partial"));
  auto live = TagWrite::begin(*store_, "y", false);
  ASSERT_TRUE(live);
  EXPECT_TRUE(store_->list().empty());
  EXPECT_FALSE(store_->load("x"));
  EXPECT_GE(store_->cleanup_stale(), 1);
  EXPECT_FALSE(path_exists(stale));
  EXPECT_TRUE(path_exists(live->staging())) << "cleanup removed a live writer's staging dir";
}

TEST_F(StoreTest, PendingRecordOfADeadWriterBecomesALastingFailure) {
  PendingTag p;
  p.tag = "b1";
  p.pid = 1;
  {
    auto w = TagWrite::begin(*store_, "b1", false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(store_->begin_pending(p));
    auto seen = store_->pending("b1");
    ASSERT_TRUE(seen);
    EXPECT_EQ(seen->status, "writing");
    EXPECT_EQ(store_->cleanup_stale(), 0) << "a live writer's record was cleaned";
  }  // the writer "dies": its lock goes, the record stays
  auto seen = store_->pending("b1");
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->status, "failed");
  EXPECT_GE(store_->cleanup_stale(), 1);
  // Someone polling the 202 of this write learns why it failed, until the tag is deleted.
  auto kept = store_->pending("b1");
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->status, "failed");
  EXPECT_NE(kept->error.find("died"), std::string::npos) << kept->error;
  EXPECT_EQ(store_->cleanup_stale(), 0) << "a settled failure counted again";
  EXPECT_TRUE(store_->remove("b1"));
  EXPECT_FALSE(store_->pending("b1"));
}

TEST_F(StoreTest, RemoveTag) {
  make("t1");
  ASSERT_TRUE(store_->remove("t1"));
  EXPECT_FALSE(store_->exists("t1"));
  EXPECT_FALSE(store_->remove("t1"));
}

// An entry holds exactly one checksum, SHA-256 (64 hex digits) or XXH3 (32); a record with an
// XXH3 one is written as schema 2, one without as 1, and a schema-1 record cannot hold one.
TEST(SnapshotMetaChecksum, Xxh3EntriesRoundTripAsSchema2) {
  SnapshotMeta m = minimal_meta();
  EXPECT_EQ(m.to_json()["schema"], 1);
  m.files["kernel"] = FileEntry::with_xxh3(7, std::string(32, 'c'));
  auto j = m.to_json();
  EXPECT_EQ(j["schema"], 2);
  EXPECT_FALSE(j["files"]["kernel"].contains("sha256"));
  auto back = SnapshotMeta::from_json(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->files["kernel"].xxh3, std::string(32, 'c'));
  EXPECT_EQ(back->files["kernel"].digest(), "xxh3:" + std::string(32, 'c'));
  EXPECT_EQ(back->files["memory"].digest(), std::string(64, 'b'));

  auto refused = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto bad = j;
    edit(bad);
    return !SnapshotMeta::from_json(bad).has_value();
  };
  EXPECT_TRUE(refused([](auto& b) { b["schema"] = 1; }));
  EXPECT_TRUE(refused([](auto& b) { b["files"]["kernel"]["sha256"] = std::string(64, 'd'); }));
  EXPECT_TRUE(refused([](auto& b) { b["files"]["kernel"].erase("xxh3"); }));
  EXPECT_TRUE(refused([](auto& b) { b["files"]["kernel"]["xxh3"] = std::string(31, 'c'); }));
  EXPECT_TRUE(refused([](auto& b) { b["files"]["kernel"]["xxh3"] = std::string(32, 'C'); }));
  EXPECT_TRUE(refused([](auto& b) { b["files"]["kernel"]["xxh3"] = 7; }));
  EXPECT_FALSE(refused([](auto&) {}));
}

// A link committed before its content hash: schema 2, the flag and an empty hash, and nothing
// else (a base, a hash beside the flag, schema 1).
TEST(SnapshotMetaChecksum, APendingContentHashRoundTripsOnALinkOnly) {
  SnapshotMeta m = minimal_meta();
  m.files.erase("memory");
  m.files["memory_diff"] = FileEntry::with_xxh3(1, std::string(32, 'c'));
  m.files["memory_pages"] = FileEntry::with_sha256(1, std::string(64, 'd'));
  m.parent_tag = "p";
  m.parent_content_hash = std::string(64, 'e');
  m.content_pending = true;
  auto j = m.to_json();
  EXPECT_EQ(j["schema"], 2);
  EXPECT_EQ(j["memory_sha256"], "");
  EXPECT_EQ(j["content_pending"], true);
  auto back = SnapshotMeta::from_json(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_TRUE(back->content_pending);
  EXPECT_EQ(back->content_hash(), "");

  auto refused = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto bad = j;
    edit(bad);
    return !SnapshotMeta::from_json(bad).has_value();
  };
  EXPECT_TRUE(refused([](auto& b) { b["memory_sha256"] = std::string(64, 'f'); }));
  EXPECT_TRUE(refused([](auto& b) { b["content_pending"] = false; }));  // a link needs its hash
  EXPECT_TRUE(refused([](auto& b) { b["content_pending"] = "yes"; }));
  EXPECT_TRUE(refused([](auto& b) {
    b["schema"] = 1;
    b["files"]["memory_diff"] = {{"size", 1}, {"sha256", std::string(64, 'c')}};
  }));
  EXPECT_FALSE(refused([](auto& b) {
    b["content_pending"] = false;
    b["memory_sha256"] = std::string(64, 'f');
  }));
  auto base = minimal_meta().to_json();
  base["content_pending"] = true;
  EXPECT_FALSE(SnapshotMeta::from_json(base));
}

TEST(SnapshotMetaNetwork, RoundTripsAndOlderTagsHaveNone) {
  SnapshotMeta m = minimal_meta();
  m.network = "outbound";
  auto j = m.to_json();
  auto back = SnapshotMeta::from_json(j);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->network, "outbound");
  EXPECT_TRUE(back->has_nic());
  j.erase("network");  // a tag from before networking
  auto legacy = SnapshotMeta::from_json(j);
  ASSERT_TRUE(legacy);
  EXPECT_EQ(legacy->network, "none");
  EXPECT_FALSE(legacy->has_nic());
  j["network"] = "bridge";
  EXPECT_FALSE(SnapshotMeta::from_json(j));
  j["network"] = 1;
  EXPECT_FALSE(SnapshotMeta::from_json(j));
}

TEST(SnapshotMetaPit, RoundTripsAndOlderTagsHaveOne) {
  SnapshotMeta m = minimal_meta();
  m.pit = false;
  auto j = m.to_json();
  auto back = SnapshotMeta::from_json(j);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_FALSE(back->pit);
  j.erase("pit");  // a tag from before microvm went without the PIT
  auto legacy = SnapshotMeta::from_json(j);
  ASSERT_TRUE(legacy);
  EXPECT_TRUE(legacy->pit);
  j["pit"] = "off";
  EXPECT_FALSE(SnapshotMeta::from_json(j));
}

TEST(SnapshotMetaIoapic2, RoundTripsAndOlderTagsHaveOne) {
  SnapshotMeta m = minimal_meta();
  m.ioapic2 = false;
  auto j = m.to_json();
  auto back = SnapshotMeta::from_json(j);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_FALSE(back->ioapic2);
  j.erase("ioapic2");  // a tag from before microvm went without its second IO-APIC
  auto legacy = SnapshotMeta::from_json(j);
  ASSERT_TRUE(legacy);
  EXPECT_TRUE(legacy->ioapic2);
  j["ioapic2"] = 0;
  EXPECT_FALSE(SnapshotMeta::from_json(j));
}

}  // namespace
}  // namespace forkd::store
