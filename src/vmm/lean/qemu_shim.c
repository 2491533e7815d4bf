// Preloaded into QEMU with the stubs (vmm/lean_qemu.h). Two library calls QEMU makes at start
// leave private memory in every child that nothing uses, and a third empties the host's page
// cache of files every child shares; this library answers them itself and leaves every other
// call to the real libraries.
//
// madvise: QEMU asks for transparent huge pages on every RAM block it allocates, the smallest
// included. microvm's ACPI tables live in a 2 MiB block that holds a few KiB, and on a host whose
// THP mode is `madvise` its first write takes a whole 2 MiB huge page. An area of at most one
// huge page gains nothing from one (a single TLB entry), so such a request becomes the opposite
// advice, which also keeps the area small where THP is `always`. Larger areas, such as the TCG
// code buffer whose translated code runs faster from huge pages, keep theirs, except that with
// FORKD_QEMU_CODE_THP=collapse the code buffer's request (the one area still reserved, PROT_NONE,
// when QEMU advises it) is left out: forkd then collapses the parts TCG has filled into huge pages
// itself (vmm/code_pages.h), and the part TCG is filling stays in small pages. With
// FORKD_QEMU_CODE_THP=window:K the request holds for the buffer up to its 2 MiB step K (counted
// from the first aligned one); from there on the buffer keeps small pages until forkd sends
// QEMU a SIGURG (before a child's calls), whose handler makes the same request for the rest.
// forkd collapses what TCG wrote there in small pages itself. SIGURG's default action is to
// ignore it, so a QEMU without this handler is never harmed by forkd's signal.
//
// fdt_create: QEMU builds a device tree for every microvm in a 1 MiB zero-filled buffer, and
// libfdt's fdt_create clears the whole buffer again, so all 256 pages become private copies of
// zeros. When the buffer is provably zero already without touching it (see known_zero), the
// header is made by the real function in a small buffer and copied in, once a second size showed
// that only its totalsize depends on the size; the result is the same bytes. Otherwise the real
// function does it all.
//
// posix_fadvise: QEMU drops the host page cache of every file of a disk's chain when it
// activates the disk (file-posix's drop-cache, POSIX_FADV_DONTNEED): after every restore's
// incoming migration and at a branch source's `cont`. That is meant for storage another host
// wrote to; here every file is on this host, whose page cache is coherent, and the chain's
// bottom is a tag's base image (355 MiB for python) shared by all its children: each python
// child's restore emptied its cache for all of them, and their reads went to the disk. That
// advice is dropped; any other passes. (The option itself, drop-cache=off on every layer,
// would make QEMU name the chain's nodes json:{...}, which a branch's frozen layer would then
// carry as its backing name.)
//
// Built with FORKD_SHIM_WRAP, the same answers go into forkd's static QEMU build instead
// (scripts/build-qemu-static.sh): it is linked with --wrap for each of these functions, so
// QEMU's calls reach __wrap_NAME here and the real one is __real_NAME.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kHugePageBytes = 2 << 20 };

typedef int (*FdtCreateFn)(void*, int);

#ifdef FORKD_SHIM_WRAP
#define SHIM_ANSWER(name) __wrap_##name
int __real_fdt_create(void* buf, int bufsize) __attribute__((weak));  // --wrap binds it
static FdtCreateFn real_fdt_create(void) { return __real_fdt_create; }
#else
#define SHIM_ANSWER(name) name
static FdtCreateFn real_fdt_create(void) {
  static FdtCreateFn cached;
  FdtCreateFn fn = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
  if (fn != NULL) return fn;
  // The loaded libfdt's own definition; RTLD_NEXT where its soname differs.
  void* lib = dlopen("libfdt.so.1", RTLD_LAZY | RTLD_NOLOAD);
  void* sym = lib != NULL ? dlsym(lib, "fdt_create") : NULL;
  if (sym == NULL) sym = dlsym(RTLD_NEXT, "fdt_create");
  memcpy(&fn, &sym, sizeof fn);  // POSIX: a data pointer from dlsym names a function
  if (fn != NULL) __atomic_store_n(&cached, fn, __ATOMIC_RELEASE);
  return fn;
}
#endif

// One line of /proc/self/maps.
struct Mapping {
  unsigned long start, end;
  char perms[8];
  int anonymous;  // no file, no inode
};

// Reads the next line of maps into m; 0 at the end or on a line it cannot read. A line longer
// than the buffer (a long path) is read whole, its start parsed.
static int next_mapping(FILE* maps, struct Mapping* m) {
  char line[512];
  if (fgets(line, sizeof line, maps) == NULL) return 0;
  if (strchr(line, '\n') == NULL) {
    int c;
    while ((c = fgetc(maps)) != EOF && c != '\n') {
    }
  }
  unsigned long inode = 1;
  int name_at = 0;
  memset(m, 0, sizeof *m);
  if (sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &m->start, &m->end, m->perms, &inode, &name_at) <
      4) {
    return 0;
  }
  const char* name = line + name_at;
  m->anonymous = inode == 0 && (name[0] == '\n' || name[0] == '\0');
  return 1;
}

// Whether addr lies in an anonymous mapping without any access (---p): an area QEMU reserved and
// has not opened yet.
static int reserved_anonymous(uintptr_t addr) {
  FILE* maps = fopen("/proc/self/maps", "re");
  if (maps == NULL) return 0;
  struct Mapping m;
  int found = 0;
  while (next_mapping(maps, &m)) {
    if (addr >= m.start && addr < m.end) {
      found = m.anonymous && strncmp(m.perms, "---p", 4) == 0;
      break;
    }
  }
  fclose(maps);
  return found;
}

// Whether [lo, hi) lies inside private anonymous mappings alone (writable, private, no file, no
// inode).
static int private_anonymous(uintptr_t lo, uintptr_t hi) {
  FILE* maps = fopen("/proc/self/maps", "re");
  if (maps == NULL) return 0;
  struct Mapping m;
  uintptr_t covered = lo;
  while (covered < hi && next_mapping(maps, &m)) {
    if (m.end <= covered) continue;
    if (m.start > covered) break;  // a hole
    if (!m.anonymous || m.perms[0] != 'r' || m.perms[1] != 'w' || m.perms[3] != 'p') break;
    covered = m.end;
  }
  fclose(maps);
  return covered >= hi;
}

// The step of FORKD_QEMU_CODE_THP=window:K (0 <= K < 512), or -1.
static int window_step(const char* mode) {
  static const char kPrefix[] = "window:";
  if (strncmp(mode, kPrefix, sizeof kPrefix - 1) != 0) return -1;
  const char* digits = mode + sizeof kPrefix - 1;
  char* end = NULL;
  long k = strtol(digits, &end, 10);
  if (end == digits || *end != '\0' || k < 0 || k >= 512) return -1;
  return (int)k;
}

// The part of the code buffer left in small pages (window mode), for the SIGURG handler.
static uintptr_t g_rest_at;
static size_t g_rest_len;

static void advise_the_rest(int sig) {
  (void)sig;
  const int saved = errno;
  const uintptr_t at = __atomic_load_n(&g_rest_at, __ATOMIC_ACQUIRE);
  const size_t len = __atomic_load_n(&g_rest_len, __ATOMIC_ACQUIRE);
  if (len != 0) syscall(SYS_madvise, at, len, MADV_HUGEPAGE);
  errno = saved;
}

// Huge pages on [addr, addr + len) up to the 2 MiB step K (counted from the first aligned one);
// the rest from a SIGURG on.
static int huge_up_to_step(uintptr_t addr, size_t len, int k) {
  const uintptr_t end = addr + len;
  const uintptr_t lo = ((addr + kHugePageBytes - 1) & ~(uintptr_t)(kHugePageBytes - 1)) +
                       (uintptr_t)k * kHugePageBytes;
  if (lo + kHugePageBytes > end || lo < addr) {
    return (int)syscall(SYS_madvise, addr, len, MADV_HUGEPAGE);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = advise_the_rest;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  __atomic_store_n(&g_rest_len, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&g_rest_at, lo, __ATOMIC_RELEASE);
  __atomic_store_n(&g_rest_len, (size_t)(end - lo), __ATOMIC_RELEASE);
  // Without the handler the rest keeps QEMU's request: no window rather than one never closed.
  if (sigaction(SIGURG, &sa, NULL) != 0) return (int)syscall(SYS_madvise, addr, len, MADV_HUGEPAGE);
  if (lo > addr && syscall(SYS_madvise, addr, lo - addr, MADV_HUGEPAGE) != 0) return -1;
  return 0;
}

int SHIM_ANSWER(madvise)(void* addr, size_t len, int advice) {
  if (advice == MADV_HUGEPAGE && len <= (size_t)kHugePageBytes) advice = MADV_NOHUGEPAGE;
  if (advice == MADV_HUGEPAGE) {
    const char* mode = getenv("FORKD_QEMU_CODE_THP");
    if (mode != NULL && reserved_anonymous((uintptr_t)addr)) {
      if (strcmp(mode, "collapse") == 0) return 0;
      int k = window_step(mode);
      if (k >= 0) return huge_up_to_step((uintptr_t)addr, len, k);
    }
  }
  return (int)syscall(SYS_madvise, addr, len, advice);
}

// Whether every byte of [buf, buf + len) is zero, found without touching a page that is not
// there yet (on some kernels a read of an untouched page takes a private page of its own, not
// the shared zero page). Present pages are read. A page that is neither present nor swapped out,
// in a private anonymous mapping, has never been written or was discarded: it reads as zero.
static int known_zero(const unsigned char* buf, size_t len) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t lo = (uintptr_t)buf, hi = lo + len;
  if (page == 0 || hi < lo || !private_anonymous(lo, hi)) return 0;
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int zero = 1;
  for (uintptr_t p = lo & ~(page - 1); zero && p < hi; p += page) {
    uint64_t entry = 0;
    if (pread(fd, &entry, sizeof entry, (off_t)(p / page * sizeof entry)) != sizeof entry) {
      zero = 0;
    } else if (entry >> 63 & 1) {  // present: look
      const unsigned char* from = (const unsigned char*)(p < lo ? lo : p);
      const unsigned char* to = (const unsigned char*)(p + page > hi ? hi : p + page);
      for (; from < to; ++from) {
        if (*from != 0) zero = 0;
      }
    } else if (entry >> 62 & 1) {  // swapped out: unknown without reading it back
      zero = 0;
    }
  }
  close(fd);
  return zero;
}

// The header the real function writes into a buffer of `size` bytes: into head, whose first
// 256 bytes the caller compares.
static int small_header(FdtCreateFn real, unsigned char* head, int size) {
  memset(head, 0xa5, (size_t)size);
  return real(head, size);
}

int SHIM_ANSWER(fdt_create)(void* buf, int bufsize) {
  FdtCreateFn real = real_fdt_create();
  if (real == NULL) return -13;  // -FDT_ERR_INTERNAL
  if (buf == NULL || bufsize < (64 << 10) || !known_zero(buf, (size_t)bufsize)) {
    return real(buf, bufsize);
  }
  // The header as the real function lays it out, made in buffers of two sizes: every byte but
  // totalsize must be the same (the others are offsets from the start) and the rest cleared,
  // or this libfdt is not the one this was written for and does it all itself.
  unsigned char head[256] __attribute__((aligned(16)));
  unsigned char twice[512] __attribute__((aligned(16)));
  if (small_header(real, head, (int)sizeof head) != 0 ||
      small_header(real, twice, (int)sizeof twice) != 0 || memcmp(head, twice, 4) != 0 ||
      memcmp(head + 8, twice + 8, sizeof head - 8) != 0) {
    return real(buf, bufsize);
  }
  for (size_t i = sizeof head; i < sizeof twice; ++i) {
    if (twice[i] != 0) return real(buf, bufsize);
  }
  memcpy(buf, head, sizeof head);
  unsigned char* total = (unsigned char*)buf + 4;  // totalsize, big-endian
  const uint32_t size = (uint32_t)bufsize;
  total[0] = (unsigned char)(size >> 24);
  total[1] = (unsigned char)(size >> 16);
  total[2] = (unsigned char)(size >> 8);
  total[3] = (unsigned char)size;
  return 0;
}

static int fadvise_call(int fd, off64_t offset, off64_t len, int advice) {
  if (advice == POSIX_FADV_DONTNEED) return 0;
  long r = syscall(SYS_fadvise64, fd, offset, len, advice);
  return r < 0 ? errno : 0;  // the error number itself, as posix_fadvise returns it
}

int SHIM_ANSWER(posix_fadvise64)(int fd, off64_t offset, off64_t len, int advice) {
  return fadvise_call(fd, offset, len, advice);
}

int SHIM_ANSWER(posix_fadvise)(int fd, off_t offset, off_t len, int advice) {
  return fadvise_call(fd, offset, len, advice);
}
