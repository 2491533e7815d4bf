#pragma once
// Guest kernel and images, built on first use and cached by a hash of their inputs:
//   $FORKD_HOME/cache/kernel-<hash>/bzImage       (guest/kernel/build.sh + forkd.config + source)
//   $FORKD_HOME/cache/python-rootfs-<hash>.tar    (guest/images/python-rootfs.sh)
//   $FORKD_HOME/images/<name>/image.json + files  (assembled with the current agent)
// Builds run under an exclusive lock, so concurrent forkd processes build each thing once.
// Everything is staged and renamed into place: a killed build never looks complete.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace forkd::engine {

struct Image {
  std::string name;
  std::string kernel;  // bzImage
  std::string initrd;  // initramfs (minimal), empty otherwise
  std::string disk;    // base root disk, raw ext4 (python), empty otherwise; never written
  std::string append;  // kernel command line
  bool has_python = false;
};

// Receives one human-readable progress line at a time.
using ProgressFn = std::function<void(std::string_view line)>;

class ImageStore {
 public:
  ImageStore(std::string home, std::string assets_dir, std::string agent_path);

  // Names of the images this build knows how to make.
  static const std::vector<std::string>& known_images();

  // The image, built first if missing or stale. Unknown names are kNotFound listing the known.
  Result<Image> get(std::string_view name, const ProgressFn& progress);

  // The guest kernel, built first if missing.
  Result<std::string> kernel(const ProgressFn& progress);

  // For doctor: is the kernel / image already built for the current inputs?
  Result<bool> kernel_cached() const;
  Result<bool> image_cached(std::string_view name) const;

 private:
  Result<std::string> kernel_hash() const;
  Result<std::string> image_hash(std::string_view name) const;
  std::optional<Image> load_cached(std::string_view name, const std::string& hash) const;
  Result<Image> build_image(std::string_view name, const std::string& hash,
                            const std::string& kernel_path, const ProgressFn& progress);
  Result<std::string> python_rootfs(const ProgressFn& progress);
  Status run_script(const std::vector<std::string>& argv, const std::string& log_path,
                    const ProgressFn& progress) const;

  std::string home_;
  std::string assets_;
  std::string agent_;
};

// Fails with kNoSpace when the filesystem holding path has less than need_mib free.
Status check_free_space(const std::string& path, uint64_t need_mib, std::string_view what);

}  // namespace forkd::engine
