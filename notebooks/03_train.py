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
# # 03 · Training one configuration
#
# Fine-tunes a pretrained CLIP model (profile `default`: the book's `synthpre` checkpoint of `osdpm-tiny-vit`,
# made by `make pretrain`) in one variant (`clip`, `clip+dapn`, `osdpm`) with open_clip's contrastive loss,
# AdamW, warm-up and cosine decay. The epoch is selected on **validation Rsum** (epoch 0 is the pretrained
# start); the test split is evaluated once, with the selected weights. The run folder
# holds the resolved config, `metrics.csv` (per epoch), `best.pt` and `test_metrics.json`.

# %% tags=["parameters"]
profile: str = "default"
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ and figures/ go here; "": results/<chain>
runs_dir: str = ""      # one folder per trained run; "": runs/<chain>
variant: str = "clip"
seed: int = 0
model: str = ""        # any open_clip model name, e.g. "ViT-B-32"; empty: the profile's (osdpm-tiny-vit)
pretrained: str = ""   # open_clip tag (openai, ...), "synthpre" or a checkpoint path; empty: the profile's
val_fraction: float = 0.0   # data without a val split: share of train carved out as val (0: the profile's)
retrain_full: bool = False  # also retrain on train+val at the selected epoch (the run's full/ folder)

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
runs_dir = paths.resolve(runs_dir, "runs")
pretrained = paths.checkpoint(pretrained)

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns

from osdpm_lib import figures, profiles
from osdpm_lib.train import train

cfg = profiles.train_config(profile, variant, seed, model=model or None, pretrained=pretrained or None,
                            val_fraction=val_fraction or None, retrain_full=retrain_full or None)
run_dir = Path(runs_dir) / profiles.run_name(variant, seed)
result = train(cfg, data_dir, run_dir)
print(f"selected epoch {result['best_epoch']} of {cfg.epochs} (validation Rsum {result['best_val_rsum']:.2f})")
if "retrain_full" in result:      # the final retrain on train+val (run folder's full/), beside the selected run
    full = result["retrain_full"]["test"]["rsum"]
    print(f"retrained on train+val for {result['best_epoch']} epochs: test Rsum {full:.2f} "
          f"(selected run, trained on train only: {result['test']['rsum']:.2f})")

# %% [markdown]
# ## Learning curve (validation only)

# %%
hist = pd.read_csv(run_dir / "metrics.csv")
ax = sns.lineplot(data=hist, x="epoch", y="val_rsum", marker="o")
ax.axvline(result["best_epoch"], ls="--", c="gray")
ax.set_ylabel("validation Rsum")
figures.save(ax.figure, out_dir, f"03_learning_curve_{profiles.run_name(variant, seed)}");

# %% [markdown]
# Per epoch: losses, validation scores and, for the variants with DAPN, `dapn_ratio`: the mean
# ‖DAPN delta‖ / ‖CLIP pooled‖ on validation images (0 at the start; near 0 throughout means DAPN barely changes
# the embedding; notebook 05 shows it for every seed).

# %%
shown = ["epoch", "loss_total", "val_rsum", "val_mr"] + (["dapn_ratio"] if hist["dapn_ratio"].notna().any() else [])
hist[shown].round(4)   # timings (train_s, pairs_per_s) stay in metrics.csv
