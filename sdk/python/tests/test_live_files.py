"""Live: sandbox.files on a real VM."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import unittest

from live import LiveTest, forkd, requires_daemon

from forkd import Sandbox


@requires_daemon
class FilesTest(LiveTest):
    sbx: Sandbox

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sbx = cls.shared_sandbox()

    def tmpdir(self) -> str:
        d = tempfile.mkdtemp(prefix="forkd-sdk-files-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_text_and_bytes_round_trip(self) -> None:
        f = self.sbx.files
        info = f.write("/tmp/t.txt", "héllo\nwörld\n")
        self.assertEqual((info.path, info.size), ("/tmp/t.txt", len("héllo\nwörld\n".encode())))
        self.assertEqual(f.read("/tmp/t.txt"), "héllo\nwörld\n")
        self.assertEqual(self.sbx.commands.run("cat /tmp/t.txt").stdout, "héllo\nwörld\n")
        blob = bytes(range(256)) * 3
        f.write("/tmp/b.bin", blob)
        self.assertEqual(f.read("/tmp/b.bin", format="bytes"), blob)
        f.write("/tmp/empty", b"")
        self.assertEqual(f.read("/tmp/empty", format="bytes"), b"")
        # Written from inside, read from outside.
        self.sbx.commands.run("printf 'x\\000y' > /tmp/inside")
        self.assertEqual(f.read("/tmp/inside", format="bytes"), b"x\x00y")

    def test_large_binary_file(self) -> None:
        blob = os.urandom(3 * 1024 * 1024)
        digest = hashlib.sha256(blob).hexdigest()
        w = self.sbx.files.write("/tmp/big.bin", blob)
        self.assertEqual(w.size, len(blob))
        out = self.sbx.commands.run("sha256sum /tmp/big.bin").stdout.split()[0]
        self.assertEqual(out, digest)
        self.assertEqual(
            hashlib.sha256(self.sbx.files.read("/tmp/big.bin", format="bytes")).hexdigest(),
            digest,
        )
        dest = os.path.join(self.tmpdir(), "big.bin")
        self.assertEqual(self.sbx.files.read_to("/tmp/big.bin", dest), len(blob))
        with open(dest, "rb") as fh:
            self.assertEqual(hashlib.sha256(fh.read()).hexdigest(), digest)

    def test_streamed_writes_from_file_objects(self) -> None:
        blob = os.urandom(2 * 1024 * 1024 + 333)
        digest = hashlib.sha256(blob).hexdigest()
        path = os.path.join(self.tmpdir(), "src.bin")
        with open(path, "wb") as fh:
            fh.write(blob)
        with open(path, "rb") as fh:  # a regular file: Content-Length
            self.sbx.files.write("/tmp/from-file.bin", fh)
        self.sbx.files.write("/tmp/from-bytesio.bin", io.BytesIO(blob))  # chunked
        for p in ("/tmp/from-file.bin", "/tmp/from-bytesio.bin"):
            with self.subTest(path=p):
                self.assertEqual(self.sbx.commands.run(f"sha256sum {p}").stdout.split()[0], digest)
        buf = io.BytesIO()
        self.sbx.files.read_to("/tmp/from-file.bin", buf)
        self.assertEqual(hashlib.sha256(buf.getvalue()).hexdigest(), digest)
        with self.sbx.files.read("/tmp/from-file.bin", format="stream") as s:
            self.assertEqual(s.headers.get("x-forkd-file-size"), str(len(blob)))
            self.assertEqual(hashlib.sha256(b"".join(s.iter_chunks())).hexdigest(), digest)

    def test_mode(self) -> None:
        self.sbx.files.write("/tmp/script.sh", "#!/bin/sh\necho ran\n", mode=0o755)
        self.assertEqual(self.sbx.commands.run("/tmp/script.sh").stdout, "ran\n")
        self.assertEqual(self.sbx.files.get_info("/tmp/script.sh").mode & 0o777, 0o755)
        self.sbx.files.write("/tmp/secret", "s", mode="0600")
        self.assertEqual(self.sbx.files.get_info("/tmp/secret").mode & 0o777, 0o600)

    def test_dirs_list_stat_exists_remove(self) -> None:
        f = self.sbx.files
        f.make_dir("/tmp/d1/sub/deeper")
        f.make_dir("/tmp/d1/sub")  # exists: fine
        f.write("/tmp/d1/b.txt", "bb")
        f.write("/tmp/d1/a.txt", "a")
        entries = f.list("/tmp/d1")
        self.assertEqual([e.name for e in entries], ["a.txt", "b.txt", "sub"])
        self.assertFalse(entries.truncated)
        by_name = {e.name: e for e in entries}
        self.assertEqual((by_name["a.txt"].type, by_name["a.txt"].size), ("file", 1))
        self.assertEqual(by_name["b.txt"].path, "/tmp/d1/b.txt")
        self.assertTrue(by_name["sub"].is_dir)
        st = f.get_info("/tmp/d1")
        self.assertEqual((st.type, st.name, st.path), ("dir", "d1", "/tmp/d1"))
        self.assertGreater(st.mtime, 1_000_000_000)
        self.assertTrue(f.exists("/tmp/d1/a.txt"))
        self.assertFalse(f.exists("/tmp/d1/nope"))
        f.remove("/tmp/d1/a.txt")
        self.assertFalse(f.exists("/tmp/d1/a.txt"))
        with self.assertRaises(forkd.InvalidRequestError):
            f.remove("/tmp/d1")  # not empty
        f.remove("/tmp/d1", recursive=True)
        self.assertFalse(f.exists("/tmp/d1"))

    def test_errors(self) -> None:
        f = self.sbx.files
        with self.assertRaises(forkd.NotFoundError) as cm:
            f.read("/tmp/does-not-exist")
        self.assertEqual(cm.exception.code, "not_found")
        with self.assertRaises(forkd.NotFoundError):
            f.get_info("/tmp/does-not-exist")
        with self.assertRaises(forkd.NotFoundError):
            f.remove("/tmp/does-not-exist")
        with self.assertRaises(forkd.InvalidRequestError):
            f.read("relative/path")
        with self.assertRaises(forkd.InvalidRequestError):
            f.read("/tmp/../etc/passwd")
        with self.assertRaises(forkd.InvalidRequestError):
            f.read("/tmp", format="bytes")  # a directory
        with self.assertRaises(forkd.InvalidRequestError):
            f.list("/etc/passwd")  # a file
        # A failed read_to leaves no local file behind.
        d = self.tmpdir()
        with self.assertRaises(forkd.NotFoundError):
            f.read_to("/tmp/does-not-exist", os.path.join(d, "x"))
        self.assertEqual(os.listdir(d), [])

    def test_unknown_sandbox(self) -> None:
        ghost = Sandbox._from_info(self.c, {"id": "sb-doesnotexist"})
        with self.assertRaises(forkd.NotFoundError) as cm:
            ghost.files.write("/tmp/x", b"x" * 100_000)
        self.assertEqual(cm.exception.code, "not_found")


if __name__ == "__main__":
    unittest.main()
