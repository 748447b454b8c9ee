"""The retrieval evaluation protocol (hand-written: torchmetrics' retrieval recall ignores scores <= 0).

``sims[i, j]`` scores image ``i`` against caption ``j``; ``caption_image[j]`` is caption ``j``'s image.
Scores are compared in float32 (lower-precision inputs such as bf16 are upcast first).

* image->text: image ``i`` is a hit at K if any of its captions ranks within its top K among all
  captions.  With ``s*`` its best own score, ``g`` wrong captions score above ``s*``, ``t`` wrong
  captions tie it and ``m`` own captions tie it.
* text->image: caption ``j`` ranks its own image among all images: ``g`` and ``t`` count wrong
  images above and tied with the own image's score, ``m = 1``.

Tie rules (``ties=``, described for tables in :data:`TIE_RULES`):

* ``"expected"`` (default): the expected hit under uniformly random tie-breaking,
  ``hit@K = 0 if K <= g else 1 - C(t, K-g) / C(t+m, K-g)`` (``C(t, j) = 0`` for ``j > t``).
  Without ties this is plain ranking.
* ``"strict"``: a tie with a wrong item counts against the hit: ``hit@K = [g + t < K]``.

:func:`hits` gives per-query hit probabilities; :func:`retrieval_metrics` averages them into
percentages; ``rsum`` is the sum of the six recalls and ``mr`` their mean.
"""

from __future__ import annotations

import numpy as np

KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "mr")
KS = (1, 5, 10)
TIE_RULES = {
    "expected": "ties broken uniformly at random (expected value); no ties = plain ranking",
    "strict": "a tie with a wrong item counts as a miss (pessimistic); no ties = plain ranking",
}


def _as_numpy(sims) -> np.ndarray:
    if hasattr(sims, "detach"):  # torch tensor (bf16/fp16 upcast before any comparison)
        sims = sims.detach().float().cpu().numpy()
    return np.asarray(sims, dtype=np.float32)


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties={ties!r}; allowed values: {', '.join(map(repr, TIE_RULES))}")


def _tie_counts(scores: np.ndarray, ref: np.ndarray, own_scores: np.ndarray, own_query: np.ndarray):
    """Per query row of ``scores`` against its reference score ``ref``: (g, t, m) = wrong items
    strictly above, wrong items tied, own items tied.  ``own_scores[c]`` is the score of own item
    ``c`` of query ``own_query[c]`` (each own item listed once)."""
    n = len(ref)
    above = (scores > ref[:, None]).sum(axis=1)
    tied = (scores == ref[:, None]).sum(axis=1)
    own_above = np.bincount(own_query, own_scores > ref[own_query], minlength=n).astype(np.int64)
    own_tied = np.bincount(own_query, own_scores == ref[own_query], minlength=n).astype(np.int64)
    return above - own_above, tied - own_tied, own_tied


def _hit_prob(g: np.ndarray, t: np.ndarray, m: np.ndarray, ties: str, ks=KS) -> np.ndarray:
    """float64 [n, len(ks)]: probability that the query is a hit at each K (see module docstring)."""
    j = np.asarray(ks)[None, :] - g[:, None]  # top-K slots left after the wrong items strictly above
    t = t[:, None]
    if ties == "strict":
        return (j > t).astype(np.float64)
    # P(all j free slots go to wrong tied items) = C(t, j) / C(t+m, j) = prod_{i<j} (t-i) / (t+m-i)
    i = np.arange(max(ks))[None, :]
    tf, mf = t.astype(np.float64), m[:, None].astype(np.float64)
    factors = np.where(i < tf, (tf - i) / np.maximum(tf + mf - i, 1.0), 0.0)
    p_miss = np.concatenate([np.ones((len(g), 1)), np.cumprod(factors, axis=1)], axis=1)
    p_miss = np.take_along_axis(p_miss, np.clip(j, 0, max(ks)), axis=1)
    return np.where(j > 0, 1.0 - p_miss, 0.0)


def hits(sims, caption_image, ties: str = "expected") -> tuple[np.ndarray, np.ndarray]:
    """Per-query hit probabilities at K = 1, 5, 10: ``(i2t [n_images, 3], t2i [n_captions, 3])``,
    float64; exactly 0/1 without ties (or with ``ties="strict"``)."""
    _check_ties(ties)
    i2t, t2i = _query_counts(sims, caption_image)
    return _hit_prob(*i2t, ties), _hit_prob(*t2i, ties)


def _query_counts(sims, caption_image):
    """``(g, t, m)`` of every image->text query and of every text->image query (module docstring), after checking
    the inputs."""
    s = _as_numpy(sims)
    cap_img = np.asarray(caption_image, dtype=np.int64)
    n_img, n_cap = s.shape
    if cap_img.shape != (n_cap,):
        raise ValueError(f"caption_image has shape {cap_img.shape}, expected ({n_cap},)")
    if n_cap and (cap_img.min() < 0 or cap_img.max() >= n_img):
        raise ValueError("caption_image holds an index outside [0, n_images)")
    n_own = np.bincount(cap_img, minlength=n_img)
    if (n_own == 0).any():
        missing = np.flatnonzero(n_own == 0)[:5].tolist()
        raise ValueError(f"images without captions (first: {missing}); every image needs one")
    caps = np.arange(n_cap)
    own = s[cap_img, caps]  # each caption's score with its own image
    best_own = np.full(n_img, -np.inf, dtype=np.float32)
    np.maximum.at(best_own, cap_img, own)
    return _tie_counts(s, best_own, own, cap_img), _tie_counts(s.T, own, own, caps)


def _expected_rank(g: np.ndarray, t: np.ndarray, m: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the first relevant item (1 = top) and its reciprocal, per query, under the tie rule: ``"strict"``
    places every tied wrong item first; ``"expected"`` averages over uniformly random tie-breaking, where the number
    ``X`` of tied wrong items before the first of the ``m`` tied own ones has ``P(X >= x) = C(t, x) / C(t+m, x)``:
    ``E[rank] = g + 1 + t / (m + 1)`` and ``E[1/rank] = sum_x P(X = x) / (g + 1 + x)``."""
    g, t, m = (np.asarray(v, dtype=np.float64) for v in (g, t, m))
    if ties == "strict":
        return g + t + 1.0, 1.0 / (g + t + 1.0)
    width = int(t.max()) + 1 if len(t) else 1
    x = np.arange(width)[None, :]
    factors = np.where(x < t[:, None], (t[:, None] - x) / np.maximum(t[:, None] + m[:, None] - x, 1.0), 0.0)
    p_ge = np.concatenate([np.ones((len(g), 1)), np.cumprod(factors, axis=1)], axis=1)   # P(X >= 0 .. width)
    p_eq = p_ge[:, :-1] - p_ge[:, 1:]
    rr = (p_eq / (g[:, None] + 1.0 + x)).sum(axis=1)
    return g + 1.0 + t / (m + 1.0), rr


def ranks(sims, caption_image, ties: str = "expected", with_hits: bool = False) -> dict[str, np.ndarray]:
    """Per query, the rank of the first relevant item and its reciprocal rank (float64; expected values under
    ``ties="expected"``): ``i2t_rank``, ``i2t_rr`` [n_images] (an image's best own caption among all captions),
    ``t2i_rank``, ``t2i_rr`` [n_captions] (a caption's image among all images).  ``with_hits``: also
    :func:`hits`' arrays (``i2t_hits``, ``t2i_hits``) from the same counting pass."""
    _check_ties(ties)
    i2t, t2i = _query_counts(sims, caption_image)
    (r1, rr1), (r2, rr2) = _expected_rank(*i2t, ties), _expected_rank(*t2i, ties)
    out = {"i2t_rank": r1, "i2t_rr": rr1, "t2i_rank": r2, "t2i_rr": rr2}
    if with_hits:
        out |= {"i2t_hits": _hit_prob(*i2t, ties), "t2i_hits": _hit_prob(*t2i, ties)}
    return out


def retrieval_metrics(sims, caption_image, ties: str = "expected") -> dict[str, float]:
    """Recall@{1,5,10} both ways, Rsum and mean recall (mR), in percent (means of :func:`hits`)."""
    i2t, t2i = hits(sims, caption_image, ties)
    out: dict[str, float] = {}
    for name, h in (("i2t", i2t), ("t2i", t2i)):
        for col, k in enumerate(KS):
            out[f"{name}_r{k}"] = float(100.0 * h[:, col].mean())
    recalls = [out[k] for k in KEYS[:6]]
    out["rsum"] = float(sum(recalls))
    out["mr"] = float(np.mean(recalls))
    return out


def chance_metrics(n_images: int, captions_per_image: float = 5.0) -> dict[str, float]:
    """Expected metrics of random scores (no ties), for a chance line beside measured ones.

    text->image: P(rank < K) = K / n_images.  image->text: an image with c captions among n
    hits at K if one of its c captions is among K random draws from n*c captions (hypergeometric).
    """
    n, c = int(n_images), int(round(captions_per_image))
    total = n * c
    out: dict[str, float] = {}
    for k in KS:
        # P(no own caption among the top k) = C(total - c, k) / C(total, k)
        p_miss = 1.0
        for t in range(min(k, total)):
            p_miss *= (total - c - t) / (total - t)
        out[f"i2t_r{k}"] = 100.0 * (1.0 - max(p_miss, 0.0))
    for k in KS:
        out[f"t2i_r{k}"] = 100.0 * min(k / n, 1.0)
    recalls = [out[k] for k in KEYS[:6]]
    out["rsum"] = sum(recalls)
    out["mr"] = sum(recalls) / 6
    return out
