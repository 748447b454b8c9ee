# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# next to RSICD's, sample images with their captions, the object-size distribution, and an audit of the
# dataset (duplicate captions, class balance, overlap between splits and with a second dataset).

# %% tags=["parameters"]
dataset: str = "embedded"      # "embedded" or the path of a real dataset folder
profile: str = "default"       # key of osdpm_lib.profiles.PROFILES
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ and figures/ go here; "": results/<chain>
rsicd_dir: str = "../shared/data/rsicd"   # real RSICD annotations (text only), if present
compare_dir: str = ""  # a second dataset folder to audit the overlap with (e.g. RSITMD next to RSICD)

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
rsicd_dir = paths.resolve(rsicd_dir)
compare_dir = paths.resolve(compare_dir)

# %%
from pathlib import Path

import pandas as pd
import seaborn as sns
from IPython.display import display

from osdpm_lib import audit, data, figures, pretrain, profiles, synth, tables
from osdpm_lib.synth import groundtruth

data_path = Path(data_dir)
if dataset == "embedded":
    synth.generate(data_path, seed=0, **profiles.data_sizes(profile))
ann = data.load(data_path, check_images=True)
summary = data.summary(ann)
pd.DataFrame(summary["splits"]).T

# %% [markdown]
# ## Captions next to RSICD's
# RSICD's figures come from `osdpm_lib/literature/rsicd_stats.csv` (Lu et al., TGRS 2018, counted on the
# public annotation files).

# %%
stats = audit.caption_stats(next(data_path.glob("dataset*.json"))) if dataset == "embedded" else None
rsicd = pd.read_csv(tables.literature_file("rsicd_stats.csv"))
table = rsicd.set_index("statistic")[["rsicd"]]
if stats is not None:
    table["this dataset"] = [stats[k] for k in table.index]
table.round(3)

# %%
gt = groundtruth.load_ground_truth(data_path)    # None for a real dataset: scenes from the filenames then
scenes = dict(zip((r.filename for r in ann.images), groundtruth.scenes_for(ann.images, gt)))
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
    sizes = audit.object_sizes(data_path / groundtruth.GT_NAME)
    order = sizes.groupby("category")["size"].median().sort_values().index
    g = sns.catplot(data=sizes, y="category", x="size", order=order, kind="box", height=5, aspect=1.4,
                    fliersize=1)
    g.set_axis_labels("box side / image side", "")
    figures.save(g.figure, out_dir, "01_object_sizes");

# %% [markdown]
# ## Dataset audit
# From `osdpm_lib/audit.py` (also a command line: `python -m osdpm_lib.audit PATH [--against PATH2]
# [--images DIR] [--against-images DIR2]`).  Captions are compared after a light normalisation: lower
# case, whitespace collapsed, trailing punctuation stripped.  Caption lengths are in words (Karpathy
# tokens) per caption.

# %%
audit.caption_lengths(ann).round(2)

# %% [markdown]
# Duplicate captions.  Within an image: images holding a caption twice or more, and the repeated caption
# slots (captions minus distinct captions).  Across images: distinct captions found in two or more images
# of the split (`all`: of the whole dataset, train/test leakage included).

# %%
audit.duplicates(ann)

# %% [markdown]
# Class balance: images per scene class and split.

# %%
audit.class_balance(ann, groundtruth.scenes_for(ann.images, gt))

# %% [markdown]
# ### Overlap between the splits
# Shared filenames, shared (normalised) captions with the fraction of each side's distinct captions, and
# near-duplicate images: 64-bit perceptual hashes (`imagehash.phash`) at most `audit.MAX_DISTANCE` bits
# apart.

# %%
image_dir = data_path / "images"
audit.split_overlap(ann, image_dir, progress=False, digits=4)

# %% [markdown]
# ### Overlap with a second dataset
# Set `compare_dir` to a second dataset folder (RSICD and RSITMD are known to share images and captions);
# images are compared by perceptual hash when both folders have `images/`.

# %%
if compare_dir:
    res = audit.overlap(ann, data.load(compare_dir), image_dir, Path(compare_dir) / "images", progress=False)
    display(audit.overlap_table(res, digits=4).rename(columns={"value": f"a: this, b: {Path(compare_dir).name}"}))
    if res["pairs"] is not None:
        display(res["pairs"].head(20))
else:
    print("compare_dir not set: no second dataset to compare with")

# %% [markdown]
# ## The pretraining corpus (the book's "web alt-text")
# Every variant starts from the book's pretrained CLIP (`osdpm_lib/weights/osdpm-tiny-vit_synthpre.safetensors`,
# rebuilt by `make pretrain`). Its corpus has its own seeds, many more images, a broader mix of scenes and objects
# and captions in another register. What it shares with the benchmark — filenames, normalised captions and
# near-duplicate images (perceptual hash) — was measured by `make pretrain` and is recorded beside the checkpoint
# (the sha256 of the checkpoint is checked here).

# %%
record = pretrain.verify()
print(f"{record['file']}: sha256 ok; corpus {record['corpus']['n_images']} images (seed {record['corpus']['seed']}), "
      f"{record['train']['epochs']} epochs, batch {record['train']['batch_size']}")
print("example captions:", *record["example_captions"][:8], sep="\n  ")
pd.Series(record["overlap_with_benchmark"], dtype=object).to_frame("corpus (a) vs benchmark (b)")

# %% [markdown]
# ### RSICD: duplicates and train/test overlap
# The real RSICD annotations (captions only, no images), when present (its counts are tested in
# `tests/test_audit.py`; nbval does not compare this cell, which differs where `../shared` is absent).

# %% tags=["nbval-ignore-output"]
if rsicd_dir and rsicd_dir.exists():
    rsicd_ann = data.load(rsicd_dir)
    display(audit.duplicates(rsicd_ann))
    display(audit.split_overlap(rsicd_ann, progress=False, digits=4))
else:
    print("RSICD annotations not found: skipped")
