"""The ablation of the book (Table 3): which rows are trained, how, and the paired statistics between them.

Rows (:data:`ROWS`), each a variant of :mod:`osdpm_lib.train` with a few configuration overrides:

* ``zero-shot`` — the pretrained CLIP scored as it is (``epochs=0``: no training on the benchmark; one run,
  it does not depend on the seed);
* ``frozen`` — OSDPM with the backbone frozen: only DAPN, OSFCM and CLIP's two projections (and the
  temperature) train;
* ``clip``, ``clip+dapn``, ``osdpm`` — the whole model fine-tuned.

Every row trains with the profile's seeds (paired: seed ``s`` gives every row the same data order and the same
initialisation of the shared parts), selects its epoch on validation Rsum and scores the test split once.
:func:`comparisons` compares rows with :func:`osdpm_lib.stats.compare_runs` (paired bootstrap over test images,
nested over seeds) from each run's stored test embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import profiles
from .evaluate import Encoded
from .metrics import KEYS
from .stats import compare_runs, per_image_contributions

# row -> (variant, TrainConfig overrides)
ROWS: dict[str, tuple[str, dict]] = {
    "zero-shot": ("clip", {"epochs": 0}),
    "frozen": ("osdpm", {"freeze_backbone": True}),
    "clip": ("clip", {}),
    "clip+dapn": ("clip+dapn", {}),
    "osdpm": ("osdpm", {}),
}
SEEDLESS = ("zero-shot",)      # one run: nothing in it depends on the seed
# the paired comparisons of Table 3: (a, b) reads "a − b"
PAIRS = (("clip+dapn", "clip"), ("osdpm", "clip+dapn"), ("osdpm", "clip"),
         ("clip", "zero-shot"), ("frozen", "zero-shot"), ("osdpm", "frozen"))


def row_seeds(row: str, seeds) -> list[int]:
    return list(seeds)[:1] if row in SEEDLESS else list(seeds)


def row_config(profile: str, row: str, seed: int, **overrides):
    """The ``TrainConfig`` of one ablation row and seed (``overrides``, e.g. model/pretrained, win when not None)."""
    if row not in ROWS:
        raise ValueError(f"unknown ablation row {row!r}; choose one of {list(ROWS)}")
    variant, fixed = ROWS[row]
    return profiles.train_config(profile, variant, seed, **(overrides | fixed))


def run_dir(runs_dir, row: str, seed: int) -> Path:
    return Path(runs_dir) / profiles.run_name(row, seed)


def run_all(profile: str, data_dir, runs_dir, rows=tuple(ROWS), **overrides) -> pd.DataFrame:
    """Train (or reuse) every row × seed of the profile; one table row per run with its test metrics (and, with
    ``retrain_full``, the final retrain's on train+val as ``retrain_<metric>`` columns)."""
    from .train import train

    out = []
    seeds = profiles.get(profile)["seeds"]
    for row in rows:
        for seed in row_seeds(row, seeds):
            # embeddings across training (figures of notebook 07) for the first seed only
            cfg = row_config(profile, row, seed, **overrides, stage_embeddings=seed == seeds[0])
            res = train(cfg, data_dir, run_dir(runs_dir, row, seed))
            out.append({"variant": row, "seed": seed, "best_epoch": res["best_epoch"], "train_s": res["train_s"],
                        **{k: res["test"][k] for k in KEYS},
                        **{f"retrain_{k}": res["retrain_full"]["test"][k] for k in KEYS if "retrain_full" in res}})
    return pd.DataFrame(out)


def contributions(runs: pd.DataFrame, runs_dir, ties: str | None = None, split: str = "test",
                  folder_of=None) -> dict[str, dict[int, np.ndarray]]:
    """Per-image contributions (``stats.per_image_contributions``) of every run in ``runs``: ``{row: {seed: array}}``
    (comparisons pair runs by seed label, whatever the table's order; a row and seed listed twice is an error),
    from the stored embeddings of each run's selected model (``<split>_encoded.npz``: ``test``, or ``val`` for
    choices made on validation), under the run's own tie rule unless ``ties`` is given.  ``folder_of(variant, seed)``
    names the run folders (default: :func:`run_dir` under ``runs_dir``)."""
    folder_of = folder_of or (lambda variant, seed: run_dir(runs_dir, variant, seed))
    out: dict[str, dict[int, np.ndarray]] = {}
    for r in runs.sort_values(["variant", "seed"]).itertuples():
        if int(r.seed) in out.get(r.variant, {}):
            raise ValueError(f"the runs table lists {r.variant} seed {r.seed} twice; one run per row and seed")
        folder = folder_of(r.variant, r.seed)
        rule = ties or json.loads((folder / "config.json").read_text()).get("ties", "expected")
        enc = Encoded.load(folder / f"{split}_encoded.npz")
        out.setdefault(r.variant, {})[int(r.seed)] = per_image_contributions(enc.sims(), enc.caption_image, rule)
    return out


def dapn_growth(runs: pd.DataFrame, runs_dir) -> pd.DataFrame:
    """DAPN's share of the image embedding per epoch: ``dapn_ratio`` (mean ||delta|| / ||pooled|| on validation
    images, ``metrics.csv``) of every run in ``runs`` whose model has DAPN; long table (variant, seed, epoch,
    dapn_ratio)."""
    frames = []
    for r in runs.sort_values(["variant", "seed"]).itertuples():
        hist = pd.read_csv(run_dir(runs_dir, r.variant, r.seed) / "metrics.csv")
        if "dapn_ratio" in hist and hist["dapn_ratio"].notna().any():
            frames.append(hist[["epoch", "dapn_ratio"]].assign(variant=r.variant, seed=r.seed))
    cols = ["variant", "seed", "epoch", "dapn_ratio"]
    return pd.concat(frames)[cols].reset_index(drop=True) if frames else pd.DataFrame(columns=cols)


def comparisons(runs: pd.DataFrame, runs_dir, pairs=PAIRS, n_boot: int = 2000, seed: int = 0,
                ties: str | None = None) -> pd.DataFrame:
    """The paired Rsum comparisons of Table 3 (pairs whose rows were both run)."""
    contrib = contributions(runs, runs_dir, ties)
    pairs = [(a, b) for a, b in pairs if a in contrib and b in contrib]
    return compare_runs(contrib, pairs, n_boot=n_boot, seed=seed)
