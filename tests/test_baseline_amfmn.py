"""AMFMN (osdpm_lib.baselines.amfmn) against its paper and code (xiaoyuan1996/AMFMN, AMFMN_Modules.py): the three
visual-guided attention equations on tiny hand-computed cases (soft, Eq. 20; fusion, Eqs. 21-22; sim, Eq. 25, in
float64 numpy), the cosine score of the guided text, MVSA's two stages per scale, the dynamic variable margin
(Eqs. 29-30) and its prior similarity, the plain-sum default of the released configs, and the backbone's stages."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from osdpm_lib.baselines import SYSTEMS
from osdpm_lib.baselines.amfmn import AMFMN, MVSA, CaptionPrior, dynamic_margin
from osdpm_lib.baselines.encoders import PAD, GridBackbone
from osdpm_lib.baselines.scoring import triplet_loss

STAGES = dict(stage_channels=(2, 2, 2, 2), stage_grids=(8, 4, 2, 1))


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _model(guidance: str) -> AMFMN:
    torch.manual_seed(0)
    return AMFMN(vocab_size=10, dim=2, word_dim=2, guidance=guidance, **STAGES).double().eval()


def _set(layer: torch.nn.Linear, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))


V = np.array([[1.0, 2.0], [-1.0, 0.5]])           # two image vectors
T = np.array([[0.5, -1.0], [2.0, 1.0], [0.0, 1.0]])   # three sentence vectors


def _check(model: AMFMN, expected):
    """``expected(i, j)``: the hand-computed t_vg of image i and caption j; the model's guided text and its score
    (the cosine of v_i and t_vg) must match it."""
    v, t = torch.tensor(V), torch.tensor(T)
    with torch.no_grad():
        tg = model.guided(v, t).numpy()
        s = model.score((v,), (t,)).numpy()
    for i in range(len(V)):
        for j in range(len(T)):
            np.testing.assert_allclose(tg[i, j], expected(i, j), rtol=1e-12, atol=1e-12)
            assert s[i, j] == pytest.approx(_cos(V[i], expected(i, j)), abs=1e-12)


def test_soft_guidance_is_eq_20():
    # t_vg = sigmoid(linear(v)) * t
    model = _model("soft")
    W, b = [[0.5, -1.0], [2.0, 0.0]], [0.1, -0.3]
    _set(model.cross_attention, W, b)
    # by hand for v_0 = (1, 2): linear = (0.5 - 2 + 0.1, 2 + 0 - 0.3) = (-1.4, 1.7)
    np.testing.assert_allclose(np.array(W) @ V[0] + b, [-1.4, 1.7])
    _check(model, lambda i, j: _sig(np.array(W) @ V[i] + b) * T[j])
    # v_0 with t_0 = (0.5, -1): t_vg = (0.5 sigmoid(-1.4), -sigmoid(1.7))
    np.testing.assert_allclose(_sig(np.array(W) @ V[0] + b) * T[0],
                               [0.5 / (1 + math.exp(1.4)), -1 / (1 + math.exp(-1.7))])


def test_fusion_guidance_is_eqs_21_22():
    # f = cat(v, t); t_vg = linear_2(f) * sigmoid(linear_1(f))
    model = _model("fusion")
    W1, b1 = [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 1.0, 0.0]], [0.0, -1.0]
    W2, b2 = [[0.5, 0.5, 0.0, 1.0], [-1.0, 0.0, 2.0, 0.0]], [0.2, 0.0]
    _set(model.cross_attention_fc1, W1, b1)
    _set(model.cross_attention_fc2, W2, b2)

    def expected(i, j):
        f = np.concatenate([V[i], T[j]])
        return (np.array(W2) @ f + b2) * _sig(np.array(W1) @ f + b1)

    # by hand for v_0 = (1, 2), t_0 = (0.5, -1): f = (1, 2, 0.5, -1); linear_1 = (1 - 0.5 - 0.5, 4 + 0.5) =
    # (0, 4.5); linear_2 = (0.5 + 1 - 1 + 0.2, -1 + 1) = (0.7, 0); t_vg = (0.7 * 0.5, 0)
    np.testing.assert_allclose(expected(0, 0), [0.35, 0.0], atol=1e-15)
    _check(model, expected)


def test_sim_guidance_is_eq_25():
    # f(v) = linear(v), f(t) = linear(t); t_vg = sigmoid(f(v) * f(t)) * f(t) (the code's elementwise similarity)
    model = _model("sim")
    Wv, bv = [[1.0, 0.0], [0.0, -1.0]], [0.0, 0.5]
    Wt, bt = [[2.0, 0.0], [1.0, 1.0]], [-0.5, 0.0]
    _set(model.fc_visual, Wv, bv)
    _set(model.fc_text, Wt, bt)

    def expected(i, j):
        fv, ft = np.array(Wv) @ V[i] + bv, np.array(Wt) @ T[j] + bt
        return _sig(fv * ft) * ft

    # by hand for v_0, t_1 = (2, 1): f(v) = (1, -1.5), f(t) = (3.5, 3); t_vg = (3.5 sigmoid(3.5), 3 sigmoid(-4.5))
    np.testing.assert_allclose(expected(0, 1), [3.5 / (1 + math.exp(-3.5)), 3 / (1 + math.exp(4.5))])
    _check(model, expected)


@pytest.mark.parametrize("guidance", ["soft", "fusion", "sim"])
def test_score_is_the_cosine_of_the_image_and_its_guided_text(guidance):
    torch.manual_seed(1)
    model = AMFMN(vocab_size=10, dim=6, word_dim=4, guidance=guidance, **STAGES).eval()
    v, t = torch.randn(4, 6), torch.randn(5, 6)
    with torch.no_grad():
        tg = model.guided(v, t)
        ref = torch.nn.functional.cosine_similarity(v[:, None].expand_as(tg), tg, dim=-1)
        np.testing.assert_allclose(model.score((v,), (t,)).numpy(), ref.numpy(), atol=1e-6)


def test_mvsa_joins_two_stages_per_scale():
    torch.manual_seed(0)
    mvsa = MVSA((4, 8, 16, 32), (16, 8, 4, 2), dim=6).eval()
    assert mvsa.LF_conv.in_channels == 4 + 8 and mvsa.HF_conv.in_channels == 16 + 32      # layer1+2, layer3+4
    assert mvsa.LF_conv.out_channels == mvsa.HF_conv.out_channels == 3                      # the released config
    assert mvsa.LF_conv.kernel_size == (3, 3) and mvsa.LF_conv.stride == (4, 4) and mvsa.LF_conv.padding == (0, 0)
    assert mvsa.linear.in_features == 32 and mvsa.solo_attention.in_features == 4 * 4
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, s, s, generator=g) for c, s in ((4, 16), (8, 8), (16, 4), (32, 2))]
    with torch.no_grad():
        base = mvsa(*feats)
        for k in range(4):                      # every stage enters the image vector
            changed = list(feats)
            changed[k] = changed[k] + 1.0
            assert not torch.allclose(mvsa(*changed), base)
        # the solo feature is the linear map of layer4's mean; the mask is a sigmoid gate on it
        solo = mvsa.linear(feats[3].flatten(2).mean(-1))
        assert ((base / solo) > 0).all() and ((base / solo) < 1).all()


def test_layer4_is_the_systems_own_where_the_backbone_ends_at_layer3():
    bb = GridBackbone("resnet18", 64)
    assert bb.stage == "layer3" and bb.stage_channels == (64, 128, 256) and bb.stage_grids == (16, 8, 4)
    assert bb.next_stage is not None and not any(k.startswith("_next") for k in bb.state_dict())
    x = torch.randn(2, 3, 64, 64)
    bb.eval()
    with torch.no_grad():
        every, (low, high) = bb(x, all_stages=True), bb(x)
    assert torch.equal(every[-2], low) and torch.equal(every[-1], high)      # the same (low, high) as before
    model = AMFMN(vocab_size=10, dim=8, word_dim=4, stage_channels=bb.stage_channels,
                  stage_grids=bb.stage_grids, next_stage=copy.deepcopy(bb.next_stage))
    assert model.visual.layer4 is not None and model.visual.linear.in_features == 512
    assert all(p.requires_grad for p in model.visual.layer4.parameters())
    with torch.no_grad():
        assert model.encode_image(*every)[0].shape == (2, 8)
    with pytest.raises(ValueError, match="layer4"):
        AMFMN(vocab_size=10, dim=8, stage_channels=bb.stage_channels, stage_grids=bb.stage_grids)


def test_dynamic_margin_is_eq_29():
    s = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    got = dynamic_margin(s, gamma=0.4, beta=5.0).numpy()
    np.testing.assert_allclose(got, [0.4, 0.4 * (math.exp(5) - math.exp(2.5)) / (math.exp(5) - 1), 0.0], atol=1e-12)
    np.testing.assert_allclose(dynamic_margin(s, 0.4, 0.0).numpy(), [0.4, 0.2, 0.0])     # beta -> 0: linear


def test_variable_margin_loss_is_eq_30_on_a_hand_case():
    scores = torch.tensor([[0.9, 0.5], [0.6, 0.7]], dtype=torch.float64)     # image i x caption j
    margins = torch.tensor([[0.0, 0.3], [0.1, 0.0]], dtype=torch.float64)
    # image 0 vs caption 1: [0.3 - 0.9 + 0.5]+ = 0; image 1 vs caption 0: [0.1 - 0.7 + 0.6]+ = 0;
    # caption 1 vs image 0: [0.3 - 0.7 + 0.5]+ = 0.1; caption 0 vs image 1: [0.1 - 0.9 + 0.6]+ = 0
    assert float(triplet_loss(scores, margins, max_violation=False)) == pytest.approx(0.1)
    margins = margins + 0.2
    # the same four hinges with margins 0.5 and 0.3: 0.1, 0.2, 0.3, 0
    assert float(triplet_loss(scores, margins, max_violation=False)) == pytest.approx(0.1 + 0.2 + 0.3 + 0.0)
    model = _model("soft")
    prior = torch.tensor([[1.0, 0.25], [0.5, 1.0]], dtype=torch.float64)
    expected = triplet_loss(scores, dynamic_margin(prior, model.gamma, model.beta), max_violation=False)
    model.margin_loss = "dynamic"
    assert float(model.loss(scores, max_violation=False, prior=prior)) == pytest.approx(float(expected))


def test_the_default_loss_is_the_released_configs_plain_sum():
    model = _model("soft")
    assert model.margin_loss == "sum" and model.margin == 0.2 and model.loss_inputs([0], [0]) == {}
    scores = torch.tensor([[0.9, 0.5], [0.6, 0.7]])
    assert float(model.loss(scores, max_violation=False)) == pytest.approx(float(triplet_loss(scores, 0.2, False)))
    for name in ("AMFMN-soft", "AMFMN-fusion", "AMFMN-sim"):      # the rows train on the sum, every epoch
        assert SYSTEMS[name].warmup_epochs is None and SYSTEMS[name].all_stages
    with pytest.raises(ValueError, match="margin_loss"):
        AMFMN(vocab_size=10, dim=2, margin_loss="hardest", **STAGES)


def test_caption_prior_on_a_hand_case():
    words = ["<pad>", "<unk>", "red", "car", "park", "green", "tree", "the", "big"]
    w = {x: k for k, x in enumerate(words)}

    def row(text, width=6):
        ids = [w[x] for x in text.split()]
        return ids + [PAD] * (width - len(ids))

    tokens = torch.tensor([row("red car park green tree"),     # image 0's caption
                           row("red car park green big"),      # image 1's caption
                           row("the tree")])                   # image 1's second caption
    index = (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.tensor([1, 2]))
    prior = CaptionPrior(tokens, index, words)
    s = prior([0, 1], [0, 1, 2])
    # caption 1 against image 0 ("red car park green tree"): p1..p4 = 4/5, 3/4, 2/3, 1/2, brevity 1 (5 vs 5):
    # BLEU = (0.2)^(1/4); content words ("the" is a stop word) of the reference: 5, 4 of them in the caption
    assert s[0, 1] == pytest.approx(((0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25 + 0.8) / 2, rel=1e-6)
    # a caption of the image itself: BLEU 1, and all content words present
    assert s[0, 0] == pytest.approx(1.0) and s[1, 1] == pytest.approx(1.0 * 0.5 + (1.0 + 0.0) / 2 * 0.5)
    # caption 2 ("the tree", 2 words) against image 0: no bigram -> BLEU 0; 1 of 5 content words
    assert s[0, 2] == pytest.approx((0.0 + 0.2) / 2)
    assert s.dtype == np.float32 and s.shape == (2, 3)


def test_dynamic_margin_trains_through_the_protocol(tmp_path, monkeypatch):
    """The option end to end: the training loop hands the batch's prior to the loss (one epoch, tiny data)."""
    from functools import partial

    from osdpm_lib import synth
    from osdpm_lib.baselines import System, run

    monkeypatch.setitem(SYSTEMS, "AMFMN-soft-Lct", System(partial(AMFMN, guidance="soft", margin_loss="dynamic"),
                                                          "test", warmup_epochs=None, all_stages=True))
    seen = []
    real = AMFMN.loss
    monkeypatch.setattr(AMFMN, "loss", lambda self, scores, max_violation=True, prior=None: (
        seen.append((max_violation, None if prior is None else tuple(prior.shape))),
        real(self, scores, max_violation, prior))[1])
    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    cfg = run.BaselineConfig("AMFMN-soft-Lct", epochs=1, batch_size=8, dim=16, word_dim=8, warmup_epochs=None,
                             weights="synthpre", device="cpu")
    res = run.train_system(cfg, data, tmp_path / "run")
    assert seen == [(False, (8, 8))] and 0 <= res["test"]["mr"] <= 100
