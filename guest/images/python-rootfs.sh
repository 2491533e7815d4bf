#!/usr/bin/env bash
# Builds the root filesystem tree of the `python` image (Debian bookworm minbase + python3 +
# numpy) with debootstrap and packs it as a tarball. Needs root and the Debian mirror.
# usage: python-rootfs.sh OUT_TAR
set -euo pipefail
out=${1:?usage: python-rootfs.sh OUT_TAR}
mirror=${FORKD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
[[ $(id -u) -eq 0 ]] || { echo "python-rootfs.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "python-rootfs.sh: apt-get install debootstrap" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-python.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "[python 1/3] debootstrap bookworm minbase + python3-numpy from $mirror (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$work/root" "$mirror" \
  2>&1 | grep -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring|Base system)' \
  | awk 'NR % 20 == 1 || /Base system/' || true
[[ -x "$work/root/usr/bin/python3" ]] || { echo "python-rootfs.sh: debootstrap failed" >&2; exit 1; }
chroot "$work/root" python3 -c 'import numpy' || { echo "python-rootfs.sh: numpy import failed" >&2; exit 1; }
echo "[python 2/3] trimming caches and docs"
rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* \
  "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/usr/share/locale/*
echo "[python 3/3] packing"
tar -C "$work/root" --numeric-owner -cf "$out" .
echo "python-rootfs.sh: $(du -h "$out" | cut -f1)"
