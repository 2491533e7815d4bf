#!/usr/bin/env bash
# End-to-end test of push and pull over HTTPS (run under with-registry.sh with
# FORKD_TEST_REGISTRY_TLS=1): the registry's certificate comes from a throw-away CA.
#   push with --ca-file: the tag arrives; pull into a fresh home with --ca-file: its child answers;
#   refusals: a CA file that did not sign the certificate (a certificate error), and no CA file
#   (a loopback registry is then spoken to in plain HTTP, which this one refuses); nothing is
#   created.
set -euo pipefail
forkd=$(realpath "${1:?usage: tls_e2e.sh FORKD}")
registry=${FORKD_TEST_REGISTRY:?run under tests/hub/with-registry.sh}
ca=${FORKD_TEST_REGISTRY_CA:?run under with-registry.sh with FORKD_TEST_REGISTRY_TLS=1}
here=$(dirname "$0")
# shellcheck source=../lib/test-home.sh
source "$here/../lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-tls-e2e.XXXXXX")
cleanup() {
  local status=$?
  set +e
  remove_homes || { ((status == 0)) && status=1; }
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "tls_e2e: FAIL: $*" >&2; exit 1; }
ok() { echo "tls_e2e: ok: $*" >&2; }

new_home A
FORKD_HOME=$A "$forkd" snapshot --tag tlsbase --image minimal --memory 128 \
  --exec 'echo over-https > /tmp/note' >/dev/null
ref=$registry/forkd/tls:v1

# A CA that did not sign the registry's certificate.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
  -keyout "$work/other.key" -out "$work/other.pem" 2>/dev/null
if FORKD_HOME=$A "$forkd" push tlsbase "$ref" --ca-file "$work/other.pem" 2>"$work/err"; then
  fail "push trusted a certificate its CA file did not sign"
fi
grep -qi "certificate\|ssl\|tls" "$work/err" || fail "wrong CA said: $(cat "$work/err")"
ok "a CA that did not sign the registry's certificate is refused: $(head -c 200 "$work/err")"

r=$(FORKD_HOME=$A "$forkd" push tlsbase "$ref" --ca-file "$ca" --json)
[[ $r == *'"blobs_uploaded"'* ]] || fail "push over HTTPS: $r"
ok "pushed over HTTPS with --ca-file"

new_home B
# Without --ca-file a loopback registry is spoken to in plain HTTP, which this one refuses.
if FORKD_HOME=$B "$forkd" pull "$ref" 2>"$work/err"; then fail "a plain-HTTP pull succeeded"; fi
[[ -z $(FORKD_HOME=$B "$forkd" images --json | python3 -c 'import json,sys; print(" ".join(t["tag"] for t in json.load(sys.stdin)["tags"]))') ]] ||
  fail "a failed pull created a tag"
ok "a plain-HTTP pull of an HTTPS registry fails and creates nothing: $(head -c 200 "$work/err")"

FORKD_HOME=$B "$forkd" pull "$ref" --ca-file "$ca" --json >/dev/null
id=$(FORKD_HOME=$B "$forkd" fork --tag tlsbase -n 1 | head -n 1)
out=$(FORKD_HOME=$B "$forkd" exec "$id" -- cat /tmp/note)
[[ $out == over-https ]] || fail "child of the pulled tag read '$out'"
FORKD_HOME=$B "$forkd" rm --all >/dev/null
ok "pulled over HTTPS with --ca-file; the child answers"
echo "tls_e2e: all passed" >&2
