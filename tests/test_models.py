import open_clip
import pytest
import torch

from osdpm_lib.checkpoints import CheckpointError
from osdpm_lib.losses import OSDPMLoss, OSFCMLoss
from osdpm_lib.models import DAPN, OSDPM, build_clip, category_text_embeddings, tokenizer_for, visual_grid


@pytest.fixture(scope="module")
def tiny(tiny_clip):
    """The shared tiny model (conftest.py) and its tokenizer."""
    return tiny_clip, tokenizer_for("osdpm-tiny-vit")


def tiny_resnet_clip():
    torch.manual_seed(0)
    return open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                          text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})


@pytest.mark.parametrize("variant", ["clip+dapn", "osdpm"])
def test_dapn_contributes_zero_at_init_vit(tiny, variant):
    clip, tok = tiny
    protos = category_text_embeddings(clip, tok, ["airplane", "car", "tree"])
    model = OSDPM(clip, variant, protos).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), clip.encode_image(x, normalize=True), atol=1e-6)


def test_dapn_on_modified_resnet_is_exactly_clip_at_init():
    clip = tiny_resnet_clip().eval()
    model = OSDPM(clip, "clip+dapn").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z, maps = model.encode_image(x, return_maps=True)
        assert torch.allclose(z, clip.encode_image(x, normalize=True), atol=1e-6)
    pooled, grid = visual_grid(clip.visual, x)
    assert grid.shape[-2:] == (2, 2) and maps["saliency"].shape == (2, 2, 2)


def test_dapn_maps_and_gradients(tiny):
    clip, _ = tiny
    _, grid = visual_grid(clip.visual, torch.randn(3, 3, 64, 64))
    assert grid.shape == (3, 128, 8, 8)
    dapn = DAPN(128, 16)
    out, maps = dapn(grid.detach())
    assert out.abs().max() == 0                              # zero-initialised projection
    assert torch.allclose(maps["spatial"].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert ((maps["saliency"] > 0) & (maps["saliency"] < 1)).all()
    assert torch.allclose(maps["scale_weights"].sum(-1), torch.ones(3), atol=1e-6)
    out.sum().backward()
    assert dapn.out.weight.grad.abs().sum() > 0              # it can learn away from zero


def test_collaborative_attention_couples_spatial_and_channel():
    """The spatial map depends on the channel weights: changing the channel MLP changes the spatial map."""
    torch.manual_seed(0)
    dapn = DAPN(16, 8)
    x = torch.randn(2, 16, 4, 4)
    _, m1 = dapn(x)
    with torch.no_grad():
        dapn.collab.channel_mlp[-1].bias.add_(torch.randn(16) * 3)
    _, m2 = dapn(x)
    assert not torch.allclose(m1["spatial"], m2["spatial"])


def test_unknown_variant_and_missing_prototypes(tiny):
    clip, _ = tiny
    with pytest.raises(ValueError, match="unknown variant"):
        OSDPM(clip, "dapn-only")
    with pytest.raises(ValueError, match="prototypes"):
        OSDPM(clip, "osdpm")


def test_local_checkpoint_is_loaded(tmp_path, tiny):
    clip, _ = tiny
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    loaded = build_clip("osdpm-tiny-vit", str(path))
    for (k, a), (_, b) in zip(clip.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint file"):
        build_clip("osdpm-tiny-vit", str(tmp_path / "missing.pt"))


def test_osfcm_loss():
    loss = OSFCMLoss()
    prior = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    # assignment equal to the prior on row 0 (up to the zero entry) -> near-zero KL; row 1 has no prior
    logits = torch.log(torch.tensor([[0.4999, 0.4999, 0.0002], [0.1, 0.1, 0.8]]))
    assert loss(logits, prior) < 1e-3
    far = torch.log(torch.tensor([[0.01, 0.01, 0.98], [0.1, 0.1, 0.8]]))
    assert loss(far, prior) > 1.0
    assert loss(far, torch.zeros(2, 3)) == 0                  # no prior in the batch


def test_osdpm_loss_adds_weighted_osfcm_term():
    torch.manual_seed(0)
    out = {"image_features": torch.nn.functional.normalize(torch.randn(4, 8), dim=-1),
           "text_features": torch.nn.functional.normalize(torch.randn(4, 8), dim=-1),
           "logit_scale": torch.tensor(10.0), "osfcm_logits": torch.randn(4, 3)}
    prior = torch.rand(4, 3)
    l0 = OSDPMLoss(0.0)(out, prior)
    l2 = OSDPMLoss(2.0)(out, prior)
    assert "osfcm" not in l0 and torch.allclose(l0["total"], l0["contrastive"])
    assert torch.allclose(l2["total"], l2["contrastive"] + 2.0 * l2["osfcm"])


def test_random_init_is_not_reported_as_a_warning(caplog):
    """A model built without weights on purpose (scratch runs, weights loaded next) logs no open_clip warning
    ("No pretrained weights loaded ... initialized randomly" reads like an error in every executed notebook); the
    filter is gone afterwards."""
    import logging

    with caplog.at_level(logging.INFO):
        build_clip("osdpm-tiny-vit", None)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert any("random initialisation" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
    assert "No pretrained weights loaded for model 'x'" in caplog.text
