#!/usr/bin/env python3
"""Writes src/vmm/lean/unused_libs.txt: what QEMU imports from the libraries forkd never uses.

For each library named below that the installed QEMU links, the file lists every symbol QEMU
binds to in it, grouped by symbol version. The build makes a stub library of each from that list
(src/vmm/lean/unused_stubs.cmake; see vmm/lean_qemu.h for why). Run it after QEMU changes and
commit the result:

    python3 scripts/gen-unused-stubs.py [QEMU_BINARY] > src/vmm/lean/unused_libs.txt

The build records the QEMU version of the file's "From:" line, and forkd uses the stubs only
with that version; with another, or a QEMU that imports a symbol the file lacks, it starts QEMU
with its own libraries (the probe in vmm/lean_qemu.cc), so a stale file costs speed, not function.
"""
import re
import subprocess
import sys

# What each library is for in QEMU, and why forkd never asks for it.
UNUSED = {
    "libgnutls.so.30": "TLS for VNC, NBD, migration and chardevs; QEMU's RNG (answered)",
    "libnettle.so.8": "ciphers and hashes for LUKS, VNC auth, secrets",
    "libhogweed.so.6": "RSA for virtio-crypto",
    "libgmp.so.10": "big numbers for hogweed",
    "libpng16.so.16": "VNC's PNG encoding",
    "libjpeg.so.62": "VNC's JPEG encoding",
    "libsasl2.so.2": "VNC's SASL authentication",
    "librdmacm.so.1": "RDMA migration",
    "libibverbs.so.1": "RDMA migration",
    "libvdeplug.so.2": "VDE networks",
    "libbpf.so.1": "virtio-net's eBPF RSS (rss=on)",
    "libfuse3.so.3": "FUSE block exports",
    "libnuma.so.1": "host NUMA policies of memory backends",
    "libudev.so.1": "host device discovery (forkd hands QEMU no host devices)",
    "libgio-2.0.so.0": "D-Bus: dbus-vmstate objects and the D-Bus display",
    "libgobject-2.0.so.0": "GObject casts for those D-Bus parts",
}
# Defined by hand in src/vmm/lean/unused_answers.c (QEMU calls them in normal use).
ANSWERED = {"gnutls_global_init", "gnutls_rnd"}


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def main():
    qemu = sys.argv[1] if len(sys.argv) > 1 else "/usr/bin/qemu-system-x86_64"
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", run("ldd", qemu), re.M))
    version_file, current = {}, None
    for line in run("readelf", "-VW", qemu).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
        m = re.search(r"Name: (\S+)", line)
        if m and current:
            version_file[m.group(1)] = current
    imports = []
    for line in run("readelf", "-W", "--dyn-syms", qemu).splitlines():
        f = line.split()
        if len(f) >= 8 and f[6] == "UND" and f[7]:
            name, _, version = f[7].partition("@")
            imports.append((name, version.split(" ")[0] or None))
    print("# What QEMU imports from libraries forkd never uses (scripts/gen-unused-stubs.py).")
    print(f"# From: {run(qemu, '--version').splitlines()[0]}")
    print("# soname version-or-- symbol... ; a + marks a symbol src/vmm/lean/unused_answers.c defines")
    for soname, why in UNUSED.items():
        if soname not in paths:
            continue
        defined = set()
        for line in run("readelf", "-W", "--dyn-syms", paths[soname]).splitlines():
            f = line.split()
            if len(f) >= 8 and f[6] != "UND" and f[4] in ("GLOBAL", "WEAK"):
                if f[3] != "FUNC":
                    continue
                defined.add(f[7].split("@")[0])
        groups = {}
        for name, version in imports:
            mine = version_file.get(version) == soname if version else name in defined
            if mine:
                if name not in defined:
                    sys.exit(f"{soname}: {name} is not a function there; stub it by hand")
                groups.setdefault(version or "-", []).append(name)
        print(f"# {soname}: {why}")
        for version, names in groups.items():
            marked = ["+" + n if n in ANSWERED else n for n in sorted(names)]
            print(soname, version, " ".join(marked))


if __name__ == "__main__":
    main()
