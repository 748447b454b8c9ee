"""Download and unpack the real retrieval data sets (RSICD, RSITMD, UCM-captions, Sydney-captions).

:func:`prepare` brings ``<root>/<name>/`` into the layout :func:`osdpm_lib.data.load` reads::

    <root>/<name>/dataset_<name>.json   Karpathy annotations (dataset_RSITMD.json for rsitmd)
    <root>/<name>/images/               the images the json names
    <root>/<name>/downloads/...         the downloaded files, kept for verification
    <root>/<name>/SHA256SUMS            sha256 of each download (``sha256sum -c`` format)

A data set has one or more **routes** (``--list``), each a set of files fetched together.  The first route
whose files are all on disk is used (a file saved by hand included); otherwise the routes are tried in order
until one downloads.  Fetching is left to libraries: ``hf://datasets/OWNER/NAME`` sources come from the
Hugging Face Hub at a revision (``huggingface_hub``: resume, pinned commit), Google Drive links and other
URLs through ``gdown`` (Drive's confirmation page for large files, resume), ``file://`` URLs by a copy.
Parquet files with images inside (RSICD's Hub mirror) are converted by :func:`from_parquet`; archives (zip,
tar, rar through ``rarfile`` and an unrar/7z/bsdtar tool) are unpacked and arranged.  The result is checked
by ``data.load(folder, check_images=True)`` (every image decoded), against the published split sizes where
the registry has them, and RSICD's test captions against the published ones (``../shared/data/rsicd``)
when present.  A second call only verifies.

Checksums: a source's ``sha256`` is verified when the registry or ``--sha256`` pins it.  No public source
publishes one, so by default the first download's sha256 is written to ``SHA256SUMS`` and later runs verify
against it (trust on first use); the value is printed so it can be pinned.  A Hub revision that is a branch
is resolved to its commit once; the commit is recorded in ``downloads/HUB_REVISIONS`` and reused.

``overlap A B`` writes the near-duplicate image pairs of two prepared data sets (the audit's perceptual
hash) with their splits to ``<root>/overlap_A_B.csv`` and prints their count by split pair, test-in-train
first; :func:`prepare` does so by itself for every other data set already prepared under ``root``.

Command line: ``python data_prep/download.py {rsicd,rsitmd,ucm,sydney,all} [--root data] [--url URL]
[--sha256 HEX]``, ``python data_prep/download.py overlap A B [--root data]`` or ``--list``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import gdown
import pooch
import rarfile
import requests
from huggingface_hub import HfApi, snapshot_download

from osdpm_lib import audit, data, paths

MANIFEST = "SHA256SUMS"
MARKER = ".prepared.json"
HUB_REVISIONS = "HUB_REVISIONS"
_ARCHIVE_SUFFIXES = (".zip", ".rar", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
_PARQUET_SPLITS = {"train": "train", "valid": "val", "validation": "val", "val": "val", "test": "test"}


class PrepareError(RuntimeError):
    """A data set could not be downloaded, verified, unpacked or arranged; the message says why."""


class DownloadError(PrepareError):
    """Download failed (offline, host unreachable, HTTP error, a page instead of a file)."""


class ChecksumError(PrepareError):
    """A file's sha256 differs from the pinned or recorded one."""


class UnpackError(PrepareError):
    """An archive is unreadable, of an unknown kind, or has members escaping the destination."""


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Source:
    """One file to download (on the Hub: the files matching a pattern); ``browser``: how to get it by hand."""

    url: str  # https://..., a Google Drive link, file://..., or hf://datasets/OWNER/NAME
    filename: str  # saved as <root>/<name>/downloads/<filename>; Hub: a pattern of repository paths
    sha256: str | None = None
    browser: str | None = None  # the manual way, named when the automatic fetch fails
    revision: str | None = None  # Hub sources: the commit (or branch) fetched

    @property
    def hub(self) -> bool:
        return self.url.startswith("hf://")


@dataclass(frozen=True)
class Route:
    """One way to a data set: files fetched together, what that needs, and its size and time."""

    label: str
    files: tuple[Source, ...]
    needs: str = ""
    size: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: its routes in order, the Karpathy json name it gets, citation, licence, checks."""

    name: str
    annotation: str  # file name under <root>/<name>/
    routes: tuple[Route, ...]
    citation: str
    licence: str
    json_glob: tuple[str, ...] = ("dataset*.json",)
    alternatives: tuple[str, ...] = field(default_factory=tuple)  # manual places, for --list
    expected: dict[str, int] | None = None  # published images per split
    published: str | None = None  # published captions (AMFMN text files), relative to the project root


def _drive(file_id: str, filename: str, note: str) -> Source:
    """A Google Drive file; by hand: its page in a browser."""
    return Source(f"https://drive.google.com/uc?export=download&id={file_id}", filename,
                  browser=f"open https://drive.google.com/file/d/{file_id}/view ({filename}: {note})")


_LICENCE = ("no licence stated by the authors; research use, cite the paper; do not "
            "redistribute")
# No commit of arampacha/rsicd could be looked up where this was written (no Hub access, none quoted in the
# material at hand), so this is the branch, not a pin: the first download resolves it to a commit, records it
# in data/rsicd/downloads/HUB_REVISIONS (reused afterwards) and prints it; put that hash here to pin it.
RSICD_HUB_REVISION = "main"
SYDNEY_HUB_REVISION = "4b357e804147b78f6daf2deaed77260c53441bb5"

REGISTRY: dict[str, DatasetSpec] = {
    "rsicd": DatasetSpec(
        name="rsicd",
        annotation="dataset_rsicd.json",
        routes=(
            Route("Hugging Face parquet mirror (images inside the rows; converted here)",
                  (Source("hf://datasets/arampacha/rsicd", "data/*.parquet", revision=RSICD_HUB_REVISION,
                          browser="download the three parquet files of https://huggingface.co/datasets/"
                                  "arampacha/rsicd (train, valid, test) and rerun with --url DIR"),),
                  needs="huggingface_hub, pyarrow", size="526 MB (train 419, valid 52, test 55, as the Hub lists them); about 1 min at 10 MB/s, then the conversion"),
            Route("Google Drive, the authors' files",
                  (_drive("0B1jt7lJDEXy3SmZEdDd0aWpXcWc", "RSICD_images.rar", "the images"),
                   _drive("1q8EcBWuCbvtTnMILE60WOhd9S0C4rsfT", "dataset_rsicd.json", "the captions")),
                  needs="gdown; unrar, 7z or bsdtar for the rar", size="not measured here; Drive may refuse a busy file for a day"),
        ),
        citation="Lu, Wang, Zheng, Li, Exploring Models and Data for Remote Sensing Image "
                 "Caption Generation, IEEE TGRS 56(4), 2018, doi:10.1109/TGRS.2017.2776321",
        licence=_LICENCE,
        alternatives=("official page: https://github.com/201528014227051/RSICD_optimal (Google Drive "
                      "folder https://drive.google.com/open?id=0B1jt7lJDEXy3aE90cG9YSl9ScUk, Baidu "
                      "http://pan.baidu.com/s/1bp71tE3, MEGA)",),
        expected={"train": 8734, "val": 1094, "test": 1093},
        published="../shared/data/rsicd",
    ),
    "rsitmd": DatasetSpec(
        name="rsitmd",
        annotation="dataset_RSITMD.json",
        routes=(
            Route("Google Drive, the authors' zip",
                  (_drive("1NJY86TAAUd8BVs7hyteImv8I2_Lh95W6", "RSITMD.zip",
                          "or Baidu https://pan.baidu.com/s/1gDj38mzUL-LmQX32PYxr0Q, password NIST; it holds "
                          "images/ and dataset_RSITMD.json; a zip, tar or rar is recognised by its content, "
                          "whatever its name"),),
                  needs="gdown", size="not measured here"),
        ),
        citation="Yuan et al., Exploring a Fine-Grained Multiscale Method for Cross-Modal "
                 "Remote Sensing Image Retrieval, IEEE TGRS, 2021, doi:10.1109/TGRS.2021.3078451",
        licence=_LICENCE,
        json_glob=("dataset_RSITMD.json", "dataset*.json"),
        alternatives=("official page: https://github.com/xiaoyuan1996/AMFMN/tree/master/RSITMD",),
    ),
    "ucm": DatasetSpec(
        name="ucm",
        annotation="dataset_ucm.json",
        routes=(
            Route("Google Drive zip",
                  (_drive("1WNAQgdgghz0cz4rV_KmTNyNGF_m8cNkt", "UCM_captions.zip",
                          "dataset.json + images; or the MEGA folder https://mega.nz/folder/wCpSzSoS#RXzIlrv--"
                          "TDt3ENZdKN8JA, whose zip holds dataset.json and imgs.rar"),),
                  needs="gdown (unrar, 7z or bsdtar if the zip holds a rar)", size="not measured here"),
        ),
        citation="Qu, Li, Lu, Liu, Deep semantic understanding of high resolution remote "
                 "sensing image, CITS 2016, doi:10.1109/CITS.2016.7546397; images: Yang & "
                 "Newsam, UC Merced Land Use, ACM GIS 2010",
        licence=_LICENCE,
        alternatives=("official page: https://github.com/201528014227051/RSICD_optimal (MEGA)",),
    ),
    "sydney": DatasetSpec(
        name="sydney",
        annotation="dataset_sydney.json",
        routes=(
            Route("Hugging Face mirror (the authors' zip)",
                  (Source("hf://datasets/isaaccorley/Sydney-Captions", "Sydney_captions.zip",
                          revision=SYDNEY_HUB_REVISION,
                          browser="download https://huggingface.co/datasets/isaaccorley/Sydney-Captions/"
                                  f"resolve/{SYDNEY_HUB_REVISION}/Sydney_captions.zip"),),
                  needs="huggingface_hub", size="not measured here"),
        ),
        citation="Qu, Li, Lu, Liu, Deep semantic understanding of high resolution remote "
                 "sensing image, CITS 2016, doi:10.1109/CITS.2016.7546397",
        licence=_LICENCE + "; the Hugging Face mirror is labelled apache-2.0 by its uploader",
        alternatives=(
            ("Google Drive https://drive.google.com/file/d/1zAA8qG8FZLCj2t4t9JPgNS48sA2iltaU "
             "(same file name, used by torchrs)"),
            "MEGA https://mega.nz/folder/pG4yTYYA#4c4buNFLibryZnlujsrwEQ (RSICD_optimal page)",
        ),
    ),
}
NAMES = tuple(REGISTRY)


# ------------------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path) -> str:
    return pooch.file_hash(str(path), alg="sha256")


def read_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/SHA256SUMS`` (empty when absent)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            out[name.strip()] = digest.strip().lower()
    return out


def write_manifest(folder: Path, entries: dict[str, str]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(entries.items())))
    os.replace(tmp, folder / MANIFEST)


def _check_hex(sha256: str) -> str:
    s = sha256.strip().lower()
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise PrepareError(f"not a sha256 hex digest: {sha256!r}")
    return s


# ------------------------------------------------------------------------------------ download
def _manual_hint(url: str, dest: Path, browser: str | None = None) -> str:
    how = browser or f"download {url} by hand (a browser, curl -L -C -, a mirror)"
    return (f"{how}, save it as {dest} and rerun; the tool then skips the download and "
            f"verifies the file")


def fetch(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = 30.0,
          progress: bool = True, what: str = "", browser: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (gdown: Google Drive's confirmation page, resume); verify ``sha256``.

    An existing ``dest`` is not downloaded again, only verified.  An interrupted download keeps its bytes in
    ``dest.name*.part`` and a rerun resumes there (restarting when the server ignores ranges); a checksum
    mismatch deletes the download.  ``file://`` URLs are copied.  Raises :class:`DownloadError` (naming
    ``what``, the URL and the manual way) or :class:`ChecksumError`.
    """
    dest = Path(dest)
    label = f"{what}: " if what else ""
    want = _check_hex(sha256) if sha256 else None
    if dest.is_file():
        _verify(dest, want, label, downloaded=False)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, dest, timeout, progress)
        if _is_web_page(dest, url):
            dest.unlink()
            raise DownloadError("the server sent a web page, not the file (a login, confirmation or quota "
                                "page?)")
    except (DownloadError, gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError,
            requests.RequestException, OSError) as exc:
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            why = f"HTTP {exc.response.status_code} {exc.response.reason}"
        elif isinstance(exc, requests.ConnectionError | requests.Timeout | OSError):
            why = f"{exc} (offline or host unreachable?)"
        else:  # gdown's first line (its next ones name its own command line)
            why = str(exc).strip().splitlines()[0].rstrip(".")
        parts = [p for p in dest.parent.glob(dest.name + "*.part") if p.stat().st_size]
        kept = (f"\n(the {parts[0].stat().st_size} bytes received are kept in {parts[0]}; a rerun resumes "
                f"from there)" if parts else "")
        raise DownloadError(f"{label}cannot download {url}: {why}.\nTo continue: "
                            + _manual_hint(url, dest, browser) + kept) from exc
    _verify(dest, want, label, downloaded=True)
    return dest


def _download(url: str, dest: Path, timeout: float, progress: bool) -> None:
    if url.startswith("file:"):
        tmp = dest.with_name(dest.name + ".copy")
        shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), tmp)
        os.replace(tmp, dest)
        return
    get = dict(output=str(dest), quiet=not progress, resume=True, use_cookies=False, timeout=timeout)
    try:
        gdown.download(url, **get)
    except gdown.exceptions.DownloadError as exc:
        if "did not honor the requested byte range" not in str(exc):
            raise
        for part in dest.parent.glob(dest.name + "*.part"):  # no resume on this server: start over
            part.unlink()
        gdown.download(url, **get)


def _is_web_page(path: Path, url: str) -> bool:
    if urllib.parse.urlsplit(url).path.lower().endswith((".html", ".htm")):
        return False
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _verify(path: Path, want: str | None, label: str, downloaded: bool) -> None:
    if want is None:
        return
    got = sha256_file(path)
    if got != want:
        if downloaded:
            path.unlink()
        fix = ("the download was deleted; rerun to download again, or check the URL" if downloaded
               else f"delete {path} to download it again, or fix the expected checksum")
        raise ChecksumError(f"{label}sha256 mismatch for {path.name}: expected {want}, got {got}"
                            f"; {fix}")


def _is_commit(revision: str | None) -> bool:
    return bool(revision) and re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def _read_revisions(downloads: Path) -> dict[str, str]:
    path = downloads / HUB_REVISIONS
    lines = path.read_text().splitlines() if path.is_file() else []
    return dict(line.split()[:2] for line in lines if len(line.split()) >= 2)


def fetch_hub(src: Source, downloads: Path, *, timeout: float = 30.0, what: str = "",
              log: Callable[[str], None] = print) -> list[Path]:
    """The files of Hub source ``src`` under ``downloads`` (repository paths kept), at its revision.

    A branch revision is resolved to a commit once, recorded in ``downloads/HUB_REVISIONS`` and reused, so
    later calls fetch the same files.  Raises :class:`DownloadError` naming the repository, the revision and
    the manual way."""
    repo = src.url.removeprefix("hf://datasets/").strip("/")
    recorded = _read_revisions(downloads)
    revision = src.revision if _is_commit(src.revision) else recorded.get(repo, src.revision or "main")
    label = f"{what}: " if what else ""
    try:
        commit = revision if _is_commit(revision) else HfApi().dataset_info(repo, revision=revision,
                                                                            timeout=timeout).sha
        snapshot_download(repo, repo_type="dataset", revision=commit, allow_patterns=[src.filename],
                          local_dir=downloads, etag_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo/revision, HTTP: all reported alike
        raise DownloadError(f"{label}cannot download {src.filename} from {src.url} at revision {revision}: "
                            f"{type(exc).__name__}: {str(exc).strip()[:300]}.\nTo continue: "
                            + _manual_hint(src.url, downloads, src.browser)) from exc
    files = sorted(p for p in downloads.glob(src.filename) if p.is_file())
    if not files:
        raise DownloadError(f"{label}{src.url} at revision {commit} has no file matching {src.filename}")
    if recorded.get(repo) != commit and not _is_commit(src.revision):
        recorded[repo] = commit
        (downloads / HUB_REVISIONS).write_text("".join(f"{r} {c}\n" for r, c in sorted(recorded.items())))
        log(f"{label}{repo} revision {src.revision} is commit {commit} (recorded in "
            f"{downloads / HUB_REVISIONS}; pin it in the registry)")
    return files


# -------------------------------------------------------------------------------------- unpack
def archive_kind(path: str | Path) -> str:
    """``zip``, ``tar``, ``rar`` or ``file`` (not an archive), from the content."""
    path = Path(path)
    if rarfile.is_rarfile(path):
        return "rar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    return "file"


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def unpack(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip, tar(.gz/.bz2/.xz) or rar ``archive`` into ``dest``; skip if already done.

    Members with absolute paths, ``..`` or links leading out of ``dest`` are refused (:class:`UnpackError`).
    Extraction goes to ``dest.tmp`` and is renamed to ``dest`` at the end, so ``dest`` existing means complete.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    kind = archive_kind(archive)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if kind == "tar":
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out
        elif kind in ("zip", "rar"):
            with (zipfile.ZipFile if kind == "zip" else rarfile.RarFile)(archive) as af:
                bad = [n for n in af.namelist() if n.startswith("/") or not _inside(tmp.resolve(), n)]
                if bad:
                    raise UnpackError(f"{archive}: member(s) escape the destination: {bad[:3]}")
                af.extractall(tmp)
        else:
            raise UnpackError(f"{archive}: not a zip, tar or rar archive")
    except tarfile.FilterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnpackError(f"{archive}: member escapes the destination: {exc}") from exc
    except rarfile.RarCannotExec as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnpackError(f"{archive} is a RAR archive and rarfile found no tool to unpack it: install unrar "
                          f"(apt-get install unrar), 7z (p7zip-full) or bsdtar (libarchive-tools); or "
                          f"extract it by hand, pack the result as a zip and rerun with --url "
                          f"file://PATH/TO.zip") from exc
    except (zipfile.BadZipFile, tarfile.TarError, rarfile.Error, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnpackError(f"{archive}: damaged archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return dest


# -------------------------------------------------------------------------------------- arrange
def _find_annotation(tree: Path, spec: DatasetSpec) -> Path:
    for pattern in spec.json_glob:
        found = sorted(p for p in tree.rglob(pattern)
                       if p.is_file() and "__MACOSX" not in p.parts)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise PrepareError(f"{spec.name}: several annotation files match {pattern}: "
                               + ", ".join(str(p.relative_to(tree)) for p in found))
    raise PrepareError(f"{spec.name}: no annotation file ({' or '.join(spec.json_glob)}) in the "
                       f"downloaded files (unpacked at {tree}); is it the right archive?")


def _find_image_dir(tree: Path, filenames: list[str], spec: DatasetSpec) -> Path:
    """The folder under ``tree`` holding the most of ``filenames`` (judged on a sample)."""
    sample = filenames[:: max(1, len(filenames) // 50)][:50]
    candidates: dict[Path, int] = {}
    first = filenames[0]
    for p in tree.rglob(Path(first).name):
        if p.is_file() and p.as_posix().endswith(first):
            base = p
            for _ in Path(first).parts:
                base = base.parent
            candidates[base] = sum((base / f).is_file() for f in sample)
    if not candidates:
        raise PrepareError(f"{spec.name}: image {first!r} (named first in the annotations) is "
                           f"not in the downloaded files (unpacked at {tree})")
    return max(candidates, key=candidates.get)


def _unpack_nested(tree: Path) -> None:
    """Unpack archives found inside ``tree`` (one level), e.g. UCM's imgs.rar inside its zip."""
    for p in sorted(tree.rglob("*")):
        if p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES) and archive_kind(p) != "file":
            unpack(p, p.with_name(p.name + ".d"))
            p.unlink()


def _install(spec: DatasetSpec, folder: Path, image_dir: Path, ann: Path) -> None:
    """Move ``image_dir`` and ``ann`` into place as ``folder/images`` and ``folder/<annotation>``."""
    for old in [folder / "images", *folder.glob("dataset*.json")]:
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    os.replace(image_dir, folder / "images")
    os.replace(ann, folder / spec.annotation)


def _arrange(spec: DatasetSpec, folder: Path, files: list[Path], staging: Path) -> None:
    for i, f in enumerate(files):
        if archive_kind(f) == "file":
            shutil.copy2(f, staging / f.name)
        else:
            unpack(f, staging / f"{i}_{f.name}.d")
    _unpack_nested(staging)
    ann = _find_annotation(staging, spec)
    try:
        records = json.loads(ann.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrepareError(f"{spec.name}: cannot read {ann.name}: {exc}") from exc
    names = [r.get("filename") for r in records.get("images", [])
             if isinstance(r, dict)] if isinstance(records, dict) else []
    names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    if not names:
        raise PrepareError(f"{spec.name}: {ann.name} names no images (not Karpathy format?)")
    _install(spec, folder, _find_image_dir(staging, names, spec), ann)


def from_parquet(spec: DatasetSpec, folder: Path, files: list[Path], staging: Path) -> None:
    """Write ``images/`` and the Karpathy json from parquet files with columns ``filename``, ``captions``
    (list of strings) and ``image`` (``{bytes, path}``), as the Hub's image data sets store them.

    The split is the file name's first word (``train``, ``valid``/``validation``/``val``, ``test``); the
    image file name is the last part of ``filename``.  A row without a name, captions or image bytes, a name
    seen twice, or a file without these columns is a :class:`PrepareError` naming the file and the row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (staging / "images").mkdir()
    records: list[dict] = []
    seen: dict[str, str] = {}
    named = [(_PARQUET_SPLITS.get(re.match(r"[a-z]*", f.name.lower()).group()), f) for f in files]
    for split, f in named:
        if split is None:
            raise PrepareError(f"{spec.name}: {f}: the file name does not start with a split "
                               f"({', '.join(_PARQUET_SPLITS)})")
    for split, f in sorted(named, key=lambda sf: (data.SPLITS.index(sf[0]), sf[1].name)):
        try:
            batches = pq.ParquetFile(f).iter_batches(batch_size=256, columns=["filename", "captions", "image"])
            row = 0
            for batch in batches:
                for r in batch.to_pylist():
                    where = f"{spec.name}: {f}: row {row}"
                    row += 1
                    name = Path(str(r["filename"] or "")).name
                    caps = [c.strip() for c in r["captions"] or [] if isinstance(c, str) and c.strip()]
                    blob = r["image"].get("bytes") if isinstance(r["image"], dict) else r["image"]
                    if not name or not caps or not blob:
                        raise PrepareError(f"{where}: no {'file name' if not name else 'caption' if not caps else 'image bytes'}")
                    if name in seen:
                        raise PrepareError(f"{where}: image {name!r} again (first at {seen[name]})")
                    seen[name] = where
                    (staging / "images" / name).write_bytes(blob)
                    records.append({"filename": name, "imgid": len(records), "split": split,
                                    "sentences": [{"raw": c, "tokens": data.tokenize(c)} for c in caps]})
        except (pa.ArrowException, OSError) as exc:
            raise PrepareError(f"{spec.name}: {f}: not a parquet file with columns filename, captions, "
                               f"image: {exc}") from exc
    ann = staging / spec.annotation
    ann.write_text(json.dumps({"images": records, "dataset": spec.name}))
    _install(spec, folder, staging / "images", ann)


# ---------------------------------------------------------------------------------------- checks
def check_counts(spec: DatasetSpec, ann: data.Annotations) -> list[str]:
    """How ``ann`` differs from the published split sizes and five captions an image (empty: it does not)."""
    if spec.expected is None:
        return []
    got = {s: len(ann.split(s)) for s in spec.expected}
    out = [f"{s} has {got[s]:,} images, published {n:,}" for s, n in spec.expected.items() if got[s] != n]
    odd = sum(len(r.captions) != data.CAPTIONS_PER_IMAGE for r in ann.images)
    if odd:
        out.append(f"{odd} images have other than {data.CAPTIONS_PER_IMAGE} captions")
    return out


def compare_test_captions(ann: data.Annotations, published: str | Path) -> list[str]:
    """How the test captions of ``ann`` differ from the published ones at ``published`` (any format
    :func:`osdpm_lib.data.load` reads) after normalisation (Karpathy tokens); empty when equal."""
    def norm(recs):
        return {Path(r.filename).name: sorted(" ".join(data.tokenize(c)) for c in r.captions) for r in recs}

    ours, theirs = norm(ann.split("test")), norm(data.load(published, allow_shared_images=True).split("test"))
    out = []
    if ours.keys() != theirs.keys():
        out.append(f"test images: {len(ours.keys() - theirs.keys())} not published as test, "
                   f"{len(theirs.keys() - ours.keys())} published ones missing "
                   f"(e.g. {sorted(ours.keys() ^ theirs.keys())[:3]})")
    differ = sorted(f for f in ours.keys() & theirs.keys() if ours[f] != theirs[f])
    if differ:
        out.append(f"{len(differ)} test images have other captions than published (e.g. {differ[:3]})")
    return out


def _check(spec: DatasetSpec, ann: data.Annotations, log: Callable[[str], None]) -> None:
    if spec.expected is not None:
        diffs = check_counts(spec, ann)
        total = sum(spec.expected.values())
        log(f"{spec.name}: differs from the published data set: " + "; ".join(diffs) if diffs else
            f"{spec.name}: {total:,} images, {data.CAPTIONS_PER_IMAGE} captions each, splits as published")
    if spec.published:
        where = paths.resolve(spec.published)
        if not where.exists():
            log(f"{spec.name}: published captions not found at {where}; test captions not compared")
            return
        diffs = compare_test_captions(ann, where)
        log(f"{spec.name}: test captions differ from {where}: " + "; ".join(diffs) if diffs else
            f"{spec.name}: test captions equal the published ones ({where}) after normalisation")


# -------------------------------------------------------------------------------------- prepare
def _on_disk(src: Source, folder: Path) -> list[Path]:
    """``src``'s files under ``folder/downloads`` (saved by this tool, by hand, or by the Hub client)."""
    downloads = folder / "downloads"
    if src.hub:
        return sorted(p for p in downloads.glob(src.filename) if p.is_file())
    return [downloads / src.filename] if (downloads / src.filename).is_file() else []


def _complete(src: Source, folder: Path, manifest: dict[str, str]) -> bool:
    """Whether ``src`` needs no download: its file is there (Hub: its files, all recorded in the manifest)."""
    found = _on_disk(src, folder)
    return bool(found) and (not src.hub or all(p.relative_to(folder).as_posix() in manifest for p in found))


def _url_route(url: str, spec: DatasetSpec) -> Route:
    """``--url``: one archive (also ``file://``), or a local folder whose files are the sources."""
    local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)) if url.startswith("file:") \
        else Path(url)
    if "://" not in url or url.startswith("file:"):
        if local.is_dir():
            files = sorted(p for p in local.rglob("*") if p.is_file())
            if not files:
                raise PrepareError(f"{spec.name}: {local} is an empty folder")
            return Route(f"folder {local}", tuple(Source(p.resolve().as_uri(), p.relative_to(local).as_posix())
                                                  for p in files))
        url = local.resolve().as_uri() if "://" not in url else url
    fname = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/")).name
    return Route("--url", (Source(url, fname or f"{spec.name}.archive"),))


def prepare(name: str, root: str | Path = "data", *, url: str | None = None,
            sha256: str | None = None, timeout: float = 30.0, progress: bool = True,
            log: Callable[[str], None] = print, overlaps: bool = True) -> Path:
    """Fetch, verify, unpack or convert, and arrange data set ``name`` into ``root/name``; return the folder.

    ``url`` replaces the registry's routes by one archive holding json + images, or a local folder (e.g. the
    parquet files of a Hub mirror); ``sha256`` pins the checksum of a single source.  Without a pinned checksum
    the first download's sha256 goes to ``SHA256SUMS`` and later calls verify against it.  Ends with
    ``data.load(folder, check_images=True)``, the registry's checks and (``overlaps``) the overlap lists with
    the other data sets prepared under ``root``; a second call does nothing but verify.
    """
    spec = _spec(name)
    folder = Path(root) / spec.name
    routes = (_url_route(url, spec),) if url else spec.routes
    if sha256:
        if len(routes) != 1 or len(routes[0].files) != 1 or routes[0].files[0].hub:
            raise PrepareError(f"{spec.name}: --sha256 needs a single downloaded file (give --url with a "
                               f"single archive)")
        routes = (replace(routes[0], files=(replace(routes[0].files[0], sha256=_check_hex(sha256)),)),)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    route = next((r for r in routes if all(_complete(s, folder, manifest) for s in r.files)), None)
    failures: list[str] = []
    for candidate in ([] if route else routes):
        try:
            for src in candidate.files:
                if src.hub:
                    fetch_hub(src, folder / "downloads", timeout=timeout, what=spec.name, log=log)
                else:
                    rel = f"downloads/{src.filename}"
                    fetch(src.url, folder / rel, src.sha256 or manifest.get(rel), timeout=timeout,
                          progress=progress, what=spec.name, browser=src.browser)
            route = candidate
            break
        except DownloadError as exc:
            failures.append(f"[{candidate.label}] {exc}")
            if candidate is not routes[-1]:
                log(f"{spec.name}: {candidate.label} failed; trying the next source")
    if route is None:
        raise DownloadError(f"{spec.name}: no source could be fetched (tried in order):\n" + "\n".join(failures))
    files, digests = [], {}
    for src in route.files:
        for path in _on_disk(src, folder):
            rel = path.relative_to(folder).as_posix()
            expected = src.sha256 or manifest.get(rel)
            _verify(path, expected, f"{spec.name}: ", downloaded=False)
            digest = expected or sha256_file(path)
            if manifest.get(rel) != digest:
                manifest[rel] = digest
                write_manifest(folder, manifest)
                if not src.sha256:
                    pin = f"; pin it with --sha256 {digest}" if len(route.files) == 1 and not src.hub else ""
                    log(f"{spec.name}: sha256 of {rel} is {digest} (not pinned; recorded in "
                        f"{folder / MANIFEST}{pin})")
            files.append(path)
            digests[rel] = digest
    marker = folder / MARKER
    done = json.loads(marker.read_text()) if marker.is_file() else None
    if done != digests or not (folder / spec.annotation).is_file() or not (folder / "images").is_dir():
        marker.unlink(missing_ok=True)
        log(f"{spec.name}: unpacking into {folder}")
        staging = folder / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            convert = from_parquet if all(f.suffix == ".parquet" for f in files) else _arrange
            convert(spec, folder, files, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        marker.write_text(json.dumps(digests, indent=1, sort_keys=True))
    ann = data.load(folder, check_images=True)
    counts = ", ".join(f"{k} {v['images']} images/{v['captions']} captions"
                       for k, v in data.summary(ann)["splits"].items())
    log(f"{spec.name}: ready at {folder} ({counts})")
    _check(spec, ann, log)
    if overlaps:
        for other in NAMES:
            if other != spec.name and (Path(root) / other / MARKER).is_file():
                overlap(spec.name, other, root, progress=progress, log=log, skip_current=True)
    return folder


def _spec(name: str) -> DatasetSpec:
    if name not in REGISTRY:
        raise PrepareError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    return REGISTRY[name]


# -------------------------------------------------------------------------------------- overlap
def overlap(a: str, b: str, root: str | Path = "data", *, max_distance: int = audit.MAX_DISTANCE,
            progress: bool = True, log: Callable[[str], None] = print, skip_current: bool = False) -> Path:
    """Near-duplicate images of prepared data sets ``a`` and ``b`` (:func:`osdpm_lib.audit.overlap`'s
    perceptual hash, ``max_distance`` bits) with their splits, written to ``root/overlap_<a>_<b>.csv``.

    Logs the number of pairs by split pair, test-in-train first (a test image of one set in the other's
    train split).  ``skip_current``: keep a CSV newer than both data sets' preparation."""
    folders = [Path(root) / _spec(n).name for n in (a, b)]
    out = Path(root) / f"overlap_{a}_{b}.csv"
    for f in folders:
        if not (f / MARKER).is_file():
            raise PrepareError(f"{f.name} is not prepared under {root}; run: python data_prep/download.py "
                               f"{f.name} --root {root}")
    if skip_current and out.is_file() and all(out.stat().st_mtime > (f / MARKER).stat().st_mtime
                                              for f in folders):
        return out
    ann_a, ann_b = (data.load(f) for f in folders)
    pairs = audit.overlap(ann_a, ann_b, *(f / "images" for f in folders), max_distance, progress)["pairs"]
    split_a, split_b = ({r.filename: r.split for r in x.images} for x in (ann_a, ann_b))
    table = pairs.assign(**{"split a": pairs["filename a"].map(split_a), "split b": pairs["filename b"].map(split_b)})
    table = table[["filename a", "split a", "filename b", "split b", "distance"]]
    table.columns = [f"{a} file", f"{a} split", f"{b} file", f"{b} split", "distance"]
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, out)
    counts = table.groupby([f"{a} split", f"{b} split"]).size()
    rank = {("test", "train"): 0, ("train", "test"): 0}
    order = sorted(counts.index, key=lambda k: (rank.get(k, 1 if "test" in k else 2), k))
    log(f"overlap {a} ~ {b}: {len(table)} near-duplicate pairs (phash within {max_distance} bits) -> {out}")
    for sa, sb in order:
        log(f"  {a} {sa} ~ {b} {sb}: {counts[(sa, sb)]}")
    return out


# ------------------------------------------------------------------------------------------ CLI
def describe(spec: DatasetSpec) -> str:
    """A readable registry entry for ``--list``: the routes in the order they are tried."""
    lines = [f"{spec.name}: -> <root>/{spec.name}/{spec.annotation} + images/"]
    for i, route in enumerate(spec.routes, 1):
        lines.append(f"  source {i}: {route.label}  [needs {route.needs or '-'}; {route.size or 'size unknown'}]")
        for s in route.files:
            pin = (f"revision {s.revision}" + ("" if _is_commit(s.revision) else " (a branch, not pinned: the "
                   "first download records its commit)")) if s.hub else \
                (f"sha256 {s.sha256}" if s.sha256 else "sha256 not pinned (recorded on first use)")
            lines.append(f"    {s.url} {s.filename}  [{pin}]")
            if s.browser:
                lines.append(f"      by hand: {s.browser}" + ("" if s.hub else
                             f"; save as <root>/{spec.name}/downloads/{s.filename}"))
    lines += [f"  also: {a}" for a in spec.alternatives]
    lines += [f"  cite: {spec.citation}", f"  licence: {spec.licence}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 with a message on any failure."""
    ap = argparse.ArgumentParser(prog="python data_prep/download.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", choices=[*REGISTRY, "all", "overlap"],
                    help="data set, all, or overlap (then two data sets)")
    ap.add_argument("pair", nargs="*", help="overlap: the two data sets, e.g. rsitmd rsicd")
    ap.add_argument("--root", type=Path, default=Path("data"), help="parent folder (default data)")
    ap.add_argument("--url", help="download this archive (json + images) instead, e.g. a mirror, "
                                  "file:///path/to.zip, or a local folder (e.g. parquet files)")
    ap.add_argument("--sha256", help="expected sha256 of the (single) archive")
    ap.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--no-overlap", action="store_true", help="skip the overlap lists after preparing")
    ap.add_argument("--list", action="store_true", help="print the registry and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n\n".join(describe(s) for s in REGISTRY.values()))
        return 0
    if not args.name:
        ap.error("give a data set name (or --list)")
    if (args.name == "overlap") != bool(args.pair) or (args.pair and len(args.pair) != 2):
        ap.error("overlap takes two data set names (e.g. overlap rsitmd rsicd); the others none")
    if args.name == "all" and (args.url or args.sha256):
        print("error: --url and --sha256 apply to one data set, not all", file=sys.stderr)
        return 2
    failed = 0
    jobs = [args.name] if args.name != "all" else list(NAMES)
    for name in jobs:
        try:
            if name == "overlap":
                overlap(*args.pair, root=args.root, progress=not args.no_progress)
            else:
                prepare(name, args.root, url=args.url, sha256=args.sha256, timeout=args.timeout,
                        progress=not args.no_progress, overlaps=not args.no_overlap)
        except (PrepareError, data.AnnotationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
