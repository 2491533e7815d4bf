#!/usr/bin/env bash
# The bench verbs on real VMs, smallest options: `bench exec` (a minimal tag, one child: its
# first and later exec round trips) and `bench spawn`'s idle window (each child's QEMU CPU).
# and its baselines on a python tag (cold boot + warm-up; plain restore of a sandbox with a disk,
# jailed). Checks the JSON says what was asked, not the figures (those are bench/'s business).
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
"$forkd" snapshot --tag py --image python --memory 512 --eval 'import numpy' >/dev/null
"$forkd" bench spawn --tag py -n 1 --idle 0 --out "$out/spawn-py.json" >/dev/null
check "$out/spawn-py.json" 'j["cold_boot_ms"]["total"] > j["cold_boot_ms"]["boot"] > 0' "a cold boot + warm-up baseline"
check "$out/spawn-py.json" 'j["plain_restore_ms"]["total"] > j["plain_restore_ms"]["load"] > 0' "a plain restore baseline"
echo "bench_verbs_test: ok"
