"""The study's instrument: paired comparisons over seeds and test folds, their power, and the equivalence verdict.

A *run-fold* is one trained run scored on one test fold, summarised per query (:func:`scored`): the recall
contributions of :func:`osdpm_lib.stats.per_image_contributions` and the rank of the first relevant item of every
query (:func:`osdpm_lib.metrics.ranks`).  A system is ``{seed label: [run-fold per fold]}``; two systems are paired
**by seed label** (a missing or duplicated seed is an error naming it), never by position.

:func:`nested_bootstrap` is :func:`osdpm_lib.stats.paired_bootstrap` generalised to several folds and metrics: each
replicate resamples the seed labels (with replacement) and, in every fold, the test images (each with its captions;
one resample per fold shared by every seed and both systems), and records the mean over seeds and folds of
``metric(a) - metric(b)``.  Its standard deviation, times ``sqrt(S / (S - 1))`` for ``S`` seeds (the bootstrap's
small-sample bias), is the comparison's standard error ``SE``; the intervals are ``diff ± t_{S-1} SE`` (seed
variance dominates; the percentile interval of ``S`` resampled seeds is too narrow for ten or so seeds); from it

* the minimum detectable effect at 80% power and two-sided alpha = 0.05: ``MDE = (t_0.975 + t_0.8) * SE``;
* the power against an effect ``delta``: ``T(delta / SE - t_0.975) + T(-delta / SE - t_0.975)`` (t with S - 1
  degrees of freedom);
* the verdict (:func:`verdict`): ``better`` / ``worse`` when the 95% CI excludes 0, else ``equivalent`` when the 90%
  CI lies inside ``(-margin, +margin)`` (two one-sided tests at 5%), else ``inconclusive``.

:func:`variance_components` splits the variance of a comparison into seed, image and seed x image parts (the
pilot's and the study's), and :func:`plan` turns them into the number of seeds and folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from .metrics import ranks
from .stats import contributions_from_hits, rsum

Z95, Z80 = float(norm.ppf(0.975)), float(norm.ppf(0.8))
VERDICTS = ("better", "worse", "equivalent", "inconclusive")
# metric -> (direction: +1 higher is better, -1 lower is better)
METRICS = {"rsum": 1, "mrr_i2t": 1, "mrr_t2i": 1, "medr_i2t": -1, "medr_t2i": -1}


@dataclass
class RunFold:
    """One run scored on one fold: recall contributions [n_images, 7] and per-query ranks."""
    contrib: np.ndarray
    i2t_rank: np.ndarray
    i2t_rr: np.ndarray
    t2i_rank: np.ndarray
    t2i_rr: np.ndarray
    caption_image: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.contrib)


def scored(sims, caption_image, ties: str = "expected") -> RunFold:
    """One run-fold from its similarities: hits and ranks from one counting pass (:func:`metrics.ranks`)."""
    r = ranks(sims, caption_image, ties, with_hits=True)
    return RunFold(contributions_from_hits(r["i2t_hits"], r["t2i_hits"], caption_image), r["i2t_rank"], r["i2t_rr"],
                   r["t2i_rank"], r["t2i_rr"], np.asarray(caption_image, dtype=np.int64))


def _weighted_median(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Lower weighted median of ``values`` [n] under each row of ``w`` [n_boot, n]."""
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(w[:, order], axis=1)
    idx = (cw >= cw[:, -1:] / 2.0).argmax(axis=1)
    return values[order][idx]


def metric(rf: RunFold, name: str, w: np.ndarray | None = None):
    """A metric of a run-fold under image weights ``w`` [n_boot, n_images] (None: every image once, a float).
    ``rsum`` in points; ``mrr_*`` (mean reciprocal rank) in percent; ``medr_*``: median rank (1 = top)."""
    one = w is None
    if one:
        w = np.ones((1, rf.n_images))
    w = np.asarray(w, dtype=np.float64)
    if name == "rsum":
        out = rsum(rf.contrib, w)
    elif name == "mrr_i2t":
        out = 100.0 * (w @ rf.i2t_rr) / w.sum(axis=1)
    elif name == "mrr_t2i":
        out = 100.0 * (w @ np.bincount(rf.caption_image, rf.t2i_rr, minlength=rf.n_images)) / (w @ rf.contrib[:, 6])
    elif name == "medr_i2t":
        out = _weighted_median(rf.i2t_rank, w)
    elif name == "medr_t2i":
        out = _weighted_median(rf.t2i_rank, w[:, rf.caption_image])
    else:
        raise ValueError(f"unknown metric {name!r}; choose one of {list(METRICS)}")
    return float(out[0]) if one else np.asarray(out, dtype=np.float64)


def _check_systems(a: dict, b: dict, names: tuple[str, str]) -> list:
    """The common seed labels of two systems (sorted); a seed missing in one of them, a seed with another number of
    folds, or folds of other images is an error naming it."""
    for name, sys_ in zip(names, (a, b)):
        if not isinstance(sys_, dict) or not sys_:
            raise ValueError(f"{name}: expected {{seed label: [run-fold per fold]}} with at least one seed")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(f"runs are paired by seed label: seed(s) {only_a} of {names[0]} have no {names[1]} run, "
                         f"seed(s) {only_b} of {names[1]} have no {names[0]} run")
    seeds = sorted(a)
    ref = a[seeds[0]]
    for name, sys_ in zip(names, (a, b)):
        for s in seeds:
            if len(sys_[s]) != len(ref):
                raise ValueError(f"{name} seed {s} has {len(sys_[s])} folds, {names[0]} seed {seeds[0]} has "
                                 f"{len(ref)}")
            for f, (x, y) in enumerate(zip(sys_[s], ref)):
                if x.n_images != y.n_images or not np.array_equal(x.contrib[:, 6], y.contrib[:, 6]):
                    raise ValueError(f"{name} seed {s} fold {f} was scored on other images than {names[0]} seed "
                                     f"{seeds[0]}; all runs must be scored on the same folds")
    return seeds


def systems_from_runs(rows, key=("variant", "seed")) -> dict:
    """``{variant: {seed: value}}`` from ``(variant, seed, value)`` triples; a duplicated (variant, seed) is an
    error naming it."""
    out: dict = {}
    for variant, seed, value in rows:
        if seed in out.setdefault(variant, {}):
            raise ValueError(f"run {variant} seed {seed} appears twice; one run per variant and seed")
        out[variant][seed] = value
    return out


@dataclass
class Comparison:
    metric: str
    diff: float
    se: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    n_seeds: int
    n_folds: int
    n_images: int
    replicates: np.ndarray
    df: int | None = None      # degrees of freedom of the interval: seeds - 1


def nested_bootstrap(a: dict, b: dict, metrics=("rsum",), n_boot: int = 2000, seed: int = 0,
                     names: tuple[str, str] = ("a", "b"), base_weights: list | None = None,
                     cache: dict | None = None) -> dict[str, Comparison]:
    """Paired comparison ``a - b`` per metric (see the module docstring).  ``base_weights`` (one [n_images] count
    vector per fold) makes the images of each fold a resample themselves (the sensitivity check's repetitions):
    the replicates then resample from it.  ``cache``: a dict shared by calls with the same ``seed``, ``n_boot``,
    folds and number of seeds (their resamples are the same), so that a run-fold's replicates are computed once."""
    seeds = _check_systems(a, b, names)
    n_folds = len(a[seeds[0]])
    rng = np.random.default_rng(seed)
    weights = []
    for f in range(n_folds):
        n = a[seeds[0]][f].n_images
        p = np.full(n, 1.0 / n) if base_weights is None else np.asarray(base_weights[f], float) / np.sum(base_weights[f])
        weights.append(rng.multinomial(n, p, size=n_boot).astype(np.float64))
    pick = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    out = {}
    base = [None if base_weights is None else np.asarray(base_weights[f], float)[None, :] for f in range(n_folds)]
    for m in metrics:
        obs = np.mean([[_m(a[s][f], m, base[f]) - _m(b[s][f], m, base[f]) for f in range(n_folds)] for s in seeds])
        def reps_of(rf, f):
            if cache is None or base_weights is not None:
                return metric(rf, m, weights[f])
            key = (id(rf), m, f, seed, n_boot, len(seeds))
            if key not in cache:
                cache[key] = (rf, metric(rf, m, weights[f]))    # rf kept: its id stays its own
            return cache[key][1]

        d = np.stack([np.mean([reps_of(a[s][f], f) - reps_of(b[s][f], f) for f in range(n_folds)], axis=0)
                      for s in seeds], axis=1)   # [n_boot, n_seeds]
        reps = np.take_along_axis(d, pick, axis=1).mean(axis=1)
        S = len(seeds)
        df = S - 1 if S > 1 else None
        se = float(reps.std(ddof=1)) * (math.sqrt(S / (S - 1)) if S > 1 else 1.0)
        out[m] = Comparison(m, float(obs), se, _interval(float(obs), se, 0.95, df), _interval(float(obs), se, 0.90, df),
                            S, n_folds, sum(x.n_images for x in a[seeds[0]]), reps, df)
    return out


def _quantile(q: float, df: int | None) -> float:
    return float(student_t.ppf(q, df)) if df else float(norm.ppf(q))


def _interval(diff: float, se: float, level: float, df: int | None) -> tuple[float, float]:
    """``diff ± t_{(1+level)/2, df} se`` (normal quantile without ``df``)."""
    h = _quantile((1 + level) / 2, df) * se
    return diff - h, diff + h


def _m(rf: RunFold, name: str, w) -> float:
    return metric(rf, name) if w is None else float(metric(rf, name, w)[0])


def verdict(ci95: tuple[float, float], ci90: tuple[float, float], margin: float, direction: int = 1) -> str:
    """``better``/``worse`` when the 95% CI excludes 0 (``direction`` -1: a lower value is better), else
    ``equivalent`` when the 90% CI lies inside ``(-margin, margin)`` (two one-sided tests at 5%), else
    ``inconclusive``."""
    if margin <= 0:
        raise ValueError(f"margin={margin}; the equivalence margin must be positive")
    lo, hi = ci95
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (direction > 0) else "worse"
    if -margin < ci90[0] and ci90[1] < margin:
        return "equivalent"
    return "inconclusive"


def mde(se: float, alpha: float = 0.05, power_: float = 0.8, df: int | None = None) -> float:
    """Minimum detectable effect of a two-sided test at ``alpha`` with ``power_`` for an estimate with ``se``
    (Student's t with ``df`` degrees of freedom, the normal without)."""
    return float((_quantile(1 - alpha / 2, df) + _quantile(power_, df)) * se)


def power(effect: float, se: float, alpha: float = 0.05, df: int | None = None) -> float:
    """Power of the two-sided test at ``alpha`` against a true difference ``effect`` (shifted t with ``df``, the
    normal without)."""
    if se <= 0:
        return 1.0 if effect else alpha
    c = _quantile(1 - alpha / 2, df)
    cdf = (lambda x: student_t.cdf(x, df)) if df else norm.cdf
    return float(cdf(effect / se - c) + cdf(-effect / se - c))


# ------------------------------------------------------------------------------------------------ variance
def variance_components(a: dict, b: dict, metric_name: str = "rsum", n_boot: int = 2000, seed: int = 0,
                        names=("a", "b")) -> dict:
    """Variance of ``metric(a) - metric(b)`` split into seed, image and seed x image parts, per fold of the given
    size, averaged over the folds:

    * ``D_s`` per seed, ``v_s`` its variance over image resamples (image + seed x image), ``V`` the image-resample
      variance of the seed mean (image + seed x image / S);
    * ``seed_x_image = (mean v_s - V) S / (S - 1)``, ``image = V - seed_x_image / S``,
      ``seed = var_s(D_s) - seed_x_image`` (each floored at 0).

    The variance of the study's difference with ``S`` seeds and ``F`` folds is then
    ``seed / S + image / F + seed_x_image / (S F)``; the nested bootstrap's estimate of it counts the last part
    twice (:func:`predicted_se`)."""
    seeds = _check_systems(a, b, names)
    if len(seeds) < 2:
        raise ValueError("variance components need at least 2 seeds")
    n_folds, S = len(a[seeds[0]]), len(seeds)
    rng = np.random.default_rng(seed)
    parts = []
    for f in range(n_folds):
        n = a[seeds[0]][f].n_images
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        d_obs = np.array([metric(a[s][f], metric_name) - metric(b[s][f], metric_name) for s in seeds])
        d = np.stack([metric(a[s][f], metric_name, w) - metric(b[s][f], metric_name, w) for s in seeds], axis=1)
        v_s = d.var(axis=0, ddof=1).mean()
        v_mean = d.mean(axis=1).var(ddof=1)
        sxi = max(0.0, (v_s - v_mean) * S / (S - 1))
        img = max(0.0, v_mean - sxi / S)
        parts.append({"seed": max(0.0, float(d_obs.var(ddof=1)) - sxi), "image": img, "seed_x_image": sxi,
                      "between_seed_var": float(d_obs.var(ddof=1))})
    out = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
    return out | {"n_seeds": S, "n_folds": n_folds, "n_images_per_fold": a[seeds[0]][0].n_images}


def predicted_se(components: dict, n_seeds: int, n_folds: int) -> float:
    """The standard error :func:`nested_bootstrap` reports for ``n_seeds`` x ``n_folds``: ``seed / S + image / F +
    2 seed_x_image / (S F)``.  The seed x image part enters twice: once in the spread of the per-seed differences
    that the seed resampling sees (each seed's difference carries ``seed_x_image / F``), and again through the image
    resampling shared by the seeds.  (The variance of the difference itself has it once; the analysis is that
    much conservative.  The second draw's plan counted it once and predicted osdpm - clip's SE at 0.46 from that
    draw's own components; its bootstrap gave 0.59, 0.52 with the doubled part.)"""
    return math.sqrt(components["seed"] / n_seeds + components["image"] / n_folds
                     + 2 * components["seed_x_image"] / (n_seeds * n_folds))


def plan(components: dict, target_mde: float, max_seeds: int, folds_options=(5, 10, 15, 20),
         safety: float = 1.0, cost=None, budget: float | None = None) -> dict:
    """The cheapest design whose predicted MDE (``safety`` x the variance) is at most ``target_mde``.

    ``cost(S, F)`` is the price of ``S`` seeds and ``F`` folds (default: fewest seeds, then fewest folds) and
    ``budget`` the most it may cost; when no affordable design reaches the target, the affordable one with the
    smallest MDE, flagged ``reaches_target: False``."""
    cost = cost or (lambda S, F: (S, F))
    options = [(S, F) for S in range(2, max_seeds + 1) for F in folds_options
               if budget is None or cost(S, F) <= budget]
    if not options:
        raise ValueError(f"no design with 2-{max_seeds} seeds and {folds_options} folds fits the budget {budget}")
    mdes = {o: mde(math.sqrt(safety) * predicted_se(components, *o), df=o[0] - 1) for o in options}
    reaching = [o for o in options if mdes[o] <= target_mde]
    best = min(reaching, key=lambda o: (cost(*o), o)) if reaching else min(options, key=lambda o: (mdes[o], cost(*o)))
    return {"n_seeds": best[0], "n_folds": best[1], "predicted_mde": mdes[best], "reaches_target": bool(reaching),
            "cost": cost(*best)}
