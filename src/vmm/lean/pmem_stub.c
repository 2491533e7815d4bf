// A libpmem.so.1 for QEMU without persistent memory (vmm/lean_qemu.h). QEMU calls these only for
// a memory backend with pmem=on, which forkd never creates; should one ever be called, the
// process stops with a message instead of pretending the data reached persistent memory. The
// real library loads libndctl, libdaxctl, libkmod and libcrypto, whose relocated data costs
// each QEMU process about 0.6 MiB of private memory.
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

static void refuse(void) {
  static const char kMessage[] =
      "qemu: persistent memory (pmem=on) is not available: QEMU runs with forkd's libpmem stub "
      "(FORKD_LEAN_QEMU=0 loads the real library)\n";
  ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  (void)ignored;
  abort();
}

void pmem_persist(const void* addr, size_t len) {
  (void)addr;
  (void)len;
  refuse();
}

void* pmem_memcpy_persist(void* dest, const void* src, size_t len) {
  (void)dest;
  (void)src;
  (void)len;
  refuse();
  return NULL;
}
