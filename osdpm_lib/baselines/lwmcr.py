"""LW-MCR (Yuan et al., IEEE TGRS 2021, "A Lightweight Multi-Scale Crossmodal Text-Image Retrieval Method in Remote
Sensing", doi:10.1109/TGRS.2021.3124252).

**No code of the model is public.**  The paper points to github.com/xiaoyuan1996/retrievalSystem, which holds the
semantic-localization service with AMFMN and GaLR models only (no LW-MCR module, no group convolution, no
distillation; its copy of the paper's PDF is not in the stored snapshot).  What the paper's abstract states, and
what this module builds from it:

* a **lightweight multi-scale image encoder that dynamically filters out redundant features**
  (:class:`MultiScaleImage`): each of two scales (the stage before the grid stage and the grid stage) through a
  depthwise-separable convolution (a 3x3 depthwise conv and a 1x1 conv to ``dim``, ReLU); a gate per cell (the
  sigmoid of a linear map of the cell) filters the cells, whose gated mean is the scale's vector; the scales'
  vectors are summed and mapped by one fc;
* a **text encoder of lightweight group convolutions** (:class:`GroupConvText`): word embeddings, a grouped 1-D
  convolution (``groups`` groups, kernel 3), a channel shuffle so the second grouped convolution mixes the groups,
  and a max over the real words;
* cosine scores and the hinge triplet loss (margin 0.2) summed over all negatives, as the authors' AMFMN and GaLR
  code trains (``LW-MCR(b)``);
* **hidden supervised optimisation by knowledge distillation** from a teacher (``LW-MCR(d)``): the paper distils
  "the multi-level layers and representation layers" of the teacher; here the teacher's batch score matrix (the
  relations of its representations, :func:`distill_loss`), since a student whose layers differ from the teacher's
  has no published pairing of hidden layers.  The teacher is the authors' own AMFMN (soft guidance), trained first
  in the same run under the same protocol (:func:`osdpm_lib.baselines.run.train_system`).

What "b" and "d" mean is not defined in any source reachable here (the paper's text is closed access).  Later
papers' tables (e.g. CUP's Tables III-V) list three rows, LW-MCR-b, -d and -u, which match the abstract's three
stages: b the basic model, d with knowledge distillation, u with contrastive learning on unlabeled images.  This
reading is an inference, stated in the rows.  The third stage (u, contrastive learning on unlabeled images) is not
built: the OSDPM paper's tables report b and d only.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoders import PAD, cells, l2norm
from .scoring import Baseline, triplet_loss

GROUPS = 4
DISTILL_WEIGHT = 1.0


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle of ``[B, C, L]``: channel ``g * (C / groups) + k`` goes to ``k * groups + g``."""
    b, c, n = x.shape
    return x.view(b, groups, c // groups, n).transpose(1, 2).reshape(b, c, n)


class GroupConvText(nn.Module):
    """Word embeddings -> grouped Conv1d (kernel 3) + ReLU -> channel shuffle -> grouped Conv1d + ReLU -> max over
    the real words.  Returns ``[B, dim]``."""

    def __init__(self, vocab_size: int, word_dim: int, dim: int, groups: int = GROUPS):
        super().__init__()
        if word_dim % groups or dim % groups:
            raise ValueError(f"word_dim={word_dim} and dim={dim} must be multiples of groups={groups}")
        self.groups = groups
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.conv1 = nn.Conv1d(word_dim, dim, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv1d(dim, dim, 3, padding=1, groups=groups)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != PAD)[:, None, :]                                          # [B, 1, L]
        x = self.embed(tokens).transpose(1, 2) * mask
        x = torch.relu(self.conv1(x)) * mask
        x = torch.relu(self.conv2(channel_shuffle(x, self.groups)))
        return x.masked_fill(~mask, float("-inf")).amax(-1).nan_to_num(neginf=0.0)


class MultiScaleImage(nn.Module):
    """Two scales, each a depthwise-separable conv to ``dim``; a sigmoid gate per cell filters the cells; the gated
    means of the scales summed and mapped by an fc.  Returns ``[B, dim]``."""

    def __init__(self, channels: tuple[int, ...], dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, dim, 1),
                                                 nn.ReLU()) for c in channels)
        self.gates = nn.ModuleList(nn.Linear(dim, 1) for _ in channels)
        self.fc = nn.Linear(dim, dim)

    def forward(self, *scales: torch.Tensor) -> torch.Tensor:
        out = 0
        for x, conv, gate in zip(scales, self.convs, self.gates):
            c = cells(conv(x))                                                      # [B, N, dim]
            g = torch.sigmoid(gate(c))                                              # [B, N, 1]
            out = out + (g * c).sum(1) / g.sum(1).clamp(min=1e-6)
        return self.fc(out)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The distillation term: ``sum_ij (s_ij - t_ij)^2`` of the student's and the teacher's batch score matrices
    (summed over the pairs, as the summed hinge is)."""
    return (student - teacher.to(student.dtype)).pow(2).sum()


class LWMCR(Baseline):
    """``distill``: train against a teacher's batch scores (``teacher_scores(images, captions) -> [B, B]``, set by
    the runner; without it the loss is the triplet loss alone)."""

    def __init__(self, channels: int, low_channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128,
                 groups: int = GROUPS, distill: bool = False, distill_weight: float = DISTILL_WEIGHT,
                 stage_channels: tuple[int, ...] = (), **_):
        super().__init__()
        # distilling, it reads every stage (its teacher's input, System.all_stages): the last two are (low, high)
        scales = tuple(stage_channels[-2:]) if distill and stage_channels else (low_channels, channels)
        self.image = MultiScaleImage(scales, dim)
        self.text = GroupConvText(vocab_size, word_dim, dim, groups)
        self.distill, self.distill_weight = distill, distill_weight
        self.teacher_scores = None

    def encode_image(self, *stages):
        return (l2norm(self.image(*stages[-2:])),)          # (low, high): with every stage read, the last two

    def encode_text(self, tokens):
        return (l2norm(self.text(tokens)),)

    def loss_inputs(self, images, captions) -> dict:
        if self.distill and self.teacher_scores is not None:
            return {"teacher": self.teacher_scores(images, captions)}
        return {}

    def loss(self, scores, max_violation: bool = True, teacher: torch.Tensor | None = None, positives=None):
        """The triplet loss (``positives`` left out of the negatives) plus, with ``teacher``, the distillation term
        on the whole batch matrix (a pair of two captions of one image included: the teacher scores it too)."""
        loss = triplet_loss(scores, self.margin, max_violation=max_violation, positives=positives)
        if teacher is not None:
            loss = loss + self.distill_weight * distill_loss(scores, teacher)
        return loss
