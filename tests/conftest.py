"""Shared fixtures: the tiny random-init model (``osdpm-tiny-vit``, 64 px, 8x8 patch grid)."""

from __future__ import annotations

import pytest
import torch

from osdpm_lib import profiles
from osdpm_lib.baselines import profiles as baseline_profiles

from osdpm_lib.cache import Normalizer
from osdpm_lib.models import OSDPM, build_clip, preprocess_config, tokenizer_for


@pytest.fixture(scope="module")
def tiny_clip():
    """Random-init osdpm-tiny-vit (open_clip CLIP), seed 0."""
    torch.manual_seed(0)
    return build_clip("osdpm-tiny-vit")


@pytest.fixture(scope="module")
def tiny_models(tiny_clip):
    """Random-init osdpm-tiny-vit (64 px, 8x8 patch grid) in the three variants, plus helpers."""
    clip = tiny_clip
    tok = tokenizer_for("osdpm-tiny-vit")
    pre = preprocess_config(clip)
    models = {"clip": OSDPM(clip, "clip").eval()}
    torch.manual_seed(1)
    clip2 = build_clip("osdpm-tiny-vit")
    dapn = OSDPM(clip2, "clip+dapn").eval()
    with torch.no_grad():  # a non-zero DAPN projection, so that DAPN contributes to the embedding
        dapn.dapn.out.weight.normal_(0, 0.05)
    models["clip+dapn"] = dapn
    images = torch.randint(0, 256, (3, 3, pre["image_size"], pre["image_size"]), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    text = clip.encode_text(tok(["a plane near a runway .", "many cars in a parking lot .", "a river ."]),
                            normalize=True).detach()
    return {"models": models, "tokenizer": tok, "norm": Normalizer(pre["mean"], pre["std"]), "images": images,
            "text": text, "clip": clip}




@pytest.fixture
def profile_tables(monkeypatch):
    """The profile tables restored after the test: ``settings.apply`` (the runner's --set, --smoke) registers a
    derived profile in them."""
    monkeypatch.setattr(profiles, "PROFILES", dict(profiles.PROFILES))
    monkeypatch.setattr(baseline_profiles, "BASELINE_PROFILES", dict(baseline_profiles.BASELINE_PROFILES))


@pytest.fixture(autouse=True)
def _no_chosen_baseline_lrs(tmp_path_factory, monkeypatch):
    """Every test sees the baselines' profiles as written, not the learning rates a study chose on validation
    (``osdpm_lib/baselines/baseline_lr.json``, written by ``tuning --part baselines-lr``): a test that needs such a
    file points ``BASELINE_LR_FILE`` at its own."""
    monkeypatch.setattr(baseline_profiles, "BASELINE_LR_FILE",
                        tmp_path_factory.getbasetemp() / "no-baseline_lr.json")
