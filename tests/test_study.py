"""The study's protocol: untouched test folds (hashes, and no tuning/design/book run may read one), tuning that
follows validation only (with grid extension on an edge), comparisons paired by seed label whatever the order of the
runs table, and the study's configurations."""

import json

import numpy as np
import pandas as pd
import pytest

from osdpm_lib import folds, study, tuning
from osdpm_lib.stats import compare_runs, pair_by_seed, per_image_contributions
from osdpm_lib.synth import generate
from osdpm_lib.train import TrainConfig, train


FRESH = folds.fold_name(folds.FIRST_FRESH)       # a fold no draw has spent


@pytest.fixture
def fold(tmp_path, monkeypatch):
    """A tiny fresh fold registered in a temporary registry."""
    monkeypatch.setattr(folds, "REGISTRY", tmp_path / "study_folds.json")
    d = tmp_path / FRESH
    generate(d, n_images=24, seed=folds.FOLD_SEEDS[0], image_size=32, n_val=0, n_test=20)
    folds.register(d, FRESH, folds.FOLD_SEEDS[0], 32)
    return d


def test_tuning_design_and_book_runs_cannot_read_a_study_fold(fold, tmp_path):
    for purpose in ("tuning", "design", "book"):
        with pytest.raises(folds.StudyFoldError, match=f"{FRESH} .*a '{purpose}' run may not read it"):
            folds.refuse_study_fold(fold, purpose)
    folds.refuse_study_fold(fold, "study")              # the study's final runs may
    folds.refuse_study_fold(tmp_path, "tuning")         # any other folder is not a fold
    for purpose in ("tuning", "design"):                # train refuses before any model is built
        cfg = TrainConfig(epochs=1, purpose=purpose, score_test=False, progress=False)
        with pytest.raises(folds.StudyFoldError, match="only the study's final runs"):
            train(cfg, fold, tmp_path / f"run_{purpose}")
    with pytest.raises(folds.StudyFoldError):
        train(TrainConfig(epochs=1, progress=False), fold, tmp_path / "run_book")
    run = tmp_path / "tuning_run"                       # scoring a fold from a tuning run's selected model
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"purpose": "tuning"}))
    with pytest.raises(folds.StudyFoldError, match="a 'tuning' run may not read it"):
        study.score(run, fold, FRESH)
    assert not (run / "folds").exists()


def test_design_runs_may_read_a_spent_fold_and_nothing_else(tmp_path, monkeypatch):
    """A spent fold (its draw's verdict was read) is design data for the next draw: the pilot's runs may score it;
    tuning and book runs still may not, and a fresh fold stays the final runs' alone."""
    monkeypatch.setattr(folds, "REGISTRY", tmp_path / "study_folds.json")
    spent = tmp_path / "fold12"
    generate(spent, n_images=24, seed=folds.FOLD_SEEDS[12], image_size=32, n_val=0, n_test=20)
    folds.register(spent, "fold12", folds.FOLD_SEEDS[12], 32)
    assert "fold12" in folds.SPENT
    folds.refuse_study_fold(spent, "design")
    folds.refuse_study_fold(spent, "study")
    for purpose in ("tuning", "book"):
        with pytest.raises(folds.StudyFoldError, match=f"fold12 .*a '{purpose}' run may not read it"):
            folds.refuse_study_fold(spent, purpose)


def test_fold_hashes_detect_a_changed_fold(fold):
    entry = folds.registered()[FRESH]
    assert folds.content_hash(fold) == {k: entry[k] for k in ("json_sha256", "images_sha256", "n_test")}
    assert entry["n_test"] == 20 and folds.is_study_fold(fold) == FRESH
    img = sorted((fold / "images").iterdir())[0]
    img.write_bytes(img.read_bytes() + b"\0")
    with pytest.raises(ValueError, match=f"study fold {FRESH} differs from the one recorded"):
        folds.verify(fold, FRESH)
    with pytest.raises(ValueError, match="a fold's content never changes once recorded"):
        folds.register(fold, FRESH, folds.FOLD_SEEDS[0], 32)


@pytest.mark.skipif(not folds.REGISTRY.is_file(), reason="no study folds registered yet")
def test_the_registered_first_fold_regenerates_identically(tmp_path):
    d = folds.generate_fold(tmp_path / "fold00", folds.FOLD_SEEDS[0])
    entry = folds.registered()["fold00"]
    assert folds.content_hash(d) == {k: entry[k] for k in ("json_sha256", "images_sha256", "n_test")}


def test_fold_seeds_are_new():
    used = {0, 100, 101, 102, *study.TUNE_SEEDS, *study.PILOT_SEEDS, study.DATA["seed"], 20251}
    assert not used & set(folds.FOLD_SEEDS) and folds.PILOT_SEED not in folds.FOLD_SEEDS


# ------------------------------------------------------------------------------------------------ tuning
def test_choice_follows_validation_not_test():
    rows = pd.DataFrame({"lr": [1e-4, 1e-4, 1e-3, 1e-3, 3e-3, 3e-3],
                         "best_val_rsum": [50.0, 52.0, 60.0, 58.0, 55.0, 57.0],
                         "test_rsum": [90.0, 91.0, 10.0, 12.0, 30.0, 31.0]})     # test would pick 1e-4
    assert study.choose_on_grid(rows, "lr") == (1e-3, "inside")
    assert study.choose_on_grid(rows.iloc[:4], "lr") == (1e-3, "high")
    tie = pd.DataFrame({"lr": [1e-4, 1e-3], "best_val_rsum": [50.0, 50.0]})
    assert study.choose_on_grid(tie, "lr") == (1e-4, "low")          # the smaller value on a tie


def test_tune_axis_extends_an_edge(monkeypatch):
    peak = 9e-3      # validation Rsum peaks beyond the grid's top: the grid extends x3 until the choice is inside

    def fake_rows(variant, settings, lay, workers):
        return pd.DataFrame([{"variant": variant, "lr": lr, "module_lr": mlr, "seed": s,
                              "best_val_rsum": -abs(np.log(lr / peak)) + 0.01 * s, "best_epoch": 3, "epochs_run": 6,
                              "train_s": 1.0} for lr, mlr in settings for s in study.TUNE_SEEDS])

    monkeypatch.setattr(study, "_grid_rows", fake_rows)
    best, rows = study.tune_axis("clip", "lr", (3e-4, 1e-3, 3e-3), {"module_lr": None}, study.Layout(), 1)
    assert best == pytest.approx(9e-3) and sorted(rows["lr"].unique()) == pytest.approx([3e-4, 1e-3, 3e-3, 9e-3, 2.7e-2])
    assert rows.groupby("lr")["seed"].nunique().min() == 3


def test_tuning_runs_score_no_test_split(monkeypatch, tmp_path):
    seen = []

    def fake_train(cfg, data_dir, run_dir, **kw):
        seen.append(cfg)
        return {"best_val_rsum": 1.0, "best_epoch": 1, "train_s": 0.0, "epochs_run": 1}

    monkeypatch.setattr(tuning, "train", fake_train)
    tuning.validation_table("default", tmp_path, tmp_path, "clip", [{"lr": 1e-3}])
    assert all(not c.score_test and c.purpose == "tuning" for c in seen)
    cfgs = [study.config(v, 200, "tuning") for v in study.VARIANTS] + [study.config("osdpm", 1000, "study")]
    assert all(not c.score_test and c.patience == study.PATIENCE and c.epochs == study.MAX_EPOCHS for c in cfgs)
    assert [c.purpose for c in cfgs] == ["tuning"] * 3 + ["study"]


# ------------------------------------------------------------------------------------------------ pairing
def _contrib(seed, n=15):
    rng = np.random.default_rng(seed)
    cap = np.repeat(np.arange(n), 2)
    s = rng.normal(size=(n, 2 * n))
    s[cap, np.arange(2 * n)] += 1.0
    return per_image_contributions(s, cap)


def test_book_comparisons_pair_by_seed_label():
    runs = {"osdpm": {s: _contrib(10 + s) for s in (0, 1, 2)}, "clip": {s: _contrib(20 + s) for s in (0, 1, 2)},
            "zero-shot": {0: _contrib(99)}}
    pairs = [("osdpm", "clip"), ("clip", "zero-shot")]
    a = compare_runs(runs, pairs, n_boot=200)
    shuffled = {"clip": {s: runs["clip"][s] for s in (2, 0, 1)}, "osdpm": {s: runs["osdpm"][s] for s in (1, 2, 0)},
                "zero-shot": runs["zero-shot"]}
    pd.testing.assert_frame_equal(a, compare_runs(shuffled, pairs, n_boot=200))
    del shuffled["clip"][1]
    with pytest.raises(ValueError, match=r"osdpm seed\(s\) \[1\] have no clip run"):
        compare_runs(shuffled, pairs, n_boot=10)
    with pytest.raises(ValueError, match="give both as"):
        pair_by_seed(runs["osdpm"], [runs["clip"][0]], ("osdpm", "clip"))


def test_ablation_contributions_reject_a_duplicated_run(tmp_path):
    from osdpm_lib import ablation
    from osdpm_lib.evaluate import Encoded

    for v, s in (("clip", 0), ("clip", 1)):
        d = ablation.run_dir(tmp_path, v, s)
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        rng = np.random.default_rng(s)
        Encoded(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32),
                np.repeat(np.arange(4), 2)).save(d / "test_encoded.npz")
    table = pd.DataFrame({"variant": ["clip", "clip"], "seed": [1, 0]})
    got = ablation.contributions(table, tmp_path)
    assert list(got) == ["clip"] and sorted(got["clip"]) == [0, 1]
    with pytest.raises(ValueError, match="lists clip seed 1 twice"):
        ablation.contributions(pd.DataFrame({"variant": ["clip"] * 3, "seed": [1, 0, 1]}), tmp_path)


def test_book_tuning_grid_follows_validation_not_test():
    table = pd.DataFrame({"lr": [1e-4, 1e-3, 1e-3, 3e-3], "epochs": [3, 2, 3, 4],
                          "best_val_rsum": [110.0, 130.0, 130.0, 150.0],
                          "test_rsum": [99.0, 10.0, 11.0, 12.0]})     # test would choose 1e-4
    assert tuning.choose_backbone(table) == {"lr": 1e-3, "epochs": 2}    # 4 epochs not affordable; fewer on a tie
    comps = pd.DataFrame({"comparison": ["target-high − before", "warmup-30 − before"], "diff": [-0.5, 0.8],
                          "ci_high": [0.2, 2.0], "test_diff": [5.0, -5.0]})
    picks = tuning.choose(comps, "before", {"osfcm_target": ["target-high"], "osfcm_warmup_frac": ["warmup-30"]})
    assert picks == {"osfcm_target": "target-high", "osfcm_warmup_frac": "warmup-30"}   # validation's, not test's


def _stored_run(run_dir, cfg, epochs_run, max_epochs=12):
    """A finished run's config.json and selection.json as train writes them (no weights needed here)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"min_epochs": cfg.min_epochs, "purpose": cfg.purpose,
                                                     "config_key": cfg.key(), "data_key": "d"}))
    (run_dir / "selection.json").write_text(json.dumps({"config_key": cfg.key(), "data_key": "d", "best_epoch": 3,
                                                        "epochs_run": epochs_run, "max_epochs": max_epochs}))


def test_carry_over_only_runs_the_new_stopping_rule_reproduces(tmp_path):
    old = study.config("clip", 1000, "study", min_epochs=6)
    new = study.config("clip", 1000, "design", min_epochs=9)
    assert old.key() != new.key()
    cases = {"stopped_at_7": (7, 12, "retrain"), "stopped_at_9": (9, 12, "carried"), "ran_to_cap": (12, 12, "carried"),
             "short_cap": (8, 8, "carried")}
    for name, (ran, cap, want) in cases.items():
        src = tmp_path / "draw1" / name
        _stored_run(src, old, ran, cap)
        dst = tmp_path / "pilot" / name
        assert study.carry_over(new, dst, src) == want, name
        if want == "carried":     # moved, re-keyed, and the old identity recorded
            assert not src.exists()
            stored = json.loads((dst / "config.json").read_text())
            assert stored["config_key"] == new.key() and stored["purpose"] == "design" and stored["min_epochs"] == 9
            assert stored["carried_over"]["config_key"] == old.key() and stored["carried_over"]["min_epochs"] == 6
            assert json.loads((dst / "selection.json").read_text())["config_key"] == new.key()
            assert study.carry_over(new, dst) == "same"
        else:
            assert src.exists() and not dst.exists()
    other = study.config("clip", 1000, "study", min_epochs=6, lr=3e-3)    # another lr: never carried
    _stored_run(tmp_path / "lr" / "run", other, 12)
    assert study.carry_over(new, tmp_path / "lr" / "run") == "retrain"
    looser = study.config("clip", 1000, "design", min_epochs=12)          # a smaller min_epochs stored: only if
    assert study.carry_over(looser, tmp_path / "lr2") == "none"            # nothing is there


def test_the_third_draw_never_uses_a_spent_fold(tmp_path, monkeypatch):
    assert folds.FIRST_FRESH == 20 and set(folds.SPENT) == {f"fold{k:02d}" for k in range(20)}
    made = []
    monkeypatch.setattr(folds, "generate_fold", lambda d, seed, *a: made.append((d.name, seed)) or d)
    monkeypatch.setattr(folds, "verify", lambda d, name: {})
    folds.generate_folds(tmp_path, 5, first=folds.FIRST_FRESH)
    assert made == [(f"fold{k}", 9101 + k) for k in range(20, 25)]
    assert study.final_fold_names(5) == [n for n, _ in made]
    assert not set(n for n, _ in made) & set(folds.SPENT)
    with pytest.raises(ValueError, match="only 40 folds have seeds"):
        folds.generate_folds(tmp_path, 21, first=folds.FIRST_FRESH)
    assert study.FINAL_SEED0 > max(study.DRAW2_SEEDS) > max(study.DRAW1_SEEDS)
    assert study.MAX_EPOCHS - study.MIN_EPOCHS == 3


def test_carry_over_checks_the_run_folder_when_the_source_is_gone(tmp_path):
    cfg = study.config("clip", 1000, "design", min_epochs=9)
    _stored_run(tmp_path / "pilot" / "run", cfg, 12)         # carried earlier: its source was moved away
    assert study.carry_over(cfg, tmp_path / "pilot" / "run", tmp_path / "draw1" / "gone") == "same"
    assert study.carry_over(cfg, tmp_path / "pilot" / "new", tmp_path / "draw1" / "gone") == "none"


def test_plateau_measures_the_last_epochs_gain(tmp_path):
    """A run that selects its last epoch by 0.2 Rsum over epoch 11 (steps of about 1) sits on a plateau; one that
    selects epoch 8 and stops at 11 is below the maximum; epoch 0 (before training) never counts."""
    def stored(name, vals):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame({"epoch": range(len(vals)), "val_rsum": vals}).to_csv(d / "metrics.csv", index=False)
        return {"variant": "clip", "seed": len(vals), "run_dir": str(d)}

    flat = [99.0, 30, 35, 38, 40, 41, 42, 43, 44, 45, 46, 47.0, 47.2]
    early = [99.0, 30, 35, 38, 40, 41, 42, 43, 48, 47, 46, 45]
    got = study.plateau(pd.DataFrame([stored("flat", flat), stored("early", early)])).set_index("seed")
    assert bool(got.loc[13, "at_max"]) and got.loc[13, "best_epoch"] == 12
    assert got.loc[13, "gain_over_earlier"] == pytest.approx(0.2)
    assert got.loc[13, "val_step_sd"] == pytest.approx(np.std([1.0, 1.0, 0.2], ddof=1))
    assert not bool(got.loc[12, "at_max"]) and got.loc[12, "best_epoch"] == 8 and got.loc[12, "epochs_run"] == 11
    assert got.loc[12, "gain_over_earlier"] == pytest.approx(5.0)


def _encoded_runs(tmp_path, n_seeds=6, n_folds=2, n_img=40, per=2, dim=16):
    """clip and osdpm runs on tiny folds: each seed's runs share a large seed-specific distortion (the two variants
    of one seed are correlated, as the study's are), osdpm adds a small one of its own."""
    from osdpm_lib.evaluate import Encoded

    rows = []
    truth = [np.random.default_rng(50 + f).normal(size=(n_img, dim)) for f in range(n_folds)]
    for s in range(n_seeds):
        rng = np.random.default_rng(s)
        seed_noise = [rng.normal(scale=4.0, size=(n_img * per, dim)) for _ in range(n_folds)]
        for variant, extra in (("clip", 0.0), ("osdpm", 0.15)):
            d = tmp_path / f"{variant}_s{s}"
            for f in range(n_folds):
                t = np.repeat(truth[f], per, axis=0) + seed_noise[f] + rng.normal(scale=extra, size=seed_noise[f].shape)
                img = truth[f] / np.linalg.norm(truth[f], axis=1, keepdims=True)
                txt = t / np.linalg.norm(t, axis=1, keepdims=True)
                Encoded(img.astype(np.float32), txt.astype(np.float32), np.repeat(np.arange(n_img), per)).save(
                    d / "folds" / f"f{f}.npz")
            rows.append({"variant": variant, "seed": s, "run_dir": str(d)})
    return pd.DataFrame(rows), [f"f{f}" for f in range(n_folds)]


def test_paired_sensitivity_check_keeps_the_comparison_s_seed_correlation(tmp_path):
    """The paired check resamples (osdpm, clip) runs of one seed together and recentres on the measured difference:
    with correlated variants its noise is the pair's, not two independent seeds'; it detects a planted effect that
    the independent-arms check (clip against another clip seed) detects less often, and its null stays quiet."""
    runs, names = _encoded_runs(tmp_path)
    kw = dict(effect_rel=0.05, n_reps=30, n_boot=200)
    systems = study.load_systems(runs, names)
    margin = 0.05 * study.mean_metric(systems["clip"])
    paired = study.sensitivity_check(runs, names, margin, arms="paired", base=systems, **kw)
    indep = study.sensitivity_check(runs, names, margin, arms="independent", **kw)
    measured = study.mean_metric(systems["osdpm"]) - study.mean_metric(systems["clip"])
    assert paired["recentred_by"] == pytest.approx(measured) and indep["recentred_by"] == 0
    assert paired["comparison"] == "osdpm − clip" and indep["comparison"] == "clip − clip"
    assert paired["planted_gain_rel_pct"] == pytest.approx(5, abs=1.5)
    assert paired["detection_rate"] >= 0.9 and paired["detection_rate"] > indep["detection_rate"]
    assert paired["false_positive_rate"] <= 0.1
    with pytest.raises(ValueError, match="'independent' or 'paired'"):
        study.sensitivity_check(runs, names, margin, arms="crossed")
