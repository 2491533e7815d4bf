// Controller: one method per REST route of the daemon (docs/API.md), with forkd's method names.
// Options are camelCase; answers are the daemon's JSON as is (snake_case, see types.ts).
import { readFileSync } from "node:fs";

import {
  ConnectionError,
  errorFromResponse,
  errorFromStreamEvent,
  ForkdError,
  ProtocolError,
  TimeoutError,
} from "./errors.js";
import { ndjson } from "./ndjson.js";
import {
  type Endpoint,
  FetchTransport,
  NodeTransport,
  parseEndpoint,
  readableChunks,
  type RequestBody,
  type Transport,
  type TransportResponse,
  toReadableStream,
} from "./transport.js";
import type {
  BranchMode,
  CommandInfo,
  CommandOutput,
  EvalResult,
  ExecEvent,
  ExecResult,
  FileList,
  FileStat,
  PingResult,
  SandboxInfo,
  Signal,
  SnapshotInfo,
  SnapshotInfoDetail,
  VersionInfo,
  WorkspaceInfo,
  WriteResult,
} from "./types.js";
import { concatBytes, env, toBytes } from "./util.js";

export const kDefaultBaseUrl = "http://127.0.0.1:8889";
/** Deadline of a request, unless the method says otherwise. */
export const kDefaultTimeoutMs = 60_000;
/** Least deadline of requests that wait on a VM (snapshot, spawn, branch, compact, workspaces). */
export const kLongTimeoutMs = 600_000;
/** Added to a command's own timeout for the request that waits on it. */
const kExecMarginMs = 30_000;
/** The daemon's eval deadline is 120 s: the request waits a little longer. */
const kEvalTimeoutMs = 150_000;
/** The daemon's exec timeout when none is given. */
const kDaemonExecTimeoutSecs = 300;
/** Bytes of an error answer kept for the error (the rest is dropped). */
const kMaxErrorBody = 64 * 1024;
const kUserAgent = "forkd-typescript/0.1.0";

export interface ControllerOptions {
  /**
   * The daemon: `http://host:port`, `https://host:port` or `unix:///abs/path.sock`. Default: env
   * `FORKD_URL`, then `http://127.0.0.1:8889`.
   */
  baseUrl?: string;
  /** Bearer token. Default: env `FORKD_TOKEN`. */
  token?: string;
  /**
   * Deadline of each request in milliseconds (default 60 000; 0: none). Requests that wait on a VM
   * get at least 10 minutes, and an exec its command's timeout plus 30 s.
   */
  timeoutMs?: number;
  /** PEM file of the CA (or self-signed certificate) to trust for https. Default: env `FORKD_CA_CERT`. */
  caFile?: string;
  /** The daemon's unix socket; requests go there whatever the URL's host. */
  socketPath?: string;
  /** A transport of your own (tests, proxies). Overrides the choice made from the options above. */
  transport?: Transport;
}

/** Exec fields beyond the command (see docs/API.md "Exec: stdin, env, cwd, user"). */
export interface ExecOptions {
  /** Seconds before the command is killed (daemon default 300; at most 3600). */
  timeoutSecs?: number;
  env?: Record<string, string>;
  /** Absolute working directory. */
  cwd?: string;
  /** A user of the guest's /etc/passwd, or a numeric uid. */
  user?: string | number;
  /** Standard input (closed after it); a string is sent as UTF-8. */
  stdin?: string | Uint8Array;
  /** Bytes kept of stdout and of stderr, each. */
  maxOutputBytes?: number;
}

export interface SpawnOptions {
  snapshotTag: string;
  n?: number;
  perChildNetns?: boolean;
  /** Memory limit of each child's QEMU process (guest RAM included), MiB. */
  memoryLimitMib?: number;
  /** CPU cores of each child's QEMU (a CFS quota). */
  cpuLimit?: number;
  pidsLimit?: number;
  network?: "none" | "outbound";
  /** Guest TCP ports to expose on a host port each. */
  expose?: number[];
  /** With perChildNetns: the only destinations forwarded (`A.B.C.D[/N][:PORT]`). */
  allowList?: string[];
  /** forkd compatibility: sent only when true (the daemon refuses it then: use `forkd pool`). */
  prewarm?: boolean;
  /** forkd compatibility: sent only when true (every sandbox here can be branched live). */
  liveFork?: boolean;
  /** forkd compatibility: sent only when true (the daemon refuses it). */
  hugepages?: boolean;
  timeoutMs?: number;
}

export interface CreateSnapshotOptions {
  tag: string;
  /** One of the daemon's images: "minimal" (busybox) or "python". */
  image?: string;
  memoryMib?: number;
  /** Shell commands run in the VM before it is saved. */
  exec?: string[];
  /** Python run in the VM's warm worker before it is saved (python image). */
  eval?: string[];
  network?: "none" | "outbound";
  /** Replace an existing tag. */
  force?: boolean;
  /** With force: remove the tag's dependents first. */
  cascade?: boolean;
  timeoutMs?: number;
}

export interface BranchOptions {
  tag?: string;
  mode?: BranchMode;
  /** forkd's legacy flag (mode "diff"); exclusive with mode. */
  diff?: boolean;
  /** false: answer once the source runs again; the tag reads `status: writing` until written. */
  wait?: boolean;
  timeoutMs?: number;
}

/** The command: a string runs under `/bin/sh -c`, an array is the argv. */
export type Command = string | readonly string[];

/** Data for a file: text (UTF-8), bytes, or a stream of bytes (sent chunked as it is read). */
export type FileData =
  | string
  | Uint8Array
  | ArrayBuffer
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>;

/** Client for the daemon's REST API. */
export class Controller {
  readonly baseUrl: string;
  readonly token: string | undefined;
  readonly timeoutMs: number;
  private readonly transport: Transport;

  constructor(opts: ControllerOptions = {}) {
    this.baseUrl = (opts.baseUrl ?? env("FORKD_URL") ?? kDefaultBaseUrl).replace(/\/+$/, "");
    this.token = opts.token ?? env("FORKD_TOKEN");
    this.timeoutMs = opts.timeoutMs ?? kDefaultTimeoutMs;
    if (!(this.timeoutMs >= 0)) throw new ForkdError(`timeoutMs must be >= 0, got ${opts.timeoutMs}`);
    this.transport = opts.transport ?? pickTransport(this.baseUrl, opts.socketPath, opts.caFile ?? env("FORKD_CA_CERT"));
  }

  /** The daemon's URL as requests are sent (`unix:///path.sock` for a socket). */
  get url(): string {
    return this.transport.displayUrl;
  }

  /** Releases pooled connections (the process can also just exit). */
  close(): void {
    this.transport.close();
  }

  // --- meta ----------------------------------------------------------------------------------

  async healthz(): Promise<{ ok: boolean }> {
    return this.json("GET", "/healthz");
  }

  async version(): Promise<VersionInfo> {
    return this.json("GET", "/version");
  }

  /** Prometheus text. */
  async metrics(): Promise<string> {
    const call = await this.call("GET", "/metrics", {});
    return new TextDecoder().decode(await call.readAll());
  }

  // --- snapshots -----------------------------------------------------------------------------

  async listSnapshots(): Promise<SnapshotInfo[]> {
    return this.json("GET", "/v1/snapshots");
  }

  /** Builds a tag from one of the daemon's images (our POST /v1/snapshots takes `image`). */
  async createSnapshot(opts: CreateSnapshotOptions): Promise<SnapshotInfo> {
    const body: Record<string, unknown> = { tag: opts.tag };
    if (opts.image !== undefined) body.image = opts.image;
    if (opts.memoryMib !== undefined) body.memory_mib = opts.memoryMib;
    if (opts.exec !== undefined) body.exec = opts.exec;
    if (opts.eval !== undefined) body.eval = opts.eval;
    if (opts.network !== undefined) body.network = opts.network;
    if (opts.force) body.force = true;
    if (opts.cascade) body.cascade = true;
    return this.json("POST", "/v1/snapshots", { json: body, timeoutMs: this.longDeadline(opts.timeoutMs) });
  }

  async snapshotInfo(tag: string): Promise<SnapshotInfoDetail> {
    return this.json("GET", `/v1/snapshots/${seg(tag)}/info`);
  }

  async deleteSnapshot(tag: string, opts: { cascade?: boolean; force?: boolean } = {}): Promise<void> {
    const query: Record<string, string> = {};
    if (opts.cascade) query.cascade = "true";
    if (opts.force) query.force = "true";
    await this.json("DELETE", `/v1/snapshots/${seg(tag)}`, { query });
  }

  /** Flattens a chain link into a new self-contained tag `to`. */
  async compactSnapshot(tag: string, to: string, opts: { timeoutMs?: number } = {}): Promise<SnapshotInfo> {
    return this.json("POST", `/v1/snapshots/${seg(tag)}/compact`, {
      json: { to },
      timeoutMs: this.longDeadline(opts.timeoutMs),
    });
  }

  // --- sandboxes -----------------------------------------------------------------------------

  /** Forks n children (default 1) from a tag; all or none (a failed child fails the batch). */
  async spawnSandboxes(opts: SpawnOptions): Promise<SandboxInfo[]> {
    const body: Record<string, unknown> = { snapshot_tag: opts.snapshotTag, n: opts.n ?? 1 };
    if (opts.perChildNetns) body.per_child_netns = true;
    if (opts.memoryLimitMib !== undefined) body.memory_limit_mib = opts.memoryLimitMib;
    if (opts.cpuLimit !== undefined) body.cpu_limit = opts.cpuLimit;
    if (opts.pidsLimit !== undefined) body.pids_limit = opts.pidsLimit;
    if (opts.network !== undefined) body.network = opts.network;
    if (opts.expose !== undefined) body.expose = opts.expose;
    if (opts.allowList !== undefined) body.allow_list = opts.allowList;
    if (opts.prewarm) body.prewarm = true;
    if (opts.liveFork) body.live_fork = true;
    if (opts.hugepages) body.hugepages = true;
    return this.json("POST", "/v1/sandboxes", { json: body, timeoutMs: this.longDeadline(opts.timeoutMs) });
  }

  async listSandboxes(): Promise<SandboxInfo[]> {
    return this.json("GET", "/v1/sandboxes");
  }

  async getSandbox(sandboxId: string): Promise<SandboxInfo> {
    return this.json("GET", `/v1/sandboxes/${seg(sandboxId)}`);
  }

  async killSandbox(sandboxId: string): Promise<void> {
    await this.json("DELETE", `/v1/sandboxes/${seg(sandboxId)}`);
  }

  /** Snapshots a running sandbox into a new tag (the source keeps running). */
  async branchSandbox(sandboxId: string, opts: BranchOptions = {}): Promise<SnapshotInfo> {
    const body: Record<string, unknown> = {};
    if (opts.tag !== undefined) body.tag = opts.tag;
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.diff !== undefined) body.diff = opts.diff;
    if (opts.wait !== undefined) body.wait = opts.wait;
    return this.json("POST", `/v1/sandboxes/${seg(sandboxId)}/branch`, {
      json: body,
      timeoutMs: this.longDeadline(opts.timeoutMs),
    });
  }

  async pingSandbox(sandboxId: string): Promise<PingResult> {
    return this.json("POST", `/v1/sandboxes/${seg(sandboxId)}/ping`);
  }

  /** Runs a command to its end and answers its output (a string command runs under sh -c). */
  async execCommand(sandboxId: string, command: Command, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.json("POST", `/v1/sandboxes/${seg(sandboxId)}/exec`, {
      json: execBody(command, opts),
      timeoutMs: this.execDeadline(opts.timeoutSecs),
    });
  }

  /**
   * Runs a command with its output streamed: yields `start`, then `stdout`/`stderr` events as
   * the output arrives, then `exit`. A failure of the agent throws (typed by its code). Leaving
   * the loop early disconnects, which kills the command.
   */
  async *execStream(sandboxId: string, command: Command, opts: ExecOptions = {}): AsyncGenerator<ExecEvent> {
    const call = await this.call("POST", `/v1/sandboxes/${seg(sandboxId)}/exec`, {
      json: { ...execBody(command, opts), stream: true },
      timeoutMs: this.execDeadline(opts.timeoutSecs),
    });
    yield* call.events();
  }

  /** Python in the sandbox's warm worker: `result` is the repr of the last expression. */
  async evalCode(sandboxId: string, code: string): Promise<EvalResult> {
    return this.json("POST", `/v1/sandboxes/${seg(sandboxId)}/eval`, {
      json: { code },
      timeoutMs: this.atLeast(kEvalTimeoutMs),
    });
  }

  // --- background commands -------------------------------------------------------------------

  /** Starts a command in the background (no timeout unless timeoutSecs); answers at once. */
  async startCommand(sandboxId: string, command: Command, opts: ExecOptions = {}): Promise<CommandInfo> {
    const info = await this.json<CommandInfo>("POST", `/v1/sandboxes/${seg(sandboxId)}/exec`, {
      json: { ...execBody(command, opts), background: true },
    });
    if (typeof info?.command_id !== "string") {
      // A daemon without background commands ignores the field and runs the command to its end.
      throw new ProtocolError(
        `POST ${this.url}/v1/sandboxes/${seg(sandboxId)}/exec: the answer has no command_id ` +
          "(this daemon does not run background commands)",
      );
    }
    return info;
  }

  async listCommands(sandboxId: string): Promise<CommandInfo[]> {
    return this.json("GET", `/v1/sandboxes/${seg(sandboxId)}/commands`);
  }

  async getCommand(sandboxId: string, commandId: string): Promise<CommandInfo> {
    return this.json("GET", cmdPath(sandboxId, commandId));
  }

  /** The output kept so far, and the command's info. */
  async commandOutput(sandboxId: string, commandId: string): Promise<CommandOutput> {
    return this.json("GET", `${cmdPath(sandboxId, commandId)}/output`);
  }

  /** Waits up to timeoutSecs (daemon default 60, at most 3600); `status` says whether it ended. */
  async waitCommand(sandboxId: string, commandId: string, opts: { timeoutSecs?: number } = {}): Promise<CommandOutput> {
    const body: Record<string, unknown> = {};
    if (opts.timeoutSecs !== undefined) body.timeout_secs = opts.timeoutSecs;
    return this.json("POST", `${cmdPath(sandboxId, commandId)}/wait`, {
      json: body,
      timeoutMs: this.execDeadline(opts.timeoutSecs ?? 60),
    });
  }

  /** Sends a signal (default KILL); a command that already ended is left as it is. */
  async killCommand(sandboxId: string, commandId: string, signal?: Signal): Promise<CommandInfo> {
    return this.json("POST", `${cmdPath(sandboxId, commandId)}/kill`, {
      json: signal !== undefined ? { signal } : {},
    });
  }

  /** Forgets a command (killing it first if it runs). */
  async deleteCommand(sandboxId: string, commandId: string): Promise<void> {
    await this.json("DELETE", cmdPath(sandboxId, commandId));
  }

  /** The command's output as events: what was kept so far, then live output, then `exit`. */
  async *streamCommand(
    sandboxId: string,
    commandId: string,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<ExecEvent> {
    const call = await this.call("GET", `${cmdPath(sandboxId, commandId)}/stream`, {
      timeoutMs: opts.timeoutMs ?? 0,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    yield* call.events();
  }

  // --- files ---------------------------------------------------------------------------------

  /** A guest file's bytes. */
  async readFile(sandboxId: string, path: string, opts: { timeoutMs?: number } = {}): Promise<Uint8Array> {
    const call = await this.call("GET", `/v1/sandboxes/${seg(sandboxId)}/files`, {
      query: { path },
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
    return call.readAll();
  }

  /**
   * A guest file as a stream, read as it arrives. The deadline covers the answer's start only;
   * a download cut short makes the stream error.
   */
  async readFileStream(sandboxId: string, path: string, opts: { timeoutMs?: number } = {}): Promise<ReadableStream<Uint8Array>> {
    const call = await this.call("GET", `/v1/sandboxes/${seg(sandboxId)}/files`, {
      query: { path },
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
    call.disarm();
    return toReadableStream(call.chunks());
  }

  /**
   * Writes a guest file (replacing it only once the upload is complete). Streams are sent
   * chunked as they are read, never held whole. `mode` is the permission bits (0o755 or "755").
   */
  async writeFile(
    sandboxId: string,
    path: string,
    data: FileData,
    opts: { mode?: number | string; timeoutMs?: number } = {},
  ): Promise<WriteResult> {
    const query: Record<string, string> = { path };
    if (opts.mode !== undefined) query.mode = octalMode(opts.mode);
    return this.json("PUT", `/v1/sandboxes/${seg(sandboxId)}/files`, {
      query,
      body: fileBody(data),
      contentType: "application/octet-stream",
      timeoutMs: opts.timeoutMs ?? this.timeoutMs,
    });
  }

  async statFile(sandboxId: string, path: string): Promise<FileStat> {
    return this.json("GET", `/v1/sandboxes/${seg(sandboxId)}/files/stat`, { query: { path } });
  }

  async listFiles(sandboxId: string, path: string): Promise<FileList> {
    return this.json("GET", `/v1/sandboxes/${seg(sandboxId)}/files/list`, { query: { path } });
  }

  /** Creates a directory (and its parents unless parents is false); an existing one is fine. */
  async makeDir(sandboxId: string, path: string, opts: { parents?: boolean } = {}): Promise<{ path: string }> {
    return this.json("POST", `/v1/sandboxes/${seg(sandboxId)}/files/mkdir`, {
      json: { path, parents: opts.parents ?? true },
    });
  }

  async removeFile(sandboxId: string, path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    const query: Record<string, string> = { path };
    if (opts.recursive) query.recursive = "true";
    await this.json("DELETE", `/v1/sandboxes/${seg(sandboxId)}/files`, { query });
  }

  // --- workspaces ----------------------------------------------------------------------------

  async listWorkspaces(): Promise<WorkspaceInfo[]> {
    return this.json("GET", "/v1/workspaces");
  }

  async createWorkspace(opts: {
    name: string;
    snapshotTag: string;
    perChildNetns?: boolean;
    memoryLimitMib?: number;
    timeoutMs?: number;
  }): Promise<WorkspaceInfo> {
    const body: Record<string, unknown> = { name: opts.name, snapshot_tag: opts.snapshotTag };
    if (opts.perChildNetns) body.per_child_netns = true;
    if (opts.memoryLimitMib !== undefined) body.memory_limit_mib = opts.memoryLimitMib;
    return this.json("POST", "/v1/workspaces", { json: body, timeoutMs: this.longDeadline(opts.timeoutMs) });
  }

  async getWorkspace(name: string): Promise<WorkspaceInfo> {
    return this.json("GET", `/v1/workspaces/${seg(name)}`);
  }

  async deleteWorkspace(name: string): Promise<void> {
    await this.json("DELETE", `/v1/workspaces/${seg(name)}`, { timeoutMs: this.longDeadline(undefined) });
  }

  /** Snapshots the workspace into `ws-<name>-state` and stops its sandbox (diff false: full copy). */
  async suspendWorkspace(name: string, opts: { diff?: boolean; timeoutMs?: number } = {}): Promise<WorkspaceInfo> {
    const body: Record<string, unknown> = {};
    if (opts.diff !== undefined) body.diff = opts.diff;
    return this.json("POST", `/v1/workspaces/${seg(name)}/suspend`, {
      json: body,
      timeoutMs: this.longDeadline(opts.timeoutMs),
    });
  }

  async resumeWorkspace(name: string, opts: { timeoutMs?: number } = {}): Promise<WorkspaceInfo> {
    return this.json("POST", `/v1/workspaces/${seg(name)}/resume`, {
      json: {},
      timeoutMs: this.longDeadline(opts.timeoutMs),
    });
  }

  // --- internals -----------------------------------------------------------------------------

  /** The controller's deadline, but at least ms (none stays none). */
  private atLeast(ms: number): number {
    return this.timeoutMs === 0 ? 0 : Math.max(this.timeoutMs, ms);
  }

  private longDeadline(given: number | undefined): number {
    return given ?? this.atLeast(kLongTimeoutMs);
  }

  private execDeadline(timeoutSecs: number | undefined): number {
    const secs = timeoutSecs && timeoutSecs > 0 ? timeoutSecs : kDaemonExecTimeoutSecs;
    return this.atLeast(secs * 1000 + kExecMarginMs);
  }

  /** A request whose JSON answer (undefined when empty) is returned, or thrown as an error. */
  private async json<T>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
    const call = await this.call(method, path, opts);
    const bytes = await call.readAll();
    if (bytes.byteLength === 0) return undefined as T;
    const text = new TextDecoder().decode(bytes);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ProtocolError(`${method} ${call.url}: the answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  /** Sends a request; an error answer is read and thrown, a success is returned unread. */
  private async call(method: string, path: string, opts: CallOptions): Promise<Call> {
    let fullPath = path;
    if (opts.query) {
      const q = new URLSearchParams(opts.query).toString();
      if (q) fullPath += `?${q}`;
    }
    const headers: Record<string, string> = { "user-agent": kUserAgent, accept: "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: RequestBody | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = new TextEncoder().encode(JSON.stringify(opts.json));
    } else if (opts.body !== undefined) {
      headers["content-type"] = opts.contentType ?? "application/octet-stream";
      body = opts.body;
    }
    const call = new Call(method, `${this.transport.displayUrl}${fullPath}`, opts.timeoutMs ?? this.timeoutMs, opts.signal);
    let res: TransportResponse;
    try {
      res = await this.transport.request({
        method,
        path: fullPath,
        headers,
        ...(body !== undefined ? { body } : {}),
        signal: call.signal,
      });
    } catch (err) {
      call.disarm();
      throw call.failure(err, false);
    }
    call.attach(res);
    if (res.status >= 400) {
      let text = "";
      try {
        text = new TextDecoder().decode(await call.readAll(kMaxErrorBody));
      } catch (err) {
        if (err instanceof TimeoutError) throw err;
        // The status alone still says what went wrong.
      }
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : {};
      } catch {
        // Not JSON (a proxy's page, say): kept as text.
      }
      throw errorFromResponse(res.status, parsed, call.url, { method, retryAfter: res.header("retry-after") });
    }
    return call;
  }
}

interface CallOptions {
  query?: Record<string, string>;
  json?: unknown;
  body?: RequestBody;
  contentType?: string;
  /** Deadline of the whole request, answer read included; 0: none. */
  timeoutMs?: number;
  /** The caller's own abort. */
  signal?: AbortSignal;
}

/** One request in flight: its deadline, its answer, and how its failures read. */
class Call {
  private readonly abort = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timedOut = false;
  private res: TransportResponse | undefined;

  constructor(
    readonly method: string,
    readonly url: string,
    private readonly timeoutMs: number,
    private readonly callerSignal?: AbortSignal,
  ) {
    if (callerSignal) {
      if (callerSignal.aborted) this.abort.abort();
      else callerSignal.addEventListener("abort", () => this.abort.abort(), { once: true });
    }
    if (timeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.abort.abort();
      }, timeoutMs);
    }
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get status(): number {
    return this.res?.status ?? 0;
  }

  attach(res: TransportResponse): void {
    this.res = res;
  }

  /** Stops the deadline (the caller reads at its own pace from here). */
  disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The body's chunks, with transport errors turned into ConnectionError or TimeoutError. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    const res = this.res;
    if (!res) throw new ForkdError("no answer to read");
    let finished = false;
    try {
      for await (const chunk of res.body()) yield chunk;
      finished = true;
    } catch (err) {
      throw this.failure(err, true);
    } finally {
      this.disarm();
      if (!finished) res.cancel();
    }
  }

  /** The whole body (at most `limit` bytes kept, the rest dropped). */
  async readAll(limit = Infinity): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of this.chunks()) {
      if (size >= limit) break;
      const c = size + chunk.byteLength > limit ? chunk.subarray(0, limit - size) : chunk;
      parts.push(c);
      size += c.byteLength;
    }
    return concatBytes(parts, size);
  }

  /** The body as exec events; an `error` line is thrown, a stream without `exit` too. */
  async *events(): AsyncGenerator<ExecEvent> {
    const type = this.res?.header("content-type") ?? "";
    if (!type.includes("ndjson")) {
      this.res?.cancel();
      throw new ProtocolError(
        `${this.method} ${this.url}: expected an NDJSON stream, got ${type || "no content type"} ` +
          "(this daemon does not stream exec output)",
      );
    }
    let ended = false;
    for await (const line of ndjson(this.chunks())) {
      if (line === null || typeof line !== "object" || Array.isArray(line)) {
        throw new ProtocolError(`${this.method} ${this.url}: a stream line is not an object`);
      }
      const ev = line as Record<string, unknown>;
      if (ev.type === "error") throw errorFromStreamEvent(ev, this.url, this.method);
      if (ev.type === "start" || ev.type === "stdout" || ev.type === "stderr" || ev.type === "exit") {
        yield ev as ExecEvent;
        if (ev.type === "exit") ended = true;
      }
      // Other types are newer daemons' additions: skipped.
    }
    if (!ended) throw new ConnectionError(this.url, "the stream ended before the command's exit event");
  }

  /** The error to throw for a transport failure (before the answer, or while reading it). */
  failure(err: unknown, answered: boolean): ForkdError {
    if (this.timedOut) {
      return new TimeoutError(
        `${this.method} ${this.url}: no complete answer within ${this.timeoutMs} ms`,
        this.url,
        this.timeoutMs,
        { cause: err },
      );
    }
    if (err instanceof ForkdError) return err;
    if (this.callerSignal?.aborted) return new ConnectionError(this.url, "aborted by the caller", { cause: err });
    const why = describe(err);
    return new ConnectionError(
      this.url,
      answered
        ? `the connection broke while reading the answer (${why})`
        : `${why}; is \`forkd serve\` running there?`,
      { cause: err },
    );
  }
}

function describe(err: unknown): string {
  // fetch says "fetch failed" and keeps the reason (ECONNREFUSED ...) in cause.
  let e: unknown = err;
  const parts: string[] = [];
  for (let depth = 0; e instanceof Error && depth < 4; depth++) {
    if (e.message && e.message !== "fetch failed") parts.push(e.message);
    e = (e as { cause?: unknown }).cause;
  }
  if (parts.length === 0) return String(err);
  return parts.join(": ");
}

function pickTransport(baseUrl: string, socketPath: string | undefined, caFile: string | undefined): Transport {
  const ep: Endpoint = parseEndpoint(baseUrl, socketPath);
  if (ep.socketPath !== undefined) return new NodeTransport(ep);
  if (ep.protocol === "https:" && caFile !== undefined) {
    let ca: Buffer;
    try {
      ca = readFileSync(caFile);
    } catch (err) {
      throw new ForkdError(`caFile ${caFile}: ${(err as Error).message}`);
    }
    return new NodeTransport(ep, ca);
  }
  return new FetchTransport(ep);
}

function seg(s: string): string {
  if (s === "") throw new ForkdError("empty id or name");
  return encodeURIComponent(s);
}

function cmdPath(sandboxId: string, commandId: string): string {
  return `/v1/sandboxes/${seg(sandboxId)}/commands/${seg(commandId)}`;
}

/** The JSON body of an exec. */
export function execBody(command: Command, opts: ExecOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (typeof command === "string") body.shell = command;
  else body.args = [...command];
  if (opts.timeoutSecs !== undefined) body.timeout_secs = opts.timeoutSecs;
  if (opts.env !== undefined) body.env = opts.env;
  if (opts.cwd !== undefined) body.cwd = opts.cwd;
  if (opts.user !== undefined) body.user = String(opts.user);
  if (typeof opts.stdin === "string") body.stdin = opts.stdin;
  else if (opts.stdin !== undefined) body.stdin_b64 = Buffer.from(opts.stdin).toString("base64");
  if (opts.maxOutputBytes !== undefined) body.max_output_bytes = opts.maxOutputBytes;
  return body;
}

function octalMode(mode: number | string): string {
  if (typeof mode === "number") {
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new ForkdError(`mode ${mode} is not 0..0o7777`);
    return mode.toString(8).padStart(4, "0");
  }
  if (!/^[0-7]{1,4}$/.test(mode)) throw new ForkdError(`mode "${mode}" is not octal permission bits (e.g. "755")`);
  return mode;
}

function fileBody(data: FileData): RequestBody {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (isReadableStream(data)) return readableChunks(data);
  if (isAsyncIterable(data)) return bytesOf(data);
  throw new ForkdError("file data must be a string, bytes, a ReadableStream or an async iterable");
}

async function* bytesOf(chunks: AsyncIterable<unknown>): AsyncGenerator<Uint8Array> {
  for await (const c of chunks) yield toBytes(c);
}

function isReadableStream(x: unknown): x is ReadableStream<Uint8Array> {
  return typeof (x as ReadableStream | null)?.getReader === "function";
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return typeof (x as AsyncIterable<unknown> | null)?.[Symbol.asyncIterator] === "function";
}
