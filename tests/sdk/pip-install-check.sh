#!/usr/bin/env bash
# The Python SDK installs from the repo with pip (into a fresh venv, offline: the build backend
# is the system's setuptools) and imports from a plain PYTHONPATH too.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(mktemp -d "${TMPDIR:-/tmp}/forkd-pip-check.XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/forkd-pip-src.XXXXXX")
trap 'rm -rf "$venv" "$work"' EXIT
cp -r sdk/python "$work/python"  # pip writes build/ beside the sources: not in the checkout
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install --quiet --no-build-isolation --no-index "$work/python"
(cd / && "$venv/bin/python" -c '
import forkd, pathlib
assert pathlib.Path(forkd.__file__).parent.joinpath("py.typed").exists()
assert forkd.Sandbox and forkd.Controller and issubclass(forkd.NotFoundError, forkd.ControllerError)
print("pip install: forkd", forkd.__version__, "from", forkd.__file__)')
PYTHONPATH=sdk/python python3 -c 'import forkd; print("PYTHONPATH import: forkd", forkd.__version__)'
