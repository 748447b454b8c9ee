"""Annotation model and readers for remote-sensing image-text retrieval data sets.

Three on-disk formats are read into one in-memory model, :class:`Annotations`:

``karpathy``
    ``dataset_rsicd.json``, ``dataset_RSITMD.json``, UCM ``dataset.json``:
    ``{"images": [{"filename", "split", "sentences": [{"raw", "tokens"}], ...}]}``.
    PATH is the file or a folder holding exactly one ``dataset*.json``; ``restval`` counts as
    ``train``.
``amfmn``
    A folder with ``{split}_caps.txt`` + ``{split}_filename.txt``.  Either five caption lines per
    filename line (AMFMN train files) or one filename line per caption line, with consecutive equal
    filenames forming one image (AMFMN test files); the line counts decide which.
``albef``
    ALBEF/PIR json lists of ``{"image": path, "caption": [...] | "text"}``; entries sharing an image
    are grouped.  The split is the word ``train``, ``val`` or ``test`` in the file name (so
    ``retrieval_test.json`` is test); PATH is such a file or a folder of them.

Blank captions are dropped with one :class:`BlankCaptionWarning` per file; malformed input raises
:class:`AnnotationError` naming the file and the line (1-based) or record (0-based) at fault.  An image file
referenced by two records (in two splits: same-split repeats are refused by the readers) is an error naming
both, unless ``allow_shared_images`` (:func:`shared_images` lists them; the audit reports them).

Images are decoded by one function, :func:`read_image` (the image cache, :func:`check_image_files` and the audit's
hashes all use it), into 8-bit RGB:

* 8-bit L, RGB, P (and 1-bit, CMYK, YCbCr) images are converted by Pillow;
* an alpha channel (RGBA, LA, PA, TIFF extra samples marked as alpha) is dropped, not composited;
* 16-bit, 32-bit and float images with 1 or 3 bands are scaled to 8 bits by a per-image percentile stretch:
  the 2nd and 98th percentiles of all the image's samples (:data:`STRETCH_PERCENTILES`) map to 0 and 255,
  values outside are clipped (as remote-sensing viewers show such images); when the two percentiles are
  equal the minimum and maximum are used, and a constant image becomes black;
* an image with another number of bands (a 4-band RGB+NIR TIFF, say) is an error naming the file and its band
  count unless ``bands`` picks 1 or 3 of them (0-based indices, e.g. ``(2, 1, 0)``).

TIFFs that Pillow would misread (several bands of more than 8 bits, floats, more than 3 bands) are read with
``tifffile``; 16-bit RGB(A) PNGs, of which Pillow keeps only the high byte, are refused.

Command line::

    python -m osdpm_lib.data summary PATH [--format karpathy|amfmn|albef] [--check-images]
                                          [--image-dir DIR] [--bands B,B,B] [--allow-shared-images]

``--check-images`` decodes every image fully (in parallel, on every available core), reports every missing or
bad image with its record and exits 2, or adds ``"image check"`` (images checked, how many were rescaled from
16-bit/float, how many had an alpha channel dropped) to the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

SPLITS = ("train", "val", "test")
FORMATS = ("karpathy", "amfmn", "albef")
CAPTIONS_PER_IMAGE = 5  # grouping of AMFMN "grouped" (train) files

_SCENE_RE = re.compile(r"([A-Za-z][A-Za-z_]*?)_\d+")
_SPLIT_WORD_RE = re.compile(r"(?<![a-z])(train|val|test)(?![a-z])")

# A reader returns the resolved source and the records; each record's origin ("FILE: line N" or
# "FILE: record I") prefixes later errors about it, e.g. a missing or corrupt image.
_Entries = list["ImageRecord"]


class AnnotationError(ValueError):
    """Bad annotation input; the message names the file and line (1-based) or record (0-based)."""


class BlankCaptionWarning(UserWarning):
    """Blank captions were dropped while reading an annotation file."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file name (relative to the image folder), split, captions and scene class.

    ``origin`` says where the record was read ("FILE: line N" / "FILE: record I"), for error messages.
    """

    filename: str
    split: str
    captions: tuple[str, ...]
    scene: str | None = None
    origin: str = field(default="", compare=False)


@dataclass
class Annotations:
    """All images of a data set, in file order, with the format and path they were read from."""

    format: str
    source: Path
    images: list[ImageRecord]
    image_check: dict | None = field(default=None, compare=False)  # check_image_files's report, when run

    def split(self, name: str) -> list[ImageRecord]:
        """The images of split ``name`` (one of ``train``, ``val``, ``test``) in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [r for r in self.images if r.split == name]

    def splits(self) -> dict[str, list[ImageRecord]]:
        """The non-empty splits, ordered train, val, test."""
        return {name: recs for name in SPLITS if (recs := self.split(name))}

    def caption_image(self, split: str) -> tuple[list[str], np.ndarray]:
        """The split's captions flattened in image order, and for each caption its image's index."""
        records = self.split(split)
        captions = [c for r in records for c in r.captions]
        counts = np.array([len(r.captions) for r in records], dtype=np.int64)
        return captions, np.repeat(np.arange(len(records), dtype=np.int64), counts)


def with_val_split(ann: Annotations, fraction: float, seed: int) -> Annotations:
    """``ann`` with a validation split carved from train: ``round(fraction * n_train)`` (at least one) training
    images, drawn by ``numpy.random.default_rng(seed)``, move to ``val``; the others keep their split and order.
    ``fraction == 0``: ``ann`` itself.  Data with a val split of its own is refused (carving would change it)."""
    if not fraction:
        return ann
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    if ann.split("val"):
        raise ValueError(f"{ann.source}: has a val split of its own ({len(ann.split('val'))} images); "
                         "carve none (val_fraction 0)")
    train = [i for i, r in enumerate(ann.images) if r.split == "train"]
    if len(train) < 2:
        raise ValueError(f"{ann.source}: {len(train)} training image(s); too few to carve a val split from")
    n_val = min(len(train) - 1, max(1, round(fraction * len(train))))
    carved = {train[i] for i in np.random.default_rng(seed).permutation(len(train))[:n_val]}
    return Annotations(ann.format, ann.source, [dataclasses.replace(r, split="val") if i in carved else r
                                                for i, r in enumerate(ann.images)])


def merge_val(ann: Annotations) -> Annotations:
    """``ann`` with its val images counted as train (the final retrain on every non-test image)."""
    return Annotations(ann.format, ann.source, [dataclasses.replace(r, split="train") if r.split == "val" else r
                                                for r in ann.images])


def scene_from_filename(name: str) -> str | None:
    """The scene class an RSICD-style name encodes (``airport_348.jpg`` -> ``airport``) or None."""
    m = _SCENE_RE.fullmatch(Path(name).stem)
    return m.group(1) if m else None


def tokenize(raw: str) -> list[str]:
    """Karpathy tokens: lower-cased words without punctuation."""
    return re.findall(r"[a-z0-9]+", raw.lower())


def summary(ann: Annotations) -> dict:
    """``{"format": F, "splits": {split: {"images": N, "captions": M}}}`` over non-empty splits, plus
    ``"image check"`` (:func:`check_image_files`) when the images were checked."""
    out = {
        "format": ann.format,
        "splits": {
            name: {"images": len(recs), "captions": sum(len(r.captions) for r in recs)}
            for name, recs in ann.splits().items()
        },
    }
    if ann.image_check is not None:
        out["image check"] = ann.image_check
    return out


# --------------------------------------------------------------------------------------- helpers
def _split_name(name: Any, where: str) -> str:
    if name not in SPLITS:
        raise AnnotationError(
            f"{where}: unknown split {name!r}; expected one of {', '.join(SPLITS)}"
        )
    return name


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; unreadable files and non-UTF-8 bytes name the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise AnnotationError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from exc


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def _read_lines(path: Path) -> list[str]:
    """The file's lines, stripped; only newlines (\\n, \\r\\n, \\r) separate lines."""
    text = _read_text(path)
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]
    return lines[:-1] if text.endswith(("\n", "\r")) or not text else lines


def _warn_blank(path: Path, unit: str, positions: list[int]) -> None:
    if positions:
        warnings.warn(
            f"{path}: dropped {len(positions)} blank caption(s) at {unit} "
            + ", ".join(map(str, positions)),
            BlankCaptionWarning,
            stacklevel=4,
        )


def _check_unique(seen: dict, split: str, filename: str, where: str, at: str) -> None:
    """Raise if ``filename`` already occurred in ``split``; ``at`` ("line 3") is remembered."""
    if (split, filename) in seen:
        raise AnnotationError(
            f"{where}: duplicate filename {filename!r} in split {split!r} "
            f"(first at {seen[split, filename]})"
        )
    seen[split, filename] = at


def _require(item: Any, keys: tuple[str, ...], where: str) -> list[Any]:
    if not isinstance(item, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise AnnotationError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    return [item[k] for k in keys]


def _record(filename: str, split: str, captions: list[str], origin: str) -> ImageRecord:
    return ImageRecord(filename, split, tuple(captions), scene_from_filename(filename), origin)


# ---------------------------------------------------------------------------------------- readers
def _read_karpathy(path: Path) -> tuple[Path, _Entries]:
    if path.is_dir():
        found = sorted(path.glob("dataset*.json"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise AnnotationError(f"{path}: expected exactly one dataset*.json, found {names}")
        path = found[0]
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(f'{path}: expected an object with an "images" list (Karpathy format)')
    entries: _Entries = []
    seen: dict = {}
    blank: list[int] = []
    for i, item in enumerate(data["images"]):
        where = f"{path}: record {i}"
        filename, split, sentences = _require(item, ("filename", "split", "sentences"), where)
        split = _split_name("train" if split == "restval" else split, where)
        if not isinstance(filename, str) or not filename.strip():
            raise AnnotationError(f'{where}: "filename" must be a non-empty string')
        if not isinstance(sentences, list):
            raise AnnotationError(f'{where}: "sentences" must be a list')
        captions = []
        for j, sentence in enumerate(sentences):
            (raw,) = _require(sentence, ("raw",), f"{where}: sentence {j}")
            if not isinstance(raw, str):
                raise AnnotationError(f'{where}: sentence {j}: "raw" must be a string')
            captions.append(raw.strip())
        if not all(captions):
            blank.append(i)
        _check_unique(seen, split, filename.strip(), where, f"record {i}")
        entries.append(_record(filename.strip(), split, [c for c in captions if c], where))
    _warn_blank(path, "record(s)", blank)
    return path, entries


def _read_amfmn(path: Path) -> tuple[Path, _Entries]:
    folder = path if path.is_dir() else path.parent
    for p in sorted(folder.glob("*_caps.txt")) + sorted(folder.glob("*_filename.txt")):
        _split_name(p.name.rsplit("_", 1)[0], str(p))
    present = [
        s
        for s in SPLITS
        if (folder / f"{s}_caps.txt").exists() or (folder / f"{s}_filename.txt").exists()
    ]
    if not present:
        raise AnnotationError(f"{folder}: no {{train,val,test}}_caps.txt files (AMFMN format)")
    entries: _Entries = []
    seen: dict = {}
    for split in present:
        caps_path, names_path = folder / f"{split}_caps.txt", folder / f"{split}_filename.txt"
        for p, other in ((caps_path, names_path), (names_path, caps_path)):
            if not p.exists():
                raise AnnotationError(f"{p}: missing (needed with {other.name})")
        caps, names = _read_lines(caps_path), _read_lines(names_path)
        for n, name in enumerate(names, 1):
            if not name:
                raise AnnotationError(f"{names_path}: line {n}: blank filename")
        # groups: (filename, its 1-based line in names_path, 1-based caption lines)
        if len(caps) == CAPTIONS_PER_IMAGE * len(names):
            k = CAPTIONS_PER_IMAGE
            groups = [(nm, n + 1, range(k * n + 1, k * (n + 1) + 1)) for n, nm in enumerate(names)]
        elif len(caps) == len(names):
            groups = []
            for n, name in enumerate(names, 1):
                if groups and groups[-1][0] == name:
                    groups[-1][2].append(n)
                else:
                    groups.append((name, n, [n]))
        else:
            raise AnnotationError(
                f"{caps_path} has {len(caps)} lines and {names_path} has {len(names)} lines; "
                f"expected {CAPTIONS_PER_IMAGE} caption lines per filename line or one per line"
            )
        blank = []
        for name, n, lines in groups:
            _check_unique(seen, split, name, f"{names_path}: line {n}", f"line {n}")
            blank += [j for j in lines if not caps[j - 1]]
            captions = [caps[j - 1] for j in lines if caps[j - 1]]
            entries.append(_record(name, split, captions, f"{names_path}: line {n}"))
        _warn_blank(caps_path, "line(s)", blank)
    return folder, entries


def _albef_split(path: Path) -> str:
    words = set(_SPLIT_WORD_RE.findall(path.stem.lower()))
    if len(words) != 1:
        raise AnnotationError(
            f"{path}: unknown split; the file name must contain exactly one of {', '.join(SPLITS)}"
        )
    return words.pop()


def _read_albef(path: Path) -> tuple[Path, _Entries]:
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: no *.json files (ALBEF format)")
    by_split: dict[str, Path] = {}
    for file in files:
        split = _albef_split(file)
        if split in by_split:
            raise AnnotationError(
                f"{file}: second file for split {split!r} (first {by_split[split]})"
            )
        by_split[split] = file
    entries: _Entries = []
    for split in SPLITS:
        if split not in by_split:
            continue
        file = by_split[split]
        data = _read_json(file)
        if not isinstance(data, list):
            raise AnnotationError(f"{file}: expected a list of records (ALBEF format)")
        groups: dict[str, tuple[list[str], str]] = {}  # image -> (captions, origin), in order
        blank: list[int] = []
        for i, item in enumerate(data):
            where = f"{file}: record {i}"
            image, caption = _require(item, ("image", "caption"), where)
            captions = [caption] if isinstance(caption, str) else caption
            if not isinstance(image, str) or not image.strip():
                raise AnnotationError(f'{where}: "image" must be a non-empty string')
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise AnnotationError(f'{where}: "caption" must be a string or a list of strings')
            captions = [c.strip() for c in captions]
            if not all(captions):
                blank.append(i)
            groups.setdefault(image.strip(), ([], where))[0].extend(c for c in captions if c)
        _warn_blank(file, "record(s)", blank)
        entries += [_record(img, split, caps, where) for img, (caps, where) in groups.items()]
    return path, entries


_READERS: dict[str, Callable[[Path], tuple[Path, _Entries]]] = {
    "karpathy": _read_karpathy,
    "amfmn": _read_amfmn,
    "albef": _read_albef,
}


# ----------------------------------------------------------------------------------------- images
STRETCH_PERCENTILES = (2.0, 98.0)  # per-image stretch of 16-bit / float samples to 8 bits
READ_RULE = "rgb8-v2"              # changes whenever read_image decodes some file differently (image cache key)
LARGE_SET = 1000                   # from this many images check_image_files decodes in worker processes and
                                   # shows a progress bar (on a terminal)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_DEEP_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32S")  # one band, > 8 bits
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TIFF_ALPHA = (1, 2)               # ExtraSamples: associated, unassociated alpha


@dataclass(frozen=True)
class DecodedImage:
    """An image as :func:`read_image` decoded it."""

    image: Any                   # PIL.Image.Image, mode RGB, 8 bits per band, the file's size
    rescaled: bool = False       # 16-bit / 32-bit / float samples stretched to 8 bits
    alpha_dropped: bool = False  # the file had an alpha channel


def stretch_to_uint8(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to uint8 by the percentile stretch of :data:`STRETCH_PERCENTILES`, over all its samples.

    The low percentile maps to 0, the high one to 255, values outside are clipped and non-finite values become
    0.  If the two percentiles are equal the minimum and maximum are used instead; a constant image is black.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.uint8)
    values = x[finite]
    lo, hi = np.percentile(values, STRETCH_PERCENTILES)
    if hi <= lo:
        lo, hi = values.min(), values.max()
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    y = np.clip((np.where(finite, x, lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.rint(y * 255.0).astype(np.uint8)


def _check_bands(bands) -> tuple[int, ...] | None:
    if bands is None:
        return None
    bands = tuple(int(b) for b in bands)
    if len(bands) not in (1, 3) or min(bands) < 0:
        raise ValueError(f"bands must be 1 or 3 band indices from 0 (got {bands})")
    return bands


def _to_rgb8(x: np.ndarray, bands: tuple[int, ...] | None, where: str) -> tuple[np.ndarray, bool]:
    """``[H, W]`` or ``[H, W, C]`` samples (alpha already dropped) as uint8 ``[H, W, 3]``; True if rescaled."""
    x = x[..., None] if x.ndim == 2 else x
    if x.ndim != 3:
        raise AnnotationError(f"{where}: unexpected sample layout {x.shape}")
    n = x.shape[-1]
    if n not in (1, 3):
        if bands is None:
            raise AnnotationError(
                f"{where} has {n} bands; only 1 or 3 can be shown: pick them with bands=(r, g, b) "
                "(--bands R,G,B; indices from 0, e.g. 2,1,0), or a single band"
            )
        if max(bands) >= n:
            raise AnnotationError(f"{where} has {n} bands; bands={bands} asks for band {max(bands)}")
        x = x[..., list(bands)]
    rescaled = x.dtype not in (np.uint8, np.bool_)
    x = stretch_to_uint8(x) if rescaled else x.astype(np.uint8) * (255 if x.dtype == np.bool_ else 1)
    return np.ascontiguousarray(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x), rescaled


def _tiff_samples(path: Path) -> tuple[np.ndarray, bool] | None:
    """The samples ``[H, W, C]`` (alpha dropped, and whether there was one) of a TIFF that Pillow would misread:
    more than 8 bits or floats in several bands, or a band count other than 1 or 3.  None for other files."""
    with path.open("rb") as f:
        if f.read(4) not in _TIFF_MAGIC:
            return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        samples, extra = page.samplesperpixel, tuple(page.extrasamples)
        alpha = [samples - len(extra) + i for i, e in enumerate(extra) if e in _TIFF_ALPHA]
        plain = page.bitspersample <= 8 and page.sampleformat == 1  # unsigned integers of at most 8 bits
        if samples == 1 or (plain and samples - len(alpha) == 3):
            return None                                              # Pillow reads these right
        x = page.asarray()
        axes = page.axes
    if "S" not in axes or x.ndim != 3:
        raise ValueError(f"unexpected TIFF layout: axes {axes!r}, shape {x.shape}")
    x = np.moveaxis(x, axes.index("S"), -1)
    return x[..., [i for i in range(x.shape[-1]) if i not in alpha]], bool(alpha)


def read_image(path: str | Path, origin: str = "", bands=None) -> DecodedImage:
    """Decode the image file at ``path`` fully into 8-bit RGB by the rules in this module's docstring.

    The one reader of image files: the image cache (:func:`osdpm_lib.cache.image_cache`), :func:`check_image_files`
    and the audit's perceptual hashes use it.  A missing, truncated, corrupt or unsupported file raises
    :class:`AnnotationError` naming the file and ``origin`` (the record it comes from).  ``bands``: 1 or 3
    band indices (from 0) for images with another number of bands.
    """
    from PIL import Image

    path, bands = Path(path), _check_bands(bands)
    where = f"{origin + ': ' if origin else ''}image {path}"
    if not path.is_file():
        raise AnnotationError(f"{where} not found")
    samples = rgb = None
    try:
        tiff = _tiff_samples(path)
        if tiff is not None:
            samples, alpha = tiff
        else:
            with Image.open(path) as im:
                rawmode = im.tile[0][3] if im.tile else None
                if im.format == "PNG" and im.mode in ("RGB", "RGBA", "LA") and str(rawmode).endswith(";16B"):
                    raise AnnotationError(
                        f"{where}: a 16-bit {im.mode} PNG, of which Pillow reads only the high byte of each "
                        "sample; save it as a 16-bit TIFF"
                    )
                alpha = im.mode in _ALPHA_MODES
                im.load()                                      # full decode: truncated data raise here
                if im.mode in _DEEP_MODES:
                    samples = np.asarray(im)
                else:
                    rgb = im.convert("RGB")
    except AnnotationError:
        raise
    except Exception as exc:  # Pillow and tifffile raise many types for broken or unsupported files
        raise AnnotationError(f"{where} is unreadable: {exc}") from exc
    if samples is None:
        return DecodedImage(rgb, False, alpha)
    pixels, rescaled = _to_rgb8(samples, bands, where)
    return DecodedImage(Image.fromarray(pixels, "RGB"), rescaled, alpha)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_one(job: tuple[Path, str, tuple[int, ...] | None]) -> tuple[bool, bool] | str:
    """One image for :func:`check_image_files`: ``(rescaled, alpha dropped)``, or the error message."""
    try:
        decoded = read_image(*job)
    except AnnotationError as exc:
        return str(exc)
    return decoded.rescaled, decoded.alpha_dropped


def check_image_files(records: list[ImageRecord], image_dir: str | Path, bands=None, workers: int | None = None,
                      progress: bool | None = None) -> dict:
    """Decode every image of ``records`` under ``image_dir`` with :func:`read_image`, on ``workers`` cores
    (default: every available one): in joblib's worker processes from :data:`LARGE_SET` images, in threads
    below (Pillow decodes without holding the GIL but parses headers in Python; a process costs a second or so
    to start).

    Every missing or bad image is collected; if there are any, one :class:`AnnotationError` lists them all
    (file and record, one per line).  Otherwise returns ``{"images": N, "rescaled": R, "alpha dropped": A}``
    over the distinct files.  ``progress``: a tqdm bar (default: on a terminal, from :data:`LARGE_SET`
    images).
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    image_dir, bands = Path(image_dir), _check_bands(bands)
    first: dict[str, ImageRecord] = {}
    for rec in records:
        first.setdefault(rec.filename, rec)
    jobs = [(image_dir / rec.filename, rec.origin, bands) for rec in first.values()]
    large = len(jobs) >= LARGE_SET
    parallel = Parallel(n_jobs=max(1, workers or available_cores()), prefer="processes" if large else "threads",
                        return_as="generator")
    disable = (not progress) if progress is not None else (not large or None)
    results = list(tqdm(parallel(delayed(_check_one)(job) for job in jobs), total=len(jobs), unit="img",
                        desc=f"checking {image_dir.name}", disable=disable, file=sys.stderr))
    bad = [r for r in results if isinstance(r, str)]
    if bad:
        raise AnnotationError(f"{len(bad)} of {len(jobs)} images under {image_dir} are missing or bad:\n"
                              + "\n".join(bad))
    return {"images": len(jobs), "rescaled": sum(r[0] for r in results),
            "alpha dropped": sum(r[1] for r in results)}


def shared_images(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Image files referenced by two or more records (paths compared after ``os.path.normpath``), in file
    order: ``{filename: [records]}``."""
    by_file: dict[str, list[ImageRecord]] = {}
    for rec in records:
        by_file.setdefault(os.path.normpath(rec.filename), []).append(rec)
    return {f: recs for f, recs in by_file.items() if len(recs) > 1}


def _refuse_shared(records: list[ImageRecord]) -> None:
    shared = shared_images(records)
    if shared:
        lines = [f"image {f!r} is in {len(recs)} records: "
                 + "; ".join(f"{r.origin} (split {r.split!r})" for r in recs) for f, recs in shared.items()]
        raise AnnotationError(
            f"{len(shared)} image file(s) referenced by more than one record, which leaks images between "
            "splits; if the data set means it, pass allow_shared_images=True (--allow-shared-images):\n"
            + "\n".join(lines)
        )


# ------------------------------------------------------------------------------------- public API
def detect_format(path: str | Path) -> str:
    """Which of :data:`FORMATS` the file or folder at ``path`` holds."""
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*_caps.txt")) or any(path.glob("*_filename.txt")):
            return "amfmn"
        if any(path.glob("dataset*.json")):
            return "karpathy"
        if any(_SPLIT_WORD_RE.search(p.stem.lower()) for p in path.glob("*.json")):
            return "albef"
        raise AnnotationError(f"{path}: no Karpathy, AMFMN or ALBEF annotation files found")
    if path.is_file():
        if path.name.endswith(("_caps.txt", "_filename.txt")):
            return "amfmn"
        if path.suffix.lower() == ".json":
            if path.name.startswith("dataset"):
                return "karpathy"
            with path.open(encoding="utf-8-sig", errors="replace") as f:
                head = f.read(4096).lstrip()[:1]
            if head in ("{", "["):
                return "karpathy" if head == "{" else "albef"
        raise AnnotationError(f"{path}: not a Karpathy, AMFMN or ALBEF annotation file")
    raise AnnotationError(f"{path}: no such file or folder")


def load(
    path: str | Path,
    format: str | None = None,
    image_dir: str | Path | None = None,
    check_images: bool = False,
    allow_shared_images: bool = False,
    bands=None,
) -> Annotations:
    """Read the annotations at ``path`` (format auto-detected unless given).

    An image file referenced by two records raises :class:`AnnotationError` naming both records and their
    splits, unless ``allow_shared_images``.  With ``check_images`` every image under ``image_dir`` (default
    ``<folder>/images``, folder being ``path`` or the folder holding it) is decoded by :func:`check_image_files`
    (``bands``: see :func:`read_image`), which names every missing or bad one; its report is kept in
    ``Annotations.image_check``.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    source, entries = _READERS[fmt](path)
    if not allow_shared_images:
        _refuse_shared(entries)
    report = None
    if check_images:
        folder = path if path.is_dir() else path.parent
        report = check_image_files(entries, Path(image_dir) if image_dir is not None else folder / "images",
                                   bands)
    return Annotations(fmt, source, entries, report)


def _bands_arg(text: str) -> tuple[int, ...]:
    try:
        return _check_bands(text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on :class:`AnnotationError`)."""
    parser = argparse.ArgumentParser(
        prog="python -m osdpm_lib.data", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("summary", help="print image and caption counts per split as JSON")
    cmd.add_argument("path", type=Path, help="annotation file or folder")
    cmd.add_argument("--format", choices=FORMATS, help="skip auto-detection")
    cmd.add_argument("--check-images", action="store_true",
                     help="decode every image fully (in parallel); name every missing or bad one")
    cmd.add_argument("--image-dir", type=Path, help="image folder (default <folder>/images)")
    cmd.add_argument("--bands", type=_bands_arg, metavar="B[,B,B]",
                     help="for images with other than 1 or 3 bands: the bands to use, from 0 (e.g. 2,1,0)")
    cmd.add_argument("--allow-shared-images", action="store_true",
                     help="accept an image file referenced by several records (e.g. in two splits)")
    args = parser.parse_args(argv)
    try:
        ann = load(args.path, args.format, args.image_dir, args.check_images, args.allow_shared_images,
                   args.bands)
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(ann), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
