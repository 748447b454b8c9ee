"""The originals' training protocol for the baselines (issue 27): every (image, caption) pair once per epoch
(``epoch_unit="caption"``) with two captions of one image in a batch left out of each other's negatives, the
originals' augmentation where the backbone sees pixels, the run identity of the new fields, the profiles, the
per-system learning rates the profiles read, and tuning runs that never score the test split."""

from __future__ import annotations

import json

import pytest
import torch

from osdpm_lib import synth
from osdpm_lib.baselines import SYSTEMS
from osdpm_lib.baselines import profiles as bprofiles
from osdpm_lib.baselines.camp import camp_bce
from osdpm_lib.baselines.hvsa import difficulty_weighted_loss
from osdpm_lib.baselines.scoring import same_image, triplet_loss
from osdpm_lib.cache import resize_rotate_crop

DIMS = dict(channels=16, low_channels=8, grid=4, low_grid=8, vocab_size=30, dim=16, word_dim=8,
            stage_channels=(4, 8, 16, 32), stage_grids=(16, 8, 4, 2))


def test_same_image_marks_only_the_off_diagonal_repeats():
    assert same_image(torch.tensor([3, 1, 2])) is None            # one caption per image: nothing changes
    m = same_image(torch.tensor([0, 1, 0, 2, 0]))
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in [(0, 2), (0, 4), (2, 4)]:
        expected[i, j] = expected[j, i] = True
    assert torch.equal(m, expected)


LOSSES = {
    "triplet-hardest": lambda s, p: triplet_loss(s, 0.2, True, p),
    "triplet-sum": lambda s, p: triplet_loss(s, 0.2, False, p),
    "camp-bce-hardest": lambda s, p: camp_bce(s.sigmoid(), True, positives=p),
    "camp-bce-mean": lambda s, p: camp_bce(s.sigmoid(), False, positives=p),
    "hvsa": lambda s, p: difficulty_weighted_loss(s, 0.2, positives=p),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_leave_two_captions_of_one_image_out_of_the_negatives(name):
    # images [0, 1, 0, 2]: rows 0 and 2 are one image, so (0, 2) and (2, 0) match; the loss must not depend on them
    loss = LOSSES[name]
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 4, generator=g) * 0.5
    pos = same_image(torch.tensor([0, 1, 0, 2]))
    high = scores.clone()
    high[0, 2] = high[2, 0] = 0.95                   # a strong "violation" if they were negatives
    assert loss(scores, pos) == pytest.approx(float(loss(high, pos)), abs=1e-6)
    assert float(loss(high, None)) != pytest.approx(float(loss(high, pos)), abs=1e-4)   # unmasked they count
    s = high.clone().requires_grad_(True)
    loss(s, pos).backward()
    assert s.grad[0, 2] == 0 and s.grad[2, 0] == 0
    # without repeats the mask is None and the loss is exactly what it was
    assert torch.equal(loss(high, same_image(torch.arange(4))), loss(high, None))


@pytest.mark.parametrize("name", ["VSE++", "VSE0", "CAMP-bce", "AMFMN-soft", "HVSA", "LW-MCR(b)"])
def test_every_system_loss_takes_the_repeats(name):
    torch.manual_seed(0)
    model = SYSTEMS[name].factory(**DIMS).train()
    n = 4
    feats = (torch.randn(n, 4, 16, 16), torch.randn(n, 8, 8, 8), torch.randn(n, 16, 4, 4), torch.randn(n, 32, 2, 2))
    feats = feats if SYSTEMS[name].all_stages else feats[1:3]
    idx = torch.tensor([0, 1, 0, 2])
    feats = tuple(f[idx] for f in feats)            # a repeated image has the same features, as in training
    tokens = torch.randint(2, 30, (n, 6))
    scores = model.score(model.encode_image(*feats), model.encode_text(tokens)).float()
    loss = model.loss(scores, max_violation=True, positives=same_image(idx))
    assert torch.isfinite(loss)
    loss.backward()                                   # HVSA: the uniformity takes image 0 once (no zero distance)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _tiny(tmp_path):
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    return run, run.prepare(data_dir, 64)


def test_caption_epochs_visit_every_pair_once_and_mask_the_repeats(tmp_path, monkeypatch):
    run, data = _tiny(tmp_path)
    from osdpm_lib.baselines.scoring import Baseline

    train = data.bundle.train
    pairs, masks = [], []
    real_pairs, real_loss = run.batch_pairs, Baseline.loss

    def spy_pairs(*a, **k):
        out = real_pairs(*a, **k)
        pairs.append(out)
        return out

    def spy_loss(self, scores, max_violation=True, positives=None):
        masks.append(positives)
        return real_loss(self, scores, max_violation, positives)

    monkeypatch.setattr(run, "batch_pairs", spy_pairs)
    monkeypatch.setattr(Baseline, "loss", spy_loss)
    bs = 8
    cfg = run.BaselineConfig("VSE++", epochs=1, batch_size=bs, dim=16, word_dim=8, epoch_unit="caption")
    res = run.train_system(cfg, data, tmp_path / "caption")
    n_caps, n_img = len(train.captions), len(train.records)
    assert n_caps > n_img and len(pairs) == n_caps // bs            # every caption once (the last partial batch off)
    caps = torch.cat([c for _, c in pairs])
    assert len(set(caps.tolist())) == len(caps) == (n_caps // bs) * bs
    for (idx, cap), mask in zip(pairs, masks):
        assert torch.equal(idx, train.caption_image[cap])
        expected = same_image(idx)
        assert (mask is None) == (expected is None) and (mask is None or torch.equal(mask, expected))
    assert any(m is not None for m in masks)        # 8 images x 5 captions in batches of 8: repeats do occur
    assert res["history"][0]["epoch"] == 1
    # the book's protocol: one caption per image, no mask
    pairs.clear(), masks.clear()
    run.train_system(run.BaselineConfig("VSE++", epochs=1, batch_size=bs, dim=16, word_dim=8), data,
                     tmp_path / "image")
    assert len(pairs) == n_img // bs and all(m is None for m in masks)
    assert all(len(set(i.tolist())) == len(i) for i, _ in pairs)


def test_augmentation_only_where_the_backbone_sees_pixels(tmp_path, monkeypatch):
    run, data = _tiny(tmp_path)
    calls = []
    real = run.resize_rotate_crop

    def spy(x, gen, degrees=0.0, **k):
        calls.append((x.shape, degrees))
        return real(x, gen, degrees, **k)

    monkeypatch.setattr(run, "resize_rotate_crop", spy)
    small = dict(epochs=1, batch_size=8, dim=16, word_dim=8, augment=True)
    frozen = run.BaselineConfig("VSE++", **small)
    assert not frozen.augments and frozen.key() == run.BaselineConfig("VSE++", **small | {"augment": False}).key()
    run.train_system(frozen, data, tmp_path / "frozen")
    assert calls == []                               # cached features: nothing to augment
    tuned = run.BaselineConfig("VSE++", **small, finetune_backbone=True)
    assert tuned.augments
    assert tuned.key() != run.BaselineConfig("VSE++", **small | {"augment": False}, finetune_backbone=True).key()
    run.train_system(tuned, data, tmp_path / "tuned")
    n_train = len(data.bundle.train.records)
    assert len(calls) == n_train // 8 and all(d == SYSTEMS["VSE++"].rotation for _, d in calls)   # training only


def test_resize_rotate_crop_is_the_originals_transform_scaled():
    from torchvision.transforms.v2 import functional as TF

    x = torch.randint(1, 256, (4, 3, 64, 64), dtype=torch.uint8)      # no zero pixel: fill shows as 0
    g = torch.Generator().manual_seed(0)
    y = resize_rotate_crop(x, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    big = TF.resize(x, [70, 70], antialias=True)                    # 278/256 of 64 px
    for i in range(4):                                              # no rotation: a 64 px crop of the resized image
        assert any(torch.equal(y[i], big[i, :, t:t + 64, l:l + 64]) for t in range(7) for l in range(7))
    assert (y != 0).all()
    # up to 90 degrees (GaLR): black corners appear, and the draws are the generator's
    r1 = resize_rotate_crop(x, torch.Generator().manual_seed(1), 90.0)
    r2 = resize_rotate_crop(x, torch.Generator().manual_seed(1), 90.0)
    assert torch.equal(r1, r2) and (r1 == 0).all(1).any()
    assert SYSTEMS["GaLR"].rotation == 90.0 and SYSTEMS["AMFMN-soft"].rotation == 0.0


def test_profiles_train_on_the_originals_protocol_where_the_budget_allows():
    for name in ("full", "finetune", "frozen"):
        cfg = bprofiles.baseline_config(name, "VSE++")
        assert cfg.epoch_unit == "caption" and cfg.augment
    assert bprofiles.baseline_config("finetune", "VSE++").augments
    assert not bprofiles.baseline_config("full", "VSE++").augments        # frozen backbone: inert
    for name in ("default", "ci", "scratch"):
        cfg = bprofiles.baseline_config(name, "VSE++")
        assert cfg.epoch_unit == "image" and not cfg.augment
    with pytest.raises(ValueError, match="epoch_unit"):
        bprofiles.BaselineConfig("VSE++", epoch_unit="pair")


def test_profiles_read_the_chosen_learning_rates(tmp_path, monkeypatch):
    path = tmp_path / "lr.json"
    monkeypatch.setattr(bprofiles, "BASELINE_LR_FILE", path)
    assert bprofiles.chosen_lrs("full") == {}
    assert bprofiles.baseline_config("finetune", "GaLR").lr == 2e-4                 # no file: the profile's
    path.write_text(json.dumps({"finetune": {"lr": {"GaLR": 3e-3}}, "full": {"lr": {"VSE++": 3e-4}}}))
    assert bprofiles.baseline_config("finetune", "GaLR").lr == 3e-3
    assert bprofiles.baseline_config("frozen", "GaLR").lr == 3e-3                   # the same sizes, one entry
    assert bprofiles.baseline_config("finetune", "VSE++").lr == 2e-4                # no entry for it
    assert bprofiles.baseline_config("full", "VSE++").lr == 3e-4
    assert bprofiles.baseline_config("full", "VSE++", lr=1e-2).lr == 1e-2          # an override still wins
    assert bprofiles.baseline_config("default", "VSE++").lr == 1e-3


def test_a_tuning_run_never_scores_the_test_split(tmp_path, monkeypatch):
    run, data = _tiny(tmp_path)
    seen = []
    real = run.evaluate

    def spy(model, visual, split, *a, **k):
        seen.append(split is data.bundle.test)
        return real(model, visual, split, *a, **k)

    monkeypatch.setattr(run, "evaluate", spy)
    cfg = run.BaselineConfig("VSE++", epochs=1, batch_size=8, dim=16, word_dim=8)
    feats = run.frozen_features(cfg, data, {}, splits=run.SPLITS[:2])
    assert set(feats) == {"train", "val"}
    res = run.train_system(cfg, data, tmp_path / "tune", feats, score_test=False)
    assert "test" not in res and not any(seen) and not (tmp_path / "tune" / run.CONTRIB_FILE).exists()
    # not reused as a scored run: the scored one trains and scores the test split
    res2 = run.train_system(cfg, data, tmp_path / "tune")
    assert "test" in res2 and seen[-1]


def test_tests_do_not_read_the_chosen_learning_rates():
    # conftest's autouse fixture: a baseline_lr.json written by the lr study does not change what tests compute
    assert bprofiles.BASELINE_LR_FILE.name == "no-baseline_lr.json" and not bprofiles.BASELINE_LR_FILE.exists()
    assert bprofiles.chosen_lrs("full") == {}


def test_rows_say_where_the_protocol_differs_from_the_originals():
    from osdpm_lib.baselines.run import protocol_text

    quick = protocol_text(bprofiles.baseline_config("default", "GaLR"))
    assert "one random caption per training image per epoch" in quick and "no augmentation" in quick
    assert "computed once" in quick                                       # frozen backbone: cached features
    full = protocol_text(bprofiles.baseline_config("full", "GaLR"))
    assert "one random caption" not in full and "no augmentation" in full  # caption epochs; frozen: inert
    assert protocol_text(bprofiles.baseline_config("finetune", "GaLR")) == ""    # the originals' protocol
    no_aug = protocol_text(bprofiles.baseline_config("finetune", "GaLR", augment=False))
    assert "no augmentation" in no_aug and "computed once" not in no_aug


def test_early_stopping_selects_an_epoch_below_the_last(tmp_path, monkeypatch):
    run, data = _tiny(tmp_path)
    val_rsums = iter([10.0, 20.0, 15.0, 14.0, 13.0, 99.0, 99.0])     # best at epoch 2, no gain for 3 epochs

    def scripted(model, visual, split, cfg, **kw):
        return {"plain": {"rsum": next(val_rsums), "mr": 0.0}}, None

    monkeypatch.setattr(run, "evaluate", scripted)
    small = dict(epochs=7, batch_size=8, dim=16, word_dim=8)
    cfg = run.BaselineConfig("VSE++", patience=3, **small)
    res = run.train_system(cfg, data, tmp_path / "stopped", score_test=False)
    assert res["best_epoch"] == 2 and res["epochs_run"] == 5 and res["best_val_rsum"] == 20.0
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4, 5]   # stopped: epochs 6-7 never ran
    # patience enters the run's identity only when set (the runs made before it keep their keys)
    assert cfg.key() != run.BaselineConfig("VSE++", **small).key()
    assert run.BaselineConfig("VSE++", patience=None, **small).key() == run.BaselineConfig("VSE++", **small).key()
    assert bprofiles.baseline_config("full", "VSE++").patience == 5
    assert bprofiles.baseline_config("default", "VSE++").patience is None


def test_notebook_08_list_parameters():
    from osdpm_lib.baselines.run import list_parameter

    def parse_seeds(value):
        return list_parameter("seeds", value, int)

    assert parse_seeds(0) == [0]                      # -p seeds 0 arrives as the int 0, not "no seeds"
    assert parse_seeds("0,1, 2") == [0, 1, 2] and parse_seeds([1, 2]) == [1, 2]
    assert parse_seeds("") is None and parse_seeds(None) is None
    assert list_parameter("systems", "VSE++, LW-MCR(b)") == ["VSE++", "LW-MCR(b)"]
    assert list_parameter("systems", "") is None and list_parameter("systems", None) is None
