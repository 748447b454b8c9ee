"""Safe checkpoint loading: tensors only (weights_only / safetensors), clear errors for pickles that would run
code, truncated files and checkpoints of another architecture."""

import ast
import dataclasses
import pickle
from pathlib import Path

import open_clip
import pytest
import torch

from osdpm_lib import checkpoints, profiles
from osdpm_lib.checkpoints import CheckpointError
from osdpm_lib.models import build_clip
from osdpm_lib.train import build_model


class _RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _RunsCode(marker)}, bad)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: .*could run code"):
        checkpoints.load(bad)
    assert not marker.exists()
    # the same through every entry point that takes a checkpoint path
    with pytest.raises(CheckpointError, match="refused"):
        build_clip("osdpm-tiny-vit", str(bad))
    assert not marker.exists()
    # a plain pickle file (not torch's zip format) too
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match="raw.bin"):
        checkpoints.load(raw)
    assert not marker.exists()


def test_safetensors_round_trip_and_build_clip(tmp_path, tiny_clip):
    path = tmp_path / "tiny.safetensors"
    checkpoints.save(tiny_clip.state_dict(), path)
    loaded = build_clip("osdpm-tiny-vit", str(path))
    for k, v in tiny_clip.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: not a readable \.safetensors"):
        checkpoints.load(path)


def test_truncated_checkpoint(tmp_path, tiny_clip):
    path = tmp_path / "cut.pt"
    torch.save(tiny_clip.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable PyTorch checkpoint"):
        checkpoints.load(path)


def test_checkpoint_of_another_architecture(tmp_path, tiny_clip):
    other = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                           text_cfg={"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2,
                                     "layers": 1})
    path = tmp_path / "resnet.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"resnet\.pt: does not fit open_clip model 'osdpm-tiny-vit'"):
        build_clip("osdpm-tiny-vit", str(path))
    # our own loader (best.pt, last.pt) lists what does not fit
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_into(tiny_clip, other.state_dict(), path, "model 'osdpm-tiny-vit'")
    msg = str(err.value)
    assert "resnet.pt: does not fit model 'osdpm-tiny-vit'" in msg
    assert "missing keys" in msg and "unexpected keys" in msg


def test_best_pt_of_another_variant_is_a_clear_error(tmp_path):
    """A best.pt whose weights do not match the config stored beside them (e.g. edited by hand)."""
    from osdpm_lib.train import load_trained

    clip_model, _, _ = build_model(profiles.train_config("ci", "clip"))
    cfg = profiles.train_config("ci", "osdpm")
    torch.save({"model": clip_model.state_dict(), "config": dataclasses.asdict(cfg), "epoch": 1},
               tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"best\.pt: does not fit model 'osdpm-tiny-vit' \(osdpm\).*missing keys"):
        load_trained(tmp_path)


def test_every_torch_load_is_checkpoints_load():
    """The library calls torch.load in one place only, checkpoints.load (weights_only=True)."""
    root = Path(__file__).resolve().parents[1] / "osdpm_lib"
    calls = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, kw.get("weights_only")))
    assert calls == [("checkpoints.py", "True")]
