"""Figures of the book (plotting only).  Every figure is saved as PNG and PDF (deterministic PDF metadata).

The numbers they show come from elsewhere: rankings from :mod:`osdpm_lib.evaluate`, projections and
scene separation from :mod:`osdpm_lib.embedding`, maps from :mod:`osdpm_lib.explain`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from .data import read_image  # noqa: E402
from .embedding import STAGES  # noqa: E402
from .evaluate import topk_image_to_text, topk_text_to_image  # noqa: E402


def save(fig, out_dir, name: str) -> None:
    """Write ``figures/<name>.png`` and ``.pdf`` under ``out_dir``.

    Returns nothing, so that a notebook cell ending with it shows only the figure (nbval executes
    cells without history, where IPython's trailing-``;`` suppression does not apply)."""
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png", d / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})


def sample_grid(records, image_dir, n: int = 8, cols: int = 4, scenes: dict | None = None, seed: int = 0,
                wrap: int = 38):
    """Sample images with their (first two) captions and scene class."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), size=min(n, len(records)), replace=False)
    rows = int(np.ceil(len(pick) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.4 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), pick):
        r = records[int(i)]
        ax.imshow(read_image(Path(image_dir) / r.filename, r.origin).image)
        scene = (scenes or {}).get(r.filename, r.scene) or "?"
        caps = "\n".join(textwrap.fill(c, wrap) for c in r.captions[:2])
        ax.set_title(f"{r.filename} [{scene}]\n{caps}", fontsize=7, loc="left")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- helpers
def _hwc(image) -> np.ndarray:
    """One image as ``[H, W, 3]`` uint8 (from a ``[3, H, W]`` tensor/array, an ``[H, W, 3]`` array or PIL)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return a


def example_indices(n: int, n_examples: int, seed: int = 0) -> list[int]:
    """``n_examples`` distinct indices out of ``n`` drawn with a fixed seed, sorted."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=min(n_examples, n), replace=False))


# ------------------------------------------------------------------------- Fig. 5: attention maps
def attention_figure(images, columns: dict, boxes=None, row_titles=None, alpha: float = 0.5,
                     cmap: str = "jet", size: float = 1.9):
    """Attention maps overlaid on images (the paper's Fig. 5).

    ``images``: ``N`` images (uint8 ``[N, 3, S, S]`` tensor or anything :func:`_hwc` reads);
    ``columns``: label -> ``[N, h, w]`` maps (upsampled bilinearly to the image, min-max normalised;
    the peak is marked with a white cross); ``boxes``: optional per-image ``[n, 4]`` pixel boxes drawn
    on the first column (the ground-truth objects the captions name); ``row_titles``: optional text per
    row.  Returns the Figure (rows: images; columns: the image, then one per map).
    """
    from .explain import map_peaks, normalize_maps, upsample

    imgs = [_hwc(im) for im in images]
    n, labels = len(imgs), list(columns)
    for lab in labels:
        if len(columns[lab]) != n:
            raise ValueError(f"column {lab!r}: {len(columns[lab])} maps for {n} images")
    s = imgs[0].shape[0] if n else 1
    over = {lab: normalize_maps(upsample(np.asarray(columns[lab]), s)) for lab in labels}
    peaks = {lab: map_peaks(np.asarray(columns[lab]), s) for lab in labels}
    fig, axes = plt.subplots(n, 1 + len(labels), figsize=(size * (1 + len(labels)), size * n + 0.3),
                             squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(imgs[i])
        for x0, y0, x1, y1 in (np.asarray(boxes[i]).reshape(-1, 4) if boxes is not None else []):
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=0.8))
        if row_titles is not None:
            ax.set_ylabel("\n".join(textwrap.fill(part, 24, break_long_words=False)
                                     for part in str(row_titles[i]).split("\n")), fontsize=6.5)
        for j, lab in enumerate(labels, start=1):
            ax = axes[i, j]
            ax.imshow(imgs[i])
            ax.imshow(over[lab][i], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            x, y = peaks[lab][i]
            if x >= 0:
                ax.plot([x], [y], marker="+", color="white", ms=9, mew=1.5)
    for j, lab in enumerate(["image (+ target boxes)" if boxes is not None else "image", *labels]):
        axes[0, j].set_title(lab, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- Figs. 6, 7: retrieval examples


def retrieval_i2t_figure(encoded: dict, captions, caption_image, images, queries, k: int = 5,
                         wrap: int = 44):
    """Image -> text examples (the paper's Fig. 6): per query image (rows) the image, then per model
    (``encoded``: label -> test embeddings) its top-``k`` captions, ✓ (green) for a caption of the
    query image, ✗ (red) otherwise, with the cosine similarity.  Returns the Figure."""
    caption_image = np.asarray(caption_image)
    labels = list(encoded)
    n = len(queries)
    fig, axes = plt.subplots(n, 1 + len(labels), figsize=(1.9 + 4.3 * len(labels), 2.0 * n + 0.3),
                             squeeze=False, gridspec_kw={"width_ratios": [1] + [2.4] * len(labels)})
    for r, q in enumerate(queries):
        q = int(q)
        axes[r, 0].imshow(_hwc(images[q]))
        axes[r, 0].set_title(f"query image {q}", fontsize=7)
        for c, lab in enumerate(labels, start=1):
            ax = axes[r, c]
            idx, sims = topk_image_to_text(encoded[lab], q, k)
            hits = caption_image[idx] == q
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            for rank, (j, s, h) in enumerate(zip(idx, sims, hits)):
                text = textwrap.shorten(str(captions[j]), wrap * 2, placeholder=" …")
                ax.text(0.0, 1 - (rank + 0.5) / k, f"{'✓' if h else '✗'} {rank + 1}. " + textwrap.fill(text, wrap)
                        + f"  ({s:.2f})", color="tab:green" if h else "tab:red", fontsize=6.5, va="center")
            if r == 0:
                ax.set_title(lab, fontsize=9)
    for r in range(axes.shape[0]):
        for c in range(axes.shape[1]):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if c > 0:
                axes[r, c].spines[:].set_visible(False)
    fig.tight_layout()
    return fig


def retrieval_t2i_figure(encoded: dict, captions, caption_image, images, queries, k: int = 5,
                         wrap: int = 34):
    """Text -> image examples (the paper's Fig. 7): per query caption and model (rows) the caption and
    the model's top-``k`` images, framed green when it is the caption's image, red otherwise.  Returns
    the Figure."""
    caption_image = np.asarray(caption_image)
    labels = list(encoded)
    rows = [(int(q), lab) for q in queries for lab in labels]
    fig, axes = plt.subplots(len(rows), 1 + k, figsize=(2.6 + 1.3 * k, 1.45 * len(rows) + 0.3), squeeze=False,
                             gridspec_kw={"width_ratios": [2.0] + [1] * k})
    for r, (q, lab) in enumerate(rows):
        ax = axes[r, 0]
        ax.axis("off")
        if lab == labels[0]:  # the query once per group of rows
            ax.text(0, 1.0, f"query {q}: “{textwrap.fill(str(captions[q]), wrap)}”", fontsize=6.5, va="top")
        ax.text(0, 0.1, lab, fontsize=8, fontweight="bold", va="bottom")
        idx, sims = topk_text_to_image(encoded[lab], q, k)
        for c, (j, s) in enumerate(zip(idx, sims), start=1):
            ax = axes[r, c]
            ax.imshow(_hwc(images[int(j)]))
            hit = int(j) == int(caption_image[q])
            for sp in ax.spines.values():
                sp.set_edgecolor("tab:green" if hit else "tab:red")
                sp.set_linewidth(3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{c}. {'✓' if hit else '✗'} {s:.2f}", fontsize=6.5,
                         color="tab:green" if hit else "tab:red")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------- embedding space across training stages


def scene_palette(scenes) -> dict:
    """A fixed colour per scene class (sorted names; tab20 then tab20b)."""
    names = sorted({str(s) for s in scenes})
    colors = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    return {s: colors[i % len(colors)] for i, s in enumerate(names)}


def embedding_grid(frame: pd.DataFrame, separation: pd.DataFrame | None = None, size: float = 2.6,
                   point_size: float = 9):
    """Grid of projections: one row per (model, method), one column per stage, points coloured by scene;
    with ``separation`` (:func:`osdpm_lib.embedding.separation_table`) each panel's title carries the silhouette.  Returns
    the Figure (scene legend on the right)."""
    models = list(dict.fromkeys(frame["model"]))
    methods = list(dict.fromkeys(frame["method"]))
    stages = [s for s in STAGES if s in set(frame["stage"])] or list(dict.fromkeys(frame["stage"]))
    pal = scene_palette(frame["scene"])
    sil = {} if separation is None else {(r.model, r.stage): r.silhouette for r in separation.itertuples()}
    rows = [(m, me) for m in models for me in methods]
    fig, axes = plt.subplots(len(rows), len(stages), figsize=(size * len(stages) + 2.2, size * len(rows)),
                             squeeze=False)
    for r, (model, method) in enumerate(rows):
        for c, stage in enumerate(stages):
            ax = axes[r, c]
            d = frame[(frame["model"] == model) & (frame["method"] == method) & (frame["stage"] == stage)]
            ax.scatter(d["x"], d["y"], c=[pal[str(s)] for s in d["scene"]], s=point_size, lw=0)
            title = f"{model} · {stage}"
            if (model, stage) in sil:
                title += f"\nsilhouette {sil[(model, stage)]:.3f}"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(method.upper() if method == "umap" else "t-SNE", fontsize=8)
    handles = [plt.Line2D([], [], ls="", marker="o", color=col, label=s, ms=5) for s, col in pal.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
               title="scene", title_fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ prior heatmap
def prior_heatmap(df: pd.DataFrame, value: str = "share", categories=None, annotate: bool = True,
                  ax=None):
    """Scene x category heatmap of ``value`` (default ``share``: the share of a scene's images whose
    captions name the category) from a long frame with columns scene, category, ``value`` (e.g.
    :func:`osdpm_lib.priors.top_categories_by_scene`, any ``k``).  Pairs missing from the frame are
    left blank.  Columns follow ``categories`` (default: lexicon order of those present).  Returns the
    Figure."""
    from . import lexicon

    missing = [c for c in ("scene", "category", value) if c not in df.columns]
    if missing:
        raise ValueError(f"prior frame lacks the columns {missing}")
    if categories is None:
        present = set(df["category"])
        categories = [c for c in lexicon.CATEGORY_NAMES if c in present]
        categories += sorted(present - set(categories))
    table = df.pivot_table(index="scene", columns="category", values=value, aggfunc="mean")
    table = table.reindex(columns=list(categories)).sort_index()
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.42 * table.shape[1] + 2.5, 0.32 * table.shape[0] + 1.5))
    else:
        fig = ax.figure
    data = np.ma.masked_invalid(table.to_numpy(dtype=float))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=max(1e-9, float(np.nanmax(table.to_numpy(dtype=float)))),
                   aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=7)
    if annotate:
        for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
            if v == v and v >= 0.05:
                ax.text(j, i, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=5,
                        color="white" if v < 0.6 * data.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label=value)
    ax.set_xlabel("category")
    ax.set_ylabel("scene")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- search


def search_figure(images, indices, scores, query: str, titles=None, relevant=None, cols: int = 4,
                  size: float = 1.9):
    """The ranked images of a search (:func:`osdpm_lib.evaluate.search`): rank, similarity and an optional title each
    (e.g. the scene); with ``relevant`` (one bool per shown image) frames green/red.  Returns the Figure."""
    n = len(indices)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (size + 0.35) * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (ax, j, s) in enumerate(zip(axes.ravel(), indices, scores)):
        ax.axis("on")
        ax.imshow(_hwc(images[int(j)]))
        ax.set_xticks([])
        ax.set_yticks([])
        extra = f"\n{titles[r]}" if titles is not None else ""
        ax.set_title(f"{r + 1}. #{int(j)} ({s:.2f}){extra}", fontsize=7)
        if relevant is not None:
            for sp in ax.spines.values():
                sp.set_edgecolor("tab:green" if relevant[r] else "tab:red")
                sp.set_linewidth(3)
    fig.suptitle(f"“{query}”", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ paired comparisons (Table 3)
def paired_ci_plot(paired: pd.DataFrame, ax=None):
    """Mean paired Rsum difference with its bootstrap CI per comparison (``stats.compare_runs`` output)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(paired) + 1.2))
    y = np.arange(len(paired))[::-1]
    err = np.vstack([paired["diff"] - paired["ci_low"], paired["ci_high"] - paired["diff"]])
    ax.errorbar(paired["diff"], y, xerr=err, fmt="o", color="k", capsize=4)
    ax.axvline(0, color="gray", ls="--", lw=1)
    ax.set_yticks(y, paired["comparison"])
    ax.set_xlabel("test Rsum difference (mean over seeds, 95% CI)")
    ax.figure.tight_layout()
    return ax


def forest_plot(comparisons: pd.DataFrame, margin: float, label: str = "Rsum", ax=None):
    """The study's comparisons of one metric (``study.comparison_table`` rows): the difference with its 95% CI (thin)
    and 90% CI (thick), the equivalence margin ``±margin`` shaded and the verdict beside each row."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 * len(comparisons) + 1.4))
    y = np.arange(len(comparisons))[::-1]
    ax.axvspan(-margin, margin, color="tab:green", alpha=0.12, label=f"equivalence margin ±{margin:.2f}")
    ax.hlines(y, comparisons["ci95_low"], comparisons["ci95_high"], color="k", lw=1.2, label="95% CI")
    ax.hlines(y, comparisons["ci90_low"], comparisons["ci90_high"], color="k", lw=4, alpha=0.6, label="90% CI")
    ax.plot(comparisons["diff"], y, "o", color="tab:red", zorder=3)
    ax.axvline(0, color="gray", ls="--", lw=1)
    ax.set_yticks(y, [f"{c}\n({v})" for c, v in zip(comparisons["comparison"], comparisons["verdict"])])
    ax.set_xlabel(f"test {label} difference (mean over seeds and folds)")
    ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.9)
    ax.figure.tight_layout()
    return ax
