// The daemon the live tests run against, from tests/sdk/with-daemon.sh's environment. Without it
// the live tests fail (never pass silently).
import { Controller, Sandbox } from "forkd";

export interface LiveEnv {
  url: string;
  token: string;
  socket: string;
  tag: string;
  pyTag: string;
}

export function liveEnv(): LiveEnv {
  const need = ["FORKD_URL", "FORKD_TOKEN", "FORKD_TEST_SOCKET", "FORKD_TEST_TAG", "FORKD_TEST_PY_TAG"];
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length > 0) {
    throw new Error(
      `live tests need a running daemon, but ${missing.join(", ")} ${missing.length > 1 ? "are" : "is"} unset. ` +
        "Run from the repo root: tests/sdk/with-daemon.sh build/forkd -- bash sdk/typescript/run-tests.sh " +
        "(or `npm run test:unit` for the tests that need no daemon).",
    );
  }
  const e = process.env as Record<string, string>;
  return {
    url: e.FORKD_URL as string,
    token: e.FORKD_TOKEN as string,
    socket: e.FORKD_TEST_SOCKET as string,
    tag: e.FORKD_TEST_TAG as string,
    pyTag: e.FORKD_TEST_PY_TAG as string,
  };
}

/** Kills each sandbox, ignoring ones already gone; reports other failures after trying all. */
export async function killAll(sandboxes: Array<Sandbox | undefined | null>): Promise<void> {
  const results = await Promise.allSettled(sandboxes.map((s) => s?.close()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/** Deletes a tag if it exists. */
export async function dropTag(ctrl: Controller, tag: string | undefined): Promise<void> {
  if (!tag) return;
  try {
    await ctrl.deleteSnapshot(tag, { cascade: true });
  } catch (err) {
    if ((err as { status?: number }).status !== 404) throw err;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
