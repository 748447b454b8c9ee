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
:class:`AnnotationError` naming the file and the line (1-based) or record (0-based) at fault.

Command line::

    python -m osdpm_lib.data summary PATH [--format karpathy|amfmn|albef] [--check-images]
                                          [--image-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    """``{"format": F, "splits": {split: {"images": N, "captions": M}}}`` over non-empty splits."""
    return {
        "format": ann.format,
        "splits": {
            name: {"images": len(recs), "captions": sum(len(r.captions) for r in recs)}
            for name, recs in ann.splits().items()
        },
    }


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


def _check_images(entries: _Entries, image_dir: Path) -> None:
    from PIL import Image

    for rec in entries:
        file = image_dir / rec.filename
        if not file.is_file():
            raise AnnotationError(f"{rec.origin}: image {file} not found")
        try:
            with Image.open(file) as im:
                im.verify()
        except Exception as exc:  # PIL raises several types for broken files
            raise AnnotationError(f"{rec.origin}: image {file} is unreadable: {exc}") from exc


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
) -> Annotations:
    """Read the annotations at ``path`` (format auto-detected unless given).

    With ``check_images`` every image must exist under ``image_dir`` (default ``<folder>/images``,
    folder being ``path`` or the folder holding it) and pass PIL's open + verify.
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    source, entries = _READERS[fmt](path)
    if check_images:
        folder = path if path.is_dir() else path.parent
        _check_images(entries, Path(image_dir) if image_dir is not None else folder / "images")
    return Annotations(fmt, source, entries)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on :class:`AnnotationError`)."""
    parser = argparse.ArgumentParser(
        prog="python -m osdpm_lib.data", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("summary", help="print image and caption counts per split as JSON")
    cmd.add_argument("path", type=Path, help="annotation file or folder")
    cmd.add_argument("--format", choices=FORMATS, help="skip auto-detection")
    cmd.add_argument("--check-images", action="store_true", help="open and verify every image")
    cmd.add_argument("--image-dir", type=Path, help="image folder (default <folder>/images)")
    args = parser.parse_args(argv)
    try:
        ann = load(args.path, args.format, args.image_dir, args.check_images)
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary(ann), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
