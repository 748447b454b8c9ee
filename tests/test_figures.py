"""Tests for the figure library (osdpm_lib.figures) and the attention analysis (osdpm_lib.explain):
Grad-CAM and DAPN maps on a tiny random model, the pointing game on hand-made maps and boxes,
retrieval examples, embedding projections and separation, the prior heatmap and search."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from osdpm_lib import explain, figures, priors  # noqa: E402
from osdpm_lib.cache import Normalizer  # noqa: E402
from osdpm_lib.models import OSDPM, build_clip, preprocess_config, tokenizer_for  # noqa: E402


@dataclass(frozen=True)
class Rec:
    filename: str
    captions: tuple[str, ...]
    scene: str | None = None


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny():
    """Random-init osdpm-tiny-vit (64 px, 8x8 patch grid) in the three variants, plus helpers."""
    torch.manual_seed(0)
    clip = build_clip("osdpm-tiny-vit")
    tok = tokenizer_for("osdpm-tiny-vit")
    pre = preprocess_config(clip)
    models = {"clip": OSDPM(clip, "clip").eval()}
    torch.manual_seed(1)
    clip2 = build_clip("osdpm-tiny-vit")
    dapn = OSDPM(clip2, "clip+dapn").eval()
    with torch.no_grad():  # a non-zero DAPN projection, so that DAPN contributes to the embedding
        dapn.dapn.out.weight.normal_(0, 0.05)
    models["clip+dapn"] = dapn
    images = torch.randint(0, 256, (3, 3, pre["image_size"], pre["image_size"]), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    text = clip.encode_text(tok(["a plane near a runway .", "many cars in a parking lot .", "a river ."]),
                            normalize=True).detach()
    return {"models": models, "tokenizer": tok, "norm": Normalizer(pre["mean"], pre["std"]), "images": images,
            "text": text, "clip": clip}


# ------------------------------------------------------------------------------------ Grad-CAM / DAPN
@pytest.mark.parametrize("variant", ["clip", "clip+dapn"])
def test_gradcam_shape_and_non_negative(tiny, variant):
    maps = explain.gradcam(tiny["models"][variant], tiny["images"], tiny["text"], tiny["norm"])
    assert maps.shape == (3, 8, 8)
    assert maps.dtype == np.float32
    assert (maps >= 0).all()
    assert np.isfinite(maps).all()
    assert maps.max() > 0  # a random model still has some positive evidence somewhere


def test_gradcam_batch_equals_single_images(tiny):
    model = tiny["models"]["clip+dapn"]
    batch = explain.gradcam(model, tiny["images"], tiny["text"], tiny["norm"], batch_size=3)
    single = np.concatenate([explain.gradcam(model, tiny["images"][i:i + 1], tiny["text"][i:i + 1], tiny["norm"])
                             for i in range(3)])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-7)


def test_gradcam_post_ln_grid_has_no_gradient_for_class_token_vit(tiny):
    """Why target='auto' uses the last block's input: the class-token embedding ignores the output grid."""
    maps = explain.gradcam(tiny["models"]["clip"], tiny["images"], tiny["text"], tiny["norm"], target="grid")
    assert maps.shape == (3, 8, 8) and not maps.any()
    # with DAPN the grid feeds the embedding, so the grid target is informative there
    dapn = explain.gradcam(tiny["models"]["clip+dapn"], tiny["images"], tiny["text"], tiny["norm"], target="grid")
    assert dapn.any() and (dapn >= 0).all()
    with pytest.raises(ValueError, match="target"):
        explain.gradcam(tiny["models"]["clip"], tiny["images"], tiny["text"], tiny["norm"], target="layer9")


def test_gradcam_checks_text_count(tiny):
    with pytest.raises(ValueError, match="2 text embeddings for 3 images"):
        explain.gradcam(tiny["models"]["clip"], tiny["images"], tiny["text"][:2], tiny["norm"])


def test_dapn_maps(tiny):
    maps = explain.dapn_maps(tiny["models"]["clip+dapn"], tiny["images"], tiny["norm"], batch_size=2)
    assert set(maps) == {"spatial", "saliency"}
    assert maps["spatial"].shape == maps["saliency"].shape == (3, 8, 8)
    np.testing.assert_allclose(maps["spatial"].sum(axis=(1, 2)), 1.0, rtol=1e-5)  # softmax over locations
    assert ((maps["saliency"] > 0) & (maps["saliency"] < 1)).all()              # sigmoid
    with pytest.raises(ValueError, match="no DAPN maps"):
        explain.dapn_maps(tiny["models"]["clip"], tiny["images"], tiny["norm"])


def test_first_caption_features():
    texts = np.arange(10, dtype=np.float32).reshape(5, 2)
    ci = np.array([0, 0, 1, 2, 2])
    np.testing.assert_array_equal(explain.first_caption_features(texts, ci), texts[[0, 2, 3]])
    np.testing.assert_array_equal(explain.first_caption_index(ci), [0, 2, 3])
    with pytest.raises(ValueError, match="without captions"):
        explain.first_caption_features(texts, ci, n_images=4)


# ------------------------------------------------------------------------------------ pointing game
def _hot(row: int, col: int, grid: int = 8) -> np.ndarray:
    m = np.zeros((1, grid, grid), dtype=np.float32)
    m[0, row, col] = 1.0
    return m


def test_map_peak_lies_in_the_hot_cell():
    (x, y), = explain.map_peaks(_hot(2, 1), 64)      # cell row 2, col 1 -> pixels x 8..15, y 16..23
    assert 8 <= x < 16 and 16 <= y < 24
    assert explain.map_peaks(np.ones((1, 8, 8)), 64).tolist() == [[-1, -1]]  # constant: no peak


def test_pointing_game_hit_and_miss():
    maps = np.concatenate([_hot(2, 1), _hot(2, 1), _hot(6, 6), np.zeros((1, 8, 8), np.float32)])
    boxes = [np.array([[4, 12, 20, 28]]),                     # around the peak: hit
             np.array([[40, 40, 60, 60], [0, 0, 4, 4]]),     # elsewhere: miss
             np.zeros((0, 4)),                                # no target: not scored
             np.array([[0, 0, 64, 64]])]                      # constant map: a miss even on the full image
    hits = explain.point_hits(explain.map_peaks(maps, 64), boxes)
    assert hits[0] == 1.0 and hits[1] == 0.0 and np.isnan(hits[2]) and hits[3] == 0.0
    table = explain.pointing_game({("m", "hot"): maps}, boxes, 64)
    assert list(table.columns) == ["variant", "map", "n_images", "hits", "accuracy", "n_small", "accuracy_small",
                                   "n_flat"]
    row = table.iloc[0]
    assert (row["n_images"], row["hits"], row["n_flat"]) == (3, 1, 1)
    assert row["accuracy"] == pytest.approx(100 / 3)
    assert (row["n_small"], row["accuracy_small"]) == (2, 50.0)  # images 0 and 1 have small targets
    base = table.set_index("map")
    # center pixel (32, 32): only inside the full-image box
    assert base.loc["center", "accuracy"] == pytest.approx(100 / 3)
    cov = np.mean([16 * 16 / 64 ** 2, (400 + 16) / 64 ** 2, 1.0])
    assert base.loc["random (expected)", "accuracy"] == pytest.approx(100 * cov)
    assert base.loc["center", "accuracy_small"] == 0.0
    assert base.loc["random (expected)", "accuracy_small"] == pytest.approx(100 * (256 + 416) / 2 / 64 ** 2)
    assert np.isnan(base.loc["random (expected)", "hits"])


def test_box_exclusive_edges_and_tolerance():
    peaks = np.array([[20, 10]])
    assert explain.point_hits(peaks, [np.array([[0, 0, 20, 20]])])[0] == 0.0  # x1 exclusive
    assert explain.point_hits(peaks, [np.array([[0, 0, 20, 20]])], tolerance=1)[0] == 1.0
    assert explain.point_hits(peaks, [np.array([[20, 10, 21, 11]])])[0] == 1.0


def test_pointing_game_checks_counts():
    with pytest.raises(ValueError, match="2 maps for 1 images"):
        explain.pointing_game({("a", "b"): np.zeros((2, 8, 8))}, [np.zeros((0, 4))], 64)


def test_target_boxes_follow_caption_categories():
    try:
        priors.check_wordnet()
    except priors.WordNetMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    gt = {"image_size": 64, "images": {
        "a.jpg": {"scene": "airport", "boxes": [{"category": "airplane", "box": [1, 2, 3, 4]},
                                                {"category": "car", "box": [5, 6, 7, 8]},
                                                {"category": "runway", "box": [0, 10, 64, 20]}]},
        "b.jpg": {"scene": "river", "boxes": [{"category": "river", "box": [0, 0, 10, 10]}]}}}
    recs = [Rec("a.jpg", ("two planes are parked .", "a runway is beside the planes .")),
            Rec("b.jpg", ("a green meadow .",)), Rec("c.jpg", ("a plane .",), scene="airport")]
    boxes = explain.target_boxes(recs, gt)
    assert boxes[0].tolist() == [[1, 2, 3, 4], [0, 10, 64, 20]]   # the car is not named
    assert boxes[1].shape == (0, 4) and boxes[2].shape == (0, 4)
    assert explain.scenes_for(recs, gt) == ["airport", "river", "airport"]


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
    idx, sims = figures.topk_image_to_text(enc["clip"], 2, k=5)
    full = enc["clip"]["texts"] @ enc["clip"]["images"][2]
    assert idx.tolist() == np.argsort(-full, kind="stable")[:5].tolist()
    assert (np.diff(sims) <= 0).all()
    idx, sims = figures.topk_text_to_image(enc["clip"], 3, k=4)
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
    tab = figures.separation_table(stages, scenes)
    assert list(tab.columns) == ["model", "stage", "silhouette", "n_images", "n_scenes"]
    assert tab[["model", "stage"]].values.tolist() == [["clip", "start"], ["clip", "end"], ["osdpm", "start"],
                                                       ["osdpm", "mid"], ["osdpm", "end"]]
    sil = tab.set_index(["model", "stage"])["silhouette"]
    assert sil[("clip", "end")] > 0.9 > abs(sil[("clip", "start")])
    assert (tab["n_images"] == 24).all() and (tab["n_scenes"] == 3).all()
    # images without a scene are left out; every image its own scene: undefined
    tab2 = figures.separation_table({"m": {"end": x}}, scenes[:-1] + [None])
    assert tab2.loc[0, "n_images"] == 23
    assert np.isnan(figures.separation_table({"m": {"end": x[:3]}}, ["a", "b", "c"]).loc[0, "silhouette"])


def test_embedding_frame_and_grid():
    x, scenes = _clusters(n_per=6)
    stages = {"clip": {"start": x[::-1].copy(), "end": x}}
    frame = figures.embedding_frame(stages, scenes, methods=("tsne",), seed=0)
    assert list(frame.columns) == ["model", "stage", "method", "index", "x", "y", "scene"]
    assert len(frame) == 2 * len(x)
    again = figures.embedding_frame(stages, scenes, methods=("tsne",), seed=0)
    pd.testing.assert_frame_equal(frame, again)  # fixed random_state
    fig = figures.embedding_grid(frame, figures.separation_table(stages, scenes))
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    assert "silhouette" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="unknown projection"):
        figures.project(x, "pca")


def test_load_stages(tmp_path):
    np.savez(tmp_path / "embeddings.npz", start=np.zeros((2, 3)), end=np.ones((2, 3)), mid=np.ones((2, 3)))
    assert list(figures.load_stages(tmp_path)) == ["start", "mid", "end"]


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
    idx, sims = figures.search("anything", _FixedText([2.0, 0.0]), lambda xs: torch.zeros(len(xs), 3), gallery,
                               k=3)
    assert idx.tolist() == [0, 4, 2]
    np.testing.assert_allclose(sims, [1.0, 0.8, 0.6], rtol=1e-6)


def test_search_with_a_tiny_model(tiny):
    model, tok = tiny["models"]["clip"], tiny["tokenizer"]
    with torch.no_grad():
        gallery = model.encode_image(tiny["norm"](tiny["images"])).numpy()
        q = model.encode_text(tok(["a plane near a runway ."])).numpy()[0]
    idx, sims = figures.search("a plane near a runway .", model, tok, gallery, k=3)
    assert sorted(idx.tolist()) == [0, 1, 2]
    assert idx.tolist() == np.argsort(-(gallery @ q), kind="stable").tolist()
    np.testing.assert_allclose(sims, np.sort(gallery @ q)[::-1], rtol=1e-5)
    fig = figures.search_figure(tiny["images"], idx, sims, "a plane", titles=["a", "b", "c"],
                                relevant=[True, False, True])
    assert isinstance(fig, matplotlib.figure.Figure)
