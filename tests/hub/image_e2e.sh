#!/usr/bin/env bash
# End-to-end test of `forkd image import` with a real registry and real VMs (run under
# with-registry.sh). The container image is made here: a busybox-static rootfs layer (gzip) and
# a second layer (zstd) that deletes a file of the first (.wh.NAME), replaces a directory's
# content (.wh..wh..opq) and adds a file; tests/hub/oci_fixture.py pushes it with the stdlib.
# Then, in a throw-away FORKD_HOME with its own images directory:
#   import: by tag (OCI manifest) and through an OCI index (linux/amd64 chosen);
#   run: `forkd run --image` sees the layers' files, without the whited-out ones;
#   snapshot/fork: a tag from the imported image forks a child that answers;
#   refusals, each with nothing left behind: a missing reference, a non-image artifact, an index
#   without linux/amd64, a layer with a ../escape entry, a blob that does not match its digest.
set -euo pipefail
forkd=$(realpath "${1:?usage: image_e2e.sh FORKD}")
registry=${FORKD_TEST_REGISTRY:?run under tests/hub/with-registry.sh}
here=$(cd "$(dirname "$0")" && pwd)
fixture="$here/oci_fixture.py"
# shellcheck source=../lib/test-home.sh
source "$here/../lib/test-home.sh"
real_home=$(real_forkd_home "$forkd")
e2e_begin image_e2e
home=
f() { FORKD_HOME=$home "$forkd" "$@"; }
# Nothing half-made: no staging dir, no image named $1, no import work dir in the cache.
nothing_left() {
  [[ ! -e $home/images/$1 ]] || fail "a refused import left image $1"
  [[ -z $(ls -A "$home/images" | grep -E '^\.(staging|old)-') ]] || fail "staging left: $(ls -A "$home/images")"
  [[ -z $(ls -A "$home/cache" | grep -E '^import-') ]] || fail "work dir left: $(ls -A "$home/cache")"
}
# refused NAME NEEDLE ARGS...: the import fails, says NEEDLE, and leaves nothing.
refused() {
  local name=$1 needle=$2
  shift 2
  if f image import "$@" --name "$name" 2>"$work/err"; then fail "import of $* succeeded"; fi
  grep -q -- "$needle" "$work/err" || fail "import of $* said: $(cat "$work/err")"
  nothing_left "$name"
}

busybox=$(command -v busybox) || fail "busybox-static is not installed"

# --- the image ----------------------------------------------------------------------------
l1=$work/l1
mkdir -p "$l1"/{bin,etc,data,root,usr/bin}
cp "$busybox" "$l1/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$l1/bin/$applet"
done
echo "hello from an imported image" >"$l1/etc/hello"
echo "deleted by layer 2" >"$l1/etc/doomed"
echo "root:x:0:0:root:/root:/bin/sh" >"$l1/etc/passwd"
echo old >"$l1/data/old"
tar --numeric-owner --owner=0 --group=0 -C "$l1" -cf - . | gzip -n >"$work/layer1.tar.gz"
l2=$work/l2
mkdir -p "$l2"/{etc,data}
: >"$l2/etc/.wh.doomed"
: >"$l2/data/.wh..wh..opq"
echo "from layer 2" >"$l2/etc/layer2"
echo new >"$l2/data/new"
tar --numeric-owner --owner=0 --group=0 -C "$l2" -cf - . | zstd -q >"$work/layer2.tar.zst"
layers=("$work/layer1.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip"
        "$work/layer2.tar.zst:application/vnd.oci.image.layer.v1.tar+zstd")
digest=$(python3 "$fixture" push "$registry" forkd/bb.test latest "${layers[@]}")
python3 "$fixture" push "$registry" forkd/bb.test multi --platforms linux/arm64,linux/amd64 \
  "${layers[@]}" >/dev/null
python3 "$fixture" push "$registry" forkd/bb.test armonly --platforms linux/arm64,linux/s390x \
  "${layers[@]}" >/dev/null
python3 "$fixture" push "$registry" forkd/chart latest --config-type \
  application/vnd.cncf.helm.config.v1+json "$work/layer1.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip" >/dev/null
python3 - "$work/evil.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    for name, data in (("etc/fine", b"fine\n"), ("../escape", b"escaped\n")):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
EOF
python3 "$fixture" push "$registry" forkd/evil latest \
  "$work/evil.tar:application/vnd.oci.image.layer.v1.tar" >/dev/null
ok "pushed a two-layer image (gzip + zstd, whiteouts), an index, an artifact and a hostile layer"

# A test home whose images directory is its own (test homes share the real one's by default).
new_home home
rm "$home/images"
mkdir -m 0700 "$home/images"

# --- import and run -----------------------------------------------------------------------
r=$(f image import "$registry/forkd/bb.test:latest" --json 2>"$work/progress")
grep -q "layer 2/2" "$work/progress" || fail "no progress lines: $(cat "$work/progress")"
[[ $(jget "$r" name) == bb-test ]] || fail "default name $(jget "$r" name)"
[[ $(jget "$r" layers) == 2 ]] || fail "layers $(jget "$r" layers)"
[[ $(jget "$r" python) == False ]] || fail "python flag $(jget "$r" python)"
[[ $(jget "$r" manifest_digest) == "$digest" ]] || fail "manifest digest $(jget "$r" manifest_digest)"
meta=$(cat "$home/images/bb-test/image.json")
for key in disk append checksums source agent_sha256; do
  [[ $meta == *"\"$key\""* ]] || fail "image.json lacks $key: $meta"
done
[[ $meta == *"$registry/forkd/bb.test:latest"* ]] || fail "image.json lacks the ref: $meta"
f images --json | grep -q '"bb-test"' || fail "forkd images does not list bb-test"
ok "imported $registry/forkd/bb.test:latest as bb-test"

out=$(f run --image bb-test -- sh -c \
  'cat /etc/hello /etc/layer2; [ -e /etc/doomed ] && echo doomed-present; ls /data; test -x /sbin/forkd-agent && echo agent')
expected=$'hello from an imported image\nfrom layer 2\nnew\nagent'
[[ $out == "$expected" ]] || fail "run in bb-test printed: $out"
ok "forkd run --image bb-test sees both layers, whiteouts applied"

f snapshot --tag bbtag --image bb-test >/dev/null
id=$(f fork --tag bbtag -n 1 | head -n 1)
[[ $(f exec "$id" -- cat /etc/hello) == "hello from an imported image" ]] || fail "child of bbtag"
f rm --all >/dev/null
ok "a tag made from the imported image forks a child that answers"

# Another build of the agent (the same binary with bytes appended: it runs the same): the
# imported disk gets it on the next boot, without a new import.
cp "$(dirname "$forkd")/forkd-agent" "$work/agent2"
printf 'another build' >>"$work/agent2"
out=$(FORKD_AGENT=$work/agent2 f run --image bb-test -- cat /etc/hello 2>"$work/progress")
[[ $out == "hello from an imported image" ]] || fail "run after an agent change: $out"
grep -q "putting this build's forkd-agent" "$work/progress" || fail "no refresh: $(cat "$work/progress")"
sum=$(sha256sum "$work/agent2" | cut -d' ' -f1)
grep -q "\"agent_sha256\": \"$sum\"" "$home/images/bb-test/image.json" || fail "image.json agent_sha256"
ok "after an agent change, the imported image's disk gets the new agent"

r=$(f image import "$registry/forkd/bb.test:multi" --name bbmulti --json 2>/dev/null)
[[ $(jget "$r" manifest_digest) == "$digest" ]] || fail "index chose $(jget "$r" manifest_digest)"
ok "an OCI index resolves to its linux/amd64 manifest"

# --- refusals -----------------------------------------------------------------------------
refused none not_found "$registry/forkd/none:nope"
refused chart "not a container image" "$registry/forkd/chart:latest"
refused arm "no linux/amd64" "$registry/forkd/bb.test:armonly"
refused evil "'..' component refused" "$registry/forkd/evil:latest"
[[ ! -e $home/escape && ! -e $home/cache/escape && ! -e $work/escape ]] || fail "../escape was written"
refused python "built-in" "$registry/forkd/bb.test:latest"
python3 "$fixture" serve-corrupt "$work/bad.port" "$work/layer1.tar.gz" &
bg_pid=$!
for _ in $(seq 1 100); do [[ -s $work/bad.port ]] && break; sleep 0.05; done
refused corrupt checksum_mismatch "127.0.0.1:$(cat "$work/bad.port")/forkd/bad:bad"
ok "a missing ref, an artifact, an index without amd64, a hostile layer, a built-in name and a corrupt blob are refused, nothing left"
[[ -e $home/images/bb-test/rootfs.ext4 ]] || fail "a refused import touched bb-test"

# --- recipes (debootstrap stood in by tests/hub/fakebin/debootstrap) ----------------------
fake() { PATH="$here/fakebin:$PATH" f "$@"; }
printf 'suite bookworm\npackages tool-a tool-b\ncheck test -e /etc/recipe\n' >"$work/tools.recipe"
r=$(fake image build "$work/tools.recipe" --json 2>"$work/progress") ||
  fail "recipe build: $(cat "$work/progress")"
[[ $(jget "$r" name) == tools && $(jget "$r" cached) == False ]] || fail "recipe build: $r"
[[ $(f run --image tools -- cat /etc/recipe) == "made by a recipe" ]] || fail "recipe image run"
r=$(fake image build "$work/tools.recipe" --json 2>/dev/null)
[[ $(jget "$r" cached) == True ]] || fail "an unchanged recipe was built again: $r"
printf 'suite bookworm\npackages tool-a missing-pkg\n' >"$work/broken.recipe"
if fake image build "$work/broken.recipe" 2>"$work/err"; then fail "a missing package built"; fi
grep -q "Unable to locate package missing-pkg" "$work/err" || fail "missing package: $(cat "$work/err")"
[[ ! -e $home/images/broken && -z $(ls -A "$home/cache" | grep -E '^build-') ]] ||
  fail "a failed recipe build left $(ls -A "$home/images" "$home/cache")"
ok "a recipe builds an image that boots, is cached, and a missing package is refused"
# --- removing images, and what killed builds leave -------------------------------------------
if f image rm python 2>"$work/err"; then fail "image rm python succeeded"; fi
grep -q "built-in" "$work/err" || fail "image rm python said: $(cat "$work/err")"
if f image rm nosuch 2>"$work/err"; then fail "image rm nosuch succeeded"; fi
grep -q "not_found" "$work/err" || fail "image rm nosuch said: $(cat "$work/err")"
[[ $(f image rm bb-test --json) == *'"removed"'* ]] || fail "image rm bb-test"
[[ ! -e $home/images/bb-test ]] || fail "image rm left images/bb-test"
if f run --image bb-test -- true 2>/dev/null; then fail "a removed image still runs"; fi
id=$(f fork --tag bbtag -n 1 | head -n 1)
[[ $(f exec "$id" -- cat /etc/hello) == "hello from an imported image" ]] || fail "bbtag after rm"
f rm --all >/dev/null
sleep 0 &
dead=$!
wait "$dead"
mkdir -p "$home/images/.staging-gone-$dead/x" "$home/images/.staging-alive-$$"
f gc >/dev/null
[[ ! -e $home/images/.staging-gone-$dead ]] || fail "gc kept a dead build's staging dir"
[[ -e $home/images/.staging-alive-$$ ]] || fail "gc removed a live process's staging dir"
rmdir "$home/images/.staging-alive-$$"
ok "image rm removes a local image (its tag still forks), refuses built-in and unknown names; gc reaps dead staging"
echo "image_e2e: all passed" >&2
