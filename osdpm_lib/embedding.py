"""The embedding space across training: the test image embeddings a run stores at its stages (``start``,
``mid``, ``end``; ``embeddings.npz``), their 2-D projections (t-SNE, UMAP) and the scene separation
(silhouette).  Plotting is :func:`osdpm_lib.figures.embedding_grid`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

STAGES = ("start", "mid", "end")


def project(emb: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D projection of embeddings: ``"tsne"`` (sklearn, cosine metric, PCA init, perplexity
    ``min(30, (n - 1) / 3)``) or ``"umap"`` (umap-learn, cosine metric, ``n_neighbors=min(15, n - 1)``,
    ``min_dist=0.1``); both with ``random_state=seed`` (deterministic, single-threaded)."""
    x = np.asarray(emb, dtype=np.float32)
    n = len(x)
    if n < 4:
        raise ValueError(f"need at least 4 points to project, got {n}")
    with warnings.catch_warnings():  # umap: "n_jobs overridden by setting random_state", numba notes
        warnings.simplefilter("ignore")
        return _project(x, method, seed)


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    n = len(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one OpenMP thread: the Barnes-Hut sums in a fixed order
            return TSNE(2, perplexity=float(min(30.0, (n - 1) / 3.0)), metric="cosine", init="pca",
                        random_state=seed).fit_transform(x)
    if method == "umap":
        import umap
        from sklearn.metrics import pairwise_distances

        # Exact cosine neighbours (what umap-learn computes itself below 4096 points), handed over as
        # ``precomputed_knn``: the same graph, without numba compiling umap's parallel kNN kernel.
        k = min(15, n - 1)
        d = pairwise_distances(x.astype(np.float64), metric="cosine")
        np.fill_diagonal(d, 0.0)
        order = d.copy()
        np.fill_diagonal(order, -1.0)  # every point is its own first neighbour
        idx = np.argsort(order, axis=1, kind="stable")[:, :k]
        knn = (idx, np.take_along_axis(d, idx, axis=1))
        return umap.UMAP(n_neighbors=k, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1,
                         precomputed_knn=knn).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; choose 'tsne' or 'umap'")


def load_stages(run_dir) -> dict[str, np.ndarray]:
    """The test image embeddings of a run at the stages ``start``, ``mid``, ``end`` (embeddings.npz)."""
    with np.load(Path(run_dir) / "embeddings.npz") as z:
        return {s: z[s] for s in STAGES if s in z}


def embedding_frame(stages: dict, scenes, methods=("tsne", "umap"), seed: int = 0) -> pd.DataFrame:
    """Projections of every (model, stage): ``stages`` maps model label -> {stage: ``[N, D]``}.
    Long frame: model, stage, method, index, x, y, scene."""
    scenes = np.asarray([s if s is not None else "?" for s in scenes], dtype=object)
    parts = []
    for model, per in stages.items():
        for stage, emb in per.items():
            if len(emb) != len(scenes):
                raise ValueError(f"{model}/{stage}: {len(emb)} embeddings for {len(scenes)} scenes")
            for method in methods:
                xy = project(emb, method, seed)
                parts.append(pd.DataFrame({"model": model, "stage": stage, "method": method,
                                           "index": np.arange(len(emb)), "x": xy[:, 0], "y": xy[:, 1],
                                           "scene": scenes}))
    return pd.concat(parts, ignore_index=True)


def separation_table(stages: dict, scenes, metric: str = "cosine") -> pd.DataFrame:
    """Scene separation per (model, stage): sklearn's ``silhouette_score`` of the embeddings by scene
    class (``metric`` cosine; images without a scene left out).  Columns: model, stage, silhouette,
    n_images, n_scenes (silhouette NaN when fewer than 2 scenes or every image its own scene)."""
    from sklearn.metrics import silhouette_score

    keep = np.asarray([s is not None for s in scenes])
    labels = np.asarray([s for s in scenes if s is not None], dtype=object)
    n_scenes = len(set(labels.tolist()))
    rows = []
    for model, per in stages.items():
        for stage, emb in per.items():
            x = np.asarray(emb, dtype=np.float64)[keep]
            ok = 2 <= n_scenes <= len(x) - 1
            rows.append({"model": model, "stage": stage,
                         "silhouette": float(silhouette_score(x, labels, metric=metric)) if ok else np.nan,
                         "n_images": int(len(x)), "n_scenes": n_scenes})
    return pd.DataFrame(rows, columns=["model", "stage", "silhouette", "n_images", "n_scenes"])
