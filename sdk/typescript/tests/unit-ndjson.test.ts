// NDJSON splitting: any chunking of the bytes gives the same lines and events.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LineSplitter, ndjson } from "forkd/internal";

const enc = new TextEncoder();

function splitAll(chunks: Uint8Array[]): string[] {
  const s = new LineSplitter();
  const lines: string[] = [];
  for (const c of chunks) lines.push(...s.push(c));
  lines.push(...s.end());
  return lines;
}

function chunkEvery(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

async function* from(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}

test("lines split at every chunk boundary, multi-byte characters included", () => {
  const text = '{"type":"stdout","data":"héllo wörld ✓ 🎉"}\n{"a":1}\r\n\n{"last":"no newline é"}';
  const bytes = enc.encode(text);
  const want = ['{"type":"stdout","data":"héllo wörld ✓ 🎉"}', '{"a":1}', "", '{"last":"no newline é"}'];
  for (let size = 1; size <= bytes.length; size++) {
    assert.deepEqual(splitAll(chunkEvery(bytes, size)), want, `chunk size ${size}`);
  }
});

test("a line held over many chunks is joined once", () => {
  const big = "x".repeat(200_000);
  const bytes = enc.encode(`${big}\nnext\n`);
  assert.deepEqual(splitAll(chunkEvery(bytes, 1000)), [big, "next"]);
});

test("a line beyond the cap is refused", () => {
  const s = new LineSplitter(10);
  assert.throws(() => s.push(enc.encode("0123456789abc")), /longer than 10/);
});

test("ndjson parses events from arbitrary chunks and skips blank lines", async () => {
  const body =
    '{"type":"start","command_id":"cmd-1"}\n\n{"type":"stdout","data":"a\\nb"}\n{"type":"exit","exit_code":0}\n';
  const events: unknown[] = [];
  for await (const ev of ndjson(from(chunkEvery(enc.encode(body), 3)))) events.push(ev);
  assert.deepEqual(events, [
    { type: "start", command_id: "cmd-1" },
    { type: "stdout", data: "a\nb" },
    { type: "exit", exit_code: 0 },
  ]);
});

test("a malformed line is an error, not skipped", async () => {
  const run = async () => {
    for await (const _ of ndjson(from([enc.encode('{"ok":1}\n{broken\n')]))) {
      // drain
    }
  };
  await assert.rejects(run, /malformed stream line/);
});
