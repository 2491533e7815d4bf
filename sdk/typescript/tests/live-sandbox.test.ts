// Live: sandbox lifecycle, errors, transports, branch and fork against a real daemon.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AuthenticationError,
  ConflictError,
  Controller,
  ForkError,
  NotFoundError,
  Sandbox,
} from "forkd";

import { dropTag, killAll, liveEnv } from "./live-env.js";

const env = liveEnv();
const ctrl = new Controller();

test("healthz and version", async () => {
  assert.deepEqual(await ctrl.healthz(), { ok: true });
  const v = await ctrl.version();
  assert.equal(v.api, "v1");
  assert.match(v.version, /^\d+\.\d+/);
});

test("create, connect, list, kill", async () => {
  let sb: Sandbox | undefined;
  try {
    sb = await Sandbox.create(env.tag);
    assert.match(sb.sandboxId, /^[A-Za-z0-9_-]+$/);
    assert.equal(sb.snapshotTag, env.tag);
    const info = await sb.getInfo();
    assert.equal(info.sandboxId, sb.sandboxId);
    assert.equal(info.snapshotTag, env.tag);
    assert.equal(info.state, "running");
    assert.ok(info.startedAt instanceof Date && info.startedAt.getTime() > 0);

    const again = await Sandbox.connect(sb.sandboxId);
    assert.equal((await again.commands.run("echo connected")).stdout, "connected\n");
    assert.ok((await Sandbox.list()).some((s) => s.sandboxId === sb?.sandboxId));
    assert.equal((await sb.ping()).pong, true);
    assert.equal(await sb.isRunning(), true);

    assert.equal(await sb.kill(), true);
    assert.equal(await sb.kill(), false);
    assert.equal(await sb.isRunning(), false);
    assert.ok(!(await Sandbox.list()).some((s) => s.sandboxId === sb?.sandboxId));
    await assert.rejects(Sandbox.connect(sb.sandboxId), NotFoundError);
  } finally {
    await killAll([sb]);
  }
});

test("unknown sandbox: NotFoundError with code not_found", async () => {
  const err = await ctrl.getSandbox("sb-does-not-exist").catch((e: unknown) => e);
  assert.ok(err instanceof NotFoundError, String(err));
  assert.equal(err.status, 404);
  assert.equal(err.code, "not_found");
  assert.match(err.url, /\/v1\/sandboxes\/sb-does-not-exist$/);
  const sb = new Sandbox(ctrl, { id: "sb-does-not-exist" });
  await assert.rejects(sb.commands.run("true"), NotFoundError);
  await assert.rejects(sb.files.exists("/tmp"), NotFoundError);
});

test("bad token: AuthenticationError", async () => {
  const bad = new Controller({ token: "x".repeat(40) });
  const err = await bad.listSandboxes().catch((e: unknown) => e);
  assert.ok(err instanceof AuthenticationError, String(err));
  assert.equal(err.status, 401);
  const none = new Controller({ token: "" });
  await assert.rejects(none.listSnapshots(), AuthenticationError);
  // /healthz needs no token.
  assert.deepEqual(await bad.healthz(), { ok: true });
});

test("unix socket: socketPath and unix:// URLs", async () => {
  const viaOption = new Controller({ socketPath: env.socket });
  assert.equal(viaOption.url, `unix://${env.socket}`);
  const viaUrl = new Controller({ baseUrl: `unix://${env.socket}` });
  assert.ok(Array.isArray(await viaUrl.listSnapshots()));
  let sb: Sandbox | undefined;
  try {
    sb = await Sandbox.create(env.tag, { socketPath: env.socket });
    const r = await sb.commands.run(["echo", "over the socket"]);
    assert.equal(r.stdout, "over the socket\n");
    assert.ok((await viaOption.listSandboxes()).some((s) => s.id === sb?.sandboxId));
  } finally {
    await killAll([sb]);
  }
});

test("snapshots: list and info of the test tag", async () => {
  const tags = await ctrl.listSnapshots();
  assert.ok(tags.some((t) => t.tag === env.tag));
  const info = await ctrl.snapshotInfo(env.tag);
  assert.equal(info.tag, env.tag);
  await assert.rejects(ctrl.snapshotInfo("no-such-tag-xyz"), NotFoundError);
});

test("branch: the tag carries the sandbox's state; eval without Python is no_python", async () => {
  let sb: Sandbox | undefined;
  let child: Sandbox | undefined;
  let tag: string | undefined;
  try {
    sb = await Sandbox.create(env.tag);
    await sb.commands.run("echo branched-state > /tmp/state");
    const noPy = await sb.eval("1 + 1").catch((e: unknown) => e);
    assert.ok(noPy instanceof ConflictError, String(noPy));
    assert.equal(noPy.code, "no_python");

    const b = await sb.branch();
    tag = b.tag;
    assert.equal(b.branchedFrom, sb.sandboxId);
    assert.equal(b.status, "ready");
    assert.ok(b.mode === "live" || b.mode === "full", String(b.mode));
    child = await Sandbox.create(b.tag);
    assert.equal((await child.commands.run("cat /tmp/state")).stdout, "branched-state\n");
    // The source runs on.
    assert.equal((await sb.commands.run("cat /tmp/state")).stdout, "branched-state\n");
  } finally {
    await killAll([sb, child]);
    await dropTag(ctrl, tag);
  }
});

test("fork(3): every child sees the file written before the fork", async () => {
  let sb: Sandbox | undefined;
  let children: Sandbox[] = [];
  let tag: string | undefined;
  try {
    sb = await Sandbox.create(env.tag);
    await sb.commands.run("echo before-fork > /tmp/marker");
    try {
      children = await sb.fork(3);
    } catch (err) {
      if (err instanceof ForkError) {
        children = err.sandboxes;
        tag = err.tag;
      }
      throw err;
    }
    tag = children[0]?.snapshotTag ?? undefined;
    assert.equal(children.length, 3);
    assert.equal(new Set(children.map((c) => c.sandboxId)).size, 3);
    const outs = await Promise.all(children.map((c) => c.commands.run("cat /tmp/marker; echo $$")));
    for (const o of outs) assert.match(o.stdout, /^before-fork\n\d+\n$/);
    // Children are independent copies.
    await children[0]?.commands.run("echo changed > /tmp/marker");
    assert.equal((await children[1]?.commands.run("cat /tmp/marker"))?.stdout, "before-fork\n");
    assert.equal((await sb.commands.run("cat /tmp/marker")).stdout, "before-fork\n");
  } finally {
    await killAll([sb, ...children]);
    await dropTag(ctrl, tag);
  }
});

test("await using and Sandbox.with kill the sandbox", async () => {
  let id = "";
  {
    await using sb = await Sandbox.create(env.tag);
    id = sb.sandboxId;
    assert.equal((await sb.commands.run("echo scoped")).stdout, "scoped\n");
  }
  await assert.rejects(ctrl.getSandbox(id), NotFoundError);
  const id2 = await Sandbox.with(env.tag, async (sb) => sb.sandboxId);
  await assert.rejects(ctrl.getSandbox(id2), NotFoundError);
});
