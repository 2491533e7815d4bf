// Sandbox: one running microVM, shaped like E2B's JS SDK (commands, files, kill), plus what
// forking gives: branch (snapshot it into a tag while it runs) and fork (n children of it).
import { Commands } from "./commands.js";
import { Controller, type ControllerOptions, type SpawnOptions } from "./controller.js";
import { EvalError, ForkdError, ForkError, NotFoundError } from "./errors.js";
import { Files } from "./files.js";
import type { BranchMode, PortInfo, SandboxInfo as WireSandboxInfo, SnapshotInfo } from "./types.js";
import { camelize, mapLimit } from "./util.js";

/** Children spawned at once by fork(). */
export const kForkConcurrency = 8;

export interface SandboxOptions extends ControllerOptions {
  /** Use this controller (its URL, token and connections) instead of making one. */
  controller?: Controller;
}

/** Spawn options of Sandbox.create (forkd's spawn fields, camelCase). */
export type SandboxCreateOptions = SandboxOptions & Omit<SpawnOptions, "snapshotTag" | "n">;

/** A sandbox as the daemon describes it (SandboxInfo, camelCase). */
export interface SandboxDetails {
  sandboxId: string;
  snapshotTag: string | null;
  state?: string;
  /** Why it failed ("oom") or stopped answering. */
  reason?: string;
  unresponsiveReason?: string;
  startedAt: Date;
  createdAtUnix: number;
  pid: number | null;
  /** Guest RAM, MiB. */
  memoryMib?: number;
  /** Limit of its QEMU process, MiB (null: none). */
  memoryLimitMib: number | null;
  network?: string;
  ports?: PortInfo[];
  netns: string | null;
  [key: string]: unknown;
}

/** A snapshot tag made by branch (SnapshotInfo, camelCase). */
export interface BranchInfo {
  tag: string;
  dir: string;
  createdAtUnix: number;
  branchedFrom?: string | null;
  /** The mode used (a tag saved before RAM padding is always branched "full" under TCG). */
  mode?: BranchMode;
  pauseMs?: number | null;
  /** "writing" until a wait:false branch is written. */
  status?: "writing" | "ready" | "failed";
  bootable?: boolean;
  timingsMs?: { pause?: number; switchover?: number; resume?: number; copy?: number; total?: number };
  memoryStoredBytes?: number;
  [key: string]: unknown;
}

export interface PingInfo {
  pong: boolean;
  pid?: number;
  numpyVersion?: string;
  /** "python" with the warm Python worker, else "sh". */
  agentLang?: string;
  warmupReady?: boolean;
  [key: string]: unknown;
}

export interface BranchRequest {
  /** The new tag; the daemon makes one up when absent. */
  tag?: string;
  /** "live" (default: the source stops only for the last dirty pages) or "full". */
  mode?: BranchMode;
  /** false: resolve once the source runs again, before the tag is written. Default true. */
  wait?: boolean;
  timeoutMs?: number;
}

export class Sandbox {
  readonly sandboxId: string;
  readonly controller: Controller;
  readonly commands: Commands;
  readonly files: Files;
  /** The tag it was spawned from. */
  readonly snapshotTag: string | null;
  private killed = false;

  /** Wraps a sandbox the daemon already runs (see create, connect). */
  constructor(controller: Controller, info: WireSandboxInfo | { id: string; snapshot_tag?: string | null }) {
    this.controller = controller;
    this.sandboxId = info.id;
    this.snapshotTag = info.snapshot_tag ?? null;
    this.commands = new Commands(controller, info.id);
    this.files = new Files(controller, info.id);
  }

  /** Spawns a sandbox from a tag (resolves once its agent answers). */
  static async create(tag: string, opts?: SandboxCreateOptions): Promise<Sandbox>;
  static async create(opts: SandboxCreateOptions & { snapshotTag: string }): Promise<Sandbox>;
  static async create(
    tagOrOpts: string | (SandboxCreateOptions & { snapshotTag: string }),
    maybeOpts: SandboxCreateOptions = {},
  ): Promise<Sandbox> {
    const { snapshotTag, ...opts } =
      typeof tagOrOpts === "string" ? { ...maybeOpts, snapshotTag: tagOrOpts } : tagOrOpts;
    const { controller, baseUrl, token, timeoutMs, caFile, socketPath, transport, ...spawn } = opts;
    const ctrl = controller ?? new Controller({ baseUrl, token, timeoutMs, caFile, socketPath, transport });
    const [info] = await ctrl.spawnSandboxes({ ...spawn, snapshotTag, n: 1 });
    if (!info) throw new ForkdError(`spawn from ${snapshotTag} answered no sandbox`);
    return new Sandbox(ctrl, info);
  }

  /** A sandbox that runs already, by id (rejects with NotFoundError when there is none). */
  static async connect(sandboxId: string, opts: SandboxOptions = {}): Promise<Sandbox> {
    const ctrl = controllerOf(opts);
    return new Sandbox(ctrl, await ctrl.getSandbox(sandboxId));
  }

  /** Every sandbox the daemon runs. */
  static async list(opts: SandboxOptions = {}): Promise<SandboxDetails[]> {
    return (await controllerOf(opts).listSandboxes()).map(details);
  }

  /** Spawns a sandbox, runs fn with it, and kills it however fn ends. */
  static async with<T>(tag: string, fn: (sb: Sandbox) => Promise<T>, opts: SandboxCreateOptions = {}): Promise<T> {
    const sb = await Sandbox.create(tag, opts);
    try {
      return await fn(sb);
    } finally {
      await sb.close();
    }
  }

  /** What the daemon says of it now. */
  async getInfo(): Promise<SandboxDetails> {
    return details(await this.controller.getSandbox(this.sandboxId));
  }

  /** True while the daemon lists it as running. */
  async isRunning(): Promise<boolean> {
    try {
      return (await this.controller.getSandbox(this.sandboxId)).state !== "exited";
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }

  /**
   * Evaluates Python in the sandbox's warm worker (python images): resolves to the repr of the
   * last expression, null for statements; rejects with EvalError when the code raised.
   */
  async eval(code: string): Promise<string | null> {
    const r = await this.controller.evalCode(this.sandboxId, code);
    if (r.error !== null && r.error !== undefined) throw new EvalError(r.error, r.stdout ?? "");
    return r.result ?? null;
  }

  /** Round trip to the guest agent. */
  async ping(): Promise<PingInfo> {
    return camelize(await this.controller.pingSandbox(this.sandboxId));
  }

  /** Snapshots this sandbox into a tag while it keeps running; spawn from the tag for copies. */
  async branch(opts: BranchRequest = {}): Promise<BranchInfo> {
    const info: SnapshotInfo = await this.controller.branchSandbox(this.sandboxId, {
      mode: opts.mode ?? "live",
      ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
      ...(opts.wait !== undefined ? { wait: opts.wait } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    return camelize(info);
  }

  /**
   * n copies of this sandbox as it is now: branches it into a tag, then spawns n children from
   * the tag (one request per child, at most 8 at once). When some fail, rejects with ForkError,
   * whose `results` hold each child's Sandbox (running) or error. The tag stays (delete it with
   * controller.deleteSnapshot once the children are gone).
   */
  async fork(n: number, opts: { mode?: BranchMode; tag?: string } = {}): Promise<Sandbox[]> {
    if (!Number.isInteger(n) || n < 1) throw new ForkdError(`fork: n must be a positive integer, got ${n}`);
    const branch = await this.branch({
      ...(opts.mode !== undefined ? { mode: opts.mode } : {}),
      ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
    });
    const settled = await mapLimit(
      Array.from({ length: n }, (_, i) => i),
      kForkConcurrency,
      async () => {
        const [info] = await this.controller.spawnSandboxes({ snapshotTag: branch.tag, n: 1 });
        if (!info) throw new ForkdError(`spawn from ${branch.tag} answered no sandbox`);
        return new Sandbox(this.controller, info);
      },
    );
    const results = settled.map((s) =>
      s.status === "fulfilled" ? s.value : s.reason instanceof Error ? s.reason : new ForkdError(String(s.reason)),
    );
    if (results.some((r) => r instanceof Error)) throw new ForkError(branch.tag, results);
    return results as Sandbox[];
  }

  /** Removes the sandbox: true when it was removed, false when it was gone already. */
  async kill(): Promise<boolean> {
    try {
      await this.controller.killSandbox(this.sandboxId);
      this.killed = true;
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) {
        this.killed = true;
        return false;
      }
      throw err;
    }
  }

  /** Kills the sandbox unless this object did already (for finally blocks). */
  async close(): Promise<void> {
    if (!this.killed) await this.kill();
  }

  /** `await using sb = await Sandbox.create(...)` kills it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function controllerOf(opts: SandboxOptions): Controller {
  const { controller, ...rest } = opts;
  return controller ?? new Controller(rest);
}

function details(info: WireSandboxInfo): SandboxDetails {
  const d = camelize<SandboxDetails & { id: string }>(info);
  return { ...d, sandboxId: info.id, startedAt: new Date(info.created_at_unix * 1000) };
}
