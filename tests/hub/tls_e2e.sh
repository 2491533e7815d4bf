#!/usr/bin/env bash
# End-to-end test of push and pull over HTTPS (run under with-registry.sh with
# FORKD_TEST_REGISTRY_TLS=1): the registry's certificate comes from a throw-away CA.
#   push with --ca-file: the tag arrives; pull into a fresh home with --ca-file: its child answers;
#   refusals: a CA file that did not sign the certificate (a certificate error), and no CA file
#   (a loopback registry is then spoken to in plain HTTP, which this one refuses); nothing is
#   created. The daemon pulls over HTTPS with `forkd serve --registry-ca-file`.
set -euo pipefail
forkd=$(realpath "${1:?usage: tls_e2e.sh FORKD}")
registry=${FORKD_TEST_REGISTRY:?run under tests/hub/with-registry.sh}
ca=${FORKD_TEST_REGISTRY_CA:?run under with-registry.sh with FORKD_TEST_REGISTRY_TLS=1}
here=$(dirname "$0")
# shellcheck source=../lib/test-home.sh
source "$here/../lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
e2e_begin tls_e2e

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

# The daemon: --registry-ca-file (a missing one stops it at start with the file's name).
new_home C
if FORKD_HOME=$C "$forkd" serve --socket "$C/d.sock" --registry-ca-file "$work/none.pem" \
  2>"$work/err"; then fail "serve started with a missing CA file"; fi
grep -q "none.pem" "$work/err" || fail "missing CA file said: $(cat "$work/err")"
FORKD_HOME=$C "$forkd" serve --socket "$C/d.sock" --registry-ca-file "$ca" 2>"$work/serve.log" &
bg_pid=$!
python3 - "$C/d.sock" "$ref" <<'PY' || { cat "$work/serve.log" >&2; fail "REST pull over HTTPS"; }
import http.client, json, socket, sys, time
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
for _ in range(200):
    try:
        c = Conn("localhost", timeout=120); c.request("GET", "/healthz"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.05)
c = Conn("localhost", timeout=120)
c.request("POST", "/v1/hub/pull", json.dumps({"ref": sys.argv[2], "tag": "viadaemon"}),
          {"Content-Type": "application/json"})
r = c.getresponse()
body = json.loads(r.read())
assert r.status == 200 and body["created"] == ["viadaemon"], (r.status, body)
PY
kill "$bg_pid"; wait "$bg_pid" 2>/dev/null || true
bg_pid=
ok "the daemon pulls over HTTPS with --registry-ca-file"
echo "tls_e2e: all passed" >&2
