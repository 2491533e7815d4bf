#pragma once
// Image recipes (recipes/*.recipe): a Debian suite and the packages debootstrap installs in it,
// made into a local image by `forkd image build`. A recipe is a short text file of lines:
//   # comment
//   suite bookworm                      the Debian release (required, once)
//   variant minbase                     debootstrap --variant: minbase (default), buildd, default
//   packages python3 python3-numpy      Debian package names; may repeat (at least one in all)
//   check python3 -c 'import numpy'     a command run in the new tree (chroot) that must succeed
// Only Debian packages are reachable: nothing is fetched from anywhere but the Debian mirror.
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace forkd::engine {

struct Recipe {
  std::string path;  // the file as given ("" for parsed text)
  std::string name;  // the file name without ".recipe": the image's default name
  std::string text;  // the file's bytes (part of the image's inputs hash)
  std::string suite;
  std::string variant = "minbase";
  std::vector<std::string> packages;
  std::vector<std::string> checks;
};

inline constexpr size_t kMaxRecipeBytes = 64 * 1024;

// Parses recipe text; kInvalidArgument naming the line for an unknown keyword, a bad suite,
// variant or package name (Debian's grammar: [a-z0-9][a-z0-9+.-]+), a missing suite or package.
Result<Recipe> parse_recipe(std::string_view text);

// Reads (at most kMaxRecipeBytes) and parses a recipe file.
Result<Recipe> load_recipe(const std::string& path);

}  // namespace forkd::engine
