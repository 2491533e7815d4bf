// https with a custom CA (caFile / FORKD_CA_CERT) against a node:https server whose self-signed
// certificate openssl makes for the test.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { ConnectionError, Controller } from "forkd";

let dir = "";
let server: https.Server;
let port = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "forkd-ts-tls-"));
  // prettier-ignore
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-days", "2", "-subj", "/CN=forkd", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  server = https.createServer(
    { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) },
    (req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, auth: req.headers.authorization ?? null }));
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

test("caFile makes a self-signed daemon trusted; without it the certificate is refused", async () => {
  const caFile = join(dir, "cert.pem");
  const ctrl = new Controller({ baseUrl: `https://127.0.0.1:${port}`, caFile, token: "tok" });
  assert.deepEqual(await ctrl.healthz(), { ok: true, auth: "Bearer tok" });
  // Host name checked too: the certificate names 127.0.0.1 and localhost.
  const byName = new Controller({ baseUrl: `https://localhost:${port}`, caFile });
  assert.equal((await byName.healthz()).ok, true);
  ctrl.close();
  byName.close();

  const saved = process.env.FORKD_CA_CERT;
  try {
    delete process.env.FORKD_CA_CERT;
    const untrusted = await new Controller({ baseUrl: `https://127.0.0.1:${port}` }).healthz().catch((e: unknown) => e);
    assert.ok(untrusted instanceof ConnectionError, String(untrusted));
    assert.match(untrusted.message, /certificate/i);

    process.env.FORKD_CA_CERT = caFile;
    const fromEnv = new Controller({ baseUrl: `https://127.0.0.1:${port}` });
    assert.equal((await fromEnv.healthz()).ok, true);
    fromEnv.close();
  } finally {
    if (saved === undefined) delete process.env.FORKD_CA_CERT;
    else process.env.FORKD_CA_CERT = saved;
  }
});
