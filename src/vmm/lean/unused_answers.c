// The calls into an unused library (src/vmm/lean/unused_libs.txt) that QEMU makes in normal use,
// answered here; every other symbol of the stubs stops QEMU with a message (unused_stub.h).
#include <errno.h>
#include <stddef.h>
#include <sys/random.h>

// QEMU's crypto start-up (every run): nothing to set up without TLS.
int gnutls_global_init(void) { return 0; }

// QEMU's random bytes (qcrypto_random_bytes): TCG's RDRAND and RDSEED, which a guest may run at
// any time. The kernel's RNG, as gnutls would use. 0 on success, like gnutls; a negative value
// (GNUTLS_E_RANDOM_FAILED) when the kernel gives fewer bytes.
int gnutls_rnd(int level, void* data, size_t len) {
  (void)level;
  unsigned char* out = data;
  while (len > 0) {
    ssize_t n = getrandom(out, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -206;  // GNUTLS_E_RANDOM_FAILED
    out += n;
    len -= (size_t)n;
  }
  return 0;
}
