// Errors of the SDK. Every error it throws is a ForkdError; daemon answers and transport failures
// are ControllerErrors (forkd's name), subclassed by HTTP status so callers can catch by kind.
import type { CommandResult } from "./commands.js";
import type { Sandbox } from "./sandbox.js";

/** Root of every error this SDK throws. */
export class ForkdError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The daemon answered with an HTTP error (forkd's name). `status` is the HTTP status (for an
 * error reported inside a 200 stream, 200), `code` the daemon's stable error code such as
 * `"not_found"` ("" when it gave none), `detail` its message. Subclassed by status and code:
 *
 *     ControllerError
 *     +-- InvalidRequestError      400
 *     +-- AuthenticationError      401, 403
 *     +-- NotFoundError            404
 *     +-- ConflictError            409
 *     |   +-- NoPythonError        409 no_python
 *     +-- PayloadTooLargeError     413
 *     +-- RateLimitError           429
 *     +-- ServerError              500 and any other 5xx
 *         +-- AgentError           502
 *         +-- UnavailableError     503
 *         +-- SandboxTimeoutError  504, or code agent_timeout / timeout
 */
export class ControllerError extends ForkdError {
  /** HTTP status of the answer. */
  readonly status: number;
  /** The answer's body: parsed JSON when it was JSON, else the text. */
  readonly body: unknown;
  /** The request's URL. */
  readonly url: string;
  /** The request's method, when known. */
  readonly method: string | undefined;
  /** The daemon's error code (`not_found`, `agent_timeout`, ...); "" when it gave none. */
  readonly code: string;
  /** The daemon's error message (its `error` field), or a snippet of the body. */
  readonly detail: string;
  /** From a `Retry-After` header (429 and 503 answers), else null. */
  readonly retryAfterMs: number | null;

  constructor(
    status: number,
    body: unknown,
    url: string,
    opts: { method?: string; retryAfterMs?: number | null } = {},
  ) {
    const detail = errorField(body) ?? bodySnippet(body);
    const code = codeField(body) ?? "";
    const where = opts.method ? `${opts.method} ${url}` : url;
    super(`HTTP ${status}${code ? ` ${code}` : ""}: ${detail} (${where})`);
    this.status = status;
    this.body = body;
    this.url = url;
    this.method = opts.method;
    this.code = code;
    this.detail = detail;
    this.retryAfterMs = opts.retryAfterMs ?? null;
  }
}

/** 400: the daemon refused the request (a bad field, path, tag, user, ...). */
export class InvalidRequestError extends ControllerError {}
/** 401/403: the bearer token is missing or wrong (see FORKD_TOKEN). */
export class AuthenticationError extends ControllerError {}
/** 404: no such sandbox, tag, workspace, command or guest file (`not_found`). */
export class NotFoundError extends ControllerError {}
/** 409: a tag exists, a branch is in flight, a tag has dependents or is not restorable, ... */
export class ConflictError extends ControllerError {}
/** 409 `no_python`: eval in a sandbox whose image has no Python. */
export class NoPythonError extends ConflictError {}
/** 413: a body or file beyond the daemon's caps (`body_too_large`). */
export class PayloadTooLargeError extends ControllerError {}
/** 429: too many execs or commands on one sandbox; retry after `retryAfterMs`. */
export class RateLimitError extends ControllerError {}
/** 5xx: the daemon or something it drives (QEMU, the guest, the disk) failed. */
export class ServerError extends ControllerError {}
/** 502: the guest agent answered with an error or a reply of the wrong shape. */
export class AgentError extends ServerError {}
/** 503: the daemon is busy or at a cap (retry after `retryAfterMs`), or a feature is unavailable on its host. */
export class UnavailableError extends ServerError {}
/** 504, or code `agent_timeout`/`timeout`: the guest agent stopped answering. */
export class SandboxTimeoutError extends ServerError {}

/** The daemon could not be reached (refused, no such socket, TLS, DNS) or cut the connection. */
export class ConnectionError extends ForkdError {
  readonly url: string;
  /** What went wrong underneath (`connect ECONNREFUSED 127.0.0.1:8889`, ...). */
  readonly reason: string;
  constructor(url: string, reason: string, options?: { cause?: unknown }) {
    super(`cannot talk to the forkd daemon at ${url}: ${reason}`, options);
    this.url = url;
    this.reason = reason;
  }
}

/**
 * A deadline of this client passed: no answer within the request's timeout, or a command still
 * running when wait({timeoutMs}) gave up (the command goes on).
 */
export class TimeoutError extends ForkdError {
  readonly url: string | undefined;
  readonly timeoutMs: number | undefined;
  constructor(message: string, url?: string, timeoutMs?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.url = url;
    this.timeoutMs = timeoutMs;
  }
}

/** The daemon answered something this SDK cannot read (not JSON, a malformed stream). */
export class ProtocolError extends ForkdError {}

/** A command ended with a non-zero exit code (or timed out) and `check` was on. */
export class CommandExitError extends ForkdError {
  readonly result: CommandResult;
  constructor(result: CommandResult, what: string) {
    const tail = lastLine(result.stderr) || lastLine(result.stdout);
    const why = result.timedOut
      ? "timed out"
      : result.exitCode === null
        ? `ended without an exit code${result.error ? ` (${result.error})` : ""}`
        : `exited with code ${result.exitCode}`;
    super(`command ${what} ${why}${tail ? `: ${tail}` : ""}`);
    this.result = result;
  }
  get exitCode(): number | null {
    return this.result.exitCode;
  }
  get stdout(): string {
    return this.result.stdout;
  }
  get stderr(): string {
    return this.result.stderr;
  }
  get timedOut(): boolean {
    return this.result.timedOut;
  }
}

/** Python code given to eval raised; `error` is the guest's traceback text. */
export class EvalError extends ForkdError {
  readonly error: string;
  /** What the code printed before it failed. */
  readonly stdout: string;
  constructor(error: string, stdout: string) {
    super(`eval failed: ${lastLine(error) || error}`);
    this.error = error;
    this.stdout = stdout;
  }
}

/**
 * Some children of a fork could not be spawned. `results[i]` is child i: its Sandbox (still
 * running; kill it or use it) or the error that child got.
 */
export class ForkError extends ForkdError {
  readonly results: Array<Sandbox | Error>;
  /** The tag the children were spawned from (the parent's branch). */
  readonly tag: string;
  constructor(tag: string, results: Array<Sandbox | Error>) {
    const failed = results.flatMap((r, i) => (r instanceof Error ? [[i, r] as const] : []));
    const first = failed[0] ? `; child ${failed[0][0]}: ${failed[0][1].message}` : "";
    super(`fork from tag ${tag}: ${failed.length} of ${results.length} children failed${first}`);
    this.tag = tag;
    this.results = results;
  }
  /** The children that are running. */
  get sandboxes(): Sandbox[] {
    return this.results.filter((r): r is Sandbox => !(r instanceof Error));
  }
  /** The failures, by child index. */
  get errors(): Map<number, Error> {
    return new Map(this.results.flatMap((r, i) => (r instanceof Error ? [[i, r] as const] : [])));
  }
}

type ControllerErrorClass = new (
  status: number,
  body: unknown,
  url: string,
  opts?: { method?: string; retryAfterMs?: number | null },
) => ControllerError;

const byStatus: Record<number, ControllerErrorClass> = {
  400: InvalidRequestError,
  401: AuthenticationError,
  403: AuthenticationError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  429: RateLimitError,
  502: AgentError,
  503: UnavailableError,
  504: SandboxTimeoutError,
};

const byCode: Record<string, ControllerErrorClass> = {
  agent_timeout: SandboxTimeoutError,
  timeout: SandboxTimeoutError,
  no_python: NoPythonError,
  agent_error: AgentError,
  agent_protocol: AgentError,
  not_found: NotFoundError,
  unauthorized: AuthenticationError,
  body_too_large: PayloadTooLargeError,
};

// The code is the more precise signal (agent_timeout is a 504, but it is the agent that timed
// out); it never moves an error out of its status's family (a 4xx stays a client error).
function classFor(status: number, code: string): ControllerErrorClass {
  const c = Object.hasOwn(byCode, code) ? byCode[code] : undefined;
  const s = byStatus[status];
  if (c) {
    if (!s || c.prototype instanceof s || c === s) return c;
    if (c.prototype instanceof ServerError && status >= 500) return c;
  }
  if (s) return s;
  return status >= 500 ? ServerError : ControllerError;
}

/** The typed error for an error answer (status >= 400). */
export function errorFromResponse(
  status: number,
  body: unknown,
  url: string,
  opts: { method?: string; retryAfter?: string | null } = {},
): ControllerError {
  const cls = classFor(status, codeField(body) ?? "");
  const secs = opts.retryAfter ? Number(opts.retryAfter) : NaN;
  return new cls(status, body, url, {
    ...(opts.method !== undefined ? { method: opts.method } : {}),
    retryAfterMs: Number.isFinite(secs) && secs >= 0 ? secs * 1000 : null,
  });
}

/** The typed error for a `{"type":"error","error":...,"code":...}` line of a 200 stream. */
export function errorFromStreamEvent(event: Record<string, unknown>, url: string, method?: string): ControllerError {
  const { type: _type, ...body } = event;
  const code = codeField(body) ?? "";
  let cls = classFor(200, code);
  if (cls === ControllerError && code) cls = ServerError;
  return new cls(200, body, url, method !== undefined ? { method } : {});
}

function errorField(body: unknown): string | undefined {
  if (body && typeof body === "object" && "error" in body) {
    const e = (body as { error: unknown }).error;
    if (typeof e === "string") return e;
  }
  return undefined;
}

function codeField(body: unknown): string | undefined {
  if (body && typeof body === "object" && "code" in body) {
    const c = (body as { code: unknown }).code;
    if (typeof c === "string") return c;
  }
  return undefined;
}

function bodySnippet(body: unknown): string {
  const s = typeof body === "string" ? body : JSON.stringify(body);
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

function lastLine(s: string): string {
  const lines = s.trimEnd().split("\n");
  const line = lines[lines.length - 1] ?? "";
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}
