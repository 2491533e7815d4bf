#include "engine/code_window.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <algorithm>

#include "base/files.h"

namespace forkd::engine {
namespace {

class CodeWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::create("forkd-code-window");
    ASSERT_TRUE(t);
    tmp_ = std::make_unique<TempDir>(std::move(*t));
    cfg_.home = tmp_->path() + "/home";
    meta_.tag = "t";
    meta_.memory_sha256 = std::string(64, 'a');
  }
  std::unique_ptr<TempDir> tmp_;
  EngineConfig cfg_;
  store::SnapshotMeta meta_;
};

// One hint per tag dir and memory: another memory (a tag replaced) or another dir gets another.
TEST_F(CodeWindowTest, NotedStepsReadBackPerTag) {
  std::string path = code_window_path(cfg_, "/tags/t", meta_);
  EXPECT_EQ(path.rfind(cfg_.home + "/cache/code-window/", 0), 0u) << path;
  EXPECT_FALSE(read_code_window(path)) << "nothing noted yet";
  note_code_window(path, 3);
  EXPECT_EQ(read_code_window(path), 3);
  note_code_window(path, 2);
  EXPECT_EQ(read_code_window(path), 2) << "the latest child's step";
  EXPECT_NE(code_window_path(cfg_, "/tags/u", meta_), path);
  store::SnapshotMeta replaced = meta_;
  replaced.memory_sha256 = std::string(64, 'b');
  EXPECT_NE(code_window_path(cfg_, "/tags/t", replaced), path);
  // No memory hash, no hint: nothing read, nothing written.
  replaced.memory_sha256.clear();
  EXPECT_EQ(code_window_path(cfg_, "/tags/t", replaced), "");
  note_code_window("", 1);
  EXPECT_FALSE(read_code_window(""));
}

// A hint is read strictly: anything but one step in range is no hint.
TEST_F(CodeWindowTest, DamagedHintsAreNone) {
  std::string path = code_window_path(cfg_, "/tags/t", meta_);
  ASSERT_TRUE(make_dirs(path.substr(0, path.rfind('/'))));
  for (const char* bad :
       {"", "\n", "-1\n", "512\n", "2x\n", " 2\n", "99999999999999999999\n", "2\n\n"}) {
    ASSERT_TRUE(write_file_atomic(path, bad));
    EXPECT_FALSE(read_code_window(path)) << "'" << bad << "'";
  }
  ASSERT_TRUE(write_file_atomic(path, std::string(1 << 20, '1')));
  EXPECT_FALSE(read_code_window(path)) << "too long to be one";
  note_code_window(path, 511);
  EXPECT_EQ(read_code_window(path), 511);
  note_code_window(path, 512);  // out of range: left as it was
  note_code_window(path, -1);
  EXPECT_EQ(read_code_window(path), 511);
}

// gc removes the hints of tags that are gone, and old staging files, but not a fresh one (a
// child may be writing it).
TEST_F(CodeWindowTest, GcSweepsHintsOfGoneTags) {
  std::string path = code_window_path(cfg_, "/tags/gone", meta_);
  note_code_window(path, 2);
  const std::string dir = path.substr(0, path.rfind('/'));
  const std::string fresh = dir + "/x.staging.1.ab", old = dir + "/y.staging.1.cd";
  ASSERT_TRUE(write_file_atomic(fresh, "1"));
  ASSERT_TRUE(write_file_atomic(old, "1"));
  timeval past[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
  ASSERT_EQ(::utimes(old.c_str(), past), 0);
  auto removed = sweep_code_windows(cfg_);
  std::sort(removed.begin(), removed.end());
  const std::string name = path.substr(path.rfind('/') + 1);
  EXPECT_EQ(removed, (std::vector<std::string>{"cache/code-window/" + name,
                                               "cache/code-window/y.staging.1.cd"}));
  EXPECT_FALSE(path_exists(path));
  EXPECT_TRUE(path_exists(fresh));
}

}  // namespace
}  // namespace forkd::engine
