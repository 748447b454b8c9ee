"""Tests for the figure library (osdpm_lib.figures) and the rankings it shows (osdpm_lib.evaluate: top-k
retrieval, search): retrieval examples, attention figure, prior heatmap and search.  The attention
analysis is tested in test_explain.py, the embedding space in test_embedding.py."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from osdpm_lib import evaluate, figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------- retrieval examples
@pytest.fixture()
def retrieval():
    rng = np.random.default_rng(0)
    n, per = 6, 2
    img = rng.normal(size=(n, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = np.repeat(img, per, axis=0) + 0.3 * rng.normal(size=(n * per, 8))
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    ci = np.repeat(np.arange(n), per)
    enc = {"clip": {"images": img, "texts": txt, "caption_image": ci},
           "osdpm": {"images": img, "texts": txt[::-1].copy(), "caption_image": ci}}
    images = rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)
    caps = [f"caption {j} of image {i} with some words ." for j, i in enumerate(ci)]
    return enc, images, caps, ci


def test_topk_rankings(retrieval):
    enc, _, _, _ = retrieval
    idx, sims = evaluate.topk_image_to_text(enc["clip"], 2, k=5)
    full = enc["clip"]["texts"] @ enc["clip"]["images"][2]
    assert idx.tolist() == np.argsort(-full, kind="stable")[:5].tolist()
    assert (np.diff(sims) <= 0).all()
    idx, sims = evaluate.topk_text_to_image(enc["clip"], 3, k=4)
    assert len(idx) == 4 and (np.diff(sims) <= 0).all()


def test_retrieval_figures_return_figures(retrieval, tmp_path):
    enc, images, caps, ci = retrieval
    fig = figures.retrieval_i2t_figure(enc, caps, ci, images, [0, 3])
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 2 * 3
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum(t.startswith("✓") for t in texts) + sum(t.startswith("✗") for t in texts) == 2 * 2 * 5
    fig2 = figures.retrieval_t2i_figure(enc, caps, ci, images, [0, 7], k=3)
    assert isinstance(fig2, matplotlib.figure.Figure)
    assert len(fig2.axes) == 2 * 2 * (1 + 3)
    assert figures.save(fig2, tmp_path, "t2i") is None
    paths = [tmp_path / "figures" / "t2i.png", tmp_path / "figures" / "t2i.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_example_indices_fixed():
    a = figures.example_indices(200, 4, seed=0)
    assert a == figures.example_indices(200, 4, seed=0) and a == sorted(a) and len(set(a)) == 4
    assert figures.example_indices(3, 10) == [0, 1, 2]


def test_attention_figure(retrieval):
    _, images, _, _ = retrieval
    maps = np.random.default_rng(0).random((2, 4, 4))
    fig = figures.attention_figure(images[:2], {"a": maps, "b": maps}, boxes=[np.array([[1, 1, 5, 5]]),
                                                                              np.zeros((0, 4))],
                                   row_titles=["x", "y"])
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2 * 3
    with pytest.raises(ValueError, match="maps for 2 images"):
        figures.attention_figure(images[:2], {"a": maps[:1]})


# ----------------------------------------------------------------------------------------- priors
def test_prior_heatmap():
    df = pd.DataFrame({"scene": ["airport", "airport", "port"], "category": ["runway", "airplane", "boat"],
                       "share": [0.9, 0.8, 0.7], "rank": [1, 2, 1]})
    fig = figures.prior_heatmap(df)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    # lexicon order of the categories present; scenes sorted
    assert [t.get_text() for t in ax.get_xticklabels()] == ["airplane", "runway", "boat"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["airport", "port"]
    with pytest.raises(ValueError, match="lacks the columns"):
        figures.prior_heatmap(df.drop(columns="share"))


# ----------------------------------------------------------------------------------------- search
class _FixedText(torch.nn.Module):
    def __init__(self, vec):
        super().__init__()
        self.vec = torch.nn.Parameter(torch.as_tensor(vec, dtype=torch.float32))

    def encode_text(self, tokens):
        return self.vec.expand(len(tokens), -1)


def test_search_returns_ranked_indices():
    gallery = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0.8, 0.6]], dtype=np.float32)
    idx, sims = evaluate.search("anything", _FixedText([2.0, 0.0]), lambda xs: torch.zeros(len(xs), 3), gallery,
                               k=3)
    assert idx.tolist() == [0, 4, 2]
    np.testing.assert_allclose(sims, [1.0, 0.8, 0.6], rtol=1e-6)


def test_search_with_a_tiny_model(tiny_models):
    model, tok = tiny_models["models"]["clip"], tiny_models["tokenizer"]
    with torch.no_grad():
        gallery = model.encode_image(tiny_models["norm"](tiny_models["images"])).numpy()
        q = model.encode_text(tok(["a plane near a runway ."])).numpy()[0]
    idx, sims = evaluate.search("a plane near a runway .", model, tok, gallery, k=3)
    assert sorted(idx.tolist()) == [0, 1, 2]
    assert idx.tolist() == np.argsort(-(gallery @ q), kind="stable").tolist()
    np.testing.assert_allclose(sims, np.sort(gallery @ q)[::-1], rtol=1e-5)
    fig = figures.search_figure(tiny_models["images"], idx, sims, "a plane", titles=["a", "b", "c"],
                                relevant=[True, False, True])
    assert isinstance(fig, matplotlib.figure.Figure)
