// Live: sandbox.files against a real daemon.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, test } from "node:test";

import { InvalidRequestError, NotFoundError, Sandbox } from "forkd";

import { killAll, liveEnv } from "./live-env.js";

const env = liveEnv();
let sb: Sandbox;

before(async () => {
  sb = await Sandbox.create(env.tag);
});
after(async () => {
  await killAll([sb]);
});

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

async function guestSha256(path: string): Promise<string> {
  return (await sb.commands.run(["sha256sum", path])).stdout.split(" ")[0] ?? "";
}

test("text round trip", async () => {
  const text = "héllo wörld\nline 2 ✓\n";
  const w = await sb.files.write("/tmp/t.txt", text);
  assert.deepEqual(w, { path: "/tmp/t.txt", name: "t.txt", size: Buffer.byteLength(text) });
  assert.equal(await sb.files.read("/tmp/t.txt"), text);
  assert.equal((await sb.commands.run("cat /tmp/t.txt")).stdout, text);
  // Replacing a file.
  await sb.files.write("/tmp/t.txt", "short");
  assert.equal(await sb.files.read("/tmp/t.txt", { format: "text" }), "short");
});

test("bytes round trip (every byte value)", async () => {
  const bytes = new Uint8Array(512).map((_, i) => i % 256);
  await sb.files.write("/tmp/b.bin", bytes);
  const back = await sb.files.read("/tmp/b.bin", { format: "bytes" });
  assert.ok(back instanceof Uint8Array);
  assert.deepEqual(Buffer.from(back), Buffer.from(bytes));
  // An empty file.
  await sb.files.write("/tmp/empty", new Uint8Array(0));
  assert.equal((await sb.files.read("/tmp/empty", { format: "bytes" })).byteLength, 0);
});

test("a 3 MiB binary file, checked on both sides", async () => {
  const big = randomBytes(3 * 1024 * 1024);
  const w = await sb.files.write("/tmp/big.bin", big);
  assert.equal(w.size, big.length);
  assert.equal(await guestSha256("/tmp/big.bin"), sha256(big));
  const back = await sb.files.read("/tmp/big.bin", { format: "bytes" });
  assert.equal(back.byteLength, big.length);
  assert.equal(sha256(back), sha256(big));
  // And read as a stream.
  const stream = await sb.files.read("/tmp/big.bin", { format: "stream" });
  const h = createHash("sha256");
  let n = 0;
  for await (const chunk of stream) {
    h.update(chunk);
    n += chunk.byteLength;
  }
  assert.equal(n, big.length);
  assert.equal(h.digest("hex"), sha256(big));
});

test("streamed write from a ReadableStream and from an async generator", async () => {
  const parts = Array.from({ length: 6 }, () => randomBytes(300_000));
  const all = Buffer.concat(parts);
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      const p = parts[i++];
      if (p) ctrl.enqueue(p);
      else ctrl.close();
    },
  });
  const w = await sb.files.write("/tmp/streamed.bin", stream);
  assert.equal(w.size, all.length);
  assert.equal(await guestSha256("/tmp/streamed.bin"), sha256(all));

  async function* gen(): AsyncGenerator<Uint8Array | string> {
    yield "text and ";
    yield new TextEncoder().encode("bytes");
  }
  await sb.files.write("/tmp/gen.txt", gen());
  assert.equal(await sb.files.read("/tmp/gen.txt"), "text and bytes");
});

test("makeDir, list, exists, getInfo, remove", async () => {
  assert.equal(await sb.files.makeDir("/tmp/d/e"), true);
  assert.equal(await sb.files.makeDir("/tmp/d/e"), false);
  await sb.files.write("/tmp/d/e/b.txt", "bb");
  await sb.files.write("/tmp/d/e/a.sh", "#!/bin/sh\necho ran\n", { mode: 0o755 });
  const entries = await sb.files.list("/tmp/d/e");
  assert.deepEqual(
    entries.map((e) => [e.name, e.type, e.size, e.path]),
    [
      ["a.sh", "file", 19, "/tmp/d/e/a.sh"],
      ["b.txt", "file", 2, "/tmp/d/e/b.txt"],
    ],
  );
  assert.equal(entries[0]?.mode, 0o755);
  assert.equal(entries[1]?.mode, 0o644);
  assert.equal((await sb.commands.run("/tmp/d/e/a.sh")).stdout, "ran\n");

  const dir = await sb.files.getInfo("/tmp/d");
  assert.equal(dir.type, "dir");
  assert.equal(dir.name, "d");
  const file = await sb.files.getInfo("/tmp/d/e/b.txt");
  assert.equal(file.type, "file");
  assert.equal(file.size, 2);
  assert.ok(Math.abs(file.modifiedTime.getTime() - Date.now()) < 10 * 60_000, String(file.modifiedTime));

  assert.equal(await sb.files.exists("/tmp/d/e/b.txt"), true);
  assert.equal(await sb.files.exists("/tmp/d/nope"), false);

  await sb.files.remove("/tmp/d/e/b.txt");
  assert.equal(await sb.files.exists("/tmp/d/e/b.txt"), false);
  await sb.files.remove("/tmp/d", { recursive: true });
  assert.equal(await sb.files.exists("/tmp/d"), false);
});

test("removing a non-empty directory needs recursive (400 otherwise)", async () => {
  await sb.files.makeDir("/tmp/full/sub");
  try {
    const err = await sb.files.remove("/tmp/full").catch((e: unknown) => e);
    assert.ok(err instanceof InvalidRequestError, String(err));
    assert.equal(await sb.files.exists("/tmp/full/sub"), true);
  } finally {
    await sb.files.remove("/tmp/full", { recursive: true });
  }
});

test("a missing file is NotFoundError with code not_found", async () => {
  for (const op of [
    () => sb.files.read("/tmp/no/such/file"),
    () => sb.files.getInfo("/tmp/no-such-file"),
    () => sb.files.list("/tmp/no-such-dir"),
    () => sb.files.remove("/tmp/no-such-file"),
  ]) {
    const err = await op().catch((e: unknown) => e);
    assert.ok(err instanceof NotFoundError, String(err));
    assert.equal(err.code, "not_found");
    assert.equal(err.status, 404);
  }
});

test("bad paths are refused: relative, with .., and reading a directory", async () => {
  for (const p of ["tmp/rel", "/tmp/../etc/passwd"]) {
    const err = await sb.files.read(p).catch((e: unknown) => e);
    assert.ok(err instanceof InvalidRequestError, `${p}: ${String(err)}`);
    assert.equal(err.code, "invalid_argument");
  }
  await assert.rejects(sb.files.read("/tmp"), InvalidRequestError);
});
