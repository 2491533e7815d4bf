#include "engine/registry.h"

#include <gtest/gtest.h>

#include <string>

namespace forkd::engine {
namespace {

using namespace std::string_literals;

TEST(Registry, CommandLineNamesADirOnlyAtAnArgumentOrValueStart) {
  const std::string dir = "/h/sandboxes/sb-1";
  std::string cmd = "qemu-system-x86_64\0-pidfile\0/h/sandboxes/sb-1/qemu.pid\0"s;
  EXPECT_TRUE(cmdline_names_dir(cmd, dir));
  EXPECT_TRUE(
      cmdline_names_dir("qemu\0-chardev\0socket,id=q,path=/h/sandboxes/sb-1/q.sock\0"s, dir));
  EXPECT_TRUE(cmdline_names_dir("qemu\0-drive\0file=x,backing=a:/h/sandboxes/sb-1/d\0"s, dir));
  // Another home whose path ends with this one, a longer id, the dir itself without a file.
  EXPECT_FALSE(cmdline_names_dir("qemu\0-pidfile\0/other/root/h/sandboxes/sb-1/qemu.pid\0"s, dir));
  EXPECT_FALSE(cmdline_names_dir("qemu\0-pidfile\0/h/sandboxes/sb-12/qemu.pid\0"s, dir));
  EXPECT_FALSE(cmdline_names_dir("qemu\0-pidfile\0/h/sandboxes/sb-1\0"s, dir));
  // A miss first, then a real match later in the line.
  EXPECT_TRUE(cmdline_names_dir("qemu\0x/h/sandboxes/sb-1/a\0/h/sandboxes/sb-1/b\0"s, dir));
}

}  // namespace
}  // namespace forkd::engine
