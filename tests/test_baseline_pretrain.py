"""Tests of the baselines' offline "ImageNet weights" (osdpm_lib.baselines.pretrain): tagging targets, the macro AP
that selects the epoch, the tagger's selection, the export and the loading of shipped weights; and the loss
warm-up of the baselines' training."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from osdpm_lib import checkpoints, synth
from osdpm_lib.baselines import pretrain as bp
from osdpm_lib.baselines.encoders import GridBackbone, shipped_weights
from osdpm_lib.download import sha256_file


def test_tag_targets_mark_the_categories_any_caption_names():
    recs = [SimpleNamespace(filename="a.jpg", captions=["many planes near a runway", "a runway"]),
            SimpleNamespace(filename="b.jpg", captions=["green trees around a pond"]),
            SimpleNamespace(filename="c.jpg", captions=["nothing to see"])]
    y, cats = bp.tag_targets(recs)
    named = {cats[k] for k in np.flatnonzero(y[0])}
    assert y.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
    assert {"airplane", "runway"} <= named and "tree" not in named
    assert "tree" in {cats[k] for k in np.flatnonzero(y[1])}
    assert y[2].sum() == 0


def test_macro_ap_skips_categories_without_a_positive_and_ranks_scores():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    perfect = y.copy()                                # positives above negatives in every category
    assert bp.macro_ap(y, perfect) == pytest.approx(1.0)
    # category 2 has no positive: it is left out (a constant score there changes nothing)
    assert bp.macro_ap(y, np.c_[perfect[:, :2], np.ones(4)]) == pytest.approx(1.0)
    reversed_ = 1.0 - y
    assert bp.macro_ap(y, reversed_) < 0.6
    assert np.isnan(bp.macro_ap(np.zeros((3, 2)), np.zeros((3, 2))))


def _tiny_tagging(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    y = (torch.rand(n, 3, generator=g) < 0.5).float().numpy()
    y[0] = 1.0
    y[1] = 0.0      # every category has a positive and a negative
    return images, y


def test_tagger_keeps_the_first_epoch_of_the_best_validation_ap(monkeypatch):
    images, y = _tiny_tagging()
    aps = iter([0.3, 0.5, 0.5, 0.2])        # validation AP per epoch, with a tie at the top
    scored = []

    def fake_ap(targets, scores):
        scored.append(scores.copy())
        return next(aps)

    monkeypatch.setattr(bp, "macro_ap", fake_ap)
    model, history, epoch = bp.train_tagger(images[:16], y[:16], images[16:], y[16:],
                                            {"epochs": 4, "batch_size": 8}, log=lambda *_: None)
    assert epoch == 2 and [h["val_macro_ap"] for h in history] == [0.3, 0.5, 0.5, 0.2]
    assert all(h["loss"] > 0 for h in history)
    # the returned model is the one of epoch 2: it scores validation as it did then
    from osdpm_lib.baselines.encoders import IMAGENET_MEAN, IMAGENET_STD
    from osdpm_lib.cache import Normalizer
    again = bp._scores(model, images[16:], Normalizer(IMAGENET_MEAN, IMAGENET_STD))
    np.testing.assert_allclose(again, scored[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again, scored[3])


def test_pretrain_backbone_exports_a_loadable_grid_backbone(tmp_path):
    corpus = {"n_images": 40, "seed": 5, "image_size": 64, "n_val": 10, "n_test": 6}
    rec = bp.pretrain_backbone(tmp_path / "corpus", tmp_path / "w", corpus, {"epochs": 1, "batch_size": 16},
                               progress=False)
    out = tmp_path / "w" / "resnet18_synthpre.safetensors"
    assert rec["file"] == out.name and rec["sha256"] == sha256_file(out)
    assert json.loads(out.with_suffix(".json").read_text())["sha256"] == rec["sha256"]
    assert rec["train_images"] == 24 and rec["val_images"] == 10 and rec["selected_epoch"] == 1
    state = checkpoints.load(out)
    own = GridBackbone("resnet18", 64).state_dict()
    assert set(state) == set(own) and all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


@pytest.mark.skipif(shipped_weights("resnet18", "synthpre") is None, reason="resnet18_synthpre not built")
def test_shipped_weights_load_into_the_64px_backbone_and_refuse_224px():
    path = shipped_weights("resnet18", "synthpre")
    state = checkpoints.load(path)
    bb = GridBackbone("resnet18", 64, "synthpre")
    for k, v in bb.state_dict().items():
        torch.testing.assert_close(v, state[k].to(v.dtype))
    assert not torch.equal(bb.stem[0].weight, GridBackbone("resnet18", 64).stem[0].weight)
    with pytest.raises(checkpoints.CheckpointError, match="IMAGENET1K_V1"):
        GridBackbone("resnet18", 224, "synthpre")


def test_unknown_shipped_tag_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="resnet18_nosuchtag"):
        GridBackbone("resnet18", 64, "nosuchtag")


def test_warmup_epochs_train_on_all_negatives_then_the_hardest(tmp_path, monkeypatch):
    from osdpm_lib.baselines import run
    from osdpm_lib.baselines.scoring import Baseline

    data_dir = synth.generate(tmp_path / "emb", n_images=40, seed=0, image_size=64, n_val=8, n_test=8)
    data = run.prepare(data_dir.parent, 64)
    flags = []
    real = Baseline.loss

    def spy(self, scores, max_violation=True):
        flags.append(max_violation)
        return real(self, scores, max_violation)

    monkeypatch.setattr(Baseline, "loss", spy)
    cfg = run.BaselineConfig("VSE++", epochs=3, warmup_epochs=1, batch_size=8, dim=16, word_dim=8)
    run.train_system(cfg, data, tmp_path / "run")
    per_epoch = len(flags) // 3
    assert per_epoch == 24 // 8 and flags == [False] * per_epoch + [True] * (2 * per_epoch)
