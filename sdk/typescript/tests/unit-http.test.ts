// The client against a stand-in daemon (node:http on 127.0.0.1 and on a unix socket): error
// mapping, streaming both ways, background commands and fork's bookkeeping, over each transport.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import {
  AgentError,
  AuthenticationError,
  CommandExitError,
  ConflictError,
  ConnectionError,
  Controller,
  ControllerError,
  ForkError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  ProtocolError,
  NoPythonError,
  RateLimitError,
  Sandbox,
  ServerError,
  SandboxTimeoutError,
  TimeoutError,
  UnavailableError,
} from "forkd";
import { NodeTransport, parseEndpoint } from "forkd/internal";

import { type FakeDaemon, type Recorded, sandboxInfo, sendJson, sleep, startFakeDaemon } from "./fake-daemon.js";

const errorRoutes: Record<string, [number, string, new (...a: never[]) => ControllerError]> = {
  e400: [400, "invalid_argument", InvalidRequestError],
  e401: [401, "unauthorized", AuthenticationError],
  e404: [404, "not_found", NotFoundError],
  e409: [409, "already_exists", ConflictError],
  e413: [413, "body_too_large", PayloadTooLargeError],
  e429: [429, "too_many_requests", RateLimitError],
  e502: [502, "agent_error", AgentError],
  e503: [503, "busy", UnavailableError],
  e504: [504, "agent_timeout", SandboxTimeoutError],
  e500: [500, "internal", ServerError],
  e507: [507, "no_space", ServerError],
  e409py: [409, "no_python", NoPythonError],
  e418: [418, "teapot", ControllerError],
};

// Background command state of the stand-in: polled twice before it ends.
let waitCalls = 0;
// Spawns in flight at once, and the most seen.
let spawning = 0;
let spawnPeak = 0;
let spawnCount = 0;

async function handler(req: Recorded, res: import("node:http").ServerResponse): Promise<void> {
  const p = req.path;
  if (p === "/v1/sandboxes/slow") return; // never answers
  if (p.startsWith("/v1/sandboxes/e")) {
    const name = p.split("/")[3] ?? "";
    const route = errorRoutes[name];
    if (route) {
      const headers: Record<string, string> = route[0] === 429 || route[0] === 503 ? { "retry-after": "2" } : {};
      return sendJson(res, route[0], { error: `${name} went wrong`, code: route[1] }, headers);
    }
    if (name === "etext") {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("plain failure");
      return;
    }
  }
  if (p === "/v1/sandboxes/sb-1/exec") {
    const body = req.json() as Record<string, unknown>;
    if (body.background) {
      waitCalls = 0;
      return sendJson(res, 202, { command_id: "cmd-0123456789abcdef", sandbox_id: "sb-1", status: "running" });
    }
    if (!body.stream) {
      const code = body.shell === "false" ? 1 : 0;
      return sendJson(res, 200, { stdout: "out\n", stderr: code ? "bad\n" : "", exit_code: code, timed_out: false, duration_ms: 3 });
    }
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    const line = (o: unknown) => res.write(`${JSON.stringify(o)}\n`);
    line({ type: "start", command_id: "cmd-aaaaaaaaaaaaaaaa" });
    if (body.shell === "agent-dies") {
      line({ type: "stdout", data: "partial" });
      line({ type: "error", error: "agent stopped answering", code: "agent_timeout" });
      return void res.end();
    }
    if (body.shell === "cut") {
      line({ type: "stdout", data: "partial" });
      return void res.end();
    }
    // Split mid-line and mid-character on purpose.
    res.write('{"type":"stdout","data":"fir');
    await sleep(20);
    res.write('st é\\n"}\n');
    await sleep(400);
    line({ type: "stderr", data: "warn\n" });
    line({ type: "stdout", data: "second\n" });
    const exit = body.shell === "exit3" ? 3 : 0;
    line({ type: "exit", exit_code: exit, timed_out: false, duration_ms: 420, stdout_bytes: 15, stderr_bytes: 5, dropped_bytes: 0 });
    return void res.end();
  }
  if (p === "/v1/sandboxes/sb-1/commands/cmd-0123456789abcdef/wait") {
    waitCalls++;
    const running = waitCalls < 3;
    return sendJson(res, 200, {
      command_id: "cmd-0123456789abcdef",
      sandbox_id: "sb-1",
      status: running ? "running" : "exited",
      exit_code: running ? null : 0,
      timed_out: false,
      killed: false,
      error: null,
      started_at_unix: 1,
      duration_ms: 5,
      stdout_bytes: 3,
      stderr_bytes: 0,
      dropped_bytes: 0,
      stdout: "bg\n",
      stderr: "",
    });
  }
  if (p === "/v1/sandboxes/sb-1/commands/cmd-0123456789abcdef/stream") {
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    res.write(`${JSON.stringify({ type: "stdout", data: "kept\n" })}\n`);
    await sleep(100);
    if (res.destroyed) return;
    res.write(`${JSON.stringify({ type: "stdout", data: "live\n" })}\n`);
    res.end(`${JSON.stringify({ type: "exit", exit_code: 0, timed_out: false, duration_ms: 9, stdout_bytes: 10, stderr_bytes: 0, dropped_bytes: 0 })}\n`);
    return;
  }
  if (p === "/v1/sandboxes/sb-1/files" && req.method === "PUT") {
    return sendJson(res, 200, { path: req.query.get("path"), size: req.body.length });
  }
  if (p === "/v1/sandboxes/sb-1/files" && req.method === "GET") {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    for (let i = 0; i < 4; i++) {
      res.write(Buffer.alloc(1000, 65 + i));
      await sleep(5);
    }
    return void res.end();
  }
  if (p === "/v1/sandboxes/sb-1/files/stat") {
    return sendJson(res, 404, { error: `no such file: ${req.query.get("path")}`, code: "not_found" });
  }
  if (p === "/v1/sandboxes/gone/files/stat" || p === "/v1/sandboxes/gone") {
    return sendJson(res, 404, { error: "no sandbox gone", code: "not_found" });
  }
  if (p === "/v1/sandboxes/sb-1") return sendJson(res, 200, sandboxInfo("sb-1"));
  if (p === "/v1/sandboxes/notjson") {
    res.writeHead(200, { "content-type": "text/html" });
    return void res.end("<html>a proxy</html>");
  }
  if (p === "/v1/sandboxes/sb-1/branch") {
    return sendJson(res, 201, { tag: "br-1", dir: "/x", created_at_unix: 1, branched_from: "sb-1", status: "ready", mode: "live" });
  }
  if (p === "/v1/sandboxes" && req.method === "POST") {
    const n = ++spawnCount;
    spawning++;
    spawnPeak = Math.max(spawnPeak, spawning);
    await sleep(30);
    spawning--;
    if (n === 3) return sendJson(res, 503, { error: "busy", code: "busy" });
    return sendJson(res, 201, [sandboxInfo(`sb-child-${n}`, "br-1")]);
  }
  sendJson(res, 404, { error: `no route for ${req.method} ${p}`, code: "not_found" });
}

let fake: FakeDaemon;
before(async () => {
  fake = await startFakeDaemon(handler);
});
after(async () => {
  await fake.close();
});

const transports: Array<[string, () => Controller]> = [
  ["fetch", () => new Controller({ baseUrl: fake.url, token: "tok-123" })],
  ["node:http over tcp", () => new Controller({ transport: new NodeTransport(parseEndpoint(fake.url)), token: "tok-123" })],
  ["node:http over a unix socket", () => new Controller({ baseUrl: `unix://${fake.socketPath}`, token: "tok-123" })],
];

for (const [name, make] of transports) {
  describe(`over ${name}`, () => {
    test("error answers map to typed errors carrying status, code, message and URL", async () => {
      const ctrl = make();
      for (const [id, [status, code, cls]] of Object.entries(errorRoutes)) {
        const err = await ctrl.getSandbox(id).then(
          () => assert.fail(`${id} resolved`),
          (e: unknown) => e,
        );
        assert.ok(err instanceof cls, `${id}: ${String(err)}`);
        assert.ok(err instanceof ControllerError);
        assert.equal(err.status, status);
        assert.equal(err.code, code);
        assert.equal(err.detail, `${id} went wrong`);
        assert.ok(err.url.endsWith(`/v1/sandboxes/${id}`), err.url);
        assert.equal(err.method, "GET");
        assert.match(err.message, new RegExp(`^HTTP ${status} ${code}: ${id} went wrong \\(GET .*/v1/sandboxes/${id}\\)$`));
        assert.deepEqual(err.body, { error: `${id} went wrong`, code });
        assert.equal(err.retryAfterMs, status === 429 || status === 503 ? 2000 : null);
      }
      const text = await ctrl.getSandbox("etext").catch((e: unknown) => e);
      assert.ok(text instanceof ControllerError && text.status === 500 && text.body === "plain failure");
      const last = fake.requests[fake.requests.length - 1];
      assert.equal(last?.headers.authorization, "Bearer tok-123");
      assert.match(String(last?.headers["user-agent"]), /^forkd-typescript\//);
    });

    test("an answer that is not JSON is a ProtocolError", async () => {
      await assert.rejects(make().getSandbox("notjson"), (e: unknown) => e instanceof ProtocolError && /not JSON/.test(e.message));
    });

    test("streamed exec: output reaches the callback while the command runs", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const seen: Array<[string, number]> = [];
      const t0 = Date.now();
      const r = await sb.commands.run("two-lines", {
        onStdout: (d) => void seen.push([d, Date.now() - t0]),
        onStderr: (d) => void seen.push([`err:${d}`, Date.now() - t0]),
        envs: { A: "1" },
      });
      const done = Date.now() - t0;
      assert.deepEqual(
        seen.map((s) => s[0]),
        ["first é\n", "err:warn\n", "second\n"],
      );
      assert.ok(done - (seen[0]?.[1] ?? done) >= 300, `first chunk at ${seen[0]?.[1]} ms, done at ${done} ms`);
      assert.equal(r.stdout, "first é\nsecond\n");
      assert.equal(r.stderr, "warn\n");
      assert.equal(r.exitCode, 0);
      assert.equal(r.commandId, "cmd-aaaaaaaaaaaaaaaa");
      assert.equal(r.durationMs, 420);
      const body = fake.requests[fake.requests.length - 1]?.json();
      assert.deepEqual(body, { shell: "two-lines", timeout_secs: 60, env: { A: "1" }, stream: true });
    });

    test("streamed exec: non-zero exit rejects unless check is off", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const err = await sb.commands.run("exit3", { onStdout: () => {} }).catch((e: unknown) => e);
      assert.ok(err instanceof CommandExitError, String(err));
      assert.equal(err.exitCode, 3);
      assert.equal(err.stdout, "first é\nsecond\n");
      const r = await sb.commands.run("exit3", { onStdout: () => {}, check: false });
      assert.equal(r.exitCode, 3);
    });

    test("streamed exec: an error line and a cut stream are errors", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const dead = await sb.commands.run("agent-dies", { onStdout: () => {} }).catch((e: unknown) => e);
      assert.ok(dead instanceof SandboxTimeoutError, String(dead));
      assert.equal(dead.code, "agent_timeout");
      assert.equal(dead.status, 200);
      assert.equal(dead.detail, "agent stopped answering");
      const cut = await sb.commands.run("cut", { onStdout: () => {} }).catch((e: unknown) => e);
      assert.ok(cut instanceof ConnectionError, String(cut));
      assert.match(cut.reason, /ended before the command's exit/);
    });

    test("plain exec: CommandExitError carries the result; check:false returns it", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const err = await sb.commands.run("false").catch((e: unknown) => e);
      assert.ok(err instanceof CommandExitError);
      assert.equal(err.result.exitCode, 1);
      assert.equal(err.stderr, "bad\n");
      assert.match(err.message, /exited with code 1: bad/);
      const r = await sb.commands.run(["false"], { check: false, timeoutMs: 1500, cwd: "/tmp", user: "root", stdin: "in" });
      assert.equal(r.exitCode, 0); // args, not shell "false"
      assert.deepEqual(fake.requests[fake.requests.length - 1]?.json(), {
        args: ["false"],
        timeout_secs: 1.5,
        cwd: "/tmp",
        user: "root",
        stdin: "in",
      });
    });

    test("background: run returns a handle; wait polls until the end", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const h = await sb.commands.run("sleep 1", { background: true });
      assert.equal(h.commandId, "cmd-0123456789abcdef");
      const start = fake.requests[fake.requests.length - 1]?.json();
      assert.deepEqual(start, { shell: "sleep 1", background: true });
      const r = await h.wait();
      assert.equal(r.stdout, "bg\n");
      assert.equal(r.exitCode, 0);
      assert.equal(waitCalls, 3);
    });

    test("background with callbacks follows the stream; disconnect falls back to polling", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      const seen: string[] = [];
      const h = await sb.commands.run("x", { background: true, onStdout: (d) => void seen.push(d) });
      const r = await h.wait();
      assert.deepEqual(seen, ["kept\n", "live\n"]);
      assert.equal(r.stdout, "kept\nlive\n");
      assert.equal(h.stdout, "kept\nlive\n");

      const h2 = await sb.commands.run("x", { background: true, onStdout: () => {} });
      h2.disconnect();
      const r2 = await h2.wait(); // polls POST /wait: its answer's stdout
      assert.equal(r2.stdout, "bg\n");
    });

    test("streamed upload: chunked, never buffered; streamed download", async () => {
      const sb = new Sandbox(make(), { id: "sb-1" });
      let pulled = 0;
      const stream = new ReadableStream<Uint8Array>({
        async pull(ctrl) {
          if (pulled === 3) return ctrl.close();
          pulled++;
          await sleep(10);
          ctrl.enqueue(new Uint8Array(100_000).fill(pulled));
        },
      });
      const w = await sb.files.write("/tmp/a b", stream, { mode: 0o755 });
      assert.deepEqual(w, { path: "/tmp/a b", name: "a b", size: 300_000 });
      const req = fake.requests[fake.requests.length - 1];
      assert.equal(req?.headers["transfer-encoding"], "chunked");
      assert.equal(req?.headers["content-length"], undefined);
      assert.equal(req?.query.get("mode"), "0755");
      assert.equal(req?.body[250_000], 3);

      const rs = await sb.files.read("/tmp/x", { format: "stream" });
      const sizes: number[] = [];
      for await (const c of rs) sizes.push(c.byteLength);
      assert.equal(sizes.reduce((a, b) => a + b, 0), 4000);
      const text = await sb.files.read("/tmp/x");
      assert.equal(text, "A".repeat(1000) + "B".repeat(1000) + "C".repeat(1000) + "D".repeat(1000));
    });

    test("exists: a missing path is false, a missing sandbox throws", async () => {
      const ctrl = make();
      assert.equal(await new Sandbox(ctrl, { id: "sb-1" }).files.exists("/nope"), false);
      await assert.rejects(new Sandbox(ctrl, { id: "gone" }).files.exists("/nope"), NotFoundError);
    });
  });
}

test("fork: one spawn per child, at most 8 at once; a failed child gives ForkError with the rest alive", async () => {
  spawnCount = 0;
  spawnPeak = 0;
  const sb = new Sandbox(new Controller({ baseUrl: fake.url }), { id: "sb-1" });
  const err = await sb.fork(12).catch((e: unknown) => e);
  assert.ok(err instanceof ForkError, String(err));
  assert.equal(err.tag, "br-1");
  assert.equal(err.results.length, 12);
  assert.deepEqual([...err.errors.keys()], [2]);
  assert.ok(err.results[2] instanceof UnavailableError);
  assert.equal(err.sandboxes.length, 11);
  assert.ok(err.sandboxes.every((s) => s.snapshotTag === "br-1"));
  assert.equal(spawnPeak, 8);
  const branch = fake.requests.find((r) => r.path === "/v1/sandboxes/sb-1/branch");
  assert.deepEqual(branch?.json(), { mode: "live" });
  const spawns = fake.requests.filter((r) => r.path === "/v1/sandboxes" && r.method === "POST");
  assert.deepEqual(spawns[0]?.json(), { snapshot_tag: "br-1", n: 1 });
});

test("spawn sends prewarm, liveFork and hugepages only when true", async () => {
  const ctrl = new Controller({ baseUrl: fake.url });
  spawnCount = 10;
  await ctrl.spawnSandboxes({ snapshotTag: "t", prewarm: false, liveFork: false, hugepages: false, perChildNetns: false });
  assert.deepEqual(fake.requests[fake.requests.length - 1]?.json(), { snapshot_tag: "t", n: 1 });
  await ctrl.spawnSandboxes({ snapshotTag: "t", n: 2, prewarm: true, liveFork: true, hugepages: true, memoryLimitMib: 256 });
  assert.deepEqual(fake.requests[fake.requests.length - 1]?.json(), {
    snapshot_tag: "t",
    n: 2,
    memory_limit_mib: 256,
    prewarm: true,
    live_fork: true,
    hugepages: true,
  });
});

test("a daemon that is down is a ConnectionError naming the URL", async () => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const err = await new Controller({ baseUrl: `http://127.0.0.1:${port}` }).listSandboxes().catch((e: unknown) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.url, `http://127.0.0.1:${port}/v1/sandboxes`);
  assert.match(err.message, new RegExp(`http://127\\.0\\.0\\.1:${port}/v1/sandboxes`));
  assert.match(err.message, /ECONNREFUSED/);
  assert.match(err.message, /forkd serve/);

  const sock = await new Controller({ baseUrl: "unix:///nonexistent/forkd.sock" }).healthz().catch((e: unknown) => e);
  assert.ok(sock instanceof ConnectionError, String(sock));
  assert.match(sock.message, /unix:\/\/\/nonexistent\/forkd\.sock\/healthz/);
  assert.match(sock.message, /ENOENT/);
});

test("a request past its deadline is a TimeoutError", async () => {
  for (const ctrl of [
    new Controller({ baseUrl: fake.url, timeoutMs: 150 }),
    new Controller({ baseUrl: `unix://${fake.socketPath}`, timeoutMs: 150 }),
  ]) {
    const t0 = Date.now();
    const slow = await ctrl.getSandbox("slow").catch((e: unknown) => e);
    assert.ok(slow instanceof TimeoutError, String(slow));
    assert.match(slow.message, /within 150 ms/);
    assert.ok(Date.now() - t0 < 2000);
  }
});
