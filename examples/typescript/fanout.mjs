#!/usr/bin/env node
// Agent fan-out with forkd: prepare a sandbox, fork it 8 ways, try 8 variants of a task at once,
// keep the best, branch the winner and continue from it in a fresh sandbox.
//
//   (cd sdk/typescript && npm ci && npm run build)
//   tests/sdk/with-daemon.sh build/forkd -- node examples/typescript/fanout.mjs
//
// Env: FORKD_URL / FORKD_TOKEN (the daemon), FORKD_EXAMPLE_TAG (an existing tag to start from;
// else one is made from image FORKD_EXAMPLE_IMAGE, default "minimal"). Everything the example
// creates is removed at the end, also on failure.
import { Controller, ForkError, NotFoundError, Sandbox } from "../../sdk/typescript/dist/index.js";

const t0 = Date.now();
const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

// The task: estimate pi. Each variant is one approach an agent might try: a command for the
// minimal image's busybox (sh, seq, awk; its awk has no libm: sqrt and atan are written out).
const sqrt = "function sq(x,  r,i){r=x;for(i=0;i<60;i++)r=(r+x/r)/2;return r}";
const atan = "function at(x,  s,t,k){s=0;t=x;for(k=0;k<40;k++){s+=t/(2*k+1);t*=-x*x};return s}";
const awk = (program) => ["awk", program];
const variants = [
  ["leibniz series, 20k terms", awk("BEGIN{s=0;for(k=0;k<20000;k++)s+=(k%2?-1:1)/(2*k+1);printf \"%.15f\\n\",4*s}")],
  ["nilakantha series, 200 terms", awk("BEGIN{p=3;sg=1;for(k=2;k<=400;k+=2){p+=sg*4/(k*(k+1)*(k+2));sg=-sg};printf \"%.15f\\n\",p}")],
  ["wallis product, 20k factors", awk("BEGIN{p=1;for(k=1;k<=20000;k++)p*=(4*k*k)/(4*k*k-1);printf \"%.15f\\n\",2*p}")],
  ["monte carlo, 20k darts", awk("BEGIN{srand(7);h=0;for(i=0;i<20000;i++){x=rand();y=rand();if(x*x+y*y<=1)h++};printf \"%.15f\\n\",4*h/20000}")],
  ["midpoint rule over seq, 2k slices", "seq 0 1999 | awk '{x=($1+0.5)/2000; s+=4/(1+x*x)} END{printf \"%.15f\\n\", s/2000}'"],
  ["archimedes polygon, 10 doublings", awk(`${sqrt} BEGIN{s=1;n=6;for(i=0;i<10;i++){s=sq(2-sq(4-s*s));n*=2};printf "%.15f\\n",n*s/2}`)],
  ["machin formula, 40 terms", awk(`${atan} BEGIN{printf "%.15f\\n",4*(4*at(1/5)-at(1/239))}`)],
  ["a guess", awk("BEGIN{printf \"%.15f\\n\",22/7}")],
];

const ctrl = new Controller();
const created = { tags: [], sandboxes: [] };
const track = (sb) => (created.sandboxes.push(sb), sb);

async function baseTag() {
  const given = process.env.FORKD_EXAMPLE_TAG;
  if (given) {
    try {
      await ctrl.snapshotInfo(given);
      log(`using tag ${given}`);
      return given;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      log(`tag ${given} does not exist: making one`);
    }
  }
  const image = process.env.FORKD_EXAMPLE_IMAGE || "minimal";
  const tag = `fanout-${process.pid}`;
  log(`warming tag ${tag} from image "${image}"...`);
  await ctrl.createSnapshot({ tag, image });
  created.tags.push(tag);
  log(`tag ${tag} ready`);
  return tag;
}

async function main() {
  const v = await ctrl.version();
  log(`daemon ${ctrl.url}: forkd ${v.version}`);
  const tag = await baseTag();

  // 1. A sandbox with the agent's state so far.
  const agent = track(await Sandbox.create(tag, { controller: ctrl }));
  log(`sandbox ${agent.sandboxId} started`);
  await agent.files.makeDir("/tmp/agent");
  await agent.files.write("/tmp/agent/notes.txt", "task: estimate pi as closely as you can\nstep 1: read the task\n");
  log("state written: /tmp/agent/notes.txt");

  // 2. Eight copies of it, each trying one variant.
  let children;
  try {
    children = (await agent.fork(variants.length)).map(track);
  } catch (err) {
    if (err instanceof ForkError) {
      err.sandboxes.forEach(track);
      created.tags.push(err.tag);
    }
    throw err;
  }
  created.tags.push(children[0].snapshotTag);
  log(`forked ${children.length} children from ${children[0].snapshotTag}`);

  const attempts = await Promise.all(
    children.map(async (child, i) => {
      const [name, command] = variants[i];
      const notes = await child.files.read("/tmp/agent/notes.txt");
      if (!notes.startsWith("task: estimate pi")) throw new Error(`child ${i} lost the parent's state`);
      const r = await child.commands.run(command, { timeoutMs: 30_000 });
      const estimate = Number(r.stdout.trim());
      const error = Math.abs(estimate - Math.PI);
      await child.files.write("/tmp/agent/attempt.txt", `${name}: ${estimate}\n`);
      await child.commands.run(`echo "step 2: tried ${name}" >> /tmp/agent/notes.txt`);
      return { child, name, estimate, error, ms: r.durationMs };
    }),
  );

  // 3. Score, keep the best, kill the others.
  attempts.sort((a, b) => a.error - b.error);
  for (const a of attempts) {
    log(`  ${a.error.toExponential(2).padStart(9)}  ${a.name.padEnd(36)} ${a.estimate}  (${a.ms} ms)`);
  }
  const best = attempts[0];
  log(`winner: ${best.name} in ${best.child.sandboxId}`);
  await Promise.all(attempts.slice(1).map((a) => a.child.kill()));
  log(`killed the ${attempts.length - 1} others`);

  // 4. Branch the winner; continue from the branch in a new sandbox.
  const branch = await best.child.branch();
  created.tags.push(branch.tag);
  log(`branched the winner into ${branch.tag} (${branch.mode}, paused ${branch.pauseMs ?? "?"} ms)`);
  await best.child.kill();
  await agent.kill();

  const next = track(await Sandbox.create(branch.tag, { controller: ctrl }));
  const notes = await next.files.read("/tmp/agent/notes.txt");
  const attempt = await next.files.read("/tmp/agent/attempt.txt");
  if (!attempt.startsWith(best.name)) throw new Error(`the branch lost the winner's state: ${attempt}`);
  await next.commands.run(`echo "step 3: continue with ${best.name}" >> /tmp/agent/notes.txt`);
  log(`continuing in ${next.sandboxId}, spawned from the branch; its state:`);
  for (const line of (notes + attempt).trimEnd().split("\n")) log(`  | ${line}`);
  const steps = (await next.commands.run("grep -c step /tmp/agent/notes.txt")).stdout.trim();
  log(`notes now hold ${steps} steps`);
}

async function cleanup() {
  const sandboxes = created.sandboxes.filter(Boolean);
  await Promise.allSettled(sandboxes.map((sb) => sb.close()));
  // Newest first: a branch may be a link of the tag it came from.
  for (const tag of created.tags.filter(Boolean).reverse()) {
    try {
      await ctrl.deleteSnapshot(tag, { cascade: true });
    } catch (err) {
      if (!(err instanceof NotFoundError)) console.error(`cleanup: tag ${tag}: ${err.message}`);
    }
  }
  log(`cleaned up ${sandboxes.length} sandboxes and ${created.tags.length} tags`);
}

try {
  await main();
  log("done");
} catch (err) {
  console.error(`fanout failed: ${err?.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await cleanup().catch((err) => {
    console.error(`cleanup failed: ${err?.message ?? err}`);
    process.exitCode = 1;
  });
}
