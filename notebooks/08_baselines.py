# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The paper's comparison systems, measured under one protocol
#
# Tables 1–2 of the paper compare OSDPM with systems whose numbers come from their own papers, under their own
# protocols (several original codes select the checkpoint on the test split; tie handling differs). Here the
# systems run under the book's protocol (`osdpm_lib.baselines`): the same splits, the epoch selected on
# validation Rsum only, the test split scored once, the metrics of `osdpm_lib.metrics` (ties: expected value).
# All share one image encoder (a torchvision ResNet-18; its grid cells serve as regions: `layer3`, 4×4 cells at
# 64 px, `layer4`, 7×7 at 224 px) and one text encoder (word embeddings + GRU over the training captions'
# vocabulary). The originals start their CNN from ImageNet weights; offline the ResNet starts from `synthpre`, weights
# the book pretrained on its own pretraining corpus (the one the CLIP was pretrained on: tagging the object categories
# its captions name, `osdpm_lib.baselines.pretrain`), and stays frozen (the `default` and `ci` profiles; SCAN too uses
# fixed region features). The `finetune` profile (real data sets) starts from ImageNet weights and fine-tunes it.
# AMFMN and GaLR read every stage of the ResNet, as their code does (MVSA joins `layer1`+`layer2` and
# `layer3`+`layer4`; GaLR's graph runs on `layer3`'s cells); at 64 px, where the shared backbone and its weights end at
# `layer3`, their `layer4` is their own module, trained with them (the originals fine-tune their whole ResNet).
# VSE++ trains on its own loss, the hinge on the hardest negative, from the first epoch; `VSE0` is the same model on
# the loss VSE++ improves on (the hinge summed over all negatives), a row of its own. AMFMN and GaLR train on the sum
# over all negatives, as their released configurations do (`max_violation: 0`). SCAN trains its first
# `warmup_epochs` on the sum over all negatives, then on its hardest-negative loss (the profile's choice, made on
# validation: `docs/BASELINE_STUDY.md`). Data without a val split (`val_fraction`) get one carved from train
# per seed, as in notebooks 03–05; `retrain_full` adds each run retrained on train+val at its selected epoch.
# On a GPU machine the runs use CUDA with bf16 autocast (`BaselineConfig.device`, `precision`). The rows join
# Tables 1 and 2 as "(measured here)", each with what it had to replace.

# %% tags=["parameters"]
dataset: str = "embedded"
profile: str = "default"
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ go here; "": results/<chain>
runs_dir: str = ""      # one folder per trained run; "": runs/<chain>
systems: str = ""      # comma-separated names of osdpm_lib.baselines.SYSTEMS; empty: the profile's
seeds: str = ""        # comma-separated run seeds; empty: the profile's (a later call with more seeds reuses these)
weights: str = ""      # torchvision weights of the ResNet (e.g. "IMAGENET1K_V1"); empty: the profile's
val_fraction: float = 0.0   # data without a val split: share of train carved out as val (seeded per run seed)
retrain_full: bool = False  # also retrain each run on train+val at its selected epoch (columns retrain_*)
tables_dir: str = ""    # where notebook 06 wrote Tables 1-2 (e.g. results/embedded for a run into another out_dir);
                        # "": out_dir.  The tables with the measured rows are written to out_dir

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
runs_dir = paths.resolve(runs_dir, "runs")
tables_dir = paths.resolve(tables_dir) or out_dir

# %%
from pathlib import Path

import pandas as pd

from osdpm_lib import tables
from osdpm_lib.baselines import OPEN, SYSTEMS, common
from osdpm_lib.baselines.profiles import baseline_config, baseline_profile
from osdpm_lib.baselines.run import list_parameter, run_baselines, versus_clip

measured_on = tables.dataset_label(dataset)
chosen = list_parameter("systems", systems) or baseline_profile(profile)["systems"]
runs = run_baselines(data_dir, runs_dir, profile, systems=chosen, seeds=list_parameter("seeds", seeds, int),
                     weights=weights or None, val_fraction=val_fraction, retrain_full=retrain_full)
tables.write(runs, out_dir, "baseline_runs")
runs[["method", "seed", "best_epoch", "val_rsum", "rsum", "mr"] + (["retrain_rsum"] if retrain_full else [])].round(2)

# %% [markdown]
# ## The measured rows (mean over seeds) and the systems still open
# Findings, not rankings: each row's Rsum is compared with the fine-tuned CLIP of notebook 05 (the ablation's `clip`
# row, `runs/<chain>/clip_s<seed>`) by a paired bootstrap over the test images (`stats.paired_bootstrap`, nested over
# the seeds both have, paired by seed label): `vs_clip_rsum` is the mean difference (system − CLIP), `vs_clip_ci_*`
# its 95% interval. A gap is a finding only where the interval excludes 0 (`vs_clip` says "finding"); otherwise this
# test set does not show a difference. Without CLIP runs (08 alone) the column says so.

# %%
means = tables.baseline_means(runs)
cfg = baseline_config(profile, chosen[0], weights=weights or None)
means = means.merge(versus_clip(runs, runs_dir, profile, ties=cfg.ties), on="method", how="left")
rest = [s for s in SYSTEMS if s not in set(means["method"])]
in_profile = set(baseline_profile(profile)["systems"])
baselines = pd.concat([means.assign(status="measured here"),
                       pd.DataFrame({"method": rest + list(OPEN),
                                     "status": ["implemented, in this profile, left out of this run (`systems`)"
                                                if s in in_profile else "implemented, not run by this profile"
                                                for s in rest]
                                     + ["reported only (open)"] * len(OPEN)})], ignore_index=True)
tables.write(baselines, out_dir, "baselines")
baselines.drop(columns=["replaced"]).round(2)

# %%
if retrain_full:      # each run retrained on train+val for its selected epochs (the run folder's full/)
    print(runs.groupby("method", sort=False)[["rsum", "retrain_rsum", "mr", "retrain_mr"]].mean().round(2).to_string())

# %% [markdown]
# ## Tables 1 and 2 with the measured rows
# Notebook 06 wrote the tables (in `tables_dir`: this chain's results, or the book's for a larger baseline profile
# run into its own folder); the measured baseline rows are added (again, if present) with what differs from each
# original in `differs_from_original`, and the tables written to `out_dir`.

# %%
for name in ("table1_rsicd", "table2_rsitmd"):
    path = Path(tables_dir) / "tables" / f"{name}.csv"
    if path.exists():
        tables.write(tables.add_baselines(pd.read_csv(path), means, measured_on), out_dir, name, latex=True)
print("Replaced in every system:", common(cfg.weights, cfg.finetune_backbone, cfg.arch))
pd.DataFrame({"method": list(SYSTEMS), "also replaced": [s.replaced for s in SYSTEMS.values()]})

# %% [markdown]
# ## Caveat
# The measured rows are not the original systems: region detectors and skip-thought vectors are replaced where the
# originals used them (table above; the AMFMN paper's RS rows of VSE++ and SCAN already used a ResNet-18 in place of
# the detector, its Sec. V-C), and on the embedded benchmark the image encoder is a frozen ResNet-18 pretrained on the
# book's own corpus, not on ImageNet. They show where these architectures land under the book's protocol and data
# (one seed each in the `default` profile), not what the published models score on RSICD or RSITMD.
