#!/usr/bin/env bash
# Runs every example against the daemon of with-daemon.sh: the Python and TypeScript fan-outs on
# the minimal image, and the MCP configuration snippet through a real `forkd mcp` session.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "== examples/python/fanout.py"
PYTHONPATH=sdk/python python3 examples/python/fanout.py
echo "== examples/typescript/fanout.mjs"
bash sdk/typescript/run-tests.sh --build-only
node examples/typescript/fanout.mjs
echo "== examples/mcp/forkd.mcp.json"
python3 tests/sdk/mcp_config_check.py examples/mcp/forkd.mcp.json
