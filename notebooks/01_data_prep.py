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
# # 01 · Data preparation
#
# Builds (embedded benchmark) or validates (a real dataset folder: RSICD, RSITMD, UCM in Karpathy json,
# AMFMN text or ALBEF json) the dataset of this chain, and shows it: split sizes, caption statistics
# next to RSICD's, sample images with their captions, and the object-size distribution.

# %% tags=["parameters"]
dataset: str = "embedded"      # "embedded" or the path of a real dataset folder
profile: str = "default"       # key of osdpm_lib.profiles.PROFILES
data_dir: str = "../../data/embedded"
out_dir: str = "."

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns

from osdpm_lib import data, explain, figures, profiles, synth

prof = profiles.get(profile)
data_path = Path(data_dir)
if dataset == "embedded":
    synth.generate(data_path, n_images=prof["n_images"], seed=0, image_size=prof["image_size"])
ann = data.load(data_path, check_images=True)
summary = data.summary(ann)
pd.DataFrame(summary["splits"]).T

# %% [markdown]
# ## Captions next to RSICD's
# RSICD's figures come from `osdpm_lib/literature/rsicd_stats.csv` (Lu et al., TGRS 2018, counted on the
# public annotation files).

# %%
stats = synth.caption_stats(next(data_path.glob("dataset*.json"))) if dataset == "embedded" else None
rsicd = pd.read_csv(Path(figures.__file__).with_name("literature") / "rsicd_stats.csv")
table = rsicd.set_index("statistic")[["rsicd"]]
if stats is not None:
    table["this dataset"] = [stats[k] for k in table.index]
table.round(3)

# %%
gt = explain.load_ground_truth(data_path)     # None for a real dataset: scenes from the filenames then
scenes = dict(zip((r.filename for r in ann.images), explain.scenes_for(ann.images, gt)))
per_scene = pd.Series([s or "unknown" for s in scenes.values()]).value_counts()
print(f"{len(per_scene)} scene classes; images per class: min {per_scene.min()}, max {per_scene.max()}")

# %% [markdown]
# ## Sample images with captions

# %%
fig = figures.sample_grid(ann.split("train"), data_path / "images", n=8, scenes=scenes)
figures.save(fig, out_dir, "01_samples");

# %% [markdown]
# ## Object sizes (embedded benchmark ground truth)
# Box side relative to the image side, per object category: small cars and boats, mid-size tanks and
# planes, large stadiums and ponds.

# %%
if gt:
    sizes = synth.object_sizes(data_path / synth.GT_NAME)
    order = sizes.groupby("category")["size"].median().sort_values().index
    g = sns.catplot(data=sizes, y="category", x="size", order=order, kind="box", height=5, aspect=1.4,
                    fliersize=1)
    g.set_axis_labels("box side / image side", "")
    figures.save(g.figure, out_dir, "01_object_sizes");
