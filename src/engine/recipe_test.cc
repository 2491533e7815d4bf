#include "engine/recipe.h"

#include <gtest/gtest.h>

#include "base/files.h"

namespace forkd::engine {
namespace {

TEST(RecipeTest, ParsesEveryKeyword) {
  auto r = parse_recipe(
      "# a comment\n"
      "\n"
      "suite bookworm\r\n"
      "variant buildd\n"
      "packages python3  python3-numpy\n"
      "  packages g++ libstdc++6 python3\n"
      "check python3 -c 'import numpy'\n");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->suite, "bookworm");
  EXPECT_EQ(r->variant, "buildd");
  EXPECT_EQ(r->packages,
            (std::vector<std::string>{"python3", "python3-numpy", "g++", "libstdc++6"}));
  EXPECT_EQ(r->checks, (std::vector<std::string>{"python3 -c 'import numpy'"}));
}

TEST(RecipeTest, DefaultsToMinbase) {
  auto r = parse_recipe("suite bookworm\npackages python3");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->variant, "minbase");
}

TEST(RecipeTest, RefusesBadLines) {
  struct Case {
    const char* text;
    const char* needle;
  } cases[] = {
      {"packages python3\n", "without a suite"},
      {"suite bookworm\n", "without packages"},
      {"suite bookworm\nsuite trixie\npackages a1\n", "line 2: a second suite"},
      {"suite Bookworm\npackages a1\n", "bad suite"},
      {"suite ../../etc\npackages a1\n", "bad suite"},
      {"suite bookworm\nvariant fakechroot\npackages a1\n", "variant must be"},
      {"suite bookworm\npackages python3;rm\n", "bad package name"},
      {"suite bookworm\npackages -rf\n", "bad package name"},
      {"suite bookworm\npackages $(id)\n", "bad package name"},
      {"suite bookworm\npackages\n", "packages without names"},
      {"suite bookworm\npackages a1\nrun rm -rf /\n", "line 3: unknown keyword 'run'"},
      {"suite bookworm\npackages a1\ncheck\n", "check needs a command"},
      {"suite bookworm\npackages a1\x01\n", "control characters"},
  };
  for (const auto& c : cases) {
    auto r = parse_recipe(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(c.needle), std::string::npos)
        << c.text << " -> " << r.error().message();
  }
  EXPECT_FALSE(parse_recipe(std::string(kMaxRecipeBytes + 1, '#')));
}

TEST(RecipeTest, RepositoryRecipesParse) {
  for (const char* name : {"python-numpy", "node", "workbench"}) {
    auto r = load_recipe(std::string(FORKD_SOURCE_DIR) + "/recipes/" + name + ".recipe");
    ASSERT_TRUE(r) << name << ": " << r.error().describe();
    EXPECT_EQ(r->name, name);
    EXPECT_EQ(r->suite, "bookworm");
  }
  auto py = load_recipe(std::string(FORKD_SOURCE_DIR) + "/recipes/python-numpy.recipe");
  ASSERT_TRUE(py);
  // What guest/images/python-rootfs.sh installs for the built-in python image.
  EXPECT_EQ(py->packages, (std::vector<std::string>{"python3", "python3-numpy"}));
  EXPECT_EQ(py->variant, "minbase");
}

}  // namespace
}  // namespace forkd::engine
