"""Dataset audit: caption lengths, duplicate captions, class balance and overlap between data sets.

All functions are pure and take :class:`osdpm_lib.data.Annotations`; they return pandas DataFrames or
dicts.  Captions are compared after :func:`normalize` (lower case, whitespace collapsed, trailing
punctuation stripped) everywhere.  :func:`overlap` compares two data sets (or two splits of one, see
:func:`split_of`) by filename, by caption text and, given both image folders, by perceptual hash
(``imagehash.phash``, 64 bits; pairs within ``max_distance`` bits are near duplicates).
:func:`shared_files` lists image files referenced by several records (which ``data.load`` refuses unless
``allow_shared_images``; the command line reads with that option and reports them).

Command line::

    python -m osdpm_lib.audit PATH [--against PATH2] [--images DIR] [--against-images DIR2]
                                   [--max-distance N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from .data import SPLITS, AnnotationError, Annotations, load, read_image, shared_images, tokenize
from .synth import groundtruth

MAX_DISTANCE = 8  # phash Hamming distance (of 64 bits) up to which two images count as near duplicates
_TRAILING = re.compile(r"[\s.,;:!?]+$")
_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def normalize(caption: str) -> str:
    """The form captions are compared in: lower case, whitespace collapsed, trailing punctuation off."""
    return _TRAILING.sub("", " ".join(caption.lower().split()))


def word_count(caption: str) -> int:
    """Words of a caption: its Karpathy tokens (:func:`osdpm_lib.data.tokenize`)."""
    return len(tokenize(caption))


def length_stats(lengths: Sequence[int]) -> dict:
    """``mean, median, p5, p95`` (floats) and ``min, max`` (ints) of ``lengths``; all 0 when empty."""
    x = np.asarray(lengths, dtype=np.float64)
    if not x.size:
        return {"mean": 0.0, "median": 0.0, "p5": 0.0, "p95": 0.0, "min": 0, "max": 0}
    p5, med, p95 = np.percentile(x, [5, 50, 95])
    return {"mean": float(x.mean()), "median": float(med), "p5": float(p5), "p95": float(p95),
            "min": int(x.min()), "max": int(x.max())}


# ------------------------------------------------------------------- Karpathy json and ground truth
def caption_stats(json_path: str | Path) -> dict:
    """Caption and split statistics of a Karpathy json (scenes: :func:`osdpm_lib.synth.groundtruth.scene_of`
    with a sibling ground_truth.json)."""
    path = Path(json_path)
    data = json.loads(path.read_text())
    gt = groundtruth.load_ground_truth(path.parent)
    lengths, raws = [], []
    per_split: dict[str, int] = {}
    per_scene: dict[str, int] = {}
    per_image_unique = []
    for im in data["images"]:
        per_split[im["split"]] = per_split.get(im["split"], 0) + 1
        sc = groundtruth.scene_of(im["filename"], gt) or "unknown"
        per_scene[sc] = per_scene.get(sc, 0) + 1
        rs = [s["raw"] for s in im["sentences"]]
        raws += rs
        per_image_unique.append(len(set(rs)))
        lengths += [len(s["tokens"]) for s in im["sentences"]]
    train = [s["raw"] for im in data["images"] if im["split"] == "train" for s in im["sentences"]]
    n_caps = len(raws)
    words = length_stats(lengths)
    return {
        "n_images": len(data["images"]),
        "n_captions": n_caps,
        "captions_per_image": n_caps / max(1, len(data["images"])),
        "mean_words": words["mean"],
        "min_words": words["min"],
        "max_words": words["max"],
        "unique_captions": len(set(raws)),
        "unique_ratio": len(set(raws)) / max(1, n_caps),
        "train_unique_ratio": len(set(train)) / max(1, len(train)),
        "mean_unique_per_image": float(np.mean(per_image_unique)) if per_image_unique else 0.0,
        "vocabulary": len({t for im in data["images"] for s in im["sentences"] for t in s["tokens"]}),
        "images_per_split": dict(sorted(per_split.items())),
        "images_per_scene": dict(sorted(per_scene.items())),
    }


def object_sizes(gt_path: str | Path):
    """One row per ground-truth box: filename, scene, category, width, height, size (relative)."""
    gt = groundtruth.read(gt_path)
    S = float(groundtruth.image_size(gt))
    rows = []
    for fn, scene, category, (x0, y0, x1, y1) in groundtruth.all_boxes(gt):
        w, h = (x1 - x0) / S, (y1 - y0) / S
        rows.append({"filename": fn, "scene": scene, "category": category,
                     "width": w, "height": h, "size": max(w, h)})
    return pd.DataFrame(rows, columns=["filename", "scene", "category", "width", "height", "size"])


# ---------------------------------------------------------------------------------- Annotations
def split_of(ann: Annotations, split: str) -> Annotations:
    """The annotations of one split only (for :func:`overlap` between splits of one data set)."""
    return Annotations(ann.format, ann.source, ann.split(split))


def _groups(ann: Annotations) -> dict[str, list]:
    """Non-empty splits in order, plus ``all`` when there are several."""
    groups = ann.splits()
    return {**groups, "all": ann.images} if len(groups) > 1 else groups


def caption_lengths(ann: Annotations) -> pd.DataFrame:
    """Per split (and ``all``): images, captions, captions per image and words-per-caption stats."""
    rows = {}
    for name, recs in _groups(ann).items():
        n_caps = sum(len(r.captions) for r in recs)
        words = length_stats([word_count(c) for r in recs for c in r.captions])
        rows[name] = {"images": len(recs), "captions": n_caps,
                      "captions/image": n_caps / max(1, len(recs)), **{f"words {k}": v for k, v in words.items()}}
    return pd.DataFrame.from_dict(rows, orient="index")


def duplicates(ann: Annotations) -> pd.DataFrame:
    """Duplicate (normalised) captions per split (and ``all``).

    Within an image: ``images with repeats`` (images holding a caption twice or more) and ``repeated
    slots`` (captions minus distinct captions, summed over images).  Across images: ``distinct``
    captions, ``shared captions`` (distinct captions found in two or more images) and ``images sharing``
    (images with at least one caption found in another image).
    """
    rows = {}
    for name, recs in _groups(ann).items():
        per_image = [{normalize(c) for c in r.captions} for r in recs]
        images_of = pd.Series([c for s in per_image for c in s]).value_counts()
        shared = set(images_of.index[images_of >= 2])
        rows[name] = {
            "images": len(recs),
            "captions": sum(len(r.captions) for r in recs),
            "images with repeats": sum(len(s) < len(r.captions) for s, r in zip(per_image, recs)),
            "repeated slots": sum(len(r.captions) - len(s) for s, r in zip(per_image, recs)),
            "distinct": len(images_of),
            "shared captions": len(shared),
            "images sharing": sum(bool(s & shared) for s in per_image),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def class_balance(ann: Annotations, scenes: Sequence[str | None] | None = None) -> pd.DataFrame:
    """Images per scene (rows, ``unknown`` for None) and split (columns) plus ``total``.

    ``scenes`` gives the scene of each image in ``ann.images`` order (default ``ImageRecord.scene``).
    """
    scenes = [r.scene for r in ann.images] if scenes is None else list(scenes)
    if len(scenes) != len(ann.images):
        raise ValueError(f"{len(scenes)} scenes for {len(ann.images)} images")
    df = pd.DataFrame({"scene": [s or "unknown" for s in scenes], "split": [r.split for r in ann.images]})
    table = pd.crosstab(df["scene"], df["split"])
    table = table[[s for s in SPLITS if s in table.columns]]
    table["total"] = table.sum(axis=1)
    return table.rename_axis(index="scene", columns=None)


def phash(ann: Annotations, image_dir: str | Path, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Distinct filenames of ``ann`` (in order) and their 64-bit perceptual hashes as ``uint64``, of the images
    as :func:`osdpm_lib.data.read_image` decodes them.

    Raises :class:`AnnotationError` naming the file and its record when an image cannot be read.
    """
    import imagehash
    from tqdm.auto import tqdm

    first: dict = {}
    for r in ann.images:
        first.setdefault(r.filename, r)  # the first record of each file
    recs = list(first.values())
    out = np.zeros(len(recs), dtype=np.uint64)
    for i, r in enumerate(tqdm(recs, desc="phash", unit="img", disable=not progress)):
        where = r.origin or f"record {r.filename!r}, split {r.split!r}"
        bits = imagehash.phash(read_image(Path(image_dir) / r.filename, where).image).hash.reshape(-1)
        out[i] = np.packbits(bits).view(">u8")[0]
    return [r.filename for r in recs], out


def shared_files(ann: Annotations) -> pd.DataFrame:
    """Image files referenced by two or more records (:func:`osdpm_lib.data.shared_images`): ``filename``,
    ``records`` (how many), ``splits`` and ``origins`` (where each record was read, by file name and
    line or record), one row per file."""
    def short(origin: str) -> str:
        file, sep, where = origin.rpartition(": ")
        return f"{Path(file).name}{sep}{where}"

    rows = [{"filename": f, "records": len(recs), "splits": ", ".join(r.split for r in recs),
             "origins": "; ".join(short(r.origin) for r in recs)} for f, recs in shared_images(ann.images).items()]
    return pd.DataFrame(rows, columns=["filename", "records", "splits", "origins"])


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, chunk: int = 1024) -> np.ndarray:
    """``[n, 3]`` int rows ``(i, j, d)``: every ``a[i]``, ``b[j]`` whose Hamming distance ``d <= max_distance``.

    Vectorised over chunks of ``a`` (``chunk * len(b)`` XORs at a time); rows sorted by ``i, j``.
    """
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    found = [np.zeros((0, 3), dtype=np.int64)]
    for start in range(0, len(a), chunk):
        x = a[start:start + chunk, None] ^ b[None, :]
        if hasattr(np, "bitwise_count"):  # numpy >= 2
            d = np.bitwise_count(x).astype(np.int64)
        else:
            d = _POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.int64)
        i, j = np.nonzero(d <= max_distance)
        found.append(np.stack([i + start, j, d[i, j]], axis=1))
    return np.concatenate(found)


def overlap(a: Annotations, b: Annotations, image_dir_a: str | Path | None = None,
            image_dir_b: str | Path | None = None, max_distance: int = MAX_DISTANCE,
            progress: bool = True) -> dict:
    """What ``a`` and ``b`` share: filenames, normalised captions and (with both image folders) images.

    Scalars: ``images a/b``, ``shared filenames`` with the fraction of each side's distinct filenames,
    ``distinct captions a/b``, ``shared captions`` with the fraction of each side's distinct captions.
    When both folders are given and exist: ``images a/b matched`` (images with a phash neighbour within
    ``max_distance`` bits on the other side) and ``pairs``, a DataFrame ``filename a, filename b,
    distance`` sorted by distance and names; otherwise ``pairs`` is None.
    """
    files_a, files_b = {r.filename for r in a.images}, {r.filename for r in b.images}
    caps_a = {normalize(c) for r in a.images for c in r.captions}
    caps_b = {normalize(c) for r in b.images for c in r.captions}
    files, caps = files_a & files_b, caps_a & caps_b
    res: dict = {
        "images a": len(files_a), "images b": len(files_b),
        "shared filenames": len(files), "shared filenames / a": len(files) / max(1, len(files_a)),
        "shared filenames / b": len(files) / max(1, len(files_b)),
        "distinct captions a": len(caps_a), "distinct captions b": len(caps_b),
        "shared captions": len(caps), "shared captions / a": len(caps) / max(1, len(caps_a)),
        "shared captions / b": len(caps) / max(1, len(caps_b)),
        "pairs": None,
    }
    dirs = [image_dir_a, image_dir_b]
    if all(d is not None and Path(d).is_dir() for d in dirs):
        (names_a, ha), (names_b, hb) = (phash(x, d, progress) for x, d in zip((a, b), dirs))
        res.update(_image_matches(names_a, ha, names_b, hb, max_distance))
    return res


def _image_matches(names_a: list[str], ha: np.ndarray, names_b: list[str], hb: np.ndarray,
                   max_distance: int) -> dict:
    """``pairs`` (near-duplicate images, sorted) and ``images a/b matched`` from two sides' hashes."""
    ijd = hamming_pairs(ha, hb, max_distance)
    pairs = pd.DataFrame({"filename a": np.array(names_a, dtype=object)[ijd[:, 0]],
                          "filename b": np.array(names_b, dtype=object)[ijd[:, 1]],
                          "distance": ijd[:, 2]})
    return {"pairs": pairs.sort_values(["distance", "filename a", "filename b"], ignore_index=True),
            "images a matched": int(np.unique(ijd[:, 0]).size),
            "images b matched": int(np.unique(ijd[:, 1]).size)}


def overlap_table(res: dict, digits: int | None = None) -> pd.DataFrame:
    """The scalars of an :func:`overlap` result as a one-column table (``value``, object dtype so that
    counts stay integers); fractions rounded to ``digits`` when given."""
    values = {k: round(v, digits) if digits is not None and isinstance(v, float) else v
              for k, v in res.items() if k != "pairs"}
    return pd.DataFrame({"value": pd.Series(values, dtype=object)})


def split_overlap(ann: Annotations, image_dir: str | Path | None = None, max_distance: int = MAX_DISTANCE,
                  progress: bool = True, digits: int | None = None) -> pd.DataFrame:
    """:func:`overlap_table` between every two non-empty splits: one column per pair (``train/test`` ...).

    Each image is hashed once (not once per pair it is in)."""
    hashes = None
    if image_dir is not None and Path(image_dir).is_dir():
        hashes = dict(zip(*phash(ann, image_dir, progress)))
    columns = {}
    for x, y in combinations(list(ann.splits()), 2):
        a, b = split_of(ann, x), split_of(ann, y)
        res = overlap(a, b, max_distance=max_distance)
        if hashes is not None:
            names_a, names_b = (list(dict.fromkeys(r.filename for r in s.images)) for s in (a, b))
            res.update(_image_matches(names_a, np.array([hashes[f] for f in names_a], dtype=np.uint64),
                                      names_b, np.array([hashes[f] for f in names_b], dtype=np.uint64),
                                      max_distance))
        columns[f"{x}/{y}"] = overlap_table(res, digits)["value"]
    return pd.concat(columns, axis=1)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the audit tables as markdown; 2 on :class:`AnnotationError`."""
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.audit", description=__doc__.split("\n")[0])
    ap.add_argument("path", type=Path, help="annotation file or folder")
    ap.add_argument("--against", type=Path, help="a second data set to compare with")
    ap.add_argument("--images", type=Path, help="image folder of PATH (enables phash matching)")
    ap.add_argument("--against-images", type=Path, help="image folder of the second data set")
    ap.add_argument("--max-distance", type=int, default=MAX_DISTANCE, help="phash distance (bits)")
    args = ap.parse_args(argv)
    try:
        ann = load(args.path, allow_shared_images=True)   # reported below, not refused
        sections = [("Caption lengths", caption_lengths(ann).round(2)), ("Duplicate captions", duplicates(ann)),
                    ("Class balance", class_balance(ann))]
        if len(shared := shared_files(ann)):
            sections.append(("Image files in several records", shared))
        if len(ann.splits()) > 1:
            sections.append(("Overlap between splits",
                             split_overlap(ann, args.images, args.max_distance, digits=4)))
        if args.against:
            against = load(args.against, allow_shared_images=True)
            res = overlap(ann, against, args.images, args.against_images, args.max_distance)
            sections.append((f"Overlap with {args.against.name} (a: {args.path.name})", overlap_table(res, 4)))
            if res["pairs"] is not None:
                sections.append(("Near-duplicate images", res["pairs"]))
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for title, table in sections:
        print(f"## {title}\n\n{table.to_markdown()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
