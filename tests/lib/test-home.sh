# Sourced by test scripts: throw-away FORKD_HOMEs that share the real home's built images and
# build cache (kernel, rootfs) through symlinks, named like the C++ suites' (forkd-test-home.*)
# so the leftover-QEMU check sees their VMs.

# The real home of this forkd (where images are built), created if missing.
real_forkd_home() {
  local forkd=$1 home
  home=$("$forkd" doctor --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["home"])' 2>/dev/null || true)
  if [[ -z $home ]]; then
    if [[ -n ${FORKD_HOME:-} ]]; then home=$FORKD_HOME
    elif [[ $(id -u) -eq 0 ]]; then home=/var/lib/forkd
    else home=$HOME/.local/share/forkd; fi
  fi
  mkdir -p "$home/images" "$home/cache"
  echo "$home"
}

# Prints a new test home linked to real home $1.
make_test_home() {
  local real=$1 home entry
  home=$(mktemp -d "${TMPDIR:-/tmp}/forkd-test-home.XXXXXX")
  ln -s "$real/images" "$home/images"
  mkdir -m 0700 "$home/cache"
  for entry in "$real"/cache/*; do
    case $(basename "$entry") in assembled | oci | overlays | import-* | build-*) continue ;; esac
    [[ -e $entry ]] || continue
    ln -s "$entry" "$home/cache/$(basename "$entry")"
  done
  echo "$home"
}

# Removes test home $2 (forkd $1): its sandboxes through the CLI, then any QEMU of it still
# running (killed, and reported: returns 1).
remove_test_home() {
  local forkd=$1 home=$2 status=0 pid
  FORKD_HOME=$home "$forkd" rm --all >/dev/null 2>&1
  FORKD_HOME=$home "$forkd" gc >/dev/null 2>&1
  for pid in $(pgrep -f "qemu-system.*$home/" 2>/dev/null); do
    echo "test-home: FAIL: QEMU $pid was left running in $home (killed)" >&2
    kill -9 "$pid" 2>/dev/null
    status=1
  done
  rm -rf "$home"
  return "$status"
}

# For scripts with several homes: new_home VAR makes one linked to $real_home into VAR (call it
# outside a subshell, so remove_homes knows it); remove_homes removes them all with $forkd and
# returns 1 when one had a QEMU left running.
test_homes=()
new_home() {
  local h
  h=$(make_test_home "$real_home")
  test_homes+=("$h")
  printf -v "$1" %s "$h"
}
remove_homes() {
  local h status=0
  for h in "${test_homes[@]}"; do remove_test_home "$forkd" "$h" || status=1; done
  return "$status"
}

# The common start of an end-to-end script: e2e_begin NAME makes $work (a temporary directory),
# names the script in fail/ok messages, and on exit stops $bg_pid (a server the script started;
# set it back to empty once stopped), removes every home new_home made and $work, and fails the
# script if a home had a QEMU left running. Needs $forkd and $real_home.
e2e_begin() {
  e2e_name=$1
  work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-$1.XXXXXX")
  bg_pid=
  trap e2e_cleanup EXIT
  trap 'exit 130' INT TERM
}
e2e_cleanup() {
  local status=$?
  set +e
  [[ -n $bg_pid ]] && { kill "$bg_pid" 2>/dev/null; wait "$bg_pid" 2>/dev/null; }
  remove_homes || { ((status == 0)) && status=1; }
  rm -rf "$work"
  exit "$status"
}
fail() { echo "$e2e_name: FAIL: $*" >&2; exit 1; }
ok() { echo "$e2e_name: ok: $*" >&2; }
# jget JSON KEY: a top-level field of a JSON document.
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(json.dumps(v) if isinstance(v,(list,dict)) else v)' "$1" "$2"; }
