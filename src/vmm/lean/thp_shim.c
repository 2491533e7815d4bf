// Preloaded into QEMU with the stubs (vmm/lean_qemu.h): QEMU asks for transparent huge pages on
// every RAM block it allocates, the smallest included. microvm's ACPI tables live in a 2 MiB
// block that holds a few KiB, and on a host whose THP mode is `madvise` its first write takes a
// whole 2 MiB huge page: 2 MiB of private memory in every child for 4 KiB of tables. An area of
// at most one huge page gains nothing from one (a single TLB entry), so such a request becomes
// the opposite advice, which also keeps the area small where THP is `always`. Larger areas,
// such as the TCG code buffer whose translated code runs faster from huge pages, keep theirs.
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kHugePageBytes = 2 << 20 };

int madvise(void* addr, size_t len, int advice) {
  if (advice == MADV_HUGEPAGE && len <= (size_t)kHugePageBytes) advice = MADV_NOHUGEPAGE;
  return (int)syscall(SYS_madvise, addr, len, advice);
}
