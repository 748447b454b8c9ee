"""``python -m osdpm_lib.train``: under ``torchrun --standalone --nproc-per-node 2`` (gloo, CPU) it gives the numbers of
one process on the same global batch; the chain picks its runs up without training again; bad options are refused
with a clear message.

The model is the tests' tiny one (``osdpm-tiny-vit``, 64 px, as in ``conftest.py`` and ``test_ddp.py``, here from the
``ci`` profile's shipped start) on an 80-image embedded benchmark, two epochs at a global batch of 16."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from osdpm_lib import ablation, profiles, synth, train_cli
from osdpm_lib import train as train_mod
from osdpm_lib.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 2, "batch_size": 16}          # the run's configuration beyond the ci profile
ARGS = ["--profile", "ci", "--variant", "osdpm", "--seed", "0", "--set", "progress=false"] + \
       [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedded")
    synth.generate(d, n_images=80, n_val=16, n_test=16, seed=0)
    return d


@pytest.fixture(scope="module")
def two_processes(data_dir, tmp_path_factory):
    """The command line under torchrun's standalone mode, 2 CPU processes (gloo)."""
    runs = tmp_path_factory.mktemp("runs_world2")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")       # loopback: no dependence on how the host name resolves
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "osdpm_lib.train", *ARGS, "--dataset", str(data_dir), "--runs-dir", str(runs),
                           "--backend", "gloo"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return runs / "osdpm_s0", proc


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs_world1")
    assert train_cli.main([*ARGS, "--dataset", str(data_dir), "--runs-dir", str(runs)]) == 0
    return runs / "osdpm_s0"


def test_two_processes_give_the_numbers_of_one(two_processes, one_process):
    run2, proc = two_processes
    r1, r2 = (json.loads((d / "test_metrics.json").read_text()) for d in (one_process, run2))
    assert r2["best_epoch"] == r1["best_epoch"]
    assert r2["test"] == pytest.approx(r1["test"], rel=1e-6)
    h1, h2 = (pd.read_csv(d / "metrics.csv") for d in (one_process, run2))
    assert list(h2.epoch) == [0, 1, 2]
    cols = [c for c in h1.columns if c.startswith(("val_", "loss_"))]
    # losses: the mean over ranks of each rank's loss on its half of the global batch
    pd.testing.assert_frame_equal(h2[cols], h1[cols], rtol=1e-5)
    c1, c2 = (json.loads((d / "config.json").read_text()) for d in (one_process, run2))
    assert (c1["world_size"], c2["world_size"]) == (1, 2)
    assert c1["config_key"] == c2["config_key"] and c1["batch_size"] == c2["batch_size"] == 16
    # rank 0 alone prints: one result line
    lines = [ln for ln in proc.stdout.splitlines() if "selected epoch" in ln]
    assert len(lines) == 1 and "(2 processes)" in lines[0], proc.stdout


def test_the_chain_reuses_a_run_made_under_another_world_size(two_processes, data_dir, monkeypatch):
    """Notebook 05 (``ablation.run_all``) and notebook 03 (``train`` of ``profiles.train_config``), in one process,
    return the 2-process run as it is: no model is built, nothing is rewritten."""
    run2, _ = two_processes
    monkeypatch.setitem(profiles.PROFILES, "ci", profiles.PROFILES["ci"] | TINY | {"seeds": [0]})

    def no_training(*a, **kw):
        raise AssertionError("the chain trained again")

    monkeypatch.setattr(train_mod, "build_model", no_training)
    saved = json.loads((run2 / "test_metrics.json").read_text())
    stamp = {f.name: f.stat().st_mtime_ns for f in run2.iterdir()}
    runs = ablation.run_all("ci", data_dir, run2.parent, rows=("osdpm",))
    assert runs.to_dict("records") == [{"variant": "osdpm", "seed": 0, "best_epoch": saved["best_epoch"],
                                        "train_s": saved["train_s"], **saved["test"]}]
    assert train(profiles.train_config("ci", "osdpm", 0), data_dir, run2) == saved
    assert {f.name: f.stat().st_mtime_ns for f in run2.iterdir()} == stamp


def test_typed_settings():
    assert train_cli.set_value("lr=2e-5") == ("lr", 2e-5)
    assert train_cli.set_value("epochs=10") == ("epochs", 10)
    assert train_cli.set_value("augment=false") == ("augment", False)
    assert train_cli.set_value("extra={\"note\": 1}") == ("extra", {"note": 1})
    pl = train_cli.plan(["--profile", "finetune", "--variant", "all", "--seed", "all", "--model", "ViT-B-32",
                         "--pretrained", "openai", "--set", "precision=bf16", "--runs-dir", "/tmp/r"])
    rows = [(cfg.variant, cfg.seed, cfg.freeze_backbone, cfg.epochs, d.name) for cfg, d in pl.runs]
    assert rows[0] == ("clip", 0, False, 0, "zero-shot_s0") and len(rows) == 1 + 4 * 3   # zero-shot: one seed
    epochs = profiles.get("finetune")["epochs"]
    assert ("osdpm", 2, True, epochs, "frozen_s2") in rows
    assert all(cfg.model == "ViT-B-32" and cfg.pretrained == "openai" and cfg.precision == "bf16" for cfg, _ in pl.runs)
    # the configuration the chain builds for the same run
    assert pl.runs[-1][0].key() == ablation.row_config("finetune", "osdpm", 2, model="ViT-B-32",
                                                        pretrained="openai", precision="bf16").key()


@pytest.mark.parametrize("args, message", [
    (["--set", "warmup=0.3"], "'warmup' is not a TrainConfig field"),
    (["--set", "epochs=ten"], "epochs takes int"),
    (["--set", "freeze_backbone=maybe"], "freeze_backbone takes bool"),
    (["--set", "epochs"], "expected KEY=VALUE"),
    (["--set", "seed=1"], "use --seed"),
    (["--set", "ties=loose"], "ties=loose: choose one of"),
    (["--set", "precision=fp8"], "precision=fp8: choose one of"),
    (["--seed", "first"], "seeds are integers or 'all'"),
    (["--variant", "all", "--run-dir", "/tmp/x"], "--run-dir names one run folder"),
    (["--dataset", "/nonexistent/rsicd"], "--dataset /nonexistent/rsicd: no such folder"),
])
def test_bad_options_are_refused_clearly(args, message, capsys):
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_argparse_refuses_an_unknown_row(capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--variant", "clip+osfcm"])
    assert exc.value.code == 2 and "invalid choice: 'clip+osfcm'" in capsys.readouterr().err


def test_another_configuration_in_a_run_folder_is_refused(one_process, data_dir, capsys):
    before = (one_process / "test_metrics.json").read_text()
    assert train_cli.main([*ARGS, "--set", "lr=0.5", "--dataset", str(data_dir), "--run-dir", str(one_process)]) == 2
    assert "holds a run of another configuration" in capsys.readouterr().err
    assert (one_process / "test_metrics.json").read_text() == before


def test_a_checkpoint_file_is_one_identity_however_its_path_is_spelled(tmp_path, monkeypatch):
    """The runner passes a local checkpoint relative to the results folder, a user gives it as they like."""
    ckpt = tmp_path / "ckpt" / "RemoteCLIP-ViT-B-32.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path / "results")
    def key(pretrained):
        return profiles.train_config("finetune", "clip", 0, model="ViT-B-32", pretrained=pretrained).key()

    assert key("../ckpt/RemoteCLIP-ViT-B-32.pt") == key(str(ckpt)) != key("openai")
