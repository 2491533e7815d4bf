#include "base/dir_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/files.h"
#include "base/log.h"

namespace forkd {
namespace {

class DirLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create("forkd-dirlock-test");
    ASSERT_TRUE(d);
    tmp_ = std::make_unique<TempDir>(std::move(*d));
  }
  std::unique_ptr<TempDir> tmp_;
};

TEST_F(DirLockTest, FileLockIsExclusiveAndGoneOnRelease) {
  std::string path = tmp_->path() + "/.lock-a";
  auto a = FileLock::try_lock(path, "tag a");
  ASSERT_TRUE(a);
  EXPECT_TRUE(FileLock::held(path));
  auto b = FileLock::try_lock(path, "tag a");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(b.error().message().find("tag a"), std::string::npos);
  a->release();
  EXPECT_FALSE(path_exists(path)) << "a released lock leaves its file";
  EXPECT_FALSE(FileLock::held(path));
  EXPECT_TRUE(FileLock::try_lock(path, "tag a"));
}

TEST_F(DirLockTest, ALockDiesWithItsProcess) {
  std::string path = tmp_->path() + "/.lock-b";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto l = FileLock::try_lock(path, "b");
    char c = l ? '1' : '0';
    (void)!::write(ready[1], &c, 1);
    ::pause();  // killed below, like kill -9 of a writer
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, '1');
  EXPECT_TRUE(FileLock::held(path));
  EXPECT_FALSE(FileLock::try_lock(path, "b"));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE(FileLock::held(path));
  EXPECT_TRUE(FileLock::try_lock(path, "b")) << "the lock outlived its dead holder";
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_F(DirLockTest, ReapTakesOnlyUnlockedDirs) {
  std::string parent = tmp_->path() + "/runs";
  auto live = LockedDir::create(parent, "live");
  ASSERT_TRUE(live) << live.error().describe();
  auto dead = LockedDir::create(parent, "dead");
  ASSERT_TRUE(dead);
  dead->unlock();  // its owner "died": the dir stays, unlocked
  ASSERT_TRUE(make_dirs(parent + "/skip"));
  std::vector<std::string> seen;
  auto removed = reap_dirs(
      parent, [](const std::string& n) { return n != "skip"; },
      [&](const std::string& path) { seen.push_back(path); });
  ASSERT_EQ(removed, std::vector<std::string>{"dead"});
  EXPECT_EQ(seen, std::vector<std::string>{parent + "/dead"});
  EXPECT_TRUE(path_exists(parent + "/live"));
  EXPECT_TRUE(path_exists(parent + "/skip"));
  EXPECT_TRUE(dir_locked(parent + "/live"));
  EXPECT_FALSE(dir_locked(parent + "/skip"));
}

TEST_F(DirLockTest, LockedDirRemovesItselfUnlessKept) {
  std::string parent = tmp_->path() + "/runs";
  std::string p1, p2;
  {
    auto a = LockedDir::create(parent, "a");
    ASSERT_TRUE(a);
    p1 = a->path();
    auto b = LockedDir::create(parent, "b");
    ASSERT_TRUE(b);
    b->keep();
    p2 = b->path();
    EXPECT_FALSE(LockedDir::create(parent, "a")) << "a name in use was created twice";
  }
  EXPECT_FALSE(path_exists(p1));
  EXPECT_TRUE(path_exists(p2));
  EXPECT_FALSE(dir_locked(p2));
}

TEST(RateLimit, LetsABurstThroughPerPeriod) {
  RateLimit rl(3, std::chrono::seconds(3600));
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += rl.allow() ? 1 : 0;
  EXPECT_EQ(allowed, 3);
}

TEST_F(DirLockTest, MakeDirsUsesItsMode) {
  std::string d = tmp_->path() + "/x/y/z";
  ASSERT_TRUE(make_dirs(d, 0700));
  for (const std::string& p : {tmp_->path() + "/x", tmp_->path() + "/x/y", d}) {
    struct stat st;
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u) << p;
  }
  ASSERT_TRUE(write_file_atomic(d + "/f", "data"));
  struct stat st;
  ASSERT_EQ(::stat((d + "/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(write_file_atomic(d + "/g", "data"));
  EXPECT_FALSE(make_dirs(d + "/f/sub")) << "a file in the way is an error";
}

}  // namespace
}  // namespace forkd
