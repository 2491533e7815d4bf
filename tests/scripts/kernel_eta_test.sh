#!/usr/bin/env bash
# scripts/lib/kernel-eta.sh: the kernel's time left on demo.sh's status line, from a log written
# here line by line with the clock (kernel_eta_now) set by hand. No build, no VM.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib/kernel-eta.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fails=0
# at T P: build.sh's line for P % (its own estimate 99 min) appears at second T; noted.
at() {
  kernel_eta_now=$1
  echo "[kernel 3/4] compiling: $2% of about 1200 files, about 99 min left" >>"$log"
  kernel_eta_note "$log"
}
expect() {  # expect WHAT GOT WANT
  if [[ $2 != "$3" ]]; then
    echo "FAIL: $1: got '$2', want '$3'" >&2
    fails=$((fails + 1))
  fi
}

echo "[kernel 3/4] compiling bzImage with 2 jobs" >"$log"
kernel_eta_note "$log"
expect "no percentage yet: nothing noted" "${#kseen[@]}" 0
at 100 5
expect "one percentage: build.sh's own figure" "$(kernel_left 5 99)" 99
# 5 % took 60 s: 90 % more is 1080 s, 18 min.
at 160 10
expect "rate since 5 %" "$(kernel_left 10 99)" 18
# The same percentage later: the seconds since it was first seen count down, and it is noted once.
at 190 10
expect "10 % noted once, at 160 s" "${kseen[10]}" 160
expect "30 s later" "$(kernel_left 10 99)" 18
kernel_eta_now=2000
expect "long past the estimate: at least a minute" "$(kernel_left 10 99)" 1
# The cores freed up: 5 % per 20 s. The window is 15 %, so the slow start drops out.
at 220 15
at 240 20
at 260 25
at 280 30
# 30 % at 280 s, 15 % at 220 s: 60 s per 15 %, 70 % more is 280 s, 5 min.
expect "rate over the last 15 % only" "$(kernel_left 30 99)" 5
# A percentage skipped between two polls (35 % never seen) still finds its window.
at 300 40
expect "window from 25 %" "$(kernel_left 40 99)" 3
# Whatever is in the log after the compile (done line) leaves the notes alone.
echo "[kernel 4/4] done in 300 s" >>"$log"
kernel_eta_note "$log"
expect "done line: last percentage kept" "${kseen[40]}" 300

((fails == 0)) && echo "kernel_eta_test: all checks passed"
exit $((fails > 0))
