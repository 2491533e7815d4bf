#include "store/link_receiver.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "base/files.h"

namespace forkd::store {
namespace {

constexpr size_t kTestPages = 600;  // more than two chunks of the receiver's runs
constexpr uint64_t kBytes = kTestPages * kPageSize;

std::string page_of(char c) { return std::string(kPageSize, c); }

class LinkReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-link-receiver-test");
    ASSERT_TRUE(d);
    dir_ = std::make_unique<TempDir>(std::move(*d));
    // The parent: pages of 'a'..'z' with a hole (zeros) at every 7th page.
    std::string parent(kBytes, '\0');
    for (size_t p = 0; p < kTestPages; ++p) {
      if (p % 7 != 0)
        parent.replace(p * kPageSize, kPageSize, page_of(static_cast<char>('a' + p % 26)));
    }
    parent_ = parent;
    ASSERT_TRUE(write_file_atomic(path("parent"), parent));
    ASSERT_TRUE(make_dirs(path("recv"), 0700));
    ASSERT_TRUE(make_dirs(path("ref"), 0700));
  }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }
  void matches_write_link(bool content_hash);

  std::unique_ptr<TempDir> dir_;
  std::string parent_;
};

// The receiver, fed the parent's pages with changes, pages sent again and out of order, gives
// exactly what write_link gives for the final memory: hashes, bitmap, diff bytes. Without the
// content hash, the same but that hash, which is left empty.
TEST_F(LinkReceiverTest, MatchesWriteLinkOfTheFinalMemory) { matches_write_link(true); }
TEST_F(LinkReceiverTest, LeavesTheContentHashWhenNotAsked) { matches_write_link(false); }

void LinkReceiverTest::matches_write_link(bool content_hash) {
  auto r = LinkReceiver::open(path("parent"), path("recv"), kBytes);
  ASSERT_TRUE(r) << r.error().message();
  std::string final_mem = parent_;
  auto send = [&](size_t p, const std::string* data) {
    final_mem.replace(p * kPageSize, kPageSize, data ? *data : std::string(kPageSize, '\0'));
    auto st =
        (*r)->page(p * kPageSize, data ? reinterpret_cast<const uint8_t*>(data->data()) : nullptr);
    ASSERT_TRUE(st) << st.error().message();
  };
  // First pass, in order: what the parent has, except a few changes.
  const std::string x = page_of('X'), y = page_of('Y');
  for (size_t p = 0; p < kTestPages; ++p) {
    EXPECT_FALSE((*r)->all_seen());
    std::string cur = parent_.substr(p * kPageSize, kPageSize);
    bool zero = cur == std::string(kPageSize, '\0');
    if (p >= 100 && p < 400) {  // a long run of changes: several writes
      send(p, &x);
    } else if (p == 8) {
      send(p, nullptr);  // a page the guest zeroed
    } else if (p == 14) {
      send(p, &y);  // a hole in the parent that now holds data
    } else {
      send(p, zero ? nullptr : &cur);
    }
  }
  EXPECT_TRUE((*r)->all_seen()) << "the first pass is over";
  // Sent again: back to the parent's content, changed again, zeroed after holding data.
  std::string orig150 = parent_.substr(150 * kPageSize, kPageSize);
  send(150, &orig150);
  send(20, &y);
  send(20, &x);
  send(300, nullptr);
  send(5, &y);
  send(200, &y);  // alone (through the page cache) over a page of a long run (straight to disk)
  auto got = (*r)->finish(content_hash);
  ASSERT_TRUE(got) << got.error().message();

  ASSERT_TRUE(write_file_atomic(path("final"), final_mem));
  auto want = write_link(path("final"), path("parent"), path("ref"));
  ASSERT_TRUE(want) << want.error().message();
  EXPECT_EQ(want->content_sha256, sha256_hex(final_mem));
  EXPECT_EQ(got->content_sha256, content_hash ? want->content_sha256 : "");
  EXPECT_EQ(got->diff.xxh3, want->diff.xxh3);
  EXPECT_TRUE(got->diff.sha256.empty());
  EXPECT_EQ(got->pages.sha256, want->pages.sha256);
  EXPECT_EQ(got->pages_changed, want->pages_changed);
  EXPECT_EQ(got->pages_changed, 303u);  // 100..399 but 150, then 8, 14, 20, 5
  EXPECT_EQ(*read_file(path("recv/memory.diff"), kBytes),
            *read_file(path("ref/memory.diff"), kBytes));
  EXPECT_EQ(*read_file(path("recv/memory.pages")), *read_file(path("ref/memory.pages")));
  EXPECT_EQ(got->diff.size, kBytes);
}

TEST_F(LinkReceiverTest, AMissingPageOrAPageOutsideFails) {
  auto r = LinkReceiver::open(path("parent"), path("recv"), kBytes);
  ASSERT_TRUE(r);
  const std::string x = page_of('X');
  const auto* d = reinterpret_cast<const uint8_t*>(x.data());
  EXPECT_FALSE((*r)->page(kBytes, d));
  EXPECT_FALSE((*r)->page(100, d));  // not page-aligned
  for (size_t p = 0; p + 1 < kTestPages; ++p) ASSERT_TRUE((*r)->page(p * kPageSize, d));
  ASSERT_TRUE((*r)->page(0, d));  // a page again does not count twice
  EXPECT_FALSE((*r)->all_seen());
  auto got = (*r)->finish();
  ASSERT_FALSE(got);
  EXPECT_NE(got.error().message().find("1 pages of the memory never arrived"), std::string::npos);
}

TEST_F(LinkReceiverTest, ASizeOtherThanTheParentsIsRefused) {
  EXPECT_FALSE(LinkReceiver::open(path("parent"), path("recv"), kBytes + kPageSize));
  EXPECT_FALSE(LinkReceiver::open(path("missing"), path("recv"), kBytes));
}

}  // namespace
}  // namespace forkd::store
