"""Tests for the attention analysis (osdpm_lib.explain): Grad-CAM and DAPN maps on a tiny random model
(the ``tiny_models`` fixture of conftest.py), all maps of several variants, the pointing game on hand-made
maps and boxes, and the target boxes read from a ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from osdpm_lib import explain, priors
from osdpm_lib.synth import groundtruth


@dataclass(frozen=True)
class Rec:
    filename: str
    captions: tuple[str, ...]
    scene: str | None = None


# ------------------------------------------------------------------------------------ Grad-CAM / DAPN
@pytest.mark.parametrize("variant", ["clip", "clip+dapn"])
def test_gradcam_shape_and_non_negative(tiny_models, variant):
    maps = explain.gradcam(tiny_models["models"][variant], tiny_models["images"], tiny_models["text"], tiny_models["norm"])
    assert maps.shape == (3, 8, 8)
    assert maps.dtype == np.float32
    assert (maps >= 0).all()
    assert np.isfinite(maps).all()
    assert maps.max() > 0  # a random model still has some positive evidence somewhere


def test_gradcam_batch_equals_single_images(tiny_models):
    model = tiny_models["models"]["clip+dapn"]
    batch = explain.gradcam(model, tiny_models["images"], tiny_models["text"], tiny_models["norm"], batch_size=3)
    single = np.concatenate([explain.gradcam(model, tiny_models["images"][i:i + 1], tiny_models["text"][i:i + 1], tiny_models["norm"])
                             for i in range(3)])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-7)


def test_gradcam_post_ln_grid_has_no_gradient_for_class_token_vit(tiny_models):
    """Why target='auto' uses the last block's input: the class-token embedding ignores the output grid."""
    maps = explain.gradcam(tiny_models["models"]["clip"], tiny_models["images"], tiny_models["text"], tiny_models["norm"], target="grid")
    assert maps.shape == (3, 8, 8) and not maps.any()
    # with DAPN the grid feeds the embedding, so the grid target is informative there
    dapn = explain.gradcam(tiny_models["models"]["clip+dapn"], tiny_models["images"], tiny_models["text"], tiny_models["norm"], target="grid")
    assert dapn.any() and (dapn >= 0).all()
    with pytest.raises(ValueError, match="target"):
        explain.gradcam(tiny_models["models"]["clip"], tiny_models["images"], tiny_models["text"], tiny_models["norm"], target="layer9")


def test_gradcam_checks_text_count(tiny_models):
    with pytest.raises(ValueError, match="2 text embeddings for 3 images"):
        explain.gradcam(tiny_models["models"]["clip"], tiny_models["images"], tiny_models["text"][:2], tiny_models["norm"])


def test_dapn_maps(tiny_models):
    maps = explain.dapn_maps(tiny_models["models"]["clip+dapn"], tiny_models["images"], tiny_models["norm"], batch_size=2)
    assert set(maps) == {"spatial", "saliency"}
    assert maps["spatial"].shape == maps["saliency"].shape == (3, 8, 8)
    np.testing.assert_allclose(maps["spatial"].sum(axis=(1, 2)), 1.0, rtol=1e-5)  # softmax over locations
    assert ((maps["saliency"] > 0) & (maps["saliency"] < 1)).all()              # sigmoid
    with pytest.raises(ValueError, match="no DAPN maps"):
        explain.dapn_maps(tiny_models["models"]["clip"], tiny_models["images"], tiny_models["norm"])


def test_attention_maps_of_every_variant(tiny_models):
    models, images, norm = tiny_models["models"], tiny_models["images"], tiny_models["norm"]
    texts = np.repeat(tiny_models["text"].numpy(), 2, axis=0)[::-1].copy()   # two captions per image
    ci = np.repeat(np.arange(3), 2)[::-1].copy()                              # image 2's captions first
    encoded = {v: {"texts": texts, "caption_image": ci} for v in models}
    maps = explain.attention_maps(models, encoded, images, norm)
    assert list(maps) == [("clip", "Grad-CAM"), ("clip+dapn", "DAPN spatial"), ("clip+dapn", "DAPN saliency"),
                          ("clip+dapn", "Grad-CAM")]
    assert all(m.shape == (3, 8, 8) for m in maps.values())
    first = explain.first_caption_features(texts, ci, 3)
    np.testing.assert_array_equal(first, tiny_models["text"].numpy())          # each image its own text
    for v, model in models.items():
        np.testing.assert_allclose(maps[(v, "Grad-CAM")], explain.gradcam(model, images, first, norm), rtol=1e-5)
    d = explain.dapn_maps(models["clip+dapn"], images, norm)
    np.testing.assert_array_equal(maps[("clip+dapn", "DAPN spatial")], d["spatial"])
    np.testing.assert_array_equal(maps[("clip+dapn", "DAPN saliency")], d["saliency"])
    with pytest.raises(ValueError, match="without captions"):   # an image without a caption has no text
        explain.attention_maps(models, {v: {"texts": texts[:2], "caption_image": ci[:2]} for v in models}, images, norm)


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
    assert groundtruth.scenes_for(recs, gt) == ["airport", "river", "airport"]
