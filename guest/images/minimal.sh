#!/usr/bin/env bash
# Builds the `minimal` image: an initramfs with busybox and forkd-agent as /init.
# usage: minimal.sh AGENT_BINARY OUT_INITRAMFS_GZ
set -euo pipefail
agent=${1:?usage: minimal.sh AGENT OUT}
out=${2:?usage: minimal.sh AGENT OUT}
busybox=$(command -v busybox || true)
[[ -n "$busybox" ]] || { echo "minimal.sh: busybox not found; apt-get install busybox-static" >&2; exit 1; }
ldd_out=$(LC_ALL=C ldd "$busybox" 2>&1 || true)
if [[ "$ldd_out" != *"not a dynamic executable"* ]]; then
  echo "minimal.sh: $busybox is not static; apt-get install busybox-static" >&2
  exit 1
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/forkd-minimal.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc}
chmod 0755 "$root"  # mktemp made it 0700: the guest's / must let every user through
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ "$applet" == busybox ]] && continue
  [[ -e "$root/bin/$applet" ]] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$agent" "$root/init"
ln -s ../init "$root/sbin/forkd-agent"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
# The kernel opens /dev/console for init before devtmpfs is mounted.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) \
  | gzip -6 > "$out"
echo "minimal.sh: initramfs $(du -h "$out" | cut -f1)"
