#pragma once
// What host_jail() learns by starting QEMU (its version, whether it runs with the stub libraries),
// kept in a file between forkd processes. Each probe is a start of QEMU (~45 ms, most of the
// CLI's own cost on a `forkd fork -n 1`), and its answer changes only when QEMU, the stubs, forkd
// itself or the loader's environment do: all of those are in the key, down to inode numbers and
// change times, so a reinstalled or rebuilt file probes again. A cache that cannot be read or
// written only costs the probe.
#include <optional>
#include <string>

#include "vmm/lean_qemu.h"

namespace forkd::vmm {

struct QemuProbe {
  LeanQemuProbe lean;
  std::string qemu_version;  // empty: QEMU did not run
};

// The key for probing `binary` (a name looked up in PATH, or a path) with the stubs in
// lean_dir; empty when the binary is not found (nothing is then cached).
std::string qemu_probe_key(const std::string& binary, const std::string& lean_dir);

// The cached probe for key, if the file holds one.
std::optional<QemuProbe> load_qemu_probe(const std::string& file, const std::string& key);

// Replaces the file atomically (mode 0600, not flushed); failures are ignored.
void store_qemu_probe(const std::string& file, const std::string& key, const QemuProbe& p);

// $FORKD_HOME/cache/qemu-probe.json
std::string qemu_probe_cache_path();

}  // namespace forkd::vmm
