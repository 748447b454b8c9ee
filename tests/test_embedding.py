"""Tests for the embedding space (osdpm_lib.embedding): scene separation, projections, stages; and their
plot (osdpm_lib.figures.embedding_grid)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from osdpm_lib import embedding, figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------ embedding space
def _clusters(n_per=8, k=3, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(16)[:k] * 3
    x = np.concatenate([c + spread * rng.normal(size=(n_per, 16)) for c in centers])
    return x.astype(np.float32), [f"s{i}" for i in range(k) for _ in range(n_per)]


def test_separation_table_columns_and_values():
    x, scenes = _clusters()
    noise = np.random.default_rng(1).normal(size=x.shape)
    stages = {"clip": {"start": noise, "end": x}, "osdpm": {"start": noise, "mid": x, "end": x}}
    tab = embedding.separation_table(stages, scenes)
    assert list(tab.columns) == ["model", "stage", "silhouette", "n_images", "n_scenes"]
    assert tab[["model", "stage"]].values.tolist() == [["clip", "start"], ["clip", "end"], ["osdpm", "start"],
                                                       ["osdpm", "mid"], ["osdpm", "end"]]
    sil = tab.set_index(["model", "stage"])["silhouette"]
    assert sil[("clip", "end")] > 0.9 > abs(sil[("clip", "start")])
    assert (tab["n_images"] == 24).all() and (tab["n_scenes"] == 3).all()
    # images without a scene are left out; every image its own scene: undefined
    tab2 = embedding.separation_table({"m": {"end": x}}, scenes[:-1] + [None])
    assert tab2.loc[0, "n_images"] == 23
    assert np.isnan(embedding.separation_table({"m": {"end": x[:3]}}, ["a", "b", "c"]).loc[0, "silhouette"])


def test_embedding_frame_and_grid():
    x, scenes = _clusters(n_per=6)
    stages = {"clip": {"start": x[::-1].copy(), "end": x}}
    frame = embedding.embedding_frame(stages, scenes, methods=("tsne",), seed=0)
    assert list(frame.columns) == ["model", "stage", "method", "index", "x", "y", "scene"]
    assert len(frame) == 2 * len(x)
    again = embedding.embedding_frame(stages, scenes, methods=("tsne",), seed=0)
    pd.testing.assert_frame_equal(frame, again)  # fixed random_state
    fig = figures.embedding_grid(frame, embedding.separation_table(stages, scenes))
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    assert "silhouette" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="unknown projection"):
        embedding.project(x, "pca")


def test_load_stages(tmp_path):
    np.savez(tmp_path / "embeddings.npz", start=np.zeros((2, 3)), end=np.ones((2, 3)), mid=np.ones((2, 3)))
    assert list(embedding.load_stages(tmp_path)) == ["start", "mid", "end"]
