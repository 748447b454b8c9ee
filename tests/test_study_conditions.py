"""The conditions study (osdpm_lib.study_conditions, issue 26): its folds are fresh, registered per condition and
closed to every run but the final ones; the condition x comparison table uses the study's analysis with each
condition's own margin (the default's pre-registered one); the forest rows and the summary say what the table says."""

import numpy as np
import pandas as pd
import pytest

from osdpm_lib import folds, study
from osdpm_lib import study_conditions as sc
from osdpm_lib.power import RunFold, scored


def test_fold_seeds_are_new_and_distinct():
    seeds = [sc.fold_seed(c, k) for c in (*sc.CONDITIONS, sc.DEFAULT) for k in range(20)]
    assert len(set(seeds)) == len(seeds)
    used = {0, 100, 101, 102, *study.TUNE_SEEDS, *study.PILOT_SEEDS, study.DATA["seed"], folds.PILOT_SEED,
            *folds.FOLD_SEEDS}
    assert not used & set(seeds)
    assert sc.SEED0 not in study.PILOT_SEEDS and sc.SEED0 > study.FINAL_SEED0 + study.MAX_SEEDS
    with pytest.raises(ValueError, match="no fold seed for condition 'foggy'"):
        sc.fold_seed("foggy", 0)
    with pytest.raises(ValueError, match="folds 0-19"):
        sc.fold_seed("cluttered", 20)


def test_layout_keeps_sizes_apart(tmp_path):
    full, ci = sc.Layout(tmp_path), sc.Layout(tmp_path, "ci")
    assert full.runs("cluttered") == tmp_path / "runs" / "conditions" / "cluttered"
    assert ci.runs("cluttered") == tmp_path / "runs" / "ci" / "conditions" / "cluttered"
    assert ci.results == tmp_path / "results" / "ci" / "conditions" and full.folds("ambiguous").name == "folds"


def test_condition_folds_are_registered_per_condition_and_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(folds, "REGISTRY", tmp_path / "study_folds.json")
    monkeypatch.setitem(sc.SIZES, "tiny", dict(sc.SIZES["full"], n_test=12, data=dict(sc.SIZES["full"]["data"],
                                                                                     image_size=32)))
    lay = sc.Layout(tmp_path)
    made = sc.condition_folds(lay, "cluttered", 2, "tiny")
    assert [n for _, n in made] == ["fold00", "fold01"]
    reg = folds.registered()
    assert set(reg) == {"cluttered/fold00", "cluttered/fold01"} and reg["cluttered/fold01"]["seed"] == \
        sc.fold_seed("cluttered", 1)
    assert folds.is_study_fold(made[0][0]) == "cluttered/fold00"
    for purpose in ("tuning", "design", "book"):
        with pytest.raises(folds.StudyFoldError, match="cluttered/fold00"):
            folds.refuse_study_fold(made[0][0], purpose)
    folds.refuse_study_fold(made[0][0], "study")
    again = sc.condition_folds(lay, "cluttered", 2, "tiny")          # regenerated identically: verified, no error
    assert [str(d) for d, _ in again] == [str(d) for d, _ in made]


def _systems(shift_osdpm: float, shift_dapn: float, n_seeds=4, n_folds=2, n_img=30, seed=0):
    """clip from noisy similarities; clip+dapn and osdpm its copies with every image's i2t R@1 contribution moved
    by a constant (Rsum + 100 x shift exactly) plus a little seed noise."""
    rng = np.random.default_rng(seed)
    out = {"clip": {}, "clip+dapn": {}, "osdpm": {}}
    for s in range(n_seeds):
        out["clip"][s], out["clip+dapn"][s], out["osdpm"][s] = [], [], []
        for f in range(n_folds):
            cap = np.repeat(np.arange(n_img), 2)
            x = rng.normal(size=(n_img, 2 * n_img)).astype(np.float32)
            x[cap, np.arange(len(cap))] += 2.0
            rf = scored(x, cap)
            out["clip"][s].append(rf)
            for v, shift in (("clip+dapn", shift_dapn), ("osdpm", shift_osdpm)):
                c = rf.contrib.copy()
                c[:, 0] += shift + rng.normal(scale=0.002)
                out[v][s].append(RunFold(c, rf.i2t_rank, rf.i2t_rr, rf.t2i_rank, rf.t2i_rr, rf.caption_image))
    return out


def test_verdict_table_per_condition_with_its_margin():
    systems = {"default": _systems(0.0, 0.0), "small-objects": _systems(0.3, 0.3, seed=1),
               "cluttered": _systems(-0.3, 0.0, seed=2)}
    t = sc.verdict_table(systems, margins={"default": 5.0}, n_boot=300)
    assert list(t["condition"].unique()) == list(systems) and len(t) == 3 * len(study.PAIRS)
    v = t.set_index(["condition", "comparison"])["verdict"]
    assert v[("default", "osdpm − clip")] == "equivalent"
    assert v[("small-objects", "osdpm − clip")] == "better" and v[("small-objects", "osdpm − clip+dapn")] == \
        "equivalent"
    assert v[("cluttered", "osdpm − clip")] == "worse" and v[("cluttered", "clip+dapn − clip")] == "equivalent"
    m = t.set_index(["condition", "comparison"])
    assert m.loc[("default", "osdpm − clip"), "margin"] == 5.0
    clip = m.loc[("cluttered", "osdpm − clip"), "clip_value"]
    assert m.loc[("cluttered", "osdpm − clip"), "margin"] == pytest.approx(study.MARGIN_REL * clip)
    assert m.loc[("small-objects", "osdpm − clip"), "diff_rel"] == pytest.approx(
        100 * m.loc[("small-objects", "osdpm − clip"), "diff"] / m.loc[("small-objects", "osdpm − clip"),
                                                                       "clip_value"])
    assert (t["mde_over_target"] == t["mde"] / (study.MARGIN_REL * t["clip_value"])).all()

    rows = sc.forest_rows(t)
    assert rows["comparison"].iloc[0] == "default: osdpm − clip" and set(rows.columns) >= {
        "diff", "ci95_low", "ci95_high", "ci90_low", "ci90_high", "verdict"}
    text = sc.summary(t)
    assert "small-objects (+" in text.split("\n")[2] and "helps" in text.split("\n")[2]   # osdpm − clip line
    assert "hurts: cluttered" in text.split("\n")[2]


def test_summary_flags_short_power_and_adds_mechanisms():
    t = pd.DataFrame([{"condition": "cluttered", "comparison": "clip+dapn − clip", "verdict": "inconclusive",
                       "diff_rel": 1.0, "ci95_low_rel": -4.0, "ci95_high_rel": 6.0, "mde_over_target": 2.5}])
    mech = pd.DataFrame([{"condition": "cluttered", "pointing_dapn": 40.0, "pointing_center": 30.0, "purity": 0.6,
                          "purity_chance": 0.2}])
    text = sc.summary(t, mech)
    assert "cannot tell: cluttered (+1.0% [-4.0, +6.0])" in text
    assert "1 of 1 comparisons fall short of the planned power (MDE up to 2.5x" in text
    assert "cluttered: pointing 40% (center 30%), purity 0.60 (chance 0.20)" in text


def test_mechanism_table_flattens_the_checks():
    def pointing(acc):
        return [{"variant": "dapn", "map": "saliency", "accuracy": acc, "accuracy_small": acc / 2},
                {"variant": "baseline", "map": "center", "accuracy": 30.0, "accuracy_small": 10.0},
                {"variant": "baseline", "map": "random (expected)", "accuracy": 12.0, "accuracy_small": 3.0}]
    checks = {"cluttered": {"n_images": 50, "split": "val", "pointing": {"osdpm": pointing(40.0),
                                                                        "clip+dapn": pointing(20.0)},
                            "dapn_ratio": {"osdpm": 0.3, "clip+dapn": 0.2},
                            "purity": {"osdpm": {"purity": 0.6, "chance": 0.2, "n_images": 48}}},
              "ambiguous": {"n_images": 50, "split": "val", "pointing": {}, "dapn_ratio": {}, "purity": {}}}
    t = sc.mechanism_table(checks).set_index("condition")
    r = t.loc["cluttered"]
    assert (r.pointing_dapn, r.pointing_small_dapn, r.pointing_dapn_clip_dapn) == (40.0, 20.0, 20.0)
    assert (r.pointing_center, r.pointing_random, r.dapn_ratio_osdpm, r.dapn_ratio_clip_dapn) == (30.0, 12.0, 0.3, 0.2)
    assert (r.purity, r.purity_chance) == (0.6, 0.2)
    assert np.isnan(t.loc["ambiguous", "pointing_dapn"]) and np.isnan(t.loc["ambiguous", "purity"])


def test_zero_shot_table_reads_epoch_zero(tmp_path):
    rows = []
    for c, (zs, best) in {"default": ((20.0, 22.0), (40.0, 44.0)), "domain-gap": ((5.0, 5.0), (30.0, 34.0))}.items():
        for k, (z, b) in enumerate(zip(zs, best)):
            d = tmp_path / f"{c}_{k}"
            d.mkdir()
            pd.DataFrame({"epoch": [0, 1, 2], "val_rsum": [z, b - 1, b]}).to_csv(d / "metrics.csv", index=False)
            rows.append({"condition": c, "variant": "clip", "seed": k, "run_dir": str(d), "best_val_rsum": b})
        rows.append({"condition": c, "variant": "osdpm", "seed": 0, "run_dir": "unread", "best_val_rsum": 99.0})
    t = sc.zero_shot_table(pd.DataFrame(rows)).set_index("condition")
    assert t.loc["default", "zero_shot_val_rsum"] == 21.0 and t.loc["default", "finetuned_val_rsum"] == 42.0
    assert t.loc["domain-gap", "zero_shot_over_finetuned"] == pytest.approx(5.0 / 32.0)
    assert (t["n_runs"] == 2).all()
