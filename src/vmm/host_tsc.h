#pragma once
// The host's TSC frequency. Under TCG the guest's RDTSC reads the host TSC, and a microvm guest
// has neither HPET nor ACPI PM timer to calibrate against: on a loaded host the kernel then marks
// the TSC unstable and can hang at boot. Passing tsc_early_khz=<this> skips the calibration.
#include <cstdint>

namespace forkd::vmm {

// kHz, measured once per process (about 20 ms) and cached; 0 when it cannot be determined.
uint64_t host_tsc_khz();

}  // namespace forkd::vmm
