#!/usr/bin/env bash
# End-to-end test of moving tags between hosts, with real VMs and a real registry (run under
# with-registry.sh). Each "host" is its own FORKD_HOME:
#   A builds a python tag (numpy imported) and a chain link of it;
#   pack/unpack: A's link packed whole, unpacked into B under a new name, children answer;
#   push: the base, then the link (which must send only its own, few blobs);
#   pull: into a fresh C, the link and its parent arrive, children answer;
#   resume: a pull into D killed midway continues from what arrived;
#   refusals: a pull of a missing reference, of a non-forkd artifact, a cut pack.
set -euo pipefail
forkd=$(realpath "${1:?usage: hub_e2e.sh FORKD}")
registry=${FORKD_TEST_REGISTRY:?run under tests/hub/with-registry.sh}
here=$(dirname "$0")
# shellcheck source=../lib/test-home.sh
source "$here/../lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
e2e_begin hub_e2e

# Forks n children of tag in home and checks each answers numpy and reads /root/note.
children_answer() {
  local home=$1 tag=$2 n=$3 ids id out
  FORKD_HOME=$home "$forkd" fork --tag "$tag" -n "$n" >/dev/null
  ids=$(FORKD_HOME=$home "$forkd" ps --json | python3 -c 'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)["sandboxes"]]')
  [[ $(wc -w <<<"$ids") -eq $n ]] || fail "expected $n children of $tag, got: $ids"
  for id in $ids; do
    out=$(FORKD_HOME=$home "$forkd" eval "$id" 'import numpy; print(int(numpy.arange(10).sum()))')
    [[ $out == 45 ]] || fail "child $id of $tag answered '$out' to numpy"
    out=$(FORKD_HOME=$home "$forkd" exec "$id" -- cat /root/note)
    [[ $out == "from-the-parent" ]] || fail "child $id of $tag lost the link's file: '$out'"
  done
  FORKD_HOME=$home "$forkd" rm --all >/dev/null
}

new_home A
echo "hub_e2e: building tags in host A" >&2
FORKD_HOME=$A "$forkd" snapshot --tag pybase --image python --memory 256 --eval 'import numpy' >/dev/null
FORKD_HOME=$A "$forkd" snapshot --tag pylink --from pybase --exec 'echo from-the-parent > /root/note' >/dev/null

# --- pack / unpack ------------------------------------------------------------------------
new_home B
FORKD_HOME=$A "$forkd" pack pylink -o "$work/pylink.fpk" >/dev/null
r=$(FORKD_HOME=$B "$forkd" unpack "$work/pylink.fpk" --tag moved --json)
[[ $(jget "$r" created) == '["pybase", "moved"]' ]] || fail "unpack created $(jget "$r" created)"
children_answer "$B" moved 2
ok "pack of a chain unpacked under a new name; its children answer"
# A cut pack is refused and leaves nothing.
head -c 100000 "$work/pylink.fpk" >"$work/cut.fpk"
new_home C0
if FORKD_HOME=$C0 "$forkd" unpack "$work/cut.fpk" 2>"$work/err"; then fail "a cut pack unpacked"; fi
grep -q truncated "$work/err" || fail "cut pack error: $(cat "$work/err")"
[[ -z $(ls -A "$C0/snapshots" 2>/dev/null | grep -v '^\.lock-') ]] || fail "a cut pack left: $(ls -A "$C0/snapshots")"
ok "a cut pack is refused with nothing left"

# --- push ---------------------------------------------------------------------------------
base_push=$(FORKD_HOME=$A "$forkd" push pybase "$registry/forkd/py:base" --json)
link_push=$(FORKD_HOME=$A "$forkd" push pylink "$registry/forkd/py:link" --json)
base_sent=$(jget "$base_push" blobs_uploaded)
link_sent=$(jget "$link_push" blobs_uploaded)
link_bytes=$(jget "$link_push" bytes_uploaded)
base_bytes=$(jget "$base_push" bytes_uploaded)
echo "hub_e2e: base push sent $base_sent blobs ($base_bytes bytes); link push $link_sent ($link_bytes bytes)" >&2
((base_sent > 5)) || fail "the base push sent only $base_sent blobs"
((link_sent > 0 && link_sent <= 12)) || fail "the link push sent $link_sent blobs (expected only its own few)"
((link_bytes * 10 < base_bytes)) || fail "the link push sent $link_bytes bytes, the base $base_bytes"
again=$(FORKD_HOME=$A "$forkd" push pylink "$registry/forkd/py:link" --json)
[[ $(jget "$again" blobs_uploaded) == 0 ]] || fail "a second push sent blobs again"
ok "a link pushed after its parent sends only its own blobs; a repeat sends none"

# --- pull ---------------------------------------------------------------------------------
new_home C
r=$(FORKD_HOME=$C "$forkd" pull "$registry/forkd/py:link" --json)
[[ $(jget "$r" created) == '["pybase", "pylink"]' ]] || fail "pull created $(jget "$r" created)"
children_answer "$C" pylink 2
ok "a pulled chain forks children that answer"
# A host that has the parent (under another name) fetches only the link.
new_home D
FORKD_HOME=$D "$forkd" pull "$registry/forkd/py:base" --tag mine >/dev/null
r=$(FORKD_HOME=$D "$forkd" pull "$registry/forkd/py:link" --json)
[[ $(jget "$r" created) == '["pylink"]' ]] || fail "second pull created $(jget "$r" created)"
(($(jget "$r" bytes_fetched) * 10 < base_bytes)) || fail "pull of the link fetched $(jget "$r" bytes_fetched) bytes"
ok "a pull fetches only what the host lacks"
# Another tag of the same image: its root disk is a file C has already, so it is not fetched.
FORKD_HOME=$A "$forkd" snapshot --tag pyother --image python --memory 256 >/dev/null
FORKD_HOME=$A "$forkd" push pyother "$registry/forkd/other:v1" >/dev/null
r=$(FORKD_HOME=$C "$forkd" pull "$registry/forkd/other:v1" --json)
echo "hub_e2e: pull of another tag of the image: $(jget "$r" bytes_fetched) bytes, $(jget "$r" blobs_skipped) blobs skipped" >&2
(($(jget "$r" blobs_skipped) > 0)) || fail "the image's root disk was fetched again"
(($(jget "$r" bytes_fetched) * 2 < base_bytes)) || fail "pull of pyother fetched $(jget "$r" bytes_fetched) bytes"
ok "a file the host has (the image's root disk) is linked, not fetched"

# --- resume -------------------------------------------------------------------------------
new_home E
FORKD_HOME=$E "$forkd" pull "$registry/forkd/py:base" >"$work/pull.log" 2>&1 &
pull_pid=$!
for _ in $(seq 1 400); do
  n=$( (find "$E/cache/oci/blobs" -type f 2>/dev/null || true) | wc -l)
  ((n >= 3)) && break
  kill -0 "$pull_pid" 2>/dev/null || break
  sleep 0.02
done
kill -9 "$pull_pid" 2>/dev/null || true
wait "$pull_pid" 2>/dev/null || true
FORKD_HOME=$E "$forkd" images --json | grep -q '"pybase"' && fail "a killed pull left a visible tag"
r=$(FORKD_HOME=$E "$forkd" pull "$registry/forkd/py:base" --json)
[[ $(jget "$r" created) == '["pybase"]' ]] || fail "resumed pull created $(jget "$r" created)"
reused=$(( $(jget "$r" blobs_reused) + $(jget "$r" blobs_resumed) ))
echo "hub_e2e: resumed pull: $(jget "$r" blobs_fetched) fetched, $(jget "$r" blobs_reused) reused, $(jget "$r" blobs_resumed) resumed" >&2
((reused > 0)) || fail "the resumed pull reused nothing"
FORKD_HOME=$E "$forkd" fork --tag pybase -n 1 >/dev/null
id=$(FORKD_HOME=$E "$forkd" ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxes"][0]["id"])')
[[ $(FORKD_HOME=$E "$forkd" eval "$id" 'import numpy; print(numpy.__name__)') == numpy ]] || fail "resumed tag's child"
ok "a pull killed midway resumes from what arrived"
# What a cut pull left and nobody resumed goes with gc after a day (and not before).
mkdir -p "$E/cache/oci/blobs"
echo stale >"$E/cache/oci/blobs/0000stale.partial"; touch -d '2 days ago' "$E/cache/oci/blobs/0000stale.partial"
echo fresh >"$E/cache/oci/blobs/0000fresh.partial"
[[ $(jget "$(FORKD_HOME=$E "$forkd" gc --json)" pull_blobs) == 1 ]] || fail "gc of stale pull blobs"
[[ -e $E/cache/oci/blobs/0000fresh.partial && ! -e $E/cache/oci/blobs/0000stale.partial ]] ||
  fail "gc removed the wrong pull blobs"
ok "gc removes pull blobs a day old"

# --- REST: pull with wait:false, progress and cancel; push with wait:true ----------------------
new_home F
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FORKD_HOME=$F "$forkd" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
bg_pid=$!
python3 - "$port" "$registry" <<'PY' || { kill "$bg_pid"; cat "$work/serve.log" >&2; fail "REST transfers"; }
import json, sys, time, urllib.request, urllib.error
port, registry = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
for _ in range(200):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=1); break
    except Exception:
        time.sleep(0.05)
def wait_end(xid):
    for _ in range(1200):
        st, j = call("GET", f"/v1/hub/transfers/{xid}")
        assert st == 200, (st, j)
        if j["status"] != "running":
            return j
        time.sleep(0.05)
    raise AssertionError(f"transfer {xid} still running")
# A pull cancelled at once ends failed/cancelled and commits nothing (the next pull creates both).
st, j = call("POST", "/v1/hub/pull", {"ref": f"{registry}/forkd/py:link", "tag": "gone", "wait": False})
assert st == 202, (st, j)
st, c = call("DELETE", f"/v1/hub/transfers/{j['id']}")
assert st == 202 and c["cancelling"] is True, (st, c)
c = wait_end(j["id"])
assert c["status"] == "failed" and c["error"]["code"] == "cancelled", c
st, e = call("DELETE", f"/v1/hub/transfers/{j['id']}")
assert st == 409, (st, e)
st, e = call("DELETE", "/v1/hub/transfers/xfer-nosuch")
assert st == 404, (st, e)
st, j = call("POST", "/v1/hub/pull", {"ref": f"{registry}/forkd/py:link", "wait": False})
assert st == 202 and j["status"] == "running" and j["id"].startswith("xfer-"), (st, j)
xid, seen_progress = j["id"], False
for _ in range(1200):
    st, j = call("GET", f"/v1/hub/transfers/{xid}")
    assert st == 200, (st, j)
    if j["status"] == "running" and 0 < j["done_bytes"] < j["total_bytes"]:
        seen_progress = True
    if j["status"] != "running":
        break
    time.sleep(0.05)
assert j["status"] == "done", j
assert j["result"]["created"] == ["pybase", "pylink"], j
assert j["percent"] == 100, j
st, j = call("POST", "/v1/hub/push", {"tag": "pylink", "ref": f"{registry}/forkd/again:v1"})
assert st == 200 and j["blobs_uploaded"] >= 0 and j["tags"] == ["pybase", "pylink"], (st, j)
st, j = call("POST", "/v1/hub/pull", {"ref": f"{registry}/forkd/none:nope"})
assert st == 404 and j["code"] == "not_found", (st, j)
st, j = call("POST", "/v1/hub/push", {"ref": f"{registry}/forkd/x:y"})
assert st == 400, (st, j)
st, j = call("GET", "/v1/hub/transfers")
assert len(j["transfers"]) >= 3, j
print("progress seen while running:", seen_progress)
PY
kill "$bg_pid"; wait "$bg_pid" 2>/dev/null || true
bg_pid=
ok "REST pull (wait:false, progress in GET, cancel by DELETE) and push"

# --- refusals -----------------------------------------------------------------------------
if FORKD_HOME=$E "$forkd" pull "$registry/forkd/none:nope" 2>"$work/err"; then fail "pull of a missing ref"; fi
grep -q "not_found" "$work/err" || fail "missing ref error: $(cat "$work/err")"
if FORKD_HOME=$E "$forkd" pull "forkd/py:base" 2>"$work/err"; then fail "pull without a registry host"; fi
grep -q "HOST" "$work/err" || fail "bad ref error: $(cat "$work/err")"
ok "bad references are refused clearly"
echo "hub_e2e: all passed" >&2
