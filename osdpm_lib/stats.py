"""Paired comparison of two trained variants over seeds on the same test split.

A run is summarised by its per-image contributions (:func:`per_image_contributions`): for each test
image its image->text hits at K = 1, 5, 10, the sums of its captions' text->image hits at K = 1, 5,
10, and its caption count.  Rsum under image weights ``w`` (see :func:`rsum`) reweights queries
only: each image is resampled together with its captions while the gallery stays fixed, so no
similarity matrix is recomputed.  With all weights 1 it is ``metrics.retrieval_metrics()["rsum"]``.

:func:`paired_bootstrap` nests the two levels of variation: each replicate resamples seeds (the
paired runs ``a[s]``, ``b[s]``) and test images (one resample shared by every seed of the
replicate), and records the mean over the resampled seeds of ``Rsum_a - Rsum_b``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import KS, hits

COLUMNS = tuple(f"i2t_r{k}" for k in KS) + tuple(f"t2i_r{k}_sum" for k in KS) + ("n_captions",)


def per_image_contributions(sims, caption_image, ties: str = "expected") -> np.ndarray:
    """float64 [n_images, 7], columns :data:`COLUMNS`: i2t hits at 1/5/10, the sum over the image's
    captions of their t2i hits at 1/5/10, and the image's caption count."""
    return contributions_from_hits(*hits(sims, caption_image, ties), caption_image)  # hits validates caption_image


def contributions_from_hits(i2t: np.ndarray, t2i: np.ndarray, caption_image) -> np.ndarray:
    """:func:`per_image_contributions` from :func:`osdpm_lib.metrics.hits`' arrays (already computed)."""
    cap_img = np.asarray(caption_image, dtype=np.int64)
    n = len(i2t)
    t2i_sum = np.stack([np.bincount(cap_img, t2i[:, c], minlength=n) for c in range(len(KS))], axis=1)
    n_cap = np.bincount(cap_img, minlength=n).astype(np.float64)
    return np.concatenate([i2t, t2i_sum, n_cap[:, None]], axis=1)


def rsum(contrib: np.ndarray, weights=None) -> np.ndarray | float:
    """Rsum (percent) of one run under image weights: ``weights`` [n_images] or [n_boot, n_images]
    (e.g. multinomial counts); None = all ones (the plain test-split Rsum, a float)."""
    c = np.asarray(contrib, dtype=np.float64)
    i2t, t2i, n_cap = c[:, :3].sum(axis=1), c[:, 3:6].sum(axis=1), c[:, 6]
    if weights is None:
        return float(100.0 * i2t.sum() / len(c) + 100.0 * t2i.sum() / n_cap.sum())
    w = np.asarray(weights, dtype=np.float64)
    return 100.0 * (w @ i2t) / w.sum(axis=-1) + 100.0 * (w @ t2i) / (w @ n_cap)


@dataclass
class PairedBootstrap:
    """Result of :func:`paired_bootstrap`; ``diff`` etc. are Rsum points (a - b)."""
    diff: float                 # observed mean over seeds of Rsum_a - Rsum_b (no resampling)
    per_seed: list[float]       # observed Rsum_a - Rsum_b per seed
    ci_low: float
    ci_high: float
    n_seeds: int
    n_images: int
    n_boot: int
    level: float
    excludes_zero: bool
    p_two_sided: float          # 2 * min(P*(diff <= 0), P*(diff >= 0)), clipped to 1
    verdict: str
    replicates: np.ndarray = field(repr=False)  # [n_boot] bootstrap mean differences


def _check_runs(name: str, runs) -> list[np.ndarray]:
    runs = [np.asarray(r, dtype=np.float64) for r in runs]
    if not runs:
        raise ValueError(f"{name} is empty; give one per-image contribution array per seed")
    for s, r in enumerate(runs):
        if r.ndim != 2 or r.shape[1] != len(COLUMNS):
            raise ValueError(f"{name}[{s}] has shape {r.shape}; expected [n_images, {len(COLUMNS)}] "
                             "from per_image_contributions()")
    return runs


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                     names: tuple[str, str] = ("a", "b")) -> PairedBootstrap:
    """Paired bootstrap CI of mean(Rsum_a - Rsum_b) over seeds, nested over test images.

    ``a``, ``b``: lists of :func:`per_image_contributions` arrays, one per seed, paired by index
    and all on the same test images in the same order; ``b`` may have a single entry (e.g. a
    zero-shot reference), used for every seed.  Each of ``n_boot`` replicates draws seeds with
    replacement and one multinomial image resample shared by those seeds.  The CI is the
    percentile interval at ``level``; ``names`` label the verdict.
    """
    a, b = _check_runs("a", a), _check_runs("b", b)
    if len(b) not in (1, len(a)):
        raise ValueError(f"a has {len(a)} seeds, b has {len(b)}; runs are paired by seed "
                         "(b may also hold a single reference run, used for every seed)")
    n_img = a[0].shape[0]
    for name, runs in (("a", a), ("b", b)):
        for s, r in enumerate(runs):
            if r.shape[0] != n_img:
                raise ValueError(f"{name}[{s}] has {r.shape[0]} images, a[0] has {n_img}; "
                                 "all runs must be scored on the same test images")
            if not np.array_equal(r[:, -1], a[0][:, -1]):
                raise ValueError(f"{name}[{s}] has other captions-per-image counts than a[0]; "
                                 "all runs must be scored on the same test split")
    if not 0 < level < 1:
        raise ValueError(f"level={level}; expected a value in (0, 1)")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}; expected >= 1")
    n_seeds = len(a)
    b = b * n_seeds if len(b) == 1 else b

    per_seed = np.array([rsum(x) - rsum(y) for x, y in zip(a, b)])
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=n_boot).astype(np.float64)
    d = np.stack([rsum(x, w) - rsum(y, w) for x, y in zip(a, b)], axis=1)  # [n_boot, n_seeds]
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    reps = np.take_along_axis(d, seeds, axis=1).mean(axis=1)

    alpha = 1.0 - level
    lo, hi = (float(q) for q in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
    p = float(min(1.0, 2.0 * min(np.mean(reps <= 0), np.mean(reps >= 0))))
    excludes = lo > 0 or hi < 0
    pct = f"{100 * level:g}%"
    label = f"{names[0]} − {names[1]}"
    if lo > 0:
        verdict = f"{label} > 0 ({pct} CI excludes 0)"
    elif hi < 0:
        verdict = f"{label} < 0 ({pct} CI excludes 0)"
    else:
        verdict = f"no difference shown ({pct} CI contains 0)"
    return PairedBootstrap(diff=float(per_seed.mean()), per_seed=per_seed.tolist(), ci_low=lo, ci_high=hi,
                           n_seeds=n_seeds, n_images=n_img, n_boot=n_boot, level=level,
                           excludes_zero=excludes, p_two_sided=p, verdict=verdict, replicates=reps)


def pair_by_seed(a, b, names: tuple[str, str] = ("a", "b")) -> tuple[list, list]:
    """Two systems' runs as lists paired by **seed label**: ``a`` and ``b`` are ``{seed: contributions}``; the
    result follows the sorted seeds, whatever order the runs came in.  ``b`` with a single run while ``a`` has more
    is a seedless reference (used for every seed); otherwise a seed of one without a run of the other is an error
    naming it.  Lists (already paired by position) pass unchanged."""
    if not isinstance(a, dict) and not isinstance(b, dict):
        return list(a), list(b)
    if not (isinstance(a, dict) and isinstance(b, dict)):
        raise ValueError(f"{names[0]} and {names[1]}: give both as {{seed: contributions}} (paired by seed label)")
    if len(b) == 1 and len(a) > 1:
        return [a[s] for s in sorted(a)], list(b.values())
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(f"runs are paired by seed label: {names[0]} seed(s) {only_a} have no {names[1]} run, "
                         f"{names[1]} seed(s) {only_b} have no {names[0]} run")
    seeds = sorted(a)
    return [a[s] for s in seeds], [b[s] for s in seeds]


def compare_runs(runs: dict, pairs, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, digits: int = 2):
    """One :func:`paired_bootstrap` row per ``(a, b)`` name pair of ``runs`` (name -> ``{seed: contributions}``,
    paired by seed label (:func:`pair_by_seed`); or name -> a list per seed, paired by position), all with the same
    bootstrap ``seed``; a pandas DataFrame."""
    import pandas as pd

    rows = []
    for x, y in pairs:
        missing = [n for n in (x, y) if n not in runs]
        if missing:
            raise ValueError(f"unknown run(s) {missing}; known: {sorted(runs)}")
        r = paired_bootstrap(*pair_by_seed(runs[x], runs[y], (x, y)), n_boot=n_boot, seed=seed, level=level,
                             names=(x, y))
        rows.append({"comparison": f"{x} − {y}", "diff": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high,
                     "p": r.p_two_sided, "n_seeds": r.n_seeds, "n_images": r.n_images, "n_boot": r.n_boot,
                     "verdict": r.verdict, "per_seed": ", ".join(f"{v:.{digits}f}" for v in r.per_seed)})
    return pd.DataFrame(rows, columns=["comparison", "diff", "ci_low", "ci_high", "p", "n_seeds",
                                       "n_images", "n_boot", "verdict", "per_seed"])
