#include "store/chain.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "base/dir_lock.h"
#include "base/files.h"
#include "base/xxh3.h"
#include "store/link_hasher.h"
#include "store/tag_write.h"

namespace forkd::store {
namespace {

constexpr size_t kPages = 64;

class ChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-chain-test");
    ASSERT_TRUE(d);
    home_ = std::make_unique<TempDir>(std::move(*d));
    store_ = std::make_unique<SnapshotStore>(home_->path());
    resolver_ = std::make_unique<MemoryResolver>(*store_, home_->path() + "/cache/assembled");
  }
  static std::string memory(char fill) { return std::string(kPages * kPageSize, fill); }

  SnapshotMeta base(const std::string& tag, const std::string& mem) {
    auto w = TagWrite::begin(*store_, tag, false);
    EXPECT_TRUE(w);
    EXPECT_TRUE(write_file_atomic(w->staging() + "/vmstate", "VMSTATE"));
    EXPECT_TRUE(write_file_atomic(w->staging() + "/memory", mem));
    SnapshotMeta m = skeleton(tag);
    m.files["memory"] = {};
    EXPECT_TRUE(w->commit(m));
    return *store_->load(tag);
  }
  // A link of parent whose whole memory is mem; returns its meta. before_commit runs between
  // writing the link and committing it (what another operation does meanwhile). pending: the
  // link is committed without its content hash, as a live branch commits it.
  Result<SnapshotMeta> link(const std::string& tag, const SnapshotMeta& parent,
                            const std::string& mem, LinkWrite* out = nullptr,
                            const std::function<void()>& before_commit = {}, bool pending = false) {
    auto write = TagWrite::begin(*store_, tag, false);
    if (!write) return tl::unexpected(write.error());
    const std::string* staging = &write->staging();
    FORKD_TRY(write_file_atomic(*staging + "/vmstate", "VMSTATE"));
    FORKD_TRY(write_file_atomic(*staging + "/full", mem));
    auto parent_mem = resolver_->resolve(parent);
    if (!parent_mem) return tl::unexpected(parent_mem.error());
    auto w = write_link(*staging + "/full", *parent_mem, *staging);
    if (!w) return tl::unexpected(w.error());
    if (out) *out = *w;
    ::unlink((*staging + "/full").c_str());
    SnapshotMeta m = skeleton(tag);
    m.parent_tag = parent.tag;
    m.parent_content_hash = parent.content_hash();
    m.memory_sha256 = pending ? "" : w->content_sha256;
    m.content_pending = pending;
    m.files["memory_diff"] = {};
    m.files["memory_pages"] = {};
    if (before_commit) before_commit();
    FORKD_TRY(write->commit(m));
    return store_->load(tag);
  }
  static SnapshotMeta skeleton(const std::string& tag) {
    SnapshotMeta m;
    m.tag = tag;
    m.image = "minimal";
    m.machine = "microvm";
    m.memory_mib = 256;
    m.files["vmstate"] = {};
    return m;
  }
  // Rewrites a tag's snapshot.json through fn (to fake broken chain metadata).
  void edit(const std::string& tag, const std::function<void(nlohmann::json&)>& fn) {
    std::string path = store_->dir(tag) + "/snapshot.json";
    auto j = nlohmann::json::parse(*read_file(path));
    fn(j);
    ASSERT_TRUE(write_file_atomic(path, j.dump()));
  }

  std::unique_ptr<TempDir> home_;
  std::unique_ptr<SnapshotStore> store_;
  std::unique_ptr<MemoryResolver> resolver_;
};

// Over several 1 MiB chunks, with runs of changed pages across a chunk boundary and at both
// ends: the diff and bitmap hashes write_link reports are those of the files it wrote.
TEST_F(ChainTest, LinkHashesAreThoseOfTheFilesWritten) {
  const size_t pages = 3 * 256 + 5;
  std::string parent_mem(pages * kPageSize, 'p');
  auto a = base("big", parent_mem);
  std::string mem = parent_mem;
  for (size_t p : {size_t{0}, size_t{1}, size_t{254}, size_t{255}, size_t{256}, size_t{257},
                   size_t{600}, pages - 1}) {
    mem[p * kPageSize + 9] = 'c';
  }
  auto write = TagWrite::begin(*store_, "big-l", false);
  ASSERT_TRUE(write);
  std::string staging = write->staging();
  ASSERT_TRUE(write_file_atomic(staging + "/full", mem));
  auto parent_path = resolver_->resolve(a);
  ASSERT_TRUE(parent_path);
  auto w = write_link(staging + "/full", *parent_path, staging);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->pages_changed, 8u);
  EXPECT_EQ(w->content_sha256, sha256_hex(mem));
  EXPECT_EQ(w->diff.size, mem.size());
  EXPECT_EQ(w->diff.xxh3,
            xxh3_hex(*read_file(staging + "/" + snapshot_file_name("memory_diff"), 1 << 30)));
  EXPECT_EQ(w->pages.sha256, *sha256_file(staging + "/" + snapshot_file_name("memory_pages")));
  std::string diff = *read_file(staging + "/" + snapshot_file_name("memory_diff"));
  EXPECT_EQ(diff.substr(255 * kPageSize, 3 * kPageSize),
            mem.substr(255 * kPageSize, 3 * kPageSize));
  EXPECT_EQ(diff.substr(2 * kPageSize, kPageSize), std::string(kPageSize, '\0'));
}

// Memory larger than the hasher's zero buffer, and both hashes against hashing the bytes here; a
// hole in the memory reads as zeros.
TEST(LinkHasher, HashesMatchTheBytesWithUnchangedPagesZeroed) {
  const size_t n = 3 * LinkHasher::kMaxChunk;
  const size_t pages = n / LinkHasher::kPage;
  std::string parent(n, 'd');
  for (size_t i = 0; i < n; i += 4099) parent[i] = static_cast<char>(i);
  std::string data = parent;
  std::string diff(n, '\0');
  for (size_t p : {size_t{0}, size_t{7}, size_t{8}, pages / 2, pages - 1}) {
    data[p * kPageSize + 5] = 'X';
    diff.replace(p * kPageSize, kPageSize, data, p * kPageSize, kPageSize);
  }
  // Page 3 of the memory is a hole (so it differs from the parent's, and is zeros in the diff
  // as well).
  std::vector<uint8_t> holes(pages, 0);
  holes[3] = 1;
  std::string as_read = data;
  as_read.replace(3 * kPageSize, kPageSize, kPageSize, '\0');
  MemView full{data.data(), holes};
  MemView old{parent.data(), {}};
  LinkHasher h(full, old, n);
  auto got = h.finish();
  EXPECT_EQ(got.content, sha256_hex(as_read));
  EXPECT_EQ(got.diff, xxh3_hex(diff));
  // Nothing changed: the diff is all zeros.
  LinkHasher same(old, old, n);
  auto zero = same.finish();
  EXPECT_EQ(zero.content, sha256_hex(parent));
  EXPECT_EQ(zero.diff, xxh3_hex(std::string(n, '\0')));
}

// Writes `pages` pages of which only those in `data` (page -> byte) are written; the rest stay
// holes. Returns the bytes the file reads as.
std::string sparse_file(const std::string& path, size_t pages,
                        const std::vector<std::pair<size_t, char>>& data) {
  std::string bytes(pages * kPageSize, '\0');
  auto fd = open_file(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  EXPECT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd->get(), static_cast<off_t>(bytes.size())), 0);
  for (auto [p, c] : data) {
    std::string page(kPageSize, c);
    bytes.replace(p * kPageSize, kPageSize, page);
    EXPECT_EQ(::pwrite(fd->get(), page.data(), page.size(), static_cast<off_t>(p * kPageSize)),
              static_cast<ssize_t>(page.size()));
  }
  return bytes;
}

TEST(LinkHasher, HolePagesAreThePagesWithNoDataAtAll) {
  auto dir = TempDir::create("forkd-holes");
  ASSERT_TRUE(dir);
  std::string path = dir->path() + "/f";
  sparse_file(path, 40, {{3, 'a'}, {4, 'b'}, {30, 'c'}});
  auto fd = open_file(path, O_RDONLY);
  ASSERT_TRUE(fd);
  auto holes = hole_pages(fd->get(), 40 * kPageSize);
  if (holes.empty()) GTEST_SKIP() << "this file system reports no holes";
  ASSERT_EQ(holes.size(), 40u);
  for (size_t p = 0; p < 40; ++p) {
    const bool data = p == 3 || p == 4 || p == 30;
    EXPECT_EQ(holes[p] == 0, data) << "page " << p;
  }
  // A file with no holes reports none.
  std::string full = dir->path() + "/full";
  ASSERT_TRUE(write_file_atomic(full, std::string(8 * kPageSize, 'x')));
  auto ffd = open_file(full, O_RDONLY);
  ASSERT_TRUE(ffd);
  EXPECT_TRUE(hole_pages(ffd->get(), 8 * kPageSize).empty());
}

// A branch's destination leaves the pages it never wrote as holes (zero), and so may the
// parent's memory: every mix of hole, zero page and data gives the diff, hashes and memory of
// the same bytes written out in full.
TEST_F(ChainTest, LinksOfSparseMemoriesMatchTheirBytes) {
  const size_t pages = 300;
  // parent: data at 1 (x), 2 (zeros written), 5 (p), 6 (p), 7 (zeros), 299 (q); holes elsewhere
  std::string parent_path = home_->path() + "/parent.mem";
  std::string parent_bytes = sparse_file(
      parent_path, pages, {{1, 'x'}, {2, '\0'}, {5, 'p'}, {6, 'p'}, {7, '\0'}, {299, 'q'}});
  // new: hole at 1 (changed: now zero), 2 (unchanged zero), 6 (changed); data 5 (same p),
  // 7 (n: changed), 9 (zeros written over a hole: unchanged), 10 (d, over a hole: changed),
  // 299 (r: changed)
  std::string full_path = home_->path() + "/full.mem";
  std::string full_bytes =
      sparse_file(full_path, pages, {{5, 'p'}, {7, 'n'}, {9, '\0'}, {10, 'd'}, {299, 'r'}});
  auto fd = open_file(full_path, O_RDONLY);
  ASSERT_TRUE(fd);
  if (hole_pages(fd->get(), pages * kPageSize).empty()) GTEST_SKIP() << "no holes here";

  std::string out = home_->path() + "/out";
  ASSERT_TRUE(make_dirs(out));
  auto w = write_link(full_path, parent_path, out);
  ASSERT_TRUE(w) << w.error().describe();
  std::string diff_bytes(pages * kPageSize, '\0');
  size_t changed = 0;
  for (size_t p = 0; p < pages; ++p) {
    if (full_bytes.compare(p * kPageSize, kPageSize, parent_bytes, p * kPageSize, kPageSize)) {
      ++changed;
      diff_bytes.replace(p * kPageSize, kPageSize, full_bytes, p * kPageSize, kPageSize);
    }
  }
  EXPECT_EQ(changed, 5u);  // 1, 6, 7, 10, 299
  EXPECT_EQ(w->pages_changed, changed);
  EXPECT_EQ(w->content_sha256, sha256_hex(full_bytes));
  EXPECT_EQ(w->diff.xxh3, xxh3_hex(diff_bytes));
  std::string diff_path = out + "/" + snapshot_file_name("memory_diff");
  EXPECT_EQ(*read_file(diff_path), diff_bytes);
  EXPECT_EQ(w->diff.xxh3, xxh3_hex(*read_file(diff_path, 1 << 30)));
  std::string bitmap = *read_file(out + "/" + snapshot_file_name("memory_pages"));
  for (size_t p = 0; p < pages; ++p) {
    const bool bit = (bitmap[p / 8] >> (p % 8)) & 1;
    EXPECT_EQ(bit, p == 1 || p == 6 || p == 7 || p == 10 || p == 299) << "page " << p;
  }
}

// An adopted memory is stamped for this boot only (its data may not be on disk yet): with
// another boot's id in its stamp it is assembled again from the link.
TEST_F(ChainTest, AdoptedMemoryIsTrustedOnlyInTheBootThatWroteIt) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[9 * kPageSize] = 'y';
  auto l1 = link("l1", a, m1);
  ASSERT_TRUE(l1);
  std::string full = home_->path() + "/whole.mem";
  ASSERT_TRUE(write_file_atomic(full, m1));
  ASSERT_TRUE(resolver_->adopt(*l1, full));
  std::string adopted = resolver_->assembled_path(*l1);
  auto stamp = read_file(adopted + ".verified");
  ASSERT_TRUE(stamp);
  ASSERT_NE(stamp->find(" boot="), std::string::npos) << *stamp;
  std::string id = file_identity(adopted);
  auto p1 = resolver_->resolve(*l1);
  ASSERT_TRUE(p1);
  EXPECT_EQ(file_identity(*p1), id) << "adopted memory must be used as it is";
  std::string other = stamp->substr(0, stamp->find(" boot=")) + " boot=another-boot";
  ASSERT_TRUE(write_file_atomic(adopted + ".verified", other));
  auto p2 = resolver_->resolve(*l1);
  ASSERT_TRUE(p2);
  EXPECT_NE(file_identity(*p2), id) << "a stamp of another boot must not be trusted";
  EXPECT_EQ(*read_file(*p2), m1);
}

TEST_F(ChainTest, LinkStoresChangedPagesAndAssemblesBack) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[3 * kPageSize] = 'x';
  m1[40 * kPageSize + 7] = 'y';
  LinkWrite w;
  auto l1 = link("l1", a, m1, &w);
  ASSERT_TRUE(l1) << l1.error().describe();
  EXPECT_EQ(w.pages_changed, 2u);
  EXPECT_EQ(w.content_sha256, sha256_hex(m1));
  EXPECT_LE(w.bytes_stored, 4 * kPageSize) << "only the changed pages take blocks";

  std::string m2 = m1;
  m2[63 * kPageSize + 1] = 'z';
  auto l2 = link("l2", *l1, m2);
  ASSERT_TRUE(l2) << l2.error().describe();
  auto path = resolver_->resolve(*l2);
  ASSERT_TRUE(path) << path.error().describe();
  EXPECT_EQ(*read_file(*path), m2);

  auto info = chain_info(*store_, "l2");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->depth, 2);
  EXPECT_EQ(info->ancestors, std::vector<std::string>({"a", "l1"}));
  EXPECT_TRUE(info->warning.empty());
  EXPECT_EQ(direct_dependents(*store_, "a"), std::vector<std::string>({"l1"}));
  EXPECT_EQ(all_descendants(*store_, "a"), std::vector<std::string>({"l2", "l1"}));
}

TEST_F(ChainTest, AssembledMemoryIsReusedAndCheckedAgainstItsHash) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[5] = 'q';
  auto l1 = link("l1", a, m1);
  ASSERT_TRUE(l1);
  auto p1 = resolver_->resolve(*l1);
  ASSERT_TRUE(p1);
  std::string id = file_identity(*p1);
  auto p2 = resolver_->resolve(*l1);
  ASSERT_TRUE(p2);
  EXPECT_EQ(file_identity(*p2), id) << "a second spawn must not assemble again";
  // A changed diff is caught when the memory is assembled again.
  ::unlink(p1->c_str());
  std::string diff = store_->dir("l1") + "/memory.diff";
  ::chmod(diff.c_str(), 0644);
  auto fd = open_file(diff, O_WRONLY);
  ASSERT_TRUE(fd);
  ASSERT_EQ(::pwrite(fd->get(), "Z", 1, 5), 1);
  auto bad = resolver_->resolve(*l1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kChecksumMismatch);
}

// Concurrent first spawns of one link: one assembles, the others wait for it and take its file;
// one that finds the lock held by a dead assembler (released) assembles itself.
TEST_F(ChainTest, OneAssemblerOfALinkAtATime) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  for (size_t p = 0; p < kPages; p += 3) m1[p * kPageSize + 1] = 'c';
  auto l1 = link("l1", a, m1);
  ASSERT_TRUE(l1);
  std::vector<std::string> paths(6), ids(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < paths.size(); ++i) {
    threads.emplace_back([&, i] {
      auto p = resolver_->resolve(*l1);
      if (!p) return;
      paths[i] = *p;
      ids[i] = file_identity(*p);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(paths[i], resolver_->assembled_path(*l1)) << i;
    EXPECT_EQ(ids[i], ids[0]) << "one file for all: assembled once, " << i;
  }
  EXPECT_EQ(*read_file(paths[0]), m1);
  for (const auto& name : list_dir_names(home_->path() + "/cache/assembled")) {
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
  }
  // A held lock (another assembler at work) is waited for; once released, this one assembles.
  ::unlink(paths[0].c_str());
  auto held = FileLock::try_lock(paths[0] + ".lock", "test");
  ASSERT_TRUE(held);
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    held = FileLock();
  });
  auto t0 = std::chrono::steady_clock::now();
  auto again = resolver_->resolve(*l1);
  release.join();
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(140));
  EXPECT_EQ(*read_file(*again), m1);
}

// A link committed without its content hash gets it from its first assembly: the record then
// holds the SHA-256 of the assembled bytes (what write_link computed), the file is named by it,
// and a stale copy of the pending record finds that file without assembling again.
TEST_F(ChainTest, APendingLinkGetsItsContentHashFromItsFirstAssembly) {
  auto a = base("a", memory('a'));
  std::string mem = memory('a');
  mem.replace(3 * kPageSize, kPageSize, std::string(kPageSize, 'z'));
  mem[40 * kPageSize + 1] = 'y';
  LinkWrite w;
  auto l = link("l", a, mem, &w, {}, /*pending=*/true);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_TRUE(l->content_pending);
  EXPECT_EQ(l->content_hash(), "");

  auto path = resolver_->resolve(*l);
  ASSERT_TRUE(path) << path.error().message();
  EXPECT_EQ(*read_file(*path), mem);
  auto now = store_->load("l");
  ASSERT_TRUE(now);
  EXPECT_FALSE(now->content_pending);
  EXPECT_EQ(now->content_hash(), w.content_sha256);
  EXPECT_EQ(now->content_hash(), sha256_hex(mem));
  EXPECT_EQ(*path, resolver_->assembled_path(*now));

  struct stat before {};
  ASSERT_EQ(::stat(path->c_str(), &before), 0);
  auto again = resolver_->resolve(*l);  // the stale, pending record
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *path);
  struct stat after {};
  ASSERT_EQ(::stat(again->c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  auto settled = resolver_->settle(*l);
  ASSERT_TRUE(settled);
  EXPECT_EQ(settled->content_hash(), w.content_sha256);

  // A link on top names it by that hash, and assembles.
  std::string mem2 = mem;
  mem2[9 * kPageSize] = 'q';
  auto l2 = link("l2", *now, mem2);
  ASSERT_TRUE(l2) << l2.error().message();
  EXPECT_EQ(l2->parent_content_hash.value_or(""), w.content_sha256);
  auto p2 = resolver_->resolve(*l2);
  ASSERT_TRUE(p2) << p2.error().message();
  EXPECT_EQ(*read_file(*p2), mem2);
}

// settle() of a pending link whose parent is also pending settles both, parent first; and a
// hash is recorded only into the very link it was computed for.
TEST_F(ChainTest, SettlingGoesUpTheChainAndRecordsOnlyIntoTheSameLink) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[2 * kPageSize] = '1';
  auto l1 = link("l1", a, m1, nullptr, {}, /*pending=*/true);
  ASSERT_TRUE(l1);
  // A link on it, made while it held its hash, then the parent's record set back to pending and
  // its assembled memory dropped (a branch settles its parent first; this is made by hand).
  edit("l1", [&](nlohmann::json& j) {
    j["content_pending"] = false;
    j["memory_sha256"] = sha256_hex(m1);
  });
  std::string m2 = m1;
  m2[5 * kPageSize] = '2';
  auto l2 = link("l2", *store_->load("l1"), m2, nullptr, {}, /*pending=*/true);
  ASSERT_TRUE(l2) << l2.error().message();
  edit("l1", [](nlohmann::json& j) {
    j["content_pending"] = true;
    j["memory_sha256"] = "";
  });
  resolver_->forget("l1");
  auto settled = resolver_->settle(*store_->load("l2"));
  ASSERT_TRUE(settled) << settled.error().message();
  EXPECT_EQ(settled->content_hash(), sha256_hex(m2));
  EXPECT_EQ(store_->load("l1")->content_hash(), sha256_hex(m1));

  // A record that holds another hash, or another link under the same tag, takes none.
  auto st = store_->record_content_hash(*settled, std::string(64, '9'));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kChecksumMismatch);
  SnapshotMeta other = *settled;
  other.files["memory_diff"].xxh3 = std::string(32, '7');
  st = store_->record_content_hash(other, sha256_hex(m2));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(store_->load("l2")->content_hash(), sha256_hex(m2));
}

TEST_F(ChainTest, MissingParentAndCyclesAreReportedNotLoopedOn) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[0] = 'b';
  auto l1 = link("l1", a, m1);
  ASSERT_TRUE(l1);
  std::string m2 = m1;
  m2[1] = 'c';
  auto l2 = link("l2", *l1, m2);
  ASSERT_TRUE(l2);

  // A cycle: l1's parent is l2, whose parent is l1.
  edit("l1", [](nlohmann::json& j) { j["parent_tag"] = "l2"; });
  auto info = chain_info(*store_, "l2");
  ASSERT_TRUE(info);
  EXPECT_NE(info->warning.find("cycle"), std::string::npos) << info->warning;
  // Resolving a link whose cached memory is gone follows the broken metadata and stops.
  for (const auto& name : list_dir_names(home_->path() + "/cache/assembled")) {
    ::unlink((home_->path() + "/cache/assembled/" + name).c_str());
  }
  auto reloaded = store_->load("l2");
  ASSERT_TRUE(reloaded);
  EXPECT_FALSE(resolver_->resolve(*reloaded));

  // A missing parent.
  edit("l1", [](nlohmann::json& j) { j["parent_tag"] = "gone"; });
  info = chain_info(*store_, "l1");
  ASSERT_TRUE(info);
  EXPECT_NE(info->warning.find("'gone'"), std::string::npos) << info->warning;
  auto l1b = store_->load("l1");
  ASSERT_TRUE(l1b);
  auto r = resolver_->resolve(*l1b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message().find("gone"), std::string::npos);
}

// A parent removed or replaced while a link of it is written: the link is not committed, and a
// removal that refuses dependents checks them under the parent's lock.
TEST_F(ChainTest, ALinkNeedsItsParentUnchangedAndKeepsIt) {
  auto a = base("a", memory('a'));
  std::string m1 = memory('a');
  m1[0] = 'b';
  auto gone = link("l1", a, m1, nullptr, [&] { EXPECT_TRUE(store_->remove("a", true)); });
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kFailedPrecondition) << gone.error().describe();
  EXPECT_FALSE(store_->exists("l1"));

  auto b = base("b", memory('b'));
  auto replaced = link("l2", b, m1, nullptr, [&] {
    auto w = TagWrite::begin(*store_, "b", true);
    ASSERT_TRUE(w);
    ASSERT_TRUE(write_file_atomic(w->staging() + "/vmstate", "OTHER"));
    ASSERT_TRUE(write_file_atomic(w->staging() + "/memory", memory('c')));
    SnapshotMeta m = skeleton("b");
    m.files["memory"] = {};
    ASSERT_TRUE(w->commit(m));
  });
  ASSERT_FALSE(replaced);
  EXPECT_EQ(replaced.error().code(), ErrorCode::kFailedPrecondition);

  // The parent's lock held by another operation for a moment: the commit waits for it.
  auto c = base("c", memory('c'));
  std::jthread holder;
  std::atomic<bool> locked{false};
  auto waited = link("l3", c, m1, nullptr, [&] {
    holder = std::jthread([&] {
      auto l = store_->lock_tag("c");
      locked = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    while (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  ASSERT_TRUE(waited) << waited.error().describe();
  auto refused = store_->remove("c", true);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("l3"), std::string::npos);
  EXPECT_TRUE(store_->exists("c"));
  EXPECT_TRUE(store_->remove("c")) << "without the check (force), it goes";
}

TEST_F(ChainTest, PendingRecordsListWritesAndDeadWritersReadAsFailed) {
  PendingTag p;
  p.tag = "w1";
  p.pid = static_cast<int>(::getpid());
  {
    auto w = TagWrite::begin(*store_, "w1", false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(store_->begin_pending(p));
    ASSERT_EQ(store_->list_pending().size(), 1u);
    EXPECT_EQ(store_->list_pending()[0].status, "writing");
    store_->end_pending("w1");
    EXPECT_TRUE(store_->list_pending().empty());
  }
  p.tag = "w2";
  {
    auto w = TagWrite::begin(*store_, "w2", false);
    ASSERT_TRUE(w);
    ASSERT_TRUE(store_->begin_pending(p));
  }  // the writer is gone (its lock with it), its record not
  auto dead = store_->pending("w2");
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->status, "failed");
  EXPECT_NE(dead->error.find("died"), std::string::npos);
  EXPECT_TRUE(store_->remove("w2")) << "deleting a failed tag clears it";
  EXPECT_FALSE(store_->pending("w2"));
}

}  // namespace
}  // namespace forkd::store
