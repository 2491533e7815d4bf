#include "vmm/accel.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/files.h"
#include "base/unique_fd.h"

namespace forkd::vmm {

namespace {

constexpr size_t kMaxCpuinfoBytes = 16u << 20;  // 16 MiB: hundreds of CPUs fit comfortably

bool is_space(char c) { return c == ' ' || c == '\t'; }

// True when the whitespace-separated list `words` contains `word` as a whole word.
bool has_word(std::string_view words, std::string_view word) {
  size_t i = 0;
  while (i < words.size()) {
    while (i < words.size() && is_space(words[i])) ++i;
    size_t start = i;
    while (i < words.size() && !is_space(words[i])) ++i;
    if (words.substr(start, i - start) == word) return true;
  }
  return false;
}

}  // namespace

std::string_view accel_name(Accel accel) {
  switch (accel) {
    case Accel::kKvm:
      return "kvm";
    case Accel::kTcg:
      return "tcg";
  }
  return "tcg";
}

bool cpuinfo_has_virt(std::string_view cpuinfo) {
  size_t pos = 0;
  while (pos < cpuinfo.size()) {
    size_t eol = cpuinfo.find('\n', pos);
    if (eol == std::string_view::npos) eol = cpuinfo.size();
    std::string_view line = cpuinfo.substr(pos, eol - pos);
    pos = eol + 1;
    // "flags\t\t: fpu vme ..." ; the key must be exactly "flags" (not "vmx flags" etc.).
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon);
    while (!key.empty() && is_space(key.back())) key.remove_suffix(1);
    if (key != "flags") continue;
    std::string_view words = line.substr(colon + 1);
    if (has_word(words, "vmx") || has_word(words, "svm")) return true;
  }
  return false;
}

Result<AccelChoice> choose_accel(std::string_view requested) {
  if (requested == "tcg") return AccelChoice{Accel::kTcg, "requested"};
  if (requested != "kvm" && requested != "auto") {
    return make_error(
        ErrorCode::kInvalidArgument,
        "accel: unknown accelerator '" + std::string(requested) + "' (expected auto, kvm or tcg)");
  }

  int open_errno = 0;
  {
    UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm) open_errno = errno;
  }
  auto cpuinfo = read_file("/proc/cpuinfo", kMaxCpuinfoBytes);
  bool virt = cpuinfo && cpuinfo_has_virt(*cpuinfo);

  if (requested == "kvm") {
    if (open_errno != 0) {
      std::string why = "accel kvm: cannot open /dev/kvm: ";
      why += std::strerror(open_errno);
      if (open_errno == EACCES || open_errno == EPERM) {
        why += " (add this user to the kvm group, or use --accel tcg)";
        return make_error(ErrorCode::kInvalidArgument, why);
      }
      why += " (is the kvm module loaded? or use --accel tcg)";
      return make_error(ErrorCode::kUnavailable, why);
    }
    if (!virt) {
      return AccelChoice{Accel::kKvm,
                         "requested; warning: the CPU flags show neither vmx nor svm, so the guest "
                         "may run emulated under KVM (PVM), slower than TCG"};
    }
    return AccelChoice{Accel::kKvm, "requested"};
  }

  // auto
  if (open_errno != 0) {
    return AccelChoice{Accel::kTcg, std::string("auto: /dev/kvm does not open (") +
                                        std::strerror(open_errno) + "); using TCG"};
  }
  if (!virt) {
    return AccelChoice{Accel::kTcg,
                       "auto: /dev/kvm opens but the CPU flags show neither vmx nor svm (PVM or "
                       "nested without VT); using TCG"};
  }
  return AccelChoice{Accel::kKvm, "auto: /dev/kvm opens and the CPU has vmx/svm"};
}

}  // namespace forkd::vmm
