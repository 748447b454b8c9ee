"""Download and unpack the real retrieval data sets (RSICD, RSITMD, UCM-captions, Sydney-captions).

:func:`prepare` brings ``<root>/<name>/`` into the layout :func:`osdpm_lib.data.load` reads::

    <root>/<name>/dataset_<name>.json   Karpathy annotations (dataset_RSITMD.json for rsitmd)
    <root>/<name>/images/               the images the json names
    <root>/<name>/downloads/FILE        the downloaded archives, kept for verification
    <root>/<name>/SHA256SUMS            sha256 of each download (``sha256sum -c`` format)

Steps: fetch (resumable, ``.part`` file + HTTP ``Range``) -> verify sha256 -> unpack (zip, tar,
tar.gz; rar through an external ``unrar``/``7z``/``bsdtar``) -> arrange -> a final
``data.load(folder, check_images=True)``.  A second call only verifies.

Checksums: a source's ``sha256`` is verified when the registry or ``--sha256`` pins it.  No
public source publishes one for these archives, so by default the first download's sha256 is
written to ``SHA256SUMS`` and later runs verify against it (trust on first use); the value is
printed so it can be pinned.

Sources that need a browser (Google Drive virus-scan pages, Baidu, Mega) are not fetched; the
error names the page and the path to save the file at, after which a rerun verifies and unpacks
it.  ``url=`` replaces a data set's sources by one archive (a mirror, or a ``file://`` URL) that
holds both the json and the images.

Command line: ``python data_prep/download.py {rsicd,rsitmd,ucm,sydney,all} [--root data]
[--url URL] [--sha256 HEX]`` or ``--list``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from osdpm_lib import data

CHUNK = 1 << 20
MANIFEST = "SHA256SUMS"
MARKER = ".prepared.json"
_RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")
_ARCHIVE_SUFFIXES = (".zip", ".rar", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


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
    """One file to download. ``browser`` is a page to fetch it by hand when GET cannot."""

    url: str
    filename: str
    sha256: str | None = None
    kind: str = "auto"  # zip | tar | rar | file | auto (from the content)
    browser: str | None = None  # manual steps; set when a plain HTTP GET does not yield the file


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: its sources, the Karpathy json name it gets, citation, licence, alternatives."""

    name: str
    annotation: str  # file name under <root>/<name>/
    sources: tuple[Source, ...]
    citation: str
    licence: str
    json_glob: tuple[str, ...] = ("dataset*.json",)
    alternatives: tuple[str, ...] = field(default_factory=tuple)  # other places, for --list

    @property
    def automatic(self) -> bool:
        return all(s.browser is None for s in self.sources)


_GDRIVE = "https://drive.google.com/uc?export=download&id="
_LICENCE = ("no licence stated by the authors; research use, cite the paper; do not "
            "redistribute")

REGISTRY: dict[str, DatasetSpec] = {
    "rsicd": DatasetSpec(
        name="rsicd",
        annotation="dataset_rsicd.json",
        sources=(
            Source(_GDRIVE + "0B1jt7lJDEXy3SmZEdDd0aWpXcWc", "RSICD_images.rar", kind="rar",
                   browser="open https://drive.google.com/open?id=0B1jt7lJDEXy3SmZEdDd0aWpXcWc "
                           "(RSICD_images.rar, the images; a large file, Google Drive shows a "
                           "confirmation page)"),
            Source(_GDRIVE + "1q8EcBWuCbvtTnMILE60WOhd9S0C4rsfT", "dataset_rsicd.json",
                   kind="file",
                   browser="open https://drive.google.com/file/d/1q8EcBWuCbvtTnMILE60WOhd9S0C4rsfT"
                           " (dataset_rsicd.json)"),
        ),
        citation="Lu, Wang, Zheng, Li, Exploring Models and Data for Remote Sensing Image "
                 "Caption Generation, IEEE TGRS 56(4), 2018, doi:10.1109/TGRS.2017.2776321",
        licence=_LICENCE,
        alternatives=(
            ("official page: https://github.com/201528014227051/RSICD_optimal (Google Drive "
            "folder https://drive.google.com/open?id=0B1jt7lJDEXy3aE90cG9YSl9ScUk, Baidu "
            "http://pan.baidu.com/s/1bp71tE3, MEGA)"),
            ("Hugging Face parquet: https://huggingface.co/datasets/arampacha/rsicd (images "
            "inside parquet; needs pyarrow to convert, not done here)"),
        ),
    ),
    "rsitmd": DatasetSpec(
        name="rsitmd",
        annotation="dataset_RSITMD.json",
        sources=(
            Source(_GDRIVE + "1NJY86TAAUd8BVs7hyteImv8I2_Lh95W6", "RSITMD.zip",
                   browser="open https://drive.google.com/file/d/1NJY86TAAUd8BVs7hyteImv8I2_Lh95W6"
                           "/view (or Baidu https://pan.baidu.com/s/1gDj38mzUL-LmQX32PYxr0Q, "
                           "password NIST); it holds images/ and dataset_RSITMD.json; a zip, tar "
                           "or rar is recognised by its content, whatever its name"),
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
        sources=(
            Source(_GDRIVE + "1WNAQgdgghz0cz4rV_KmTNyNGF_m8cNkt", "UCM_captions.zip",
                   browser="open https://drive.google.com/file/d/1WNAQgdgghz0cz4rV_KmTNyNGF_m8cNkt"
                           " (UCM_captions.zip: dataset.json + images) or the MEGA folder "
                           "https://mega.nz/folder/wCpSzSoS#RXzIlrv--TDt3ENZdKN8JA (its zip holds "
                           "dataset.json and imgs.rar; unpacking the inner rar needs unrar/7z)"),
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
        sources=(
            Source("https://huggingface.co/datasets/isaaccorley/Sydney-Captions/resolve/"
                   "4b357e804147b78f6daf2deaed77260c53441bb5/Sydney_captions.zip",
                   "Sydney_captions.zip"),
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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


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
def _manual_hint(url: str, dest: Path, what: str, browser: str | None = None) -> str:
    how = browser or f"download {url} by hand (a browser, curl -L -C -, a mirror)"
    return (f"{how}, save it as {dest} and rerun; the tool then skips the download and "
            f"verifies the file")


def fetch(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = 30.0,
          progress: bool = True, what: str = "", browser: str | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest + '.part'``; verify ``sha256`` if given.

    An existing ``dest`` is not downloaded again, only verified.  The ``.part`` file is renamed
    to ``dest`` only once complete and verified; a checksum mismatch deletes it.  Servers that
    ignore ``Range`` (200 instead of 206) restart from zero; 416 on a complete ``.part`` finishes.
    Raises :class:`DownloadError` (naming ``what``, the URL, and the manual way) or
    :class:`ChecksumError`.
    """
    dest = Path(dest)
    label = f"{what}: " if what else ""
    want = _check_hex(sha256) if sha256 else None
    if dest.is_file():
        _verify(dest, want, label, downloaded=False)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _download(url, part, timeout, progress, dest.name)
    except (TimeoutError, DownloadError, urllib.error.URLError, OSError) as exc:
        if isinstance(exc, DownloadError):
            why = str(exc)
        else:  # offline, DNS failure, refused, reset, timeout
            why = f"{getattr(exc, 'reason', exc)} (offline or host unreachable?)"
        kept = (f"\n(the {part.stat().st_size} bytes received are kept in {part}; a rerun "
                f"resumes from there)" if part.is_file() and part.stat().st_size else "")
        raise DownloadError(f"{label}cannot download {url}: {why}.\nTo continue: "
                            + _manual_hint(url, dest, what, browser) + kept) from exc
    if want:
        try:
            _verify(part, want, label, downloaded=True)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    return dest


def _verify(path: Path, want: str | None, label: str, downloaded: bool) -> None:
    if want is None:
        return
    got = sha256_file(path)
    if got != want:
        fix = ("the download was deleted; rerun to download again, or check the URL" if downloaded
               else f"delete {path} to download it again, or fix the expected checksum")
        raise ChecksumError(f"{label}sha256 mismatch for {path.name}: expected {want}, got {got}"
                            f"; {fix}")


def _download(url: str, part: Path, timeout: float, progress: bool, name: str) -> None:
    """Fill ``part`` with the whole body of ``url``, continuing from the bytes already there."""
    for _ in range(3):  # at most: ranged try, restart after 416 / wrong range, full download
        start = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "osdpm-download/1"})
        if start and url.lower().startswith(("http://", "https://")):
            req.add_header("Range", f"bytes={start}-")
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:
                total = _content_range_total(exc.headers.get("Content-Range", ""))
                exc.close()
                if total == start:  # the .part is already complete
                    return
                part.unlink()  # the .part is longer than the file, or unknown: start over
                continue
            raise DownloadError(f"HTTP {exc.code} {exc.reason}") from exc
        with resp:
            status = getattr(resp, "status", None) or 200
            ctype = resp.headers.get("Content-Type", "") or ""
            if ctype.startswith("text/html") and not url.lower().endswith((".html", ".htm")):
                raise DownloadError("the server sent a web page, not the file (a login, "
                                    "confirmation or quota page?)")
            if status == 206:
                first = _content_range_start(resp.headers.get("Content-Range", ""))
                if first != start:
                    part.unlink()
                    continue
                mode, done = "ab", start
            else:  # 200: the whole body (Range ignored or not sent)
                mode, done = "wb", 0
            length = resp.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            with open(part, mode) as f, tqdm(total=total, initial=done, unit="B",
                                             unit_scale=True, desc=name,
                                             disable=not progress) as bar:
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
                    done += len(block)
            if total is not None and done < total:
                raise DownloadError(f"connection closed after {done} of {total} bytes")
            return
    raise DownloadError("the server's Range answers are inconsistent")


def _content_range_total(value: str) -> int | None:
    tail = value.rpartition("/")[2].strip()
    return int(tail) if tail.isdigit() else None


def _content_range_start(value: str) -> int | None:
    try:  # "bytes 100-199/200"
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# -------------------------------------------------------------------------------------- unpack
def archive_kind(path: str | Path) -> str:
    """``zip``, ``tar``, ``rar`` or ``file`` (not an archive), from the content."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_RAR_MAGIC):
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

    Members with absolute paths, ``..`` or links leading out of ``dest`` are refused
    (:class:`UnpackError`) before anything is written.  Extraction goes to ``dest.tmp`` and is
    renamed to ``dest`` at the end, so ``dest`` existing means complete.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir():
        return dest
    kind = archive_kind(archive)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = tmp.resolve()
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                bad = [n for n in zf.namelist() if n.startswith("/") or not _inside(root, n)]
                if bad:
                    raise UnpackError(f"{archive}: member(s) escape the destination: {bad[:3]}")
                zf.extractall(tmp)
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                bad = [m.name for m in members
                       if m.name.startswith("/") or not _inside(root, m.name)
                       or (m.issym() and not _inside(root, str(Path(m.name).parent / m.linkname)))
                       or (m.islnk() and not _inside(root, m.linkname))]
                if bad:
                    raise UnpackError(f"{archive}: member(s) escape the destination: {bad[:3]}")
                tf.extractall(tmp, filter="data")
        elif kind == "rar":
            _unrar(archive, tmp)
        else:
            raise UnpackError(f"{archive}: not a zip, tar or rar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnpackError(f"{archive}: damaged archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return dest


def _unrar(archive: Path, dest: Path) -> None:
    tools = [("unrar", ["x", "-o+", "-idq"]), ("7z", ["x", "-y", "-bd"]), ("bsdtar", ["-xf"])]
    for tool, args in tools:
        exe = shutil.which(tool)
        if exe:
            out = {"unrar": [str(dest) + os.sep], "7z": [f"-o{dest}"], "bsdtar": ["-C", str(dest)]}
            res = subprocess.run([exe, *args, str(archive), *out[tool]], check=False,
                                 capture_output=True,
                                 text=True)
            if res.returncode:
                raise UnpackError(f"{archive}: {tool} failed: {res.stderr.strip()[-300:]}")
            root = dest.resolve()
            for p in dest.rglob("*"):
                if p.is_symlink() or not _inside(root, str(p.relative_to(dest))):
                    raise UnpackError(f"{archive}: member escapes the destination: {p}")
            return
    raise UnpackError(f"{archive} is a RAR archive and none of unrar, 7z, bsdtar is installed "
                      f"(apt-get install unrar or p7zip-full); or extract it by hand, pack the "
                      f"result as a zip and rerun with --url file://PATH/TO.zip")


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


def _arrange(spec: DatasetSpec, folder: Path, files: list[Path]) -> None:
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
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
        image_dir = _find_image_dir(staging, names, spec)
        for old in [folder / "images", *folder.glob("dataset*.json")]:
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        os.replace(image_dir, folder / "images")
        os.replace(ann, folder / spec.annotation)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------------------------- prepare
def prepare(name: str, root: str | Path = "data", *, url: str | None = None,
            sha256: str | None = None, timeout: float = 30.0, progress: bool = True,
            log: Callable[[str], None] = print) -> Path:
    """Fetch, verify, unpack and arrange data set ``name`` into ``root/name``; return the folder.

    ``url`` replaces the registry's sources by one archive holding json + images; ``sha256``
    pins the checksum of the (single) source.  Without a pinned checksum the first download's
    sha256 goes to ``SHA256SUMS`` and later calls verify against it.  Ends with
    ``data.load(folder, check_images=True)``; a second call does nothing but verify.
    """
    if name not in REGISTRY:
        raise PrepareError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    spec = REGISTRY[name]
    folder = Path(root) / spec.name
    sources = spec.sources
    if url:
        fname = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/")).name
        sources = (Source(url, fname or f"{spec.name}.archive"),)
    if sha256:
        if len(sources) != 1:
            raise PrepareError(f"{spec.name} has {len(sources)} sources; --sha256 needs one "
                               f"(give --url with a single archive)")
        sources = (Source(sources[0].url, sources[0].filename, _check_hex(sha256),
                          sources[0].kind, sources[0].browser),)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    files, digests = [], {}
    for src in sources:
        rel = f"downloads/{src.filename}"
        dest = folder / rel
        pinned = src.sha256 or None
        expected = pinned or manifest.get(rel)
        if src.browser and not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)  # ready for the file saved by hand
            raise DownloadError(
                f"{spec.name}: {src.filename} cannot be fetched by a script (its host needs a "
                f"browser).\nTo continue: {src.browser}, save it as {dest} and rerun; the tool "
                f"then skips the download and verifies the file.\n(source: {src.url})")
        fetch(src.url, dest, expected, timeout=timeout, progress=progress, what=spec.name,
              browser=src.browser)
        digest = expected or sha256_file(dest)
        if rel not in manifest or manifest[rel] != digest:
            manifest[rel] = digest
            write_manifest(folder, manifest)
            if not pinned:
                log(f"{spec.name}: sha256 of {src.filename} is {digest} (not pinned; recorded "
                    f"in {folder / MANIFEST}; pin it with --sha256 {digest})")
        files.append(dest)
        digests[rel] = digest
    marker = folder / MARKER
    done = json.loads(marker.read_text()) if marker.is_file() else None
    if done != digests or not (folder / spec.annotation).is_file() or not (folder / "images").is_dir():
        marker.unlink(missing_ok=True)
        log(f"{spec.name}: unpacking into {folder}")
        _arrange(spec, folder, files)
        marker.write_text(json.dumps(digests, indent=1, sort_keys=True))
    ann = data.load(folder, check_images=True)
    counts = ", ".join(f"{k} {v['images']} images/{v['captions']} captions"
                       for k, v in data.summary(ann)["splits"].items())
    log(f"{spec.name}: ready at {folder} ({counts})")
    return folder


def describe(spec: DatasetSpec) -> str:
    """A readable registry entry for ``--list``."""
    lines = [(f"{spec.name}: -> <root>/{spec.name}/{spec.annotation} + images/  "
             f"({'automatic' if spec.automatic else 'needs a manual download'})")]
    for s in spec.sources:
        pin = f"sha256 {s.sha256}" if s.sha256 else "sha256 not pinned (recorded on first use)"
        lines.append(f"  source {s.filename}: {s.url}  [{pin}]")
        if s.browser:
            lines.append(f"    by hand: {s.browser}; save as <root>/{spec.name}/downloads/"
                         f"{s.filename}")
    lines += [f"  also: {a}" for a in spec.alternatives]
    lines += [f"  cite: {spec.citation}", f"  licence: {spec.licence}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; 0 on success, 2 with a message on any failure."""
    ap = argparse.ArgumentParser(prog="python data_prep/download.py",
                                 description=__doc__.split("\n")[0])
    names = tuple(REGISTRY)
    ap.add_argument("name", nargs="?", choices=[*names, "all"], help="data set, or all")
    ap.add_argument("--root", type=Path, default=Path("data"), help="parent folder (default data)")
    ap.add_argument("--url", help="download this archive (json + images) instead, e.g. a mirror "
                                  "or file:///path/to.zip")
    ap.add_argument("--sha256", help="expected sha256 of the (single) archive")
    ap.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--list", action="store_true", help="print the registry and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n\n".join(describe(s) for s in REGISTRY.values()))
        return 0
    if not args.name:
        ap.error("give a data set name (or --list)")
    if args.name == "all" and (args.url or args.sha256):
        print("error: --url and --sha256 apply to one data set, not all", file=sys.stderr)
        return 2
    failed = 0
    for name in names if args.name == "all" else (args.name,):
        try:
            prepare(name, args.root, url=args.url, sha256=args.sha256, timeout=args.timeout,
                    progress=not args.no_progress)
        except (PrepareError, data.AnnotationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
