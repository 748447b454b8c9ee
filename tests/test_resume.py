"""Trustworthy runs: resume after a crash or a kill gives the uninterrupted numbers, checkpoints are written
atomically, a run folder is never silently overwritten, and the same seed gives the same run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from osdpm_lib import checkpoints, profiles, synth
from osdpm_lib import train as train_mod
from osdpm_lib.train import RunExistsError, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedded")
    synth.generate(d, n_images=150, seed=3)
    return d


def config(**kw):
    kw = {"epochs": 3, "batch_size": 16, "progress": False} | kw
    return profiles.train_config("ci", kw.pop("variant", "osdpm"), kw.pop("seed", 0), **kw)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    return run_dir, train(config(), data_dir, run_dir)


def same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same numbers: test metrics, per-epoch validation, selected weights."""
    ra, rb = (json.loads((d / "test_metrics.json").read_text()) for d in (a, b))
    assert ra["test"] == rb["test"] and ra["best_epoch"] == rb["best_epoch"]
    ha, hb = (pd.read_csv(d / "metrics.csv") for d in (a, b))
    cols = [c for c in ha.columns if c.startswith(("val_", "loss_")) or c in ("epoch", "lr")]
    pd.testing.assert_frame_equal(ha[cols], hb[cols])
    wa, wb = (checkpoints.load(d / "best.pt")["model"] for d in (a, b))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_crash_mid_epoch_resumes_to_the_same_numbers(data_dir, reference, tmp_path, monkeypatch, capsys):
    ref_dir, _ = reference
    run_dir = tmp_path / "run"
    cfg = config(checkpoint_every=2)                     # 7 steps per epoch: checkpoints after steps 2, 4, 6
    real_call, calls = train_mod.Stepper.__call__, []

    def crashing(self, *a, **kw):
        calls.append(1)
        if len(calls) == 7 + 4:                           # epoch 2, fifth step: last checkpoint after its 4th
            raise RuntimeError("simulated crash")
        return real_call(self, *a, **kw)

    monkeypatch.setattr(train_mod.Stepper, "__call__", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, data_dir, run_dir)
    state = checkpoints.load(run_dir / "last.pt")
    assert (state["epoch"], state["step"]) == (2, 4)
    assert not (run_dir / "test_metrics.json").exists()
    monkeypatch.setattr(train_mod.Stepper, "__call__", real_call)
    calls.clear()
    train(cfg, data_dir, run_dir)
    assert "resuming at epoch 2, step 4" in capsys.readouterr().out
    same_run(ref_dir, run_dir)
    assert not (run_dir / "last.pt").exists()            # finished: the resume state is removed


def test_killed_process_resumes_to_the_same_numbers(data_dir, reference, tmp_path):
    """A real SIGKILL of a training process, wherever it lands after the first checkpoint."""
    ref_dir, _ = reference
    run_dir = tmp_path / "run"
    # the same number of CPU threads as this process: float sums (and so the weights) depend on it
    script = (f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"
              f"from osdpm_lib import profiles; from osdpm_lib.train import train\n"
              f"cfg = profiles.train_config('ci', 'osdpm', 0, epochs=3, batch_size=16, progress=False, "
              f"checkpoint_every=1)\ntrain(cfg, {str(data_dir)!r}, {str(run_dir)!r})\n")
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "last.pt").exists():
            assert proc.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "test_metrics.json").exists()
    state = checkpoints.load(run_dir / "last.pt")          # the target file is whole
    assert state["epoch"] >= 1
    train(config(), data_dir, run_dir)
    same_run(ref_dir, run_dir)


def test_other_configuration_never_overwrites(data_dir, reference, tmp_path):
    ref_dir, ref = reference
    before = {p.name: p.read_bytes() for p in ref_dir.iterdir()}
    with pytest.raises(RunExistsError, match="another configuration") as err:
        train(config(lr=5e-4), data_dir, ref_dir)
    assert str(ref_dir) in str(err.value) and "nothing was overwritten" in str(err.value)
    other = tmp_path / "other_data"
    synth.generate(other, n_images=150, seed=4)
    with pytest.raises(RunExistsError, match="data_key"):
        train(config(), other, ref_dir)
    changed = tmp_path / "changed_images"                   # same annotations, one image file replaced
    shutil.copytree(data_dir, changed, ignore=shutil.ignore_patterns(".cache"))
    first = sorted((changed / "images").iterdir())[0]
    Image.open(first).convert("RGB").rotate(90).save(first, quality=50)
    with pytest.raises(RunExistsError, match="data_key"):
        train(config(), changed, ref_dir)
    assert {p.name: p.read_bytes() for p in ref_dir.iterdir()} == before
    assert train(config(), data_dir, ref_dir) == ref        # the same configuration is reused as it is


def test_overwrite_moves_the_earlier_run_aside(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    first = train(config(epochs=1, variant="clip"), data_dir, run_dir)
    second = train(config(epochs=1, variant="clip", lr=5e-4), data_dir, run_dir, overwrite=True)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert json.loads((aside / "test_metrics.json").read_text()) == first
    assert json.loads((run_dir / "test_metrics.json").read_text()) == second
    assert first["config_key"] != second["config_key"]


def test_foreign_folder_is_not_taken(data_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a run folder"):
        train(config(epochs=1), data_dir, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    checkpoints.save({"w": torch.ones(3)}, path)

    def torn(obj, f, *a, **kw):
        Path(f).write_bytes(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoints.load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]     # no temporary file left behind


def test_same_seed_same_run_other_seed_differs(data_dir, tmp_path):
    a = train(config(epochs=1, variant="clip", seed=1), data_dir, tmp_path / "a")
    b = train(config(epochs=1, variant="clip", seed=1), data_dir, tmp_path / "b")
    c = train(config(epochs=1, variant="clip", seed=2), data_dir, tmp_path / "c")
    same_run(tmp_path / "a", tmp_path / "b")
    assert a == {**b, "train_s": a["train_s"]}
    wa, wc = (checkpoints.load(tmp_path / d / "best.pt")["model"] for d in "ac")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert c["config_key"] != a["config_key"]
