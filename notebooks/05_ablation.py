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
# # 05 · Ablation (Table 3): `zero-shot`, `frozen`, `clip`, `clip+dapn`, `osdpm` over several seeds
#
# Every row starts from the same pretrained CLIP (profile `default`: the book's `synthpre` checkpoint, see
# `osdpm_lib/pretrain.py`). `zero-shot` scores it untrained on the benchmark; `frozen` trains only DAPN, OSFCM
# and CLIP's two projections; `clip`, `clip+dapn` and `osdpm` fine-tune the whole model. Each run selects its epoch
# on validation Rsum (epoch 0, the starting weights, included) and scores the test split once. Seeds are paired:
# seed `s` gives every row the same data order and initialisation of the shared parts. Runs already done by
# notebook 03 (same configuration) are reused, not retrained.

# %% tags=["parameters"]
profile: str = "default"
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ and figures/ go here; "": results/<chain>
runs_dir: str = ""      # one folder per trained run; "": runs/<chain>
model: str = ""          # empty: the profile's (osdpm-tiny-vit)
pretrained: str = ""     # empty: the profile's (synthpre)
val_fraction: float = 0.0   # data without a val split: share of train carved out as val (seeded per run seed)
retrain_full: bool = False  # also retrain each run on train+val at its selected epoch (columns retrain_*)
n_boot: int = 2000

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
runs_dir = paths.resolve(runs_dir, "runs")
pretrained = paths.checkpoint(pretrained)

# %%
import pandas as pd
import seaborn as sns

from osdpm_lib import ablation, figures, tables
from osdpm_lib.metrics import TIE_RULES

runs = ablation.run_all(profile, data_dir, runs_dir, model=model or None, pretrained=pretrained or None,
                        val_fraction=val_fraction or None, retrain_full=retrain_full or None)
tables.write(runs, out_dir, "ablation_runs")
runs[["variant", "seed", "best_epoch", "rsum", "mr"]].round(2)

# %% [markdown]
# ## Mean ± standard deviation over seeds

# %%
summary = tables.ablation_table(runs)
tables.write(summary, out_dir, "ablation_summary")
summary[["variant", "method", "n_seeds", "rsum", "mr"]]

# %% [markdown]
# ## Paired comparisons: does a module help?
# For each pair, the per-seed test Rsum differences (same seed, same test images) and a paired bootstrap over
# test images (each image resampled with its captions, the gallery fixed), nested over seeds: every replicate
# resamples the seeds and the test images and takes the mean difference. A difference is a finding only when
# its 95% CI excludes 0.

# %%
paired = ablation.comparisons(runs, runs_dir, n_boot=n_boot)
tables.write(paired, out_dir, "ablation_paired")
print(f"tie rule: {TIE_RULES['expected']}")
paired[["comparison", "diff", "ci_low", "ci_high", "p", "n_seeds", "n_images", "verdict"]].round(3)

# %%
ax = sns.stripplot(data=runs, x="variant", y="rsum", hue="seed", order=list(ablation.ROWS), size=7)
sns.pointplot(data=runs, x="variant", y="rsum", order=list(ablation.ROWS), color="k", markers="_", errorbar="sd",
              linestyles="none", ax=ax)
ax.set_ylabel("test Rsum")
figures.save(ax.figure, out_dir, "05_ablation");

# %%
ax = figures.paired_ci_plot(paired)
figures.save(ax.figure, out_dir, "05_paired_ci");

# %% [markdown]
# ## Does DAPN do anything? Its share of the image embedding
# DAPN's output is added to CLIP's pooled embedding through a projection that starts at zero. Per epoch, the mean
# ratio ‖DAPN delta‖ / ‖CLIP pooled‖ on validation images (`dapn_ratio` in each run's `metrics.csv`; epoch 0 is
# the start, where it is 0). A ratio that stays near 0 means DAPN barely changes the embedding.

# %%
growth = ablation.dapn_growth(runs, runs_dir)
tables.write(growth, out_dir, "dapn_growth")
ax = sns.lineplot(data=growth, x="epoch", y="dapn_ratio", hue="variant", marker="o", errorbar="sd")
ax.set_ylabel("‖DAPN delta‖ / ‖CLIP pooled‖ (validation)")
figures.save(ax.figure, out_dir, "05_dapn_growth");

# %%
growth.groupby(["variant", "epoch"])["dapn_ratio"].agg(["mean", "std"]).round(4)
