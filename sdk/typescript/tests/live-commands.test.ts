// Live: commands.run (plain, streamed, background) against a real daemon.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { CommandExitError, InvalidRequestError, NotFoundError, Sandbox, TimeoutError } from "forkd";

import { killAll, liveEnv } from "./live-env.js";

const env = liveEnv();
let sb: Sandbox;

before(async () => {
  sb = await Sandbox.create(env.tag);
});
after(async () => {
  await killAll([sb]);
});

test("run: a string runs under sh, an array is argv", async () => {
  const r = await sb.commands.run("echo hello; echo oops >&2");
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.stderr, "oops\n");
  assert.equal(r.exitCode, 0);
  assert.equal(r.timedOut, false);
  assert.equal(typeof r.durationMs, "number");
  const a = await sb.commands.run(["echo", "a  b", "$HOME"]);
  assert.equal(a.stdout, "a  b $HOME\n");
});

test("run: envs, cwd and user", async () => {
  const r = await sb.commands.run('echo "$FOO|$BAR"; pwd; id -u; echo "$HOME|$USER"', {
    envs: { FOO: "foo value" },
    env: { BAR: "bar" },
    cwd: "/tmp",
    user: "root",
  });
  assert.equal(r.stdout, "foo value|bar\n/tmp\n0\n/root|root\n");
});

test("run: an unknown user is refused", async () => {
  await assert.rejects(sb.commands.run("id -u", { user: "no-such-user" }), InvalidRequestError);
});

test("run: stdin as text and as bytes", async () => {
  const t = await sb.commands.run("cat", { stdin: "line one\nline two é\n" });
  assert.equal(t.stdout, "line one\nline two é\n");
  const b = await sb.commands.run("wc -c", { stdin: new Uint8Array([0, 1, 2, 255, 10]) });
  assert.equal(b.stdout.trim(), "5");
  const none = await sb.commands.run("cat");
  assert.equal(none.stdout, "");
});

test("run: non-zero exit rejects with CommandExitError; check:false resolves", async () => {
  const err = await sb.commands.run("echo out; echo why >&2; exit 3").catch((e: unknown) => e);
  assert.ok(err instanceof CommandExitError, String(err));
  assert.equal(err.exitCode, 3);
  assert.equal(err.stdout, "out\n");
  assert.equal(err.stderr, "why\n");
  assert.match(err.message, /exited with code 3: why/);
  const r = await sb.commands.run("exit 7", { check: false });
  assert.equal(r.exitCode, 7);
});

test("run: timeoutMs kills the command", async () => {
  const t0 = Date.now();
  const err = await sb.commands.run("echo started; sleep 30", { timeoutMs: 1500 }).catch((e: unknown) => e);
  assert.ok(err instanceof CommandExitError, String(err));
  assert.equal(err.timedOut, true);
  assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
  const r = await sb.commands.run("sleep 30", { timeoutMs: 1000, check: false });
  assert.equal(r.timedOut, true);
});

test("streaming: output arrives while the command runs", async () => {
  const chunks: Array<{ data: string; at: number }> = [];
  const errs: string[] = [];
  const t0 = Date.now();
  const r = await sb.commands.run("sh -c 'echo first; sleep 2; echo second; echo e >&2'", {
    onStdout: (data) => void chunks.push({ data, at: Date.now() }),
    onStderr: (data) => void errs.push(data),
  });
  const done = Date.now();
  const first = chunks.find((c) => c.data.includes("first"));
  assert.ok(first, `no "first" chunk: ${JSON.stringify(chunks)}`);
  assert.ok(!first.data.includes("second"), "first and second came together: not streamed");
  assert.ok(done - first.at >= 1500, `"first" arrived ${first.at - t0} ms in, run resolved at ${done - t0} ms`);
  assert.equal(chunks.map((c) => c.data).join(""), "first\nsecond\n");
  assert.equal(errs.join(""), "e\n");
  assert.equal(r.stdout, "first\nsecond\n");
  assert.equal(r.stderr, "e\n");
  assert.equal(r.exitCode, 0);
  assert.match(r.commandId ?? "", /^cmd-[0-9a-f]{16}$/);
  assert.ok(r.durationMs >= 1900, `duration ${r.durationMs}`);
});

test("streaming: non-zero exit and stdin", async () => {
  const got: string[] = [];
  const err = await sb.commands
    .run("cat; exit 4", { stdin: "piped\n", onStdout: (d) => void got.push(d) })
    .catch((e: unknown) => e);
  assert.ok(err instanceof CommandExitError, String(err));
  assert.equal(err.exitCode, 4);
  assert.equal(got.join(""), "piped\n");
});

test("background: start, list, wait", async () => {
  const h = await sb.commands.run("echo bg-start; sleep 1; echo bg-end", { background: true });
  try {
    assert.match(h.commandId, /^cmd-[0-9a-f]{16}$/);
    const listed = await sb.commands.list();
    assert.ok(listed.some((c) => c.commandId === h.commandId));
    const r = await h.wait();
    assert.equal(r.stdout, "bg-start\nbg-end\n");
    assert.equal(r.exitCode, 0);
    const info = await h.info();
    assert.equal(info.status, "exited");
    assert.equal(info.exitCode, 0);
    const out = await h.output();
    assert.equal(out.stdout, "bg-start\nbg-end\n");
  } finally {
    await h.delete();
  }
  await assert.rejects(sb.commands.connect(h.commandId), NotFoundError);
});

test("background: kill a sleep 1000", async () => {
  const h = await sb.commands.run("sleep 1000", { background: true, check: false });
  try {
    assert.equal(await h.isRunning(), true);
    const t0 = Date.now();
    const sent = await h.kill();
    const r = await h.wait({ timeoutMs: 20_000 });
    assert.ok(Date.now() - t0 < 20_000);
    assert.equal(r.exitCode, 137); // 128 + SIGKILL
    assert.equal(await h.isRunning(), false);
    // CommandInfo.killed: "a kill was sent".
    assert.equal(sent, true, "kill() answered killed:false for a command it killed");
    assert.equal(r.killed, true);
  } finally {
    await h.delete();
  }
});

test("background: callbacks follow the output; connect and wait with callbacks", async () => {
  const seen: string[] = [];
  const h = await sb.commands.run("for i in 1 2 3; do echo line$i; sleep 0.3; done", {
    background: true,
    onStdout: (d) => void seen.push(d),
  });
  try {
    const r = await h.wait();
    assert.equal(seen.join(""), "line1\nline2\nline3\n");
    assert.equal(r.stdout, "line1\nline2\nline3\n");
    assert.equal(h.stdout, "line1\nline2\nline3\n");

    const again: string[] = [];
    const c = await sb.commands.connect(h.commandId);
    const r2 = await c.wait({ onStdout: (d) => void again.push(d) });
    assert.equal(again.join(""), "line1\nline2\nline3\n");
    assert.equal(r2.exitCode, 0);
  } finally {
    await sb.commands.delete(h.commandId);
  }
});

test("background: wait with a timeout gives up while it runs", async () => {
  const h = await sb.commands.run("sleep 1000", { background: true });
  try {
    const t0 = Date.now();
    await assert.rejects(h.wait({ timeoutMs: 1000 }), (e: unknown) => e instanceof TimeoutError && /still running/.test(e.message));
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(await h.isRunning(), true);
    const sent = await sb.commands.kill(h.commandId, "TERM");
    const r = await h.wait({ timeoutMs: 20_000, check: false });
    assert.equal(r.exitCode, 143); // 128 + SIGTERM
    assert.equal(sent, true, "kill() answered killed:false for a command it killed");
  } finally {
    await h.delete();
  }
});
