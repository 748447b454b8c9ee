import json

import numpy as np
import pandas as pd
import pytest

from osdpm_lib import ablation, profiles
from osdpm_lib.evaluate import Encoded


def test_rows_and_their_configurations():
    zs = ablation.row_config("default", "zero-shot", 0)
    assert zs.variant == "clip" and zs.epochs == 0 and zs.pretrained == "synthpre"
    fr = ablation.row_config("default", "frozen", 3)
    assert fr.variant == "osdpm" and fr.freeze_backbone and fr.seed == 3
    assert not ablation.row_config("default", "osdpm", 0).freeze_backbone
    assert ablation.row_seeds("zero-shot", [0, 1, 2]) == [0] and ablation.row_seeds("clip", [0, 1, 2]) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown ablation row"):
        ablation.row_config("default", "clip+osfcm", 0)


def test_profile_keys_reach_the_config(monkeypatch):
    monkeypatch.setitem(profiles.PROFILES, "t", {"seeds": [0], "n_images": 10, "warmup_frac": 0.3, "epochs": 2})
    cfg = profiles.train_config("t", "clip", 0)
    assert cfg.warmup_frac == 0.3 and cfg.epochs == 2
    assert profiles.train_config("t", "clip", 0, epochs=5, lr=None).epochs == 5
    monkeypatch.setitem(profiles.PROFILES, "bad", {"seeds": [0], "warmup": 0.3})
    with pytest.raises(KeyError, match="warmup"):
        profiles.train_config("bad")


def test_default_profile_has_the_power_it_promises():
    p = profiles.get("default")
    assert p["n_test"] >= 1000 and p["n_val"] >= 300 and len(p["seeds"]) >= 5
    assert profiles.data_sizes("default") == {k: p[k] for k in ("n_images", "image_size", "n_val", "n_test")}


def _fake_run(runs_dir, row, seed, sims_noise, rng, n=60):
    """A run folder holding test embeddings in which image i and its captions share a direction."""
    d = 16
    base = rng.standard_normal((n, d))
    texts = np.repeat(base, 2, axis=0) + sims_noise * rng.standard_normal((2 * n, d))
    folder = ablation.run_dir(runs_dir, row, seed)
    folder.mkdir(parents=True)
    np.savez(folder / "test_encoded.npz", images=base.astype(np.float32), texts=texts.astype(np.float32),
             caption_image=np.repeat(np.arange(n), 2))
    (folder / "config.json").write_text(json.dumps({"ties": "expected"}))
    enc = Encoded(base.astype(np.float32), texts.astype(np.float32), np.repeat(np.arange(n), 2))
    return {"variant": row, "seed": seed, **enc.metrics()}


def test_comparisons_from_stored_test_embeddings(tmp_path):
    rows = []
    for seed in range(3):
        # the same test images (same rng state per seed) for every row; 'osdpm' has less noise
        for row, noise in (("clip", 3.0), ("osdpm", 0.5)):
            rows.append(_fake_run(tmp_path, row, seed, noise, np.random.default_rng(seed)))
    rows.append(_fake_run(tmp_path, "zero-shot", 0, 6.0, np.random.default_rng(0)))
    runs = pd.DataFrame(rows)
    paired = ablation.comparisons(runs, tmp_path, n_boot=300).set_index("comparison")
    assert list(paired.index) == ["osdpm − clip", "clip − zero-shot"]      # pairs whose rows both ran
    r = paired.loc["osdpm − clip"]
    expect = (runs[runs.variant == "osdpm"].rsum.to_numpy() - runs[runs.variant == "clip"].rsum.to_numpy()).mean()
    assert r["diff"] == pytest.approx(expect) and r["n_seeds"] == 3 and r["n_images"] == 60
    assert r["ci_low"] > 0 and "excludes 0" in r["verdict"]


def test_dapn_growth_reads_each_runs_ratio(tmp_path):
    rows = []
    for variant, ratios in (("clip", [float("nan")] * 3), ("clip+dapn", [0.0, 0.01, 0.03]), ("osdpm", [0.0, 0.02, 0.05])):
        for seed in (0, 1):
            d = ablation.run_dir(tmp_path, variant, seed)
            d.mkdir(parents=True)
            pd.DataFrame({"epoch": [0, 1, 2], "val_rsum": [1, 2, 3],
                          "dapn_ratio": [r * (1 + seed) for r in ratios]}).to_csv(d / "metrics.csv", index=False)
            rows.append({"variant": variant, "seed": seed})
    growth = ablation.dapn_growth(pd.DataFrame(rows), tmp_path)
    assert set(growth.variant) == {"clip+dapn", "osdpm"}                   # clip has no DAPN: left out
    assert len(growth) == 2 * 2 * 3
    last = growth[(growth.variant == "osdpm") & (growth.epoch == 2)].sort_values("seed").dapn_ratio.tolist()
    assert last == pytest.approx([0.05, 0.10])
