// A stand-in daemon for unit tests: a node:http server on 127.0.0.1 and on a unix socket,
// answering through a handler and recording every request.
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Recorded {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Chunks the body arrived in (a streamed upload comes in several). */
  chunks: number;
  json(): unknown;
}

export type Handler = (req: Recorded, res: http.ServerResponse) => void | Promise<void>;

export interface FakeDaemon {
  /** http://127.0.0.1:port */
  url: string;
  socketPath: string;
  requests: Recorded[];
  close(): Promise<void>;
}

export async function startFakeDaemon(handler: Handler): Promise<FakeDaemon> {
  const requests: Recorded[] = [];
  const serve = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      const u = new URL(req.url ?? "/", "http://x");
      const body = Buffer.concat(parts);
      const rec: Recorded = {
        method: req.method ?? "",
        path: u.pathname,
        query: u.searchParams,
        headers: req.headers,
        body,
        chunks: parts.length,
        json: () => JSON.parse(body.toString("utf8")),
      };
      requests.push(rec);
      Promise.resolve(handler(rec, res)).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: String(err), code: "internal" });
        else res.destroy();
      });
    });
  };
  const tcp = http.createServer(serve);
  const unix = http.createServer(serve);
  const dir = mkdtempSync(join(tmpdir(), "forkd-ts-fake-"));
  const socketPath = join(dir, "d.sock");
  await new Promise<void>((r) => tcp.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => unix.listen(socketPath, r));
  const port = (tcp.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    socketPath,
    requests,
    close: async () => {
      tcp.closeAllConnections();
      unix.closeAllConnections();
      await Promise.all([new Promise((r) => tcp.close(r)), new Promise((r) => unix.close(r))]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A sandbox's info as the daemon answers it. */
export function sandboxInfo(id: string, tag = "t"): Record<string, unknown> {
  return {
    id,
    snapshot_tag: tag,
    netns: null,
    guest_addr: `/x/${id}/agent.sock`,
    created_at_unix: 1700000000,
    pid: 42,
    memory_limit_mib: null,
    state: "running",
  };
}
