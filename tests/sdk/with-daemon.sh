#!/usr/bin/env bash
# Runs a command against a real `forkd serve` with real VMs: the SDK, MCP and example suites.
#
#   tests/sdk/with-daemon.sh FORKD -- COMMAND...
#
# Makes a test home (FORKD_HOME under /tmp, named like the C++ suites' so the leftover check
# sees its QEMUs, sharing the real home's built images and cache), builds two tags in it, starts
# the daemon on a free loopback port and a unix socket with a token, and runs COMMAND with:
#   FORKD_URL, FORKD_TOKEN        the daemon (TCP, bearer token)
#   FORKD_TEST_SOCKET             the same daemon's unix socket
#   FORKD_TEST_TAG                a minimal-image tag (no Python)
#   FORKD_TEST_PY_TAG             a python-image tag with numpy imported (empty when
#                                 FORKD_TEST_NO_PY_TAG=1: suites that need no Python)
#   FORKD_BIN                     the forkd binary
# FORKD_TEST_SERVE_ARGS, if set, adds options to `forkd serve`.
# Afterwards (also on failure or Ctrl-C) every sandbox is removed, the daemon stopped and the home
# deleted. The command's exit status is the script's.
set -euo pipefail
forkd=$(realpath "${1:?usage: with-daemon.sh FORKD -- COMMAND...}")
shift
[[ ${1:-} == -- ]] && shift
(($# > 0)) || { echo "with-daemon.sh: no command" >&2; exit 2; }

# shellcheck source=../lib/test-home.sh
source "$(dirname "$0")/../lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
home=$(make_test_home "$real_home")
export FORKD_HOME=$home

daemon_pid=
cleanup() {
  local status=$?
  set +e
  if [[ -n $daemon_pid ]]; then
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  # Sandboxes outlive the daemon by design: remove them with the CLI (and fail on any QEMU of
  # this home still running after that).
  remove_test_home "$forkd" "$home" || { ((status == 0)) && status=1; }
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tag=sdk-min-$$
py_tag=sdk-py-$$
echo "with-daemon: building tag $tag (minimal)" >&2
"$forkd" snapshot --tag "$tag" --image minimal >/dev/null
if [[ ${FORKD_TEST_NO_PY_TAG:-0} == 1 ]]; then
  py_tag=
else
  echo "with-daemon: building tag $py_tag (python + numpy)" >&2
  "$forkd" snapshot --tag "$py_tag" --image python --memory 512 --eval 'import numpy' >/dev/null
fi

token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf '%s\n' "$token" >"$home/token")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086 # FORKD_TEST_SERVE_ARGS: extra serve options, split on spaces
"$forkd" serve --listen "127.0.0.1:$port" --socket "$home/forkd.sock" --token-file "$home/token" \
  ${FORKD_TEST_SERVE_ARGS:-} >"$home/serve.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 200); do
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$home/serve.log" >&2; echo "with-daemon: forkd serve died" >&2; exit 1; }
  sleep 0.05
done

export FORKD_URL=http://127.0.0.1:$port FORKD_TOKEN=$token FORKD_TEST_SOCKET=$home/forkd.sock
export FORKD_TEST_TAG=$tag FORKD_TEST_PY_TAG=$py_tag FORKD_BIN=$forkd
echo "with-daemon: daemon at $FORKD_URL; running: $*" >&2
set +e
"$@"
status=$?
set -e
if ((status != 0)); then
  echo "with-daemon: command failed ($status); daemon log tail:" >&2
  tail -n 40 "$home/serve.log" >&2
fi
exit "$status"
