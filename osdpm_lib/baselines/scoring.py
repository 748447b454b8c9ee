"""What the baselines share beyond the encoders: the base class, the max-violation triplet loss, the batched score
matrix (within a memory budget) and GaLR's re-ranking of a score matrix.

A system encodes images and captions into tuples of tensors (indexed along dim 0) and scores a block of images
against a block of captions (``score(img, txt) -> [bi, bt]``).  For dot-product systems the block is a matrix
product; for the cross-attention systems (SCAN) and the text-guided ones (AMFMN) every pair costs memory, and
:func:`score_matrix` walks the full matrix in blocks whose estimated size (``pair_bytes`` per pair) stays within
``budget_bytes`` (default 8 GiB).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import metrics

GiB = 1 << 30


class Baseline(nn.Module):
    """Base of every baseline system.  ``pairwise``: its score of a pair depends on both sides jointly."""

    pairwise = False
    margin = 0.2
    word_fields: tuple[int, ...] = ()    # text tensors indexed by word ([bt, L, ...]); the last is the word mask

    def encode_image(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def score(self, img: tuple, txt: tuple) -> torch.Tensor:
        """``[bi, bt]`` scores; default: dot product of the first tensors (l2-normalised: cosine)."""
        return img[0] @ txt[0].T

    def pair_bytes(self, img: tuple, txt: tuple) -> int:
        """Estimated bytes one (image, caption) pair of :meth:`score` holds at once."""
        return 4

    def see_captions(self, tokens: torch.Tensor, caption_index, words) -> None:
        """Hook called once before training with the training split's captions (``long [M, L]``), its
        ``caption_index()`` and the vocabulary's words (AMFMN's dynamic margin builds its prior similarity here);
        nothing by default."""

    def loss_inputs(self, images: torch.Tensor, captions: torch.Tensor) -> dict:
        """Extra keyword arguments of :meth:`loss` for a training batch of these image and caption indices (of the
        training split); none by default."""
        return {}

    def loss(self, scores: torch.Tensor, max_violation: bool = True, positives: torch.Tensor | None = None
             ) -> torch.Tensor:
        """VSE++'s triplet loss: the hardest negatives (``max_violation``, the systems' own loss) or the sum over
        all negatives (the warm-up of :class:`~osdpm_lib.baselines.profiles.BaselineConfig`'s ``warmup_epochs``).
        ``positives``: the batch's off-diagonal matching pairs (:func:`same_image`), left out of the negatives."""
        return triplet_loss(scores, self.margin, max_violation=max_violation, positives=positives)


def same_image(images: torch.Tensor) -> torch.Tensor | None:
    """The off-diagonal positives of a training batch whose row ``i`` is image ``images[i]`` and column ``j`` caption
    ``j`` (the pair of row ``j``): ``[B, B]`` bool, True where ``i != j`` and ``images[i] == images[j]`` (caption
    ``j`` describes image ``i`` too); None when every image occurs once (one random caption per image, the book's
    ``epoch_unit="image"``: the losses are then exactly what they were).  With every caption per epoch
    (``epoch_unit="caption"``, the originals' data loaders) a batch can hold two captions of one image; the
    originals (VSE++, SCAN, AMFMN, GaLR) count such a pair as a negative, here the losses leave it out."""
    same = images[:, None] == images[None, :]
    same.fill_diagonal_(False)
    return same if bool(same.any()) else None


def triplet_loss(scores: torch.Tensor, margin: float | torch.Tensor = 0.2, max_violation: bool = True,
                 positives: torch.Tensor | None = None) -> torch.Tensor:
    """VSE++'s hinge triplet loss on a batch score matrix whose diagonal holds the matching pairs: both
    directions, the hardest negative of each query (``max_violation``) or the sum over negatives.  ``margin``: a
    number, or a ``[B, B]`` tensor of each pair's margin (image ``i`` x caption ``j``; AMFMN's Eq. 30);
    ``positives``: off-diagonal matching pairs (:func:`same_image`), not negatives."""
    cost_t, cost_i = hinges(scores, margin, positives)
    if max_violation:
        return cost_t.max(1).values.sum() + cost_i.max(0).values.sum()
    return cost_t.sum() + cost_i.sum()


def hinges(scores: torch.Tensor, margin: float | torch.Tensor = 0.2, positives: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The hinge of every negative pair of a batch score matrix whose diagonal holds the matching pairs:
    ``([margin + s_ij - s_ii]_+ , [margin + s_ij - s_jj]_+)`` (image queries with wrong captions, caption queries with
    wrong images), the diagonal zero, and the off-diagonal matching pairs ``positives`` (``[B, B]`` bool or None:
    :func:`same_image`) zero too."""
    diag = scores.diag()
    eye = torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    if positives is not None:
        eye = eye | positives.to(scores.device)
    cost_t = (margin + scores - diag[:, None]).clamp(min=0).masked_fill(eye, 0)   # image query, wrong captions
    cost_i = (margin + scores - diag[None, :]).clamp(min=0).masked_fill(eye, 0)   # caption query, wrong images
    return cost_t, cost_i


def _take(rep: tuple, sl: slice) -> tuple:
    return tuple(x[sl] for x in rep)


def block_sizes(n_img: int, n_txt: int, pair_bytes: int, budget_bytes: int = 8 * GiB,
                max_txt: int = 1024) -> tuple[int, int]:
    """Images and captions per block so that ``bi * bt * pair_bytes <= budget_bytes`` (at least one pair)."""
    bt = max(1, min(n_txt, max_txt, budget_bytes // max(1, pair_bytes)))
    bi = max(1, min(n_img, budget_bytes // max(1, pair_bytes * bt)))
    return bi, bt


@torch.no_grad()
def score_matrix(model: Baseline, img: tuple, txt: tuple, budget_bytes: int = 8 * GiB) -> np.ndarray:
    """float32 ``[n_images, n_captions]`` of ``model.score`` over all pairs, computed block by block within
    ``budget_bytes`` (the block's estimated working memory, from ``model.pair_bytes``).  The blocks are scored and
    gathered on the representations' device (under the caller's autocast, if any); only the finished matrix comes
    back to the host."""
    n_img, n_txt = len(img[0]), len(txt[0])
    bi, bt = block_sizes(n_img, n_txt, model.pair_bytes(img, txt), budget_bytes)
    device = img[0].device
    out = torch.empty((n_img, n_txt), dtype=torch.float32, device=device)
    # word-level systems: captions in order of length, each block cut to its longest caption
    fields = model.word_fields
    order = (torch.argsort(txt[fields[-1]].sum(1), stable=True) if fields
             else torch.arange(n_txt, device=txt[0].device))
    for t in range(0, n_txt, bt):
        cols = order[t:t + bt]
        tb = tuple(x[cols] for x in txt)
        if fields:
            width = max(1, int(tb[fields[-1]].sum(1).max()))
            tb = tuple(x[:, :width] if k in fields else x for k, x in enumerate(tb))
        cols = cols.to(device)
        for i in range(0, n_img, bi):
            out[i:i + bi, cols] = model.score(_take(img, slice(i, i + bi)), tb).float()
    return out.cpu().numpy()


# ------------------------------------------------------------------------------------------- re-ranking
def _rerank_rows(sims: np.ndarray, k: int, wp1: float, wp2: float) -> np.ndarray:
    """GaLR's multivariate re-ranking (``i2t_rerank_optim`` of the GaLR code) for the queries on the rows.

    Each query's top ``k`` candidates get ``wp1 * p1 + p2 + wp2 * p3`` and every other candidate 0:
    ``p1`` the score divided by the candidate's column sum, ``p2 = exp(-0.05 (rank + 1))`` of its original rank,
    ``p3`` the same of its rank after the top ``k`` are re-sorted by the rank the query gets when the
    candidate queries back (ties in that reverse rank keep the original order; a reverse rank counts the
    items scoring strictly higher)."""
    n_q, n_c = sims.shape
    k = min(max(10, k), n_c)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]                  # [n_q, k]
    col_sum = sims.sum(axis=0)
    out = np.zeros_like(sims, dtype=np.float32)
    rows = np.arange(n_q)[:, None]
    val = sims[rows, top]                                                   # [n_q, k]
    # reverse rank: how many queries score strictly higher than this query on candidate c
    col_sorted = np.sort(sims, axis=0)                                      # ascending per column
    back = np.empty_like(top)
    for j in range(k):
        c = top[:, j]
        back[:, j] = n_q - np.array([np.searchsorted(col_sorted[:, ci], v, side="right") for ci, v in zip(c, val[:, j])])
    decay = np.exp(-0.05 * (np.arange(k) + 1.0))
    out[rows, top] = wp1 * val / col_sum[top] + decay[None, :]
    order = np.argsort(back, axis=1, kind="stable")                         # positions re-sorted by reverse rank
    out[rows, np.take_along_axis(top, order, axis=1)] += wp2 * decay[None, :]
    return out


def rerank(sims, k: int = 30, wp1: float = 0.3, wp2: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """GaLR's re-ranked score matrices ``(for image->text, for text->image)``, both ``[n_images, n_captions]``
    (defaults: ``K = 30, Wp1 = 0.3, Wp2 = 1.1`` of the GaLR code's ``rerank.py``; not tuned here)."""
    s = np.asarray(sims, dtype=np.float32)
    return _rerank_rows(s, k, wp1, wp2), _rerank_rows(s.T, k, wp1, wp2).T


def rerank_metrics(sims, caption_image, ties: str = "expected", reranked=None, **kw) -> dict[str, float]:
    """The book's metrics (:mod:`osdpm_lib.metrics`) after :func:`rerank`: image->text recalls from the
    image-side re-ranked matrix, text->image recalls from the caption-side one (``reranked``: the pair
    :func:`rerank` returned for ``sims`` already)."""
    s_i2t, s_t2i = reranked if reranked is not None else rerank(sims, **kw)
    a = metrics.retrieval_metrics(s_i2t, caption_image, ties)
    b = metrics.retrieval_metrics(s_t2i, caption_image, ties)
    out = {k: (a if k.startswith("i2t") else b)[k] for k in metrics.KEYS[:6]}
    recalls = [out[k] for k in metrics.KEYS[:6]]
    return out | {"rsum": float(sum(recalls)), "mr": float(np.mean(recalls))}
