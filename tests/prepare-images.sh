#!/usr/bin/env bash
# Test fixture: builds the guest kernel and the minimal and python images (cached by hash, so
# this is quick after the first run on a machine), by booting each once.
set -euo pipefail
forkd=${1:?usage: prepare-images.sh FORKD}
for image in minimal python; do
  start=$(date +%s)
  "$forkd" run --image "$image" -- true
  echo "prepare-images: $image ready ($(( $(date +%s) - start )) s)"
done
