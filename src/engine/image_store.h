#pragma once
// Guest kernel and images, built on first use and cached by a hash of their inputs:
//   $FORKD_HOME/cache/kernel-<hash>/bzImage       (guest/kernel/build.sh + forkd.config + source)
//   $FORKD_HOME/cache/python-rootfs-<hash>.tar    (guest/images/python-rootfs.sh)
//   $FORKD_HOME/images/<name>/image.json + files  (assembled with the current agent)
// Builds run under an exclusive lock (cache/.build.lock; the rootfs tarball under its own,
// cache/.rootfs.lock, so it can be made beside a kernel build), so concurrent forkd processes
// build each thing once. guest/prebuild.sh builds the kernel and the python rootfs outside forkd
// (`make demo`, beside the C++ build) with the same keys, locks and paths.
// Everything is staged and renamed into place: a killed build never looks complete.
//
// Besides the built-in images (known_images()), a home holds *local* images: root filesystem
// trees made into an ext4 disk by install_tree (`forkd image import` from a registry, `forkd
// image build` from a recipe). Their image.json has a "source" object saying where they came
// from; they are never rebuilt by get().
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace forkd::engine {

struct Image {
  std::string name;
  std::string kernel;  // bzImage
  std::string initrd;  // initramfs (minimal), empty otherwise
  std::string disk;    // base root disk, raw ext4 (python), empty otherwise; never written
  std::string append;  // kernel command line
  bool has_python = false;
};

// The kernel command line of an image booting from its ext4 disk with forkd-agent as init.
// no_prefetch_block_bitmaps: ext4 otherwise reads every group's block bitmap in a kernel thread
// that starts up to 5 s after the mount, usually after the tag was frozen, so every child of the
// tag did it again after its restore (and translated the code for it); allocation reads a
// group's bitmap when it needs it either way.
inline constexpr const char* kDiskImageAppend =
    "console=ttyS0 quiet panic=-1 root=/dev/vda rw rootfstype=ext4 "
    "rootflags=no_prefetch_block_bitmaps init=/sbin/forkd-agent";

// Where a local image came from (image.json "source").
struct ImageSource {
  std::string kind;             // "import" (a container image) or "recipe"
  std::string ref;              // import: the reference as given
  std::string manifest_digest;  // import: the image manifest (after choosing the platform)
  std::string index_digest;     // import: the index the reference named, or ""
  std::string recipe;           // recipe: the recipe file
  std::string inputs_hash;      // recipe: hash of everything the image was built from
};

struct Recipe;  // recipe.h

// What build_recipe made: the image, and whether it was already there for the same inputs.
struct RecipeBuild {
  Image image;
  bool cached = false;
};

// Receives one human-readable progress line at a time.
using ProgressFn = std::function<void(std::string_view line)>;

class ImageStore {
 public:
  ImageStore(std::string home, std::string assets_dir, std::string agent_path);

  // Names of the images this build knows how to make.
  static const std::vector<std::string>& known_images();

  // The image, built first if missing or stale (built-in), or as imported/built (local).
  // Unknown names are kNotFound listing the images there are.
  Result<Image> get(std::string_view name, const ProgressFn& progress);

  // Names of the local images in this home, sorted.
  std::vector<std::string> local_images() const;
  // The "source" object of a local image's image.json, or null when there is no such image.
  nlohmann::json local_source(std::string_view name) const;

  // A name a local image may take: [A-Za-z0-9_-]{1,64} and not a built-in image's name.
  static Status validate_local_name(std::string_view name);

  // Removes local image `name` (kNotFound when there is none; built-in names are refused).
  // Tags made from it keep working: they hold their own links to its disk and kernel.
  Status remove_local(std::string_view name);

  // Staging and moved-aside image dirs whose process died (a killed build, import or remove):
  // removed, and named relative to the home.
  std::vector<std::string> sweep_leftovers() const;

  // Makes local image `name` from the root filesystem tree at tree: forkd-agent injected as its
  // init (guest_tree.h), an ext4 disk built from it with mkfs.ext4 -d (no mounts), the guest
  // kernel beside it, and image.json recording source; then swapped in atomically, replacing
  // an image of that name (tags made from the old one keep their own copy of its disk). The
  // tree is modified (agent, mount points) and left for the caller to remove.
  Result<Image> install_tree(std::string_view name, const std::string& tree,
                             const ImageSource& source, const ProgressFn& progress);

  // Makes local image `name` from a recipe (recipe.h): its tree by debootstrap, as the python
  // image is made (guest/images/recipe-rootfs.sh; the tarball is cached in
  // cache/recipe-<hash>.tar by the recipe's text and the script), unpacked into work_dir, then
  // install_tree. Nothing is rebuilt (cached) when image `name` already comes from the same
  // inputs (recipe, script, agent, kernel). Needs root (debootstrap) and the Debian mirror.
  Result<RecipeBuild> build_recipe(const Recipe& recipe, std::string_view name,
                                   const std::string& work_dir, const ProgressFn& progress);

  // The guest kernel, built first if missing.
  Result<std::string> kernel(const ProgressFn& progress);

  // Where the kernel and the python image's rootfs tarball are cached for the current inputs
  // (built or not). guest/prebuild.sh --path says the same; a unit test holds them together.
  Result<std::string> kernel_path() const;
  Result<std::string> python_rootfs_path() const;

  // For doctor: is the kernel / image already built for the current inputs?
  Result<bool> kernel_cached() const;
  Result<bool> image_cached(std::string_view name) const;

 private:
  Result<std::string> kernel_hash() const;
  Result<std::string> image_hash(std::string_view name) const;
  std::optional<Image> load_cached(std::string_view name, const std::string& hash) const;
  Result<Image> load_local(std::string_view name, const ProgressFn& progress);
  // Puts the current agent into local image name's disk (debugfs on a copy, swapped in).
  Status refresh_agent(std::string_view name, const std::string& agent_sum,
                       const ProgressFn& progress);
  Status link_kernel(const std::string& kernel_path, const std::string& dir) const;
  // Checksums and image.json into staging, then staging swapped in as images/<name>.
  Status publish(std::string_view name, const std::string& staging, nlohmann::json meta);
  Result<Image> build_image(std::string_view name, const std::string& hash,
                            const std::string& kernel_path, const ProgressFn& progress);
  Result<std::string> python_rootfs(const ProgressFn& progress);
  // The exclusive lock every build and publish holds (flock, released with the descriptor).
  Result<UniqueFd> build_lock() const { return cache_lock(".build.lock"); }
  // An exclusive flock on cache/<name>, waited for.
  Result<UniqueFd> cache_lock(const std::string& name) const;
  Status run_script(const std::vector<std::string>& argv, const std::string& log_path,
                    const ProgressFn& progress, const std::string& cwd = "") const;

  std::string home_;
  std::string assets_;
  std::string agent_;
};

// Fails with kNoSpace when the filesystem holding path has less than need_mib free.
Status check_free_space(const std::string& path, uint64_t need_mib, std::string_view what);

}  // namespace forkd::engine
