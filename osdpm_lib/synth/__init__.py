"""The embedded benchmark: a synthetic remote-sensing image-caption data set standing in for RSICD.

`generate(out_dir, n_images, seed, image_size)` draws ``n_images`` overhead scenes from about twenty
scene classes modelled on RSICD's thirty (airport, port, storage tanks, residential areas, farmland,
forest, river, bridge, beach, ...).  Every scene is a land-cover background (colour, low-frequency
variation, grain) carrying objects of the categories of :mod:`osdpm_lib.lexicon` at several scales
(cars and boats a few per cent of the image side, tanks and planes about a tenth, stadiums and ponds
up to a half), at random positions, rotations and colours.  Classes share objects (cars in parking
lots, commercial areas and stadiums; water in ports, beaches and rivers; tanks in industrial areas
and tank farms; houses in dense and sparse residential areas; trees almost everywhere), so their
images overlap.

Every image gets five captions in RSICD's style (lower case, " ." at the end, about eleven words,
sentences repeated within an image, vague sentences shared between images) whose object nouns are
drawn from the lexicon terms with synonyms and plurals, and whose counts, colours, sizes and spatial
relations are read from what was drawn.  Generation is deterministic: the same seed and parameters
give the same bytes (json and JPEG); everything is drawn from ``numpy.random.Generator(PCG64)``
streams derived from the seed.

`generate(..., condition=NAME)` draws the benchmark under a named generator condition of
:mod:`osdpm_lib.synth.conditions` (``small-objects``, ``ambiguous``, ``cluttered``, ``domain-gap``: one documented
change each; ``default`` is the benchmark itself, byte for byte); see docs/CONDITIONS.md.

Files written (see docs/DESIGN.md): ``dataset_embedded.json`` (Karpathy schema), ``images/*.jpg``
and ``ground_truth.json`` (scene and pixel boxes per image, x1/y1 exclusive, plus the parameters, so
that a second call with the same parameters returns at once).  The val and test splits hold a tenth
of each scene's images, or exactly ``n_val`` and ``n_test`` images (stratified by scene) when given.

`generate_pretrain(out_dir, n_images, seed, image_size, n_val, n_test)` writes a pretraining corpus
that differs from the benchmark the way web alt-text data differs from RSICD: its own seed streams,
perturbed scene specs with 30% two-scene mixtures and some out-of-context objects, and one to three
short noisy alt-texts per image ("aerial photo of cars, trees and a road", "tanks factory
warehouse") with the benchmark's object nouns but none of its sentences: ``dataset_pretrain.json``,
``images/pre_*.jpg`` and ``pretrain_params.json``.

Command line::

    python -m osdpm_lib.synth OUT_DIR [--n-images N] [--seed S] [--image-size P] [--n-val V] [--n-test T]
                              [--condition NAME]
    python -m osdpm_lib.synth --pretrain OUT [--n-images N] [--seed S] [--image-size P] [--n-val V] [--n-test T]
"""


from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from osdpm_lib.data import tokenize

from . import conditions, groundtruth
from .captions import ALT_NOISE, CAPTIONS_PER_IMAGE, _AltText, _Captioner, _fix_articles, _Group, _groups
from .groundtruth import GT_NAME
from .render import PAINTERS, _Canvas, _choice, _Obj, _plan, _render, _wchoice, sensor_shift
from .scenes import (BENCHMARK_CATEGORIES, BENCHMARK_VERBS, CAPTION_TERMS, CATEGORY_COLOURS, COLOURS, DRAW_ORDER,
                     LANDCOVER, LINEAR, MASS_TERMS, NO_PLURAL, NUMBERS, SCENE_SPECS, SCENES, SELF_CATS, SIZE_ADJ,
                     SPECS_OF, VAGUE_PLURAL_TERMS, VERBS, WATER, ObjectSpec, SceneSpec)

__all__ = [
    "GENERATOR_VERSION",
    "DEFAULT_N_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "JPEG_QUALITY",
    "JSON_NAME",
    "GT_NAME",
    "IMAGES_DIR",
    "ObjectSpec",
    "SceneSpec",
    "SCENE_SPECS",
    "SCENES",
    "BENCHMARK_CATEGORIES",
    "CAPTION_TERMS",
    "PRETRAIN_JSON",
    "PRETRAIN_PARAMS_NAME",
    "CONDITIONS",
    "generate",
    "is_current",
    "generate_pretrain",
    "is_current_pretrain",
    "caption_stats",
    "object_sizes",
    "tokenize",
    "main",
]


def __getattr__(name: str):
    """``caption_stats`` and ``object_sizes`` live in :mod:`osdpm_lib.audit` now; still importable from here
    (loaded on first use: ``audit`` imports this package for the ground truth)."""
    if name in ("caption_stats", "object_sizes"):
        from osdpm_lib import audit

        return getattr(audit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

CONDITIONS = conditions.CONDITIONS
GENERATOR_VERSION = 1
DEFAULT_N_IMAGES = 2000
DEFAULT_IMAGE_SIZE = 64
JPEG_QUALITY = 90
JSON_NAME = "dataset_embedded.json"
IMAGES_DIR = "images"
NUMERIC_NAME_FRACTION = 0.1
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}  # the rest is train
# The pretraining corpus (generate_pretrain).  Its seed sequences are [seed, PRETRAIN_STREAM, ...]; the
# benchmark's are [seed, 1, i] and [seed, 0x5EED(, 1)], so no two streams coincide for any two seeds.
PRETRAIN_JSON = "dataset_pretrain.json"
PRETRAIN_PARAMS_NAME = "pretrain_params.json"
PRETRAIN_VERSION = 2    # 2: the sensor shift (render.sensor_shift)
PRETRAIN_STREAM = 0x9E7
PRETRAIN_MIX_FRACTION = 0.3  # images whose objects mix two scenes
PRETRAIN_EXTRA_FRACTION = 0.15  # images with an object category foreign to their scene(s)


# --------------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------------


def _rng(*entropy: int) -> np.random.Generator:
    """A PCG64 generator on the seed sequence of ``entropy`` (one stream per purpose and image)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def _split_sizes(n_images: int, n_val: int | None, n_test: int | None) -> tuple[int, int] | None:
    """Explicit ``(n_val, n_test)`` (a missing one at its default fraction), or None when both are None."""
    if n_val is None and n_test is None:
        return None
    return (int(round(SPLIT_FRACTIONS["val"] * n_images)) if n_val is None else int(n_val),
            int(round(SPLIT_FRACTIONS["test"] * n_images)) if n_test is None else int(n_test))


def _check_args(n_images: int, image_size: int, n_val: int | None, n_test: int | None) -> None:
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    sizes = _split_sizes(n_images, n_val, n_test)
    if sizes is not None and min(sizes) < 0:
        raise ValueError(f"n_val and n_test must not be negative, got {sizes[0]} and {sizes[1]}")
    if sizes is not None and sum(sizes) >= n_images:
        raise ValueError(f"n_val + n_test ({sizes[0]} + {sizes[1]}) must be below n_images ({n_images}): "
                         "the train split would be empty")


def _params(n_images: int, seed: int, image_size: int, n_val: int | None = None, n_test: int | None = None,
            condition: str | conditions.Condition = conditions.DEFAULT) -> dict:
    """What identifies a generation; the split sizes only when given and the generator condition (its name and
    :attr:`~conditions.Condition.fingerprint`) only when not the default, so that data sets generated before either
    existed stay current."""
    p = {"n_images": int(n_images), "seed": int(seed), "image_size": int(image_size), "version": GENERATOR_VERSION}
    sizes = _split_sizes(n_images, n_val, n_test)
    if sizes is not None:
        p["n_val"], p["n_test"] = sizes
    cond = conditions.condition(condition)
    if not cond.is_default:
        p["condition"], p["condition_fingerprint"] = cond.name, cond.fingerprint
    return p


def _listed(path: Path) -> list[str] | None:
    """The image file names a generation's json lists (a ground truth keyed by file name, or a Karpathy
    ``images`` list); None when the file is missing or unreadable."""
    try:
        images = json.loads(path.read_text())["images"]
        names = list(images) if isinstance(images, dict) else [im["filename"] for im in images]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if all(isinstance(f, str) for f in names) else None


def _is_complete(out: Path, marker: str, listing: str, params: dict, n_images: int) -> bool:
    """Whether ``out`` holds a finished generation with ``params``: the json ``marker`` (written last)
    records them and the json ``listing`` names ``n_images`` images, all present under ``out/images``."""
    try:
        recorded = json.loads((out / marker).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    names = _listed(out / listing)
    return (recorded == params and names is not None and len(names) == n_images
            and all((out / IMAGES_DIR / f).is_file() for f in names))


def is_current(out_dir: str | Path, n_images: int = DEFAULT_N_IMAGES, seed: int = 0,
               image_size: int = DEFAULT_IMAGE_SIZE, n_val: int | None = None, n_test: int | None = None,
               condition: str = conditions.DEFAULT) -> bool:
    """Whether ``out_dir`` already holds a complete data set generated with these parameters."""
    name = conditions.condition(condition).name
    return _is_complete(Path(out_dir), GT_NAME, JSON_NAME, _params(n_images, seed, image_size, n_val, n_test, name),
                        n_images)


def _clear_previous(out: Path, listing: Path) -> Path:
    """Remove the images a previous generation listed in ``listing``; return the (created) image folder."""
    img_dir = out / IMAGES_DIR
    for f in _listed(listing) or ():
        p = img_dir / Path(f).name
        if p.is_file():
            p.unlink()
    img_dir.mkdir(parents=True, exist_ok=True)
    return img_dir


def _balanced_scenes(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` scenes in random order, every scene as often as any other (within one)."""
    scenes = [SCENES[i % len(SCENES)] for i in range(n)]
    return [scenes[i] for i in rng.permutation(n)]


def _stratified(scenes: Sequence[str], n_val: int, n_test: int, rng: np.random.Generator) -> list[str]:
    """Splits with exactly ``n_test`` test and ``n_val`` val images, the rest train.

    Each split's images are spread over the scenes as evenly as possible (per-scene counts differ by
    at most one): held-out slots go round the scenes (the larger ones first, in random order
    otherwise), the first ``n_test`` slots to test and the next ``n_val`` to val; within a scene the
    images are taken in random order.  ``scenes`` must be balanced (:func:`_balanced_scenes`).
    """
    by: dict[str, list[int]] = {}
    for i, sc in enumerate(scenes):
        by.setdefault(sc, []).append(i)
    names = sorted(by)
    order = sorted(rng.permutation(len(names)).tolist(), key=lambda k: -len(by[names[k]]))  # stable: random ties
    quota = {sc: {"test": 0, "val": 0} for sc in names}
    for j in range(n_test + n_val):
        quota[names[order[j % len(names)]]]["test" if j < n_test else "val"] += 1
    splits = ["train"] * len(scenes)
    for sc in names:
        idx, q = by[sc], quota[sc]
        if q["test"] + q["val"] > len(idx):
            raise ValueError(f"scene {sc!r} has {len(idx)} images, fewer than its {q['test'] + q['val']} held out")
        picked = [idx[i] for i in rng.permutation(len(idx))]
        for k, i in enumerate(picked[: q["test"] + q["val"]]):
            splits[i] = "test" if k < q["test"] else "val"
    return splits


def _assign(n: int, seed: int, n_val: int | None = None,
            n_test: int | None = None) -> tuple[list[str], list[str], set[int]]:
    """Scene and split per image index, and the indices named by number.

    Without split sizes each scene holds out :data:`SPLIT_FRACTIONS` of its images (rounded per
    scene); with them the splits come from :func:`_stratified` on a stream of their own, so that the
    scenes and file names (hence the images) do not depend on the split sizes.
    """
    rng = _rng(seed, 0x5EED)
    scenes = _balanced_scenes(n, rng)
    splits = ["train"] * n
    for sc in SCENES:
        idx = [i for i in range(n) if scenes[i] == sc]
        idx = [idx[i] for i in rng.permutation(len(idx))]
        m = len(idx)
        n_te = int(round(SPLIT_FRACTIONS["test"] * m))
        n_va = int(round(SPLIT_FRACTIONS["val"] * m))
        for i in idx[:n_te]:
            splits[i] = "test"
        for i in idx[n_te : n_te + n_va]:
            splits[i] = "val"
    numeric = set(int(i) for i in rng.choice(n, size=int(round(NUMERIC_NAME_FRACTION * n)), replace=False)) if n else set()
    sizes = _split_sizes(n, n_val, n_test)
    if sizes is not None:
        splits = _stratified(scenes, sizes[0], sizes[1], _rng(seed, 0x5EED, 1))
    return scenes, splits, numeric


def _entry(i: int, name: str, split: str, captions: Sequence[str], sentid: int) -> dict:
    """The Karpathy record of image ``i``, its captions numbered from ``sentid`` on."""
    sents = [{"tokens": tokenize(c), "raw": c, "imgid": i, "sentid": sentid + k} for k, c in enumerate(captions)]
    return {"filename": name, "imgid": i, "split": split, "sentids": [s["sentid"] for s in sents], "sentences": sents}


def _make_image(path: Path, spec: SceneSpec, rng: np.random.Generator, size: int, captioner: type[_Captioner],
                objects: Sequence[ObjectSpec] | None = None, sensor=None, render_size: int | None = None,
                extra=None, swap=None) -> tuple[_Canvas, list[str]]:
    """Render one image of ``spec`` (see :func:`_render`, also for ``extra`` and ``swap``) into the JPEG ``path``
    and caption what was drawn (a twin's captioner sees :func:`conditions.caption_spec`); rendered at
    ``render_size`` and resampled to ``size`` when that differs; ``sensor(img, rng)``, when given, changes the
    rendered image before it is saved (after the captions).  Returns the canvas (boxes at ``size``:
    ``cv.boxes(size)``) and the captions."""
    img, cv = _render(spec, rng, render_size or size, objects, extra=extra, swap=swap)
    caps = captioner(conditions.caption_spec(spec, cv.swapped), _groups(cv), rng).captions()
    if img.size[0] != size:
        img = img.resize((size, size), Image.BILINEAR)
    if sensor is not None:
        img = sensor(img, rng)
    img.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return cv, caps


def generate(out_dir: str | Path, n_images: int = DEFAULT_N_IMAGES, seed: int = 0,
             image_size: int = DEFAULT_IMAGE_SIZE, n_val: int | None = None, n_test: int | None = None,
             force: bool = False, condition: str = conditions.DEFAULT) -> Path:
    """Write the embedded benchmark into ``out_dir`` and return the path of its Karpathy json.

    ``n_val`` / ``n_test`` fix the split sizes (exactly, stratified by scene, see :func:`_stratified`;
    a missing one takes its default fraction of ``n_images``); with both None each scene holds out
    :data:`SPLIT_FRACTIONS` of its images.  The images do not depend on the split sizes (except for the
    ``ambiguous`` condition, whose twins are paired within a split).

    ``condition`` names a generator condition (:data:`osdpm_lib.synth.conditions.CONDITIONS`): the same scenes,
    splits and file names with one documented change; ``"default"`` is the benchmark itself.

    When ``out_dir`` already holds a complete data set with the same parameters (and generator
    version) nothing is written; otherwise the data set is (re)generated, images of a previous
    generation listed in its ground truth being removed first.
    """
    cond = conditions.condition(condition)
    _check_args(n_images, image_size, n_val, n_test)
    out = Path(out_dir)
    js_path, gt_path = out / JSON_NAME, out / GT_NAME
    if not force and is_current(out, n_images, seed, image_size, n_val, n_test, cond.name):
        return js_path
    others = sorted(p.name for p in out.glob("dataset*.json") if p.name != JSON_NAME)
    if others:     # a real data set lives there (e.g. a notebook pointed at data/rsicd): its images share our names
        raise FileExistsError(f"{out}: holds another data set ({', '.join(others)}); the embedded benchmark is not "
                              f"written there (its images would overwrite that data set's)")
    img_dir = _clear_previous(out, gt_path)

    scenes, splits, numeric = _assign(n_images, seed, n_val, n_test)
    per_scene: dict[str, int] = {}
    names = []
    for i, scene in enumerate(scenes):
        per_scene[scene] = per_scene.get(scene, 0) + 1
        names.append(f"{i:05d}.jpg" if i in numeric else f"{scene}_{per_scene[scene]}.jpg")
    pairs = {i: (j, p) for j, p in enumerate(conditions.twin_pairs(scenes, splits)) for i in p} \
        if cond.twin_swaps else {}
    images, gt_images = [], {}
    sentid = 0
    for i in range(n_images):
        cv, caps, fields = _condition_image(cond, img_dir / names[i], names, scenes[i], pairs.get(i), seed, i,
                                            image_size)
        images.append(_entry(i, names[i], splits[i], caps, sentid))
        sentid += len(caps)
        gt_images[names[i]] = groundtruth.entry(scenes[i], cv.boxes(image_size), **fields)

    params = _params(n_images, seed, image_size, n_val, n_test, cond.name)
    js_path.write_text(json.dumps({"dataset": "embedded", "images": images}))
    groundtruth.write(gt_path, image_size, seed, n_images, params, SCENES, gt_images)  # written last: its presence marks a complete generation
    return js_path


def _condition_image(cond: conditions.Condition, path: Path, names: Sequence[str], scene: str,
                     pair: tuple[int, tuple[int, int]] | None, seed: int, i: int,
                     size: int) -> tuple[_Canvas, list[str], dict]:
    """Image ``i`` (of ``scene``, written to ``path``) of a generation under ``cond``: its canvas, captions and extra
    ground-truth fields.  Under the default condition: the scene table's spec, drawn from the image's own stream.

    Twins (``cond.twin_swaps``): both images of a pair (``pair``: its number j and its indices ``(a, b)`` among
    :func:`conditions.twin_pairs`) are drawn from the first one's stream; the pair's categories to swap (1, 2, 1,
    ... up to ``twin_swaps`` of them, :meth:`~conditions.Condition.swap_plan`) are kept as they are in the first and
    painted as their substitutes in the second.  An image whose pair has nothing to swap is drawn as a plain image
    from its own stream.
    """
    spec = cond.scene_spec(scene)
    kw = {"sensor": cond.sensor, "render_size": cond.render_size(size),
          "extra": cond.distractors if cond.clutter_categories[1] > 0 else None}
    if pair is not None:
        j, (a, b) = pair
        chosen: dict[str, str] = {}

        def swap(plan):
            chosen.update(cond.swap_plan(spec, plan, 1 + j % cond.twin_swaps))
            return chosen if i == b else {c: c for c in chosen}

        cv, caps = _make_image(path, spec, _rng(seed, 1, a), size, _Captioner, swap=swap, **kw)
        if chosen:
            return cv, caps, {"twin": names[b if i == a else a], "swapped": chosen}
    cv, caps = _make_image(path, spec, _rng(seed, 1, i), size, _Captioner, **kw)
    return cv, caps, {}


# --------------------------------------------------------------------------------------------------
# Pretraining corpus
# --------------------------------------------------------------------------------------------------


def _perturb(o: ObjectSpec, rng: np.random.Generator, keep: bool = False) -> ObjectSpec:
    """``o`` with its counts scaled by a log-normal factor (single objects stay single), sizes by
    0.9-1.1 and probability by 0.5-1.5 (1 when ``keep``)."""
    f = math.exp(rng.normal(0.0, 0.35))
    lo, hi = o.count
    if hi > 1:
        lo = lo if lo == 0 else max(1, int(round(lo * f)))
        hi = max(lo, 1, int(round(hi * f)))
    g = rng.uniform(0.9, 1.1)
    p = 1.0 if keep else min(1.0, o.p * rng.uniform(0.5, 1.5))
    return ObjectSpec(o.category, (lo, hi), (min(1.0, o.size[0] * g), min(1.0, o.size[1] * g)), p)


def _pretrain_objects(scene: str, rng: np.random.Generator) -> tuple[SceneSpec, tuple[ObjectSpec, ...]]:
    """The scene spec whose background an image of the pretraining corpus gets, and its objects.

    The scene's objects are perturbed (:func:`_perturb`, its defining category always kept); in
    :data:`PRETRAIN_MIX_FRACTION` of the images the objects of a second scene join them (its
    defining category kept, categories already there not doubled), and in
    :data:`PRETRAIN_EXTRA_FRACTION` a category absent from both, with the counts and sizes of a
    scene that has it.
    """
    spec = SCENE_SPECS[scene]
    objs = {o.category: _perturb(o, rng, keep=k == 0) for k, o in enumerate(spec.objects)}
    if rng.random() < PRETRAIN_MIX_FRACTION:
        other = SCENE_SPECS[_choice(rng, [s for s in SCENES if s != scene])]
        for k, o in enumerate(other.objects):
            if o.category not in objs:
                objs[o.category] = _perturb(o, rng, keep=k == 0)
    if rng.random() < PRETRAIN_EXTRA_FRACTION:
        cat = _choice(rng, [c for c in BENCHMARK_CATEGORIES if c not in objs])
        objs[cat] = _perturb(_choice(rng, SPECS_OF[cat]), rng, keep=True)
    return spec, tuple(objs.values())


def _pretrain_params(n_images: int, seed: int, image_size: int, n_val: int, n_test: int) -> dict:
    return {**_params(n_images, seed, image_size, n_val, n_test), "corpus": "pretrain",
            "pretrain_version": PRETRAIN_VERSION}


def is_current_pretrain(out_dir: str | Path, n_images: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                        n_val: int = 200, n_test: int = 200) -> bool:
    """Whether ``out_dir`` already holds a complete pretraining corpus generated with these parameters."""
    return _is_complete(Path(out_dir), PRETRAIN_PARAMS_NAME, PRETRAIN_JSON,
                        _pretrain_params(n_images, seed, image_size, n_val, n_test), n_images)


def generate_pretrain(out_dir: str | Path, n_images: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                      n_val: int = 200, n_test: int = 200, force: bool = False) -> Path:
    """Write a pretraining corpus (web alt-text style) into ``out_dir`` and return its Karpathy json.

    The corpus plays web alt-text data for a CLIP later fine-tuned on the benchmark: images from the
    same painters with perturbed and mixed scenes (:func:`_pretrain_objects`), seen through another sensor
    (:func:`~osdpm_lib.synth.render.sensor_shift`: colour response, tone, zoom, blur), one to three short
    noisy captions each (:class:`_AltText`) with the benchmark's object nouns, and its own seed
    streams (``[seed, 0x9E7, ...]``), so that its images, file names (``pre_000123.jpg``) and
    captions differ from every benchmark's.  Files: ``dataset_pretrain.json`` (Karpathy schema;
    ``n_val`` val and ``n_test`` test images, stratified by the scene whose background an image has),
    ``images/*.jpg`` and, written last, ``pretrain_params.json`` (the parameters: a second call with
    the same ones returns at once unless ``force``).  ``out_dir`` must not hold another
    ``dataset*.json`` (the readers expect one per folder).
    """
    _check_args(n_images, image_size, n_val, n_test)
    out = Path(out_dir)
    js_path = out / PRETRAIN_JSON
    params = _pretrain_params(n_images, seed, image_size, n_val, n_test)
    if not force and _is_complete(out, PRETRAIN_PARAMS_NAME, PRETRAIN_JSON, params, n_images):
        return js_path
    others = sorted(p.name for p in out.glob("dataset*.json") if p.name != PRETRAIN_JSON)
    if others:
        raise ValueError(f"{out} already holds {', '.join(others)}; the pretraining corpus needs a folder of its own")
    img_dir = _clear_previous(out, js_path)

    rng = _rng(seed, PRETRAIN_STREAM, 0)
    scenes = _balanced_scenes(n_images, rng)
    splits = _stratified(scenes, n_val, n_test, rng)
    images = []
    sentid = 0
    for i in range(n_images):
        name = f"pre_{i:06d}.jpg"
        rng = _rng(seed, PRETRAIN_STREAM, 1, i)
        spec, objects = _pretrain_objects(scenes[i], rng)
        _, caps = _make_image(img_dir / name, spec, rng, image_size, _AltText, objects, sensor_shift)
        images.append(_entry(i, name, splits[i], caps, sentid))
        sentid += len(caps)
    js_path.write_text(json.dumps({"dataset": "pretrain", "images": images}))
    counts = {sp: splits.count(sp) for sp in ("train", "val", "test")}
    marker = {"params": params, "images_per_split": counts, "captions": sentid}
    (out / PRETRAIN_PARAMS_NAME).write_text(json.dumps(marker, indent=1))  # written last: marks a complete corpus
    return js_path



def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``OUT_DIR`` generates the benchmark, ``--pretrain OUT`` the pretraining corpus; 2 on bad values."""
    ap = argparse.ArgumentParser(description="Generate the embedded synthetic remote-sensing caption benchmark "
                                             "(OUT_DIR) or its pretraining corpus (--pretrain OUT).")
    ap.add_argument("out_dir", nargs="?", help="benchmark folder")
    ap.add_argument("--pretrain", metavar="OUT", help="write the pretraining corpus (web alt-text style) here")
    ap.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    ap.add_argument("--n-val", type=int, default=None,
                    help="validation images (benchmark: default a tenth per scene; pretraining corpus: 200)")
    ap.add_argument("--n-test", type=int, default=None,
                    help="test images (benchmark: default a tenth per scene; pretraining corpus: 200)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the folder is current")
    ap.add_argument("--condition", default=conditions.DEFAULT,
                    help=f"benchmark only: a generator condition ({', '.join(conditions.CONDITIONS)})")
    args = ap.parse_args(argv)
    if (args.out_dir is None) == (args.pretrain is None):
        ap.error("give either OUT_DIR (benchmark) or --pretrain OUT (pretraining corpus)")
    if args.pretrain is not None and args.condition != conditions.DEFAULT:
        ap.error("--condition applies to the benchmark (OUT_DIR), not to the pretraining corpus")
    try:
        if args.pretrain is not None:
            path = generate_pretrain(args.pretrain, n_images=args.n_images, seed=args.seed, image_size=args.image_size,
                                     n_val=200 if args.n_val is None else args.n_val,
                                     n_test=200 if args.n_test is None else args.n_test, force=args.force)
        else:
            path = generate(args.out_dir, n_images=args.n_images, seed=args.seed, image_size=args.image_size,
                            n_val=args.n_val, n_test=args.n_test, force=args.force, condition=args.condition)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from osdpm_lib.audit import caption_stats  # not at import: audit reads the ground truth through this package

    st = caption_stats(path)
    print(path)
    print(json.dumps({k: st[k] for k in ("n_images", "n_captions", "mean_words", "unique_ratio", "images_per_split")}))
    return 0
