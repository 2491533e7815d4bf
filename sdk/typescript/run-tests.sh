#!/usr/bin/env bash
# Builds the TypeScript SDK and runs its tests (unit and live); --build-only just builds. The live tests need a daemon:
#   tests/sdk/with-daemon.sh build/forkd -- bash sdk/typescript/run-tests.sh
# Installs the dev dependencies (typescript, @types/node) first when node_modules is missing or
# older than package-lock.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v node >/dev/null || { echo "run-tests.sh: node (>= 20) not found" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
((major >= 20)) || { echo "run-tests.sh: node >= 20 needed, found $(node --version)" >&2; exit 1; }
stamp=node_modules/.package-lock.json
if [[ ! -f $stamp || package-lock.json -nt $stamp || package.json -nt $stamp ]]; then
  npm ci --no-audit --no-fund
fi
# --build-only: compile (for the examples), run nothing.
[[ ${1:-} == --build-only ]] && exec npm run --silent build
exec npm test
