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
# # 05 · Ablation (Table 3): `clip`, `clip+dapn`, `osdpm` over several seeds
#
# Each variant is trained with the same backbone, data, schedule and seeds; the only differences are the
# DAPN module (`clip+dapn`) and DAPN + the OSFCM clustering loss (`osdpm`). Each run selects its epoch on
# validation Rsum and scores the test split once. Runs already done by notebook 03 (same configuration)
# are reused, not retrained.

# %% tags=["parameters"]
profile: str = "default"
data_dir: str = "../../data/embedded"
out_dir: str = "."
runs_dir: str = "../../runs/embedded"
model: str = "osdpm-tiny-vit"
pretrained: str = ""

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns

from osdpm_lib import figures, profiles, tables
from osdpm_lib.metrics import KEYS
from osdpm_lib.models import VARIANTS
from osdpm_lib.train import train

seeds = profiles.get(profile)["seeds"]
rows = []
for variant in VARIANTS:
    for seed in seeds:
        cfg = profiles.train_config(profile, variant, seed, model=model, pretrained=pretrained or None)
        res = train(cfg, data_dir, Path(runs_dir) / profiles.run_name(variant, seed))
        rows.append({"variant": variant, "seed": seed, "best_epoch": res["best_epoch"],
                     "train_s": res["train_s"], **{k: res["test"][k] for k in KEYS}})
runs = pd.DataFrame(rows)
tables.write(runs, out_dir, "ablation_runs")
runs[["variant", "seed", "best_epoch", "rsum", "mr"]].round(2)

# %% [markdown]
# ## Mean ± standard deviation over seeds

# %%
summary = tables.ablation_table(runs)
tables.write(summary, out_dir, "ablation_summary")
summary

# %% [markdown]
# ## Does OSDPM beat the CLIP baseline?
# The criterion: mean test Rsum of `osdpm` exceeds `clip`'s by more than twice the seed standard deviation
# (the larger of the two variants' std). Seeds are paired (same initialisation of the shared backbone and
# the same data order), so the per-seed differences are shown too.

# %%
verdict = tables.ablation_verdict(runs, "osdpm", "clip")
tables.write(pd.DataFrame([verdict]), out_dir, "ablation_verdict")
pd.Series(verdict)

# %%
ax = sns.stripplot(data=runs, x="variant", y="rsum", hue="seed", order=list(VARIANTS), size=8)
sns.pointplot(data=runs, x="variant", y="rsum", order=list(VARIANTS), color="k", markers="_", errorbar="sd",
              linestyles="none", ax=ax)
ax.set_ylabel("test Rsum")
figures.save(ax.figure, out_dir, "05_ablation");
