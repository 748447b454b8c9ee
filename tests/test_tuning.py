"""The design study's decision rule and how it combines the chosen settings (no training here)."""

import json

import pandas as pd
import pytest

from osdpm_lib import tuning


def _comparisons(rows):
    return pd.DataFrame([{"comparison": f"{n} − before", "diff": d, "ci_low": lo, "ci_high": hi} for n, d, lo, hi in rows])


def test_choose_follows_the_rule_fixed_before_the_runs():
    comp = _comparisons([
        ("target-high", -0.2, -4.0, 4.0),        # described by the paper, CI contains 0: adopted
        ("protos-fixed", -1.9, -7.0, 3.7),       # engineering choices below the earlier design: keep it
        ("protos-text", -3.0, -10.0, 3.6),
        ("amb-entropy", -0.6, -3.0, 2.0),        # described: the better of the two described alternatives
        ("amb-ambiguous", -3.1, -11.0, 5.0),
        ("warmup-30", 0.7, -8.0, 8.0),           # engineering choice above the earlier design: adopted
    ])
    picks = tuning.choose(comp, "before", tuning.CHOICE_GROUPS)
    assert picks == {"osfcm_target": "target-high", "osfcm_prototypes": "before", "osfcm_ambiguity": "amb-entropy",
                     "osfcm_warmup_frac": "warmup-30"}
    worse = _comparisons([("target-high", -5.0, -9.0, -1.0), ("protos-fixed", 1.0, -1, 3), ("protos-text", 2.0, -1, 5),
                          ("amb-entropy", -2.0, -4.0, -0.5), ("amb-ambiguous", -3.0, -6.0, -0.1),
                          ("warmup-30", -0.1, -3, 3)])
    assert tuning.choose(worse, "before", tuning.CHOICE_GROUPS) == {
        "osfcm_target": "before", "osfcm_prototypes": "protos-text", "osfcm_ambiguity": "before",
        "osfcm_warmup_frac": "before"}


def test_combine_applies_every_chosen_change():
    picks = {"osfcm_target": "target-high", "osfcm_prototypes": "before", "osfcm_ambiguity": "amb-entropy",
             "osfcm_warmup_frac": "warmup-30"}
    assert tuning.combine(picks) == {"osfcm_target": "high", "osfcm_prototypes": "free", "osfcm_ambiguity": "entropy",
                                     "osfcm_warmup_frac": 0.3}


def test_baseline_warmup_choice_is_the_highest_mean_validation_rsum_shorter_on_a_tie():
    import pandas as pd

    from osdpm_lib.tuning import baseline_report

    def runs(vals):
        return pd.DataFrame([{"warmup_epochs": w, "system": s, "seed": 100, "best_val_rsum": v, "best_epoch": 1,
                              "first_val_rsum": 0.0} for w, per in vals.items() for s, v in zip(("A", "B"), per)])

    text, chosen = baseline_report(runs({"0": (10.0, 12.0), "2": (30.0, 20.0), "all": (28.0, 21.0)}), "default", 1.0)
    assert chosen == "2" and "warmup_epochs = 2" in text
    _, chosen = baseline_report(runs({"0": (10.0, 12.0), "2": (30.0, 20.0), "all": (20.0, 30.0)}), "default", 1.0)
    assert chosen == "2"                      # a tie of means: the shorter warm-up
    _, chosen = baseline_report(runs({"0": (40.0, 12.0), "2": (30.0, 20.0), "all": (20.0, 30.0)}), "default", 1.0)
    assert chosen == "0"


def _stub_baseline_training(monkeypatch, val, test):
    """Replace the baselines' data, features and trainer by stubs: ``val(system, lr, seed)`` is a run's best
    validation Rsum and ``test(system, lr, seed)`` its test Rsum (the stub returns it as a real run would, so a
    choice that read it would show).  Returns the list of calls ``(system, lr, seed, score_test, run_dir)``."""
    from osdpm_lib.baselines import run

    calls = []

    def train_system(cfg, data, run_dir, features=None, reuse=True, score_test=True):
        calls.append((cfg.system, cfg.lr, cfg.seed, score_test, run_dir))
        v = val(cfg.system, cfg.lr, cfg.seed)
        return {"best_val_rsum": v, "best_epoch": 1, "history": [{"val_rsum": v}],
                "test": {"rsum": test(cfg.system, cfg.lr, cfg.seed)}}

    monkeypatch.setattr(run, "train_system", train_system)
    monkeypatch.setattr(run, "prepare", lambda *a, **k: "data")
    monkeypatch.setattr(run, "frozen_features", lambda *a, **k: None)
    return calls


def test_baseline_lr_choice_follows_validation_never_test(monkeypatch, tmp_path):
    from osdpm_lib.baselines import profiles as bprofiles

    # validation Rsum per system and lr (the seed adds +-1, the same for every lr); test prefers other lrs
    table = {"VSE++": {3e-4: 10, 1e-3: 30, 3e-3: 20},              # the middle
             "VSE0": {3e-4: 25, 1e-3: 25, 3e-3: 5, 1e-4: 20},      # a tie: the smaller lr, low edge, 1e-4 worse
             "SCAN_t2i": {3e-4: 5, 1e-3: 10, 3e-3: 20, 1e-2: 40},  # high edge, extended, still on it
             "AMFMN-soft": {3e-4: 30, 1e-3: 20, 3e-3: 10, 1e-4: 12},   # low edge, the extension is worse
             "GaLR": {3e-4: 1, 1e-3: 2, 3e-3: 3, 1e-2: 2}}         # high edge, the extension is worse
    val = lambda s, lr, seed: table[s][lr] + (1 if seed == 100 else -1)            # noqa: E731
    test = lambda s, lr, seed: 100 - table[s][lr]                                  # noqa: E731
    calls = _stub_baseline_training(monkeypatch, val, test)
    study = tuning.baseline_lr_study("data", tmp_path / "runs", "ci", seeds=(100, 101), epochs=2)
    chosen = {s: c["lr"] for s, c in study["choices"].items()}
    assert chosen == {"VSE++": 1e-3, "VSE0": 3e-4, "SCAN_t2i": 1e-2, "AMFMN-soft": 3e-4, "GaLR": 3e-3}
    assert study["extended"] == {"VSE0": 1e-4, "SCAN_t2i": 1e-2, "AMFMN-soft": 1e-4, "GaLR": 1e-2}
    assert study["choices"]["SCAN_t2i"]["edge"] == "high" and study["choices"]["VSE++"]["edge"] is None
    # every run on validation only; the same seeds for every system and lr; one step beyond an edge, no more
    assert all(not c[3] for c in calls)
    assert len(calls) == 2 * (5 * 3 + 4)
    assert {(s, seed) for s, _, seed, *_ in calls} == {(s, seed) for s in table for seed in (100, 101)}
    # the doc section and the JSON the profiles read
    section = tuning.baseline_lr_section(study, "ci", 1.0)
    assert "SCAN_t2i" in section and "still on the high edge" in section and "not run yet" not in section.lower()
    path = tmp_path / "lr.json"
    (tmp_path / "lr.json").write_text(json.dumps({"finetune": {"lr": {"GaLR": 3e-3}}}))
    content = tuning.write_lr_choices(study, path)
    assert content["finetune"] == {"lr": {"GaLR": 3e-3}} and content["ci"]["lr"] == chosen
    assert content["ci"]["seeds"] == [100, 101] and content["ci"]["grid"] == [3e-4, 1e-3, 3e-3]
    assert bprofiles.chosen_lrs("ci", path) == chosen
    monkeypatch.setattr(bprofiles, "BASELINE_LR_FILE", path)
    assert bprofiles.baseline_config("ci", "SCAN_t2i").lr == 1e-2


def test_baseline_warmup_study_runs_on_validation_only(monkeypatch, tmp_path):
    calls = _stub_baseline_training(monkeypatch, lambda s, lr, seed: 1.0, lambda s, lr, seed: 2.0)
    runs = tuning.baseline_study("data", tmp_path, "ci", seeds=(100,), warmups=(0, "all"), epochs=2)
    assert len(runs) == 2 * 5 and set(runs["warmup_epochs"]) == {"0", "all"}
    assert all(not c[3] for c in calls) and {c[4].parent.name for c in calls} == {"warmup_0", "warmup_all"}


def test_the_lr_section_goes_between_markers_and_the_rest_stays():
    doc = "# The baselines' loss warm-up\n\nwarm-up text\n"
    pending = tuning.baseline_lr_section(None, "full")
    assert "Not run yet" in pending and "--part baselines-lr --profile full" in pending
    once = tuning.put_section(doc, tuning.LR_SECTION, pending)
    assert once.startswith(doc.rstrip("\n")) and tuning.get_section(once, tuning.LR_SECTION) == pending
    twice = tuning.put_section(once, tuning.LR_SECTION, "## new\n")
    assert twice.count("<!-- begin baselines-lr -->") == 1 and "Not run yet" not in twice and "warm-up text" in twice
    with pytest.raises(ValueError):
        tuning.lr_step(2e-3, True)
    assert tuning.lr_step(3e-3, True) == 1e-2 and tuning.lr_step(3e-4, False) == 1e-4
