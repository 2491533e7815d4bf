// A symbol of an unused library (src/vmm/lean/unused_libs.txt): QEMU only calls it for a feature
// forkd never configures, so a call means that assumption broke. It says which and stops QEMU
// (the sandbox fails loudly rather than running with a library that pretends to work).
#pragma once
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void forkd_unused_called(const char* name) {
  static const char kPrefix[] = "forkd: QEMU called ";
  static const char kSuffix[] = ", a stub of a library forkd does not use (qemu-lean/unused)\n";
  (void)!write(2, kPrefix, sizeof kPrefix - 1);
  (void)!write(2, name, strlen(name));
  (void)!write(2, kSuffix, sizeof kSuffix - 1);
  abort();
}

#define FORKD_UNUSED_STUB(name) \
  void name(void);              \
  void name(void) { forkd_unused_called(#name); }
