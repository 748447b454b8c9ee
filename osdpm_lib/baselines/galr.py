"""GaLR (Yuan et al., TGRS 2022, "Remote sensing cross-modal text-image retrieval based on global and local
information"; code: github.com/xiaoyuan1996/GaLR, ``layers/GaLR.py`` and ``layers/GaLR_utils.py``): a global image
vector (AMFMN's MVSA), a local one (a graph convolution over object regions), their multi-level information dynamic
fusion (MIDF), cosine scores against a sentence vector, a hinge triplet loss, and a re-ranking of the test score
matrix (:func:`osdpm_lib.baselines.scoring.rerank`).

What follows the original (class names of ``GaLR_utils.py`` / ``GaLR.py``):

* Global branch: ``ExtractFeature`` + ``VSA_Module`` (:class:`~osdpm_lib.baselines.amfmn.MVSA`: ``layer1 + layer2``
  and ``layer3 + layer4`` joined, the salient mask on the mean-pooled ``layer4``), l2-normalised as GaLR's copy does.
* Local branch: ``GCN``, three graph convolutions ``X <- ReLU(W_k (A X))`` with bias-free weights
  (``d_in -> d_in -> d_in / 2 -> d_out``, ``d_out = 20`` as the code's), the nodes' outputs concatenated in their
  fixed order, a linear map to the embedding, l2-normalised.
* ``Fusion_MIDF``: ``SA`` (self-attention sublayer, then an ``FFN`` sublayer, each residual + the code's
  ``LayerNorm``, ``a (x - mean) / (std + 1e-6) + b`` with the unbiased std) on each branch's token; ``SGA`` (self-
  attention, attention guided by the other branch's token, ``FFN``) for the local correction by the global token
  and then the global supplement by the corrected local token; ``MHAtt`` multi-head scaled dot-product attention
  (8 heads, ``linear_v/k/q/merge``), ``FFN`` an MLP ``d -> 2d -> d`` with ReLU (``mca_FF_SIZE = 2 x
  mca_HIDDEN_SIZE``), dropout 0.1 (``mca_DROPOUT_R``); then ``global = sigmoid(local) * global``,
  ``local = global + local`` and the dynamic weights ``softmax(MLP(global + local))`` (``d -> d`` with a sigmoid,
  dropout 0.2, ``-> 2``).  Each branch is one token, as in the code, so every attention's softmax is over a single
  key (weight 1): the attention sublayers act through their value and merge projections.
* The loss: ``calcul_loss`` with the released configs' ``max_violation: 0``, ``margin: 0.2`` (the sum over all
  negatives, fixed by the row); the re-ranking with the code's ``K = 30, Wp1 = 0.3, Wp2 = 1.1``.

What differs (the row in :data:`osdpm_lib.baselines.SYSTEMS` names it too):

* Local regions: the code's input is DREA's output for the Faster R-CNN detections (20 objects, a 20-dimensional
  de-noised representation each, and an enhanced adjacency matrix, precomputed).  Here the nodes are the cells of
  ``layer3`` (4 x 4 at 64 px, 14 x 14 at 224 px) with their channels as the representation (``d_in``), and the
  adjacency is the row softmax of their cosine similarities over 0.1 (from the frozen features, not learnt).  The
  global branch sees ``layer3`` only through MVSA's 3-channel attention mask and pools ``layer4`` (2 x 2 at 64 px,
  7 x 7 at 224 px); the local branch reads ``layer3``'s finer cells one by one at full width.
* The dynamic fusion weights: each branch gets its own (``w_g * global + w_l * local``); the code multiplies both
  branches by the first weight, which a cosine score does not see.
* The sentence: skip-thought vectors (``Skipthoughts_Embedding_Module``) become word embeddings + a bidirectional
  GRU trained here (the mean of the two directions' last states) and a linear map.
* ``layer4`` at 64 px is GaLR's own module, trained with it (as in :mod:`.amfmn`: the shared backbone and the
  shipped ``synthpre`` weights end at ``layer3``; the original fine-tunes its whole ImageNet ResNet-18).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .amfmn import MVSA
from .encoders import TextEncoder, cells, l2norm
from .scoring import Baseline


class LayerNorm(nn.Module):
    """The MCAN code's LayerNorm: ``a (x - mean) / (std + eps) + b`` with the unbiased std."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.a_2 = nn.Parameter(torch.ones(size))
        self.b_2 = nn.Parameter(torch.zeros(size))

    def forward(self, x):
        return self.a_2 * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.b_2


class MHAtt(nn.Module):
    """Multi-head scaled dot-product attention (``MHAtt``): ``merge(softmax(q k^T / sqrt(d_h)) v)``."""

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not a multiple of heads={heads}")
        self.heads = heads
        self.linear_v, self.linear_k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.linear_q, self.linear_merge = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, v, k, q):
        b, d = q.shape[0], q.shape[-1]

        def split(x):
            return x.view(b, -1, self.heads, d // self.heads).transpose(1, 2)      # [B, heads, n, d_h]

        v, k, q = split(self.linear_v(v)), split(self.linear_k(k)), split(self.linear_q(q))
        att = self.dropout(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1))
        return self.linear_merge((att @ v).transpose(1, 2).reshape(b, -1, d))


class FFN(nn.Module):
    """``FFN``: ``MLP(d -> ff -> d)``: linear, ReLU, dropout, linear."""

    def __init__(self, dim: int, ff: int, dropout: float = 0.1):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, dim))

    def forward(self, x):
        return self.mlp(x)


class SA(nn.Module):
    """Self-attention block: ``x = LN(x + MHAtt(x, x, x)); x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, ff: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.mhatt = MHAtt(dim, heads, dropout)
        self.ffn = FFN(dim, ff, dropout)
        self.dropout1, self.norm1 = nn.Dropout(dropout), LayerNorm(dim)
        self.dropout2, self.norm2 = nn.Dropout(dropout), LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(x + self.dropout1(self.mhatt(x, x, x)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class SGA(nn.Module):
    """Self-guided attention block: ``x = LN(x + MHAtt(x, x, x)); x = LN(x + MHAtt(y, y, x)); x = LN(x + FFN(x))``
    (``y`` guides ``x``: keys and values from ``y``, queries from ``x``)."""

    def __init__(self, dim: int, ff: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.mhatt1, self.mhatt2 = MHAtt(dim, heads, dropout), MHAtt(dim, heads, dropout)
        self.ffn = FFN(dim, ff, dropout)
        self.dropout1, self.norm1 = nn.Dropout(dropout), LayerNorm(dim)
        self.dropout2, self.norm2 = nn.Dropout(dropout), LayerNorm(dim)
        self.dropout3, self.norm3 = nn.Dropout(dropout), LayerNorm(dim)

    def forward(self, x, y):
        x = self.norm1(x + self.dropout1(self.mhatt1(x, x, x)))
        x = self.norm2(x + self.dropout2(self.mhatt2(y, y, x)))
        return self.norm3(x + self.dropout3(self.ffn(x)))


class GCN(nn.Module):
    """The code's ``GCN``: three bias-free graph convolutions ``X <- ReLU(W (A X))`` (``d_in -> d_in -> d_in // 2
    -> d_out``), the nodes' outputs concatenated, a linear map to ``dim``, l2-normalised."""

    def __init__(self, nodes: int, dim_in: int, dim: int, dim_out: int = 20):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, dim_in, bias=False)
        self.fc2 = nn.Linear(dim_in, dim_in // 2, bias=False)
        self.fc3 = nn.Linear(dim_in // 2, dim_out, bias=False)
        self.out = nn.Linear(dim_out * nodes, dim)

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for fc in (self.fc1, self.fc2, self.fc3):
            x = torch.relu(fc(adj @ x))
        return l2norm(self.out(x.flatten(1)))


def similarity_adjacency(x: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``[B, R, R]``: the row softmax of the regions' cosine similarities over ``temperature`` (in place of DREA's
    enhanced adjacency of detected objects)."""
    n = l2norm(x)
    return torch.softmax(n @ n.transpose(1, 2) / temperature, dim=-1)


class LocalBranch(nn.Module):
    """The local vector of the ``layer3`` map: its cells as graph nodes (:func:`similarity_adjacency`) through
    :class:`GCN`."""

    def __init__(self, channels: int, grid: int, dim: int, dim_out: int = 20, temperature: float = 0.1):
        super().__init__()
        self.gcn = GCN(grid * grid, channels, dim, dim_out)
        self.temperature = temperature

    def forward(self, stage: torch.Tensor) -> torch.Tensor:
        x = cells(stage)                                                    # [B, R, C]
        return self.gcn(similarity_adjacency(x, self.temperature), x)


class MIDF(nn.Module):
    """``Fusion_MIDF`` on one global and one local token."""

    def __init__(self, dim: int, ff: int | None = None, heads: int = 8, dropout: float = 0.1,
                 fusion_dim: int | None = None, fusion_drop: float = 0.2):
        super().__init__()
        ff = ff or 2 * dim
        self.l2l_SA, self.g2g_SA = SA(dim, ff, heads, dropout), SA(dim, ff, heads, dropout)
        self.g2l_SGA, self.l2g_SGA = SGA(dim, ff, heads, dropout), SGA(dim, ff, heads, dropout)
        self.dynamic_weight = nn.Sequential(nn.Linear(dim, fusion_dim or dim), nn.Sigmoid(), nn.Dropout(fusion_drop),
                                            nn.Linear(fusion_dim or dim, 2), nn.Softmax(dim=-1))

    def forward(self, g, loc):
        g, loc = g.unsqueeze(1), loc.unsqueeze(1)
        g = self.g2g_SA(g)                    # global trans
        loc = self.l2l_SA(loc)                # local trans
        loc = self.g2l_SGA(loc, g)            # local correction (guided by the global token)
        g = self.l2g_SGA(g, loc)              # global supplement (guided by the corrected local token)
        g, loc = g.squeeze(1), loc.squeeze(1)
        g, loc = torch.sigmoid(loc) * g, g + loc
        w = self.dynamic_weight(g + loc)
        return w[:, :1] * g + w[:, 1:] * loc


class GaLR(Baseline):
    def __init__(self, vocab_size: int, dim: int = 256, word_dim: int = 128, stage_channels=(), stage_grids=(),
                 next_stage: nn.Module | None = None, heads: int = 8, **_):
        super().__init__()
        if len(stage_channels) < 3:
            raise ValueError("GaLR reads layer1-layer3 (and layer4) of the backbone: give their channels and grids")
        self.global_ = MVSA(stage_channels, stage_grids, dim, next_stage, normalize=True)
        self.local = LocalBranch(stage_channels[2], stage_grids[2], dim)     # layer3's cells
        self.fusion = MIDF(dim, heads=heads)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=True)
        self.text_fc = nn.Linear(dim, dim)

    def encode_image(self, *stages):
        return (l2norm(self.fusion(self.global_(*stages), self.local(stages[2]))),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        return (l2norm(self.text_fc(sent)),)
