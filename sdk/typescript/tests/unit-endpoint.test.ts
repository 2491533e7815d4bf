// Base URL parsing and the Controller's defaults.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Controller, ForkdError } from "forkd";
import { camelize, execBody, mapLimit, parseEndpoint } from "forkd/internal";

test("http and https URLs", () => {
  const a = parseEndpoint("http://127.0.0.1:8889");
  assert.equal(a.protocol, "http:");
  assert.equal(a.hostname, "127.0.0.1");
  assert.equal(a.port, 8889);
  assert.equal(a.basePath, "");
  assert.equal(a.socketPath, undefined);
  assert.equal(a.displayUrl, "http://127.0.0.1:8889");

  const b = parseEndpoint("https://forkd.example:9443/api/");
  assert.equal(b.protocol, "https:");
  assert.equal(b.port, 9443);
  assert.equal(b.basePath, "/api");
  assert.equal(b.displayUrl, "https://forkd.example:9443/api");

  assert.equal(parseEndpoint("https://h").port, 443);
  assert.equal(parseEndpoint("http://h").port, 80);
  assert.equal(parseEndpoint("http://[::1]:8889").hostname, "::1");
});

test("unix socket URLs", () => {
  const a = parseEndpoint("unix:///run/forkd.sock");
  assert.equal(a.socketPath, "/run/forkd.sock");
  assert.equal(a.protocol, "http:");
  assert.equal(a.displayUrl, "unix:///run/forkd.sock");

  const b = parseEndpoint("http+unix://%2Ftmp%2Fa%20b.sock/prefix");
  assert.equal(b.socketPath, "/tmp/a b.sock");
  assert.equal(b.basePath, "/prefix");

  const c = parseEndpoint("http://localhost", "/tmp/x.sock");
  assert.equal(c.socketPath, "/tmp/x.sock");
  assert.equal(c.displayUrl, "unix:///tmp/x.sock");
});

test("bad URLs are refused with the reason", () => {
  assert.throws(() => parseEndpoint("unix://relative.sock"), /absolute path/);
  assert.throws(() => parseEndpoint("ftp://h"), /http:\/\/, https:\/\/ or unix:\/\//);
  assert.throws(() => parseEndpoint("not a url"), /not a URL/);
  assert.throws(() => parseEndpoint("http://u:p@h"), /credentials/);
  assert.throws(() => parseEndpoint("http://h", "rel.sock"), /absolute/);
  assert.throws(() => parseEndpoint("unix://x"), ForkdError);
});

test("Controller defaults: FORKD_URL, then 127.0.0.1:8889; FORKD_TOKEN", () => {
  const saved = { url: process.env.FORKD_URL, token: process.env.FORKD_TOKEN, ca: process.env.FORKD_CA_CERT };
  try {
    delete process.env.FORKD_URL;
    delete process.env.FORKD_TOKEN;
    delete process.env.FORKD_CA_CERT;
    const a = new Controller();
    assert.equal(a.baseUrl, "http://127.0.0.1:8889");
    assert.equal(a.token, undefined);
    assert.equal(a.timeoutMs, 60_000);

    process.env.FORKD_URL = "unix:///tmp/forkd-test.sock";
    process.env.FORKD_TOKEN = "t0k";
    const b = new Controller();
    assert.equal(b.url, "unix:///tmp/forkd-test.sock");
    assert.equal(b.token, "t0k");

    const c = new Controller({ baseUrl: "http://10.0.0.1:1/", token: "x", timeoutMs: 5 });
    assert.equal(c.baseUrl, "http://10.0.0.1:1");
    assert.equal(c.token, "x");
    assert.equal(c.timeoutMs, 5);

    process.env.FORKD_URL = "https://127.0.0.1:1";
    process.env.FORKD_CA_CERT = "/nonexistent/ca.pem";
    assert.throws(() => new Controller(), /caFile \/nonexistent\/ca\.pem/);
  } finally {
    for (const [k, v] of [
      ["FORKD_URL", saved.url],
      ["FORKD_TOKEN", saved.token],
      ["FORKD_CA_CERT", saved.ca],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test("exec bodies: string is shell, array is args, bytes stdin is base64", () => {
  assert.deepEqual(execBody("echo hi", {}), { shell: "echo hi" });
  assert.deepEqual(execBody(["ls", "-l"], { timeoutSecs: 2.5, cwd: "/tmp", user: 0, env: { A: "1" } }), {
    args: ["ls", "-l"],
    timeout_secs: 2.5,
    cwd: "/tmp",
    user: "0",
    env: { A: "1" },
  });
  assert.deepEqual(execBody("cat", { stdin: "héllo" }), { shell: "cat", stdin: "héllo" });
  assert.deepEqual(execBody("cat", { stdin: new Uint8Array([0, 255, 10]) }), { shell: "cat", stdin_b64: "AP8K" });
});

test("camelize converts keys only, recursively", () => {
  assert.deepEqual(camelize({ exit_code: 1, timings_ms: { pause_ms: 2 }, list: [{ a_b: "c_d" }] }), {
    exitCode: 1,
    timingsMs: { pauseMs: 2 },
    list: [{ aB: "c_d" }],
  });
});

test("mapLimit keeps order and never runs more than the limit", async () => {
  let running = 0;
  let peak = 0;
  const settled = await mapLimit([...Array(20).keys()], 8, async (i) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 5 + (i % 3)));
    running--;
    if (i === 7) throw new Error("seven");
    return i * 2;
  });
  assert.equal(peak, 8);
  assert.equal(settled.length, 20);
  assert.deepEqual(settled[3], { status: "fulfilled", value: 6 });
  assert.equal(settled[7]?.status, "rejected");
});

test("error classes: the code refines the status within its family", async () => {
  const { errorFromResponse, errorFromStreamEvent } = await import("forkd/internal");
  const forkd = await import("forkd");
  const cls = (status: number, code?: string) =>
    errorFromResponse(status, code ? { error: "m", code } : { error: "m" }, "u").constructor;
  assert.equal(cls(504, "agent_timeout"), forkd.SandboxTimeoutError);
  assert.equal(cls(502, "agent_timeout"), forkd.SandboxTimeoutError);
  assert.equal(cls(409, "no_python"), forkd.NoPythonError);
  assert.equal(cls(409, "already_exists"), forkd.ConflictError);
  assert.equal(cls(400, "not_found"), forkd.InvalidRequestError);
  assert.equal(cls(403), forkd.AuthenticationError);
  assert.equal(cls(500), forkd.ServerError);
  assert.equal(cls(599, "agent_error"), forkd.AgentError);
  assert.equal(cls(418), forkd.ControllerError);
  assert.equal(errorFromResponse(503, {}, "u", { retryAfter: "1.5" }).retryAfterMs, 1500);
  assert.equal(errorFromResponse(503, {}, "u", { retryAfter: "Wed, 21 Oct 2015" }).retryAfterMs, null);
  const s = errorFromStreamEvent({ type: "error", error: "gone", code: "agent_error" }, "u");
  assert.ok(s instanceof forkd.AgentError);
  assert.equal(s.status, 200);
  assert.deepEqual(s.body, { error: "gone", code: "agent_error" });
  assert.ok(errorFromStreamEvent({ type: "error", error: "x", code: "weird" }, "u") instanceof forkd.ServerError);
  assert.equal(new forkd.ForkdConnectionError("u", "r").name, "ConnectionError");
});
