"""The study's untouched test folds: generated from generator seeds no other part of the project uses, recorded by
content hash, and readable only by the study's final runs.

* :data:`FOLD_SEEDS`: the generator seed of each fold (:func:`osdpm_lib.synth.generate` with the benchmark's scene
  mix and settings; ``n_test`` images in the test split, ``N_SPARE`` left as an unused train split because the
  generator needs one).  :data:`PILOT_SEED`: one more fold of the same size for the study's *design* (the pilot that
  measures the variance components); it is not a study fold, and tuning and design runs may score it.
* ``osdpm_lib/study_folds.json`` (:data:`REGISTRY`): every fold's seed, size and the sha256 of its Karpathy json and
  of its test images' bytes, written once when the folds were first generated (``python -m osdpm_lib.folds``).
* :func:`refuse_study_fold`: raised by :func:`osdpm_lib.train.train` and by the study's scoring for any run whose
  purpose is not ``"study"`` pointed at a registered fold.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REGISTRY = Path(__file__).with_name("study_folds.json")
FOLD_SEEDS = tuple(range(9101, 9141))     # up to 40 folds; never used by the benchmark (0), pretraining or tuning
PILOT_SEED = 9000                          # the design's pilot fold (not a study fold)
# Folds a finished draw scored: their verdict was read, so a later draw never reuses them as untouched folds.
SPENT = ({f"fold{k:02d}": "the first draw (2026-12-04: 7 seeds, min_epochs 6; results/study/draw1)" for k in range(10)}
         | {f"fold{k:02d}": "the second draw (2026-12-05: 10 seeds; results/study/draw2)" for k in range(10, 20)})
FIRST_FRESH = len(SPENT)                   # the third draw's folds: fold20, fold21, ...


def fresh_fold_names(n_folds: int) -> list[str]:
    """The names of the ``n_folds`` folds a new draw scores: :data:`FIRST_FRESH` on (:func:`generate_folds` with
    ``first=FIRST_FRESH`` makes them)."""
    return [fold_name(k) for k in range(FIRST_FRESH, FIRST_FRESH + n_folds)]
N_TEST = 1000
N_SPARE = 20                               # the generator needs a non-empty train split: 20 images nobody reads
IMAGE_SIZE = 64
JSON_NAME = "dataset_embedded.json"


class StudyFoldError(PermissionError):
    """A run that is not one of the study's final runs was pointed at a study fold."""


def fold_name(k: int) -> str:
    return f"fold{k:02d}"


def generate_fold(out_dir, seed: int, n_test: int = N_TEST, image_size: int = IMAGE_SIZE,
                  condition: str = "default") -> Path:
    """One fold: the embedded benchmark's generator at ``seed`` with ``n_test`` test images (stratified by scene, as
    the book's test split) and no validation split; ``condition``: a generator condition
    (:mod:`osdpm_lib.synth.conditions`; the conditions study's folds)."""
    from .synth import generate

    generate(out_dir, n_images=n_test + N_SPARE, seed=seed, image_size=image_size, n_val=0, n_test=n_test,
             condition=condition)
    return Path(out_dir)


def generate_folds(root, n_folds: int, n_test: int = N_TEST, image_size: int = IMAGE_SIZE, first: int = 0
                   ) -> list[Path]:
    """``n_folds`` study folds from number ``first`` on under ``root`` (``root/fold10`` ...), each checked against
    the registry (a fold not yet registered is registered)."""
    if not (0 <= first and 1 <= n_folds <= len(FOLD_SEEDS) - first):
        raise ValueError(f"n_folds={n_folds} from fold {first}: only {len(FOLD_SEEDS)} folds have seeds")
    out = []
    for k in range(first, first + n_folds):
        d = generate_fold(Path(root) / fold_name(k), FOLD_SEEDS[k], n_test, image_size)
        verify(d, fold_name(k))
        out.append(d)
    return out


def content_hash(data_dir) -> dict:
    """sha256 of a fold's Karpathy json and of its test images (file names and bytes, in name order)."""
    data_dir = Path(data_dir)
    raw = (data_dir / JSON_NAME).read_bytes()
    images = sorted(im["filename"] for im in json.loads(raw)["images"] if im["split"] == "test")
    h = hashlib.sha256()
    for name in images:
        h.update(name.encode() + b"\0" + (data_dir / "images" / name).read_bytes())
    return {"json_sha256": hashlib.sha256(raw).hexdigest(), "images_sha256": h.hexdigest(), "n_test": len(images)}


def registered() -> dict:
    """The registry: fold name -> {seed, n_test, image_size, json_sha256, images_sha256}; {} before any fold exists."""
    return json.loads(REGISTRY.read_text()) if REGISTRY.is_file() else {}


def register(data_dir, name: str, seed: int, image_size: int = IMAGE_SIZE) -> dict:
    """Record a fold's hashes in the registry (refuses to change an existing entry)."""
    reg = registered()
    entry = {"seed": seed, "image_size": image_size, **content_hash(data_dir)}
    if name in reg and reg[name] != entry:
        raise ValueError(f"{REGISTRY}: fold {name} is registered with other content ({reg[name]} vs {entry}); "
                         "a fold's content never changes once recorded")
    reg[name] = entry
    REGISTRY.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    return entry


def verify(data_dir, name: str, seed: int | None = None) -> dict:
    """The fold's hashes, checked against its registry entry (registered on first sight: the generation that made
    the registry; ``seed``: its generator seed, default :data:`FOLD_SEEDS` of the name's number); a mismatch names
    both."""
    reg = registered()
    if name not in reg:
        return register(data_dir, name, FOLD_SEEDS[int(name.removeprefix("fold"))] if seed is None else seed)
    got = content_hash(data_dir)
    want = {k2: reg[name][k2] for k2 in got}
    if got != want:
        raise ValueError(f"{data_dir}: study fold {name} differs from the one recorded in {REGISTRY} "
                         f"(recorded {want}, found {got}); regenerate it with seed {reg[name]['seed']} "
                         "(a different Pillow/JPEG encoder changes the bytes: say so beside any result)")
    return got


def is_study_fold(data_dir) -> str | None:
    """The registered fold name of ``data_dir`` (matched by its json's sha256), or None."""
    path = Path(data_dir) / JSON_NAME
    if not path.is_file():
        return None
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return next((n for n, e in registered().items() if e["json_sha256"] == sha), None)


def refuse_study_fold(data_dir, purpose: str) -> None:
    """Raise :class:`StudyFoldError` when ``data_dir`` is a study fold and ``purpose`` is not ``"study"``; a
    ``"design"`` run (the study's pilot) may read a :data:`SPENT` fold: its draw's verdict was read, and the next
    draw's design measures its variance there (never its effect: the folds it scores are fresh)."""
    name = is_study_fold(data_dir)
    if name is not None and purpose != "study" and not (purpose == "design" and name in SPENT):
        raise StudyFoldError(f"{data_dir} is the study's test fold {name} ({REGISTRY.name}); a {purpose!r} run may "
                             "not read it: only the study's final runs (purpose='study') score the folds, and design runs the "
                             "spent ones")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.folds", description=__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--n-folds", type=int, default=10)
    args = ap.parse_args(argv)
    for d in generate_folds(args.root, args.n_folds):
        print(d, content_hash(d)["images_sha256"][:16])
    return 0


if __name__ == "__main__":
    sys.exit(main())
