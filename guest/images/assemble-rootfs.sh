#!/usr/bin/env bash
# Turns a rootfs tarball plus forkd-agent into an ext4 disk image whose init is the agent.
# usage: assemble-rootfs.sh ROOTFS_TAR AGENT OUT_EXT4
set -euo pipefail
tarball=${1:?usage: assemble-rootfs.sh TAR AGENT OUT}
agent=${2:?}
out=${3:?}
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$work" --numeric-owner -xf "$tarball"
install -m 0755 "$agent" "$work/sbin/forkd-agent"
used_mib=$(du -sm "$work" | cut -f1)
size_mib=$(( used_mib + used_mib / 4 + 128 ))
# Inode tables and journal initialised now, once: left lazy, the guest kernel's ext4lazyinit
# zeroes them after every boot, so in every child of a tag (~22 MiB written into each child's
# disk overlay, and the CPU to do it, in its first seconds).
mkfs.ext4 -q -F -L forkd-root -E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
  -d "$work" "$out" "${size_mib}M"
echo "assemble-rootfs.sh: ext4 ${size_mib} MiB"
