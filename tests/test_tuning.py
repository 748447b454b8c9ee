"""The design study's decision rule and how it combines the chosen settings (no training here)."""

import pandas as pd

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
