"""The study's instrument (osdpm_lib.power): ranks with ties, rank metrics, pairing by seed label, the nested
bootstrap, variance components, MDE / power and the four verdicts on constructed cases."""

import itertools
import math

import numpy as np
import pytest

from osdpm_lib import power
from osdpm_lib.metrics import ranks
from osdpm_lib.power import RunFold, metric, nested_bootstrap, scored, systems_from_runs, verdict
from osdpm_lib.stats import per_image_contributions, rsum


def _sims(rng, n_img=30, per=3, signal=1.0):
    cap_img = np.repeat(np.arange(n_img), per)
    s = rng.normal(size=(n_img, n_img * per))
    s[cap_img, np.arange(len(cap_img))] += signal
    return s.astype(np.float32), cap_img


# ------------------------------------------------------------------------------------------------ ranks
def test_ranks_by_hand_with_ties():
    s = np.array([[0.9, 0.5, 0.9, 0.1], [0.2, 0.8, 0.3, 0.8]])
    cap = [0, 1, 1, 0]
    r = ranks(s, cap)
    # image 0: best own caption 0.9 ties one wrong caption (g=0, t=1, m=1): rank 1 or 2 with probability 1/2
    np.testing.assert_allclose(r["i2t_rank"], [1.5, 1.5])
    np.testing.assert_allclose(r["i2t_rr"], [0.75, 0.75])
    np.testing.assert_allclose(r["t2i_rank"], [1, 1, 2, 2])
    np.testing.assert_allclose(r["t2i_rr"], [1, 1, 0.5, 0.5])
    strict = ranks(s, cap, "strict")
    np.testing.assert_allclose(strict["i2t_rank"], [2, 2])
    np.testing.assert_allclose(strict["i2t_rr"], [0.5, 0.5])


def test_expected_ranks_equal_the_average_over_every_tie_order():
    """Brute force: one query with g wrong items above, t wrong and m own items tied; every order of the tied
    items is equally likely."""
    for g, t, m in [(0, 3, 2), (2, 2, 1), (1, 0, 3), (0, 4, 4)]:
        ranks_, rrs = [], []
        for order in set(itertools.permutations([0] * t + [1] * m)):
            first = g + 1 + order.index(1)
            ranks_.append(first)
            rrs.append(1.0 / first)
        from osdpm_lib.metrics import _expected_rank
        r, rr = _expected_rank(np.array([g]), np.array([t]), np.array([m]), "expected")
        assert r[0] == pytest.approx(np.mean(ranks_)) and rr[0] == pytest.approx(np.mean(rrs))


def test_rank_metrics_by_hand():
    rng = np.random.default_rng(0)
    s, cap = _sims(rng, 12, 2)
    rf = scored(s, cap)
    r = ranks(s, cap)
    assert metric(rf, "rsum") == pytest.approx(rsum(per_image_contributions(s, cap)))
    assert metric(rf, "mrr_i2t") == pytest.approx(100 * r["i2t_rr"].mean())
    assert metric(rf, "mrr_t2i") == pytest.approx(100 * r["t2i_rr"].mean())
    assert metric(rf, "medr_i2t") == np.sort(r["i2t_rank"])[(len(r["i2t_rank"]) - 1) // 2]
    assert metric(rf, "medr_t2i") == np.sort(r["t2i_rank"])[(len(r["t2i_rank"]) - 1) // 2]
    # image weights: image 0 counted three times, image 1 dropped, equals the resampled set
    w = np.ones(12)
    w[0], w[1] = 3, 0
    keep = np.repeat(np.arange(12), w.astype(int))
    assert metric(rf, "mrr_i2t", w[None])[0] == pytest.approx(100 * r["i2t_rr"][keep].mean())
    caps = np.concatenate([np.flatnonzero(cap == i) for i in keep])
    assert metric(rf, "mrr_t2i", w[None])[0] == pytest.approx(100 * r["t2i_rr"][caps].mean())
    assert metric(rf, "medr_t2i", w[None])[0] == np.sort(r["t2i_rank"][caps])[(len(caps) - 1) // 2]
    with pytest.raises(ValueError, match="unknown metric 'map'"):
        metric(rf, "map")


# ------------------------------------------------------------------------------------------------ pairing
def _system(seed0, n_seeds, signal, n_folds=2, n_img=30, offset=0):
    rng = np.random.default_rng(seed0)
    folds_ = [np.random.default_rng(100 + f) for f in range(n_folds)]
    out = {}
    for s in range(n_seeds):
        rfs = []
        for f in range(n_folds):
            base = np.random.default_rng(1000 + f).normal(size=(n_img, 3 * n_img))   # the fold's "images"
            sims, cap = _sims(folds_[f], n_img, 3, 0.0)
            noise = rng.normal(scale=0.3, size=sims.shape)
            x = (base + noise).astype(np.float32)
            x[cap, np.arange(len(cap))] += signal
            rfs.append(scored(x, cap))
        out[s + offset] = rfs
    return out


def test_comparisons_pair_by_seed_label_not_by_order():
    a, b = _system(1, 4, 1.5), _system(2, 4, 1.0)
    res = nested_bootstrap(a, b, ("rsum",), n_boot=300)["rsum"]
    shuffled_a = {s: a[s] for s in [2, 0, 3, 1]}
    shuffled_b = {s: b[s] for s in [3, 1, 0, 2]}
    res2 = nested_bootstrap(shuffled_a, shuffled_b, ("rsum",), n_boot=300)["rsum"]
    assert res.diff == res2.diff and res.ci95 == res2.ci95 and np.array_equal(res.replicates, res2.replicates)
    del shuffled_b[2]
    with pytest.raises(ValueError, match=r"paired by seed label: seed\(s\) \[2\] of a have no b run"):
        nested_bootstrap(shuffled_a, shuffled_b, ("rsum",), n_boot=10)
    with pytest.raises(ValueError, match="run osdpm seed 3 appears twice"):
        systems_from_runs([("osdpm", 3, None), ("clip", 3, None), ("osdpm", 3, None)])


def test_folds_must_match():
    a, b = _system(1, 2, 1.0, n_folds=2), _system(2, 2, 1.0, n_folds=1)
    with pytest.raises(ValueError, match="b seed 0 has 1 folds, a seed 0 has 2"):
        nested_bootstrap(a, b, n_boot=10)


# ------------------------------------------------------------------------------------------------ verdicts
def test_verdict_rule():
    assert verdict((0.1, 2.0), (0.3, 1.8), 1.0) == "better"
    assert verdict((-2.0, -0.1), (-1.8, -0.3), 1.0) == "worse"
    assert verdict((0.1, 2.0), (0.3, 1.8), 1.0, direction=-1) == "worse"      # a lower median rank is better
    assert verdict((-0.9, 0.9), (-0.7, 0.7), 1.0) == "equivalent"
    assert verdict((-1.5, 0.9), (-1.2, 0.7), 1.0) == "inconclusive"
    assert verdict((-0.9, 0.9), (-0.7, 0.7), 0.5) == "inconclusive"
    with pytest.raises(ValueError, match="margin must be positive"):
        verdict((0, 1), (0, 1), 0)


def test_verdicts_on_constructed_cases():
    """Equal systems: equivalent; one shifted well beyond the margin: better; equal but noisy: inconclusive."""
    same = _system(1, 6, 1.0, n_img=60)
    twin = {s: [RunFold(rf.contrib.copy(), rf.i2t_rank, rf.i2t_rr, rf.t2i_rank, rf.t2i_rr, rf.caption_image)
                for rf in rfs] for s, rfs in same.items()}
    c = nested_bootstrap(same, twin, n_boot=400)["rsum"]
    assert c.diff == 0 and verdict(c.ci95, c.ci90, 1.0) == "equivalent"
    strong = _system(3, 6, 3.0, n_img=60)
    c = nested_bootstrap(strong, same, n_boot=400)["rsum"]
    assert c.diff > 20 and verdict(c.ci95, c.ci90, 1.0) == "better"
    c = nested_bootstrap(same, strong, n_boot=400)["rsum"]
    assert verdict(c.ci95, c.ci90, 1.0) == "worse"
    noisy_a, noisy_b = _system(5, 3, 1.0, n_folds=1, n_img=20), _system(6, 3, 1.0, n_folds=1, n_img=20)
    c = nested_bootstrap(noisy_a, noisy_b, n_boot=400)["rsum"]
    assert verdict(c.ci95, c.ci90, 1.0) == "inconclusive"


# ------------------------------------------------------------------------------------------------ power
def test_mde_and_power():
    assert power.mde(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert power.power(power.mde(0.7), 0.7) == pytest.approx(0.8, abs=1e-3)
    assert power.power(0.0, 1.0) == pytest.approx(0.05)
    assert power.power(-power.mde(2.0), 2.0) == pytest.approx(0.8, abs=1e-3)


def _shifted(base: dict, shifts: dict) -> dict:
    """``base`` with every image's i2t R@1 contribution raised by ``shifts[seed]``: Rsum + 100 * shift exactly."""
    out = {}
    for s, rfs in base.items():
        out[s] = []
        for rf in rfs:
            c = rf.contrib.copy()
            c[:, 0] += shifts[s]
            out[s].append(RunFold(c, rf.i2t_rank, rf.i2t_rr, rf.t2i_rank, rf.t2i_rr, rf.caption_image))
    return out


def test_variance_components_find_a_pure_seed_effect():
    base = _system(1, 5, 1.0, n_folds=2)
    shifts = {0: 0.00, 1: 0.02, 2: -0.01, 3: 0.03, 4: -0.02}
    comp = power.variance_components(_shifted(base, shifts), base)
    assert comp["seed"] == pytest.approx(np.var([100 * v for v in shifts.values()], ddof=1))
    assert comp["image"] == pytest.approx(0, abs=1e-9) and comp["seed_x_image"] == pytest.approx(0, abs=1e-9)
    assert power.predicted_se(comp, 10, 5) == pytest.approx(math.sqrt(comp["seed"] / 10))


def test_predicted_se_is_the_nested_bootstrap_s_se():
    """Constructed seed, image and seed x image parts: the SE the plan predicts from the components is the SE the
    analysis (the nested bootstrap) then reports, within 15%; counting seed x image once would fall short here."""
    base = _system(1, 10, 1.0, n_folds=2, n_img=80)
    rng = np.random.default_rng(5)
    image = [rng.normal(scale=0.005, size=80) for _ in range(2)]
    a = {}
    for s, rfs in base.items():
        u = rng.normal(scale=0.01)
        a[s] = []
        for f, rf in enumerate(rfs):
            c = rf.contrib.copy()
            c[:, 0] += u + image[f] + rng.normal(scale=0.12, size=80)
            a[s].append(RunFold(c, rf.i2t_rank, rf.i2t_rr, rf.t2i_rank, rf.t2i_rr, rf.caption_image))
    comp = power.variance_components(a, base)
    got = nested_bootstrap(a, base, n_boot=3000)["rsum"].se
    assert power.predicted_se(comp, 10, 2) == pytest.approx(got, rel=0.15)
    once = math.sqrt(comp["seed"] / 10 + comp["image"] / 2 + comp["seed_x_image"] / 20)
    assert once < 0.9 * got


def test_variance_components_find_image_variance():
    a, b = _system(1, 4, 1.5, n_folds=1), _system(1, 4, 1.0, n_folds=1)   # same noise: differences by image
    comp = power.variance_components(a, b)
    assert comp["image"] > 0 and comp["n_seeds"] == 4 and comp["n_folds"] == 1
    with pytest.raises(ValueError, match="at least 2 seeds"):
        power.variance_components({0: a[0]}, {0: b[0]})


def test_plan_takes_the_fewest_seeds_then_folds():
    comp = {"seed": 4.0, "image": 1.0, "seed_x_image": 0.0}
    target = power.mde(math.sqrt(4.0 / 10 + 1.0 / 10), df=9)       # the MDE of 10 seeds, 10 folds (t, 9 df)
    p = power.plan(comp, target, max_seeds=30, folds_options=(5, 10))
    assert (p["n_seeds"], p["n_folds"], p["reaches_target"]) == (10, 10, True)
    more_folds = power.plan(comp, target, max_seeds=30, folds_options=(5, 10, 40))    # 4/9 + 1/40 < 4/10 + 1/10
    assert (more_folds["n_seeds"], more_folds["n_folds"]) == (9, 40)
    assert power.plan(comp, target, 30, (5, 10, 20), safety=2.0)["n_seeds"] > 10
    out_of_reach = power.plan(comp, 0.01, max_seeds=5, folds_options=(5, 10))
    assert not out_of_reach["reaches_target"] and (out_of_reach["n_seeds"], out_of_reach["n_folds"]) == (5, 10)


def test_plan_within_a_budget():
    comp = {"seed": 4.0, "image": 1.0, "seed_x_image": 2.0}
    cost = lambda S, F: S * (60 + 5 * F)     # noqa: E731  seconds: a run, then F fold scorings
    target = power.mde(math.sqrt(4.0 / 12 + 1.0 / 5 + 2.0 / 60), df=11)
    p = power.plan(comp, target, 30, (5, 10), cost=cost)
    assert p["reaches_target"] and p["cost"] == min(cost(S, F) for S in range(2, 31) for F in (5, 10)
                                                   if power.mde(power.predicted_se(comp, S, F), df=S - 1) <= target)
    capped = power.plan(comp, target, 30, (5, 10), cost=cost, budget=cost(6, 10))
    assert not capped["reaches_target"] and capped["cost"] <= cost(6, 10)
    assert capped["predicted_mde"] == min(power.mde(power.predicted_se(comp, S, F), df=S - 1) for S in range(2, 31)
                                          for F in (5, 10) if cost(S, F) <= cost(6, 10))
    with pytest.raises(ValueError, match="fits the budget"):
        power.plan(comp, target, 30, (5,), cost=cost, budget=10)


def test_cache_gives_the_same_comparisons():
    a, b, c = _system(1, 3, 1.5), _system(2, 3, 1.0), _system(3, 3, 1.2)
    cache = {}
    for x, y in ((a, b), (c, b), (a, c)):
        plain = nested_bootstrap(x, y, ("rsum", "medr_t2i"), n_boot=100)
        cached = nested_bootstrap(x, y, ("rsum", "medr_t2i"), n_boot=100, cache=cache)
        for m in plain:
            assert np.array_equal(plain[m].replicates, cached[m].replicates)
    assert len(cache) == 3 * 3 * 2 * 2       # three systems x three seeds x two folds x two metrics, once each


def test_intervals_use_t_with_seeds_minus_one_df():
    from scipy.stats import t as student_t

    a, b = _system(1, 4, 1.5), _system(2, 4, 1.0)
    c = nested_bootstrap(a, b, ("rsum",), n_boot=300)["rsum"]
    assert c.df == 3 and c.se == pytest.approx(c.replicates.std(ddof=1) * math.sqrt(4 / 3))
    assert c.ci95 == pytest.approx((c.diff - student_t.ppf(0.975, 3) * c.se, c.diff + student_t.ppf(0.975, 3) * c.se))
    assert c.ci90[1] - c.ci90[0] == pytest.approx(2 * student_t.ppf(0.95, 3) * c.se)
    assert power.mde(1.0, df=3) == pytest.approx(student_t.ppf(0.975, 3) + student_t.ppf(0.8, 3))
    assert power.power(power.mde(1.0, df=9), 1.0, df=9) == pytest.approx(0.8, abs=0.01)
