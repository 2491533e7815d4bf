#include "engine/image_store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/subprocess.h"
#include "vmm/vm_process.h"

namespace forkd::engine {

using Json = nlohmann::json;

namespace {

constexpr const char* kMinimalAppend = "console=ttyS0 quiet panic=-1 rdinit=/init";

Result<std::string> hash_files(const std::vector<std::string>& files, std::string extra) {
  std::string acc = std::move(extra);
  for (const auto& f : files) {
    auto h = sha256_file(f);
    if (!h) return tl::unexpected(h.error().wrap("hash input"));
    acc += f.substr(f.find_last_of('/') + 1) + "=" + *h + "\n";
  }
  return sha256_hex(acc).substr(0, 16);
}

std::string linux_source_version() {
  auto r = run_capture({"dpkg-query", "-W", "-f=${Version}", "linux-source-6.1"},
                       std::chrono::seconds(10));
  if (!r || r->exit_code != 0) return "unknown";
  return r->output;
}

}  // namespace

Status check_free_space(const std::string& path, uint64_t need_mib, std::string_view what) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return errno_error(errno, "statvfs " + path);
  uint64_t free_mib = static_cast<uint64_t>(st.f_bavail) * st.f_frsize >> 20;
  if (free_mib < need_mib) {
    return make_error(ErrorCode::kNoSpace,
                      std::string(what) + " needs " + std::to_string(need_mib) + " MiB free in " +
                          path + ", only " + std::to_string(free_mib) +
                          " MiB available; free some space or set FORKD_HOME/TMPDIR elsewhere");
  }
  return {};
}

Result<UniqueFd> ImageStore::cache_lock(const std::string& name) const {
  std::string path = home_ + "/cache/" + name;
  auto fd = open_file(path, O_RDWR | O_CREAT, 0600);
  if (!fd) return tl::unexpected(fd.error());
  if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
    logger("images")->info("event=wait_lock path={}", path);
    if (::flock(fd->get(), LOCK_EX) != 0) return errno_error(errno, "flock " + path);
  }
  return std::move(*fd);
}

ImageStore::ImageStore(std::string home, std::string assets_dir, std::string agent_path)
    : home_(std::move(home)), assets_(std::move(assets_dir)), agent_(std::move(agent_path)) {}

const std::vector<std::string>& ImageStore::known_images() {
  static const std::vector<std::string> kNames = {"minimal", "python"};
  return kNames;
}

Result<std::string> ImageStore::kernel_hash() const {
  return hash_files({assets_ + "/kernel/build.sh", assets_ + "/kernel/forkd.config"},
                    "linux-source-6.1=" + linux_source_version() + "\n");
}

Result<std::string> ImageStore::image_hash(std::string_view name) const {
  auto kh = kernel_hash();
  if (!kh) return kh;
  if (!path_exists(agent_)) {
    return make_error(ErrorCode::kNotFound,
                      "guest agent binary " + agent_ + " not found; build it with `make build`");
  }
  std::string extra = "kernel=" + *kh + "\n";
  if (name == "minimal") {
    std::string bb = find_in_path("busybox");
    if (bb.empty()) {
      return make_error(ErrorCode::kNotFound,
                        "busybox not found; install it with: apt-get install busybox-static");
    }
    return hash_files({assets_ + "/images/minimal.sh", agent_, bb}, extra);
  }
  return hash_files(
      {assets_ + "/images/python-rootfs.sh", assets_ + "/images/assemble-rootfs.sh", agent_},
      extra);
}

Result<std::string> ImageStore::kernel_path() const {
  auto h = kernel_hash();
  if (!h) return tl::unexpected(h.error());
  return home_ + "/cache/kernel-" + *h + "/bzImage";
}

Result<std::string> ImageStore::python_rootfs_path() const {
  auto h = hash_files({assets_ + "/images/python-rootfs.sh"}, "bookworm\n");
  if (!h) return tl::unexpected(h.error());
  return home_ + "/cache/python-rootfs-" + *h + ".tar";
}

Result<bool> ImageStore::kernel_cached() const {
  return kernel_path().map([](const std::string& p) { return path_exists(p); });
}

Result<bool> ImageStore::image_cached(std::string_view name) const {
  auto h = image_hash(name);
  if (!h) return tl::unexpected(h.error());
  return load_cached(name, *h).has_value();
}

std::optional<Image> ImageStore::load_cached(std::string_view name, const std::string& hash) const {
  std::string dir = home_ + "/images/" + std::string(name);
  auto text = read_file(dir + "/image.json", 1 << 20);
  if (!text) return std::nullopt;
  Json j = json::parse_untrusted(*text);
  if (j.is_discarded() || !j.is_object() || json::string_or(j, "inputs_hash", "") != hash) {
    return std::nullopt;
  }
  Image img;
  img.name = std::string(name);
  img.kernel = dir + "/bzImage";
  if (auto i = json::string_or(j, "initrd", ""); !i.empty()) img.initrd = dir + "/" + i;
  if (auto d = json::string_or(j, "disk", ""); !d.empty()) img.disk = dir + "/" + d;
  img.append = json::string_or(j, "append", "");
  img.has_python = json::bool_or(j, "python", false);
  for (const auto& f : {img.kernel, img.initrd, img.disk}) {
    if (!f.empty() && !path_exists(f)) return std::nullopt;
  }
  return img;
}

Status ImageStore::run_script(const std::vector<std::string>& argv, const std::string& log_path,
                              const ProgressFn& progress, const std::string& cwd) const {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno_error(errno, "pipe");
  UniqueFd rd(fds[0]), wr(fds[1]);
  auto log = open_file(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!log) return tl::unexpected(log.error());
  SpawnOptions opts;
  opts.stdout_fd = wr.get();
  opts.stderr_fd = wr.get();
  if (!cwd.empty()) opts.cwd = cwd;
  auto child = Child::spawn(argv, opts);
  if (!child) return tl::unexpected(child.error());
  wr.reset();
  std::string pending;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    (void)write_all(log->get(), std::string_view(buf, static_cast<size_t>(n)));
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      if (progress) progress(std::string_view(pending).substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  auto code = child->wait();
  if (!code) return tl::unexpected(code.error());
  if (*code != 0) {
    std::string tail = vmm::log_tail(log_path, 1500);
    ErrorCode ec = tail.find("No space left") != std::string::npos ? ErrorCode::kNoSpace
                                                                   : ErrorCode::kInternal;
    const std::string& what = argv[0] == "bash" && argv.size() > 1 ? argv[1] : argv[0];
    return make_error(
        ec, what + " failed (exit " + std::to_string(*code) + "); log " + log_path + ":\n" + tail);
  }
  return {};
}

Result<std::string> ImageStore::kernel(const ProgressFn& progress) {
  auto path = kernel_path();
  if (!path) return path;
  const std::string& out = *path;
  std::string dir = out.substr(0, out.rfind('/'));
  if (path_exists(out)) return out;
  FORKD_TRY(make_dirs(home_ + "/cache"));
  auto lock = build_lock();
  if (!lock) return tl::unexpected(lock.error());
  if (path_exists(out)) return out;  // built by another process while we waited
  const char* tmp = std::getenv("TMPDIR");
  FORKD_TRY(check_free_space(tmp && *tmp ? tmp : "/tmp", 2500, "the guest kernel build"));
  if (progress) progress("building the guest kernel (once per machine, about 10 min on 2 cores)");
  FORKD_TRY(make_dirs(dir));
  std::string staged = out + ".staging";
  FORKD_TRY(
      run_script({"bash", assets_ + "/kernel/build.sh", staged}, dir + "/build.log", progress));
  FORKD_TRY(rename_durable(staged, out));
  return out;
}

Result<std::string> ImageStore::python_rootfs(const ProgressFn& progress) {
  auto path = python_rootfs_path();
  if (!path) return path;
  const std::string& out = *path;
  if (path_exists(out)) return out;
  if (::geteuid() != 0) {
    return make_error(ErrorCode::kUnavailable,
                      "building the python image needs root (debootstrap); run it once as root or "
                      "use --image minimal");
  }
  FORKD_TRY(make_dirs(home_ + "/cache"));
  auto lock = cache_lock(".rootfs.lock");
  if (!lock) return tl::unexpected(lock.error());
  if (path_exists(out)) return out;  // built by another process (guest/prebuild.sh) meanwhile
  FORKD_TRY(check_free_space(home_ + "/cache", 1500, "the python image build"));
  if (progress) progress("building the python rootfs (debootstrap, once per machine)");
  std::string staged = out + ".staging";
  FORKD_TRY(run_script({"bash", assets_ + "/images/python-rootfs.sh", staged},
                       home_ + "/cache/python-rootfs.log", progress));
  FORKD_TRY(rename_durable(staged, out));
  return out;
}

Result<Image> ImageStore::get(std::string_view name, const ProgressFn& progress) {
  bool known = false;
  std::string names;
  for (const auto& n : known_images()) {
    known |= n == name;
    names += (names.empty() ? "" : ", ") + n;
  }
  if (!known) {
    if (validate_local_name(name) && local_source(name).is_object()) {
      return load_local(name, progress);
    }
    for (const auto& n : local_images()) names += ", " + n;
    return make_error(ErrorCode::kNotFound,
                      "unknown image '" + std::string(name).substr(0, 80) + "'; images: " + names +
                          " (forkd image import REF or forkd image build RECIPE add more)");
  }
  auto h = image_hash(name);
  if (!h) return tl::unexpected(h.error());
  if (auto cached = load_cached(name, *h)) return *cached;
  auto kernel_path = kernel(progress);
  if (!kernel_path) return tl::unexpected(kernel_path.error().wrap("image " + std::string(name)));
  auto lock = build_lock();
  if (!lock) return tl::unexpected(lock.error());
  if (auto cached = load_cached(name, *h)) return *cached;
  auto img = build_image(name, *h, *kernel_path, progress);
  if (!img) return tl::unexpected(img.error().wrap("image " + std::string(name)));
  return img;
}

Status ImageStore::link_kernel(const std::string& kernel_path, const std::string& dir) const {
  if (::link(kernel_path.c_str(), (dir + "/bzImage").c_str()) == 0) return {};
  auto data = read_file(kernel_path, 64u << 20);
  if (!data) return tl::unexpected(data.error());
  return write_file_atomic(dir + "/bzImage", *data);
}

Status ImageStore::publish(std::string_view name, const std::string& staging, Json meta) {
  for (const char* f : {"bzImage", "initramfs.gz", "rootfs.ext4"}) {
    std::string p = staging + "/" + f;
    if (!path_exists(p)) continue;
    auto sum = sha256_file(p);
    if (!sum) return tl::unexpected(sum.error());
    meta["checksums"][f] = *sum;
  }
  FORKD_TRY(write_file_atomic(staging + "/image.json", meta.dump(2) + "\n"));
  // Swap the new image in: the old directory (if any) is moved aside first, then removed.
  std::string images = home_ + "/images";
  std::string final_dir = images + "/" + std::string(name);
  std::string old = images + "/.old-" + std::string(name) + "-" + std::to_string(::getpid());
  if (path_exists(final_dir) && ::rename(final_dir.c_str(), old.c_str()) != 0) {
    return errno_error(errno, "move aside " + final_dir);
  }
  FORKD_TRY(rename_durable(staging, final_dir));
  (void)remove_tree(old);
  return {};
}

Result<Image> ImageStore::build_image(std::string_view name, const std::string& hash,
                                      const std::string& kernel_path, const ProgressFn& progress) {
  std::string images = home_ + "/images";
  FORKD_TRY(make_dirs(images));
  std::string staging =
      images + "/.staging-" + std::string(name) + "-" + std::to_string(::getpid());
  FORKD_TRY(remove_tree(staging));
  FORKD_TRY(make_dirs(staging));
  FORKD_TRY(check_free_space(images, name == "python" ? 1500 : 100, "image " + std::string(name)));
  if (progress) progress("assembling image " + std::string(name));
  Json meta = {{"schema", 1},
               {"name", name},
               {"inputs_hash", hash},
               {"created_at", static_cast<int64_t>(std::time(nullptr))}};
  auto cleanup = [&](Error e) -> Result<Image> {
    (void)remove_tree(staging);
    return tl::unexpected(std::move(e));
  };
  if (auto st = link_kernel(kernel_path, staging); !st) return cleanup(st.error());
  if (name == "minimal") {
    auto st =
        run_script({"bash", assets_ + "/images/minimal.sh", agent_, staging + "/initramfs.gz"},
                   home_ + "/cache/image-minimal.log", progress);
    if (!st) return cleanup(st.error());
    meta["initrd"] = "initramfs.gz";
    meta["append"] = kMinimalAppend;
    meta["python"] = false;
  } else {
    auto tar = python_rootfs(progress);
    if (!tar) return cleanup(tar.error());
    auto st = run_script(
        {"bash", assets_ + "/images/assemble-rootfs.sh", *tar, agent_, staging + "/rootfs.ext4"},
        home_ + "/cache/image-python.log", progress);
    if (!st) return cleanup(st.error());
    ::chmod((staging + "/rootfs.ext4").c_str(), 0444);
    meta["disk"] = "rootfs.ext4";
    meta["append"] = kDiskImageAppend;
    meta["python"] = true;
  }
  if (auto st = publish(name, staging, std::move(meta)); !st) return cleanup(st.error());
  auto img = load_cached(name, hash);
  if (!img) return make_error(ErrorCode::kInternal, "image " + std::string(name) + " unreadable");
  return *img;
}

}  // namespace forkd::engine
