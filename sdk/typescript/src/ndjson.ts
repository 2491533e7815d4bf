// Newline-delimited JSON, read as it arrives: chunks split anywhere (inside a line, inside a
// multi-byte UTF-8 character) give the same lines as the whole body would.
import { ForkdError } from "./errors.js";

/** Longest line accepted, in characters (one streamed output event is one line). */
export const kMaxLineChars = 64 * 1024 * 1024;

/** Splits a byte stream into text lines. Feed chunks, then call end() for a last unterminated line. */
export class LineSplitter {
  private readonly decoder = new TextDecoder("utf-8");
  // The unterminated line so far, in pieces: a long line arriving in many chunks is joined
  // once, not rescanned per chunk.
  private pending: string[] = [];
  private pendingLength = 0;

  constructor(private readonly maxLine = kMaxLineChars) {}

  /** The complete lines in this chunk (plus what was pending), without their "\n". */
  push(chunk: Uint8Array): string[] {
    // "\n" never occurs inside a multi-byte sequence, and the streaming decoder keeps a split
    // character for the next chunk, so splitting the decoded text is exact.
    const text = this.decoder.decode(chunk, { stream: true });
    const nl = text.indexOf("\n");
    if (nl < 0) {
      this.keep(text);
      return [];
    }
    const lines = [this.pending.join("") + text.slice(0, nl), ...text.slice(nl + 1).split("\n")];
    this.pending = [];
    this.pendingLength = 0;
    this.keep(lines.pop() ?? "");
    return lines.map(stripCr);
  }

  /** The last line when the stream did not end with "\n" (empty array otherwise). */
  end(): string[] {
    const rest = this.pending.join("") + this.decoder.decode();
    this.pending = [];
    this.pendingLength = 0;
    return rest.length > 0 ? [stripCr(rest)] : [];
  }

  private keep(text: string): void {
    if (text === "") return;
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength > this.maxLine) {
      throw new ForkdError(`stream line longer than ${this.maxLine} characters`);
    }
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Parses each non-empty line of a byte stream as a JSON value. */
export async function* ndjson(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<unknown> {
  const splitter = new LineSplitter();
  for await (const chunk of chunks) {
    for (const line of splitter.push(chunk)) {
      if (line.trim() !== "") yield parseLine(line);
    }
  }
  for (const line of splitter.end()) {
    if (line.trim() !== "") yield parseLine(line);
  }
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new ForkdError(`malformed stream line: ${line.slice(0, 120)}`);
  }
}
