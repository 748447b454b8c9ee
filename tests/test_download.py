"""Tests for osdpm_lib.download, offline: archives built here, served by a local HTTP server."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import types
import urllib.parse
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rarfile
import requests
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
        self.headers: dict[str, dict[str, str]] = {}  # extra headers (Content-Type, Content-Disposition) by path
        self.honour_range = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.requests: list[dict] = []
        self.bytes_served = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path if self.path in server.files else self.path.partition("?")[0]
                body = server.files.get(path)
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
                extra = {"Content-Type": "application/octet-stream", **server.headers.get(path, {})}
                for key, value in extra.items():
                    self.send_header(key, value)
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
                                routes=(download.Route("toy", (Source(server.url("/toy.zip"), "toy.zip"),)),),
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
def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.part"))


def test_fetch_restarts_when_server_ignores_range(server, tmp_path):
    body = b"0123456789" * 300_000
    server.files["/f.bin"] = body
    server.cut_after = 1_600_000
    with pytest.raises(DownloadError, match="kept in"):
        fetch(server.url("/f.bin"), tmp_path / "f.bin", progress=False, timeout=5)
    server.cut_after, server.honour_range, server.bytes_served = None, False, 0
    fetch(server.url("/f.bin"), tmp_path / "f.bin", sha(body), progress=False, timeout=5)
    assert (tmp_path / "f.bin").read_bytes() == body and not parts(tmp_path)
    assert server.requests[-1]["range"] is None  # started over without the kept bytes


def test_fetch_interrupted_then_resumed(server, tmp_path):
    body = bytes(range(256)) * 12000  # 3 MB: gdown writes 512 kB blocks, the block cut short is lost
    server.files["/f.bin"] = body
    server.cut_after = 1_600_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="incomplete(?s:.*)bytes received are kept in .*f.bin.*part"):
        fetch(server.url("/f.bin"), dest, progress=False, timeout=5)
    kept = [p.stat().st_size for p in parts(tmp_path)]
    assert not dest.exists() and len(kept) == 1 and 0 < kept[0] < len(body)
    server.cut_after = None
    fetch(server.url("/f.bin"), dest, sha(body), progress=False, timeout=5)
    assert dest.read_bytes() == body and not parts(tmp_path)
    assert server.requests[-1]["range"] == f"bytes={kept[0]}-"  # the rest only


def test_fetch_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["/f.bin"] = b"real content"
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match="sha256 mismatch") as exc:
        fetch(server.url("/f.bin"), dest, "0" * 64, progress=False, timeout=5, what="toy")
    assert "toy" in str(exc.value) and sha(b"real content") in str(exc.value)
    assert not dest.exists() and not parts(tmp_path)


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

    def no_tool(*_args, **_kw):
        raise rarfile.RarCannotExec("Cannot find working tool")

    monkeypatch.setattr(download.rarfile, "RarFile", no_tool)
    with pytest.raises(UnpackError, match="apt-get install unrar.*7z.*bsdtar"):
        unpack(tmp_path / "x.rar", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.tmp").exists()


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
    src = replace(spec.routes[0].files[0], url=f"http://127.0.0.1:{closed_port()}/toy.zip",
                  browser="open https://drive.example/toy")
    monkeypatch.setitem(download.REGISTRY, "toy", replace(spec, routes=(download.Route("toy", (src,)),)))
    dest = tmp_path / "toy" / "downloads" / "toy.zip"
    with pytest.raises(DownloadError) as exc:
        prepare("toy", tmp_path, progress=False, timeout=2, log=quiet)
    assert "cannot download" in str(exc.value) and str(dest) in str(exc.value)
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
        for route in spec.routes:
            assert route.label and route.needs and route.size
            for s in route.files:
                assert s.sha256 is None  # no public source publishes one: never invented
                assert s.url.startswith(("https://", "hf://datasets/"))
                assert s.browser  # the manual way, named when the automatic fetch fails
                assert (s.revision is not None) == s.hub
    first = download.REGISTRY["rsicd"].routes[0].files[0]
    assert (first.url, first.filename, first.revision) == ("hf://datasets/arampacha/rsicd", "data/*.parquet",
                                                           download.RSICD_HUB_REVISION)
    assert download.REGISTRY["sydney"].routes[0].files[0].revision == download.SYDNEY_HUB_REVISION


# ------------------------------------------------------------------------------------------ CLI
def test_cli_offline_exit_2_and_message(toy, tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    assert download.main(["toy", "--root", str(tmp_path), "--url", url, "--timeout", "2",
                          "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: toy: no source could be fetched")
    assert "toy: cannot download " + url in err
    assert str(tmp_path / "toy" / "downloads" / "x.zip") in err


def offline_env() -> dict[str, str]:
    """The environment with every proxy pointing at a closed port: no request leaves the machine."""
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "hf_hub_offline")}
    return {**env, **{k: dead for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                                        "https_proxy", "all_proxy")}}


def test_cli_script_list_and_failure(tmp_path):
    script = [sys.executable, str(REPO / "data_prep" / "download.py")]
    res = subprocess.run([*script, "--list"], check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for name in ("rsicd", "rsitmd", "ucm", "sydney", "drive.google.com", "huggingface"):
        assert name in res.stdout
    rsicd = res.stdout.split("\n\n")[0]
    first = rsicd.index("source 1: Hugging Face parquet mirror")
    assert first < rsicd.index("hf://datasets/arampacha/rsicd data/*.parquet") < rsicd.index("source 2")
    assert f"revision {download.RSICD_HUB_REVISION}" in rsicd
    res = subprocess.run([*script, "rsicd", "--root", str(tmp_path), "--timeout", "5", "--no-progress"],
                         check=False, capture_output=True, text=True, timeout=120, env=offline_env())
    assert res.returncode == 2
    assert "error: rsicd: no source could be fetched" in res.stderr
    assert res.stderr.index("arampacha/rsicd") < res.stderr.index("RSICD_images.rar")  # tried in order
    assert str(tmp_path / "rsicd" / "downloads") in res.stderr


# ------------------------------------------------------------------------- Hub parquet mirror
def parquet(path: Path, rows: list[tuple[str, list[str], bytes | None]]) -> Path:
    """A parquet file with the schema of the Hub's arampacha/rsicd: filename, captions, image{bytes, path}."""
    schema = pa.schema([("filename", pa.string()), ("captions", pa.list_(pa.string())),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    table = pa.table({"filename": [f"rsicd_images/{n}" for n, _, _ in rows],
                      "captions": [c for _, c, _ in rows],
                      "image": [{"bytes": b, "path": None} for _, _, b in rows]}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def mirror(folder: Path, bad: bool = False) -> dict[str, list[str]]:
    """``folder/data/{train,valid,test}-00000-of-00001.parquet``; returns the file names by split."""
    names = {"train": ["airport_1.jpg", "beach_2.jpg", "00017.jpg"], "valid": ["forest_3.jpg"],
             "test": ["river_4.jpg", "port_5.jpg"]}
    for k, (split, files) in enumerate(names.items()):
        rows = [(n, [f"The {n[:-4]} scene, number {i}." for i in range(5)], jpeg((60 * k, 30 * i, 90)))
                for i, n in enumerate(files)]
        if bad and split == "test":
            rows[1] = (rows[1][0], [], rows[1][2])
        parquet(folder / "data" / f"{split}-00000-of-00001.parquet", rows)
    return names


class FakeHub:
    """``HfApi`` and ``snapshot_download`` over a local folder; records the revisions asked for."""

    def __init__(self, folder: Path, commit: str):
        self.folder, self.commit, self.calls = folder, commit, []
        hub = self

        class Api:
            def dataset_info(self, repo, revision=None, timeout=None):
                hub.calls.append(("info", repo, revision))
                return types.SimpleNamespace(sha=hub.commit)

        self.Api = Api

    def snapshot_download(self, repo, repo_type, revision, allow_patterns, local_dir, etag_timeout):
        self.calls.append(("snapshot", repo, revision))
        assert repo_type == "dataset" and revision == self.commit
        for p in self.folder.rglob("*"):
            rel = p.relative_to(self.folder).as_posix()
            if p.is_file() and any(fnmatch.fnmatch(rel, pat) for pat in allow_patterns):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, Path(local_dir) / rel)
        return str(local_dir)


def test_hub_parquet_mirror_converts_to_the_book_layout(monkeypatch, tmp_path, capsys):
    names = mirror(tmp_path / "hub")
    hub = FakeHub(tmp_path / "hub", "c0ffee" * 6 + "c0ff")
    monkeypatch.setattr(download, "HfApi", hub.Api)
    monkeypatch.setattr(download, "snapshot_download", hub.snapshot_download)
    logs: list[str] = []
    folder = prepare("rsicd", tmp_path / "data", progress=False, log=logs.append)
    assert hub.calls == [("info", "arampacha/rsicd", download.RSICD_HUB_REVISION),
                         ("snapshot", "arampacha/rsicd", hub.commit)]
    assert (folder / "downloads" / download.HUB_REVISIONS).read_text() == f"arampacha/rsicd {hub.commit}\n"
    ann = data.load(folder, check_images=True)
    assert {s: [r.filename for r in recs] for s, recs in ann.splits().items()} == {
        "train": names["train"], "val": names["valid"], "test": names["test"]}
    assert ann.images[0].captions[0] == "The airport_1 scene, number 0."
    assert set(read_manifest(folder)) == {f"downloads/data/{s}-00000-of-00001.parquet" for s in names}
    # the counts check says what differs from the published RSICD
    assert any("differs from the published" in m and "train has 3 images, published 8,734" in m for m in logs)
    # python -m osdpm_lib.data summary accepts it
    capsys.readouterr()
    assert data.main(["summary", str(folder), "--check-images"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"] == {"train": {"images": 3, "captions": 15}, "val": {"images": 1, "captions": 5},
                             "test": {"images": 2, "captions": 10}}
    # second call: no Hub request, only verification
    hub.calls.clear()
    prepare("rsicd", tmp_path / "data", progress=False, log=quiet)
    assert hub.calls == []


def test_parquet_from_a_local_folder_and_bad_rows(tmp_path):
    mirror(tmp_path / "good")
    folder = prepare("rsicd", tmp_path / "data", url=str(tmp_path / "good"), progress=False, log=quiet)
    assert len(data.load(folder, check_images=True).split("test")) == 2
    mirror(tmp_path / "bad", bad=True)
    with pytest.raises(PrepareError, match=r"test-00000-of-00001.parquet: row 1: no caption"):
        prepare("rsicd", tmp_path / "data2", url=str(tmp_path / "bad"), progress=False, log=quiet)
    (tmp_path / "data3" / "rsicd").mkdir(parents=True)
    (tmp_path / "notparquet").mkdir()
    (tmp_path / "notparquet" / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PrepareError, match="train.parquet: not a parquet file with columns filename"):
        prepare("rsicd", tmp_path / "data3", url=str(tmp_path / "notparquet"), progress=False, log=quiet)


def amfmn(folder: Path, test: dict[str, list[str]]) -> Path:
    """Published captions in the AMFMN text layout (one train image, ``test`` as given)."""
    folder.mkdir(parents=True)
    (folder / "train_filename.txt").write_text("airport_1.jpg\n")
    (folder / "train_caps.txt").write_text("".join(f"a caption {i} .\n" for i in range(5)))
    (folder / "test_filename.txt").write_text("".join(f"{n}\n" for n, caps in test.items() for _ in caps))
    (folder / "test_caps.txt").write_text("".join(f"{c}\n" for caps in test.values() for c in caps))
    return folder


def test_compare_test_captions_after_normalisation(tmp_path):
    recs = [data.ImageRecord("river_4.jpg", "test", ("The river is wide.", "A bridge, over it.")),
            data.ImageRecord("port_5.jpg", "test", ("Boats in a port.",))]
    ann = data.Annotations("karpathy", tmp_path, recs)
    same = amfmn(tmp_path / "same", {"river_4.jpg": ["a bridge over it .", "the river is wide ."],
                                     "port_5.jpg": ["boats in a port ."]})
    assert download.compare_test_captions(ann, same) == []
    other = amfmn(tmp_path / "other", {"river_4.jpg": ["a bridge over it .", "the river is narrow ."],
                                       "port_6.jpg": ["boats in a port ."]})
    diffs = download.compare_test_captions(ann, other)
    assert "1 not published as test, 1 published ones missing" in diffs[0]
    assert diffs[1].startswith("1 test images have other captions") and "river_4.jpg" in diffs[1]


SHARED_RSICD = REPO.parent / "shared" / "data" / "rsicd"


@pytest.mark.skipif(not SHARED_RSICD.is_dir(), reason="../shared/data/rsicd is absent")
def test_compare_with_the_published_rsicd_test_captions():
    published = data.load(SHARED_RSICD, allow_shared_images=True)
    test = published.split("test")
    ann = data.Annotations("karpathy", SHARED_RSICD, [replace(r, captions=tuple(c.upper() + "!" for c in r.captions))
                                                      for r in test])
    assert len(test) == 1093 and download.compare_test_captions(ann, SHARED_RSICD) == []
    changed = [replace(test[0], captions=("something else",) + test[0].captions[1:]), *test[1:]]
    diffs = download.compare_test_captions(data.Annotations("karpathy", SHARED_RSICD, changed), SHARED_RSICD)
    assert diffs == [f"1 test images have other captions than published (e.g. {[test[0].filename]})"]


# -------------------------------------------------------------------- Google Drive through gdown
def drive_page(file_id: str) -> bytes:
    """Google Drive's 'cannot scan this file for viruses' page: a form whose hidden fields confirm."""
    return (f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
            f'<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" '
            f'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
            f'name="uuid" value="u-1"></form></body></html>').encode()


def google_to_local(monkeypatch, server: Server) -> None:
    """Send every request for a Google host to the local server (as plain HTTP)."""
    send = requests.adapters.HTTPAdapter.send

    def local_send(self, request, **kw):
        parts = urllib.parse.urlsplit(request.url)
        if parts.hostname in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com"):
            request.url = server.url(urllib.parse.urlunsplit(("", "", parts.path, parts.query, "")))
        return send(self, request, **kw)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", local_send)


def test_drive_confirmation_page_is_handled(monkeypatch, server, tmp_path):
    archive = make_zip(members())
    server.files["/uc"] = drive_page("TOYID")
    server.headers["/uc"] = {"Content-Type": "text/html; charset=utf-8"}
    server.files["/download"] = archive
    server.headers["/download"] = {"Content-Disposition": 'attachment; filename="toy.zip"'}
    google_to_local(monkeypatch, server)
    spec = download.DatasetSpec(name="toy", annotation="dataset_toy.json", citation="toy", licence="toy",
                                routes=(download.Route("drive", (Source(
                                    "https://drive.google.com/uc?export=download&id=TOYID", "toy.zip",
                                    browser="open the Drive page"),)),))
    monkeypatch.setitem(download.REGISTRY, "toy", spec)
    folder = prepare("toy", tmp_path, progress=False, timeout=5, log=quiet)
    assert (folder / "downloads" / "toy.zip").read_bytes() == archive
    assert len(data.load(folder, check_images=True).images) == len(NAMES)
    asked = [r["path"] for r in server.requests]
    assert asked[0] == "/uc?id=TOYID"
    assert asked[-1].startswith("/download?") and "confirm=t" in asked[-1] and "id=TOYID" in asked[-1]
    # a page without the form (quota exceeded): a clear error naming the manual way
    server.files["/uc"] = b"<html><body><p>Too many users have viewed or downloaded this file</p></body></html>"
    with pytest.raises(DownloadError, match="(?s)cannot download.*open the Drive page"):
        prepare("toy", tmp_path / "again", progress=False, timeout=5, log=quiet)


# ------------------------------------------------------------------------------ overlap lists
def noise(seed: int) -> bytes:
    """A textured image (perceptual hashes of distinct seeds lie far apart)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64)).save(buf, "JPEG",
                                                                                             quality=95)
    return buf.getvalue()


def toy_set(name: str, images: dict[str, bytes], server: Server, monkeypatch) -> None:
    files = {"dataset.json": karpathy(list(images))} | {f"imgs/{n}": b for n, b in images.items()}
    server.files[f"/{name}.zip"] = make_zip(files)
    spec = download.DatasetSpec(name=name, annotation=f"dataset_{name}.json", citation=name, licence=name,
                                routes=(download.Route(name, (Source(server.url(f"/{name}.zip"),
                                                                     f"{name}.zip"),)),))
    monkeypatch.setitem(download.REGISTRY, name, spec)


def test_overlap_lists_a_planted_near_duplicate(monkeypatch, server, tmp_path):
    monkeypatch.setattr(download, "NAMES", ("seta", "setb"))
    shared = noise(99)
    # karpathy() splits by position: train, val, test, train, ...
    toy_set("seta", {"a0.jpg": shared, "a1.jpg": noise(1), "a2.jpg": noise(2)}, server, monkeypatch)
    toy_set("setb", {"b0.jpg": noise(3), "b1.jpg": noise(4), "b2.jpg": shared}, server, monkeypatch)
    prepare("seta", tmp_path, progress=False, timeout=5, log=quiet)
    assert not list(tmp_path.glob("overlap_*.csv"))  # one data set: nothing to compare
    logs: list[str] = []
    prepare("setb", tmp_path, progress=False, timeout=5, log=logs.append)  # seta present: listed at once
    table = pd.read_csv(tmp_path / "overlap_setb_seta.csv")
    assert table.to_dict("records") == [{"setb file": "b2.jpg", "setb split": "test", "seta file": "a0.jpg",
                                         "seta split": "train", "distance": 0}]
    assert any("1 near-duplicate pairs" in m for m in logs) and "  setb test ~ seta train: 1" in logs
    # on request, in the order asked; test-in-train printed first
    server.files["/extra"] = b""
    assert download.main(["overlap", "seta", "setb", "--root", str(tmp_path), "--no-progress"]) == 0
    table = pd.read_csv(tmp_path / "overlap_seta_setb.csv")
    assert list(table.columns) == ["seta file", "seta split", "setb file", "setb split", "distance"]
    assert table[["seta file", "setb file"]].values.tolist() == [["a0.jpg", "b2.jpg"]]


def test_overlap_needs_prepared_sets(tmp_path, capsys):
    assert download.main(["overlap", "rsitmd", "rsicd", "--root", str(tmp_path)]) == 2
    assert "rsitmd is not prepared under" in capsys.readouterr().err
