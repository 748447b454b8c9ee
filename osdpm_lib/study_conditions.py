"""When do DAPN and OSFCM help?  The study's instrument on the generator's controlled conditions
(``make conditions``; notebook ``notebooks/study/03_conditions.py``; issue 26).

Each condition of :mod:`osdpm_lib.synth.conditions` changes one property of the embedded benchmark (small objects,
look-alike scenes, clutter, a sensor gap).  Per condition, everything else is the study's (:mod:`osdpm_lib.study`):

* **Data**: the study's training data (:data:`osdpm_lib.study.DATA`: 1,200 train and 1,000 validation images,
  its generator seed) generated under the condition.
* **Settings**: the study's choices (``results/study/tables/tuning_choices.json``: tuned on the *default*
  condition's validation split with an equal budget per variant).  Not re-tuned per condition: the budget of
  ``make conditions`` (2 h on 2 cores) holds the final runs only.  This is a deviation from the study's protocol,
  said beside every table.
* **Training**: the study's configuration (early stopping on validation Rsum, patience 3, never before epoch 9,
  at most 12; purpose ``"study"``; no test split).
* **Untouched test folds per condition**: generated under the condition from seeds nothing else uses
  (:func:`fold_seed`), registered by content hash in ``osdpm_lib/study_folds.json`` under ``<condition>/foldNN``
  (so no tuning, design or book run may read them), scored once by the final runs.
* **Analysis**: :func:`osdpm_lib.study.comparison_table` (paired nested bootstrap by seed label, ties in
  expectation, MDE, power, the four verdicts) with the pre-registered margin ±3.7% of clip's Rsum in that
  condition (:data:`osdpm_lib.study.MARGIN_REL`, fixed before any run).
* The ``default`` condition is the study itself: its latest draw's runs and verdicts
  (``results/study/tables``), not trained again.

Seeds and folds: :data:`SIZES` (``full``: 4 seeds x 4 folds of 1,000 images per condition, what 2 h afford; the
study needed 11 x 15 for its MDE, so every condition's MDE falls short of the 3.7% target: each table says by how
much).  Mechanism checks (:func:`osdpm_lib.conditions.mechanism_checks`) run on the condition's *validation*
images, never on a test fold.

Command line: ``python -m osdpm_lib.study_conditions [--size full|ci] [--conditions ...]`` trains and scores what
is missing (finished runs are reused); the notebook analyses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import folds, profiles, study
from .paths import ROOT, relative, resolve

CONDITIONS = ("small-objects", "ambiguous", "cluttered", "domain-gap")   # trained by make conditions
DEFAULT = "default"                                                     # the study's own draw
SEED0 = 4000              # the conditions' final seeds: 4000, 4001, ... (never the study's, tuning's or book's)
FOLD_SEED0 = 9400         # condition i's fold k: 9400 + 20 i + k (9300 is the study's data, 9101-9140 its folds)
N_MECH = 200              # validation images per condition for the mechanism checks

# full: what make conditions runs (about 2 h on 2 cores); ci: notebook 03 at CI size (nbval), every condition
# (default included: no study exists at CI size) trained for one epoch on a few images, folds not registered.
SIZES = {
    "full": {"data": dict(study.DATA), "n_test": folds.N_TEST, "n_seeds": 4, "n_folds": 4, "over": {},
             "register": True, "default_from_study": True},
    "ci": {"data": {"n_images": 160, "n_val": 60, "n_test": 0, "image_size": 64, "seed": 9300}, "n_test": 60,
           "n_seeds": 2, "n_folds": 2, "over": {"epochs": 1, "min_epochs": 1, "patience": 1, "batch_size": 32},
           "register": False, "default_from_study": False},
}


@dataclasses.dataclass
class Layout:
    """Where the conditions study keeps its data, runs and results (``tag``: ``""`` full size, ``"ci"``)."""
    root: Path = ROOT
    tag: str = ""

    def _base(self, kind: str) -> Path:
        return self.root / kind / self.tag / "conditions" if self.tag else self.root / kind / "conditions"

    def data(self, condition: str) -> Path:
        return self._base("data") / condition / "train"

    def folds(self, condition: str) -> Path:
        return self._base("data") / condition / "folds"

    def runs(self, condition: str) -> Path:
        return self._base("runs") / condition

    @property
    def results(self) -> Path:
        return self._base("results")


def fold_seed(condition: str, k: int) -> int:
    """The generator seed of ``condition``'s fold ``k``: :data:`FOLD_SEED0` + 20 i + k, i its place in
    ``CONDITIONS + (DEFAULT,)`` (the default's own seeds serve the CI size only: at full size its folds are the
    study's)."""
    order = CONDITIONS + (DEFAULT,)
    if condition not in order or not 0 <= k < 20:
        raise ValueError(f"no fold seed for condition {condition!r} fold {k}: conditions {order}, folds 0-19")
    return FOLD_SEED0 + 20 * order.index(condition) + k


def fold_name(condition: str, k: int) -> str:
    return f"{condition}/{folds.fold_name(k)}"


def condition_folds(lay: Layout, condition: str, n_folds: int, size: str = "full") -> list[tuple[Path, str]]:
    """``n_folds`` test folds of ``condition`` (generated when missing; registered and verified by hash at full
    size): ``[(folder, name)]``."""
    sz = SIZES[size]
    out = []
    for k in range(n_folds):
        seed = fold_seed(condition, k)
        d = folds.generate_fold(lay.folds(condition) / folds.fold_name(k), seed, sz["n_test"],
                                sz["data"]["image_size"], condition=condition)
        if sz["register"]:
            folds.verify(d, fold_name(condition, k), seed=seed)
        out.append((d, folds.fold_name(k)))
    return out


def final_runs(lay: Layout, choices: dict, conditions, size: str = "full", workers: int = study.WORKERS,
               n_seeds: int | None = None, n_folds: int | None = None) -> pd.DataFrame:
    """Every variant x seed of every condition in ``conditions``, trained on the condition's data with the
    study's configuration and ``choices``, each scored once on the condition's folds (finished runs reused)."""
    from .synth import generate

    sz = SIZES[size]
    S, F = n_seeds or sz["n_seeds"], n_folds or sz["n_folds"]
    jobs, meta = [], []
    for c in conditions:
        generate(lay.data(c), **sz["data"], condition=c)
        targets = condition_folds(lay, c, F, size)
        for seed in range(SEED0, SEED0 + S):
            for variant in study.VARIANTS:
                over = study.chosen_overrides(choices, variant) | sz["over"]
                run_dir = lay.runs(c) / profiles.run_name(variant, seed)
                jobs.append((study.config(variant, seed, "study", **over), lay.data(c), run_dir, targets))
                meta.append({"condition": c, "variant": variant, "seed": seed, "run_dir": relative(run_dir)})
    res = study.run_jobs(jobs, workers)
    return pd.DataFrame([m | {"best_val_rsum": r["best_val_rsum"], "best_epoch": r["best_epoch"],
                              "epochs_run": r["epochs_run"], "max_epochs": r["max_epochs"], "train_s": r["train_s"]}
                         for m, r in zip(meta, res)])


def default_from_study(study_tables) -> tuple[pd.DataFrame, list[str], float, str]:
    """The default condition: the study's latest draw (its runs table with ``condition`` added, its fold names,
    its pre-registered Rsum margin, and the data folder its runs trained on)."""
    study_tables = Path(study_tables)
    plan = json.loads((study_tables / "plan.json").read_text())
    runs = pd.read_csv(study_tables / "final_runs.csv").assign(condition=DEFAULT)
    names = plan.get("fold_names") or study.final_fold_names(plan["n_folds"])
    return runs, names, float(plan["margin_abs"]), relative(study.Layout().data)


def verdict_table(systems_by_condition: dict, margins: dict | None = None, n_boot: int = 2000,
                  pairs=study.PAIRS) -> pd.DataFrame:
    """Condition x comparison: :func:`osdpm_lib.study.comparison_table` (Rsum) per condition, with the margin
    ``margins[condition]`` when given (the study's pre-registered one for the default) else ±3.7% of that
    condition's clip Rsum; ``mde_over_target``: the MDE as a multiple of the 3.7% target (above 1: short of
    the planned power by that factor); the relative columns (``*_rel``: % of clip's Rsum) for the forest plot."""
    rows = []
    for c, systems in systems_by_condition.items():
        t = study.comparison_table(systems, study.MARGIN_REL, (margins or {}).get(c), pairs=pairs,
                                   metrics=("rsum",), n_boot=n_boot)
        ref = t["clip_value"]
        t = t.assign(condition=c, mde_over_target=t["mde"] / (study.MARGIN_REL * ref),
                     **{f"{k}_rel": 100 * t[k] / ref for k in ("diff", "ci95_low", "ci95_high", "ci90_low",
                                                                "ci90_high")},
                     margin_rel_pct=100 * t["margin"] / ref)
        rows.append(t)
    out = pd.concat(rows, ignore_index=True)
    return out[["condition"] + [k for k in out.columns if k != "condition"]]


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table in % of clip's Rsum, one row per (condition, comparison), for
    :func:`osdpm_lib.figures.forest_plot` with the common margin ±3.7%."""
    rel = table[["condition", "comparison", "verdict"] + [c for c in table.columns if c.endswith("_rel")]]
    rel = rel.rename(columns={c: c.removesuffix("_rel") for c in rel.columns if c.endswith("_rel")})
    return rel.assign(comparison=rel["condition"] + ": " + rel["comparison"])


def zero_shot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition, the pretrained CLIP before fine-tuning against fine-tuned clip, on the condition's
    *validation* split: ``zero_shot_val_rsum`` (each clip run's epoch-0 row of ``metrics.csv``: the model before
    its first step), ``finetuned_val_rsum`` (the clip runs' selected epoch; selected on that split, so slightly
    optimistic) and their ratio.  A descriptive measure of how far the condition sits from the pretraining data
    (the domain-gap condition's), not a comparison of the study."""
    rows = []
    for c, g in runs[runs["variant"] == "clip"].groupby("condition", sort=False):
        zs = [float(pd.read_csv(resolve(d) / "metrics.csv").set_index("epoch").loc[0, "val_rsum"])
              for d in g["run_dir"]]
        ft = float(g["best_val_rsum"].mean())
        rows.append({"condition": c, "n_runs": len(g), "zero_shot_val_rsum": float(np.mean(zs)),
                     "finetuned_val_rsum": ft, "zero_shot_over_finetuned": float(np.mean(zs)) / ft})
    return pd.DataFrame(rows)


def mechanism_table(checks: dict) -> pd.DataFrame:
    """One row per condition from :func:`osdpm_lib.conditions.mechanism_checks` results (``{condition: result}``):
    the pointing accuracy of osdpm's and clip+dapn's DAPN saliency (all images, and the small-object ones) beside the
    center and random references, DAPN's share of the embedding, and OSFCM's cluster purity against chance (NaN
    where a run has no such module)."""
    nan = float("nan")
    rows = []
    for c, res in checks.items():
        row = {"condition": c, "n_images": res["n_images"]}
        for variant, key, ratio in (("osdpm", "dapn", "osdpm"), ("clip+dapn", "dapn_clip_dapn", "clip_dapn")):
            recs = {r["map"]: r for r in res["pointing"].get(variant, [])}
            row[f"pointing_{key}"] = recs.get("saliency", {}).get("accuracy", nan)
            row[f"pointing_small_{key}"] = recs.get("saliency", {}).get("accuracy_small", nan)
            if "center" in recs:
                row["pointing_center"] = recs["center"]["accuracy"]
                row["pointing_random"] = recs["random (expected)"]["accuracy"]
            row[f"dapn_ratio_{ratio}"] = res["dapn_ratio"].get(variant, nan)
        purity = res["purity"].get("osdpm", {})
        row |= {"purity": purity.get("purity", nan), "purity_chance": purity.get("chance", nan)}
        rows.append(row)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, mechanisms: pd.DataFrame | None = None) -> str:
    """A plain paragraph from the verdict table (and the mechanism checks): per module, the conditions where it
    helps, hurts, is equivalent or where the design cannot tell."""
    def where(comp: str, v: str) -> list[str]:
        t = table[(table["comparison"] == comp) & (table["verdict"] == v)]
        return [f"{r.condition} ({r.diff_rel:+.1f}% [{r.ci95_low_rel:+.1f}, {r.ci95_high_rel:+.1f}])"
                for r in t.itertuples()]

    lines = []
    for comp, module in (("clip+dapn − clip", "DAPN (clip+dapn − clip)"),
                         ("osdpm − clip+dapn", "OSFCM (osdpm − clip+dapn)"),
                         ("osdpm − clip", "DAPN and OSFCM together (osdpm − clip)")):
        parts = [f"{label}: {', '.join(c)}" for label, c in (("helps", where(comp, "better")),
                                                             ("hurts", where(comp, "worse")),
                                                             ("equivalent", where(comp, "equivalent")),
                                                             ("cannot tell", where(comp, "inconclusive"))) if c]
        lines.append(f"{module}: " + "; ".join(parts) + ".")
    short = table[table["mde_over_target"] > 1]
    if len(short):
        lines.append(f"{len(short)} of {len(table)} comparisons fall short of the planned power (MDE up to "
                     f"{short['mde_over_target'].max():.1f}x the 3.7% target); their 'cannot tell' is no "
                     "evidence of no effect.")
    if mechanisms is not None and len(mechanisms):
        m = mechanisms.set_index("condition")
        bits = [f"{c}: pointing {r.pointing_dapn:.0f}% (center {r.pointing_center:.0f}%), purity {r.purity:.2f} "
                f"(chance {r.purity_chance:.2f})" for c, r in m.iterrows()]
        lines.append("Mechanism checks (validation images): " + "; ".join(bits) + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.study_conditions", description=__doc__)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    ap.add_argument("--conditions", nargs="+", default=None, help=f"default: {' '.join(CONDITIONS)}")
    ap.add_argument("--workers", type=int, default=study.WORKERS)
    args = ap.parse_args(argv)
    lay = Layout(tag="" if args.size == "full" else args.size)
    conditions = args.conditions or (list(CONDITIONS) if SIZES[args.size]["default_from_study"]
                                     else [DEFAULT, *CONDITIONS])
    t0 = time.perf_counter()
    choices = study.load_choices(study.Layout())
    runs = final_runs(lay, choices, conditions, args.size, args.workers)
    tables = lay.results / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    runs.to_csv(tables / "condition_runs.csv", index=False)
    (tables / "condition_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
