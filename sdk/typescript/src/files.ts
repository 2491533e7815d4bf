// sandbox.files: the guest's filesystem. Paths are absolute guest paths, passed to the agent as
// they are (never to a shell).
import type { Controller, FileData } from "./controller.js";
import { NotFoundError } from "./errors.js";
import type { FileStat, FileType } from "./types.js";

export interface EntryInfo {
  name: string;
  path: string;
  type: FileType;
  size: number;
  /** Permission bits (0o644 is 420). */
  mode: number;
  /** Modification time, unix seconds. */
  mtime: number;
  modifiedTime: Date;
}

/** Entries of a directory; `truncated`: it has more than the daemon lists (8192). */
export type EntryList = EntryInfo[] & { truncated: boolean };

export interface WriteInfo {
  path: string;
  name: string;
  /** Bytes written. */
  size: number;
}

export type ReadFormat = "text" | "bytes" | "stream";

export interface ReadOptions {
  /** "text" (default, UTF-8), "bytes" (Uint8Array) or "stream" (ReadableStream, read as it arrives). */
  format?: ReadFormat;
  /** Deadline of the download (for "stream": of its start), ms. Default: the controller's. */
  timeoutMs?: number;
}

export class Files {
  constructor(
    private readonly controller: Controller,
    readonly sandboxId: string,
  ) {}

  read(path: string, opts?: ReadOptions & { format?: "text" }): Promise<string>;
  read(path: string, opts: ReadOptions & { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, opts: ReadOptions & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  read(path: string, opts?: ReadOptions): Promise<string | Uint8Array | ReadableStream<Uint8Array>>;
  async read(path: string, opts: ReadOptions = {}): Promise<string | Uint8Array | ReadableStream<Uint8Array>> {
    const t = opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {};
    const format = opts.format ?? "text";
    if (format === "stream") return this.controller.readFileStream(this.sandboxId, path, t);
    const bytes = await this.controller.readFile(this.sandboxId, path, t);
    if (format === "bytes") return bytes;
    if (format === "text") return new TextDecoder().decode(bytes);
    throw new TypeError(`format must be "text", "bytes" or "stream", got ${String(format)}`);
  }

  /**
   * Writes a file (parent directories must exist: see makeDir). A stream or async iterable is
   * sent chunked as it is read. The file replaces `path` only once complete.
   */
  async write(path: string, data: FileData, opts: { mode?: number | string; timeoutMs?: number } = {}): Promise<WriteInfo> {
    const r = await this.controller.writeFile(this.sandboxId, path, data, opts);
    return { path: r.path, name: basename(r.path), size: r.size };
  }

  /** The entries of a directory, sorted by name (at most 8192, the daemon's cap: see truncated). */
  async list(path: string): Promise<EntryList> {
    const r = await this.controller.listFiles(this.sandboxId, path);
    return Object.assign(
      r.entries.map((e) => entry(e, e.name)),
      { truncated: r.truncated === true },
    );
  }

  async exists(path: string): Promise<boolean> {
    return (await this.statOrNull(path)) !== null;
  }

  async getInfo(path: string): Promise<EntryInfo> {
    const s = await this.controller.statFile(this.sandboxId, path);
    return entry(s, basename(s.path));
  }

  /** Creates a directory and its parents; true when made, false when it already was one. */
  async makeDir(path: string): Promise<boolean> {
    const s = await this.statOrNull(path);
    if (s?.type === "dir") return false;
    // Anything else there (a file) makes the daemon refuse with the reason.
    await this.controller.makeDir(this.sandboxId, path, { parents: true });
    return true;
  }

  /** Removes a file, or a directory (non-empty ones need recursive: true). */
  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.controller.removeFile(this.sandboxId, path, opts);
  }

  /** The path's stat, or null when it does not exist (a missing sandbox still throws). */
  private async statOrNull(path: string): Promise<FileStat | null> {
    try {
      return await this.controller.statFile(this.sandboxId, path);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    // Both a missing path and a missing sandbox are 404 not_found: ask which it was.
    await this.controller.getSandbox(this.sandboxId);
    return null;
  }
}

function entry(s: FileStat, name: string): EntryInfo {
  return {
    name,
    path: s.path,
    type: s.type,
    size: s.size,
    mode: s.mode,
    mtime: s.mtime,
    modifiedTime: new Date(s.mtime * 1000),
  };
}

function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1) || "/";
}
