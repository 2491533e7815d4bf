#!/usr/bin/env bash
# Builds the forkd guest kernel (bzImage) from Debian's linux-source-6.1.
# usage: build.sh OUT_BZIMAGE
# The caller (forkd's image cache) keys the result by a hash of this script, the fragment and the
# source package version, and renames OUT into place only after this script succeeds.
set -euo pipefail
out=${1:?usage: build.sh OUT_BZIMAGE}
here=$(cd "$(dirname "$0")" && pwd)
src_tar=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n 1 || true)
if [[ -z "$src_tar" ]]; then
  echo "build.sh: /usr/src/linux-source-6.1.tar.* not found; run scripts/install-deps.sh" >&2
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "[kernel 1/4] unpacking $(basename "$src_tar")"
tar -xf "$src_tar" -C "$work"
cd "$work"/linux-source-6.1
echo "[kernel 2/4] configuring (tinyconfig + guest/kernel/forkd.config)"
make -s tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/forkd.config" >/dev/null
make -s olddefconfig >/dev/null
# Every requested option must have survived olddefconfig (a missing dependency drops it silently,
# a select turns one back on).
missing=0
while IFS= read -r line; do
  if [[ "$line" =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
    # An option turned off must stay off (another option may select it back on).
    if grep -q "^${BASH_REMATCH[1]}=" .config; then
      echo "build.sh: option still on in final config: ${BASH_REMATCH[1]}" >&2
      missing=1
    fi
    continue
  fi
  [[ "$line" =~ ^CONFIG_ ]] || continue
  if ! grep -qx "$line" .config; then
    echo "build.sh: option not in final config: $line" >&2
    missing=1
  fi
done < "$here/forkd.config"
((missing == 0)) || exit 1
echo "[kernel 3/4] compiling bzImage with $(nproc) jobs (12-17 CPU-minutes, depending on the host: 6-9 min on 2 idle cores)"
start=$(date +%s)
# Progress from kbuild's quiet lines: a line every 5% with the time left at the rate so far.
# About 1,200 files are compiled for forkd.config; the figure only feeds this estimate.
progress() {
  local total=1200 n=0 next=5 pct el left
  while IFS= read -r line; do
    if [[ $line =~ ^\ \ (CC|AS)\  ]]; then
      n=$((n + 1))
      pct=$((n * 100 / total))
      if ((pct >= next && pct < 100)); then
        el=$(($(date +%s) - start))
        left=$(((el * (total - n) / n + 59) / 60))
        echo "[kernel 3/4] compiling: ${pct}% of about $total files, about $left min left"
        next=$((pct + 5))
      fi
    elif [[ ! $line =~ ^\ \ [A-Z0-9_]+\  && -n ${line// /} ]]; then
      echo "$line"  # anything but kbuild's step lines: warnings, errors
    fi
  done
  echo "[kernel 3/4] compiled $n files"
}
# NM and AR through gcc's wrappers: they hand binutils gcc's LTO plugin by name, so binutils does
# not load every plugin in /usr/lib/bfd-plugins. Where clang is installed (install-deps.sh
# brings it) that directory holds LLVMgold, and plain `nm` or `ar` then loads libLLVM: 64 ms per
# call against gcc-nm's 10 ms here. `ar` runs once per directory; `nm` ran once per object in
# check-local-export (9.8 % of the build's CPU, perf), which the next line now skips.
# cmd_check_local_export= skips kbuild's check that no static symbol is exported: a lint of the
# kernel's own source (a fixed Debian release here) that changes nothing in the output, and costs
# five processes per object (sh, a subshell, gcc-nm, nm, awk). Without it the build took 926 and
# 985 CPU-s against 1,132 and 1,063 with it, alternating on one host, and the bzImage was the
# same bytes.
make -j"$(nproc)" bzImage NM=gcc-nm AR=gcc-ar cmd_check_local_export= KBUILD_BUILD_TIMESTAMP="2024-01-01 00:00:00" KBUILD_BUILD_USER=forkd KBUILD_BUILD_HOST=forkd 2>&1 \
  | progress || true
[[ -f arch/x86/boot/bzImage ]] || { echo "build.sh: bzImage was not produced" >&2; exit 1; }
echo "[kernel 4/4] done in $(( $(date +%s) - start )) s"
cp arch/x86/boot/bzImage "$out"
