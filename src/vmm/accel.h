#pragma once
// Accelerator choice. `auto` picks KVM only when /dev/kvm opens read-write *and* the CPU flags
// show vmx or svm (a PVM /dev/kvm without them runs guest kernels emulated, far slower than TCG).
#include <string>
#include <string_view>

#include "base/error.h"

namespace forkd::vmm {

enum class Accel { kKvm, kTcg };

std::string_view accel_name(Accel accel);

struct AccelChoice {
  Accel accel = Accel::kTcg;
  std::string reason;  // one line for humans ("auto: /dev/kvm opens but CPU has no vmx/svm")
};

// True when any "flags" line of /proc/cpuinfo text lists vmx or svm.
bool cpuinfo_has_virt(std::string_view cpuinfo);

// requested is "auto", "kvm" or "tcg"; anything else is kInvalidArgument. An explicit "kvm" on a
// host where /dev/kvm cannot be opened is an error that says why.
Result<AccelChoice> choose_accel(std::string_view requested);

}  // namespace forkd::vmm
