#include "engine/disk_checks.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/files.h"

namespace forkd::engine {
namespace {

TEST(DiskChecks, FileDirectlyIn) {
  EXPECT_TRUE(file_directly_in("/s/sb-1", "/s/sb-1/overlay.qcow2"));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-1"));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-1/"));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-12/overlay.qcow2"));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-1/x/overlay.qcow2"));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-1/.."));
  EXPECT_FALSE(file_directly_in("/s/sb-1", "/s/sb-2/overlay.qcow2"));
  EXPECT_FALSE(file_directly_in("", "/overlay.qcow2"));
}

class DiskChecksOnFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-disk-checks");
    ASSERT_TRUE(d);
    dir_.emplace(std::move(*d));
    for (const char* sub : {"/sb-1", "/sb-2", "/snapshots", "/snapshots/t", "/other"}) {
      ASSERT_EQ(::mkdir((root() + sub).c_str(), 0700), 0);
    }
    for (const char* f : {"/sb-1/overlay.qcow2", "/sb-2/overlay.qcow2", "/snapshots/t/base.img",
                          "/snapshots/t/disk.qcow2", "/other/base.img"}) {
      ASSERT_TRUE(write_file_atomic(root() + f, "x"));
    }
  }
  std::string root() const { return dir_->path(); }
  std::optional<TempDir> dir_;
};

TEST_F(DiskChecksOnFiles, TheActiveImageIsAPlainFileOfTheSandboxsOwnDirectory) {
  std::string sb = root() + "/sb-1";
  auto own = check_active_image(sb, sb + "/overlay.qcow2");
  ASSERT_TRUE(own) << own.error().describe();
  EXPECT_FALSE(own->has_value());  // this process's file: nobody to run the tools as
  EXPECT_FALSE(check_active_image(sb, root() + "/sb-2/overlay.qcow2"));
  EXPECT_FALSE(check_active_image(sb, sb + "/../sb-2/overlay.qcow2"));
  EXPECT_FALSE(check_active_image(sb, sb + "/overlay-missing.qcow2"));
  ASSERT_TRUE(write_file_atomic(sb + "/sandbox.json", "{}"));  // the record, not a layer
  EXPECT_FALSE(check_active_image(sb, sb + "/sandbox.json"));
  ASSERT_TRUE(write_file_atomic(sb + "/overlay-1.qcow2", "x"));
  EXPECT_TRUE(check_active_image(sb, sb + "/overlay-1.qcow2"));
  ASSERT_EQ(
      ::symlink((root() + "/sb-2/overlay.qcow2").c_str(), (sb + "/overlay-link.qcow2").c_str()), 0);
  EXPECT_FALSE(check_active_image(sb, sb + "/overlay-link.qcow2"));
  ASSERT_EQ(::mkdir((sb + "/overlay-dir.qcow2").c_str(), 0700), 0);
  EXPECT_FALSE(check_active_image(sb, sb + "/overlay-dir.qcow2"));
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown((sb + "/overlay.qcow2").c_str(), 1900000123, 4321), 0);
    auto jailed = check_active_image(sb, sb + "/overlay.qcow2");
    ASSERT_TRUE(jailed && jailed->has_value());
    EXPECT_EQ((*jailed)->uid, 1900000123u);
    EXPECT_EQ((*jailed)->gid, 4321u);
  }
}

TEST_F(DiskChecksOnFiles, TheChainEndsInATagsBaseImage) {
  std::string snaps = root() + "/snapshots";
  auto base = check_tag_base(snaps, snaps + "/t/base.img");
  ASSERT_TRUE(base) << base.error().describe();
  EXPECT_EQ(*base, snaps + "/t/base.img");
  // Through a link, by its real path.
  ASSERT_EQ(::symlink((snaps + "/t").c_str(), (root() + "/sb-1/t").c_str()), 0);
  auto linked = check_tag_base(snaps, root() + "/sb-1/t/base.img");
  ASSERT_TRUE(linked);
  EXPECT_EQ(*linked, snaps + "/t/base.img");
  EXPECT_FALSE(check_tag_base(snaps, snaps + "/t/disk.qcow2"));
  EXPECT_FALSE(check_tag_base(snaps, root() + "/other/base.img"));
  EXPECT_FALSE(check_tag_base(snaps, snaps + "/base.img"));
  EXPECT_FALSE(check_tag_base(snaps, snaps + "/t/missing/base.img"));
  EXPECT_FALSE(check_tag_base(snaps, "/etc/passwd"));
}

}  // namespace
}  // namespace forkd::engine
