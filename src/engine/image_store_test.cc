#include "engine/image_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "base/subprocess.h"

namespace forkd::engine {
namespace {

// `make demo` builds the guest kernel and the python rootfs with guest/prebuild.sh, beside the
// C++ build; it must name the very files forkd looks for, or forkd would build them again.
TEST(ImageStoreTest, PrebuildPathsMatch) {
  const std::string src = FORKD_SOURCE_DIR;
  const std::string home = "/nonexistent/forkd-prebuild-test";  // --path only computes
  ImageStore store(home, src + "/guest", "/nonexistent/forkd-agent");
  for (std::string what : {"kernel", "python-rootfs"}) {
    auto r = run_capture({"env", "FORKD_HOME=" + home, "FORKD_ASSETS_DIR=" + src + "/guest", "bash",
                          src + "/guest/prebuild.sh", "--path", what},
                         std::chrono::seconds(30));
    ASSERT_TRUE(r) << r.error().describe();
    EXPECT_EQ(r->exit_code, 0) << r->output;
    auto want = what == "kernel" ? store.kernel_path() : store.python_rootfs_path();
    ASSERT_TRUE(want) << want.error().describe();
    EXPECT_EQ(r->output, *want + "\n") << what;
  }
}

}  // namespace
}  // namespace forkd::engine
