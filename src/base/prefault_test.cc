#include "base/prefault.h"

#include <gtest/gtest.h>

#include <string>

#include "base/files.h"

namespace forkd {
namespace {

TEST(FilePrefaulter, BringsInTheWholeFileAndChangesNoByte) {
  auto dir = TempDir::create("forkd-prefault-test");
  ASSERT_TRUE(dir);
  std::string path = dir->path() + "/mem";
  // Not a whole number of its 4 MiB steps, with data at both ends.
  std::string data((9u << 20) + 8192, '\0');
  data.front() = 'a';
  data[data.size() / 2] = 'm';
  data.back() = 'z';
  ASSERT_TRUE(write_file_atomic(path, data));
  FilePrefaulter p(path, data.size());
  p.wait();
  // MADV_POPULATE_WRITE needs Linux 5.14: older kernels bring nothing in, and that is all.
  EXPECT_TRUE(p.done_bytes() == data.size() || p.done_bytes() == 0) << p.done_bytes();
  EXPECT_EQ(*read_file(path), data);
  // Stopped at once: whatever it did by then, no byte changed.
  FilePrefaulter q(path, data.size());
  q.stop();
  EXPECT_LE(q.done_bytes(), data.size());
  EXPECT_EQ(*read_file(path), data);
}

TEST(FilePrefaulter, AMissingFileIsNoError) {
  FilePrefaulter p("/nonexistent/forkd-prefault", 1 << 20);
  p.stop();
  EXPECT_EQ(p.done_bytes(), 0u);
}

}  // namespace
}  // namespace forkd
