// Live: eval and ping on the python image.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { EvalError, Sandbox } from "forkd";

import { killAll, liveEnv } from "./live-env.js";

const env = liveEnv();
let sb: Sandbox;

before(async () => {
  sb = await Sandbox.create(env.pyTag);
});
after(async () => {
  await killAll([sb]);
});

test("eval: repr of expressions, null for statements, state kept between calls", async () => {
  assert.equal(await sb.eval("1 + 1"), "2");
  assert.equal(await sb.eval("'a' * 3"), "'aaa'");
  assert.equal(await sb.eval("x = 21"), null);
  assert.equal(await sb.eval("x * 2"), "42");
  const v = await sb.eval("numpy.__version__");
  assert.match(v ?? "", /^'\d+\.\d+/);
});

test("eval: a Python error rejects with EvalError", async () => {
  const err = await sb.eval("print('before'); 1 / 0").catch((e: unknown) => e);
  assert.ok(err instanceof EvalError, String(err));
  assert.match(err.error, /ZeroDivisionError/);
  assert.match(err.message, /ZeroDivisionError/);
});

test("ping on the python image", async () => {
  const p = await sb.ping();
  assert.equal(p.pong, true);
  assert.equal(p.agentLang, "python");
  assert.match(p.numpyVersion ?? "", /^\d+\.\d+/);
});
