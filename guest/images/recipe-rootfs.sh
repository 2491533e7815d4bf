#!/usr/bin/env bash
# Builds the root filesystem tree of an image recipe (recipes/*.recipe) with debootstrap and
# apt-get, and packs it as a tarball. Needs root and the
# Debian mirror. forkd has validated every argument (suite, variant, package names).
# usage: recipe-rootfs.sh OUT_TAR SUITE VARIANT PKG[,PKG...] [CHECK_COMMAND...]
set -euo pipefail
out=${1:?usage: recipe-rootfs.sh OUT_TAR SUITE VARIANT PACKAGES [CHECK...]}
suite=${2:?}
variant=${3:?}
packages=${4:?}
shift 4
mirror=${FORKD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
[[ $(id -u) -eq 0 ]] || { echo "recipe-rootfs.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "recipe-rootfs.sh: apt-get install debootstrap" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-recipe.XXXXXX")
trap 'rm -rf "$work"' EXIT
variant_arg=()
[[ $variant == default ]] || variant_arg=("--variant=$variant")
# debootstrap makes the base system; apt-get in the new tree adds the packages. (debootstrap's
# --include configures them with the base system, where some, such as npm, fail.)
echo "[recipe 1/5] debootstrap $suite ${variant} from $mirror (a few minutes)"
debootstrap "${variant_arg[@]}" "$suite" "$work/root" "$mirror" \
  2>&1 | grep -E '^(I: (Retrieving|Validating|Extracting|Installing|Configuring|Base system)|W: |E: )' \
  | awk 'NR % 20 == 1 || /Base system|^W: |^E: /' || true
[[ -x "$work/root/bin/sh" ]] || { echo "recipe-rootfs.sh: debootstrap failed" >&2; exit 1; }
IFS=, read -r -a wanted <<<"$packages"
echo "[recipe 2/5] apt-get install ${wanted[*]}"
apt_log=$work/apt.log
in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$work/root" "$@"; }
if ! { in_root apt-get -q update && in_root apt-get -q -y --no-install-recommends install "${wanted[@]}"; } \
  >"$apt_log" 2>&1; then
  grep -E '^(E|W): ' "$apt_log" >&2 || tail -n 20 "$apt_log" >&2
  echo "recipe-rootfs.sh: apt-get install failed" >&2
  exit 1
fi
grep -cE '^Setting up ' "$apt_log" | sed 's/^/recipe-rootfs.sh: packages set up: /'
echo "[recipe 3/5] checking packages"
missing=()
for p in "${wanted[@]}"; do
  status=$(dpkg-query --admindir="$work/root/var/lib/dpkg" -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]} == 0)) || { echo "recipe-rootfs.sh: not installed: ${missing[*]}" >&2; exit 1; }
for check in "$@"; do
  echo "recipe-rootfs.sh: check: $check"
  chroot "$work/root" /bin/sh -c "$check" || { echo "recipe-rootfs.sh: check failed: $check" >&2; exit 1; }
done
echo "[recipe 4/5] trimming caches and docs"
rm -rf "$work/root"/var/cache/apt/archives/*.deb "$work/root"/var/lib/apt/lists/* \
  "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* "$work/root"/usr/share/locale/*
echo "[recipe 5/5] packing"
tar -C "$work/root" --numeric-owner -cf "$out" .
echo "recipe-rootfs.sh: $(du -h "$out" | cut -f1)"
