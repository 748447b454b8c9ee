import json

import numpy as np
import pandas as pd
import pytest
import torch

from osdpm_lib import profiles, synth
from osdpm_lib.evaluate import Encoded
from osdpm_lib.metrics import retrieval_metrics
from osdpm_lib.train import load_trained, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedded")
    synth.generate(d, n_images=150, seed=3)
    return d


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    cfg = profiles.train_config("ci", "osdpm", 0, epochs=3, batch_size=16, progress=False)
    run_dir = tmp_path_factory.mktemp("runs") / "osdpm_s0"
    return cfg, run_dir, train(cfg, data_dir, run_dir)


def test_run_folder(run):
    cfg, run_dir, res = run
    for f in ("config.json", "metrics.csv", "best.pt", "test_metrics.json", "embeddings.npz", "test_encoded.npz"):
        assert (run_dir / f).exists(), f
    assert json.loads((run_dir / "config.json").read_text())["variant"] == "osdpm"
    hist = pd.read_csv(run_dir / "metrics.csv")
    assert list(hist.epoch) == [1, 2, 3]
    assert {"loss_total", "loss_contrastive", "loss_osfcm", "val_rsum", "pairs_per_s"} <= set(hist.columns)
    assert (hist.loss_osfcm > 0).all()


def test_selection_on_validation_only(run):
    _, run_dir, res = run
    hist = pd.read_csv(run_dir / "metrics.csv")
    assert res["best_epoch"] == int(hist.epoch[hist.val_rsum.idxmax()])   # first maximum of val Rsum
    assert res["best_val_rsum"] == pytest.approx(hist.val_rsum.max())
    assert not any(c.startswith("test") for c in hist.columns)


def test_stored_test_metrics_match_stored_embeddings(run):
    _, run_dir, res = run
    enc = Encoded(**np.load(run_dir / "test_encoded.npz"))
    assert retrieval_metrics(enc.sims(), enc.caption_image) == pytest.approx(res["test"])
    stages = np.load(run_dir / "embeddings.npz")
    assert set(stages.files) == {"start", "mid", "end"}


def test_reloaded_model_reproduces_test_embeddings(run, data_dir):
    from osdpm_lib.cache import Normalizer, SplitTensors
    from osdpm_lib.data import load

    _, run_dir, _ = run
    model, tok, pre, cfg = load_trained(run_dir)
    split = SplitTensors.build(load(data_dir).split("test"), data_dir / "images", pre["image_size"], tok)
    with torch.no_grad():
        z = model.encode_image(Normalizer(pre["mean"], pre["std"])(split.images)).numpy()
    np.testing.assert_allclose(z, np.load(run_dir / "test_encoded.npz")["images"], atol=1e-5)


def test_finished_run_is_reused(run, data_dir):
    cfg, run_dir, res = run
    mtime = (run_dir / "best.pt").stat().st_mtime_ns
    assert train(cfg, data_dir, run_dir) == res
    assert (run_dir / "best.pt").stat().st_mtime_ns == mtime
