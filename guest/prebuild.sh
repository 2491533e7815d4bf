#!/usr/bin/env bash
# Builds the guest kernel or the python image's root filesystem tarball into forkd's cache
# exactly as forkd itself would (engine/image_store.cc: ImageStore::kernel, python_rootfs): the
# same cache key, path, lock and log, staged and then renamed. Neither needs the forkd binary,
# so `make demo` (scripts/demo.sh) runs them beside the C++ build, and forkd finds them built.
#
# usage: prebuild.sh kernel|python-rootfs          build it unless it is cached
#        prebuild.sh --path kernel|python-rootfs   print where forkd caches it
# The home is forkd's: $FORKD_HOME, else /var/lib/forkd as root, else ~/.local/share/forkd.
# The keys must stay those of ImageStore::kernel_path/python_rootfs_path; engine_test
# (ImageStoreTest.PrebuildPathsMatch) checks that they do.
set -euo pipefail
umask 077

here=$(cd "$(dirname "$0")" && pwd)
assets=${FORKD_ASSETS_DIR:-$here}

forkd_home() {
  if [[ -n ${FORKD_HOME:-} ]]; then
    local h
    h=$(realpath -m -s "$FORKD_HOME")
    echo "$h"
  elif [[ $(id -u) -eq 0 ]]; then
    echo /var/lib/forkd
  else
    echo "${HOME:-/tmp}/.local/share/forkd"
  fi
}

# sha256_hex of "extra" plus "basename=sha256\n" per file, first 16 hex digits (hash_files).
key() {
  local acc=$1 f
  shift
  for f in "$@"; do
    acc+="$(basename "$f")=$(sha256sum "$f" | cut -d' ' -f1)"$'\n'
  done
  printf '%s' "$acc" | sha256sum | cut -c1-16
}

kernel_path() {
  local ver
  ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || ver=unknown
  echo "$home/cache/kernel-$(key "linux-source-6.1=$ver"$'\n' "$assets/kernel/build.sh" \
    "$assets/kernel/forkd.config")/bzImage"
}

rootfs_path() {
  echo "$home/cache/python-rootfs-$(key $'bookworm\n' "$assets/images/python-rootfs.sh").tar"
}

need_free() {  # need_free DIR MIB WHAT
  local free
  free=$(df -Pm "$1" | awk 'NR == 2 {print $4}')
  if ((free < $2)); then
    echo "prebuild.sh: $3 needs $2 MiB free in $1, only $free MiB available" >&2
    exit 1
  fi
}

# Runs SCRIPT ARGS... with its output in LOG (as forkd does) and its progress lines on stdout.
run_logged() {
  local log=$1
  shift
  if ! bash "$@" 2>&1 | tee "$log" | { grep --line-buffered -E '^(\[(kernel|python) |I: )' || true; }; then
    echo "prebuild.sh: $(basename "$1") failed; its log: $log" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

# Takes an exclusive flock on cache/NAME on descriptor 9 (forkd waits on the same file).
lock() {
  exec 9>"$home/cache/$1"
  if ! flock -n 9; then
    echo "prebuild.sh: waiting for another build holding cache/$1"
    flock 9
  fi
}

build_kernel() {
  local out dir
  out=$(kernel_path)
  dir=$(dirname "$out")
  [[ -f $out ]] && { echo "prebuild.sh: guest kernel cached: $out"; return 0; }
  mkdir -p "$home/cache"
  lock .build.lock
  [[ -f $out ]] && { echo "prebuild.sh: guest kernel built meanwhile: $out"; return 0; }
  need_free "${TMPDIR:-/tmp}" 2500 "the guest kernel build"
  mkdir -p "$dir"
  run_logged "$dir/build.log" "$assets/kernel/build.sh" "$out.staging"
  mv -f "$out.staging" "$out"
  sync "$dir"
}

build_rootfs() {
  local out
  out=$(rootfs_path)
  [[ -f $out ]] && { echo "prebuild.sh: python rootfs cached: $out"; return 0; }
  if [[ $(id -u) -ne 0 ]]; then
    echo "prebuild.sh: the python rootfs needs root (debootstrap); forkd will say so too" >&2
    exit 1
  fi
  mkdir -p "$home/cache"
  lock .rootfs.lock
  [[ -f $out ]] && { echo "prebuild.sh: python rootfs built meanwhile: $out"; return 0; }
  need_free "$home/cache" 1500 "the python image build"
  run_logged "$home/cache/python-rootfs.log" "$assets/images/python-rootfs.sh" "$out.staging"
  mv -f "$out.staging" "$out"
  sync "$home/cache"
}

home=$(forkd_home)
case "${1:-} ${2:-}" in
  "--path kernel") kernel_path ;;
  "--path python-rootfs") rootfs_path ;;
  "kernel ") build_kernel ;;
  "python-rootfs ") build_rootfs ;;
  *)
    echo "usage: prebuild.sh [--path] kernel|python-rootfs" >&2
    exit 2
    ;;
esac
