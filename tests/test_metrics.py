import itertools

import numpy as np
import pytest

from osdpm_lib.metrics import KEYS, KS, TIE_RULES, _hit_prob, chance_metrics, hits, retrieval_metrics


def brute_force(sims, cap_img):
    """Reference for ties="strict": explicit loops and sorting with a tie-breaking rule."""
    n_img, n_cap = sims.shape
    hits = {f"{d}_r{k}": 0 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    for i in range(n_img):
        own = [j for j in range(n_cap) if cap_img[j] == i]
        # rank every caption; wrong captions win ties against own ones
        order = sorted(range(n_cap), key=lambda j: (-sims[i, j], cap_img[j] == i))
        first_own = min(order.index(j) for j in own)
        for k in (1, 5, 10):
            hits[f"i2t_r{k}"] += first_own < k
    for j in range(n_cap):
        order = sorted(range(n_img), key=lambda i: (-sims[i, j], i == cap_img[j]))
        r = order.index(cap_img[j])
        for k in (1, 5, 10):
            hits[f"t2i_r{k}"] += r < k
    out = {k: 100.0 * v / (n_img if k.startswith("i2t") else n_cap) for k, v in hits.items()}
    out["rsum"] = sum(out[k] for k in KEYS[:6])
    out["mr"] = out["rsum"] / 6
    return out


def _exact_expected_hit(scores, own_mask):
    """Exact expected hit@K of one query under uniformly random tie-breaking, by enumeration:
    the items tied with the best own score occupy a block after the strictly better ones, and
    every choice of positions for the own items inside that block is equally likely."""
    best = scores[own_mask].max()
    g = int(np.sum((scores > best) & ~own_mask))
    t = int(np.sum((scores == best) & ~own_mask))
    m = int(np.sum((scores == best) & own_mask))
    placements = list(itertools.combinations(range(t + m), m))
    return np.array([np.mean([g + min(p) < k for p in placements]) for k in KS])


def exact_expected(sims, cap_img):
    """Reference for ties="expected": per-query hit probabilities (i2t, t2i) by enumeration."""
    n_img, n_cap = sims.shape
    i2t = np.array([_exact_expected_hit(sims[i], cap_img == i) for i in range(n_img)])
    t2i = np.array([_exact_expected_hit(sims[:, j], np.arange(n_img) == cap_img[j]) for j in range(n_cap)])
    return i2t, t2i


def _random_case(seed, levels=3):
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(3, 25))
    per = rng.integers(1, 6, size=n_img)
    cap_img = np.repeat(np.arange(n_img), per)
    rng.shuffle(cap_img)
    # quantised scores create many ties, including negative and zero scores
    sims = rng.integers(-levels, levels + 1, size=(n_img, len(cap_img))).astype(np.float32)
    return sims, cap_img


@pytest.mark.parametrize("seed", range(6))
def test_strict_matches_brute_force_with_ties(seed):
    sims, cap_img = _random_case(seed)
    got = retrieval_metrics(sims, cap_img, ties="strict")
    ref = brute_force(sims, cap_img)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k]), k


@pytest.mark.parametrize("seed", range(6))
def test_expected_matches_exact_enumeration(seed):
    sims, cap_img = _random_case(seed, levels=1)  # scores in {-1, 0, 1}: large tied blocks
    i2t, t2i = hits(sims, cap_img)
    ref_i2t, ref_t2i = exact_expected(sims, cap_img)
    np.testing.assert_allclose(i2t, ref_i2t, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t2i, ref_t2i, rtol=0, atol=1e-12)
    m = retrieval_metrics(sims, cap_img)  # "expected" is the default
    assert m["i2t_r5"] == pytest.approx(100 * ref_i2t[:, 1].mean())
    assert m["rsum"] == pytest.approx(100 * (ref_i2t.mean(0).sum() + ref_t2i.mean(0).sum()))


def test_expected_matches_random_tie_breaking():
    """Monte Carlo: sort every query's items by the key (-score, uniform random) 20,000 times."""
    sims, cap_img = _random_case(3, levels=1)
    n_img = sims.shape[0]
    rng = np.random.default_rng(123)
    draws = 20_000

    def mc(scores, own_mask):
        keys = np.stack([rng.random((draws, len(scores))), np.broadcast_to(-scores, (draws, len(scores)))])
        order = np.lexsort(keys, axis=-1)          # primary key -score, random tie-break
        first_own = own_mask[order].argmax(axis=1)  # position of the best-placed own item
        return np.array([np.mean(first_own < k) for k in KS])

    i2t, t2i = hits(sims, cap_img)
    q = 8  # the first queries each way (keeps the test fast)
    mc_i2t = np.array([mc(sims[i], cap_img == i) for i in range(q)])
    mc_t2i = np.array([mc(sims[:, j], np.arange(n_img) == cap_img[j]) for j in range(q)])
    # standard error <= 0.5 / sqrt(20000) = 0.0035
    np.testing.assert_allclose(i2t[:q], mc_i2t, rtol=0, atol=0.02)
    np.testing.assert_allclose(t2i[:q], mc_t2i, rtol=0, atol=0.02)
    frac = lambda h: ((h > 0) & (h < 1)).sum()  # noqa: E731
    assert frac(i2t[:q]) >= 3 and frac(t2i[:q]) >= 3  # the case exercises fractional hits


def test_no_ties_expected_equals_strict_exactly():
    rng = np.random.default_rng(0)
    n = 60
    cap_img = np.repeat(np.arange(n), 5)
    sims = rng.standard_normal((n, 5 * n)).astype(np.float32) + 0.5 * (np.arange(n)[:, None] == cap_img)
    e, s = hits(sims, cap_img, "expected"), hits(sims, cap_img, "strict")
    assert np.array_equal(e[0], s[0]) and np.array_equal(e[1], s[1])
    assert set(np.unique(e[0])) | set(np.unique(e[1])) <= {0.0, 1.0}
    assert retrieval_metrics(sims, cap_img, "expected") == retrieval_metrics(sims, cap_img, "strict")
    assert retrieval_metrics(sims, cap_img, "strict") == pytest.approx(brute_force(sims, cap_img))


def test_identical_captions_of_two_images():
    # images 0 and 1 have the same caption string -> identical text embeddings; small integer
    # embeddings keep every dot product exact, so the two columns tie bit for bit
    images = np.array([[3, 1, 0, 0], [3, 0, 1, 0], [0, 0, 0, 3]], dtype=np.float32)
    texts = np.array([[3, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 3]], dtype=np.float32)
    sims = images @ texts.T
    cap_img = np.array([0, 1, 2])
    assert sims[0, 0] == sims[0, 1] and sims[1, 0] == sims[1, 1]
    strict_i2t = hits(sims, cap_img, "strict")[0]
    expected_i2t = hits(sims, cap_img, "expected")[0]
    assert strict_i2t[:2, 0].tolist() == [0.0, 0.0]
    assert expected_i2t[:2, 0].tolist() == [0.5, 0.5]
    assert strict_i2t[2, 0] == expected_i2t[2, 0] == 1.0
    assert retrieval_metrics(sims, cap_img, "strict")["i2t_r1"] == pytest.approx(100 / 3)
    assert retrieval_metrics(sims, cap_img)["i2t_r1"] == pytest.approx(200 / 3)


def test_formula_by_hand():
    # one wrong item above (g=1), three wrong tied (t=3), two own tied (m=2)
    one = lambda x: np.array([x])  # noqa: E731
    p = _hit_prob(one(1), one(3), one(2), "expected", ks=(1, 2, 3, 4, 5))[0]
    # K=1: no slot left -> 0; K=2: 1 - 3/5; K=3: 1 - 3/5*2/4; K=4: 1 - 3/5*2/4*1/3; K=5: 1
    np.testing.assert_allclose(p, [0.0, 0.4, 0.7, 0.9, 1.0], rtol=0, atol=1e-15)
    assert _hit_prob(one(1), one(3), one(2), "strict", ks=(1, 2, 4, 5))[0].tolist() == [0, 0, 0, 1]
    # the same configuration end to end: image 0 owns captions 0,1 (score 1); caption 2 scores 2,
    # captions 3-5 score 1, the rest 0; captions 2.. belong to images 1, 2
    sims = np.zeros((3, 12), dtype=np.float32)
    sims[0, :6] = [1, 1, 2, 1, 1, 1]
    cap_img = np.array([0, 0] + [1] * 5 + [2] * 5)
    i2t = hits(sims, cap_img)[0]
    assert i2t[0].tolist() == [0.0, 1.0, 1.0]  # K = 1, 5, 10
    sims[0, 2] = 1  # now g=0, t=4, m=2: hit@1 = 1 - 4/6
    assert hits(sims, cap_img)[0][0, 0] == pytest.approx(1 / 3)


def test_ties_with_wrong_items():
    # image 0 has captions 0,1 (identical scores); caption 2 belongs to image 1
    sims = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])
    strict = retrieval_metrics(sims, [0, 0, 1], ties="strict")
    # strict: wrong caption 2 ties the best own one -> rank 1, miss at R@1
    assert strict["i2t_r1"] == 50.0
    # expected: own captions 0,1 and wrong caption 2 tie -> first place is own with p = 2/3
    assert retrieval_metrics(sims, [0, 0, 1])["i2t_r1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    # caption 2: own image 1 scores 2 > 1 -> hit; captions 0,1: own image 0 scores 1 > 0 -> hit
    assert strict["t2i_r1"] == 100.0


def test_perfect_and_negative_scores():
    cap_img = np.repeat(np.arange(4), 5)
    sims = -np.ones((4, 20))
    sims[cap_img, np.arange(20)] = -0.5  # all scores negative, own ones highest
    for ties in TIE_RULES:
        m = retrieval_metrics(sims, cap_img, ties)
        assert m["rsum"] == 600.0 and m["mr"] == 100.0


def test_bf16_tensor_upcast():
    torch = pytest.importorskip("torch")
    sims, cap_img = _random_case(1)
    t = torch.tensor(sims + 0.25, dtype=torch.bfloat16)
    got = hits(t, cap_img)
    ref = hits(t.float().numpy(), cap_img)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_chance_matches_random_scores():
    rng = np.random.default_rng(0)
    n = 200
    cap_img = np.repeat(np.arange(n), 5)
    runs = [retrieval_metrics(rng.standard_normal((n, 5 * n)), cap_img)["mr"] for _ in range(5)]
    assert np.mean(runs) == pytest.approx(chance_metrics(n)["mr"], rel=0.15)


def test_bad_arguments_rejected():
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="without captions"):
        retrieval_metrics(np.zeros((3, 3)), [0, 0, 1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="'expected', 'strict'"):
        retrieval_metrics(np.zeros((2, 2)), [0, 1], ties="optimistic")
    with pytest.raises(ValueError, match="allowed"):
        hits(np.zeros((2, 2)), [0, 1], ties="random")


def test_scores_compared_in_float32():
    """float64 scores that differ only beyond float32 precision tie (the protocol compares in float32)."""
    sims = np.array([[1.0, 1.0 + 1e-12], [0.0, 1.0]], dtype=np.float64)   # caption 1 (image 1) "beats" caption 0
    strict = retrieval_metrics(sims, [0, 1], ties="strict")
    expected = retrieval_metrics(sims, [0, 1])
    assert strict["i2t_r1"] == 50.0                 # image 0: its caption ties a wrong one -> a strict miss
    assert expected["i2t_r1"] == pytest.approx(100 * (0.5 + 1) / 2)


def test_chance_metrics_by_hypergeometric_formula():
    from math import comb

    for n, c in ((10, 2), (3, 2), (40, 5)):
        got = chance_metrics(n, c)
        total = n * c
        for k in KS:
            p_miss = comb(total - c, k) / comb(total, k) if k <= total else 0.0   # K past the gallery: a hit
            assert got[f"i2t_r{k}"] == pytest.approx(100 * (1 - p_miss), abs=1e-9)
            assert got[f"t2i_r{k}"] == pytest.approx(100 * min(k / n, 1.0), abs=1e-12)
        recalls = [got[k] for k in KEYS[:6]]
        assert got["rsum"] == pytest.approx(sum(recalls)) and got["mr"] == pytest.approx(sum(recalls) / 6)
    assert chance_metrics(40) == chance_metrics(40, 5)      # five captions per image unless told
    assert chance_metrics(40, 4.6) == chance_metrics(40, 5)  # a mean count is rounded


def test_error_messages_name_the_fault():
    with pytest.raises(ValueError, match=r"^caption_image holds an index outside \[0, n_images\)$"):
        hits(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"^images without captions \(first: \[1, 2, 3, 4, 5\]\); every image"):
        hits(np.zeros((8, 1)), [0])          # images 1..7 have none: the first five are named
