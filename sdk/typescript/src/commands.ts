// sandbox.commands: run commands (to their end, streamed to callbacks, or in the background).
import type { Command, Controller, ExecOptions } from "./controller.js";
import { CommandExitError, ProtocolError, TimeoutError } from "./errors.js";
import type { CommandInfo as WireCommandInfo, CommandOutput, ExecEvent, ExecResult, Signal } from "./types.js";
import { camelize } from "./util.js";

/** Default timeout of a foreground command (E2B's). */
export const kDefaultCommandTimeoutMs = 60_000;
/** Longest single wait the daemon accepts, seconds. */
const kMaxWaitSecs = 3600;

/** Gets each piece of output as it arrives; a returned promise is awaited before the next. */
export type OutputCallback = (data: string) => unknown;

/** What a command did. */
export interface CommandResult {
  stdout: string;
  stderr: string;
  /** null when the command did not end normally (its agent failed). */
  exitCode: number | null;
  timedOut: boolean;
  durationMs: number;
  /** Bytes the command wrote, kept or not. */
  stdoutBytes: number;
  stderrBytes: number;
  /** Output beyond the kept cap was dropped. */
  truncated: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Streamed and background commands: output dropped while the reader lagged. */
  droppedBytes: number;
  /** Streamed and background commands: the daemon's id. */
  commandId: string | null;
  /** Background commands: a kill was sent. */
  killed: boolean;
  /** Background commands: why it failed (its agent), else null. */
  error: string | null;
}

/** A background command as the daemon lists it. */
export interface CommandInfo {
  commandId: string;
  sandboxId: string;
  args?: string[] | null;
  shell?: string | null;
  status: "running" | "exited" | "failed";
  exitCode: number | null;
  timedOut: boolean;
  killed: boolean;
  error: string | null;
  startedAtUnix: number;
  durationMs: number;
  stdoutBytes: number;
  stderrBytes: number;
  droppedBytes: number;
}

export interface RunOptions {
  /** Called with each piece of stdout as it arrives (switches to the streaming exec). */
  onStdout?: OutputCallback;
  /** Called with each piece of stderr as it arrives (switches to the streaming exec). */
  onStderr?: OutputCallback;
  /** Environment variables added to the agent's (E2B's name). */
  envs?: Record<string, string>;
  /** Same as envs; both may be given (envs wins on a clash). */
  env?: Record<string, string>;
  /** Absolute working directory. */
  cwd?: string;
  /** A user of the guest's /etc/passwd ("root") or a numeric uid. */
  user?: string | number;
  /**
   * Milliseconds before the command is killed. Foreground default 60 000; background default
   * none. 0: the daemon's default (300 s in the foreground, none in the background).
   */
  timeoutMs?: number;
  /** Start it and return a CommandHandle at once. */
  background?: boolean;
  /** Standard input, closed after it (a string is sent as UTF-8). */
  stdin?: string | Uint8Array;
  /** Reject with CommandExitError on a non-zero exit or a timeout (default true). */
  check?: boolean;
  /** Bytes kept of stdout and of stderr, each (the daemon's default otherwise). */
  maxOutputBytes?: number;
}

export interface WaitOptions {
  onStdout?: OutputCallback;
  onStderr?: OutputCallback;
  /** Give up waiting (TimeoutError; the command goes on) after this many ms. Default: no limit. */
  timeoutMs?: number;
}

export class Commands {
  constructor(
    private readonly controller: Controller,
    readonly sandboxId: string,
  ) {}

  /**
   * Runs a command: a string under `/bin/sh -c`, an array as argv. Resolves to its result once it
   * ended (rejecting with CommandExitError on a non-zero exit unless `check: false`); with
   * `background: true` resolves at once to a CommandHandle.
   */
  run(cmd: Command, opts: RunOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: Command, opts?: RunOptions & { background?: false }): Promise<CommandResult>;
  run(cmd: Command, opts?: RunOptions): Promise<CommandResult | CommandHandle>;
  async run(cmd: Command, opts: RunOptions = {}): Promise<CommandResult | CommandHandle> {
    const check = opts.check ?? true;
    const exec = execOptions(opts);
    const what = describeCommand(cmd);
    if (opts.background) {
      const info = await this.controller.startCommand(this.sandboxId, cmd, exec);
      const handle = new CommandHandle(this.controller, this.sandboxId, info.command_id, { check, what });
      if (opts.onStdout || opts.onStderr) handle.follow(opts.onStdout, opts.onStderr);
      return handle;
    }
    let result: CommandResult;
    if (opts.onStdout || opts.onStderr) {
      const events = this.controller.execStream(this.sandboxId, cmd, exec);
      result = await collect(events, opts.onStdout, opts.onStderr);
    } else {
      result = fromExec(await this.controller.execCommand(this.sandboxId, cmd, exec));
    }
    if (check) throwIfFailed(result, what);
    return result;
  }

  /** The sandbox's background commands (running and finished). */
  async list(): Promise<CommandInfo[]> {
    return camelize(await this.controller.listCommands(this.sandboxId));
  }

  /** A handle on a background command; with callbacks, its output (all kept so far, then live) is followed. */
  async connect(
    commandId: string,
    opts: { onStdout?: OutputCallback; onStderr?: OutputCallback; check?: boolean } = {},
  ): Promise<CommandHandle> {
    const info = await this.controller.getCommand(this.sandboxId, commandId);
    const handle = new CommandHandle(this.controller, this.sandboxId, commandId, {
      check: opts.check ?? true,
      what: describeCommand(info.shell ?? info.args ?? commandId),
    });
    if (opts.onStdout || opts.onStderr) handle.follow(opts.onStdout, opts.onStderr);
    return handle;
  }

  /** Signals a background command (default KILL): true when sent, false when it had ended. */
  async kill(commandId: string, signal?: Signal): Promise<boolean> {
    return (await this.controller.killCommand(this.sandboxId, commandId, signal)).killed === true;
  }

  /** Forgets a background command (killed first if it runs); a sandbox keeps at most 16. */
  async delete(commandId: string): Promise<void> {
    await this.controller.deleteCommand(this.sandboxId, commandId);
  }
}

/** A background command. */
export class CommandHandle {
  private following: Promise<CommandResult> | undefined;
  private stopFollowing = new AbortController();
  private stdoutSoFar = "";
  private stderrSoFar = "";

  constructor(
    private readonly controller: Controller,
    readonly sandboxId: string,
    readonly commandId: string,
    private readonly opts: { check: boolean; what: string },
  ) {}

  /** E2B's name for the command's identity: here its commandId. */
  get pid(): string {
    return this.commandId;
  }

  /** Output the followed stream delivered so far (with callbacks given to run or connect). */
  get stdout(): string {
    return this.stdoutSoFar;
  }

  get stderr(): string {
    return this.stderrSoFar;
  }

  /** Streams the command's output to the callbacks in the background, until it ends. */
  follow(onStdout?: OutputCallback, onStderr?: OutputCallback): void {
    if (this.following) return;
    if (this.stopFollowing.signal.aborted) this.stopFollowing = new AbortController();
    // The stream starts over with everything kept so far.
    this.stdoutSoFar = "";
    this.stderrSoFar = "";
    const events = this.controller.streamCommand(this.sandboxId, this.commandId, {
      signal: this.stopFollowing.signal,
    });
    const out: OutputCallback = (d) => {
      this.stdoutSoFar += d;
      return onStdout?.(d);
    };
    const err: OutputCallback = (d) => {
      this.stderrSoFar += d;
      return onStderr?.(d);
    };
    this.following = collect(events, out, err, this.commandId);
    // Nobody may ever wait: a failure is reported by wait(), never as an unhandled rejection.
    this.following.catch(() => {});
  }

  /** Stops following the output (the command goes on; wait() then polls the daemon). */
  disconnect(): void {
    this.stopFollowing.abort();
    this.following = undefined;
  }

  /**
   * Waits for the command's end and resolves to its result (rejecting with CommandExitError on a
   * non-zero exit when check is on). Callbacks get all its output kept so far, then live output.
   */
  async wait(opts: WaitOptions & { check?: boolean } = {}): Promise<CommandResult> {
    let result: CommandResult;
    if (!this.following && (opts.onStdout || opts.onStderr)) {
      const events = this.controller.streamCommand(this.sandboxId, this.commandId, {
        timeoutMs: opts.timeoutMs ?? 0,
      });
      result = await collect(events, opts.onStdout, opts.onStderr, this.commandId);
    } else if (this.following) {
      result = await withDeadline(this.following, opts.timeoutMs, () => this.waitTimeout(opts.timeoutMs));
    } else {
      result = await this.poll(opts.timeoutMs);
    }
    if (opts.check ?? this.opts.check) throwIfFailed(result, this.opts.what);
    return result;
  }

  /** Its output as it arrives, `[kind, data]` (what was kept so far first), until it ends. */
  async *stream(): AsyncGenerator<["stdout" | "stderr", string]> {
    for await (const ev of this.controller.streamCommand(this.sandboxId, this.commandId)) {
      if (ev.type === "stdout" || ev.type === "stderr") yield [ev.type, ev.data];
    }
  }

  /** Signals the command (default KILL): true when sent, false when it had ended. */
  async kill(signal?: Signal): Promise<boolean> {
    return (await this.controller.killCommand(this.sandboxId, this.commandId, signal)).killed === true;
  }

  async isRunning(): Promise<boolean> {
    return (await this.info()).status === "running";
  }

  /** Everything kept of its output so far, and its state. */
  async output(): Promise<CommandResult & { status: CommandInfo["status"] }> {
    const out = await this.controller.commandOutput(this.sandboxId, this.commandId);
    return { ...fromOutput(out), status: out.status };
  }

  async info(): Promise<CommandInfo> {
    return camelize(await this.controller.getCommand(this.sandboxId, this.commandId));
  }

  /** Forgets the command on the daemon (killed first if it runs). */
  async delete(): Promise<void> {
    this.disconnect();
    await this.controller.deleteCommand(this.sandboxId, this.commandId);
  }

  private async poll(timeoutMs: number | undefined): Promise<CommandResult> {
    const deadline = timeoutMs !== undefined && timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    for (;;) {
      const left = deadline - Date.now();
      const secs = Math.min(kMaxWaitSecs, Math.max(1, Math.ceil(left / 1000)));
      const out = await this.controller.waitCommand(this.sandboxId, this.commandId, { timeoutSecs: secs });
      if (out.status !== "running") {
        // A failed command (its agent failed) has no exit code: check reports it.
        return fromOutput(out);
      }
      if (Date.now() >= deadline) throw this.waitTimeout(timeoutMs);
    }
  }

  private waitTimeout(timeoutMs: number | undefined): TimeoutError {
    return new TimeoutError(`command ${this.commandId} still running after ${timeoutMs} ms (it goes on)`, this.url(), timeoutMs);
  }

  private url(): string {
    return `${this.controller.url}/v1/sandboxes/${this.sandboxId}/commands/${this.commandId}`;
  }
}

/** Runs the events of a streamed exec to their end, feeding the callbacks. */
async function collect(
  events: AsyncIterable<ExecEvent>,
  onStdout: OutputCallback | undefined,
  onStderr: OutputCallback | undefined,
  commandId: string | null = null,
): Promise<CommandResult> {
  let stdout = "";
  let stderr = "";
  let id = commandId;
  for await (const ev of events) {
    switch (ev.type) {
      case "start":
        id = ev.command_id;
        break;
      case "stdout":
        stdout += ev.data;
        if (onStdout) await onStdout(ev.data);
        break;
      case "stderr":
        stderr += ev.data;
        if (onStderr) await onStderr(ev.data);
        break;
      case "exit":
        return {
          stdout,
          stderr,
          exitCode: ev.exit_code,
          timedOut: ev.timed_out,
          durationMs: ev.duration_ms,
          stdoutBytes: ev.stdout_bytes,
          stderrBytes: ev.stderr_bytes,
          truncated: ev.dropped_bytes > 0,
          stdoutTruncated: false,
          stderrTruncated: false,
          droppedBytes: ev.dropped_bytes,
          commandId: id,
          killed: false,
          error: null,
        };
    }
  }
  // Controller.execStream throws when the stream ends without exit; this is for other sources.
  throw new ProtocolError("the command's stream ended without its exit event");
}

function fromExec(r: ExecResult): CommandResult {
  return {
    stdout: r.stdout,
    stderr: r.stderr,
    exitCode: r.exit_code,
    timedOut: r.timed_out ?? false,
    durationMs: r.duration_ms ?? 0,
    stdoutBytes: r.stdout_bytes ?? byteLength(r.stdout),
    stderrBytes: r.stderr_bytes ?? byteLength(r.stderr),
    truncated: r.truncated ?? false,
    stdoutTruncated: r.stdout_truncated ?? false,
    stderrTruncated: r.stderr_truncated ?? false,
    droppedBytes: 0,
    commandId: null,
    killed: false,
    error: null,
  };
}

function fromOutput(o: CommandOutput | (WireCommandInfo & { stdout: string; stderr: string })): CommandResult {
  return {
    stdout: o.stdout,
    stderr: o.stderr,
    exitCode: o.exit_code,
    timedOut: o.timed_out,
    durationMs: o.duration_ms,
    stdoutBytes: o.stdout_bytes,
    stderrBytes: o.stderr_bytes,
    truncated: o.dropped_bytes > 0,
    stdoutTruncated: false,
    stderrTruncated: false,
    droppedBytes: o.dropped_bytes,
    commandId: o.command_id,
    killed: o.killed,
    error: o.error,
  };
}

function execOptions(opts: RunOptions): ExecOptions {
  const exec: ExecOptions = {};
  const timeoutMs = opts.timeoutMs ?? (opts.background ? 0 : kDefaultCommandTimeoutMs);
  if (!(timeoutMs >= 0)) throw new TypeError(`timeoutMs must be >= 0, got ${opts.timeoutMs}`);
  if (timeoutMs > 0) exec.timeoutSecs = timeoutMs / 1000;
  if (opts.env || opts.envs) exec.env = { ...opts.env, ...opts.envs };
  if (opts.cwd !== undefined) exec.cwd = opts.cwd;
  if (opts.user !== undefined) exec.user = opts.user;
  if (opts.stdin !== undefined) exec.stdin = opts.stdin;
  if (opts.maxOutputBytes !== undefined) exec.maxOutputBytes = opts.maxOutputBytes;
  return exec;
}

function throwIfFailed(result: CommandResult, what: string): void {
  if (result.timedOut || result.exitCode !== 0) throw new CommandExitError(result, what);
}

function describeCommand(cmd: Command): string {
  const s = typeof cmd === "string" ? cmd : cmd.join(" ");
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);
}

function byteLength(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

async function withDeadline<T>(p: Promise<T>, timeoutMs: number | undefined, onTimeout: () => Error): Promise<T> {
  if (timeoutMs === undefined || timeoutMs <= 0) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), timeoutMs);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}
