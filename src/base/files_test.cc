#include "base/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/paths.h"

namespace forkd {
namespace {

// The durable write and the unflushed replace alike.
TEST(Files, AtomicWriteReplacesAndLeavesNoStaging) {
  for (auto* write : {&write_file_atomic, &replace_file}) {
    auto dir = TempDir::create("forkd-files-test");
    ASSERT_TRUE(dir);
    std::string p = dir->path() + "/x.json";
    ASSERT_TRUE(write(p, "one", 0600));
    ASSERT_TRUE(write(p, "two", 0600));
    auto r = read_file(p);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, "two");
    int n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir->path())) {
      (void)e;
      ++n;
    }
    EXPECT_EQ(n, 1);
  }
}

TEST(Files, AtomicWriteIntoMissingDirFails) {
  for (auto* write : {&write_file_atomic, &replace_file}) {
    auto st = write("/nonexistent-forkd-dir/x", "data", 0600);
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code(), ErrorCode::kNotFound);
    EXPECT_NE(st.error().message().find("/nonexistent-forkd-dir/x"), std::string::npos);
  }
}

TEST(Files, ReadFileRespectsLimit) {
  auto dir = TempDir::create("forkd-files-test");
  ASSERT_TRUE(dir);
  std::string p = dir->path() + "/big";
  ASSERT_TRUE(write_file_atomic(p, std::string(1000, 'a')));
  EXPECT_FALSE(read_file(p, 999));
  EXPECT_TRUE(read_file(p, 1000));
}

TEST(Files, Sha256KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto dir = TempDir::create("forkd-files-test");
  ASSERT_TRUE(dir);
  ASSERT_TRUE(write_file_atomic(dir->path() + "/f", "abc"));
  auto h = sha256_file(dir->path() + "/f");
  ASSERT_TRUE(h);
  EXPECT_EQ(*h, sha256_hex("abc"));
}

TEST(Files, RemoveTreeRefusesDangerousPaths) {
  EXPECT_FALSE(remove_tree(""));
  EXPECT_FALSE(remove_tree("/"));
  EXPECT_FALSE(remove_tree("relative/path"));
  EXPECT_TRUE(remove_tree("/nonexistent-forkd-dir/sub"));
}

TEST(Files, TempDirIsRemoved) {
  std::string path;
  {
    auto dir = TempDir::create("forkd-files-test");
    ASSERT_TRUE(dir);
    path = dir->path();
    ASSERT_TRUE(make_dirs(path + "/a/b"));
    EXPECT_TRUE(path_exists(path + "/a/b"));
  }
  EXPECT_FALSE(path_exists(path));
}

TEST(Paths, SafeNames) {
  EXPECT_TRUE(is_safe_name("abc_DEF-123"));
  EXPECT_TRUE(is_safe_name(std::string(64, 'a')));
  EXPECT_FALSE(is_safe_name(std::string(65, 'a')));
  EXPECT_FALSE(is_safe_name(""));
  EXPECT_FALSE(is_safe_name("../x"));
  EXPECT_FALSE(is_safe_name("a/b"));
  EXPECT_FALSE(is_safe_name("a b"));
}

}  // namespace
}  // namespace forkd
