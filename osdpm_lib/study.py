"""The study behind Table 3's verdict (``make study``): equal tuning on validation, a pilot that measures the variance
of the comparisons, seeds and folds chosen for power, final runs scored once on untouched test folds.

Stages (each reuses finished runs; ``python -m osdpm_lib.study --stage all`` runs them in order):

1. ``tune``: every variant of :data:`VARIANTS` gets the same budget on the benchmark's *validation* split
   (``data/study/train``: :data:`DATA`): the learning-rate grid :data:`LR_GRID` with :data:`TUNE_SEEDS`, then
   for the variants with modules the module learning-rate grid :data:`MODULE_LR_GRID` at the chosen lr.  A choice on
   the edge of its grid extends the grid one step (x3) that way, up to :data:`MAX_EXTENSIONS` times.  The rule: the
   highest mean validation Rsum over the seeds; the smaller learning rate on a tie.  Every run trains up to
   :data:`MAX_EPOCHS` epochs with early stopping (:data:`PATIENCE`) and scores no test split.
2. ``pilot``: the chosen settings with :data:`PILOT_SEEDS`, scored on the pilot fold (``folds.PILOT_SEED``, a fold
   of the study's size that is not a study fold): the variance components of each comparison
   (:func:`osdpm_lib.power.variance_components`) and the plan (:func:`osdpm_lib.power.plan`): the number of seeds
   and folds for a minimum detectable effect of at most :data:`MARGIN_REL` of clip's Rsum.
3. ``final``: every variant with the planned seeds (from :data:`FINAL_SEED0` on), purpose ``"study"``, then each
   selected model scored once on every planned fold (``<run>/folds/foldNN.npz``).

The plan is notebook ``notebooks/study/01_plan.py`` (its parameters cell fixes the equivalence margin before any
final run exists); the analysis (paired comparisons, verdicts, MDE and power, the sensitivity check) is
``notebooks/study/02_verdict.py``.  Draws: the first (2026-12-04, ``results/study/draw1``) spent folds 00-09 and
seeds 1000-1006 (now pilot runs); the second scores fold10 on with seeds 2000 on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from . import folds, profiles
from .paths import ROOT, relative, resolve

VARIANTS = ("clip", "clip+dapn", "osdpm")
WITH_MODULES = ("clip+dapn", "osdpm")
PAIRS = (("osdpm", "clip"), ("clip+dapn", "clip"), ("osdpm", "clip+dapn"))
LR_GRID = (3e-4, 1e-3, 3e-3)
MODULE_LR_GRID = (3e-4, 1e-3, 3e-3)
MODULE_LR_DURING_LR_SEARCH = 1e-3
MAX_EXTENSIONS = 2
TUNE_SEEDS = (200, 201, 202)                  # never the book's (0-4) nor the earlier tuning's (100-102)
DRAW1_SEEDS = tuple(range(1000, 1007))        # the first draw's final seeds (2026-12-04), now pilot runs
DRAW2_SEEDS = tuple(range(2000, 2010))        # the second draw's final seeds (2026-12-05), now pilot runs
PILOT_SEEDS = TUNE_SEEDS + DRAW1_SEEDS + DRAW2_SEEDS   # the pilot: the chosen settings' tuning runs and 17 more seeds
FINAL_SEED0 = 3000                            # the final runs: seeds 3000, 3001, ... (the third draw)
# The second draw's folds, spent: its runs (DRAW2_SEEDS, now pilot runs) scored them, and the pilot reads them again
# for the variance components (one pilot fold misled both earlier plans: its between-seed variance of osdpm - clip
# was 3.0 where the second draw's ten folds averaged 6.7, ranging 2.5-8.9 from fold to fold).
DESIGN_FOLDS = tuple(folds.fold_name(k) for k in range(10, 20))
MAX_EPOCHS = 12
PATIENCE = 3
MIN_EPOCHS = 9         # no stop before 9 of the 12 epochs: the cosine schedule spends its low-lr quarter last, and a
                       # run stopped before it never anneals.  The first draw (min_epochs 6) stopped 3 of 7 clip runs
                       # at epochs 6-8 on validation noise (+-4 Rsum between epochs), selecting epochs 3-5: clip's SD
                       # over seeds was 3.4 Rsum against osdpm's 0.7, and the seeds needed for power ran past the
                       # budget.  (The first tuning attempt, patience alone, stopped runs at epochs 4-6.)
# The study's training data: the benchmark's generator and sizes for train (1,200 images, as the book's), with a
# validation split of 1,000 images (the book's 300 made early stopping stop on noise: +-7 Rsum between epochs) and
# no test split; its own seed.
DATA = {"n_images": 2200, "n_val": 1000, "n_test": 0, "image_size": 64, "seed": 9300}
MARGIN_REL = 0.037     # the paper's RSICD gain relative to its CLIP row; the equivalence margin and the MDE target
SECOND_EFFECT_REL = 0.025   # the paper's RSITMD gain relative to its CLIP row
PROFILE = "default"
WORKERS = 2            # training processes side by side, one CPU thread each (about 1.25x one 2-thread process)


@dataclasses.dataclass
class Layout:
    """Where the study keeps its data, runs and results."""
    root: Path = ROOT

    @property
    def data(self) -> Path:            # the study's train and val (DATA); it has no test split
        return self.root / "data" / "study" / "train"

    @property
    def pilot(self) -> Path:
        return self.root / "data" / "study" / "pilot"

    @property
    def folds(self) -> Path:
        return self.root / "data" / "study" / "folds"

    @property
    def runs(self) -> Path:
        return self.root / "runs" / "study"

    @property
    def results(self) -> Path:
        return self.root / "results" / "study"


def config(variant: str, seed: int, purpose: str, **over):
    """The study's ``TrainConfig``: the book's default profile, early stopping, no test split, one thread."""
    return profiles.train_config(PROFILE, variant, seed, **({"epochs": MAX_EPOCHS, "patience": PATIENCE,
                                                              "min_epochs": MIN_EPOCHS} | over),
                                 score_test=False, purpose=purpose, progress=False, threads=1,
                                 stage_embeddings=False)


def setting_name(variant: str, lr: float, module_lr: float | None) -> str:
    name = f"{variant.replace('+', '_')}_lr{lr:g}"
    return name + (f"_mlr{module_lr:g}" if module_lr is not None and variant in WITH_MODULES else "")


def carry_over(cfg, run_dir, source=None) -> str:
    """Bring a finished run made under an earlier stopping rule or purpose into ``run_dir`` for ``cfg``, when it is
    provably the run ``cfg`` would make; returns ``"none"`` (nothing stored), ``"same"`` (already ``cfg``'s run),
    ``"carried"`` or ``"retrain"`` (a stored run that ``cfg`` would not reproduce: ``cfg``'s training must replace
    it).

    Only ``min_epochs`` and ``purpose`` may differ (``source``: another folder, moved into ``run_dir`` when it
    exists; otherwise ``run_dir`` itself is checked).  ``purpose`` changes who may read test folds, not training.  A larger ``min_epochs`` (same
    ``patience``) changes nothing for a run that trained at least ``cfg.min_epochs`` epochs or ran to its maximum:
    every stop check it passed is also passed under the stricter rule, and the check that stopped it also stops the
    new one.  The run's ``config.json`` and ``selection.json`` then get ``cfg``'s key, and ``config.json`` records
    what it was (``carried_over``)."""
    run_dir = Path(run_dir)
    source = Path(source) if source is not None and Path(source).exists() else run_dir
    cfg_file, sel_file = source / "config.json", source / "selection.json"
    if not cfg_file.is_file():
        return "none"
    stored = json.loads(cfg_file.read_text())
    if stored.get("config_key") == cfg.key():
        if source != run_dir:
            raise FileExistsError(f"{source}: already {cfg.variant} seed {cfg.seed}'s run; {run_dir} was asked for")
        return "same"
    if not sel_file.is_file():
        return "retrain"        # unfinished: the new rule trains it again
    sel = json.loads(sel_file.read_text())
    old_min, old_purpose = stored.get("min_epochs", 0), stored.get("purpose", "book")
    same_but_rule = dataclasses.replace(cfg, min_epochs=old_min, purpose=old_purpose).key() == stored["config_key"]
    reproduced = (old_min <= cfg.min_epochs and
                  (sel["epochs_run"] >= cfg.min_epochs or sel["epochs_run"] >= sel["max_epochs"]))
    if not (same_but_rule and reproduced):
        return "retrain"
    if source != run_dir:
        if run_dir.exists():
            raise FileExistsError(f"{run_dir}: exists; {source} cannot be carried into it")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        source.rename(run_dir)
    key = cfg.key()
    stored |= {"min_epochs": cfg.min_epochs, "purpose": cfg.purpose, "config_key": key,
               "carried_over": {"config_key": stored["config_key"], "min_epochs": old_min, "purpose": old_purpose,
                                "from": relative(source), "epochs_run": sel["epochs_run"]}}
    (run_dir / "config.json").write_text(json.dumps(stored, indent=2))
    (run_dir / "selection.json").write_text(json.dumps(sel | {"config_key": key}, indent=2))
    return "carried"


def _train_job(job) -> dict:
    from .train import train

    cfg, data_dir, run_dir, *rest = job
    targets, source = (rest + [None, None])[:2]
    state = carry_over(cfg, run_dir, source)
    result = train(cfg, data_dir, run_dir, overwrite=state == "retrain")
    if targets:
        score_all(run_dir, targets)
    return result | {"carried_over": state == "carried"}


def run_jobs(jobs: list, workers: int = WORKERS) -> list[dict]:
    """Train ``(cfg, data_dir, run_dir[, [(fold_dir, name), ...][, source]])`` jobs, ``workers`` at a time (finished
    runs are reused, or carried over: :func:`carry_over`; a stored run it cannot carry is moved aside and trained
    again), each then scored on the folds listed (:func:`score`)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_train_job(j) for j in jobs]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        return list(ex.map(_train_job, jobs))


# ------------------------------------------------------------------------------------------------ 1. tuning
def _grid_rows(variant: str, settings: list[tuple[float, float | None]], lay: Layout, workers: int) -> pd.DataFrame:
    jobs, meta = [], []
    for lr, mlr in settings:
        over = {"lr": lr} | ({"module_lr": mlr} if mlr is not None else {})
        for seed in TUNE_SEEDS:
            jobs.append((config(variant, seed, "tuning", **over), lay.data,
                         lay.runs / "tuning" / f"{setting_name(variant, lr, mlr)}_s{seed}"))
            meta.append({"variant": variant, "lr": lr, "module_lr": mlr, "seed": seed})
    res = run_jobs(jobs, workers)
    return pd.DataFrame([m | {"best_val_rsum": r["best_val_rsum"], "best_epoch": r["best_epoch"],
                              "epochs_run": r["epochs_run"], "train_s": r["train_s"],
                              "carried_over": r["carried_over"]} for m, r in zip(meta, res)])


def choose_on_grid(rows: pd.DataFrame, axis: str) -> tuple[float, str]:
    """The value of ``axis`` with the highest mean validation Rsum over seeds (the smaller value on a tie) and
    where it sits on the grid tried: ``"low"``, ``"high"`` or ``"inside"``.  Only ``best_val_rsum`` is read."""
    if "test_rsum" in rows:     # defensive: a tuning table never carries test numbers into a choice
        rows = rows.drop(columns=["test_rsum"])
    means = rows.groupby(axis)["best_val_rsum"].mean()
    best = max(means.index, key=lambda v: (round(means[v], 9), -v))
    grid = sorted(means.index)
    edge = "low" if best == grid[0] and len(grid) > 1 else "high" if best == grid[-1] and len(grid) > 1 else "inside"
    return float(best), edge


def tune_axis(variant: str, axis: str, grid, fixed: dict, lay: Layout, workers: int) -> tuple[float, pd.DataFrame]:
    """Search ``axis`` (``lr`` or ``module_lr``) over ``grid`` with the other one ``fixed``; extend on an edge."""
    grid, frames = sorted(grid), []
    for ext in range(MAX_EXTENSIONS + 1):
        tried = set() if not frames else set(pd.concat(frames)[axis])
        todo = [v for v in grid if v not in tried]
        settings = [(v, fixed.get("module_lr")) if axis == "lr" else (fixed["lr"], v) for v in todo]
        frames.append(_grid_rows(variant, settings, lay, workers).assign(extension=ext))
        rows = pd.concat(frames)
        best, edge = choose_on_grid(rows, axis)
        if edge == "inside" or ext == MAX_EXTENSIONS:
            return best, rows
        grid = [best / 3] if edge == "low" else [best * 3]
    raise AssertionError("unreachable")


def tune(lay: Layout, workers: int = WORKERS) -> dict:
    """Stage 1: the choices per variant and the table of every tuning run (all on validation)."""
    choices, frames = {}, []
    for variant in VARIANTS:
        mlr0 = MODULE_LR_DURING_LR_SEARCH if variant in WITH_MODULES else None
        lr, rows = tune_axis(variant, "lr", LR_GRID, {"module_lr": mlr0}, lay, workers)
        frames.append(rows.assign(stage="lr"))
        choices[variant] = {"lr": lr}
        if variant in WITH_MODULES:
            mlr, rows2 = tune_axis(variant, "module_lr", MODULE_LR_GRID, {"lr": lr}, lay, workers)
            frames.append(rows2.assign(stage="module_lr"))
            choices[variant]["module_lr"] = mlr
    table = pd.concat(frames, ignore_index=True)
    return {"choices": choices, "runs": table}


def choices_path(lay: Layout) -> Path:
    return lay.results / "tables" / "tuning_choices.json"


def load_choices(lay: Layout) -> dict:
    p = choices_path(lay)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: run the tuning first (python -m osdpm_lib.study --stage tune)")
    return json.loads(p.read_text())


def chosen_overrides(choices: dict, variant: str) -> dict:
    c = choices[variant]
    return {"lr": c["lr"]} | ({"module_lr": c["module_lr"]} if variant in WITH_MODULES else {})


# ------------------------------------------------------------------------------------------------ scoring
def run_purpose(run_dir) -> str:
    return json.loads((Path(run_dir) / "config.json").read_text()).get("purpose", "book")


def score(run_dir, data_dir, out_name: str, split: str = "test"):
    """Encode ``split`` of ``data_dir`` with the run's selected model, once (``<run_dir>/folds/<out_name>.npz``,
    reused afterwards).  A study fold is refused to any run whose purpose is not ``"study"``
    (:class:`osdpm_lib.folds.StudyFoldError`)."""
    return score_all(run_dir, [(data_dir, out_name)], split)[0]


def score_all(run_dir, targets, split: str = "test") -> list:
    """:func:`score` for several ``(data_dir, out_name)`` targets with one load of the model; identical captions
    (frequent: templated sentences repeat) are encoded once."""
    import torch

    from .cache import Normalizer, SplitTensors
    from .data import load as load_annotations
    from .evaluate import Encoded, encode_images, encode_texts
    from .train import load_trained

    run_dir = Path(run_dir)
    purpose = run_purpose(run_dir)
    for data_dir, _ in targets:
        folds.refuse_study_fold(data_dir, purpose)
    out, loaded = [], None
    for data_dir, name in targets:
        path = run_dir / "folds" / f"{name}.npz"
        if path.is_file():
            out.append(Encoded.load(path))
            continue
        loaded = loaded or load_trained(run_dir)
        model, tokenizer, pre, cfg = loaded
        tensors = SplitTensors.build(load_annotations(data_dir).split(split), Path(data_dir) / "images",
                                     pre["image_size"], tokenizer, Path(data_dir) / ".cache")
        cpu = torch.device("cpu")
        images = encode_images(model, tensors.images, Normalizer(pre["mean"], pre["std"]), cfg.eval_batch_size, cpu)
        unique, inverse = torch.unique(tensors.tokens, dim=0, return_inverse=True)
        texts = encode_texts(model, unique, 4 * cfg.eval_batch_size, cpu)[inverse.numpy()]
        enc = Encoded(images, texts, tensors.caption_image.numpy())
        path.parent.mkdir(exist_ok=True)
        enc.save(path)
        out.append(enc)
    return out


# ------------------------------------------------------------------------------------------------ 2. pilot
def pilot_runs(lay: Layout, choices: dict, workers: int = WORKERS) -> pd.DataFrame:
    """The chosen settings with :data:`PILOT_SEEDS`: the tuning runs of the chosen settings, and the earlier draws'
    final runs (:data:`DRAW1_SEEDS`, :data:`DRAW2_SEEDS`, carried over from ``runs/study/final`` when they are
    there: :func:`carry_over`) or new ones; every run scored on the pilot fold, and the second draw's seeds also
    on its spent folds (:data:`DESIGN_FOLDS`: scorings stored by its final runs are reused)."""
    jobs, meta = [], []
    for variant in VARIANTS:
        over = chosen_overrides(choices, variant)
        name = setting_name(variant, over["lr"], over.get("module_lr"))
        for seed in PILOT_SEEDS:
            purpose = "tuning" if seed in TUNE_SEEDS else "design"
            folder = "tuning" if seed in TUNE_SEEDS else "pilot"
            earlier = seed in DRAW1_SEEDS or seed in DRAW2_SEEDS
            source = lay.runs / "final" / profiles.run_name(variant, seed) if earlier else None
            targets = [(lay.pilot, "pilot")] + ([(lay.folds / n, n) for n in DESIGN_FOLDS]
                                                if seed in DRAW2_SEEDS else [])
            jobs.append((config(variant, seed, purpose, **over), lay.data, lay.runs / folder / f"{name}_s{seed}",
                         targets, source))
            meta.append({"variant": variant, "seed": seed, "run_dir": relative(jobs[-1][2])})
    folds.generate_fold(lay.pilot, folds.PILOT_SEED)
    first = int(DESIGN_FOLDS[0].removeprefix("fold"))
    folds.generate_folds(lay.folds, len(DESIGN_FOLDS), first=first)
    res = run_jobs(jobs, workers)
    return pd.DataFrame([m | {"best_val_rsum": r["best_val_rsum"], "best_epoch": r["best_epoch"],
                              "epochs_run": r["epochs_run"], "carried_over": r["carried_over"]}
                         for m, r in zip(meta, res)])


# ------------------------------------------------------------------------------------------------ 3. final
def final_fold_names(n_folds: int) -> list[str]:
    """The folds the final runs score: ``n_folds`` fresh ones (:func:`osdpm_lib.folds.fresh_fold_names`; earlier
    draws spent the others)."""
    return folds.fresh_fold_names(n_folds)


def final_runs(lay: Layout, choices: dict, n_seeds: int, n_folds: int, workers: int = WORKERS) -> pd.DataFrame:
    """The study's runs: every variant x ``n_seeds`` seeds, then each scored once on ``n_folds`` folds (the fresh
    ones: ``folds.FIRST_FRESH`` on)."""
    fold_dirs = folds.generate_folds(lay.folds, n_folds, first=folds.FIRST_FRESH)
    jobs, meta = [], []
    for seed in range(FINAL_SEED0, FINAL_SEED0 + n_seeds):
        for variant in VARIANTS:
            over = chosen_overrides(choices, variant)
            run_dir = lay.runs / "final" / profiles.run_name(variant, seed)
            jobs.append((config(variant, seed, "study", **over), lay.data, run_dir, [(d, d.name) for d in fold_dirs]))
            meta.append({"variant": variant, "seed": seed, "run_dir": relative(run_dir)})
    res = run_jobs(jobs, workers)
    return pd.DataFrame([m | {"best_val_rsum": r["best_val_rsum"], "best_epoch": r["best_epoch"],
                              "epochs_run": r["epochs_run"], "max_epochs": r["max_epochs"], "train_s": r["train_s"]}
                         for m, r in zip(meta, res)])


# ------------------------------------------------------------------------------------------------ analysis
MAX_SEEDS = 30         # the most seeds the plan considers (the budget decides what it affords)
SAFETY = 1.5           # the plan inflates the design's variance estimate by this factor: with the analysis's own SE
                       # model (power.predicted_se) the second draw's components x 1.25 predicted its bootstrap SE
                       # (0.584 against 0.588), but a new draw's seeds bring their own seed variance, estimated from
                       # 10 seeds (its 80% upper bound is 1.7x the estimate): 1.5 leaves headroom for it
FOLD_OPTIONS = (5, 10, 15, 20)  # the fresh folds: up to 20 of the 40 seeded ones (the first two draws spent 20)


def load_systems(runs: pd.DataFrame, fold_names, ties: str = "expected") -> dict:
    """``{variant: {seed: [power.RunFold per fold]}}`` from a runs table (``variant``, ``seed``, ``run_dir``) and
    the stored fold encodings ``<run_dir>/folds/<name>.npz``; a duplicated (variant, seed) is an error."""
    from .evaluate import Encoded
    from .power import scored, systems_from_runs

    rows = []
    for r in runs.itertuples():
        rfs = []
        for name in fold_names:
            enc = Encoded.load(resolve(r.run_dir) / "folds" / f"{name}.npz")
            rfs.append(scored(enc.sims(), enc.caption_image, ties))
        rows.append((r.variant, int(r.seed), rfs))
    return systems_from_runs(rows)


def mean_metric(system: dict, name: str = "rsum") -> float:
    """A system's metric averaged over its seeds and folds."""
    from .power import metric

    return float(np.mean([[metric(rf, name) for rf in rfs] for rfs in system.values()]))


STUDY_BUDGET_S = 17100    # the whole study from scratch: 4.75 hours on 2 cores (2 could not reach the power: the
                          # first draw; the third draw's pilot, 20 seeds and 300 design scorings, is priced at 1.75 h)
ANALYSIS_S = 900          # the two notebooks (scoring tables, bootstrap, sensitivity check)
FOLD_GEN_S = 30           # generating one fold of 1,000 images beside two training workers (measured: 29 s)


WALL_PER_TRAIN = 1.34    # wall seconds per second of a run's own training time, workers side by side: the first
                         # draw's tuning took 3,973 s for 42 runs whose training took 5,913 s over 2 workers
SCORE_S = 5.0            # one run scored on one fold of 1,000 images (the first draw's final: 2,066 s wall for 21
                         # runs, 1,041 s of it training over 2 workers, and 210 scorings)


def costs(tables_dir, budget_s: float = STUDY_BUDGET_S) -> dict:
    """What the study costs from scratch (seconds of the 2-core machine, workers side by side), from the tuning
    runs' own training times (carried-over runs included, so a resumed study prices as a fresh one): a training
    run, a fold scoring, the tuning and the pilot, and what the study budget leaves for the final runs."""
    tables_dir = Path(tables_dir)
    tuning = pd.read_csv(tables_dir / "tuning_runs.csv")
    tuning = tuning.assign(module_lr=tuning["module_lr"].fillna(-1)).drop_duplicates(
        ["variant", "lr", "module_lr", "seed"])
    run_s = float(tuning["train_s"].mean()) / WORKERS * WALL_PER_TRAIN
    pilot = pd.read_csv(tables_dir / "pilot_runs.csv")
    new_pilot = int((~pilot["seed"].isin(TUNE_SEEDS)).sum())
    design_scorings = int(pilot["seed"].isin(DRAW2_SEEDS).sum()) * len(DESIGN_FOLDS)
    tune_s = len(tuning) * run_s
    pilot_s = (new_pilot * run_s + (len(pilot) + design_scorings) * SCORE_S
               + (1 + len(DESIGN_FOLDS)) * FOLD_GEN_S)
    return {"run_s": run_s, "score_s": SCORE_S, "tuning_s": tune_s, "pilot_s": pilot_s, "n_tuning_runs": len(tuning),
            "n_pilot_runs_trained": new_pilot, "study_budget_s": budget_s,
            "final_budget_s": budget_s - tune_s - pilot_s - ANALYSIS_S}


def make_plan(pilot: dict, margin_rel: float = MARGIN_REL, max_seeds: int = MAX_SEEDS, safety: float = SAFETY,
              pairs=PAIRS, primary=("osdpm", "clip"), cost: dict | None = None, design: dict | None = None) -> dict:
    """The design from the pilot's systems (one pilot fold): each pair's variance components, and the cheapest
    seeds x folds (``cost``: :func:`costs`, within its budget) that bring the ``primary`` comparison's MDE to
    ``margin_rel`` x clip's pilot Rsum (``planned_on``: its components); the other comparisons' predicted MDE is
    reported beside it.  (The first two draws planned on the componentwise maximum over the pairs, because 3 and
    then 10 pilot seeds could not pin each pair's components down; the second draw's worst pair asked for more than
    its budget allowed, and its plan settled for the smallest affordable MDE.  From 20 pilot seeds each pair's own
    components are estimated, and the question the study must answer is the primary one.)  ``design``: the systems
    the components come from when not the pilot's (the third draw: the second draw's seeds on the pilot fold and
    its spent folds, :data:`DESIGN_FOLDS`); the margin always comes from clip on the pilot fold.  The absolute
    equivalence margin is fixed here, before any final run."""
    from .power import mde, plan, predicted_se, variance_components

    clip_rsum = mean_metric(pilot["clip"])
    target = margin_rel * clip_rsum
    source = pilot if design is None else design
    comps = {f"{a} − {b}": variance_components(source[a], source[b], names=(a, b)) for a, b in pairs}
    price = None if cost is None else (lambda S, F: S * len(VARIANTS) * (cost["run_s"] + F * cost["score_s"])
                                       + F * FOLD_GEN_S)
    planned_on = {k: comps[f"{primary[0]} − {primary[1]}"][k] for k in ("seed", "image", "seed_x_image")}
    chosen = plan(planned_on, target, max_seeds, FOLD_OPTIONS, safety, price,
                  None if cost is None else cost["final_budget_s"])
    predicted = {k: mde(np.sqrt(safety) * predicted_se(c, chosen["n_seeds"], chosen["n_folds"]),
                        df=chosen["n_seeds"] - 1)
                 for k, c in comps.items()}
    return {"margin_rel": margin_rel, "clip_rsum_pilot": clip_rsum, "margin_abs": target, "target_mde": target,
            "safety": safety, "max_seeds": max_seeds, **chosen, "primary": f"{primary[0]} − {primary[1]}",
            "planned_on": planned_on,
            "predicted_mde": predicted, "components": comps, "pilot_seeds": sorted(pilot["clip"]),
            "fold_names": final_fold_names(chosen["n_folds"]), "final_seed0": FINAL_SEED0,
            "components_from": ("pilot fold" if design is None else
                                f"{len(design['clip'])} seeds x {len(next(iter(design['clip'].values())))} folds"),
            "costs": cost}


def comparison_table(systems: dict, margin_rel: float, rsum_margin: float | None = None, pairs=PAIRS,
                     metrics=None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per comparison and metric: difference (absolute, relative to clip's value), SE, 95% and 90% CI, MDE
    (absolute, relative), power against the paper's relative effects, the equivalence margin and the verdict.
    ``rsum_margin``: Rsum's absolute margin fixed before the runs (default ``margin_rel`` x clip's Rsum here);
    the rank metrics' margins are ``margin_rel`` x clip's value."""
    from .power import METRICS, mde, nested_bootstrap, power, verdict

    metrics = list(metrics or METRICS)
    ref = {m: mean_metric(systems["clip"], m) for m in metrics}
    rows, cache = [], {}
    for a, b in pairs:
        res = nested_bootstrap(systems[a], systems[b], metrics, n_boot, seed, names=(a, b), cache=cache)
        for m, c in res.items():
            margin = rsum_margin if (m == "rsum" and rsum_margin) else margin_rel * abs(ref[m])
            m_abs = mde(c.se, df=c.df)
            rows.append({"comparison": f"{a} − {b}", "metric": m, "clip_value": ref[m], "diff": c.diff,
                         "diff_rel_pct": 100 * c.diff / ref[m], "se": c.se, "ci95_low": c.ci95[0],
                         "ci95_high": c.ci95[1], "ci90_low": c.ci90[0], "ci90_high": c.ci90[1], "mde": m_abs,
                         "mde_rel_pct": 100 * m_abs / abs(ref[m]),
                         f"power_at_{100 * MARGIN_REL:g}pct": power(MARGIN_REL * abs(ref[m]), c.se, df=c.df),
                         f"power_at_{100 * SECOND_EFFECT_REL:g}pct": power(SECOND_EFFECT_REL * abs(ref[m]), c.se,
                                                                           df=c.df),
                         "margin": margin, "verdict": verdict(c.ci95, c.ci90, margin, METRICS[m]),
                         "n_seeds": c.n_seeds, "n_folds": c.n_folds, "n_images": c.n_images})
    return pd.DataFrame(rows)


def variance_table(systems: dict, pairs=PAIRS, n_seeds: int | None = None, n_folds: int | None = None
                   ) -> pd.DataFrame:
    """The variance split of every comparison's Rsum difference (per fold of the study's size), and each part's
    share of the variance of the study's estimate with ``n_seeds`` and ``n_folds`` (``seed / S``, ``image / F``,
    ``seed_x_image / (S F)``: the variance of the difference itself).  ``se_predicted`` is what the nested bootstrap
    reports (:func:`osdpm_lib.power.predicted_se`, which counts the seed x image part twice)."""
    from .power import predicted_se, variance_components

    rows = []
    for a, b in pairs:
        c = variance_components(systems[a], systems[b], names=(a, b))
        S, F = n_seeds or c["n_seeds"], n_folds or c["n_folds"]
        parts = {"seed": c["seed"] / S, "image": c["image"] / F, "seed_x_image": c["seed_x_image"] / (S * F)}
        total = sum(parts.values())
        rows.append({"comparison": f"{a} − {b}", "var_seed": c["seed"], "var_image": c["image"],
                     "var_seed_x_image": c["seed_x_image"], "n_seeds": S, "n_folds": F,
                     "se_predicted": predicted_se(c, S, F),
                     **{f"share_{k}_pct": 100 * v / total if total else float("nan") for k, v in parts.items()}})
    return pd.DataFrame(rows)


def planted(enc, alpha: float) -> np.ndarray:
    """The similarities of ``enc`` with ``alpha`` added to every true (image, caption) pair: a system that knows a
    little more of the answer, by a calibrated amount."""
    sims = enc.sims().astype(np.float64)
    sims[enc.caption_image, np.arange(len(enc.caption_image))] += alpha
    return sims


def calibrate_plant(encs: list, gain: float, ties: str = "expected", hi: float = 0.5, iters: int = 18) -> float:
    """The ``alpha`` whose planted similarities raise the mean Rsum over ``encs`` by ``gain`` points (bisection)."""
    from .metrics import retrieval_metrics

    base = np.mean([retrieval_metrics(e.sims(), e.caption_image, ties)["rsum"] for e in encs])
    lo = 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        got = np.mean([retrieval_metrics(planted(e, mid), e.caption_image, ties)["rsum"] for e in encs]) - base
        lo, hi = (mid, hi) if got < gain else (lo, mid)
    return (lo + hi) / 2


def sensitivity_check(runs: pd.DataFrame, fold_names, margin: float, effect_rel: float = MARGIN_REL,
                      n_reps: int = 200, n_boot: int = 500, seed: int = 0, ties: str = "expected",
                      base: dict | None = None, arms: str = "independent", pair=("osdpm", "clip")) -> dict:
    """A positive and a negative control of the instrument, from measured runs: each of ``n_reps`` repetitions
    builds a study of the same size (seed slots drawn from the runs, every fold's images resampled) and gives it
    the design's own analysis (:func:`nested_bootstrap`, :func:`verdict`).  Returns the rate of ``better`` with a
    planted effect (detection) and of ``better`` or ``worse`` without one (false positives).

    ``planted``: a run's similarities with ``alpha`` added to the true pairs, ``alpha`` calibrated on the first fold
    of every seed so that the mean Rsum gain is ``effect_rel`` x clip's Rsum (the first draw calibrated on 3 seeds x
    2 folds and planted 3.2% for 3.7%).

    ``arms="independent"`` (the first two draws): the ``clip`` runs only; per seed slot arm A draws a run and arm B
    another run (a different seed).  Null: A from the clip runs; planted: A from the planted clip runs.  Its noise is
    two independent clip seeds', about 3x the seed part of osdpm - clip in the second draw: stricter than the
    study's comparison.

    ``arms="paired"``: the study's own comparison ``pair`` (a - b), seed slots drawn with replacement and each slot
    keeping a's and b's runs of one seed, so the repetitions carry the comparison's real seed correlation.  The
    truth of this resampling world is the measured difference ``d`` (the study's estimate): every repetition's CIs
    are recentred by ``-d`` (null: true difference 0), and the planted arm plants into a's runs (true difference:
    the planted gain).

    ``base``: the runs' run-folds when :func:`load_systems` has scored them already (``{variant: {seed: [per
    fold]}}`` for ``"paired"``, ``{seed: [per fold]}`` of clip for ``"independent"``)."""
    from .evaluate import Encoded
    from .power import metric, nested_bootstrap, scored, verdict

    if arms not in ("independent", "paired"):
        raise ValueError(f"arms={arms!r}: 'independent' or 'paired'")
    variants = ("clip",) if arms == "independent" else tuple(pair)
    base = ({"clip": base} if arms == "independent" else dict(base)) if base is not None else {}
    encs = {}
    for v in variants:
        rows = runs[runs["variant"] == v].sort_values("seed")
        encs[v] = {int(r.seed): [Encoded.load(resolve(r.run_dir) / "folds" / f"{n}.npz") for n in fold_names]
                   for r in rows.itertuples()}
        if v not in base:
            base[v] = {s: [scored(e.sims(), e.caption_image, ties) for e in encs[v][s]] for s in sorted(encs[v])}
        elif sorted(base[v]) != sorted(encs[v]):
            raise ValueError(f"base holds {v} seeds {sorted(base[v])}, the runs table's {v} runs are seeds "
                             f"{sorted(encs[v])}")
    labels = sorted(encs["clip"])
    if any(sorted(encs[v]) != labels for v in variants):
        raise ValueError(f"the paired sensitivity check needs the same seeds for {variants}: "
                         f"{ {v: sorted(encs[v]) for v in variants} }")
    target = variants[0]      # the arm the effect is planted into
    clip_rsum = float(np.mean([[metric(rf, "rsum") for rf in base["clip"][s]] for s in labels]))
    gain = effect_rel * clip_rsum
    alpha = calibrate_plant([encs[target][s][0] for s in labels], gain, ties)
    plant = {s: [scored(planted(e, alpha), e.caption_image, ties) for e in encs[target][s]] for s in labels}
    achieved = float(np.mean([[metric(p, "rsum") - metric(b, "rsum") for p, b in zip(plant[s], base[target][s])]
                              for s in labels]))
    shift = 0.0
    if arms == "paired":
        a_name, b_name = pair
        shift = float(np.mean([[metric(x, "rsum") - metric(y, "rsum") for x, y in zip(base[a_name][s],
                                                                                      base[b_name][s])]
                               for s in labels]))
    rng = np.random.default_rng(seed)
    S = len(labels)
    counts = {"null": {v: 0 for v in ("better", "worse", "equivalent", "inconclusive")},
              "planted": {v: 0 for v in ("better", "worse", "equivalent", "inconclusive")}}
    for rep in range(n_reps):
        if arms == "independent":
            ia = rng.integers(0, S, size=S)
            ib = (ia + 1 + rng.integers(0, S - 1, size=S)) % S
            pools_b = base["clip"]
        else:
            ia = ib = rng.integers(0, S, size=S)
            pools_b = base[pair[1]]
        bw = [rng.multinomial(rf.n_images, np.full(rf.n_images, 1.0 / rf.n_images)) for rf in base["clip"][labels[0]]]
        for arm, pool in (("null", base[target]), ("planted", plant)):
            a = {k: pool[labels[i]] for k, i in enumerate(ia)}
            b = {k: pools_b[labels[i]] for k, i in enumerate(ib)}
            c = nested_bootstrap(a, b, ("rsum",), n_boot, seed + rep, base_weights=bw)["rsum"]
            ci95, ci90 = (c.ci95[0] - shift, c.ci95[1] - shift), (c.ci90[0] - shift, c.ci90[1] - shift)
            counts[arm][verdict(ci95, ci90, margin)] += 1
    return {"arms": arms, "comparison": "clip − clip" if arms == "independent" else f"{pair[0]} − {pair[1]}",
            "recentred_by": shift, "alpha": alpha, "planted_gain": achieved,
            "planted_gain_rel_pct": 100 * achieved / clip_rsum,
            "target_gain": gain, "n_reps": n_reps, "n_boot": n_boot, "n_seeds": S, "n_folds": len(fold_names),
            "detection_rate": counts["planted"]["better"] / n_reps,
            "false_positive_rate": (counts["null"]["better"] + counts["null"]["worse"]) / n_reps,
            "null_equivalent_rate": counts["null"]["equivalent"] / n_reps, "counts": counts}


def plateau(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run of a runs table (``run_dir``): the selected epoch, the epochs run, whether the selected epoch is the
    last possible one (``at_max``), and how much the selected epoch's validation Rsum exceeds the best epoch before
    it (``gain_over_earlier``; read from the run's ``metrics.csv``).  A run that selects its last epoch by a gain
    far below the epoch-to-epoch noise (``val_step_sd``: SD of the validation Rsum's change between consecutive
    epochs over the run's last ``PATIENCE + 1`` epochs) sits on a plateau: the argmax of nearly equal models."""
    rows = []
    for r in runs.itertuples():
        m = pd.read_csv(resolve(r.run_dir) / "metrics.csv").set_index("epoch")["val_rsum"]
        m = m[m.index >= 1]
        best = int(m.idxmax())
        earlier = m[m.index < best]
        tail = m.iloc[-(PATIENCE + 1):].diff().dropna()
        rows.append({"variant": r.variant, "seed": int(r.seed), "best_epoch": best, "epochs_run": int(m.index.max()),
                     "at_max": best == MAX_EPOCHS,
                     "gain_over_earlier": float(m[best] - earlier.max()) if len(earlier) else float("nan"),
                     "val_step_sd": float(tail.std(ddof=1)) if len(tail) > 1 else float("nan")})
    return pd.DataFrame(rows)


def tuning_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant and setting of the tuning: mean and SD of the best validation Rsum over the seeds, the selected
    and the last epochs."""
    g = runs.assign(module_lr=runs["module_lr"].fillna(-1)).groupby(["variant", "stage", "lr", "module_lr"],
                                                                    sort=False)
    out = g.agg(n_seeds=("seed", "nunique"), val_rsum_mean=("best_val_rsum", "mean"),
                val_rsum_sd=("best_val_rsum", "std"),
                best_epochs=("best_epoch", lambda e: ", ".join(map(str, e))),
                epochs_run=("epochs_run", lambda e: ", ".join(map(str, e)))).reset_index()
    return out.assign(module_lr=out["module_lr"].where(out["module_lr"] >= 0))


def variant_table(systems: dict, metrics=("rsum", "mrr_i2t", "mrr_t2i", "medr_i2t", "medr_t2i")) -> pd.DataFrame:
    """Per variant: each metric's mean over seeds (of the mean over folds) and its SD over seeds; mR = Rsum / 6."""
    from .power import metric

    rows = []
    for variant, sys_ in systems.items():
        per_seed = {m: [np.mean([metric(rf, m) for rf in rfs]) for rfs in sys_.values()] for m in metrics}
        row = {"variant": variant, "n_seeds": len(sys_), "n_folds": len(next(iter(sys_.values())))}
        for m, v in per_seed.items():
            row[m], row[f"{m}_sd"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        row["mr"] = row["rsum"] / 6
        rows.append(row)
    return pd.DataFrame(rows)


def protocol_note(runs: pd.DataFrame, fold_names, n_boot: int, ties: str = "expected") -> str:
    """What is under every study table: tie rule, seeds, folds (names, seeds, hashes) and the bootstrap."""
    from .metrics import TIE_RULES

    reg = folds.registered()
    seeds = sorted(set(runs["seed"]))
    fl = "; ".join(f"{n} (seed {reg[n]['seed']}, sha256 {reg[n]['images_sha256'][:12]})" for n in fold_names)
    return (f"Tie rule: {ties} ({TIE_RULES[ties]}). Seeds: {len(seeds)} per variant ({seeds[0]}–{seeds[-1]}), paired "
            f"by seed label. Test folds: {len(fold_names)} × {folds.N_TEST} images: {fl}. Paired bootstrap: {n_boot} "
            "replicates resampling seed labels and, per fold, test images (with their captions); its SD x "
            f"sqrt(S/(S-1)) is the SE; 95% and 90% CIs: difference ± t({len(seeds) - 1} df) x SE.")


def citation(results=None) -> str:
    """What the quick book's Table 3 says about its verdict: the study's (``results/study/tables/verdict.json``),
    one line per comparison, or that the study has not been run."""
    path = Path(results or Layout().results) / "tables" / "verdict.json"
    if not path.is_file():
        return ("The verdict on Table 3 comes from the study (make study, results/study), which has not been run "
                "here; this quick chain's paired CIs are too wide to tell the paper's effect from none.")
    v = json.loads(path.read_text())
    lines = [f"The verdict on Table 3 comes from the study (make study; results/study/tables/table3_study.md): "
             f"{v['n_seeds']} seeds × {v['n_folds']} untouched test folds of 1,000 images, equivalence margin "
             f"±{v['margin_abs']:.2f} Rsum ({100 * v['margin_rel']:g}% of clip's Rsum, fixed before the runs):"]
    for c in v["comparisons"]:
        lines.append(f"  {c['comparison']}: {c['diff']:+.2f} Rsum, 95% CI [{c['ci95_low']:+.2f}, {c['ci95_high']:+.2f}], "
                     f"MDE {c['mde']:.2f} ({c['mde_rel_pct']:.1f}%): {c['verdict']}")
    lines.append("This chain's own comparisons (5 seeds, its test split) are too wide to tell the paper's effect "
                 "(+3.7% relative) from none.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.study", description=__doc__)
    ap.add_argument("--stage", choices=("tune", "pilot", "final"), required=True)
    ap.add_argument("--workers", type=int, default=WORKERS)
    ap.add_argument("--seeds", type=int, help="final: the number of seeds (default: the plan's)")
    ap.add_argument("--folds", type=int, help="final: the number of folds (default: the plan's)")
    args = ap.parse_args(argv)
    lay = Layout()
    from .synth import generate

    generate(lay.data, **DATA)
    t0 = time.perf_counter()
    tables = lay.results / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    if args.stage == "tune":
        out = tune(lay, args.workers)
        out["runs"].to_csv(tables / "tuning_runs.csv", index=False)
        choices_path(lay).write_text(json.dumps(out["choices"] | {"seconds": round(time.perf_counter() - t0)},
                                                indent=2))
        print(out["choices"])
    elif args.stage == "pilot":
        runs = pilot_runs(lay, load_choices(lay), args.workers)
        runs.to_csv(tables / "pilot_runs.csv", index=False)
        (tables / "pilot_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    else:
        plan = json.loads((tables / "plan.json").read_text()) if (tables / "plan.json").is_file() else {}
        n_seeds, n_folds = args.seeds or plan.get("n_seeds"), args.folds or plan.get("n_folds")
        if not n_seeds or not n_folds:
            raise SystemExit(f"{tables / 'plan.json'} is missing: run the pilot's analysis first, or give "
                             "--seeds and --folds")
        runs = final_runs(lay, load_choices(lay), n_seeds, n_folds, args.workers)
        runs.to_csv(tables / "final_runs.csv", index=False)
        (tables / "final_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
