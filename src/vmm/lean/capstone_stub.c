// A libcapstone.so.4 for QEMU that disassembles nothing (vmm/lean_qemu.h). QEMU uses capstone
// only to print guest and host code (-d in_asm/out_asm, the monitor's x/i), which forkd never
// asks for; every handle fails to open, so QEMU prints no disassembly. The real library's
// relocated tables cost each QEMU process 1.3 MiB of private memory.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef size_t csh;

enum { kCsErrArch = 2 };  // CS_ERR_ARCH: "unsupported architecture"

int cs_open(int arch, int mode, csh* handle) {
  (void)arch;
  (void)mode;
  if (handle) *handle = 0;
  return kCsErrArch;
}

int cs_option(csh handle, int type, size_t value) {
  (void)handle;
  (void)type;
  (void)value;
  return kCsErrArch;
}

int cs_close(csh* handle) {
  if (handle) *handle = 0;
  return 0;
}

void* cs_malloc(csh handle) {
  (void)handle;
  return NULL;
}

bool cs_disasm_iter(csh handle, const uint8_t** code, size_t* size, uint64_t* address, void* insn) {
  (void)handle;
  (void)code;
  (void)size;
  (void)address;
  (void)insn;
  return false;
}
