#!/usr/bin/env python3
"""Test fixtures for `forkd image import`, standard library only.

  oci_fixture.py push REGISTRY REPO TAG [--config-type T] [--platforms P,...] FILE:MEDIATYPE...
      Uploads each layer blob and a minimal image config (POST + PUT monolithic uploads), then
      PUTs an OCI image manifest under TAG; with --platforms, the manifest is pushed by digest
      and TAG names an OCI index listing it once per os/arch platform. Prints the manifest's
      digest (the index's with --platforms).

  oci_fixture.py serve-corrupt PORT_FILE LAYER_FILE
      A one-repository registry on 127.0.0.1 whose tag `bad` is an image whose only layer is
      LAYER_FILE, but whose blob endpoint serves that layer with one byte changed (same length):
      a registry (or a path to it) that corrupts data. Writes its port to PORT_FILE, serves
      until killed.
"""
import gzip
import hashlib
import http.server
import json
import subprocess
import sys
import urllib.parse
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def upload_blob(base, repo, data):
    digest = digest_of(data)
    _, headers, _ = request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"")
    location = urllib.parse.urljoin(base + "/", headers["Location"])
    sep = "&" if "?" in location else "?"
    status, _, _ = request("PUT", f"{location}{sep}digest={digest}", data,
                           {"Content-Type": "application/octet-stream"})
    assert status == 201, status
    return {"digest": digest, "size": len(data)}


def put_manifest(base, repo, reference, media_type, body):
    status, _, _ = request("PUT", f"{base}/v2/{repo}/manifests/{reference}", body,
                           {"Content-Type": media_type})
    assert status == 201, status
    return digest_of(body)


def uncompressed(data, media_type):
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        return subprocess.run(["zstd", "-dcq"], input=data, check=True,
                              stdout=subprocess.PIPE).stdout
    return data


def image_manifest(config_desc, layers):
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                       "layers": layers}, sort_keys=True).encode()


def push(argv):
    registry, repo, tag = argv[:3]
    rest = argv[3:]
    config_type, platforms = OCI_CONFIG, None
    files = []
    while rest:
        arg = rest.pop(0)
        if arg == "--config-type":
            config_type = rest.pop(0)
        elif arg == "--platforms":
            platforms = rest.pop(0).split(",")
        else:
            files.append(arg.rsplit(":", 1))
    base = "http://" + registry
    layers, diff_ids = [], []
    for path, media_type in files:
        data = open(path, "rb").read()
        layers.append({"mediaType": media_type, **upload_blob(base, repo, data)})
        diff_ids.append(digest_of(uncompressed(data, media_type)))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_desc = {"mediaType": config_type, **upload_blob(base, repo, config)}
    body = image_manifest(config_desc, layers)
    if not platforms:
        print(put_manifest(base, repo, tag, OCI_MANIFEST, body))
        return
    digest = put_manifest(base, repo, digest_of(body), OCI_MANIFEST, body)
    entries = []
    for p in platforms:
        os_name, arch = p.split("/")
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                        "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": entries}).encode()
    print(put_manifest(base, repo, tag, OCI_INDEX, index))


def serve_corrupt(argv):
    port_file, layer_file = argv
    layer = open(layer_file, "rb").read()
    corrupt = bytes([layer[0] ^ 0xFF]) + layer[1:]
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    config_desc = {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)}
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": digest_of(layer), "size": len(layer)}
    manifest = image_manifest(config_desc, [layer_desc])
    blobs = {config_desc["digest"]: config, layer_desc["digest"]: corrupt}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", content_type="application/json", head=False):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def route(self, head):
            path = self.path.split("?")[0]
            if path == "/v2/":
                return self.answer(200, b"{}", head=head)
            if path.endswith("/manifests/bad"):
                return self.answer(200, manifest, OCI_MANIFEST, head)
            if "/blobs/" in path and path.rsplit("/", 1)[1] in blobs:
                return self.answer(200, blobs[path.rsplit("/", 1)[1]],
                                   "application/octet-stream", head)
            return self.answer(404, b'{"errors":[{"code":"NOT_FOUND"}]}', head=head)

        def do_GET(self):
            self.route(False)

        def do_HEAD(self):
            self.route(True)

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("push", "serve-corrupt"):
        sys.exit(__doc__)
    {"push": push, "serve-corrupt": serve_corrupt}[sys.argv[1]](sys.argv[2:])
