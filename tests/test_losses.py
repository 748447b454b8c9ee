"""The OSFCM loss by its value (KL(p || q) computed by hand, on examples where the direction of the KL matters), its
per-image ambiguity weights and lambda's warm-up factor."""

import math

import pytest
import torch

from osdpm_lib.losses import OSDPMLoss, OSFCMLoss, ambiguity_weights, assignment_ambiguity


def kl_by_hand(prior_row, logit_row) -> float:
    """KL(p || q) of one image with plain Python floats: p = the prior row normalised to sum 1,
    q = softmax(logits); terms with p = 0 are 0."""
    p = [v / sum(prior_row) for v in prior_row]
    z = sum(math.exp(v) for v in logit_row)
    q = [math.exp(v) / z for v in logit_row]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


# Asymmetric: every entry non-zero, p and q far from uniform and from each other, so KL(p||q) != KL(q||p),
# and the priors are not normalised (frequencies) so that a missing normalisation changes the value.
PRIOR = [[6.0, 3.0, 1.0], [1.0, 1.0, 8.0]]
LOGITS = [[0.2, 1.5, -1.0], [2.0, -0.5, 0.3]]


def test_osfcm_loss_is_forward_kl_mean_over_images():
    got = OSFCMLoss()(torch.tensor(LOGITS), torch.tensor(PRIOR))
    want = (kl_by_hand(PRIOR[0], LOGITS[0]) + kl_by_hand(PRIOR[1], LOGITS[1])) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)
    # the reverse direction is a different number here (the test would not tell them apart otherwise)
    reverse = sum(kl_by_hand([math.exp(v) for v in lg], pr) for pr, lg in zip(PRIOR, LOGITS)) / 2
    assert abs(reverse - want) > 0.1


def test_osfcm_loss_rows_without_prior_neither_count_nor_divide():
    """A row of zeros (an image whose captions name no category) adds nothing and is not in the mean's divisor;
    zero entries of a prior contribute 0 (0 log 0 = 0), not NaN."""
    prior = torch.tensor([PRIOR[0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    logits = torch.tensor([LOGITS[0], [5.0, -3.0, 0.0], LOGITS[1]])
    got = OSFCMLoss()(logits, prior)
    want = (kl_by_hand(PRIOR[0], LOGITS[0]) + kl_by_hand([0.0, 2.0, 0.0], LOGITS[1])) / 2
    assert torch.isfinite(got) and float(got) == pytest.approx(want, rel=1e-5)
    assert float(OSFCMLoss()(logits, torch.zeros(3, 3))) == 0.0


def test_osfcm_loss_divisor_given_by_caller():
    """``denominator`` (the DDP divisor) replaces the local count of images with a prior."""
    logits, prior = torch.tensor(LOGITS), torch.tensor(PRIOR)
    total = kl_by_hand(PRIOR[0], LOGITS[0]) + kl_by_hand(PRIOR[1], LOGITS[1])
    assert float(OSFCMLoss()(logits, prior, denominator=torch.tensor(4.0))) == pytest.approx(total / 4, rel=1e-5)
    assert float(OSFCMLoss()(logits, prior, denominator=1.0)) == pytest.approx(total, rel=1e-5)


def test_osfcm_loss_gradient_pulls_assignment_toward_prior():
    """d KL(p||q) / d logits = q - p: the step moves the assignment toward the prior."""
    logits = torch.tensor(LOGITS, requires_grad=True)
    OSFCMLoss()(logits, torch.tensor(PRIOR)).backward()
    p = torch.tensor(PRIOR) / torch.tensor(PRIOR).sum(1, keepdim=True)
    q = torch.softmax(torch.tensor(LOGITS), dim=1)
    torch.testing.assert_close(logits.grad, (q - p) / 2, rtol=1e-5, atol=1e-6)


def test_osdpm_loss_is_contrastive_plus_lambda_times_osfcm():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(2, 4, generator=g), dim=-1)
    out = {"image_features": feats, "text_features": feats.flip(0), "logit_scale": torch.tensor(3.0),
           "osfcm_logits": torch.tensor(LOGITS)}
    prior = torch.tensor(PRIOR)
    osfcm = (kl_by_hand(PRIOR[0], LOGITS[0]) + kl_by_hand(PRIOR[1], LOGITS[1])) / 2
    # CLIP's symmetric InfoNCE by hand: logits = scale * img @ txt.T, the diagonal is the target both ways
    sims = (3.0 * feats @ feats.flip(0).T).tolist()
    ce = lambda row, i: math.log(sum(math.exp(v) for v in row)) - row[i]  # noqa: E731
    contrastive = (sum(ce(sims[i], i) for i in range(2)) / 2 + sum(ce([r[i] for r in sims], i) for i in range(2)) / 2) / 2
    for lam in (0.5, 2.0):
        losses = OSDPMLoss(lam)(out, prior)
        assert float(losses["contrastive"]) == pytest.approx(contrastive, rel=1e-5)
        assert float(losses["osfcm"]) == pytest.approx(osfcm, rel=1e-5)
        assert float(losses["total"]) == pytest.approx(contrastive + lam * osfcm, rel=1e-5)
    off = OSDPMLoss(0.0)(out, prior)
    assert "osfcm" not in off and float(off["total"]) == pytest.approx(contrastive, rel=1e-5)
    assert "osfcm" not in OSDPMLoss()(out, prior)             # by default (lambda 0) the CLIP baseline's loss
    assert "osfcm" not in OSDPMLoss(1.0)(out, None)           # no prior given: contrastive only
    no_head = {k: v for k, v in out.items() if k != "osfcm_logits"}
    assert "osfcm" not in OSDPMLoss(1.0)(no_head, prior)     # a variant without OSFCM


def test_osfcm_loss_normalises_priors_of_any_mass():
    """Rows of mass below 1 (probabilities after a threshold) are renormalised too, and count as images with a
    prior; one image with a prior is a mean over one image."""
    small = [0.2, 0.1, 0.1]                        # mass 0.4
    got = OSFCMLoss()(torch.tensor([LOGITS[0], LOGITS[1]]), torch.tensor([small, [0.0, 0.0, 0.0]]))
    assert float(got) == pytest.approx(kl_by_hand(small, LOGITS[0]), rel=1e-5)


def test_osdpm_loss_under_ddp_divides_by_global_count_per_rank(monkeypatch):
    """world_size > 1: the OSFCM mean divides by (images with a prior over all ranks) / world_size; all_reduce is
    simulated: the other rank holds 3 images with a prior.  The contrastive part gathers across ranks."""
    import osdpm_lib.losses as losses_mod

    def all_reduce(t):
        t += 3
    monkeypatch.setattr(losses_mod.dist, "all_reduce", all_reduce)
    loss = OSDPMLoss(1.0, rank=1, world_size=2)
    c = loss.contrastive
    assert (c.local_loss, c.gather_with_grad, c.rank, c.world_size) == (True, True, 1, 2)
    single = OSDPMLoss(1.0).contrastive
    assert (single.local_loss, single.gather_with_grad, single.rank, single.world_size) == (False, False, 0, 1)
    monkeypatch.setattr(c, "forward", lambda *a: torch.tensor(0.0))   # no process group here
    out = {"image_features": None, "text_features": None, "logit_scale": None, "osfcm_logits": torch.tensor(LOGITS)}
    # two local images with a prior (probability rows, mass 1) and one without
    rows = [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]
    out["osfcm_logits"] = torch.tensor([*LOGITS, [1.0, 0.0, -1.0]])
    got = loss(out, torch.tensor([*rows, [0.0, 0.0, 0.0]]))["osfcm"]
    total = kl_by_hand(rows[0], LOGITS[0]) + kl_by_hand(rows[1], LOGITS[1])
    assert float(got) == pytest.approx(total / ((2 + 3) / 2), rel=1e-5)
    # one image with a prior over both ranks: the divisor is 1/2 per rank (not clamped to 1)
    monkeypatch.setattr(losses_mod.dist, "all_reduce", lambda t: None)
    got = loss(out, torch.tensor([rows[0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))["osfcm"]
    assert float(got) == pytest.approx(kl_by_hand(rows[0], LOGITS[0]) / 0.5, rel=1e-5)


# ------------------------------------------------------------------ ambiguity weights and warm-up
def test_assignment_ambiguity_is_normalised_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [math.log(2), 0.0, -1e9, -1e9]])
    amb = assignment_ambiguity(logits)
    q = torch.tensor([2 / 3, 1 / 3])
    assert amb[0] == pytest.approx(1.0) and amb[1] == pytest.approx(0.0, abs=1e-6)
    assert amb[2] == pytest.approx(float(-(q * q.log()).sum() / math.log(4)), rel=1e-5)


def test_ambiguity_weights_modes():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.1]])
    prior = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert torch.equal(ambiguity_weights(logits, prior, "all"), torch.ones(3))
    assert torch.equal(ambiguity_weights(logits, prior), torch.ones(3))       # the default mode is "all"
    # "ambiguous": the nearest prototype is not a category of the image's prior (images 1 and 2)
    assert torch.equal(ambiguity_weights(logits, prior, "ambiguous"), torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(ambiguity_weights(logits, prior, "entropy"), assignment_ambiguity(logits))
    with pytest.raises(ValueError, match="unknown OSFCM ambiguity"):
        ambiguity_weights(logits, prior, "hard")


def test_ambiguity_weights_live_on_the_logits_device():
    """The weights are made on the device of the logits (no host tensor in a GPU loss); "meta" stands in for a GPU."""
    logits, prior = torch.zeros(3, 4, device="meta"), torch.zeros(3, 4, device="meta")
    for mode in ("all", "entropy", "ambiguous"):
        assert ambiguity_weights(logits, prior, mode).device.type == "meta"


def test_weighted_osfcm_loss_is_the_weighted_mean_of_per_image_kl():
    torch.manual_seed(0)
    logits = torch.randn(3, 4)
    prior = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]])
    q = torch.softmax(logits, dim=1)
    kl = [(p[p > 0] * (p[p > 0] / qq[p > 0]).log()).sum() for p, qq in zip(prior, q)]
    w = torch.tensor([0.25, 1.0, 5.0])     # the last image has no prior: its weight must not count
    expected = (0.25 * kl[0] + 1.0 * kl[1]) / 1.25
    assert OSFCMLoss()(logits, prior, w) == pytest.approx(float(expected), rel=1e-5)
    assert OSFCMLoss()(logits, prior) == pytest.approx(float((kl[0] + kl[1]) / 2), rel=1e-5)
    assert OSFCMLoss()(logits, prior, torch.zeros(3)) == 0
    # weights summing to less than 1 still divide: one image of weight 0.5 is a mean over that image
    assert OSFCMLoss()(logits, prior, torch.tensor([0.5, 0.0, 0.0])) == pytest.approx(float(kl[0]), rel=1e-5)


def test_osdpm_loss_lambda_scale_and_ambiguity():
    torch.manual_seed(0)
    out = {"image_features": torch.nn.functional.normalize(torch.randn(4, 8), dim=-1),
           "text_features": torch.nn.functional.normalize(torch.randn(4, 8), dim=-1),
           "logit_scale": torch.tensor(10.0), "osfcm_logits": torch.randn(4, 3)}
    prior = torch.softmax(torch.randn(4, 3), dim=1)
    half = OSDPMLoss(2.0)(out, prior, lambda_scale=0.5)
    assert torch.allclose(half["total"], half["contrastive"] + 1.0 * half["osfcm"])
    ent = OSDPMLoss(1.0, ambiguity="entropy")(out, prior)
    w = assignment_ambiguity(out["osfcm_logits"])
    assert ent["osfcm"] == pytest.approx(float(OSFCMLoss()(out["osfcm_logits"], prior, w)), rel=1e-6)
    # "ambiguous" weighs by the image's own prior: only the images whose nearest prototype has no prior mass count
    top = out["osfcm_logits"].argmax(dim=1)
    sparse = prior.clone()
    sparse[[0, 1], top[[0, 1]]] = 0.0
    amb = OSDPMLoss(1.0, ambiguity="ambiguous")(out, sparse)
    w = ambiguity_weights(out["osfcm_logits"], sparse, "ambiguous")
    assert w.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert amb["osfcm"] == pytest.approx(float(OSFCMLoss()(out["osfcm_logits"], sparse, w)), rel=1e-6)
    assert amb["osfcm"] != pytest.approx(float(OSFCMLoss()(out["osfcm_logits"], sparse)), rel=1e-3)
    with pytest.raises(ValueError, match="ambiguity"):
        OSDPMLoss(1.0, ambiguity="sometimes")
