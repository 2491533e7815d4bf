// Local images (image_store.h): trees made into guest disks, and finding them again by name.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <regex>

#include "base/files.h"
#include "base/json_get.h"
#include "base/log.h"
#include "base/paths.h"
#include "engine/guest_tree.h"
#include "engine/image_store.h"
#include "vmm/jail.h"

namespace forkd::engine {

using Json = nlohmann::json;

namespace {
// mkfs.ext4 -E: root owns /, and the inode tables and journal are initialised now, once. Left
// lazy, the guest kernel's ext4lazyinit zeroes them after every boot, so in every child of a tag
// (its first seconds: the CPU, and ~22 MiB per GiB of disk written into each child's overlay).
constexpr const char* kMkfsExtended = "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0";
}  // namespace

Status ImageStore::validate_local_name(std::string_view name) {
  if (!is_safe_name(name)) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "bad image name '" + std::string(name.substr(0, 80)) + "': use 1-64 of [A-Za-z0-9_-]");
  }
  for (const auto& n : known_images()) {
    if (n == name) {
      return make_error(ErrorCode::kInvalidArgument,
                        "'" + n + "' is a built-in image's name; choose another with --name");
    }
  }
  return {};
}

Json ImageStore::local_source(std::string_view name) const {
  if (!is_safe_name(name)) return nullptr;
  auto text = read_file(home_ + "/images/" + std::string(name) + "/image.json", 1 << 20);
  if (!text) return nullptr;
  Json j = json::parse_untrusted(*text);
  const Json* src = json::member(j, "source");
  return src && src->is_object() ? *src : Json(nullptr);
}

std::vector<std::string> ImageStore::local_images() const {
  std::vector<std::string> out;
  for (const auto& n : list_dir_names(home_ + "/images")) {
    if (validate_local_name(n) && local_source(n).is_object()) out.push_back(n);
  }
  return out;
}

Result<Image> ImageStore::load_local(std::string_view name, const ProgressFn& progress) {
  std::string dir = home_ + "/images/" + std::string(name);
  auto text = read_file(dir + "/image.json", 1 << 20);
  if (!text) return tl::unexpected(text.error().wrap("image " + std::string(name)));
  Json j = json::parse_untrusted(*text);
  Image img;
  img.name = std::string(name);
  img.kernel = dir + "/bzImage";
  std::string disk = json::string_or(j, "disk", "");
  if (disk != "rootfs.ext4") {
    return make_error(ErrorCode::kInvalidArgument, "image " + img.name + ": bad image.json");
  }
  img.disk = dir + "/" + disk;
  img.append = json::string_or(j, "append", kDiskImageAppend);
  img.has_python = json::bool_or(j, "python", false);
  for (const auto& f : {img.kernel, img.disk}) {
    if (!path_exists(f)) return make_error(ErrorCode::kNotFound, "image " + img.name + ": " + f);
  }
  // The agent inside the disk is the one of the forkd that made the image: after an upgrade,
  // the disk gets this build's agent (once; a failure leaves the old one and says so).
  auto current = sha256_file(agent_);
  if (current && *current != json::string_or(j, "agent_sha256", "")) {
    if (auto st = refresh_agent(name, *current, progress); !st) {
      logger("images")->warn("event=stale_agent image={} error={}", img.name, st.error().message());
      if (progress) {
        progress("image " + img.name + " keeps the forkd-agent of an older build (" +
                 st.error().message() + "); import or build it again if its guests do not answer");
      }
    }
  }
  return img;
}

Status ImageStore::refresh_agent(std::string_view name, const std::string& agent_sum,
                                 const ProgressFn& progress) {
  auto lock = build_lock();
  if (!lock) return tl::unexpected(lock.error());
  std::string dir = home_ + "/images/" + std::string(name);
  auto text = read_file(dir + "/image.json", 1 << 20);
  if (!text) return tl::unexpected(text.error());
  Json j = json::parse_untrusted(*text);
  if (!j.is_object()) return make_error(ErrorCode::kInvalidArgument, "bad image.json");
  if (json::string_or(j, "agent_sha256", "") == agent_sum) return {};  // another process did it
  // The path goes into debugfs commands: plain components only (no spaces, quotes, "..").
  std::string at = json::string_or(j, "agent_path", "");
  static const std::regex kPlainPath("(/[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}){1,16}");
  if (!std::regex_match(at, kPlainPath) || at.find("/..") != std::string::npos) {
    return make_error(ErrorCode::kInvalidArgument, "no usable agent_path in image.json");
  }
  if (progress) {
    progress("image " + std::string(name) + ": putting this build's forkd-agent into its disk");
  }
  // debugfs parses its commands on spaces: they name files relative to dir (its cwd).
  std::string tag = "." + std::to_string(::getpid());
  std::string copy = ".rootfs.ext4" + tag, agent = ".agent" + tag, check = ".agent-check" + tag;
  std::string cmds = ".debugfs" + tag;
  std::string log = home_ + "/cache/image-" + std::string(name) + ".log";
  struct Cleanup {
    std::string dir;
    std::vector<std::string> files;
    ~Cleanup() {
      for (const auto& f : files) ::unlink((dir + "/" + f).c_str());
    }
  } cleanup{dir, {copy, agent, check, cmds}};
  auto data = read_file(agent_, 256u << 20);
  if (!data) return tl::unexpected(data.error());
  FORKD_TRY(write_file_atomic(dir + "/" + agent, *data, 0755));
  FORKD_TRY(write_file_atomic(dir + "/" + cmds, "rm " + at + "\nwrite " + agent + " " + at +
                                                    "\nsif " + at + " mode 0100755\nsif " + at +
                                                    " uid 0\nsif " + at + " gid 0\n"));
  // A copy (reflinked where the file system can), never the disk in place: tags made from this
  // image hold hard links to it.
  FORKD_TRY(
      run_script({"cp", "--reflink=auto", "--sparse=always", "rootfs.ext4", copy}, log, {}, dir));
  FORKD_TRY(run_script({"debugfs", "-w", "-f", cmds, copy}, log, {}, dir));
  // debugfs exits 0 even when a command failed: read the agent back.
  FORKD_TRY(run_script({"debugfs", "-R", "dump " + at + " " + check, copy}, log, {}, dir));
  auto back = sha256_file(dir + "/" + check);
  if (!back || *back != agent_sum) {
    return make_error(ErrorCode::kInternal, "the agent read back from the disk differs");
  }
  std::string staged = dir + "/" + copy;
  auto disk_sum = sha256_file(staged);
  if (!disk_sum) return tl::unexpected(disk_sum.error());
  if (::chmod(staged.c_str(), 0444) != 0) return errno_error(errno, "chmod " + staged);
  FORKD_TRY(rename_durable(staged, dir + "/rootfs.ext4"));
  j["agent_sha256"] = agent_sum;
  if (!j["checksums"].is_object()) j["checksums"] = Json::object();  // never throws below
  j["checksums"]["rootfs.ext4"] = *disk_sum;
  FORKD_TRY(write_file_atomic(dir + "/image.json", j.dump(2) + "\n"));
  if (const auto& jail = vmm::host_jail(); jail.active) vmm::share_tree_with_group(dir, jail.gid);
  return {};
}

Result<Image> ImageStore::install_tree(std::string_view name, const std::string& tree,
                                       const ImageSource& source, const ProgressFn& progress) {
  FORKD_TRY(validate_local_name(name));
  const std::string n(name);
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  auto agent_sum = sha256_file(agent_);
  if (!agent_sum) {
    return make_error(ErrorCode::kNotFound,
                      "guest agent binary " + agent_ + " not found; build it with `make build`");
  }
  auto kernel_path = kernel(progress);
  if (!kernel_path) return tl::unexpected(kernel_path.error().wrap("image " + n));

  say("image " + n + ": installing forkd-agent as the guest's init");
  auto agent_at = prepare_guest_tree(tree, agent_);
  if (!agent_at) return tl::unexpected(agent_at.error().wrap("image " + n));
  bool python = tree_has_python(tree);
  auto usage = measure_tree(tree);
  if (!usage) return tl::unexpected(usage.error().wrap("image " + n));
  Ext4Geometry geo = ext4_geometry(*usage);

  std::string images = home_ + "/images";
  FORKD_TRY(make_dirs(images));
  FORKD_TRY(check_free_space(images, geo.size_mib, "image " + n));
  std::string staging = images + "/.staging-" + n + "-" + std::to_string(::getpid());
  FORKD_TRY(remove_tree(staging));
  FORKD_TRY(make_dirs(staging));
  TreeGuard guard(staging);
  FORKD_TRY(link_kernel(*kernel_path, staging));
  say("image " + n + ": ext4 of " + std::to_string(geo.size_mib) + " MiB for " +
      std::to_string(usage->bytes >> 20) + " MiB in " + std::to_string(usage->inodes) +
      " inodes (mkfs.ext4 -d)");
  std::string disk = staging + "/rootfs.ext4";
  FORKD_TRY(
      run_script({"mkfs.ext4", "-q", "-F", "-L", "forkd-root", "-N", std::to_string(geo.inodes),
                  "-E", kMkfsExtended, "-d", tree, disk, std::to_string(geo.size_mib) + "M"},
                 home_ + "/cache/image-" + n + ".log", {}));
  if (::chmod(disk.c_str(), 0444) != 0) return errno_error(errno, "chmod " + disk);

  Json src = {{"kind", source.kind}};
  if (source.kind == "import") {
    src["ref"] = source.ref;
    src["manifest_digest"] = source.manifest_digest;
    if (!source.index_digest.empty()) src["index_digest"] = source.index_digest;
  } else {
    src["recipe"] = source.recipe;
    src["inputs_hash"] = source.inputs_hash;
  }
  Json meta = {{"schema", 1},
               {"name", n},
               {"disk", "rootfs.ext4"},
               {"append", kDiskImageAppend},
               {"python", python},
               {"source", src},
               {"agent_sha256", *agent_sum},
               {"agent_path", *agent_at},
               {"disk_mib", geo.size_mib},
               {"created_at", static_cast<int64_t>(std::time(nullptr))}};
  {
    auto lock = build_lock();
    if (!lock) return tl::unexpected(lock.error());
    FORKD_TRY(publish(name, staging, std::move(meta)));
  }
  guard.release();
  std::string final_dir = images + "/" + n;
  // Jailed QEMUs read the kernel and disk as the jail's group (engine/sandbox_jail.cc).
  if (const auto& jail = vmm::host_jail(); jail.active) {
    vmm::share_tree_with_group(final_dir, jail.gid);
  }
  return load_local(name, {});
}

Status ImageStore::remove_local(std::string_view name) {
  FORKD_TRY(validate_local_name(name));
  auto lock = build_lock();
  if (!lock) return tl::unexpected(lock.error());
  if (!local_source(name).is_object()) {
    return make_error(ErrorCode::kNotFound,
                      "no local image '" + std::string(name) + "' (forkd images lists them)");
  }
  // Out of sight in one rename, then removed: a half-removed image is never found by name.
  std::string images = home_ + "/images";
  std::string doomed = images + "/.old-" + std::string(name) + "-" + std::to_string(::getpid());
  FORKD_TRY(remove_tree(doomed));
  FORKD_TRY(rename_durable(images + "/" + std::string(name), doomed));
  for (const char* log : {"/cache/image-", "/cache/recipe-"}) {
    ::unlink((home_ + log + std::string(name) + ".log").c_str());
  }
  return remove_tree(doomed);
}

std::vector<std::string> ImageStore::sweep_leftovers() const {
  std::vector<std::string> out;
  std::string images = home_ + "/images";
  for (const auto& n : list_dir_names(images)) {
    // .staging-NAME-PID (a build or install) and .old-NAME-PID (a replace or remove).
    if (n.rfind(".staging-", 0) != 0 && n.rfind(".old-", 0) != 0) continue;
    auto dash = n.rfind('-');
    char* end = nullptr;
    long pid = std::strtol(n.c_str() + dash + 1, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still working
    if (remove_tree(images + "/" + n)) out.push_back("images/" + n);
  }
  return out;
}

}  // namespace forkd::engine
