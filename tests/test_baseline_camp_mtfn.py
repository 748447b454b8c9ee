"""Tests of CAMP and MTFN (osdpm_lib.baselines.camp, .mtfn): CAMP's gate and its BCE loss, MTFN's rank-R fusion and
its label-free i2t re-ranking on tiny hand-computed cases (numpy float64); one training step of each system and a
tiny score matrix of the right shape; one epoch under the book's protocol; the rows' texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osdpm_lib import synth
from osdpm_lib.baselines import OPEN, SYSTEMS, score_matrix
from osdpm_lib.baselines import profiles as bprofiles
from osdpm_lib.baselines.camp import camp_bce, camp_gate
from osdpm_lib.baselines.mtfn import MTFN, rank_r_fusion, rerank, rerank_i2t

NEW = ("CAMP-triplet", "CAMP-bce", "MTFN")
DIMS = dict(channels=16, low_channels=8, grid=4, low_grid=8, vocab_size=30, dim=16, word_dim=8)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


from test_baselines import _tokens  # noqa: E402  (the same padded token batches)


def _features(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, 8, 8, generator=g), torch.randn(n, 16, 4, 4, generator=g)


def test_camp_gate_on_a_hand_computed_case():
    x = np.array([[1.0, 2.0], [-0.5, 0.25]])
    m = np.array([[0.5, -1.0], [2.0, 4.0]])
    # the released code: one gate per item, sigmoid of the channels' summed element-wise product
    g = _sig(np.array([1.0 * 0.5 + 2.0 * -1.0, -0.5 * 2.0 + 0.25 * 4.0]))          # sigmoid(-1.5), sigmoid(0)
    want = np.concatenate([x, m], axis=1) * g[:, None]
    got = camp_gate(torch.tensor(x), torch.tensor(m)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[1] == pytest.approx([-0.25, 0.125, 1.0, 2.0])                         # gate 0.5
    # the per-channel variant: sigmoid of each channel's product, gating both halves
    gc = _sig(x * m)
    want_c = np.concatenate([x * gc, m * gc], axis=1)
    np.testing.assert_allclose(camp_gate(torch.tensor(x), torch.tensor(m), per_channel=True).numpy(), want_c,
                               rtol=1e-12)


def test_camp_bce_on_a_hand_computed_case():
    s = np.array([[0.9, 0.3, 0.6], [0.2, 0.7, 0.1], [0.5, 0.4, 0.8]])
    pos = np.log(np.diag(s))
    neg = np.log(1 - s)
    off = ~np.eye(3, dtype=bool)
    row_min = [min(neg[i, j] for j in range(3) if j != i) for i in range(3)]
    col_min = [min(neg[i, j] for i in range(3) if i != j) for j in range(3)]
    want = -(2 * pos.sum() + sum(row_min) + sum(col_min))
    assert float(camp_bce(torch.tensor(s))) == pytest.approx(want, rel=1e-12)
    want_sum = -(pos.mean() + (neg * off).sum() / 9)          # the code's mean over the whole masked matrix
    assert float(camp_bce(torch.tensor(s), max_violation=False)) == pytest.approx(want_sum, rel=1e-12)


def test_mtfn_rank_r_fusion_on_a_hand_computed_case():
    rng = np.random.default_rng(0)
    n_i, n_t, rank, m = 2, 3, 2, 3
    hv, ht, w, b = rng.normal(size=(n_i, rank, m)), rng.normal(size=(n_t, rank, m)), rng.normal(size=m), 0.3
    want = np.zeros((n_i, n_t))
    for i in range(n_i):
        for j in range(n_t):
            z = sum(hv[i, r] * ht[j, r] for r in range(rank))          # sum of the R rank-1 factors' products
            want[i, j] = w @ z + b                                      # the linear layer to one number
    got = rank_r_fusion(torch.tensor(hv), torch.tensor(ht), torch.tensor(w), b).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_mtfn_score_is_the_sigmoid_of_the_fused_linear_score():
    torch.manual_seed(0)
    model = MTFN(**DIMS, rank=3).eval()
    low, high = _features(2)
    tok = _tokens(3)
    f64 = lambda x: x.detach().double().numpy()                                        # noqa: E731
    pooled = f64(high).reshape(2, 16, -1).mean(2)                                      # the mean of the cells
    v = np.tanh(pooled @ f64(model.linear_v.weight).T + f64(model.linear_v.bias))
    sent = f64(model.text(tok)[2])                                                     # the GRU's last state
    t = np.tanh(sent @ f64(model.linear_t.weight).T + f64(model.linear_t.bias))
    wv, bv = model.list_linear_hv.weight.detach().numpy(), model.list_linear_hv.bias.detach().numpy()
    wt, bt = model.list_linear_ht.weight.detach().numpy(), model.list_linear_ht.bias.detach().numpy()
    w, b = model.linear_classif.weight.detach().numpy()[0], float(model.linear_classif.bias.detach()[0])
    d = DIMS["dim"]
    want = np.zeros((2, 3))
    for i in range(2):
        for j in range(3):
            z = sum((wv[r * d:(r + 1) * d] @ v[i] + bv[r * d:(r + 1) * d]) *
                    (wt[r * d:(r + 1) * d] @ t[j] + bt[r * d:(r + 1) * d]) for r in range(3))
            want[i, j] = _sig(w @ z + b)
    with torch.no_grad():
        got = model.score(model.encode_image(low, high), model.encode_text(tok)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mtfn_i2t_rerank_reads_the_scores_alone():
    # image 0's top-2 captions are 0 (0.9) and 1 (0.8); caption 0 prefers image 1, caption 1 prefers image 0:
    # the re-ranking puts caption 1 first for image 0
    s = np.array([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3]])
    i2t, t2i = rerank(s, k=2)
    assert list(np.argsort(-i2t[0], kind="stable")) == [1, 0, 2]
    assert list(np.argsort(-i2t[1], kind="stable")) == [0, 2, 1]        # caption 0 ranks image 1 first: unchanged
    np.testing.assert_array_equal(t2i, s.astype(np.float32))            # text->image as scored (no labels read)
    # beyond the top k every caption keeps its score
    assert rerank_i2t(s, k=2)[0, 2] == pytest.approx(0.1)


@pytest.mark.parametrize("name", NEW)
def test_one_training_step_and_a_score_matrix(name):
    torch.manual_seed(0)
    model = SYSTEMS[name].factory(**DIMS).train()
    feats, tok = _features(6, seed=1), _tokens(6, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.loss(model.score(model.encode_image(*feats), model.encode_text(tok)))
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        img, txt = model.encode_image(*_features(3, seed=2)), model.encode_text(_tokens(5, seed=2))
    sims = score_matrix(model, img, txt, budget_bytes=2 * model.pair_bytes(img, txt))
    assert sims.shape == (3, 5) and np.isfinite(sims).all() and ((sims > 0) & (sims < 1)).all()


def test_camp_score_is_the_codes_order_of_operations():
    """CAMP.score (messages taken through the attention weights, never formed) gives the numbers and the gradients
    of score_reference (the released code's order: messages, their self-attention, camp_gate, the fc), with padded
    words on a block of 3 images x 5 captions."""
    torch.manual_seed(0)
    model = SYSTEMS["CAMP-triplet"].factory(**DIMS)
    with torch.no_grad():
        img, (words, mask) = model.encode_image(*_features(3, seed=3)), model.encode_text(_tokens(5, seed=3))
    model = model.double()
    img, txt = (img[0].double(),), (words.double(), mask)
    assert not bool(txt[1].all())                       # some words are padding
    fast, slow = model.score(img, txt), model.score_reference(img, txt)
    assert fast.shape == (3, 5)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    g_fast = torch.autograd.grad(fast.sum(), list(model.parameters()), allow_unused=True)
    g_slow = torch.autograd.grad(slow.sum(), list(model.parameters()), allow_unused=True)
    for name, a, b in zip([n for n, _ in model.named_parameters()], g_fast, g_slow):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=name)


def test_camp_losses_differ_and_follow_the_code():
    torch.manual_seed(0)
    s = torch.rand(4, 4)
    trip, bce = SYSTEMS["CAMP-triplet"].factory(**DIMS), SYSTEMS["CAMP-bce"].factory(**DIMS)
    assert float(trip.loss(s)) == pytest.approx(float(trip.__class__.__mro__[1].loss(trip, s)))
    assert float(bce.loss(s)) == pytest.approx(float(camp_bce(s)))


def test_one_epoch_under_the_protocol(tmp_path):
    from osdpm_lib.baselines import run

    data_dir = synth.generate(tmp_path / "emb", n_images=24, seed=0, image_size=64, n_val=8, n_test=8).parent
    data = run.prepare(data_dir, 64)
    for system in NEW:
        cfg = run.BaselineConfig(system, epochs=1, batch_size=8, dim=16, word_dim=8, device="cpu", precision="fp32",
                                 warmup_epochs=bprofiles.baseline_config("full", system).warmup_epochs)
        res = run.train_system(cfg, data, tmp_path / system)
        assert np.isfinite(res["test"]["rsum"]) and 0 <= res["test"]["mr"] <= 100


def test_registration_profiles_and_rows():
    assert not set(NEW) & set(OPEN)
    for name in NEW:
        # MTFN: the hardest negative every epoch; CAMP: all negatives every epoch (its hardest collapsed here)
        assert SYSTEMS[name].warmup_epochs == (None if name.startswith("CAMP") else 0)
        assert bool(SYSTEMS[name].rerank) == (name == "MTFN")                       # MTFN re-ranks (its i2t only)
        assert bprofiles.baseline_config("full", name).warmup_epochs == SYSTEMS[name].warmup_epochs
    for profile in ("full", "finetune", "frozen"):
        assert set(NEW) <= set(bprofiles.baseline_profile(profile)["systems"])
    for profile in ("default", "ci", "scratch"):                                   # the quick book's budget
        assert not set(NEW) & set(bprofiles.baseline_profile(profile)["systems"])
    for name in NEW:
        text = SYSTEMS[name].replaced
        assert "Sec. V-C" in text and "Faster R-CNN" in text and "GRU trained here" in text
    assert "summed over all negatives" in SYSTEMS["CAMP-triplet"].replaced
    assert "mean over all negatives" in SYSTEMS["CAMP-bce"].replaced
    assert all(SYSTEMS[s].warmup_epochs is None and "collapsed" in SYSTEMS[s].replaced
               for s in ("CAMP-triplet", "CAMP-bce"))
    assert "binary cross-entropy" in SYSTEMS["CAMP-bce"].replaced
    mtfn = SYSTEMS["MTFN"].replaced
    assert "skip-thoughts" in mtfn and "5-caption grouping" in mtfn and "not done" in mtfn and "dropout" in mtfn


def test_mtfn_row_is_reranked_by_its_own_function():
    import numpy as np

    from osdpm_lib.baselines import SYSTEMS, mtfn, scoring
    from osdpm_lib.baselines.run import evaluate  # noqa: F401  (the runner applies System.rerank)

    assert SYSTEMS["MTFN"].rerank is mtfn.rerank and SYSTEMS["GaLR"].rerank is True
    rng = np.random.default_rng(0)
    sims = rng.normal(size=(6, 12)).astype(np.float32)
    i2t, t2i = mtfn.rerank(sims)
    assert np.array_equal(t2i, sims.astype(t2i.dtype))                 # text->image as scored
    assert not np.array_equal(i2t, scoring.rerank(sims)[0])            # not GaLR's
