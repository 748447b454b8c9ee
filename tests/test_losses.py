"""OSFCM's target weighting: ambiguity weights, the weighted KL, and lambda's warm-up."""

import math

import pytest
import torch

from osdpm_lib.losses import OSDPMLoss, OSFCMLoss, ambiguity_weights, assignment_ambiguity


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
    # "ambiguous": the nearest prototype is not a category of the image's prior (images 1 and 2)
    assert torch.equal(ambiguity_weights(logits, prior, "ambiguous"), torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(ambiguity_weights(logits, prior, "entropy"), assignment_ambiguity(logits))
    with pytest.raises(ValueError, match="unknown OSFCM ambiguity"):
        ambiguity_weights(logits, prior, "hard")


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
    with pytest.raises(ValueError, match="ambiguity"):
        OSDPMLoss(1.0, ambiguity="sometimes")
