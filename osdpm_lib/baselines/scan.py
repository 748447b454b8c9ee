"""SCAN (Lee et al., ECCV 2018): stacked cross attention between image regions and words.

* ``t2i``: each word attends over the regions (``clipped_l2norm`` of the attention over the words, softmax over the
  regions with temperature ``lambda_softmax = 9``), the word's relevance is its cosine with its attended region
  context, and the caption-image score is their LogSumExp (``lambda_lse = 6``).
* ``i2t``: each region attends over the words (``lambda_softmax = 4``), relevances averaged over regions.

The loss is VSE++'s max-violation triplet loss on these scores (margin 0.2).  Regions: the ResNet grid cells
projected to the joint space (SCAN uses 36 Faster R-CNN boxes with bottom-up-attention features).

The cosine of a word with its context ``sum_r a_r v_r`` needs no ``[pairs, words, d]`` tensor:
``cos = sum_r a_r (w . v_r) / |sum_r a_r v_r|`` and ``|sum_r a_r v_r|^2 = a^T G a`` with ``G = V V^T`` the regions'
Gram matrix; the same holds for the regions' word contexts.  A block of ``bi`` images by ``bt`` captions then
holds a few ``[bi, bt, L, R]`` tensors (L words, R regions), which :meth:`SCAN.pair_bytes` reports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline

EPS = 1e-8


def _masked_l2norm(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    x = x * mask
    return x / (x.norm(dim=dim, keepdim=True) + EPS)


def scan_scores(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor, direction: str = "t2i",
                lambda_softmax: float | None = None, lambda_lse: float = 6.0) -> torch.Tensor:
    """SCAN scores ``[bi, bt]`` of l2-normalised ``regions [bi, R, d]`` against l2-normalised ``words [bt, L, d]``
    (``mask [bt, L]``: real words)."""
    m = mask.to(regions.dtype)[None, :, :, None]                     # [1, bt, L, 1]
    (bi, n_r, d), (bt, n_w, _) = regions.shape, words.shape
    # [bi, bt, L, R] w . v_r, laid out contiguously (a matmul of every word against every image's regions)
    logits = torch.matmul(words.reshape(1, bt * n_w, d), regions.transpose(1, 2)).view(bi, bt, n_w, n_r)
    attn = F.leaky_relu(logits, 0.1)
    if direction == "t2i":       # words attend regions: normalise over words, softmax over regions
        lam = 9.0 if lambda_softmax is None else lambda_softmax
        attn = attn * m
        inv = 1.0 / (torch.einsum("ijlr,ijlr->ijr", attn, attn).sqrt() + EPS)           # 1 / |attn| over words
        a = torch.softmax(attn * (lam * inv).unsqueeze(2), dim=3)                          # [bi, bt, L, R]
        gram = regions @ regions.transpose(1, 2)                                           # [bi, R, R]
        ctx_sq = torch.einsum("ijlr,ijlr->ijl", (a.view(bi, bt * n_w, n_r) @ gram).view(bi, bt, n_w, n_r), a)
        cos = torch.einsum("ijlr,ijlr->ijl", a, logits) * torch.rsqrt(ctx_sq.clamp(min=EPS))   # [bi, bt, L]
        lse = torch.logsumexp((lambda_lse * cos).masked_fill(~mask[None], float("-inf")), dim=2)
        return lse / lambda_lse
    if direction == "i2t":       # regions attend words: normalise over regions, softmax over (real) words
        lam = 4.0 if lambda_softmax is None else lambda_softmax
        a = lam * _masked_l2norm(attn, torch.ones_like(m), dim=3)
        a = torch.softmax(a.masked_fill(m == 0, float("-inf")), dim=2)                    # [bi, bt, L, R]
        gram = words @ words.transpose(1, 2)                                               # [bt, L, L]
        ctx_sq = ((gram.unsqueeze(0) @ a) * a).sum(2)                                       # a^T H a
        cos = (a * logits).sum(2) / ctx_sq.clamp(min=EPS).sqrt()                           # [bi, bt, R]
        return cos.mean(2)
    raise ValueError(f"direction={direction!r}; expected 't2i' or 'i2t'")


class SCAN(Baseline):
    pairwise = True
    word_fields = (0, 1)

    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128,
                 direction: str = "t2i", **_):
        super().__init__()
        if direction not in ("t2i", "i2t"):
            raise ValueError(f"direction={direction!r}; expected 't2i' or 'i2t'")
        self.direction = direction
        self.img_fc = nn.Linear(channels, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=True)

    def encode_image(self, low, high):
        return (l2norm(self.img_fc(cells(high))),)

    def encode_text(self, tokens):
        words, mask, _ = self.text(tokens)
        return l2norm(words), mask

    def score(self, img, txt):
        return scan_scores(img[0], txt[0], txt[1], self.direction)

    def pair_bytes(self, img, txt):
        n_words, n_regions = txt[0].shape[1], img[0].shape[1]
        return 4 * 8 * n_words * n_regions      # logits, attention, softmax, products: a few [L, R] per pair
