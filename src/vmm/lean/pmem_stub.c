// A libpmem.so.1 for QEMU without persistent memory (vmm/lean_qemu.h). The real library loads
// libndctl, libdaxctl, libkmod and libcrypto, whose relocated data costs each QEMU process about
// 0.6 MiB of private memory.
//
// QEMU calls these only for a memory backend with pmem=on. forkd sets that on one kind of QEMU
// alone, a branch's destination (vmm::VmConfig::skip_ram_sync), and starts it with
// FORKD_PMEM_PERSIST=skip: there QEMU's only call is the sync of the whole memory file after the
// incoming migration, which forkd does not want (the file is a cache it flushes itself when it
// must), so pmem_persist returns at once. In any other process, or for the nvdimm label copy, the
// process stops with a message instead of pretending the data reached persistent memory.
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
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
  const char* persist = getenv("FORKD_PMEM_PERSIST");
  if (persist != NULL && strcmp(persist, "skip") == 0) return;
  refuse();
}

void* pmem_memcpy_persist(void* dest, const void* src, size_t len) {
  (void)dest;
  (void)src;
  (void)len;
  refuse();
  return NULL;
}
