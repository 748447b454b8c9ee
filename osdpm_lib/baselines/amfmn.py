"""AMFMN (Yuan et al., TGRS 2022, "Exploring a fine-grained multiscale method for cross-modal remote sensing image
retrieval"): a multiscale visual self-attention (MVSA) image vector and a text representation guided by it, in
three variants of the guidance (``soft``, ``fusion``, ``sim``); cosine scores, a hinge triplet loss.

* MVSA (as in the AMFMN/GaLR code's ``VSA_Module``): the low scale (the stage before the grid stage) is
  subsampled onto the grid by a strided 3x3 convolution, the high scale (the grid stage) by a 1x1 convolution;
  their concatenation plus the high scale's channel mean gives a one-channel feature map and a sigmoid attention
  map over the cells; the attended map, flattened, gates (sigmoid of a linear map) the projected mean-pooled grid
  feature.
* Visually guided text (the caption's representation depends on the image it is scored against):
  ``soft``: attention over the words with the projected image vector as query, added to the sentence vector;
  ``sim``: the same with the words' cosine to the image vector (temperature 0.1) as attention logits;
  ``fusion``: the sentence vector gated by a sigmoid of a linear map of the image vector.
  The paper describes the three as soft attention, fusion and similarity guidance; these forms follow that
  description, not the original code (not public for the guidance part).
* The loss here is VSE++'s max-violation triplet loss (AMFMN's dynamic-margin triplet loss is not reproduced).
Skip-thought sentence vectors are replaced by a bidirectional GRU over word embeddings trained from scratch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline

GUIDANCE = ("soft", "fusion", "sim")


class MVSA(nn.Module):
    """The multiscale visual self-attention image vector ``[B, dim]`` (l2-normalised)."""

    def __init__(self, low_channels: int, channels: int, grid: int, low_grid: int, dim: int, hidden: int = 128):
        super().__init__()
        stride = max(1, low_grid // grid)
        self.low_conv = nn.Conv2d(low_channels, hidden, kernel_size=3, stride=stride, padding=1)
        self.high_conv = nn.Conv2d(channels, hidden, kernel_size=1)
        self.main = nn.Conv2d(2 * hidden, 1, kernel_size=1)
        self.attn = nn.Conv2d(2 * hidden, 1, kernel_size=1)
        self.gate = nn.Linear(grid * grid, dim)
        self.solo = nn.Linear(channels, dim)
        self.grid = grid

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        lo = nn.functional.adaptive_avg_pool2d(self.low_conv(low), self.grid)
        hi = self.high_conv(high)
        x = torch.cat([lo, hi], 1)
        x = x + hi.mean(1, keepdim=True)
        attended = (self.main(x) * torch.sigmoid(self.attn(x))).flatten(1)          # [B, H*W]
        solo = self.solo(cells(high).mean(1))
        return l2norm(solo * torch.sigmoid(self.gate(attended)))


class AMFMN(Baseline):
    pairwise = True
    word_fields = (0, 1)

    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, low_channels: int = 0,
                 grid: int = 4, low_grid: int = 8, guidance: str = "soft", **_):
        super().__init__()
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance={guidance!r}; expected one of {GUIDANCE}")
        self.guidance = guidance
        self.visual = MVSA(low_channels, channels, grid, low_grid, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=True)
        self.query = nn.Linear(dim, dim)
        self.fuse = nn.Linear(dim, dim)

    def encode_image(self, low, high):
        return (self.visual(low, high),)

    def encode_text(self, tokens):
        words, mask, sent = self.text(tokens)
        return words, mask, sent

    def score(self, img, txt):
        """cos(v_i, t_j|i) without a ``[bi, bt, d]`` tensor: for ``t = sum_w a_w h_w + s`` the numerator is
        ``sum_w a_w (v . h_w) + v . s`` and ``|t|^2 = a^T H a + 2 a . (h . s) + |s|^2`` (``H`` the words' Gram
        matrix); for ``fusion`` (``t = s * g(v)``) both are matrix products."""
        v = img[0]                                                        # [bi, d]
        words, mask, sent = txt                                           # [bt, L, d], [bt, L], [bt, d]
        bt, n_w, d = words.shape
        if self.guidance == "fusion":
            g = torch.sigmoid(self.fuse(v))
            return ((g * v) @ sent.T) / ((g * g) @ (sent * sent).T).clamp(min=1e-16).sqrt()
        vh = (v @ words.reshape(bt * n_w, d).T).view(len(v), bt, n_w)   # v . h_w   [bi, bt, L]
        if self.guidance == "soft":
            logits = (self.query(v) @ words.reshape(bt * n_w, d).T).view(len(v), bt, n_w) / math.sqrt(d)
        else:
            logits = vh / (words.norm(dim=-1)[None] + 1e-8) / 0.1
        a = torch.softmax(logits.masked_fill(~mask[None], float("-inf")), dim=2)
        gram = words @ words.transpose(1, 2)                              # [bt, L, L]
        hs = (words * sent[:, None]).sum(-1)                              # [bt, L]
        sq = ((a.unsqueeze(-2) @ gram.unsqueeze(0)).squeeze(-2) * a).sum(-1) + 2 * (a * hs[None]).sum(-1) \
            + (sent * sent).sum(-1)[None]
        return ((a * vh).sum(-1) + v @ sent.T) / sq.clamp(min=1e-16).sqrt()

    def pair_bytes(self, img, txt):
        return 4 * 8 * txt[0].shape[1]          # a few [L] vectors per pair
