// How requests reach the daemon. Node's global fetch serves plain http/https with the default CA
// store; it cannot dial a unix socket or trust a custom CA without the undici package (a runtime
// dependency this SDK does not take), so those go through node:http / node:https instead. Both sit
// behind Transport, which streams request bodies out and response bodies in.
import * as http from "node:http";
import * as https from "node:https";
import { once } from "node:events";

import { ForkdError } from "./errors.js";

/** Bytes to send: whole, or streamed chunk by chunk (sent with chunked transfer encoding). */
export type RequestBody = Uint8Array | AsyncIterable<Uint8Array>;

export interface TransportRequest {
  method: string;
  /** Path and query below the base URL, starting with "/". */
  path: string;
  headers: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
}

export interface TransportResponse {
  status: number;
  /** A response header (case-insensitive name), or null. */
  header(name: string): string | null;
  /** The body as it arrives. Read it once; a cut connection throws while iterating. */
  body(): AsyncIterable<Uint8Array>;
  /** Drops the rest of the body and releases the connection. Safe to call more than once. */
  cancel(): void;
}

export interface Transport {
  /** The base URL, for messages (`unix:///run/forkd.sock` for a socket). */
  readonly displayUrl: string;
  request(req: TransportRequest): Promise<TransportResponse>;
  /** Releases pooled connections. */
  close(): void;
}

/** Where the daemon is, from a base URL and an optional socket path. */
export interface Endpoint {
  protocol: "http:" | "https:";
  /** host:port of the URL ("localhost" for a unix socket). */
  host: string;
  hostname: string;
  port: number;
  /** Path prefix of the base URL without a trailing slash ("" usually). */
  basePath: string;
  /** Absolute path of the daemon's unix socket, when it listens on one. */
  socketPath?: string;
  displayUrl: string;
}

/**
 * Parses a base URL: `http://host:port[/prefix]`, `https://...`, `unix:///abs/path.sock` or
 * `http+unix://%2Fabs%2Fpath.sock`. An explicit `socketPath` makes an http URL go to that socket
 * (its host only names the Host header).
 */
export function parseEndpoint(baseUrl: string, socketPath?: string): Endpoint {
  const raw = baseUrl.trim();
  let sock = socketPath;
  let url: URL;
  if (/^unix:/i.test(raw)) {
    const p = raw.replace(/^unix:(\/\/)?/i, "");
    if (!p.startsWith("/")) {
      throw new ForkdError(`baseUrl ${raw}: a unix socket URL needs an absolute path (unix:///run/forkd.sock)`);
    }
    sock = decodeURIComponent(p);
    url = new URL("http://localhost");
  } else if (/^http\+unix:\/\//i.test(raw)) {
    const rest = raw.slice("http+unix://".length);
    const slash = rest.indexOf("/");
    const enc = slash < 0 ? rest : rest.slice(0, slash);
    sock = decodeURIComponent(enc);
    if (!sock.startsWith("/")) {
      throw new ForkdError(`baseUrl ${raw}: the socket path must be absolute (http+unix://%2Frun%2Fforkd.sock)`);
    }
    url = new URL(`http://localhost${slash < 0 ? "" : rest.slice(slash)}`);
  } else {
    try {
      url = new URL(raw);
    } catch {
      throw new ForkdError(`baseUrl ${JSON.stringify(raw)} is not a URL (e.g. http://127.0.0.1:8889)`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ForkdError(`baseUrl ${raw}: use http://, https:// or unix:// (got ${url.protocol})`);
    }
    if (url.search || url.hash || url.username || url.password) {
      throw new ForkdError(`baseUrl ${raw}: no query, fragment or credentials (use the token option)`);
    }
  }
  if (sock !== undefined && !sock.startsWith("/")) {
    throw new ForkdError(`socketPath ${sock}: must be an absolute path`);
  }
  const protocol = url.protocol as "http:" | "https:";
  const port = url.port ? Number(url.port) : protocol === "https:" ? 443 : 80;
  const basePath = url.pathname.replace(/\/+$/, "");
  const displayUrl = sock !== undefined ? `unix://${sock}${basePath}` : `${url.origin}${basePath}`;
  return {
    protocol,
    host: url.host,
    hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port,
    basePath,
    ...(sock !== undefined ? { socketPath: sock } : {}),
    displayUrl,
  };
}

/** A stream of bytes from a web ReadableStream. */
export async function* readableChunks(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let done = false;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** A web ReadableStream over an async iterable (fetch wants one for a streamed body). */
export function toReadableStream(chunks: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = chunks[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const r = await it.next();
      if (r.done) ctrl.close();
      else ctrl.enqueue(r.value);
    },
    async cancel() {
      await it.return?.();
    },
  });
}

/** Node's global fetch: plain http, or https checked against the default CA store. */
export class FetchTransport implements Transport {
  readonly displayUrl: string;

  constructor(endpoint: Endpoint) {
    if (endpoint.socketPath !== undefined) throw new ForkdError("FetchTransport cannot use a unix socket");
    this.displayUrl = endpoint.displayUrl;
  }

  async request(req: TransportRequest): Promise<TransportResponse> {
    const init: RequestInit & { duplex?: "half" } = { method: req.method, headers: req.headers };
    if (req.signal) init.signal = req.signal;
    if (req.body instanceof Uint8Array) {
      init.body = req.body;
    } else if (req.body !== undefined) {
      // A stream body: chunked, never buffered; fetch requires half duplex for it.
      init.body = toReadableStream(req.body);
      init.duplex = "half";
    }
    const res = await fetch(this.displayUrl + req.path, init);
    let used = false;
    return {
      status: res.status,
      header: (name) => res.headers.get(name),
      body: () => {
        if (used) throw new ForkdError("response body already read");
        used = true;
        return res.body ? readableChunks(res.body) : emptyChunks();
      },
      cancel: () => {
        if (!res.bodyUsed && res.body && !res.body.locked) res.body.cancel().catch(() => {});
      },
    };
  }

  close(): void {
    // fetch's pooled connections are unreferenced and close on their own.
  }
}

/** node:http / node:https: for a unix socket, or https with a custom CA. */
export class NodeTransport implements Transport {
  readonly displayUrl: string;
  private readonly agent: http.Agent;

  constructor(
    private readonly endpoint: Endpoint,
    ca?: string | Buffer,
  ) {
    this.displayUrl = endpoint.displayUrl;
    const https_ = endpoint.protocol === "https:" && endpoint.socketPath === undefined;
    this.agent = https_
      ? new https.Agent({ keepAlive: true, ...(ca !== undefined ? { ca } : {}) })
      : new http.Agent({ keepAlive: true });
  }

  request(req: TransportRequest): Promise<TransportResponse> {
    const ep = this.endpoint;
    const tls = ep.protocol === "https:" && ep.socketPath === undefined;
    const headers: Record<string, string> = { ...req.headers, host: ep.host };
    if (req.body instanceof Uint8Array) headers["content-length"] = String(req.body.byteLength);
    const options: https.RequestOptions = {
      method: req.method,
      path: ep.basePath + req.path,
      headers,
      agent: this.agent,
      ...(ep.socketPath !== undefined
        ? { socketPath: ep.socketPath }
        : { hostname: ep.hostname, port: ep.port }),
      ...(req.signal ? { signal: req.signal } : {}),
    };
    const mod = tls ? https : http;
    return new Promise<TransportResponse>((resolve, reject) => {
      const r = mod.request(options);
      let answered = false;
      r.on("error", (err) => {
        if (!answered) reject(err);
      });
      r.on("response", (res) => {
        answered = true;
        let used = false;
        resolve({
          status: res.statusCode ?? 0,
          header: (name) => {
            const v = res.headers[name.toLowerCase()];
            return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
          },
          body: () => {
            if (used) throw new ForkdError("response body already read");
            used = true;
            return nodeChunks(res);
          },
          cancel: () => {
            if (!res.complete) {
              res.destroy();
              r.destroy();
            }
          },
        });
      });
      const body = req.body;
      if (body === undefined) {
        r.end();
      } else if (body instanceof Uint8Array) {
        r.end(body);
      } else {
        pump(r, body).catch((err: unknown) => {
          // The answer may already have come (an early 413 or 404): then the write error is moot.
          r.destroy(err instanceof Error ? err : new Error(String(err)));
        });
      }
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

async function pump(r: http.ClientRequest, body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const chunk of body) {
    if (r.destroyed) return;
    if (!r.write(chunk)) {
      await Promise.race([once(r, "drain"), once(r, "close")]);
    }
  }
  r.end();
}

async function* nodeChunks(res: http.IncomingMessage): AsyncGenerator<Uint8Array> {
  let complete = false;
  try {
    for await (const chunk of res) yield chunk as Buffer;
    // A connection closed before the end of a chunked body ends the iteration on some Node
    // versions instead of throwing: the body is cut, which must not read as a whole file.
    if (!res.complete) throw new ForkdError("connection closed before the end of the answer");
    complete = true;
  } finally {
    if (!complete) res.destroy();
  }
}

async function* emptyChunks(): AsyncGenerator<Uint8Array> {}
