"""GaLR (Yuan et al., TGRS 2022, "Remote sensing cross-modal text-image retrieval based on global and local
information"): a global image vector (AMFMN's MVSA), a local one (a graph convolution over object regions), their
multi-level information dynamic fusion (MIDF), cosine scores against a GRU sentence vector, a hinge triplet loss,
and a re-ranking of the test score matrix (:func:`osdpm_lib.baselines.scoring.rerank`).

Replacements: the local branch's Faster R-CNN object regions (with DREA's de-noised features and enhanced adjacency)
become the ResNet grid cells with an adjacency from their feature similarity (row softmax of scaled cosines), two
residual GCN layers and a mean over the cells.  MIDF's attention blocks act on one global and one local token each,
where self-attention reduces to its value/merge projections: here a residual MLP per token (SA), a residual
linear map of the other token (guided attention), then ``global = sigmoid(local) * global``,
``local = global + local`` and softmax weights from ``global + local`` (the code's use of the first weight for
both terms is not copied).  Skip-thought vectors become a bidirectional GRU over word embeddings trained here.
"""

from __future__ import annotations

import torch
from torch import nn

from .amfmn import MVSA
from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline


class _Token(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, other=None):
        return self.norm(x + (self.mlp(x) if other is None else self.mlp(other)))


class LocalGCN(nn.Module):
    def __init__(self, channels: int, dim: int, layers: int = 2, temperature: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(channels, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.out = nn.Linear(dim, dim)
        self.temperature = temperature

    def forward(self, high):
        x = self.proj(cells(high))                                     # [B, R, d]
        n = l2norm(x)
        adj = torch.softmax(n @ n.transpose(1, 2) / self.temperature, dim=-1)
        for layer in self.layers:
            x = x + torch.relu(layer(adj @ x))
        return l2norm(self.out(x.mean(1)))


class MIDF(nn.Module):
    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.g2g, self.l2l, self.g2l, self.l2g = _Token(dim), _Token(dim), _Token(dim), _Token(dim)
        self.weight = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Linear(hidden, 2), nn.Softmax(-1))

    def forward(self, g, loc):
        g, loc = self.g2g(g), self.l2l(loc)
        loc = self.g2l(loc, g)            # local corrected by the global token
        g = self.l2g(g, loc)              # global supplemented by the local token
        g, loc = torch.sigmoid(loc) * g, g + loc
        w = self.weight(g + loc)
        return w[:, :1] * g + w[:, 1:] * loc


class GaLR(Baseline):
    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, low_channels: int = 0,
                 grid: int = 4, low_grid: int = 8, **_):
        super().__init__()
        self.global_ = MVSA(low_channels, channels, grid, low_grid, dim)
        self.local = LocalGCN(channels, dim)
        self.fusion = MIDF(dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=True)
        self.text_fc = nn.Linear(dim, dim)

    def encode_image(self, low, high):
        return (l2norm(self.fusion(self.global_(low, high), self.local(high))),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        return (l2norm(self.text_fc(sent)),)
