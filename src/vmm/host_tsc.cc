#include "vmm/host_tsc.h"

#include <time.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace forkd::vmm {

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t measure() {
  std::ifstream sys("/sys/devices/system/cpu/cpu0/tsc_freq_khz");
  uint64_t khz = 0;
  if (sys >> khz && khz > 0) return khz;
#if defined(__x86_64__) || defined(__i386__)
  // Best of three 20 ms windows (a preempted window reads low or high; the median is robust).
  uint64_t samples[3];
  for (auto& s : samples) {
    uint64_t t0 = now_ns();
    uint64_t c0 = __rdtsc();
    while (now_ns() - t0 < 20000000ull) {
    }
    uint64_t c1 = __rdtsc();
    uint64_t t1 = now_ns();
    s = (c1 - c0) * 1000000ull / (t1 - t0);  // cycles per ms = kHz
  }
  if (samples[0] > samples[1]) std::swap(samples[0], samples[1]);
  if (samples[1] > samples[2]) std::swap(samples[1], samples[2]);
  if (samples[0] > samples[1]) std::swap(samples[0], samples[1]);
  return samples[1];
#else
  return 0;
#endif
}

}  // namespace

uint64_t host_tsc_khz() {
  static std::once_flag once;
  static uint64_t khz = 0;
  std::call_once(once, [] { khz = measure(); });
  return khz;
}

}  // namespace forkd::vmm
