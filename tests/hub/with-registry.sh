#!/usr/bin/env bash
# Runs a command beside a real OCI registry: Debian's docker-registry (the reference
# `distribution` registry) on a free 127.0.0.1 port, with a temporary config and storage dir,
# stopped and removed afterwards. The command sees FORKD_TEST_REGISTRY=127.0.0.1:PORT.
# With FORKD_TEST_REGISTRY_TLS=1 the registry speaks HTTPS only, with a certificate for
# 127.0.0.1 made here by a throw-away CA whose PEM is in FORKD_TEST_REGISTRY_CA.
# Usage: with-registry.sh [-- ] COMMAND...
set -euo pipefail
[[ ${1:-} == -- ]] && shift
(($# > 0)) || { echo "with-registry.sh: no command" >&2; exit 2; }
command -v docker-registry >/dev/null || {
  echo "with-registry.sh: docker-registry is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/forkd-test-registry.XXXXXX")
reg_pid=
cleanup() {
  local status=$?
  set +e
  [[ -n $reg_pid ]] && { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; }
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
scheme=http
ca=
if [[ ${FORKD_TEST_REGISTRY_TLS:-} == 1 ]]; then
  scheme=https
  ca=$dir/ca.pem
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=forkd test CA" \
    -keyout "$dir/ca.key" -out "$ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$ca" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/san.ext" -out "$dir/server.pem" 2>/dev/null
  printf '  tls:\n    certificate: %s\n    key: %s\n' "$dir/server.pem" "$dir/server.key" \
    >>"$dir/config.yml"
fi
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 200); do
  python3 -c 'import ssl,sys,urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] else None
urllib.request.urlopen(sys.argv[1], timeout=1, context=ctx)' "$scheme://127.0.0.1:$port/v2/" "$ca" \
    2>/dev/null && break
  kill -0 "$reg_pid" 2>/dev/null || { cat "$dir/registry.log" >&2; echo "with-registry: registry died" >&2; exit 1; }
  sleep 0.05
done
export FORKD_TEST_REGISTRY=127.0.0.1:$port FORKD_TEST_REGISTRY_DIR=$dir/storage
export FORKD_TEST_REGISTRY_CA=$ca
echo "with-registry: $scheme registry at $FORKD_TEST_REGISTRY; running: $*" >&2
set +e
"$@"
status=$?
set -e
if ((status != 0)); then
  echo "with-registry: command failed ($status); registry log tail:" >&2
  tail -n 20 "$dir/registry.log" >&2
fi
exit "$status"
