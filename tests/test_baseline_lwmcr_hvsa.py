"""Tests of LW-MCR and HVSA (osdpm_lib.baselines.lwmcr, .hvsa): HVSA's uniformity term, its curriculum weights and
difficulty-weighted loss on tiny hand-computed cases (numpy float64), KEA's tied memories; LW-MCR's grouped text
convolution (shape, grouping), its distillation term on a hand-computed case; LW-MCR(u)'s contrastive loss on a
hand-computed case, its unlabeled stage (only the image encoder learns) and one run of it; one training step of
each system; LW-MCR(d) trained against its teacher under the book's protocol; the registration, the run keys of the
other systems (unchanged by LW-MCR(u)'s fields) and the rows' texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from osdpm_lib import synth
from osdpm_lib.baselines import OPEN, SYSTEMS, score_matrix
from osdpm_lib.baselines import profiles as bprofiles
from osdpm_lib.baselines.hvsa import HVSA, KEA, difficulty_weighted_loss, difficulty_weights, uniformity
from osdpm_lib.baselines.lwmcr import (GroupConvText, LWMCR, channel_shuffle, contrastive_loss, contrastive_view,
                                       distill_loss, pretrain_unlabeled)

from test_baselines import DIMS, _features, _tokens  # noqa: E402  (the same tiny inputs)

NEW = ("LW-MCR(b)", "LW-MCR(d)", "LW-MCR(u)", "HVSA")


# ------------------------------------------------------------------------------------------------ HVSA
def test_hvsa_uniformity_on_a_hand_computed_case():
    # three unit vectors: e1, e2 and -e1 (the middle one given unnormalised: the term normalises)
    x = np.array([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    # squared distances of the pairs (0,1), (0,2), (1,2): 2, 4, 2
    t = 2.0
    mean = (np.exp(-t * 2) + np.exp(-t * 4) + np.exp(-t * 2)) / 3
    # (rel 1e-7: l2norm's eps of 1e-8 on the norms)
    assert float(uniformity(torch.tensor(x), t)) == pytest.approx(mean, rel=1e-7)               # the code's
    assert float(uniformity(torch.tensor(x), t, log=True)) == pytest.approx(np.log(mean), rel=1e-7)   # W&I's
    # lower is more uniform: two equal vectors are the least uniform pair
    assert float(uniformity(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))) == pytest.approx(1.0)
    assert float(uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(np.exp(-8.0))


def test_hvsa_curriculum_weighs_easy_pairs_above_hard_ones():
    cost = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0])            # from easy (already separated) to hard
    w = difficulty_weights(cost, beta=0.5).numpy()
    np.testing.assert_allclose(w, np.exp(-0.5 * cost.numpy()), rtol=1e-6)
    assert w[0] == 1.0 and (np.diff(w) < 0).all()            # strictly decreasing with the difficulty


def test_hvsa_difficulty_weighted_loss_on_a_hand_computed_case():
    s = np.array([[0.9, 0.8, 0.1],
                  [0.45, 0.5, 0.6],
                  [0.0, 0.1, 0.7]])
    # hinges 0.2 + s - diag, positives excluded: caption side (rows) 0.1 | 0.15, 0.3 | -; image side (cols) 0.5, 0.1
    costs = [0.1, 0.15, 0.3, 0.5, 0.1]
    want = sum(c * np.exp(-0.5 * c) for c in costs) / 9
    assert float(difficulty_weighted_loss(torch.tensor(s), 0.2, 0.5)) == pytest.approx(want, rel=1e-12)
    # the curriculum's weighting: below the plain sum of the hinges, and equal to it at beta = 0
    assert want < sum(costs) / 9
    assert float(difficulty_weighted_loss(torch.tensor(s), 0.2, 0.0)) == pytest.approx(sum(costs) / 9)


def test_hvsa_kea_memories_are_one_tied_parameter_and_keep_the_shape():
    torch.manual_seed(0)
    kea = KEA(16, units=8).eval()
    assert sum(p.shape == (8, 16) for p in kea.parameters()) == 1          # M_k; M_v is its transpose
    x = torch.randn(2, 16, 4, 4)
    y = kea(x)
    assert y.shape == x.shape and (y >= 0).all()                            # residual + ReLU
    # the attention over the cells renormalised over the units: each cell's weights sum to 1 over the units
    h = kea.conv1(x).view(2, 16, 16)
    a = torch.softmax(kea.memory @ h, dim=-1)
    a = a / (1e-9 + a.sum(1, keepdim=True))
    np.testing.assert_allclose(a.sum(1).detach().numpy(), 1.0, rtol=1e-6)


def test_hvsa_loss_adds_the_uniformity_of_the_batch_images():
    torch.manual_seed(0)
    model = HVSA(**DIMS).train()
    low, high = _features(6)
    img, txt = model.encode_image(low, high), model.encode_text(_tokens(6))
    scores = model.score(img, txt)
    kept = model._images
    loss = model.loss(scores)
    align = difficulty_weighted_loss(scores, 0.2, 0.5)
    unif = uniformity(kept, 2.0)
    w = torch.softmax(model.weight_loss.linear(torch.stack([align, unif])), 0)
    assert float(loss.detach()) == pytest.approx(float((w[0] * align + w[1] * unif).detach()), rel=1e-6)
    assert model._images is None                                            # used once
    assert float(model.loss(scores).detach()) == pytest.approx(float(align.detach()))         # no images kept: the hinges alone


# ---------------------------------------------------------------------------------------------- LW-MCR
def test_lwmcr_group_conv_text_shape_and_grouping():
    torch.manual_seed(0)
    enc = GroupConvText(vocab_size=30, word_dim=8, dim=16, groups=4)
    assert enc.conv1.weight.shape == (16, 2, 3) and enc.conv2.weight.shape == (16, 4, 3)   # in/groups channels
    assert enc(_tokens(5)).shape == (5, 16)
    # grouping: conv1's output group g (channels 4g..4g+3) reads only input channels 2g, 2g+1
    x = torch.randn(1, 8, 5, requires_grad=True)
    enc.conv1(x)[0, 4:8].sum().backward()                                   # output group 1
    touched = (x.grad[0].abs().sum(1) > 0).numpy()
    assert list(np.flatnonzero(touched)) == [2, 3]
    with pytest.raises(ValueError, match="multiples of groups"):
        GroupConvText(30, 6, 16, groups=4)


def test_lwmcr_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1)                                     # groups of 2: (0, 1, 2) (3, 4, 5)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_lwmcr_text_ignores_padding():
    torch.manual_seed(0)
    enc = GroupConvText(30, 8, 16).eval()
    tok = torch.tensor([[5, 6, 7, 0, 0]])
    np.testing.assert_allclose(enc(tok).detach().numpy(), enc(tok[:, :3]).detach().numpy(), atol=1e-6)


def test_lwmcr_distillation_on_a_hand_computed_case():
    s = torch.tensor([[0.9, 0.1], [0.3, 0.5]], dtype=torch.float64)
    t = torch.tensor([[0.7, 0.2], [0.3, 0.9]], dtype=torch.float64)
    assert float(distill_loss(s, t)) == pytest.approx(0.2 ** 2 + 0.1 ** 2 + 0.0 + 0.4 ** 2)
    # the student's loss: the summed hinge plus the distillation term (weight 1), only with a teacher
    model = LWMCR(**DIMS, distill=True)
    plain = float(model.loss(s.float(), max_violation=False))
    assert float(model.loss(s.float(), max_violation=False, teacher=t.float())) == pytest.approx(plain + 0.21)
    assert model.loss_inputs(torch.arange(2), torch.arange(2)) == {}            # no teacher set: nothing
    model.teacher_scores = lambda i, c: t.float()
    assert torch.equal(model.loss_inputs(torch.arange(2), torch.arange(2))["teacher"], t.float())
    assert LWMCR(**DIMS).loss_inputs(torch.arange(2), torch.arange(2)) == {}    # LW-MCR(b) never distils
    # the gradient pulls the student's scores toward the teacher's
    s2 = s.clone().requires_grad_(True)
    distill_loss(s2, t).backward()
    np.testing.assert_allclose(s2.grad.numpy(), 2 * (s - t).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- both
@pytest.mark.parametrize("name", NEW)
def test_one_training_step_and_a_score_matrix(name):
    torch.manual_seed(0)
    model = SYSTEMS[name].factory(**DIMS).train()
    feats, tok = _features(6, seed=1, name=name), _tokens(6, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.loss(model.score(model.encode_image(*feats), model.encode_text(tok)), max_violation=False)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        img, txt = model.encode_image(*_features(3, seed=2, name=name)), model.encode_text(_tokens(5, seed=2))
    sims = score_matrix(model, img, txt)
    assert sims.shape == (3, 5) and np.isfinite(sims).all() and (np.abs(sims) <= 1 + 1e-5).all()


def test_lwmcr_d_distils_its_teacher_under_the_protocol(tmp_path, monkeypatch):
    from osdpm_lib.baselines import lwmcr, run

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    seen = []
    real = lwmcr.distill_loss
    monkeypatch.setattr(lwmcr, "distill_loss", lambda s, t: seen.append((s.shape, t.shape, t.requires_grad))
                        or real(s, t))
    for system in ("LW-MCR(b)", "LW-MCR(d)", "HVSA"):        # LW-MCR(u): test_lwmcr_u_run_records_its_stage
        cfg = run.BaselineConfig(system, epochs=1, batch_size=8, dim=16, word_dim=8, device="cpu", precision="fp32",
                                 warmup_epochs=bprofiles.baseline_config("full", system).warmup_epochs)
        res = run.train_system(cfg, data, tmp_path / system)
        assert np.isfinite(res["test"]["rsum"]) and 0 <= res["test"]["mr"] <= 100
        assert ("teacher" in res) == (system in ("LW-MCR(d)", "LW-MCR(u)"))
    # LW-MCR(d): the teacher (AMFMN-soft) trained first in its run folder, then its one step of 8 distilled
    teacher = json.loads((tmp_path / "LW-MCR(d)" / run.TEACHER_DIR / "result.json").read_text())
    assert teacher["system"] == "AMFMN-soft" and teacher["best_epoch"] == 1
    assert seen == [(torch.Size([8, 8]), torch.Size([8, 8]), False)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_one_step_of_each_on_cuda(tmp_path):
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    unlabeled = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for system in NEW:      # auto precision: bf16 autocast on CUDA; the teacher of LW-MCR(d) there too
        cfg = run.BaselineConfig(system, epochs=1, batch_size=8, dim=16, word_dim=8, device="cuda")
        res = run.train_system(cfg, data, tmp_path / system, unlabeled=unlabeled)
        assert res["device"] == "cuda" and res["amp"] == "torch.bfloat16"
        assert np.isfinite(res["test"]["rsum"]) and 0 <= res["test"]["mr"] <= 100


def test_registration_profiles_and_rows():
    assert not set(NEW) & set(OPEN) and OPEN == ()
    for name in NEW:
        assert SYSTEMS[name].warmup_epochs is None                                  # the sum over all negatives
        assert bprofiles.baseline_config("full", name).warmup_epochs is None
        assert not SYSTEMS[name].rerank
    assert SYSTEMS["LW-MCR(d)"].teacher == "AMFMN-soft" and SYSTEMS["AMFMN-soft"].all_stages
    assert SYSTEMS["LW-MCR(d)"].all_stages and not SYSTEMS["LW-MCR(b)"].teacher
    assert SYSTEMS["LW-MCR(u)"].teacher == "AMFMN-soft" and SYSTEMS["LW-MCR(u)"].all_stages
    assert [n for n, s in SYSTEMS.items() if s.unlabeled] == ["LW-MCR(u)"]
    assert "LW-MCR(u)" in bprofiles.BASELINE_SYSTEMS and "LW-MCR(u)" not in bprofiles.BOOK_SYSTEMS
    for profile in ("full", "finetune", "frozen"):
        assert set(NEW) <= set(bprofiles.baseline_profile(profile)["systems"])
    for profile in ("default", "ci", "scratch"):                                   # the quick book's budget
        assert not set(NEW) & set(bprofiles.baseline_profile(profile)["systems"])
    for name in ("LW-MCR(b)", "LW-MCR(d)", "LW-MCR(u)"):
        text = SYSTEMS[name].replaced
        assert "no code of the model is public" in text and "re-derived from its abstract" in text
        assert "an inference" in text
    assert "no distillation" in SYSTEMS["LW-MCR(b)"].replaced
    d = SYSTEMS["LW-MCR(d)"].replaced
    assert "AMFMN-soft" in d and "unlabeled images" in d and "not done" in d and "LW-MCR(u) does it" in d
    u = SYSTEMS["LW-MCR(u)"].replaced
    for said in ("'u' as the one whose image encoder also learnt contrastively from unlabeled images",
                 "NT-Xent", "temperature 0.1", "two views per image", "rotation up to 90 degrees", "random crop",
                 "horizontal flip", "only the image encoder is pretrained", "not the text encoder",
                 "pretraining corpus", "captions ignored", "first 4,000 training images", "2 epochs",
                 "in place of the paper's unlabeled remote-sensing images", "AMFMN-soft"):
        assert said in u, said
    h = SYSTEMS["HVSA"].replaced
    assert "skip-thoughts" in h and "key-entity attention" in h and "without Wang & Isola's log" in h


# ------------------------------------------------------------------------------------------- LW-MCR(u)
def test_lwmcr_u_contrastive_loss_on_a_hand_computed_case():
    # B = 2 images, two views each, unit vectors in 2-D: view 1 = (e1, e2), view 2 = (e1, (e1 + e2) / sqrt 2)
    r = 1 / np.sqrt(2)
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    z2 = np.array([[1.0, 0.0], [r, r]])
    tau = 0.5
    z = np.concatenate([z1, z2])                                    # rows 0, 1 (view 1), 2, 3 (view 2)
    s = z @ z.T / tau
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    rows = [-s[i, positive[i]] + np.log(sum(np.exp(s[i, j]) for j in range(4) if j != i)) for i in range(4)]
    want = float(np.mean(rows))
    got = contrastive_loss(torch.tensor(z1), torch.tensor(z2), tau)
    # (rel 1e-7: l2norm's eps of 1e-8 on the norms)
    assert got.dtype == torch.float64 and float(got) == pytest.approx(want, rel=1e-7)
    # the same in float32, on unnormalised inputs (the loss normalises), and symmetric in the two views
    scaled = contrastive_loss(torch.tensor(3 * z1, dtype=torch.float32), torch.tensor(z2, dtype=torch.float32), tau)
    assert float(scaled) == pytest.approx(want, rel=1e-6)
    assert float(contrastive_loss(torch.tensor(z2), torch.tensor(z1), tau)) == pytest.approx(float(got), rel=1e-12)
    with pytest.raises(ValueError, match="two views"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(3, 3))


def test_lwmcr_u_identical_views_score_below_shuffled_ones():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    same = float(contrastive_loss(z, z.clone(), 0.1))
    shuffled = float(contrastive_loss(z, z[torch.randperm(16, generator=g)], 0.1))
    noisy = float(contrastive_loss(z, z + 0.3 * torch.randn(16, 8, generator=g), 0.1))
    assert same < noisy < shuffled
    assert shuffled > np.log(2 * 16 - 1) - 1               # no better than about chance


def test_lwmcr_u_views_are_uint8_seeded_and_differ():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = contrastive_view(x, torch.Generator().manual_seed(1))
    b = contrastive_view(x, torch.Generator().manual_seed(1))
    c = contrastive_view(x, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lwmcr_u_pretraining_changes_only_the_image_encoder():
    from osdpm_lib.baselines.encoders import IMAGENET_MEAN, IMAGENET_STD, GridBackbone
    from osdpm_lib.cache import Normalizer

    torch.manual_seed(0)
    backbone = GridBackbone("resnet18", 32, None)
    torch.manual_seed(1)
    model = LWMCR(channels=backbone.channels, low_channels=backbone.low_channels, vocab_size=30, dim=16, word_dim=8)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bb_before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    rec = pretrain_unlabeled(model, backbone, images, Normalizer(IMAGENET_MEAN, IMAGENET_STD), epochs=1,
                             batch_size=4, lr=1e-2, temperature=0.1, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)            # the global random state untouched
    assert rec["images"] == 12 and rec["epochs"] == 1 and rec["batch_size"] == 4 and rec["temperature"] == 0.1
    assert len(rec["history"]) == 1 and np.isfinite(rec["history"][0]["loss"]) and rec["seconds"] >= 0
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("image.") for k in changed)     # the text encoder is as it was
    assert {k.split(".")[1] for k in changed} >= {"convs", "fc"}
    assert all(torch.equal(bb_before[k], v) for k, v in backbone.state_dict().items())   # frozen, BN stats too
    assert not any(k.startswith("head") for k in after)                # the projection head is not kept
    # the same seed gives the same encoder
    torch.manual_seed(1)
    again = LWMCR(channels=backbone.channels, low_channels=backbone.low_channels, vocab_size=30, dim=16, word_dim=8)
    pretrain_unlabeled(again, backbone, images, Normalizer(IMAGENET_MEAN, IMAGENET_STD), epochs=1, batch_size=4,
                       lr=1e-2, temperature=0.1, seed=0)
    assert all(torch.equal(after[k], v) for k, v in again.state_dict().items())
    with pytest.raises(ValueError, match="two images"):
        pretrain_unlabeled(model, backbone, images[:1], Normalizer(IMAGENET_MEAN, IMAGENET_STD))


def test_lwmcr_u_run_records_its_stage(tmp_path, monkeypatch):
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    unlabeled = torch.randint(0, 256, (20, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    calls = []
    monkeypatch.setattr(run, "unlabeled_images", lambda *a, **k: calls.append(a) or unlabeled)
    cfg = run.BaselineConfig("LW-MCR(u)", epochs=1, batch_size=8, dim=16, word_dim=8, device="cpu", precision="fp32",
                             warmup_epochs=None, unlabeled_images=16, unlabeled_epochs=2)
    res = run.train_system(cfg, data, tmp_path / "u", unlabeled=unlabeled)
    assert calls == []                                                  # the given images, not the corpus
    assert np.isfinite(res["test"]["rsum"]) and res["teacher"]["system"] == "AMFMN-soft"
    u = res["unlabeled"]
    assert u["source"] == "given" and u["images"] == 16 and u["epochs"] == 2 and u["batch_size"] == 8
    assert [h["epoch"] for h in u["history"]] == [1, 2] and all(np.isfinite(h["loss"]) for h in u["history"])
    assert json.loads((tmp_path / "u" / "result.json").read_text())["unlabeled"] == u
    # without given images the stage reads the corpus (run.unlabeled_images) at the config's cap and image size
    seen = []
    monkeypatch.setattr(run, "pretrain_unlabeled", lambda model, bb, images, norm, **kw: seen.append((images, kw))
                        or {"images": len(images)})
    rec = run._unlabeled_stage(cfg, None, None, None)
    assert calls == [(16, 64)] and rec == {"source": str(run.CORPUS_DIR), "images": 20}
    assert seen[0][0] is unlabeled and seen[0][1] | {"amp": None} == {
        "epochs": 2, "batch_size": 8, "lr": cfg.lr, "seed": 0, "amp": None, "grad_clip": cfg.grad_clip}
    assert run._unlabeled_stage(cfg, None, None, None, unlabeled)["images"] == 16      # given: cut to the cap
    # a row whose run departs from the defaults named in its text says so
    assert "at most 16 images for 2 epochs" in run.unlabeled_text(cfg)
    assert run.unlabeled_text(run.BaselineConfig("LW-MCR(u)")) == ""
    assert run.unlabeled_text(run.BaselineConfig("LW-MCR(d)", unlabeled_images=16)) == ""


def test_lwmcr_u_fields_leave_the_other_systems_keys_unchanged():
    # the keys of these configurations before LW-MCR(u) existed (computed at commit 6332a24)
    before = {"VSE++": ("e567cc04feaa06d9", "36ec11210829a514"), "AMFMN-soft": ("be2093b53ca22eb5", "87e1a4bb1cce4752"),
              "GaLR": ("79e39c56fd5eb639", "7df125f1d0394dfd"), "LW-MCR(b)": ("33f0532ba06ebdc4", "0413878fff758fef"),
              "LW-MCR(d)": ("ed69556d0e6b2651", "eae775ff9f4566ee"), "HVSA": ("edb89b6489786063", "718edd551a581b5a")}
    full = dict(seed=1, epochs=40, patience=5, weights="synthpre", warmup_epochs=None, epoch_unit="caption",
                augment=True, device="cpu", precision="fp32")
    for system, (plain, originals) in before.items():
        assert bprofiles.BaselineConfig(system, device="cpu", precision="fp32").key() == plain
        assert bprofiles.BaselineConfig(system, **full).key() == originals
        # and the new fields do not enter them
        assert bprofiles.BaselineConfig(system, unlabeled_images=7, unlabeled_epochs=9, **full).key() == originals
    # LW-MCR(u)'s key holds them (and differs from LW-MCR(d)'s)
    u = bprofiles.BaselineConfig("LW-MCR(u)", **full)
    assert u.key() != bprofiles.BaselineConfig("LW-MCR(d)", **full).key()
    assert bprofiles.BaselineConfig("LW-MCR(u)", unlabeled_images=7, **full).key() != u.key()
    assert bprofiles.BaselineConfig("LW-MCR(u)", unlabeled_epochs=9, **full).key() != u.key()
