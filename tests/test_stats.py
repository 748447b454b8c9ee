import numpy as np
import pytest

from osdpm_lib.metrics import retrieval_metrics
from osdpm_lib.stats import COLUMNS, compare_runs, paired_bootstrap, per_image_contributions, rsum


def _sims(rng, n_img, hit_rate, cpi=5, noise=1.0):
    """Random scores where a random ``hit_rate`` share of images has its captions scored far above
    everything (hit both ways at every K) and the rest far below (miss at every K)."""
    cap_img = np.repeat(np.arange(n_img), cpi)
    sims = noise * rng.standard_normal((n_img, n_img * cpi)).astype(np.float32)
    good = rng.random(n_img) < hit_rate
    sims[cap_img, np.arange(len(cap_img))] = np.where(good[cap_img], 10.0, -10.0)
    return sims, cap_img


def _runs(seed, n_img, hit_rate, n_seeds):
    rng = np.random.default_rng(seed)
    return [per_image_contributions(*_sims(rng, n_img, hit_rate)) for _ in range(n_seeds)]


def test_contributions_reproduce_rsum():
    rng = np.random.default_rng(0)
    n_img = 40
    cap_img = rng.integers(0, n_img, size=150)
    cap_img[:n_img] = np.arange(n_img)  # every image has >= 1 caption, counts vary
    sims = rng.integers(-2, 3, size=(n_img, 150)).astype(np.float32)  # many ties
    for ties in ("expected", "strict"):
        c = per_image_contributions(sims, cap_img, ties)
        assert c.shape == (n_img, len(COLUMNS))
        assert np.array_equal(c[:, -1], np.bincount(cap_img, minlength=n_img))
        ref = retrieval_metrics(sims, cap_img, ties)["rsum"]
        assert rsum(c) == pytest.approx(ref, rel=1e-12, abs=1e-12)
        assert rsum(c, np.ones(n_img)) == pytest.approx(ref, rel=1e-12, abs=1e-12)
        assert rsum(c, np.ones((3, n_img))) == pytest.approx([ref] * 3, rel=1e-12, abs=1e-12)
    # integer weights = duplicating images together with their captions (gallery fixed)
    w = rng.integers(0, 3, size=n_img)
    dup = np.repeat(np.arange(n_img), w)
    c = per_image_contributions(sims, cap_img)
    assert rsum(c, w) == pytest.approx(rsum(c[dup]), rel=1e-12)


def test_identical_models():
    a = _runs(0, 100, 0.5, 3)
    r = paired_bootstrap(a, a, n_boot=500)
    assert r.diff == 0 and r.per_seed == [0.0] * 3
    assert r.ci_low <= 0 <= r.ci_high and not r.excludes_zero
    assert r.p_two_sided == 1.0
    assert r.verdict == "no difference shown (95% CI contains 0)"
    assert (r.n_seeds, r.n_images, r.n_boot) == (3, 100, 500)


def test_clearly_better_model():
    a, b = _runs(1, 500, 0.6, 5), _runs(2, 500, 0.4, 5)
    r = paired_bootstrap(a, b)
    assert r.diff == pytest.approx(120, abs=25)  # 600 * (0.6 - 0.4)
    assert r.ci_low > 0 and r.excludes_zero and r.p_two_sided < 0.01
    assert r.verdict == "a − b > 0 (95% CI excludes 0)"
    s = paired_bootstrap(b, a)
    assert s.ci_high < 0 and s.verdict == "a − b < 0 (95% CI excludes 0)"
    assert s.diff == pytest.approx(-r.diff)


def test_small_noisy_difference_not_shown():
    a, b = _runs(3, 30, 0.52, 3), _runs(4, 30, 0.5, 3)
    r = paired_bootstrap(a, b, n_boot=1000)
    assert r.ci_low < 0 < r.ci_high and not r.excludes_zero and r.p_two_sided > 0.05
    assert r.verdict.startswith("no difference shown")


def test_deterministic_and_seeded():
    a, b = _runs(5, 60, 0.5, 3), _runs(6, 60, 0.45, 3)
    r1, r2 = paired_bootstrap(a, b, seed=7), paired_bootstrap(a, b, seed=7)
    assert (r1.ci_low, r1.ci_high, r1.p_two_sided) == (r2.ci_low, r2.ci_high, r2.p_two_sided)
    assert np.array_equal(r1.replicates, r2.replicates)
    r3 = paired_bootstrap(a, b, seed=8)
    assert not np.array_equal(r1.replicates, r3.replicates) and r3.diff == r1.diff


def test_single_reference_used_for_every_seed():
    a, ref = _runs(7, 80, 0.6, 4), _runs(8, 80, 0.3, 1)
    r = paired_bootstrap(a, ref, n_boot=300, level=0.9)
    assert r.n_seeds == 4
    assert r.per_seed == pytest.approx([rsum(x) - rsum(ref[0]) for x in a])
    assert r.verdict == "a − b > 0 (90% CI excludes 0)"
    assert r.diff == pytest.approx(paired_bootstrap(a, ref * 4, n_boot=300).diff)


def test_compare_runs_table():
    runs = {"osdpm": _runs(9, 200, 0.6, 3), "clip": _runs(10, 200, 0.4, 3), "zero": _runs(11, 200, 0.1, 1)}
    df = compare_runs(runs, [("osdpm", "clip"), ("clip", "zero")], n_boot=300)
    assert list(df.columns) == ["comparison", "diff", "ci_low", "ci_high", "p", "n_seeds", "n_images",
                                "n_boot", "verdict", "per_seed"]
    assert df["comparison"].tolist() == ["osdpm − clip", "clip − zero"]
    assert df["verdict"].tolist()[0] == "osdpm − clip > 0 (95% CI excludes 0)"
    assert df["n_seeds"].tolist() == [3, 3] and df["n_images"].tolist() == [200, 200]
    assert len(df["per_seed"][0].split(", ")) == 3
    with pytest.raises(ValueError, match="unknown run"):
        compare_runs(runs, [("osdpm", "nope")])


def test_argument_errors():
    a3, b2 = _runs(12, 20, 0.5, 3), _runs(13, 20, 0.5, 2)
    with pytest.raises(ValueError, match="a has 3 seeds, b has 2"):
        paired_bootstrap(a3, b2)
    with pytest.raises(ValueError, match=r"b\[0\] has 10 images, a\[0\] has 20"):
        paired_bootstrap(a3, [b[:10] for b in a3])
    other = [x.copy() for x in a3]
    other[1][0, -1] += 1
    with pytest.raises(ValueError, match="captions-per-image"):
        paired_bootstrap(a3, other)
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(a3, [x[:, :6] for x in a3])
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap([], a3)


def _flat(n_img: int, i2t: float, t2i_share: float, cpi: int = 5) -> np.ndarray:
    """Contributions of a run in which every image contributes alike (``i2t`` hits at each K, ``t2i_share`` of its
    captions hit at each K): its Rsum, 300 * i2t + 300 * t2i_share, is the same under any image weights."""
    c = np.empty((n_img, len(COLUMNS)))
    c[:, :3], c[:, 3:6], c[:, 6] = i2t, t2i_share * cpi, cpi
    return c


def test_argument_errors_name_the_run_and_the_fault():
    a3 = _runs(12, 20, 0.5, 3)
    with pytest.raises(ValueError, match=r"^a\[0\] has shape \(20, 6\).*from per_image_contributions\(\)$"):
        paired_bootstrap([x[:, :6] for x in a3], a3)
    with pytest.raises(ValueError, match=r"b\[1\] has shape"):
        paired_bootstrap(a3, [a3[0], a3[1][:, :6], a3[2]])
    with pytest.raises(ValueError, match="b is empty"):
        paired_bootstrap(a3, [])
    with pytest.raises(ValueError, match=r"\(b may also hold a single reference run, used for every seed\)$"):
        paired_bootstrap(a3, a3[:2])
    with pytest.raises(ValueError, match=r"a\[1\] has 10 images, a\[0\] has 20; all runs must be scored on the "
                                         r"same test images"):
        paired_bootstrap([a3[0], a3[1][:10], a3[2]], a3)
    other = [x.copy() for x in a3]
    other[0][0, -1] += 1
    with pytest.raises(ValueError, match=r"b\[0\] has other captions-per-image counts than a\[0\]; all runs must "
                                         r"be scored on the same test split"):
        paired_bootstrap(a3, other)
    with pytest.raises(ValueError, match=r"a\[2\] has other captions-per-image counts"):
        paired_bootstrap(a3[:2] + other[:1], a3)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"level={level}; expected a value in \(0, 1\)"):
            paired_bootstrap(a3, a3, level=level)
    with pytest.raises(ValueError, match=r"n_boot=0; expected >= 1"):
        paired_bootstrap(a3, a3, n_boot=0)
    assert len(paired_bootstrap(a3, a3, n_boot=1).replicates) == 1       # one replicate is allowed


def test_defaults_are_2000_replicates_seed_0_and_95_percent():
    a, b = _runs(14, 15, 0.6, 2), _runs(15, 15, 0.4, 2)
    r = paired_bootstrap(a, b)
    explicit = paired_bootstrap(a, b, n_boot=2000, seed=0, level=0.95)
    assert r.n_boot == 2000 and r.level == 0.95 and np.array_equal(r.replicates, explicit.replicates)
    df = compare_runs({"a": a, "b": b}, [("a", "b")])
    assert df["n_boot"][0] == 2000 and (df["ci_low"][0], df["ci_high"][0]) == (r.ci_low, r.ci_high)
    a, b = _runs(21, 40, 0.6, 3), _runs(22, 40, 0.5, 3)                    # seed 0 of compare_runs, too
    assert compare_runs({"a": a, "b": b}, [("a", "b")], n_boot=300)["ci_low"][0] == \
        paired_bootstrap(a, b, n_boot=300, seed=0).ci_low != paired_bootstrap(a, b, n_boot=300, seed=1).ci_low
    assert df["per_seed"][0] == ", ".join(f"{v:.2f}" for v in r.per_seed)      # two decimals


def test_compare_runs_rows_are_paired_bootstrap_results_with_the_given_arguments():
    runs = {"x": _runs(16, 30, 0.6, 3), "y": _runs(17, 30, 0.5, 3)}
    df = compare_runs(runs, [("x", "y")], n_boot=300, seed=5, level=0.9, digits=3)
    r = paired_bootstrap(runs["x"], runs["y"], n_boot=300, seed=5, level=0.9)
    row = df.iloc[0]
    assert (row["diff"], row["ci_low"], row["ci_high"], row["p"]) == (r.diff, r.ci_low, r.ci_high, r.p_two_sided)
    assert (row["n_seeds"], row["n_images"], row["n_boot"]) == (3, 30, 300)
    assert row["verdict"] == r.verdict.replace("a − b", "x − y") and "90% CI" in row["verdict"]
    assert row["per_seed"] == ", ".join(f"{v:.3f}" for v in r.per_seed)
    empty = compare_runs(runs, [])
    assert len(empty) == 0 and list(empty.columns)[:3] == ["comparison", "diff", "ci_low"]


def test_identical_runs_give_exactly_zero_replicates():
    """Both runs of a pair are scored under the same image resample: identical runs differ by exactly 0 in every
    replicate (not only on average)."""
    a = _runs(18, 40, 0.5, 3)
    r = paired_bootstrap(a, [x.copy() for x in a], n_boot=200)
    assert not r.replicates.any() and (r.ci_low, r.ci_high) == (0.0, 0.0)


def test_seeds_are_resampled_with_replacement_among_all_seeds():
    """Seed 0 is better by 600 points under any image weights, seed 1 ties: every replicate is the mean of two seeds
    drawn with replacement, 0, 300 or 600, and each occurs."""
    perfect, zero = _flat(10, 1.0, 1.0), _flat(10, 0.0, 0.0)
    r = paired_bootstrap([perfect, zero], [zero, zero], n_boot=400)
    assert r.per_seed == [600.0, 0.0]
    assert set(np.round(r.replicates, 9)) == {0.0, 300.0, 600.0}
    single = paired_bootstrap([perfect], [zero], n_boot=50)          # a single seed: a[0] is the only run
    assert single.n_seeds == 1 and np.allclose(single.replicates, 600.0)


def test_interval_and_p_value_follow_their_definitions():
    """Percentile interval at (1 - level) / 2 and its complement; p = 2 min(P*(d <= 0), P*(d >= 0)), capped at 1.
    Seed differences of +1.5, +100 and -100 points (the same under any image weights) give replicates in (0, 1]
    (one draw of each seed: 0.5)."""
    a = [_flat(10, 0.0, 0.005), _flat(10, 1 / 3, 0.0), _flat(10, 0.0, 0.0)]
    b = [_flat(10, 0.0, 0.0), _flat(10, 0.0, 0.0), _flat(10, 1 / 3, 0.0)]
    r = paired_bootstrap(a, b, n_boot=2000, level=0.8)
    assert r.per_seed == pytest.approx([1.5, 100.0, -100.0])
    reps = r.replicates
    assert ((reps > 0) & (reps <= 1)).any()
    assert (r.ci_low, r.ci_high) == tuple(np.quantile(reps, [0.1, 0.9]))
    p = 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))
    assert 0 < p < 1 and r.p_two_sided == pytest.approx(p, abs=1e-12)
    assert r.level == 0.8
    c = paired_bootstrap(_runs(19, 40, 0.6, 3), _runs(20, 40, 0.5, 3), n_boot=500, level=0.8)   # continuous
    assert (c.ci_low, c.ci_high) == tuple(np.quantile(c.replicates, [0.1, 0.9]))
    assert np.quantile(c.replicates, 0.2 / 3) != c.ci_low and np.quantile(c.replicates, 1 - 0.2 / 3) != c.ci_high


def test_interval_above_zero_by_less_than_one_point_excludes_zero():
    a, b = [_flat(10, 0.0, 0.001)] * 2, [_flat(10, 0.0, 0.0)]
    r = paired_bootstrap(a, b, n_boot=100)
    assert r.ci_low == pytest.approx(0.3) and r.excludes_zero and r.verdict.startswith("a − b > 0")
    assert r.p_two_sided == 0.0
