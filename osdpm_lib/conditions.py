"""Measured properties of the generator conditions (:mod:`osdpm_lib.synth.conditions`) and the mechanism checks of
DAPN and OSFCM that go beside the per-condition verdicts.

Properties of a generated data set (each computed the same way for every condition, so that a test can check that a
condition differs from the default in the property that defines it; docs/CONDITIONS.md has the values):

* :func:`named_area_share` (``small-objects``): per image and category its captions name
  (:func:`osdpm_lib.priors.count_categories`), the mean box area of the category's instances as a share of the
  image; the median over those (image, category) pairs.
* :func:`distractor_count` (``cluttered``): per image, the drawn objects of categories no caption of the image names;
  the mean over images.
* :func:`lookalike_similarity` (``ambiguous``, needs no model): per image, the highest similarity of its pixels
  (Pearson correlation of 16x16 RGB thumbnails, :func:`thumbnails`) to another image whose captions name another set
  of categories (:func:`lookalike`); the median over images.  With ``features=`` :func:`zero_shot_embeddings` the
  same on the pooled embeddings of the pretrained CLIP the book fine-tunes (the overlap a zero-shot model sees);
  :func:`pair_similarity` compares twin pairs with other pairs of one scene.
* :func:`domain_gap` (``domain-gap``): the Jensen-Shannon distance between the pooled colour histograms
  (:func:`colour_histogram`) of a data set and a reference (the default at the same seed), and the ratio of their
  :func:`sharpness`.

Mechanism checks (arrays in, so they are testable without training):

* :func:`dapn_pointing_game`: does DAPN's saliency map peak inside a box of an object the captions name?  The pointing
  game of :func:`osdpm_lib.explain.pointing_game` with its center and random references, the small-object images
  (:func:`small_object_images`) reported separately.
* :func:`cluster_purity`: is an image's nearest OSFCM prototype one of the categories its captions name?
* DAPN's share of the embedding is :meth:`osdpm_lib.models.OSDPM.dapn_ratio`.
* :func:`mechanism_checks`: all three on trained runs (variant -> run folder) and the first images of a generated
  data set's val (or train) split: the pointing game and DAPN's share per DAPN variant, the purity per OSFCM variant.

Command line (the measurements of docs/CONDITIONS.md)::

    python -m osdpm_lib.conditions OUT_ROOT [--n-images N] [--seed S] [--image-size P] [--zero-shot]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load, read_image
from .priors import count_categories
from .synth import JSON_NAME, IMAGES_DIR, generate, groundtruth
from .synth.conditions import CONDITIONS, DEFAULT

SMALL_SHARE = 0.05      # the small-objects condition's target: named objects below 5% of the image
THUMB_SIDE = 16
HIST_BINS = 8           # per channel


# ------------------------------------------------------------------------------------------ objects
def _ground_truth(data_dir: Path) -> dict:
    gt = groundtruth.load_ground_truth(data_dir)
    if gt is None:
        raise FileNotFoundError(f"{data_dir}: no {groundtruth.GT_NAME} (the conditions are measured on generated data)")
    return gt


def object_table(data_dir: str | Path) -> pd.DataFrame:
    """One row per drawn object of a generated data set: filename, scene, category, ``area`` (its box's share of
    the image), ``named`` (a caption of the image names its category) and ``distractor`` (drawn as one)."""
    data_dir = Path(data_dir)
    gt = _ground_truth(data_dir)
    side = groundtruth.image_size(gt)
    rows = []
    for rec in load(data_dir / JSON_NAME).images:
        named = set(count_categories(rec.captions))
        for b in gt["images"][rec.filename]["boxes"]:
            x0, y0, x1, y1 = b["box"]
            rows.append((rec.filename, gt["images"][rec.filename]["scene"], b["category"],
                         (x1 - x0) * (y1 - y0) / side**2, b["category"] in named, bool(b.get("distractor"))))
    return pd.DataFrame(rows, columns=["filename", "scene", "category", "area", "named", "distractor"])


def named_area_share(table: pd.DataFrame) -> float:
    """The median over (image, named category) of the category's mean instance area share (:func:`object_table`)."""
    named = table[table["named"]]
    if named.empty:
        raise ValueError("no object of a named category: nothing to measure")
    return float(named.groupby(["filename", "category"])["area"].mean().median())


def distractor_count(table: pd.DataFrame) -> float:
    """The mean over images of the number of drawn objects whose category no caption of the image names."""
    return float((~table["named"]).groupby(table["filename"]).sum().mean())


# --------------------------------------------------------------------------------------- look-alikes
def _images(data_dir: Path, filenames: Sequence[str]):
    for f in filenames:
        yield read_image(data_dir / IMAGES_DIR / f).image


def thumbnails(data_dir: str | Path, filenames: Sequence[str], side: int = THUMB_SIDE) -> np.ndarray:
    """``[N, side * side * 3]`` float features: each image box-averaged to ``side`` x ``side`` RGB."""
    from PIL import Image

    return np.stack([np.asarray(im.resize((side, side), Image.BOX), dtype=np.float64).ravel()
                     for im in _images(Path(data_dir), filenames)])


def lookalike(features: np.ndarray, groups: Sequence) -> np.ndarray:
    """Per row, the highest Pearson correlation of its features with another row of another group (NaN when every
    other row is of its group).  ``groups``: one hashable per row (e.g. the frozenset of named categories)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(groups):
        raise ValueError(f"features must be [N, D] for N = {len(groups)} groups, got shape {x.shape}")
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    codes = pd.factorize(pd.Series(list(groups), dtype=object))[0]
    sim[codes[:, None] == codes[None, :]] = -np.inf
    best = sim.max(axis=1)
    return np.where(np.isfinite(best), best, np.nan)


def lookalike_similarity(data_dir: str | Path, features=None) -> float:
    """The median over images of :func:`lookalike`, images grouped by the set of categories their captions name;
    on :func:`thumbnails`, or on ``features(data_dir, filenames)`` (e.g. :func:`zero_shot_embeddings`)."""
    recs = load(Path(data_dir) / JSON_NAME).images
    groups = [frozenset(count_categories(r.captions)) for r in recs]
    x = (features or thumbnails)(data_dir, [r.filename for r in recs])
    return float(np.nanmedian(lookalike(x, groups)))


def pair_similarity(data_dir: str | Path, features=None) -> dict:
    """Mean cosine similarity of twin pairs (``twin``) and of the other pairs of images of one scene
    (``same_scene``), on :func:`thumbnails` (row-centred: Pearson correlation) or ``features(data_dir, filenames)``;
    ``twin`` is NaN without twins."""
    data_dir = Path(data_dir)
    gt = _ground_truth(data_dir)
    names = [r.filename for r in load(data_dir / JSON_NAME).images]
    x = np.asarray((features or thumbnails)(data_dir, names), dtype=np.float64)
    if features is None:
        x = x - x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    idx = {n: i for i, n in enumerate(names)}
    twin = np.zeros(sim.shape, dtype=bool)
    for n in names:
        if "twin" in gt["images"][n]:
            twin[idx[n], idx[gt["images"][n]["twin"]]] = True
    scenes = np.array(groundtruth.scenes_for(names, gt))
    same = (scenes[:, None] == scenes[None, :]) & ~twin & ~np.eye(len(names), dtype=bool)
    return {"twin": float(sim[twin].mean()) if twin.any() else float("nan"), "same_scene": float(sim[same].mean())}


def zero_shot_embeddings(data_dir: str | Path, filenames: Sequence[str], model: str = "osdpm-tiny-vit",
                         pretrained: str = "synthpre") -> np.ndarray:
    """``[N, D]`` image embeddings of the pretrained CLIP the book fine-tunes (no training), L2-normalised and then
    centred on their mean over ``filenames`` (every embedding of this small model shares a large common component,
    cosine about 0.9 between any two images), for :func:`lookalike_similarity`'s ``features``: the overlap of the
    pooled embeddings a zero-shot model sees."""
    import torch

    from .cache import Normalizer, image_cache
    from .evaluate import encode_images
    from .models import build_clip, preprocess_config

    clip = build_clip(model, pretrained=pretrained)
    pre = preprocess_config(clip)
    images = image_cache(list(filenames), Path(data_dir) / IMAGES_DIR, pre["image_size"], workers=1, progress=False)
    with torch.inference_mode():
        z = encode_images(clip, images, Normalizer(pre["mean"], pre["std"]))
    return z - z.mean(axis=0, keepdims=True)


# -------------------------------------------------------------------------------------- domain gap
def colour_histogram(images, bins: int = HIST_BINS) -> np.ndarray:
    """The pooled RGB histogram (``bins`` per channel, normalised to sum 1) of PIL images or uint8 arrays."""
    counts = np.zeros(bins**3)
    for im in images:
        a = np.asarray(im, dtype=np.uint8).reshape(-1, 3).astype(np.int64) * bins // 256
        counts += np.bincount((a[:, 0] * bins + a[:, 1]) * bins + a[:, 2], minlength=bins**3)
    if counts.sum() == 0:
        raise ValueError("no pixels: colour_histogram needs at least one image")
    return counts / counts.sum()


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon distance (base 2: 0 for equal histograms, 1 for disjoint ones)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def sharpness(images) -> float:
    """The mean absolute Laplacian of the grey images (lower: blurrier or coarser)."""
    vals = []
    for im in images:
        g = np.asarray(im, dtype=np.float64).mean(axis=-1)
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        vals.append(np.abs(lap).mean())
    return float(np.mean(vals))


def domain_gap(data_dir: str | Path, reference_dir: str | Path) -> dict:
    """``colour_distance`` (:func:`histogram_distance` of the pooled :func:`colour_histogram`) and
    ``sharpness_ratio`` (:func:`sharpness` of ``data_dir`` over that of ``reference_dir``)."""
    def pixels(d):
        d = Path(d)
        return [np.asarray(im) for im in _images(d, [r.filename for r in load(d / JSON_NAME).images])]

    a, b = pixels(data_dir), pixels(reference_dir)
    return {"colour_distance": histogram_distance(colour_histogram(a), colour_histogram(b)),
            "sharpness_ratio": sharpness(a) / sharpness(b)}


# ------------------------------------------------------------------------------------------ summary
def twin_stats(data_dir: str | Path) -> dict:
    """Share of images with a twin (``ambiguous``), and of twins whose captions name a category that differs
    between the pair (the swapped one in the first, its substitute in the second)."""
    data_dir = Path(data_dir)
    gt = _ground_truth(data_dir)
    recs = load(data_dir / JSON_NAME).images
    twins = [r for r in recs if "twin" in gt["images"][r.filename]]
    named = 0
    for r in twins:
        swapped = gt["images"][r.filename]["swapped"]
        differing = set(swapped) | set(swapped.values())
        drawn = groundtruth.categories_of(gt, r.filename)
        named += bool(set(count_categories(r.captions)) & differing & drawn)
    return {"twin_share": len(twins) / len(recs), "twins_naming_swap": named / len(twins) if twins else float("nan")}


def measure(data_dir: str | Path, reference_dir: str | Path | None = None, zero_shot: bool = False) -> dict:
    """Every property of a generated data set (``reference_dir``: the default to measure the domain gap from;
    ``zero_shot``: also the look-alike similarity of the pretrained CLIP's embeddings)."""
    table = object_table(data_dir)
    out = {"named_area_share": named_area_share(table), "distractor_count": distractor_count(table),
           "lookalike_similarity": lookalike_similarity(data_dir), **twin_stats(data_dir)}
    if zero_shot:
        out["lookalike_zero_shot"] = lookalike_similarity(data_dir, zero_shot_embeddings)
        pairs = pair_similarity(data_dir, zero_shot_embeddings)
        out["twin_cos_zero_shot"], out["same_scene_cos_zero_shot"] = pairs["twin"], pairs["same_scene"]
    if reference_dir is not None:
        out.update(domain_gap(data_dir, reference_dir))
    return out


# ------------------------------------------------------------------------------- mechanism checks
def small_object_images(boxes: Sequence[np.ndarray], image_size: int, share: float = SMALL_SHARE) -> np.ndarray:
    """Per image, whether the median area of its target boxes (``[n, 4]`` pixel boxes, x1/y1 exclusive) is below
    ``share`` of the image (False without boxes)."""
    out = np.zeros(len(boxes), dtype=bool)
    for i, b in enumerate(boxes):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        if len(b):
            out[i] = np.median((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / image_size**2 < share
    return out


def dapn_pointing_game(saliency: np.ndarray, boxes: Sequence[np.ndarray], image_size: int,
                  share: float = SMALL_SHARE) -> pd.DataFrame:
    """DAPN's pointing game: ``saliency`` ``[N, h, w]`` (:func:`osdpm_lib.explain.dapn_maps`' ``"saliency"``),
    ``boxes`` the named objects' boxes per image (:func:`osdpm_lib.explain.target_boxes`).  A hit: the map's peak
    (after upsampling to ``image_size``) inside one of the image's boxes.  The table of
    :func:`osdpm_lib.explain.pointing_game` (rows: DAPN saliency, the center and random references), its
    ``accuracy_small`` on the :func:`small_object_images`."""
    from .explain import pointing_game as table

    return table({("dapn", "saliency"): saliency}, boxes, image_size,
                 small=small_object_images(boxes, image_size, share))


def cluster_purity(image_features: np.ndarray, prototypes: np.ndarray, named: np.ndarray) -> dict:
    """OSFCM's cluster purity: the share of images (with at least one named category) whose nearest prototype (by
    cosine) is one of their named categories.

    ``image_features`` ``[N, D]``, ``prototypes`` ``[K, D]`` (``OSFCM.prototypes``), ``named`` ``[N, K]`` (e.g.
    ``Priors.high`` or ``Priors.counts > 0`` over the prototypes' categories).  Returns ``n_images``, ``purity`` and
    ``chance`` (the expected purity of a uniformly random prototype: the mean share of named categories), and
    ``hit`` per image (NaN without a named category).  Uses OSFCM's own test of an image sitting with another
    category (:func:`osdpm_lib.losses.ambiguity_weights`, mode ``"ambiguous"``).
    """
    import torch
    import torch.nn.functional as F

    from .losses import ambiguity_weights

    f, p = torch.as_tensor(np.asarray(image_features, np.float32)), torch.as_tensor(np.asarray(prototypes, np.float32))
    m = np.asarray(named, dtype=bool)
    if f.ndim != 2 or p.ndim != 2 or f.shape[1] != p.shape[1] or m.shape != (f.shape[0], p.shape[0]):
        raise ValueError(f"image_features [N, D], prototypes [K, D] and named [N, K] expected, got "
                         f"{tuple(f.shape)}, {tuple(p.shape)} and {m.shape}")
    logits = F.normalize(f, dim=-1) @ F.normalize(p, dim=-1).T
    miss = ambiguity_weights(logits, torch.as_tensor(m, dtype=torch.float32), "ambiguous").numpy()
    has = m.any(axis=1)
    hit = np.where(has, 1.0 - miss, np.nan)
    return {"n_images": int(has.sum()), "purity": float(np.nanmean(hit)) if has.any() else float("nan"),
            "chance": float(m[has].mean(axis=1).mean()) if has.any() else float("nan"), "hit": hit}


def mechanism_checks(run_dirs: Mapping[str, Path], data_dir, split: str = "val", n_images: int = 200,
                     batch_size: int = 64) -> dict:
    """The mechanism checks of trained runs on the first ``n_images`` images of ``split`` of a generated data set.

    ``run_dirs``: variant name (``"clip+dapn"``, ``"osdpm"``, ``"clip"``) -> a finished run folder of
    :func:`osdpm_lib.train.train` (its selected model, :func:`osdpm_lib.train.load_trained`, on the CPU in eval mode
    under ``torch.no_grad``).  ``data_dir``: a generated benchmark (with ``ground_truth.json``).  ``split`` must not be
    ``"test"`` (``ValueError``): the checks choose nothing, but they read no test split either.

    Returns ``n_images`` (the images used), ``split`` and, keyed by variant:

    * ``pointing``: per variant with DAPN's saliency map, the rows of :func:`dapn_pointing_game` as records (DAPN
      saliency, the ``center`` and ``random (expected)`` references; accuracies in %, NaN where nothing is scored);
    * ``dapn_ratio``: per variant with DAPN, the mean :func:`osdpm_lib.models.dapn_share` over the images (what
      :meth:`osdpm_lib.models.OSDPM.dapn_ratio` gives on them all at once);
    * ``purity``: per variant with OSFCM, :func:`cluster_purity` (``purity``, ``chance``, ``n_images``; without the
      per-image ``hit``) of the model's (normalised) image embeddings against the prototypes the loaded model holds
      (``OSFCM.prototypes``: trained, fixed, or for ``"text"`` those last set from the text tower), one per
      :data:`osdpm_lib.lexicon.CATEGORY_NAMES`; ``named`` is ``counts > 0`` of
      :func:`osdpm_lib.priors.image_priors` over those categories (any caption of the image names the category).

    A variant without DAPN (or without OSFCM) has no entry in the checks that need it; one whose DAPN has no
    saliency-region attention has a ``dapn_ratio`` but no ``pointing``.
    """
    import torch

    from . import lexicon
    from .cache import Normalizer, image_cache
    from .explain import target_boxes
    from .priors import image_priors
    from .train import load_trained

    if split == "test":
        raise ValueError("mechanism_checks reads no test split: use split='val' (or 'train')")
    if n_images < 1 or batch_size < 1:
        raise ValueError(f"n_images and batch_size must be >= 1, got {n_images} and {batch_size}")
    data_dir = Path(data_dir)
    gt = _ground_truth(data_dir)
    records = load(data_dir / JSON_NAME).split(split)[:n_images]
    if not records:
        raise ValueError(f"{data_dir}: split {split!r} is empty")
    side = groundtruth.image_size(gt)
    boxes = target_boxes(records, gt)
    filenames = [r.filename for r in records]
    named = None
    images: dict[int, torch.Tensor] = {}
    out: dict = {"n_images": len(records), "split": split, "pointing": {}, "dapn_ratio": {}, "purity": {}}
    for variant, run_dir in run_dirs.items():
        model, _, pre, _ = load_trained(run_dir, device="cpu")
        if model.dapn is None and model.osfcm is None:
            continue
        size = pre["image_size"]
        if size not in images:
            images[size] = image_cache(filenames, data_dir / IMAGES_DIR, size, workers=1, progress=False)
        norm = Normalizer(pre["mean"], pre["std"])
        feats, saliency, shares = [], [], []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(records), batch_size):
                x = norm(images[size][i:i + batch_size])
                if model.dapn is None:
                    feats.append(model.encode_image(x).float().numpy())
                    continue
                z, maps = model.encode_image(x, return_maps=True)
                feats.append(z.float().numpy())
                shares.append(maps["dapn_share"].float().numpy())
                if "saliency" in maps:
                    saliency.append(maps["saliency"].float().numpy())
        if model.dapn is not None:
            out["dapn_ratio"][variant] = float(np.concatenate(shares).mean())
            if saliency:
                table = dapn_pointing_game(np.concatenate(saliency), boxes, side)
                out["pointing"][variant] = table.to_dict("records")
        if model.osfcm is not None:
            prototypes = model.osfcm.prototypes.detach().float().numpy()
            if len(prototypes) != len(lexicon.CATEGORY_NAMES):
                raise ValueError(f"{run_dir}: {len(prototypes)} OSFCM prototypes for "
                                 f"{len(lexicon.CATEGORY_NAMES)} lexicon categories")
            if named is None:
                named = image_priors(records, lexicon.CATEGORY_NAMES).counts > 0
            res = cluster_purity(np.concatenate(feats), prototypes, named)
            out["purity"][variant] = {k: res[k] for k in ("purity", "chance", "n_images")}
    return out


# -------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Generate every condition (and the default at the next seed: the noise floor of the domain-gap statistic)
    under ``OUT_ROOT`` and print the measured properties as a markdown table."""
    ap = argparse.ArgumentParser(description="Measure the defining properties of the generator conditions.")
    ap.add_argument("out_root", help="folder for the generated data sets (one sub-folder per condition)")
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--zero-shot", action="store_true",
                    help="also the look-alike similarity of the pretrained CLIP's embeddings (osdpm-tiny-vit/synthpre)")
    args = ap.parse_args(argv)
    root = Path(args.out_root)
    kw = {"n_images": args.n_images, "image_size": args.image_size}
    dirs = {name: generate(root / name, seed=args.seed, condition=name, **kw).parent for name in CONDITIONS}
    dirs[f"{DEFAULT} (seed {args.seed + 1})"] = generate(root / f"{DEFAULT}-seed{args.seed + 1}",
                                                          seed=args.seed + 1, **kw).parent
    rows = {name: measure(d, dirs[DEFAULT], args.zero_shot) for name, d in dirs.items()}
    table = pd.DataFrame(rows).T.rename_axis("condition")
    print(f"{args.n_images} images at {args.image_size} px, seed {args.seed}\n")
    print(table.to_markdown(floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
