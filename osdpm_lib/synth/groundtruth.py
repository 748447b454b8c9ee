"""``ground_truth.json`` of the embedded benchmark: the only module that writes or reads its format.

``{"image_size": S, "seed": s, "n_images": n, "params": {...}, "scenes": [...], "images": {filename:
{"scene": str, "boxes": [{"category", "box": [x0, y0, x1, y1], "color"}]}}}``: pixel coordinates at
``image_size``, x1/y1 exclusive, categories of :data:`osdpm_lib.synth.scenes.BENCHMARK_CATEGORIES`.  Under a
generator condition (:mod:`osdpm_lib.synth.conditions`) a box may carry ``"distractor": true`` (drawn, never
captioned) and an image ``"twin"`` (the file name of its look-alike) and ``"swapped"`` (``{category: painted as}``);
the default benchmark has none of them.  ``params`` is
what :func:`osdpm_lib.synth.is_current` compares; the file is written last, so its presence marks a
complete generation.  A real data set has no ground truth (:func:`load_ground_truth` returns None).

:func:`scene_of` is the one answer to "the scene of an image": the ground truth's where it lists the
image, else the record's (or, for a bare file name, the class the name encodes,
:func:`osdpm_lib.data.scene_from_filename`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from osdpm_lib.data import scene_from_filename

GT_NAME = "ground_truth.json"


# ------------------------------------------------------------------------------------------ writing
def entry(scene: str, boxes: list[dict], **extra) -> dict:
    """The ground-truth record of one image (``boxes``: :meth:`osdpm_lib.synth.render._Canvas.boxes`); ``extra``
    fields of a generator condition (``twin``, ``swapped`` of :mod:`osdpm_lib.synth.conditions`) follow."""
    return {"scene": scene, "boxes": boxes, **extra}


def write(path: str | Path, image_size: int, seed: int, n_images: int, params: dict, scenes, images: dict) -> None:
    """Write the ground truth of a generation (``images``: file name -> :func:`entry`) to ``path``."""
    gt = {"image_size": int(image_size), "seed": int(seed), "n_images": int(n_images), "params": params,
          "scenes": list(scenes), "images": images}
    Path(path).write_text(json.dumps(gt))


# ------------------------------------------------------------------------------------------ reading
def read(path: str | Path) -> dict:
    """The ground truth in the file ``path``."""
    return json.loads(Path(path).read_text())


def load_ground_truth(data_dir) -> dict | None:
    """``ground_truth.json`` of a data folder, or None (a real data set has none)."""
    p = Path(data_dir) / GT_NAME
    return read(p) if p.is_file() else None


def image_size(gt: dict) -> int:
    """The side (pixels) the boxes are given at."""
    return gt["image_size"]


def scene_of(image, gt: dict | None = None) -> str | None:
    """The scene class of an image: a record (``.filename``, ``.scene``) or a file name.

    From the ground truth where it lists the image; else the record's ``scene``, or for a file name the
    class it encodes (``airport_348.jpg`` -> ``airport``, :func:`osdpm_lib.data.scene_from_filename`);
    None when nothing says.
    """
    name = getattr(image, "filename", image)
    images = (gt or {}).get("images", {})
    if name in images:
        return images[name]["scene"]
    return image.scene if hasattr(image, "scene") else scene_from_filename(name)


def scenes_for(records, gt: dict | None = None) -> list[str | None]:
    """:func:`scene_of` of every record."""
    return [scene_of(r, gt) for r in records]


def boxes_of(gt: dict, filename: str) -> list[tuple[str, list]]:
    """``(category, [x0, y0, x1, y1])`` of every object of an image (none when the image is not listed)."""
    return [(b["category"], b["box"]) for b in gt["images"].get(filename, {}).get("boxes", [])]


def categories_of(gt: dict, filename: str) -> set[str]:
    """The object categories drawn in an image."""
    return {c for c, _ in boxes_of(gt, filename)}


def all_boxes(gt: dict) -> Iterator[tuple[str, str, str, list]]:
    """``(filename, scene, category, box)`` of every object, in file order."""
    for fn, rec in gt["images"].items():
        for b in rec["boxes"]:
            yield fn, rec["scene"], b["category"], b["box"]
