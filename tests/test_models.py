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


# ----------------------------------------------------------------------------- DAPN config and tokens
def test_dapn_config_reaches_the_modules():
    from osdpm_lib.models import DAPNConfig

    cfg = DAPNConfig(scales=[4, 2], reduction=2, rounds=3, temperature=0.5)
    dapn = DAPN(16, 8, cfg)
    assert dapn.cfg == cfg and cfg.scales == (4, 2)                      # lists from a config.json become tuples
    assert dapn.collab.rounds == 3 and dapn.collab.channel_mlp[0].out_features == 8
    assert dapn.region.scales == (4, 2) and dapn.region.temperature == 0.5
    assert dapn.region.saliency[0].out_channels == 8 and dapn.region.scale_gate.out_features == 2
    assert DAPN(16, 8, {"collaborative": False}).collab is None
    assert DAPNConfig.of({"rounds": 1}) == DAPNConfig(rounds=1)
    with pytest.raises(KeyError, match="unknown DAPN config keys"):
        DAPNConfig.of({"round": 1})
    with pytest.raises(ValueError, match="at least one"):
        DAPNConfig(collaborative=False, saliency=False)


def test_region_scales_count_regions_per_side_on_a_7x7_grid():
    """ViT-B/32 at 224 px has a 7x7 grid: scale 8 gives its 49 cells, 4 and 2 give 4x4 and 2x2 regions."""
    from osdpm_lib.models import SaliencyRegionAttention

    torch.manual_seed(0)
    region = SaliencyRegionAttention(16, scales=(8, 4, 2))
    x = torch.randn(2, 16, 7, 7)
    seen = []
    orig = torch.nn.functional.adaptive_avg_pool2d
    try:
        torch.nn.functional.adaptive_avg_pool2d = lambda t, size: seen.append(tuple(size)) or orig(t, size)
        obj, m, w = region(x, x.mean(dim=(2, 3)))
    finally:
        torch.nn.functional.adaptive_avg_pool2d = orig
    assert seen == [(4, 4), (4, 4), (2, 2), (2, 2)]     # numerator and denominator at the two pooled scales
    assert obj.shape == (2, 16) and m.shape == (2, 7, 7) and w.shape == (2, 3)
    # a single region covering the grid is the saliency-weighted mean of all cells
    one = SaliencyRegionAttention(16, scales=(1,))
    one.load_state_dict({k: v for k, v in region.state_dict().items() if not k.startswith("scale_gate")}, strict=False)
    obj1, m1, _ = one(x, x.mean(dim=(2, 3)))
    expected = (x * m1[:, None]).sum(dim=(2, 3)) / m1.sum(dim=(1, 2))[:, None]
    assert torch.allclose(obj1, expected, atol=1e-5)


def test_visual_grid_layers_pick_blocks(tiny):
    clip, _ = tiny
    x = torch.randn(2, 3, 64, 64)
    visual = clip.visual
    with torch.no_grad():
        pooled, last = visual_grid(visual, x)
        old = visual.output_tokens
        visual.output_tokens = True
        ref_pooled, tokens = visual(x)
        visual.output_tokens = old
        assert torch.allclose(pooled, ref_pooled, atol=1e-6)            # CLIP's own pooled embedding
        assert torch.allclose(last, tokens.transpose(1, 2).reshape(2, 128, 8, 8), atol=1e-6)
        _, mid = visual_grid(visual, x, (-2,))
        _, both = visual_grid(visual, x, (-2, -1))
    assert not torch.allclose(mid, last, atol=1e-3)
    assert torch.allclose(both, (mid + last) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="3 blocks"):
        visual_grid(visual, x, (5,))
    with pytest.raises(ValueError, match="layer4"):
        visual_grid(tiny_resnet_clip().visual, x, (-2,))


def test_dapn_layers_feed_the_model(tiny):
    clip, _ = tiny
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    a = OSDPM(clip, "clip+dapn", dapn={"layers": [-1]}).eval()
    torch.manual_seed(0)
    b = OSDPM(clip, "clip+dapn", dapn={"layers": [-2]}).eval()
    for m in (a, b):
        with torch.no_grad():
            m.dapn.out.weight.copy_(torch.randn(m.dapn.out.weight.shape, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert not torch.allclose(a.encode_image(x), b.encode_image(x), atol=1e-4)
        assert a.dapn_ratio(x) > 0
        assert OSDPM(clip, "clip+dapn").dapn_ratio(x) == 0                # zero-initialised projection


# ----------------------------------------------------------------------------- OSFCM prototypes
def test_osfcm_prototype_modes(tiny):
    from osdpm_lib.models import OSFCM

    clip, tok = tiny
    protos = category_text_embeddings(clip, tok, ["airplane", "car", "tree"])
    free, fixed = OSFCM(protos, prototypes="free"), OSFCM(protos, prototypes="fixed")
    assert [n for n, _ in free.named_parameters()] == ["prototypes"]
    assert list(fixed.parameters()) == [] and "prototypes" in fixed.state_dict()   # a buffer: saved, not trained
    text = OSFCM(protos, prototypes="text")
    text.set_prototypes(2 * torch.eye(3, protos.shape[1]))
    assert torch.allclose(text.prototypes, torch.eye(3, protos.shape[1]))           # normalised
    with pytest.raises(RuntimeError, match="trained"):
        free.set_prototypes(protos)
    with pytest.raises(ValueError, match="unknown OSFCM prototypes"):
        OSFCM(protos, prototypes="anchored")
    model = OSDPM(clip, "osdpm", protos, prototypes="fixed")
    assert all(p is not model.osfcm.prototypes for p in model.module_parameters())


def test_random_init_is_not_reported_as_a_warning(caplog):
    """A model built without weights on purpose (scratch runs, weights loaded next) logs no open_clip warning
    ("No pretrained weights loaded ... initialized randomly" reads like an error in every executed notebook); the
    filter is gone afterwards."""
    import logging

    with caplog.at_level(logging.INFO):
        build_clip("osdpm-tiny-vit", None)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert any(r.getMessage() == "osdpm-tiny-vit: random initialisation (no pretrained weights asked for)"
                   and r.levelno == logging.INFO for r in caplog.records)
        logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")
    assert "No pretrained weights loaded for model 'x'" in caplog.text


def test_forward_returns_normalised_features_temperature_and_osfcm_logits(tiny):
    """OSDPM.forward: unit image and text embeddings (the same as encode_image / encode_text), exp(logit_scale), and
    OSFCM's assignment logits = cosine(image, prototype) / tau, by hand."""
    clip, tok = tiny
    protos = torch.randn(3, clip.text_projection.shape[-1], generator=torch.Generator().manual_seed(0))
    model = OSDPM(clip, "osdpm", protos, osfcm_tau=0.25).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tokens = tok(["a plane near a runway .", "a river ."])
    with torch.no_grad():
        out = model(images, tokens)
        raw_text = clip.encode_text(tokens, normalize=False)
        img = model.encode_image(images)
    assert set(out) == {"image_features", "text_features", "logit_scale", "osfcm_logits"}
    torch.testing.assert_close(out["image_features"], img)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out["text_features"], raw_text / raw_text.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(model.encode_text(tokens, normalize=False), raw_text)
    assert float(out["logit_scale"]) == pytest.approx(float(clip.logit_scale.detach().exp()))
    cos = img @ (protos / protos.norm(dim=-1, keepdim=True)).T
    torch.testing.assert_close(out["osfcm_logits"], cos / 0.25)
    assert "osfcm_logits" not in OSDPM(clip, "clip").eval()(images, tokens)


def test_preprocess_config_reads_size_mean_and_std_of_the_visual_tower():
    """Image size (the first side of a (H, W) pair), the tower's own normalisation constants, else OpenAI's."""
    from types import SimpleNamespace

    from osdpm_lib.models import preprocess_config

    own = SimpleNamespace(visual=SimpleNamespace(image_size=(48, 64), image_mean=(0.1, 0.2, 0.3),
                                                 image_std=(0.4, 0.5, 0.6)))
    assert preprocess_config(own) == {"image_size": 48, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    bare = SimpleNamespace(visual=SimpleNamespace(image_size=32))
    assert preprocess_config(bare) == {"image_size": 32, "mean": tuple(open_clip.OPENAI_DATASET_MEAN),
                                       "std": tuple(open_clip.OPENAI_DATASET_STD)}


def test_defaults_name_the_tiny_model_the_clip_variant_and_free_prototypes_at_tau_0_1(tiny):
    from osdpm_lib.models import OSFCM

    clip, _ = tiny
    assert tokenizer_for()(["a plane"]).shape == (1, 24)            # osdpm-tiny-vit's context length
    base = OSDPM(clip)
    assert base.variant == "clip" and base.dapn is None and base.osfcm is None
    protos = torch.randn(3, clip.text_projection.shape[-1])
    osfcm = OSFCM(protos)
    assert osfcm.mode == "free" and osfcm.tau == 0.1
    assert OSDPM(clip, "osdpm", protos).osfcm.tau == 0.1
    torch.testing.assert_close(osfcm.prototypes.norm(dim=-1), torch.ones(3))   # each prototype a unit vector


def test_dapn_config_validation():
    from osdpm_lib.models import DAPNConfig

    cfg = DAPNConfig(layers=[-2.0], scales=[1, 3])         # lists (as in config.json) become tuples of ints
    assert cfg.layers == (-2,) and type(cfg.layers) is tuple and cfg.scales == (1, 3)
    assert DAPNConfig(reduction=1, rounds=1, temperature=1e-3).reduction == 1
    with pytest.raises(ValueError, match="^DAPN needs at least one of its two attention modules$"):
        DAPNConfig(collaborative=False, saliency=False)
    for scales in ((0,), (2, 0), ()):
        with pytest.raises(ValueError, match="DAPN scales must be positive region counts"):
            DAPNConfig(scales=scales)
    for bad in ({"rounds": 0}, {"reduction": 0}, {"temperature": 0.0}, {"temperature": -1.0}):
        with pytest.raises(ValueError, match="rounds and reduction must be >= 1 and temperature > 0"):
            DAPNConfig(**bad)


def test_osdpm_variants_build_their_modules_and_list_their_parameters(tiny):
    clip, _ = tiny
    protos = torch.randn(3, clip.text_projection.shape[-1])
    with pytest.raises(ValueError, match=r"^variant 'osdpm' needs category_prototypes \(text embeddings of category "
                                         r"names\)$"):
        OSDPM(clip, "osdpm")
    full = OSDPM(clip, "osdpm", protos)
    assert full.variant == "osdpm" and full.dapn is not None and full.osfcm is not None
    assert [id(p) for p in full.module_parameters()] == [id(p) for p in [*full.dapn.parameters(),
                                                                          *full.osfcm.parameters()]]
    base = OSDPM(clip, "clip")
    assert base.module_parameters() == []
    with pytest.raises(ValueError, match="variant 'clip' has no DAPN"):
        base.image_parts(torch.zeros(1, 3, 64, 64))
    z, maps = base.eval().encode_image(torch.zeros(1, 3, 64, 64), return_maps=True)
    assert maps == {}


def test_dapn_output_width_follows_the_text_projection(tiny):
    """DAPN's delta lives in the joint space: its width is the text projection's output width, whether that is a
    matrix [width, embed] (ViT CLIP) or a Linear layer."""
    import copy

    clip, _ = tiny
    wide = copy.deepcopy(clip)
    del wide.text_projection
    wide.text_projection = torch.nn.Parameter(torch.randn(clip.text_projection.shape[0], 96))
    assert OSDPM(wide, "clip+dapn").dapn.out.out_features == 96
    del wide.text_projection
    wide.text_projection = torch.nn.Linear(clip.text_projection.shape[0], 80, bias=False)
    assert OSDPM(wide, "clip+dapn").dapn.out.out_features == 80


def test_image_embedding_is_pooled_plus_dapn_delta(tiny_models):
    model = tiny_models["models"]["clip+dapn"]
    x = tiny_models["norm"](tiny_models["images"])
    with torch.no_grad():
        pooled, delta, _ = model.image_parts(x)
        z = model.encode_image(x, normalize=False)
    assert delta.abs().max() > 0
    torch.testing.assert_close(z, pooled + delta)


def test_build_clip_hands_open_clip_its_arguments_and_never_unpickles_code(tmp_path, tiny, monkeypatch):
    """Random init, a local checkpoint and an open_clip tag: open_clip gets the model name, the extra arguments,
    no pretrained tag where the weights are local or random, and weights_only=True wherever it reads a file."""
    clip, _ = tiny
    calls = []
    real_create, real_load = open_clip.create_model, open_clip.load_checkpoint

    def create(*a, **kw):
        calls.append(("create", a, kw))
        return real_create(*a, **kw) if kw.get("pretrained") is None else "from open_clip"

    def load(*a, **kw):
        calls.append(("load", a, kw))
        return real_load(*a, **kw)
    monkeypatch.setattr(open_clip, "create_model", create)
    monkeypatch.setattr(open_clip, "load_checkpoint", load)

    build_clip("osdpm-tiny-vit", None, force_quick_gelu=False)
    assert calls == [("create", ("osdpm-tiny-vit",), {"pretrained": None, "weights_only": True,
                                                       "force_quick_gelu": False})]
    calls.clear()
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    build_clip("osdpm-tiny-vit", str(path), force_quick_gelu=False)
    assert [c[0] for c in calls] == ["create", "load"]
    assert calls[0][1:] == (("osdpm-tiny-vit",), {"pretrained": None, "force_quick_gelu": False})
    assert calls[1][1][1:] == (str(path),) and calls[1][2] == {"weights_only": True}
    calls.clear()
    assert build_clip("osdpm-tiny-vit", "openai", force_quick_gelu=False) == "from open_clip"   # a tag, not a file
    assert calls == [("create", ("osdpm-tiny-vit",), {"pretrained": "openai", "weights_only": True,
                                                       "force_quick_gelu": False})]
    calls.clear()
    build_clip()
    assert calls[0][1] == ("osdpm-tiny-vit",)                  # the default model is the tiny one


def test_misfit_checkpoint_error_quotes_open_clips_reason_on_one_line(tmp_path, tiny_clip):
    from osdpm_lib.checkpoints import CheckpointError

    state = dict(tiny_clip.state_dict()) | {f"extra.block{i}.weight": torch.zeros(1) for i in range(60)}
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        build_clip("osdpm-tiny-vit", str(path))
    detail = str(err.value).split("architecture?): ", 1)[1]
    assert "Unexpected key(s)" in detail and "extra.block0.weight" in detail
    assert "\n" not in detail and "  " not in detail and "XX" not in detail
    assert len(detail) == 600      # PyTorch's list of 60 unexpected keys is longer: cut at 600 characters


def test_bundled_weights_only_for_a_plain_tag_with_a_file():
    from osdpm_lib.models import bundled_weights

    assert bundled_weights("osdpm-tiny-vit", None) is None
    assert bundled_weights("osdpm-tiny-vit", "hf-hub:org/model") is None
    assert bundled_weights("osdpm-tiny-vit", "no-such-tag") is None


def test_visual_grid_accepts_every_block_index_and_names_the_valid_range(tiny):
    clip, _ = tiny
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first, _ = visual_grid(clip.visual, x, (-3,)), visual_grid(clip.visual, x, (2,))
    assert first[1].shape == (1, 128, 8, 8)
    for bad in ((3,), (-4,), ()):
        with pytest.raises(ValueError, match=r"the visual transformer has 3 blocks \(valid indices -3\.\.2\)"):
            visual_grid(clip.visual, x, bad)
    with pytest.raises(TypeError, match="ModifiedResNet, not Linear"):
        visual_grid(torch.nn.Linear(2, 2), x)


def test_validation_encoding_reports_dapns_share_from_its_own_forward_pass(tiny):
    """train.validate reads dapn_ratio from the validation encoding (encode_split's ``ratios``): the same
    embeddings as encode_image, and per-image ratios whose mean over a batch is OSDPM.dapn_ratio of that batch."""
    from types import SimpleNamespace

    import numpy as np

    from osdpm_lib.cache import Normalizer
    from osdpm_lib.evaluate import encode_images
    from osdpm_lib.train import TrainConfig, encode_split

    clip, _ = tiny
    torch.manual_seed(0)
    m = OSDPM(clip, "clip+dapn").eval()
    with torch.no_grad():
        m.dapn.out.weight.copy_(torch.randn(m.dapn.out.weight.shape, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8, generator=g)
    split = SimpleNamespace(images=images, tokens=torch.ones(6, clip.context_length, dtype=torch.long),
                            caption_image=torch.arange(6))
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ratios: list[float] = []
    cfg = TrainConfig(eval_batch_size=4)
    enc = encode_split(m, split, norm, cfg, torch.device("cpu"), None, ratios)
    plain = encode_images(m, images, norm, 4)
    np.testing.assert_array_equal(enc.images, plain)              # the hook changes nothing in the embeddings
    assert len(ratios) == 6 and all(r > 0 for r in ratios)
    with torch.no_grad():
        pooled, delta, _ = m.image_parts(norm(images))               # ||delta|| / ||pooled|| by hand, per image
    np.testing.assert_allclose(ratios, (delta.norm(dim=-1) / pooled.norm(dim=-1)).numpy(), rtol=1e-5)
    with torch.no_grad():
        assert np.mean(ratios[:4]) == pytest.approx(m.dapn_ratio(norm(images[:4])), rel=1e-5)
    without = OSDPM(clip, "clip").eval()
    ratios_clip: list[float] = []
    encode_split(without, split, norm, cfg, torch.device("cpu"), None, ratios_clip)
    assert ratios_clip == []                                      # no DAPN, no ratio


def test_dapn_share_is_delta_norm_over_pooled_norm_per_image():
    from osdpm_lib.models import dapn_share

    pooled = torch.tensor([[0.3, 0.4], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)   # norms 0.5, 5, 0
    delta = torch.tensor([[0.0, 0.1], [0.0, 1.0], [0.0, 1e-13]], dtype=torch.float64)
    share = dapn_share(pooled, delta)
    assert share.dtype == torch.float32
    torch.testing.assert_close(share, torch.tensor([0.2, 0.2, 0.1]), rtol=1e-6, atol=0)   # 1e-13 / 1e-12
