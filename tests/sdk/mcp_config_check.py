"""Starts the MCP server the way an MCP client would from examples/mcp/forkd.mcp.json (command,
args, env with ${VAR} taken from the environment; "forkd" is FORKD_BIN) and runs a short session:
initialize, tools/list, tools/call list_snapshots. Exits non-zero on any failure."""
import json
import os
import re
import subprocess
import sys

config = json.load(open(sys.argv[1]))
server = config["mcpServers"]["forkd"]
command = os.environ["FORKD_BIN"] if server["command"] == "forkd" else server["command"]
env = dict(os.environ)
for key, value in server.get("env", {}).items():
    env[key] = re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], value)
# The snippet names the default port; the test daemon listens elsewhere.
env["FORKD_URL"] = os.environ["FORKD_URL"]
proc = subprocess.Popen([command] + server["args"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        env=env)
messages = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize",
     "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "config-check", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
     "params": {"name": "list_snapshots", "arguments": {}}},
]
out, _ = proc.communicate("".join(json.dumps(m) + "\n" for m in messages).encode(), timeout=60)
answers = [json.loads(line) for line in out.decode().splitlines()]
assert [a["id"] for a in answers] == [1, 2, 3], answers
assert answers[0]["result"]["serverInfo"]["name"] == "forkd"
assert len(answers[1]["result"]["tools"]) >= 10
call = answers[2]["result"]
assert not call["isError"], call
assert os.environ["FORKD_TEST_TAG"] in call["content"][0]["text"], call
print("mcp config check: initialize, %d tools, list_snapshots answered"
      % len(answers[1]["result"]["tools"]))
