"""The retrieval evaluation protocol (hand-written: torchmetrics' retrieval recall ignores scores <= 0).

``sims[i, j]`` scores image ``i`` against caption ``j``; ``caption_image[j]`` is caption ``j``'s image.

* image->text: image ``i`` is a hit at K if any of its captions ranks within its top K among all
  captions.  The rank of the best own caption is the number of *wrong* captions scored >= it
  (ties with a wrong caption count against the hit); ties among an image's own captions do not
  matter, since only the best own caption is ranked.
* text->image: caption ``j`` ranks its own image among all images; its rank is the number of wrong
  images scored >= the own image.

All results are percentages; ``rsum`` is the sum of the six recalls and ``mr`` their mean.
"""

from __future__ import annotations

import numpy as np

KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "mr")
KS = (1, 5, 10)


def _as_numpy(sims) -> np.ndarray:
    if hasattr(sims, "detach"):  # torch tensor
        sims = sims.detach().float().cpu().numpy()
    return np.asarray(sims, dtype=np.float32)


def ranks_i2t(sims, caption_image) -> np.ndarray:
    """0-based rank of each image's best own caption (number of wrong captions scored >= it)."""
    s = _as_numpy(sims)
    cap_img = np.asarray(caption_image, dtype=np.int64)
    n_img, n_cap = s.shape
    if cap_img.shape != (n_cap,):
        raise ValueError(f"caption_image has shape {cap_img.shape}, expected ({n_cap},)")
    if n_cap and (cap_img.min() < 0 or cap_img.max() >= n_img):
        raise ValueError("caption_image holds an index outside [0, n_images)")
    own = np.zeros((n_img, n_cap), dtype=bool)
    own[cap_img, np.arange(n_cap)] = True
    if not own.any(axis=1).all():
        missing = np.flatnonzero(~own.any(axis=1))[:5].tolist()
        raise ValueError(f"images without captions (first: {missing}); every image needs one")
    best_own = np.where(own, s, -np.inf).max(axis=1, keepdims=True)
    return ((s >= best_own) & ~own).sum(axis=1)


def ranks_t2i(sims, caption_image) -> np.ndarray:
    """0-based rank of each caption's own image (number of wrong images scored >= it)."""
    s = _as_numpy(sims)
    cap_img = np.asarray(caption_image, dtype=np.int64)
    n_cap = s.shape[1]
    own_score = s[cap_img, np.arange(n_cap)]
    return (s >= own_score[None, :]).sum(axis=0) - 1


def retrieval_metrics(sims, caption_image) -> dict[str, float]:
    """Recall@{1,5,10} both ways, Rsum and mean recall (mR), in percent."""
    r_i2t = ranks_i2t(sims, caption_image)
    r_t2i = ranks_t2i(sims, caption_image)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", r_i2t), ("t2i", r_t2i)):
        for k in KS:
            out[f"{name}_r{k}"] = float(100.0 * np.mean(ranks < k))
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
