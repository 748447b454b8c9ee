"""Tests for osdpm_lib.download, offline: archives built here, served by a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from osdpm_lib import data, download
from osdpm_lib.download import (
    ChecksumError,
    DownloadError,
    PrepareError,
    Source,
    UnpackError,
    fetch,
    prepare,
    read_manifest,
    unpack,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- fixtures
def jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "JPEG")
    return buf.getvalue()


def karpathy(names: list[str]) -> bytes:
    splits = ["train", "val", "test"]
    images = [{"filename": n, "split": splits[i % 3], "imgid": i,
               "sentences": [{"raw": f"caption {k} of {n}", "tokens": []} for k in range(5)]}
              for i, n in enumerate(names)]
    return json.dumps({"images": images, "dataset": "toy"}).encode()


NAMES = ["airport_1.jpg", "beach_2.jpg", "forest_3.jpg", "river_4.jpg"]


def members(prefix: str = "Toy/") -> dict[str, bytes]:
    """A Karpathy json + images in a sub-folder, the way the real archives nest them."""
    out = {f"{prefix}dataset.json": karpathy(NAMES)}
    for i, n in enumerate(NAMES):
        out[f"{prefix}imgs/{n}"] = jpeg((40 * i, 100, 200 - 40 * i))
    return out


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def make_targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


class Server:
    """A local HTTP server: ``files`` by path, Range support (optional), request/byte counts."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.honour_range = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.requests: list[dict] = []
        self.bytes_served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                rng = self.headers.get("Range")
                server.requests.append({"path": self.path, "range": rng})
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = body[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if server.cut_after is not None:
                    chunk = chunk[: server.cut_after]
                self.wfile.write(chunk)
                server.bytes_served += len(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = Server({})
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def toy(monkeypatch, server):
    """Register a data set 'toy' whose single source is a zip on the local server."""
    archive = make_zip(members())
    server.files["/toy.zip"] = archive
    spec = download.DatasetSpec(name="toy", annotation="dataset_toy.json",
                                sources=(Source(server.url("/toy.zip"), "toy.zip"),),
                                citation="toy", licence="toy")
    monkeypatch.setitem(download.REGISTRY, "toy", spec)
    return archive


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def quiet(*_):
    pass


# ---------------------------------------------------------------------------------------- fetch
def test_fetch_resumes_from_part_file(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:30000])
    fetch(server.url("/f.bin"), dest, sha(body), progress=False, timeout=5)
    assert dest.read_bytes() == body
    assert not (tmp_path / "f.bin.part").exists()
    assert server.requests[-1]["range"] == "bytes=30000-"
    assert server.bytes_served == len(body) - 30000


def test_fetch_restarts_when_server_ignores_range(server, tmp_path):
    body = b"0123456789" * 5000
    server.files["/f.bin"] = body
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage-prefix")
    fetch(server.url("/f.bin"), tmp_path / "f.bin", sha(body), progress=False, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == body
    assert server.bytes_served == len(body)


def test_fetch_416_on_complete_part_finishes_without_body(server, tmp_path):
    body = b"x" * 1000
    server.files["/f.bin"] = body
    (tmp_path / "f.bin.part").write_bytes(body)
    fetch(server.url("/f.bin"), tmp_path / "f.bin", sha(body), progress=False, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == body
    assert server.bytes_served == 0


def test_fetch_interrupted_then_resumed(server, tmp_path):
    body = bytes(range(256)) * 200
    server.files["/f.bin"] = body
    server.cut_after = 10000
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="kept in .*f.bin.part"):
        fetch(server.url("/f.bin"), dest, progress=False, timeout=5)
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 10000
    server.cut_after = None
    fetch(server.url("/f.bin"), dest, sha(body), progress=False, timeout=5)
    assert dest.read_bytes() == body
    assert server.requests[-1]["range"] == "bytes=10000-"


def test_fetch_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["/f.bin"] = b"real content"
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match="sha256 mismatch") as exc:
        fetch(server.url("/f.bin"), dest, "0" * 64, progress=False, timeout=5, what="toy")
    assert "toy" in str(exc.value) and sha(b"real content") in str(exc.value)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()


def test_fetch_offline_names_url_and_manual_path(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/RSICD.zip"
    dest = tmp_path / "rsicd" / "downloads" / "RSICD.zip"
    with pytest.raises(DownloadError) as exc:
        fetch(url, dest, progress=False, timeout=2, what="rsicd")
    msg = str(exc.value)
    assert msg.startswith("rsicd: cannot download " + url)
    assert str(dest) in msg and "rerun" in msg and "verifies" in msg


def test_fetch_http_error_and_html_page(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("/missing.zip"), tmp_path / "m.zip", progress=False, timeout=5)

    class Html(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"<html>Google Drive can't scan this file for viruses</html>")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="web page"):
            fetch(f"http://127.0.0.1:{httpd.server_address[1]}/uc?id=1", tmp_path / "g.zip",
                  progress=False, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "g.zip").exists()


def test_fetch_file_url(tmp_path):
    src = tmp_path / "mirror" / "a.zip"
    src.parent.mkdir()
    src.write_bytes(b"abc" * 100)
    dest = fetch(src.as_uri(), tmp_path / "a.zip", sha(b"abc" * 100), progress=False)
    assert dest.read_bytes() == b"abc" * 100


# --------------------------------------------------------------------------------------- unpack
def test_unpack_refuses_path_traversal(tmp_path):
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(make_zip({"ok.txt": b"1", "../evil.txt": b"2"}))
    with pytest.raises(UnpackError, match="escape"):
        unpack(bad_zip, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()

    bad_tar = tmp_path / "bad.tar.gz"
    bad_tar.write_bytes(make_targz({"a/../../evil2.txt": b"2"}))
    with pytest.raises(UnpackError, match="escape"):
        unpack(bad_tar, tmp_path / "out2")
    assert not (tmp_path / "evil2.txt").exists()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    (tmp_path / "link.tar").write_bytes(buf.getvalue())
    with pytest.raises(UnpackError, match="escape"):
        unpack(tmp_path / "link.tar", tmp_path / "out3")


def test_unpack_tar_gz_and_skip_when_done(tmp_path):
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(make_targz({"d/x.txt": b"hello"}))
    out = unpack(arc, tmp_path / "out")
    assert (out / "d" / "x.txt").read_bytes() == b"hello"
    (out / "d" / "x.txt").write_bytes(b"changed")
    unpack(arc, tmp_path / "out")  # already unpacked: untouched
    assert (out / "d" / "x.txt").read_bytes() == b"changed"


def test_unpack_unknown_and_rar_without_tool(tmp_path, monkeypatch):
    (tmp_path / "x.bin").write_bytes(b"not an archive")
    with pytest.raises(UnpackError, match="not a zip"):
        unpack(tmp_path / "x.bin", tmp_path / "o")
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x01\x00" + b"\0" * 32)
    monkeypatch.setattr(download.shutil, "which", lambda _: None)
    with pytest.raises(UnpackError, match="unrar"):
        unpack(tmp_path / "x.rar", tmp_path / "o")


# -------------------------------------------------------------------------------------- prepare
def test_prepare_full_then_idempotent(toy, server, tmp_path):
    logs: list[str] = []
    folder = prepare("toy", tmp_path, progress=False, timeout=5, log=logs.append)
    assert folder == tmp_path / "toy"
    assert (folder / "dataset_toy.json").is_file() and (folder / "images" / NAMES[0]).is_file()
    ann = data.load(folder, check_images=True)
    assert [r.filename for r in ann.images] == NAMES
    assert not (folder / ".staging").exists()
    # no pinned checksum: recorded in SHA256SUMS and printed
    assert read_manifest(folder) == {"downloads/toy.zip": sha(toy)}
    assert any(sha(toy) in m and "--sha256" in m for m in logs)
    # second call: no request, no unpacking, just verification
    n = len(server.requests)
    logs.clear()
    prepare("toy", tmp_path, progress=False, timeout=5, log=logs.append)
    assert len(server.requests) == n
    assert not any("unpacking" in m for m in logs) and any("ready" in m for m in logs)


def test_prepare_detects_tampered_download(toy, tmp_path):
    folder = prepare("toy", tmp_path, progress=False, timeout=5, log=quiet)
    (folder / "downloads" / "toy.zip").write_bytes(make_zip(members()) + b"tampered")
    with pytest.raises(ChecksumError, match="toy: sha256 mismatch for toy.zip"):
        prepare("toy", tmp_path, progress=False, timeout=5, log=quiet)


def test_prepare_pinned_checksum(toy, tmp_path):
    with pytest.raises(ChecksumError):
        prepare("toy", tmp_path, sha256="ab" * 32, progress=False, timeout=5, log=quiet)
    assert not (tmp_path / "toy" / "downloads" / "toy.zip").exists()
    prepare("toy", tmp_path, sha256=sha(toy), progress=False, timeout=5, log=quiet)
    assert read_manifest(tmp_path / "toy") == {"downloads/toy.zip": sha(toy)}


def test_prepare_url_override_tar_gz_and_rearranges(toy, server, tmp_path):
    server.files["/mirror/toy.tar.gz"] = make_targz(members("nested/deeper/"))
    folder = prepare("toy", tmp_path, url=server.url("/mirror/toy.tar.gz"), progress=False,
                     timeout=5, log=quiet)
    assert (folder / "downloads" / "toy.tar.gz").is_file()
    assert len(data.load(folder, check_images=True).images) == len(NAMES)


def test_prepare_manual_file_placed_by_hand(toy, monkeypatch, tmp_path):
    spec = download.REGISTRY["toy"]
    src = replace(spec.sources[0], url=f"http://127.0.0.1:{closed_port()}/toy.zip",
                  browser="open https://drive.example/toy")
    monkeypatch.setitem(download.REGISTRY, "toy", replace(spec, sources=(src,)))
    dest = tmp_path / "toy" / "downloads" / "toy.zip"
    with pytest.raises(DownloadError) as exc:
        prepare("toy", tmp_path, progress=False, timeout=2, log=quiet)
    assert "needs a browser" in str(exc.value) and str(dest) in str(exc.value)
    assert "https://drive.example/toy" in str(exc.value)
    dest.write_bytes(toy)  # the user saved it by hand
    folder = prepare("toy", tmp_path, progress=False, timeout=2, log=quiet)
    assert len(data.load(folder, check_images=True).images) == len(NAMES)


def test_prepare_wrong_archive_is_a_clear_error(toy, server, tmp_path):
    server.files["/other.zip"] = make_zip({"readme.txt": b"nothing here"})
    with pytest.raises(PrepareError, match="no annotation file"):
        prepare("toy", tmp_path, url=server.url("/other.zip"), progress=False, timeout=5,
                log=quiet)


def test_registry_is_honest():
    assert set(download.NAMES) == {"rsicd", "rsitmd", "ucm", "sydney"}
    for spec in download.REGISTRY.values():
        assert spec.citation and spec.licence and spec.annotation.startswith("dataset")
        for s in spec.sources:
            assert s.sha256 is None  # no public source publishes one: never invented
            assert s.url.startswith("https://")
            if "drive.google.com" in s.url:
                assert s.browser  # Google Drive needs a browser for large files


# ------------------------------------------------------------------------------------------ CLI
def test_cli_offline_exit_2_and_message(toy, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    assert download.main(["toy", "--root", str(tmp_path), "--url", url, "--timeout", "2",
                          "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: toy: cannot download " + url)
    assert str(tmp_path / "toy" / "downloads" / "x.zip") in err


def test_cli_script_list_and_failure(tmp_path):
    script = [sys.executable, str(REPO / "data_prep" / "download.py")]
    res = subprocess.run([*script, "--list"], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for name in ("rsicd", "rsitmd", "ucm", "sydney", "drive.google.com", "huggingface.co"):
        assert name in res.stdout
    res = subprocess.run([*script, "rsicd", "--root", str(tmp_path)], check=False,
                         capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "error: rsicd:" in res.stderr and "RSICD_images.rar" in res.stderr
    assert str(tmp_path / "rsicd" / "downloads") in res.stderr
