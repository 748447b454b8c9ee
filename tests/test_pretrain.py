"""The book's pretrained CLIP: export, record, verification, and the shipped checkpoint itself."""

import json

import pytest
import torch

from osdpm_lib import checkpoints, pretrain
from osdpm_lib.models import WEIGHTS_DIR, build_clip, bundled_weights


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    rec = pretrain.pretrain(root / "corpus", root / "run", root / "weights",
                            corpus={"n_images": 90, "seed": 5, "image_size": 64, "n_val": 20, "n_test": 20},
                            train_overrides={"epochs": 1, "batch_size": 16}, benchmark_dir=None, progress=False)
    return root, rec


def test_export_is_float16_clip_weights_of_the_selected_epoch(tiny_pretrain):
    root, rec = tiny_pretrain
    path = root / "weights" / rec["file"]
    state = checkpoints.load(path)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    best = checkpoints.load(root / "run" / "best.pt")["model"]
    for k, v in state.items():
        assert torch.equal(v, best[f"clip.{k}"].to(v.dtype)), k
    model = build_clip("osdpm-tiny-vit", str(path))     # loads into open_clip's model
    assert torch.equal(model.text_projection.detach().half(), state["text_projection"])


def test_record_beside_the_checkpoint(tiny_pretrain):
    root, rec = tiny_pretrain
    saved = json.loads((root / "weights" / rec["file"]).with_suffix(".json").read_text())
    assert saved["sha256"] == pretrain.sha256(root / "weights" / rec["file"])
    assert saved["corpus"]["n_images"] == 90 and saved["train"]["epochs"] == 1 and saved["train"]["pretrained"] is None
    assert saved["example_captions"] and saved["overlap_with_benchmark"] is None
    assert pretrain.verify(root / "weights")["sha256"] == saved["sha256"]


def test_a_changed_checkpoint_fails_verification(tiny_pretrain, tmp_path):
    root, rec = tiny_pretrain
    for name in (rec["file"], rec["file"].replace(".safetensors", ".json")):
        (tmp_path / name).write_bytes((root / "weights" / name).read_bytes())
    state = checkpoints.load(tmp_path / rec["file"])
    state["logit_scale"] = state["logit_scale"] + 1
    checkpoints.save(state, tmp_path / rec["file"])
    with pytest.raises(checkpoints.CheckpointError, match="sha256"):
        pretrain.verify(tmp_path)


def test_shipped_checkpoint():
    """What the book starts from: present, small, matching its recorded sha256, with no benchmark caption or
    image in its corpus, and loadable by tag."""
    rec = pretrain.verify()
    path = WEIGHTS_DIR / rec["file"]
    assert path.stat().st_size <= 20 * 2**20
    assert bundled_weights("osdpm-tiny-vit", "synthpre") == path and bundled_weights("ViT-B-32", "synthpre") is None
    ov = rec["overlap_with_benchmark"]
    assert ov["shared captions"] == 0 and ov["shared filenames"] == 0
    # perceptual-hash matches within 8 bits are listed for inspection; those of the shipped corpus are chance matches
    # of near-uniform layouts (docs/pretrain_phash_pairs.png), a handful among 16,000 x 2,500 images
    assert ov["images a matched"] <= 0.001 * rec["corpus"]["n_images"]
    assert len(ov["near-duplicate pairs"]) >= ov["images a matched"]
    assert rec["corpus"]["n_images"] >= 5 * 2500 and rec["train"]["variant"] == "clip"
    build_clip("osdpm-tiny-vit", "synthpre")
