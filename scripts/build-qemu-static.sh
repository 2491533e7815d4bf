#!/usr/bin/env bash
# Builds forkd's own QEMU into BUILD/qemu-static (bin/qemu-system-x86_64, version, key): the
# installed QEMU's version (src/vmm/lean/qemu-static/source.txt), configured with only what a
# sandbox without a network needs (x86_64, TCG and KVM, microvm and its virtio devices, qcow2,
# seccomp) and linked statically. Such a QEMU starts without the dynamic loader's work for ~50
# libraries (relocations, symbol lookups, their start-up code), about 25 against 65-100 ms of
# CPU here. forkd runs it for the VMs it fits (src/vmm/static_qemu.h) and the installed QEMU for
# the rest. The answers of forkd's QEMU shim (src/vmm/lean/qemu_shim.c) are linked in (--wrap).
# forkd's changes to QEMU's source are applied after unpacking: src/vmm/lean/qemu-static/patches,
# one file each, its reason at its top.
#
# usage: build-qemu-static.sh [BUILD_DIR]     (make qemu-static; make test and make bench run it)
# Nothing to do when BUILD/qemu-static was built from the same inputs. Skipped, with a message,
# when the installed QEMU is another version than the pinned source. About 5 minutes on 2 cores;
# the log is BUILD/logs/qemu-static.log.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

BUILD=${1:-build}
JOBS=${JOBS:-$(nproc)}
here=src/vmm/lean/qemu-static
out=$BUILD/qemu-static
work=$BUILD/qemu-static-work
mkdir -p "$work" "$BUILD/logs"
log=$(realpath "$BUILD/logs/qemu-static.log")
work=$(realpath "$work")

field() { sed -n "s/^$1 //p" "$here/source.txt"; }
version=$(field version)
url=$(field url)
sha=$(field sha256)

installed=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -1)
if [[ $installed != "$version" ]]; then
  echo "qemu-static: skipped: the installed QEMU is ${installed:-missing} and this build is" \
    "pinned to $version ($here/source.txt); forkd runs the installed QEMU"
  exit 0
fi

# One build at a time per build directory.
exec 9>"$work/lock"
if ! flock -n 9; then
  echo "qemu-static: another build of it is running in $BUILD; waiting"
  flock 9
fi

# Everything the binary is made from: a change to any of them builds it again.
configure_args=(--prefix=/usr --disable-relocatable --python=/usr/bin/python3
  --target-list=x86_64-softmmu --without-default-features --without-default-devices
  --with-devices-x86_64=forkd --enable-tcg --enable-kvm --enable-seccomp --enable-fdt=system
  --static --disable-docs --disable-tools --disable-guest-agent --disable-install-blobs)
wraps=madvise,fdt_create,posix_fadvise,posix_fadvise64
key=$({
  cat "$here/source.txt" "$here/devices.mak" src/vmm/lean/qemu_shim.c "$self" "$here"/patches/*.patch
  echo "${configure_args[*]} $wraps"
  dpkg-query -W libc6-dev libglib2.0-dev libpcre2-dev libseccomp-dev libfdt-dev zlib1g-dev gcc meson 2>/dev/null
} | sha256sum | cut -c1-16)
if [[ -x $out/bin/qemu-system-x86_64 && -f $out/key && $(cat "$out/key") == "$key" ]]; then
  echo "qemu-static: up to date ($out, QEMU $version)"
  exit 0
fi
t0=$SECONDS
: >"$log"

tarball=$work/$(basename "$url")
if [[ ! -f $tarball ]] || ! echo "$sha  $tarball" | sha256sum -c --quiet >/dev/null 2>&1; then
  echo "qemu-static: downloading the QEMU $version source (38 MiB) from deb.debian.org"
  rm -f "$tarball" "$tarball.part"
  curl -fsSL --retry 3 --connect-timeout 20 -o "$tarball.part" "$url"
  if ! echo "$sha  $tarball.part" | sha256sum -c --quiet >/dev/null 2>&1; then
    rm -f "$tarball.part"
    echo "qemu-static: $url does not have the SHA-256 in $here/source.txt; not building" >&2
    exit 1
  fi
  mv "$tarball.part" "$tarball"
fi

src=$work/src-$key
if [[ ! -f $src/.unpacked ]]; then
  echo "qemu-static: unpacking"
  rm -rf "$work"/src-* "$work"/build-*
  mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  # Debian's tarball has no firmware blobs (+ds); the build would unpack EDK2's from it.
  sed -i 's/^\( *\)unpack_edk2_blobs = bzip2.found()/\1unpack_edk2_blobs = false/' "$src/meson.build"
  grep -q 'unpack_edk2_blobs = false$' "$src/meson.build" || {
    echo "qemu-static: $src/meson.build has no EDK2 line to change; is the source $version?" >&2
    exit 1
  }
  cp "$here/devices.mak" "$src/configs/devices/x86_64-softmmu/forkd.mak"
  # forkd's changes to QEMU, each explained in its file.
  for p in "$here"/patches/*.patch; do
    patch -s -p1 -d "$src" --forward --no-backup-if-mismatch <"$p" || {
      echo "qemu-static: $p does not apply to the QEMU $version source" >&2
      exit 1
    }
  done
  touch "$src/.unpacked"
fi

bdir=$work/build-$key
mkdir -p "$bdir"
# The shim's answers, for --wrap (static-pie: position-independent like the rest).
cc -O2 -fPIE -Wall -DFORKD_SHIM_WRAP -c src/vmm/lean/qemu_shim.c -o "$work/shim.o"
if [[ ! -f $bdir/build.ninja ]]; then
  echo "qemu-static: configuring"
  ldflags="$work/shim.o"
  for w in ${wraps//,/ }; do ldflags+=" -Wl,--wrap=$w"; done
  if ! (cd "$bdir" && "$src/configure" "${configure_args[@]}" --extra-ldflags="$ldflags") >>"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "qemu-static: configure failed; the log is $log" >&2
    exit 1
  fi
fi

echo "qemu-static: building QEMU $version (about 5 min on 2 cores; log $log)"
ninja -C "$bdir" -j"$JOBS" qemu-system-x86_64 >>"$log" 2>&1 &
ninja_pid=$!
trap 'kill "$ninja_pid" 2>/dev/null || true' EXIT
while kill -0 "$ninja_pid" 2>/dev/null; do
  sleep 20
  step=$(grep -o '^\[[0-9]*/[0-9]*\]' "$log" | tail -1 || true)
  [[ -n $step ]] && kill -0 "$ninja_pid" 2>/dev/null &&
    echo "qemu-static: $step steps, $((SECONDS - t0)) s"
done
if ! wait "$ninja_pid"; then
  tail -20 "$log" >&2
  echo "qemu-static: the build failed; the log is $log" >&2
  exit 1
fi
trap - EXIT

stage=$(mktemp -d "$BUILD/qemu-static.staging.XXXXXX")
mkdir -p "$stage/bin"
strip -o "$stage/bin/qemu-system-x86_64" "$bdir/qemu-system-x86_64"
got=$("$stage/bin/qemu-system-x86_64" --version | head -1)
if [[ $got != *"version $version"* ]]; then
  rm -rf "$stage"
  echo "qemu-static: the binary says '$got', not $version" >&2
  exit 1
fi
echo "$version" >"$stage/version"
echo "$key" >"$stage/key"
chmod 755 "$stage" "$stage/bin"
sync -f "$stage/bin/qemu-system-x86_64"
rm -rf "$out.old"
[[ -e $out ]] && mv "$out" "$out.old"
mv "$stage" "$out"
rm -rf "$out.old"
echo "qemu-static: built $out/bin/qemu-system-x86_64 in $((SECONDS - t0)) s"
