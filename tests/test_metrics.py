import numpy as np
import pytest

from osdpm_lib.metrics import KEYS, chance_metrics, retrieval_metrics


def brute_force(sims, cap_img):
    """Reference implementation: explicit loops and sorting with a tie-breaking rule."""
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


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(3, 25))
    per = rng.integers(1, 6, size=n_img)
    cap_img = np.repeat(np.arange(n_img), per)
    rng.shuffle(cap_img)
    # quantised scores create many ties, including negative and zero scores
    sims = rng.integers(-3, 4, size=(n_img, len(cap_img))).astype(np.float32)
    got = retrieval_metrics(sims, cap_img)
    ref = brute_force(sims, cap_img)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k]), k


def test_ties_with_wrong_items_count_against_and_own_ties_do_not():
    # image 0 has captions 0,1 (identical scores); caption 2 belongs to image 1
    sims = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])
    m = retrieval_metrics(sims, [0, 0, 1])
    # image 0: wrong caption 2 ties the best own one -> rank 1, miss at R@1
    assert m["i2t_r1"] == 50.0
    # caption 2: own image 1 scores 2 > 1 -> hit; captions 0,1: own image 0 scores 1 > 0 -> hit
    assert m["t2i_r1"] == 100.0


def test_perfect_and_negative_scores():
    cap_img = np.repeat(np.arange(4), 5)
    sims = -np.ones((4, 20))
    sims[cap_img, np.arange(20)] = -0.5  # all scores negative, own ones highest
    m = retrieval_metrics(sims, cap_img)
    assert m["rsum"] == 600.0 and m["mr"] == 100.0


def test_chance_matches_random_scores():
    rng = np.random.default_rng(0)
    n = 200
    cap_img = np.repeat(np.arange(n), 5)
    runs = [retrieval_metrics(rng.standard_normal((n, 5 * n)), cap_img)["mr"] for _ in range(5)]
    assert np.mean(runs) == pytest.approx(chance_metrics(n)["mr"], rel=0.15)


def test_bad_caption_image_rejected():
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="without captions"):
        retrieval_metrics(np.zeros((3, 3)), [0, 0, 1])
