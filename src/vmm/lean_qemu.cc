#include "vmm/lean_qemu.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "base/files.h"
#include "base/paths.h"
#include "base/subprocess.h"
#include "vmm/jail.h"

namespace forkd::vmm {

namespace {

// The stubs (src/vmm/lean), by the sonames Debian's QEMU links.
constexpr const char* kCapstoneStub = "libcapstone.so.4";
constexpr const char* kPmemStub = "libpmem.so.1";
// In the second set's directory: the QEMU version its list was made from (unused_stubs.cmake).
constexpr const char* kUnusedStubsForFile = "for-qemu";
// Preloaded, not found by soname (src/vmm/lean/qemu_shim.c).
constexpr const char* kQemuShim = "libforkd-qemu-shim.so";

// Owned by root or by us, and writable by nobody else (a sticky directory, such as /tmp, only
// lets others add entries, not replace ours).
Status check_owner_and_mode(const std::string& path, const struct stat& st) {
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return make_error(ErrorCode::kFailedPrecondition,
                      path + " is owned by uid " + std::to_string(st.st_uid));
  }
  const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir) {
    return make_error(ErrorCode::kFailedPrecondition,
                      path + " is writable by its group or by others");
  }
  return {};
}

// A symlink's own mode means nothing (it cannot be changed, only replaced, which takes the
// directory); its target is what the loader reads.
Status check_path(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno_error(errno, path);
  if (S_ISLNK(st.st_mode) && ::stat(path.c_str(), &st) != 0) return errno_error(errno, path);
  return check_owner_and_mode(path, st);
}

bool has_qemu_shim(const std::string& dir) {
  return ::access((dir + "/" + kQemuShim).c_str(), R_OK) == 0;
}

}  // namespace

std::string lean_qemu_default_dir() { return exe_dir() + "/" + kLeanQemuDirName; }

Result<std::string> check_lean_dir(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(dir, ec);
  if (ec) return make_error(ErrorCode::kFailedPrecondition, dir + ": " + ec.message());
  // The loader splits LD_LIBRARY_PATH and LD_PRELOAD at these, and would take the pieces as
  // paths relative to QEMU's working directory.
  if (real.string().find_first_of(": \t\n") != std::string::npos) {
    return make_error(ErrorCode::kFailedPrecondition,
                      real.string() + " has a colon or a blank in its path");
  }
  if (!std::filesystem::is_directory(real, ec)) {
    return make_error(ErrorCode::kFailedPrecondition, real.string() + " is not a directory");
  }
  // Every directory above it too (the path has no symlinks left): whoever may rename one could
  // put another tree in its place.
  std::filesystem::path walk;
  for (const auto& part : real) {
    walk /= part;
    FORKD_TRY(check_path(walk.string()));
  }
  for (const std::string& name : list_dir_names(real.string())) {
    FORKD_TRY(check_path((real / name).string()));
  }
  return real.string();
}

namespace {

// One start of `binary --version` with abs (and abs/unused when asked); p.dir stays empty when
// QEMU did not start with them, p.reason says why.
LeanQemuProbe probe_once(const std::string& binary, const std::string& abs, bool unused) {
  LeanQemuProbe p;
  // LD_DEBUG=files: the loader names every library it maps, so the probe sees whether this
  // QEMU links the stubs' sonames at all.
  auto env = lean_qemu_env(abs, unused);
  env["LD_DEBUG"] = "files";
  auto r = run_capture({binary, "--version"}, std::chrono::seconds(10), env);
  if (!r) {
    p.reason = binary + " did not run: " + r.error().message();
    return p;
  }
  if (r->exit_code != 0) {
    std::string out = r->output;
    // The loader's own complaint is its last line; the trace before it is noise.
    while (!out.empty() && out.back() == '\n') out.pop_back();
    size_t nl = out.rfind('\n');
    p.reason = binary + " does not start with the stub libraries: " +
               (nl == std::string::npos ? out : out.substr(nl + 1)).substr(0, 300);
    return p;
  }
  auto mapped = [&](const std::string& path) { return r->output.find(path) != std::string::npos; };
  if (!mapped(abs + "/" + kCapstoneStub) && !mapped(abs + "/" + kPmemStub)) {
    p.reason = binary + " links neither libcapstone.so.4 nor libpmem.so.1";
    return p;
  }
  if (unused && !mapped(abs + "/" + kUnusedStubsDirName + "/")) {
    p.reason = binary + " links none of the libraries in " + abs + "/" + kUnusedStubsDirName;
    return p;
  }
  // The loader names a preload it could not load too, in its warning; only a loaded one is
  // initialised.
  const bool preloaded = mapped("calling init: " + abs + "/" + kQemuShim);
  if (has_qemu_shim(abs) && !preloaded) {
    p.reason = binary + " did not preload " + abs + "/" + kQemuShim;
    return p;
  }
  p.version = parse_qemu_version(r->output);
  if (p.version.empty()) {
    p.reason = binary + " --version printed no version";
    return p;
  }
  p.pmem_stub = mapped(abs + "/" + kPmemStub);
  p.unused_stubs = unused;
  p.dir = abs;
  return p;
}

// The QEMU version the second set's list was made from (src/vmm/lean/unused_libs.txt), as the
// build wrote it into the set's directory; empty when unreadable. Another version may call a
// stub at start where that one did not.
std::string unused_stubs_made_for(const std::string& unused_dir) {
  return read_version_file(unused_dir + "/" + kUnusedStubsForFile);
}

}  // namespace

std::string read_version_file(const std::string& path) {
  std::string v = read_file(path, 64).value_or("");
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  return v;
}

LeanQemuProbe probe_lean_qemu(const std::string& binary, const std::string& dir) {
  auto checked = check_lean_dir(dir);
  if (!checked) {
    LeanQemuProbe p;
    p.reason = "stub libraries not usable: " + checked.error().message();
    return p;
  }
  const std::string unused_dir = *checked + "/" + kUnusedStubsDirName;
  std::string why_not;
  if (::access(unused_dir.c_str(), F_OK) != 0) {
    why_not = unused_dir + " does not exist";
  } else if (auto ok = check_lean_dir(unused_dir); !ok) {
    why_not = "not usable: " + ok.error().message();
  } else {
    LeanQemuProbe both = probe_once(binary, *checked, true);
    if (both.dir.empty()) {
      why_not = both.reason;
    } else if (std::string made_for = unused_stubs_made_for(unused_dir); made_for != both.version) {
      why_not = "they were made for QEMU " + (made_for.empty() ? "(unknown)" : made_for) +
                ", this one is " + both.version;
    } else {
      return both;
    }
  }
  LeanQemuProbe p = probe_once(binary, *checked, false);
  p.unused_reason = why_not;
  return p;
}

std::map<std::string, std::string> lean_qemu_env(const std::string& dir, bool unused_stubs) {
  if (dir.empty()) return {};
  // Ahead of whatever forkd itself was given, which QEMU keeps.
  auto first = [](std::string ours, const char* var) {
    if (const char* inherited = std::getenv(var); inherited && *inherited) {
      ours += std::string(":") + inherited;
    }
    return ours;
  };
  const std::string path = unused_stubs ? dir + "/" + kUnusedStubsDirName + ":" + dir : dir;
  std::map<std::string, std::string> env{{"LD_LIBRARY_PATH", first(path, "LD_LIBRARY_PATH")}};
  if (has_qemu_shim(dir)) env["LD_PRELOAD"] = first(dir + "/" + kQemuShim, "LD_PRELOAD");
  return env;
}

}  // namespace forkd::vmm
