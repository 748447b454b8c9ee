"""MTFN (Wang et al., ACM MM 2019, "Matching Images and Text with Multi-modal Tensor Fusion and Re-ranking").

Follows the released code (github.com/Wangt-CN/MTFN-RR-PyTorch-Code, ``model.py``: ``FusionNoAtt`` with
``Core_Fusion``; ``option/FusionNoattn_baseline.yaml``; ``utils.calcul_loss``; ``rerank.py``):

* image vector: the mean of the regions (``torch.mean(input_v, 1)``), dropout 0.25, a linear map and ``tanh``;
* sentence vector: dropout 0.25, a linear map and ``tanh`` (the ``MTFN`` row of :data:`~osdpm_lib.baselines.SYSTEMS`
  sets ``dropout=0``: with the book's small vectors the input dropout keeps the model from fitting even a tiny
  training set; the class's default is the code's 0.25);
* **rank-R tensor fusion** (:func:`rank_r_fusion`): ``z = sum_r (W_v^r v + b_v^r) * (W_t^r t + b_t^r)`` (R rank-1
  factors, the config's ``R: 20``), no activation after it, then a linear layer to one number and a sigmoid: the
  pair's matching score in (0, 1).  The fused vector is never materialised: with no activation between the sum
  and the linear layer, ``w . z + b = sum_{r, m} w_m (W_v^r v)_m (W_t^r t)_m + b`` is an einsum over the factors;
* the loss: the hinge triplet loss on the hardest negatives, margin 0.2 (``utils.calcul_loss``);
* **re-ranking** (:func:`rerank_i2t`, the code's ``i2t_rerank`` with ``K1 = 15``): for each image query the top-K
  captions are re-sorted by the rank the image gets when each caption queries back (text -> image).  It reads the
  score matrix alone.  The code's ``t2i_rerank`` is not implemented: for a caption query it takes the best rank among
  the query's *ground-truth sibling captions* (``i // 5 * 5 + k``, the test set's 5-caption grouping), i.e. it reads
  the labels; text -> image stays as scored (:func:`rerank`).

Replaced here: the 36 Faster R-CNN region features by the ResNet grid cells (the AMFMN paper's RS row of MTFN used a
ResNet-18, its Sec. V-C); the skip-thoughts encoder (``BayesianUniSkip``, 2,400-d) by word embeddings and a
unidirectional GRU trained here, its last state; dims ``dim`` for ``dim_hv = dim_ht = dim_mm`` (the code: 1,024).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .encoders import TextEncoder, cells
from .scoring import Baseline

RERANK_K = 15         # the code's i2t_rerank(d, 15, 1)


def rank_r_fusion(hv: torch.Tensor, ht: torch.Tensor, w: torch.Tensor, b: torch.Tensor | float = 0.0
                  ) -> torch.Tensor:
    """``[bi, bt]`` of ``w . sum_r hv[i, r] * ht[j, r] + b`` for the per-factor projections ``hv [bi, R, m]``,
    ``ht [bt, R, m]`` (``W_v^r v`` and ``W_t^r t``) and the linear layer ``w [m]``, ``b`` (before the sigmoid)."""
    return torch.einsum("irm,jrm,m->ij", hv, ht, w) + b


class MTFN(Baseline):
    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, rank: int = 20,
                 dropout: float = 0.25, **_):
        super().__init__()
        self.rank, self.dim = rank, dim
        self.drop = nn.Dropout(dropout)
        self.linear_v = nn.Linear(channels, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=False)
        self.linear_t = nn.Linear(dim, dim)
        self.list_linear_hv = nn.Linear(dim, rank * dim)     # the R maps W_v^r (with bias) side by side
        self.list_linear_ht = nn.Linear(dim, rank * dim)
        self.linear_classif = nn.Linear(dim, 1)

    def encode_image(self, low, high):
        v = torch.tanh(self.linear_v(self.drop(cells(high).mean(1))))
        return (self.list_linear_hv(v).view(len(v), self.rank, self.dim),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        t = torch.tanh(self.linear_t(self.drop(sent)))
        return (self.list_linear_ht(t).view(len(t), self.rank, self.dim),)

    def score(self, img, txt):
        return torch.sigmoid(rank_r_fusion(img[0], txt[0], self.linear_classif.weight[0],
                                           self.linear_classif.bias[0]))

    def pair_bytes(self, img, txt):
        return 4 * 4 * self.rank * self.dim


def rerank_i2t(sims, k: int = RERANK_K) -> np.ndarray:
    """The code's ``i2t_rerank`` as a score matrix ``[n_images, n_captions]``: for each image (row) its top ``k``
    captions are re-ordered by the rank of the image in each caption's text -> image list (ties: the original
    order, a stable sort) and placed above every other caption, which keep their scores and order."""
    s = np.asarray(sims, dtype=np.float64)
    n_i, n_t = s.shape
    k = min(k, n_t)
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]                          # [n_i, k]
    t2i = np.argsort(-s, axis=0, kind="stable")                                 # [n_i, n_t] images per caption
    back = np.empty((n_t, n_i), dtype=np.int64)                                 # back[c, i]: rank of image i for c
    back[np.arange(n_t)[:, None], t2i.T] = np.arange(n_i)[None, :]
    rank_back = back[top, np.arange(n_i)[:, None]]                              # [n_i, k]
    order = np.take_along_axis(top, np.argsort(rank_back, axis=1, kind="stable"), axis=1)
    out = s.copy()
    out[np.arange(n_i)[:, None], order] = s.max() + 1.0 + (k - np.arange(k))[None, :]
    return out.astype(np.float32)


def rerank(sims, k: int = RERANK_K) -> tuple[np.ndarray, np.ndarray]:
    """MTFN's re-ranked matrices ``(for image->text, for text->image)``: the i2t re-ranking, and the text->image
    matrix as scored (the code's t2i re-ranking reads the ground-truth caption grouping; not done here)."""
    s = np.asarray(sims, dtype=np.float32)
    return rerank_i2t(s, k), s.copy()
