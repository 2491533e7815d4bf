#!/usr/bin/env bash
# Two QEMU builds side by side on the same benchmarks: cold boot and exec round trip, a tag's
# snapshot, a batch of forks with each child's idle CPU and memory, the first and later exec and
# eval in children of a python tag, and live and full BRANCH (pause and time to a ready tag). By
# default Debian 12's own QEMU 7.2 (fetched with apt-get download and unpacked into the real
# home's cache, never installed) against the qemu-system-x86_64 on PATH (QEMU 10 from
# bookworm-backports, which install-deps installs).
#
#   bench/compare-qemu.sh [--forkd PATH] [--old BIN] [--new BIN] [--quick] [--out FILE]
#
#   --old BIN, --new BIN  the two qemu-system-x86_64 binaries (default: Debian 12's 7.2; PATH's)
#   --quick               the smallest runs, to check that the script works (figures mean nothing)
#   --out FILE            also write both sides' results and the ratios as JSON to FILE
#
# Both sides run unjailed (FORKD_JAIL=off): QEMU 7.2 lacks what the jail needs (8.2+), and the
# point is the VMM's own cost. Each side gets its own throw-away FORKD_HOME (tags saved by one
# QEMU are not restored by the other) and the runs alternate old, new per benchmark, so that a
# change in the machine's load weighs on both. The guest RAM pad for TCG follows each binary's
# version (only before 9.0). Everything is removed at the end, Ctrl-C included.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
forkd=$root/build/forkd
old= new=qemu-system-x86_64 out= quick=0
while (($#)); do
  case $1 in
    --forkd) forkd=$(realpath "$2"); shift ;;
    --old) old=$2; shift ;;
    --new) new=$2; shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --quick) quick=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-qemu: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
say() { echo "compare-qemu: $*" >&2; }
[[ -x $forkd ]] || { say "no forkd at $forkd (make build)"; exit 2; }

# shellcheck source=../tests/lib/test-home.sh
source "$root/tests/lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")

# Debian 12's QEMU 7.2, unpacked once into the real home's cache.
fetch_debian_qemu() {
  local dir=$real_home/cache/qemu-debian12 pkg ver stage
  if [[ -x $dir/root/usr/bin/qemu-system-x86_64 ]]; then
    echo "$dir/root/usr/bin/qemu-system-x86_64"
    return 0
  fi
  say "fetching Debian 12's QEMU (apt-get download; unpacked into $dir, not installed)"
  stage=$(mktemp -d "$real_home/cache/.qemu-debian12.XXXXXX")
  for pkg in qemu-system-x86 qemu-system-common qemu-system-data; do
    # The bookworm version, not the backport.
    ver=$(apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2)} $2 ~ /^1:7\.2/ && $2 !~ /bpo/ {print $2; exit}')
    if [[ -z $ver ]]; then
      say "apt-cache knows no QEMU 7.2 of $pkg (run apt-get update?)"
      rm -rf "$stage"
      return 1
    fi
    (cd "$stage" && apt-get download -q "$pkg=$ver" >&2) || { rm -rf "$stage"; return 1; }
  done
  for deb in "$stage"/*.deb; do dpkg -x "$deb" "$stage/root"; done
  rm -f "$stage"/*.deb
  "$stage/root/usr/bin/qemu-system-x86_64" --version >/dev/null || { rm -rf "$stage"; return 1; }
  rm -rf "$dir"
  mv "$stage" "$dir"
  echo "$dir/root/usr/bin/qemu-system-x86_64"
}
if [[ -z $old ]]; then old=$(fetch_debian_qemu); fi
new=$(command -v "$new" || true)
[[ -x $old && -x $new ]] || { say "need two QEMU binaries (old: '$old', new: '$new')"; exit 2; }
version() { "$1" --version | sed -n '1s/.*version \([0-9][0-9.]*\).*/\1/p'; }
old_v=$(version "$old") new_v=$(version "$new")
say "old: QEMU $old_v ($old)"
say "new: QEMU $new_v ($new)"

work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-compare-qemu.XXXXXX")
"$root/tests/prepare-images.sh" "$forkd" >&2
new_home home_old
new_home home_new
cleanup() {
  local status=$?
  set +e
  remove_homes || status=1
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((quick)); then
  boot=(bench boot --image minimal --machines microvm --runs 1 --execs 3 --json)
  spawn=(bench spawn --tag cmp-min -n 2 --idle 2 --no-baselines)
  branch=(bench branch --memory 256 --runs 1 --modes live full --baseline-runs 1 --chain-spawns 1 --json)
  exec=(bench exec --image python --children 1 --runs 2 --json)
else
  boot=(bench boot --image minimal --machines microvm --runs 5 --execs 20 --json)
  spawn=(bench spawn --tag cmp-min -n 20 --idle 30 --no-baselines)
  branch=(bench branch --memory 256 --runs 5 --modes live full --baseline-runs 3 --chain-spawns 3 --json)
  exec=(bench exec --image python --children 5 --runs 50 --json)
fi
# side NAME CMD...: runs a forkd command with side NAME's QEMU and home.
side() {
  local name=$1 bin home
  shift
  if [[ $name == old ]]; then bin=$old home=$home_old; else bin=$new home=$home_new; fi
  FORKD_QEMU=$bin FORKD_JAIL=off FORKD_HOME=$home "$forkd" "$@"
}
for s in old new; do
  say "[$s] boot (minimal, microvm)"
  side "$s" "${boot[@]}" >"$work/boot-$s.json"
done
for s in old new; do
  say "[$s] snapshot of a 256 MiB minimal sandbox (tag cmp-min)"
  start=$(date +%s%N)
  side "$s" snapshot --tag cmp-min --image minimal --memory 256 --exec 'echo 41 > /tmp/counter' \
    >/dev/null
  echo "{\"snapshot_ms\": $((($(date +%s%N) - start) / 1000000))}" >"$work/snapshot-$s.json"
done
for s in old new; do
  say "[$s] spawn (${spawn[*]:2})"
  side "$s" "${spawn[@]}" --out "$work/spawn-$s.json" >/dev/null
done
for s in old new; do
  say "[$s] exec and eval in children of a python tag (first after the fork, and later)"
  side "$s" "${exec[@]}" >"$work/exec-$s.json"
done
for s in old new; do
  say "[$s] branch, live and full (256 MiB)"
  side "$s" "${branch[@]}" >"$work/branch-$s.json"
done

python3 "$root/bench/compare_qemu.py" "$work" "$old_v" "$new_v" ${out:+--out "$out"}
