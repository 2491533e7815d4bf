#pragma once
// For vmm's tests: a temporary directory standing in for a host tree (/sys/fs/cgroup, /proc),
// with helpers to write a file into it (its directories made) and read one back.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "base/files.h"

namespace forkd::vmm {

class FakeRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::create("vmm-fake-root");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    root_ = dir_->path();
  }
  void put(const std::string& rel, const std::string& text) {
    if (size_t slash = rel.rfind('/'); slash != std::string::npos) {
      ASSERT_TRUE(make_dirs(root_ + "/" + rel.substr(0, slash)));
    }
    ASSERT_TRUE(write_file_atomic(root_ + "/" + rel, text));
  }
  std::string get(const std::string& rel) {
    auto t = read_file(root_ + "/" + rel);
    return t ? *t : "<missing>";
  }
  std::optional<TempDir> dir_;
  std::string root_;
};

}  // namespace forkd::vmm
