/**
 * forkd: TypeScript client for the forkd daemon (microVM sandboxes that fork copy-on-write from
 * snapshot tags).
 *
 * ```ts
 * import { Sandbox } from "forkd";
 * const sb = await Sandbox.create("my-tag");
 * try {
 *   const r = await sb.commands.run("echo hello");
 *   console.log(r.stdout);
 * } finally {
 *   await sb.kill();
 * }
 * ```
 *
 * {@link Sandbox} is the E2B-shaped API; {@link Controller} has one method per REST route.
 */
export {
  Controller,
  type BranchOptions,
  type Command,
  type ControllerOptions,
  type CreateSnapshotOptions,
  type ExecOptions,
  type FileData,
  type SpawnOptions,
} from "./controller.js";
export {
  Sandbox,
  type BranchInfo,
  type BranchRequest,
  type PingInfo,
  type SandboxCreateOptions,
  type SandboxDetails,
  type SandboxOptions,
} from "./sandbox.js";
export {
  CommandHandle,
  Commands,
  type CommandInfo,
  type CommandResult,
  type OutputCallback,
  type RunOptions,
  type WaitOptions,
} from "./commands.js";
export { Files, type EntryInfo, type EntryList, type ReadFormat, type ReadOptions, type WriteInfo } from "./files.js";
export {
  AgentError,
  AuthenticationError,
  CommandExitError,
  ConflictError,
  ConnectionError,
  ConnectionError as ForkdConnectionError,
  ControllerError,
  EvalError,
  ForkdError,
  ForkError,
  InvalidRequestError,
  NoPythonError,
  NotFoundError,
  PayloadTooLargeError,
  ProtocolError,
  RateLimitError,
  SandboxTimeoutError,
  ServerError,
  TimeoutError,
  TimeoutError as ClientTimeoutError,
  UnavailableError,
} from "./errors.js";
export type { Transport, TransportRequest, TransportResponse, RequestBody } from "./transport.js";
export type * as wire from "./types.js";
