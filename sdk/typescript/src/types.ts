// The daemon's JSON, field for field (snake_case, as docs/API.md and forkd's v1 contract name
// them). Controller methods return these; the Sandbox layer turns them into camelCase objects.
// Fields a daemon may omit (older versions, or only some states) are optional.

export interface SnapshotInfo {
  tag: string;
  dir: string;
  created_at_unix: number;
  /** The source sandbox of a branch; `compact:<tag>` for a compacted tag. */
  branched_from?: string | null;
  pause_ms?: number | null;
  status?: "writing" | "ready" | "failed";
  bootable?: boolean;
  warning?: string | null;
  image?: string | null;
  memory_mib?: number | null;
  network?: "none" | "outbound" | null;
  parent_tag?: string | null;
  /** Branch answers: the mode used, and (wait:true) timings and bytes stored. */
  mode?: "full" | "live" | "diff";
  timings_ms?: { pause?: number; switchover?: number; resume?: number; copy?: number; total?: number };
  memory_stored_bytes?: number;
  [key: string]: unknown;
}

export interface SnapshotInfoDetail extends SnapshotInfo {
  memory_logical_bytes?: number;
  memory_physical_bytes?: number;
  vmstate_bytes?: number;
  parent_content_hash?: string | null;
  content_hash?: string | null;
  chain_depth?: number;
  ancestors?: string[];
  dependents?: string[];
  chain_warning?: string | null;
  assembled_bytes?: number | null;
}

export interface PortInfo {
  guest: number;
  host: number;
  address: string;
}

export interface SandboxInfo {
  id: string;
  snapshot_tag: string | null;
  netns: string | null;
  guest_addr: string;
  created_at_unix: number;
  pid: number | null;
  memory_limit_mib: number | null;
  state?: "running" | "unresponsive" | "exited" | "failed" | string;
  reason?: string;
  unresponsive_reason?: string;
  memory_mib?: number;
  uid?: number;
  jailed?: boolean;
  limits?: { memory_mib: number | null; cpus: number | null; pids: number | null };
  network?: "none" | "outbound" | string;
  ports?: PortInfo[];
  netns_network?: { address: string; host_address: string; allow_list: string[] } | null;
  [key: string]: unknown;
}

export interface WorkspaceInfo {
  id: string;
  name: string;
  source_snapshot_tag: string;
  current_state_tag: string | null;
  sandbox_id: string | null;
  status: "running" | "suspended" | "stale" | string;
  created_at_unix: number;
  updated_at_unix: number;
  memory_limit_mib?: number | null;
  per_child_netns?: boolean;
  [key: string]: unknown;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  timed_out?: boolean;
  duration_ms?: number;
  truncated?: boolean;
  stdout_truncated?: boolean;
  stderr_truncated?: boolean;
  stdout_bytes?: number;
  stderr_bytes?: number;
}

export interface EvalResult {
  /** repr() of the last expression's value; null for statements. */
  result: string | null;
  /** The traceback when the code raised; null otherwise. */
  error: string | null;
  exit_code: number;
  /** What the code printed. */
  stdout?: string;
}

export interface PingResult {
  pong: boolean;
  pid?: number;
  numpy_version?: string;
  agent_lang?: "python" | "sh" | string;
  warmup_ready?: boolean;
  [key: string]: unknown;
}

export interface VersionInfo {
  version: string;
  api: string;
  boundary?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface CommandInfo {
  command_id: string;
  sandbox_id: string;
  args?: string[] | null;
  shell?: string | null;
  status: "running" | "exited" | "failed";
  exit_code: number | null;
  timed_out: boolean;
  killed: boolean;
  error: string | null;
  started_at_unix: number;
  duration_ms: number;
  stdout_bytes: number;
  stderr_bytes: number;
  dropped_bytes: number;
  [key: string]: unknown;
}

/** CommandInfo with the output kept so far (output, wait). */
export interface CommandOutput extends CommandInfo {
  stdout: string;
  stderr: string;
}

/** One line of a streamed exec or a command's stream. */
export type ExecEvent =
  | { type: "start"; command_id: string }
  | { type: "stdout"; data: string }
  | { type: "stderr"; data: string }
  | {
      type: "exit";
      exit_code: number;
      timed_out: boolean;
      duration_ms: number;
      stdout_bytes: number;
      stderr_bytes: number;
      dropped_bytes: number;
    };

export type FileType = "file" | "dir" | "symlink" | "other";

export interface FileStat {
  path: string;
  type: FileType;
  size: number;
  /** Permission bits as an integer (0o644 is 420). */
  mode: number;
  /** Modification time, unix seconds. */
  mtime: number;
}

export interface FileEntry extends FileStat {
  name: string;
}

export interface FileList {
  path: string;
  entries: FileEntry[];
  /** More than 8192 entries: the list stops there. */
  truncated: boolean;
}

export interface WriteResult {
  path: string;
  size: number;
}

export type BranchMode = "full" | "live" | "diff";
/** Signals of a background command (the daemon also takes QUIT, USR1, USR2). */
export type Signal = "KILL" | "TERM" | "INT" | "HUP" | "QUIT" | "USR1" | "USR2";
