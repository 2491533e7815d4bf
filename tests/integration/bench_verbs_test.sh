#!/usr/bin/env bash
# The bench verbs on real VMs, smallest options: `bench exec` (a minimal tag, one child: its
# first and later exec round trips) and `bench spawn`'s idle window (each child's QEMU CPU).
# and its baselines on a python tag (cold boot + warm-up; plain restore of a sandbox with a disk,
# jailed), and Ctrl-C in its idle window (nothing left behind, ksmd as it was). Checks the JSON says what was asked, not the figures (those are bench/'s business).
#   tests/integration/bench_verbs_test.sh FORKD
set -euo pipefail
forkd=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib/test-home.sh
source "$root/tests/lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
new_home home
out=$(mktemp -d "${TMPDIR:-/tmp}/forkd-bench-verbs.XXXXXX")
cleanup() {
  local status=$?
  set +e
  remove_homes || status=1
  rm -rf "$out"
  exit "$status"
}
trap cleanup EXIT
export FORKD_HOME=$home
fail() { echo "bench_verbs_test: FAIL: $*" >&2; exit 1; }
check() {  # FILE PYTHON-EXPRESSION-ON-j DESCRIPTION
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$1" "$2" || fail "$3 ($(head -c 2000 "$1"))"
}

"$forkd" bench exec --image minimal --memory 128 --children 1 --runs 3 --json >"$out/exec.json"
check "$out/exec.json" 'j["bench"] == "exec" and j["image"] == "minimal"' "bench exec names itself"
check "$out/exec.json" 'j["exec_first_ms"]["n"] == 1 and j["exec_ms"]["n"] == 3' \
  "one first exec and 3 later ones"
check "$out/exec.json" '0 < j["exec_ms"]["min"] <= j["exec_ms"]["max"] and j["attach_ms"]["n"] == 1' \
  "exec times are positive and ordered"
check "$out/exec.json" '"eval_ms" not in j' "no eval on the minimal image"
[[ -z $("$forkd" ps --json | python3 -c 'import json,sys; print(*[s["id"] for s in json.load(sys.stdin)["sandboxes"]])') ]] ||
  fail "bench exec left a sandbox behind"

"$forkd" snapshot --tag idle --image minimal --memory 128 >/dev/null
"$forkd" bench spawn --tag idle -n 2 --idle 2 --no-baselines --out "$out/spawn.json" >/dev/null
check "$out/spawn.json" 'j["idle_cpu_pct"]["n"] == 2 and j["idle_cpu_pct"]["min"] >= 0' \
  "idle CPU measured for both children"
check "$out/spawn.json" 'j["idle_cpu_pct_all_children"] >= j["idle_cpu_pct"]["max"]' \
  "all children's idle CPU is at least one child's"
# Ctrl-C in the idle window: exit 130, no child left behind, and (with --ksm, where the kernel
# can) ksmd's settings as they were.
sandboxes() { "$forkd" ps --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))'; }
ksm=()
doctor=$(FORKD_KSM=1 "$forkd" doctor --json || true)
if python3 -c 'import json,sys; sys.exit(0 if any(c["check"] == "ksm" and c["status"] != "fail" for c in json.loads(sys.argv[1])["checks"]) else 1)' "$doctor"; then
  ksm=(--ksm --ksm-pages 4321)
fi
ksm_settings() { cat /sys/kernel/mm/ksm/run /sys/kernel/mm/ksm/pages_to_scan 2>/dev/null | tr '\n' ' '; }
ksm_before=$(ksm_settings)
"$forkd" bench spawn --tag idle -n 2 --idle 60 --no-baselines "${ksm[@]}" >"$out/interrupted.txt" 2>&1 &
bench_pid=$!
for _ in $(seq 150); do
  (($(sandboxes) >= 2)) && break
  sleep 0.2
done
(($(sandboxes) >= 2)) || fail "bench spawn did not start its children ($(cat "$out/interrupted.txt"))"
if ((${#ksm[@]})); then
  [[ $(ksm_settings) == "1 4321 " ]] || fail "bench spawn --ksm did not set ksmd up: $(ksm_settings)"
fi
kill -INT "$bench_pid"
status=0
wait "$bench_pid" || status=$?
((status == 130)) || fail "an interrupted bench spawn exited $status ($(cat "$out/interrupted.txt"))"
grep -q "interrupted, cleaned up" "$out/interrupted.txt" || fail "no word of the cleanup"
(($(sandboxes) == 0)) || fail "an interrupted bench spawn left $(sandboxes) sandboxes"
[[ $(ksm_settings) == "$ksm_before" ]] || fail "ksmd left as $(ksm_settings), was $ksm_before"

"$forkd" snapshot --tag py --image python --memory 512 --eval 'import numpy' >/dev/null
"$forkd" bench spawn --tag py -n 1 --idle 0 --out "$out/spawn-py.json" >/dev/null
check "$out/spawn-py.json" 'j["cold_boot_ms"]["total"] > j["cold_boot_ms"]["boot"] > 0' "a cold boot + warm-up baseline"
check "$out/spawn-py.json" 'j["plain_restore_ms"]["total"] > j["plain_restore_ms"]["load"] > 0' "a plain restore baseline"
echo "bench_verbs_test: ok"
