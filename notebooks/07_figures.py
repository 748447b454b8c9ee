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
# # 07 · Figures of the paper, with the numbers behind them
#
# The figures of OSDPM regenerated from the runs of notebook 05 (`clip`, `clip+dapn`, `osdpm`, one seed):
#
# 1. **Attention maps** (Fig. 5): DAPN's collaborative spatial map and its saliency map for the DAPN
#    variants, Grad-CAM through the image-text similarity for every variant, scored with the
#    **pointing game** on the embedded benchmark's ground-truth boxes.
# 2. **Retrieval examples** (Figs. 6 and 7): top-5 captions of query images and top-5 images of query
#    captions, `clip` beside `osdpm`.
# 3. **Embedding space** across training (start, middle, end): t-SNE and UMAP of the test image
#    embeddings coloured by scene class, and the scene separation (silhouette) per stage.
# 4. **Search**: a free-text query against the test gallery with the `osdpm` model.
#
# The category priors per scene class (the OSFCM prior) are drawn by notebook 02 (`02_prior_heatmap`).

# %% tags=["parameters"]
profile: str = "default"
overrides: dict = {}    # profile fields to override: the runner's --set / --smoke (osdpm_lib.settings)
data_dir: str = ""      # dataset folder; "": data/<chain> (chain: $OSDPM_CHAIN or "embedded")
out_dir: str = ""       # tables/ and figures/ go here; "": results/<chain>
runs_dir: str = ""      # one folder per trained run; "": runs/<chain>
seed: int = 0
query: str = "many planes are parked near a runway ."
n_examples: int = 4

# %%
from osdpm_lib import paths, settings   # relative paths are read from the project root, whatever the working directory

profile = settings.apply(profile, overrides)   # with overrides: a profile of its own, e.g. finetune.smoke

data_dir = paths.resolve(data_dir, "data")
out_dir = paths.resolve(out_dir, "results")
runs_dir = paths.resolve(runs_dir, "runs")

# %%
import logging
from pathlib import Path

import numpy as np

from osdpm_lib import cache, embedding, evaluate, explain, figures, priors, profiles, tables
from osdpm_lib.data import load
from osdpm_lib.models import VARIANTS
from osdpm_lib.synth import groundtruth
from osdpm_lib.train import load_trained

logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" notes (weights come from best.pt)
ann = load(data_dir)
test = ann.split("test")
gt = groundtruth.load_ground_truth(data_dir)  # None for a real data set: no pointing game then
scenes = groundtruth.scenes_for(test, gt)
run_dirs = {v: Path(runs_dir) / profiles.run_name(v, seed) for v in VARIANTS}
trained = {v: load_trained(d) for v, d in run_dirs.items()}         # model, tokenizer, preprocess, config
encoded = {v: dict(np.load(d / "test_encoded.npz")) for v, d in run_dirs.items()}
pre = trained["clip"][2]
images = cache.image_cache([r.filename for r in test], Path(data_dir) / "images", pre["image_size"], progress=False)
normalizer = cache.Normalizer(pre["mean"], pre["std"])
captions = [c for r in test for c in r.captions]
caption_image = encoded["clip"]["caption_image"]
examples = figures.example_indices(len(test), n_examples, seed)
print(f"{len(test)} test images, {len(captions)} captions; profile {profile!r}, seed {seed}; examples {examples}")

# %% [markdown]
# ## 1 · Attention maps and the pointing game (Fig. 5)
# DAPN's maps come from the forward pass (`spatial`: the collaborative attention, a softmax over the 8×8
# token grid; `saliency`: the saliency-region attention). Grad-CAM differentiates `cos(image, first
# caption)`; for this class-token ViT the patch tokens *after* the last block do not feed the image
# embedding (their gradient is zero), so the token grid entering the last block is used (see
# `osdpm_lib.explain`). A map points at its maximum; it hits when that pixel lies in a ground-truth box of
# an object category the image's captions name. `center` and `random (expected)` (the share of the image
# the target boxes cover) are the references: large targets (roads, water, fields) make pointing easy, so
# `accuracy_small` repeats the score on the images whose targets cover less than a quarter of the image.

# %%
maps = explain.attention_maps({v: trained[v][0] for v in VARIANTS}, encoded, images, normalizer)
boxes = explain.target_boxes(test, gt) if gt is not None else None
pointing = explain.pointing_game(maps, boxes, groundtruth.image_size(gt)) if gt is not None else None
if pointing is not None:
    tables.write(pointing, out_dir, "pointing_game", floatfmt=".1f")
pointing.round(1) if pointing is not None else "no ground truth: pointing game skipped"

# %%
fig = figures.attention_figure(
    images[examples], {f"{v} · {k}": maps[(v, k)][examples] for v, k in maps},
    boxes=[boxes[i] for i in examples] if boxes is not None else None,
    row_titles=[f"{test[i].filename}\n[{scenes[i]}]" for i in examples])
figures.save(fig, out_dir, "07_attention_maps");

# %% [markdown]
# ## 2 · Retrieval examples (Figs. 6 and 7)
# The same query images; for text→image the query is each image's first caption. ✓/green: a match.

# %%
pair = {v: encoded[v] for v in ("clip", "osdpm")}
fig = figures.retrieval_i2t_figure(pair, captions, caption_image, images, examples)
figures.save(fig, out_dir, "07_retrieval_image_to_text");

# %%
first = explain.first_caption_index(caption_image)
fig = figures.retrieval_t2i_figure(pair, captions, caption_image, images, [int(first[i]) for i in examples])
figures.save(fig, out_dir, "07_retrieval_text_to_image");

# %% [markdown]
# ## 3 · Embedding space across training
# Embeddings of the first test images (`train.STAGE_IMAGES`) before training (`start`), after the middle epoch (`mid`) and at the end
# (`end`). The silhouette (cosine, by scene class; −1…1, higher = scenes better separated) is computed on
# the embeddings themselves, not on the 2-D projections.

# %%
stages = {v: embedding.load_stages(d) for v, d in run_dirs.items()}
stage_scenes = scenes[:len(stages["clip"]["end"])]    # train.STAGE_IMAGES: the first test images
separation = embedding.separation_table(stages, stage_scenes)
tables.write(separation, out_dir, "embedding_separation", floatfmt=".3f")
separation.pivot(index="model", columns="stage", values="silhouette").loc[list(VARIANTS), list(embedding.STAGES)].round(3)

# %%
shown = {v: stages[v] for v in ("clip", "osdpm")}
frame = embedding.embedding_frame(shown, stage_scenes, methods=("tsne", "umap"), seed=seed)
fig = figures.embedding_grid(frame, separation)
figures.save(fig, out_dir, "07_embedding_space");

# %% [markdown]
# ## 4 · Search the test gallery
# The query is encoded with the `osdpm` model; the gallery is its stored test image embeddings. With
# ground truth, a result is framed green when the image holds every object category the query names.

# %%
model, tokenizer = trained["osdpm"][0], trained["osdpm"][1]
top, sims = evaluate.search(query, model, tokenizer, encoded["osdpm"]["images"], k=8)
wanted = set(priors.caption_categories(query))
relevant = None
if gt is not None and wanted:
    relevant = [wanted <= groundtruth.categories_of(gt, test[i].filename) for i in top]
print(f"query categories: {sorted(wanted)}; relevant in top {len(top)}: "
      f"{sum(relevant) if relevant is not None else 'n/a'}")
fig = figures.search_figure(images, top, sims, query, titles=[scenes[i] for i in top], relevant=relevant)
figures.save(fig, out_dir, "07_search");
