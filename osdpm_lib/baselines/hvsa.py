"""HVSA (Zhang et al., IEEE TGRS 2023, "Hypersphere-Based Remote Sensing Cross-Modal Text-Image Retrieval via
Curriculum Learning", doi:10.1109/TGRS.2023.3318227).

Follows the released code (github.com/ZhangWeihang99/HVSA: ``layers/HVSA.py``, ``layers/HVSA_Modules.py``,
``loss/losses.py``, ``controller.model_train``, ``configs/HVSA_rsitmd.yaml``):

* **image**: the ResNet-18's last grid (``layer4`` in the code) through **key-entity attention** (:class:`KEA`, the
  code's external-attention block: a 1x1 conv, ``k = 64`` memory units ``M_k`` whose softmax over the cells is
  renormalised over the units, the memory ``M_v`` back to the channels, a 1x1 conv + BatchNorm, a residual and a
  ReLU), average pooling and one fc to the joint space;
* **text**: a sentence vector through a linear map and a ReLU (the code's ``Skipthoughts_Embedding_Module``);
* **score**: the cosine of the two vectors: both are projected on the unit hypersphere;
* **adaptive alignment** (the curriculum, :func:`difficulty_weighted_loss`): every negative's hinge
  ``c = [margin + s(i, j') - s(i, i)]_+`` (both directions, margin 0.2) weighted by ``exp(-beta c)`` (``beta 0.5``):
  the easier a violating pair, the more it weighs, so the pairs are learnt from easy to hard; the sum over all
  negatives divided by ``B^2``;
* **feature uniformity** (:func:`uniformity`): ``E_{x != y} exp(-t ||x - y||^2)`` over the batch's l2-normalised
  image vectors, ``t = 2`` (the code's ``feature_unif_loss``; Wang & Isola's uniformity is the log of it,
  ``log=True``);
* the two losses weighted by the code's ``AutoWeightedModule`` (an MLP over the two loss values and a softmax over
  its two outputs, trained with the model).

Replaced here (the row, :data:`~osdpm_lib.baselines.SYSTEMS`): the fine-tuned ImageNet ResNet-18's ``layer4`` by
the book's grid stage (``layer3`` at 64 px); the skip-thoughts encoder (``BayesianUniSkip``, 2,400-d) by word
embeddings and a GRU trained here, its last state; the code's AdamW with warm-up and step decay by the book's
optimiser and protocol; the code's uniformity over every fifth row of a batch (its batches hold an image once per
caption) by the uniformity over the batch's images (each once in the book's batches).  The code ties KEA's two
memories by a shared-storage view (``linear_1.weight.data = linear_0.weight.data.permute(1, 0, 2)``), which moving
the module to another device unties: here one tied parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TextEncoder, l2norm
from .scoring import Baseline, hinges

MARGIN, BETA, GAMMA = 0.2, 0.5, 2.0          # configs/HVSA_rsitmd.yaml: alpha, adaptive_alignment.beta, gamma


def difficulty_weights(cost: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """The curriculum's weight of a negative pair of hinge ``cost``: ``exp(-beta * cost)`` (1 for a pair already
    separated by the margin, smaller the harder the pair)."""
    return torch.exp(-beta * cost)


def difficulty_weighted_loss(scores: torch.Tensor, margin: float = MARGIN, beta: float = BETA,
                             positives: torch.Tensor | None = None) -> torch.Tensor:
    """The code's ``difficulty_weighted_loss(scores, B, margin, beta) / B^2`` on a batch score matrix whose diagonal
    holds the matching pairs: ``sum_{i != j} (c_ij w(c_ij) + c'_ij w(c'_ij)) / B^2`` with the caption-side hinges
    ``c_ij = [margin + s_ij - s_ii]_+``, the image-side ones ``c'_ij = [margin + s_ij - s_jj]_+`` and
    :func:`difficulty_weights` ``w``; ``positives``: off-diagonal matching pairs (two captions of one image),
    not negatives (their hinges zero)."""
    cost_s, cost_im = hinges(scores, margin, positives)
    total = (cost_s * difficulty_weights(cost_s, beta)).sum() + (cost_im * difficulty_weights(cost_im, beta)).sum()
    return total / len(scores) ** 2


def uniformity(x: torch.Tensor, t: float = GAMMA, log: bool = False) -> torch.Tensor:
    """The uniformity of the rows of ``x`` on the unit hypersphere: ``mean_{i < j} exp(-t ||x_i - x_j||^2)`` of the
    l2-normalised rows (the HVSA code's ``feature_unif_loss``), or its log (``log=True``: Wang & Isola, ICML 2020,
    ``log E exp(-t ||x - y||^2)``).  Lower is more uniform."""
    d2 = torch.pdist(l2norm(x.to(torch.promote_types(x.dtype, torch.float32))), p=2).pow(2)
    u = torch.exp(-t * d2).mean()
    return torch.log(u) if log else u


class KEA(nn.Module):
    """Key-entity attention (the code's ``KEA``): ``relu(x + BN(conv2(M_v softmax_n(M_k conv1(x)) / sum_k)))`` with
    ``M_v = M_k^T`` (one tied parameter)."""

    def __init__(self, channels: int, units: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.memory = nn.Parameter(torch.empty(units, channels))     # the code's linear_0 (k x c); linear_1 = its T
        nn.init.kaiming_uniform_(self.memory, a=5 ** 0.5)             # Conv1d's default initialisation
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.conv1(x).view(b, c, h * w)
        attn = torch.softmax(self.memory @ y, dim=-1)                 # [b, k, n], over the cells
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))          # over the memory units
        y = (self.memory.T @ attn).view(b, c, h, w)
        return F.relu(self.conv2(y) + x)


class AutoWeighted(nn.Module):
    """The code's ``AutoWeightedModule``: softmax weights from an MLP over the loss values, their weighted sum."""

    def __init__(self, n: int = 2):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(n, 64, bias=False), nn.PReLU(), nn.Linear(64, 128, bias=False),
                                    nn.PReLU(), nn.Linear(128, n, bias=False))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(self.linear(losses), dim=0) * losses).sum()


class HVSA(Baseline):
    margin = MARGIN

    def __init__(self, channels: int, vocab_size: int, dim: int = 256, word_dim: int = 128, beta: float = BETA,
                 gamma: float = GAMMA, log_uniformity: bool = False, **_):
        super().__init__()
        self.beta, self.gamma, self.log_uniformity = beta, gamma, log_uniformity
        self.kea = KEA(channels)
        self.fc = nn.Linear(channels, dim)
        self.text = TextEncoder(vocab_size, word_dim, dim, bidirectional=False)
        self.to_out = nn.Linear(dim, dim)
        self.weight_loss = AutoWeighted(2)
        self._images = None            # the training batch's image vectors, for the uniformity term

    def encode_image(self, low, high):
        v = self.fc(self.kea(high).mean((2, 3)))
        if self.training:
            self._images = v
        return (l2norm(v),)

    def encode_text(self, tokens):
        _, _, sent = self.text(tokens)
        return (l2norm(F.relu(self.to_out(sent))),)

    def loss(self, scores, max_violation: bool = True, positives=None):
        """HVSA's own loss whatever ``max_violation`` says: the auto-weighted sum of the curriculum's
        difficulty-weighted hinges and the uniformity of the batch's image vectors (those of the last
        :meth:`encode_image` in training mode; without them, the hinges alone).  ``positives``
        (:func:`~osdpm_lib.baselines.scoring.same_image`): a batch holding an image more than once (every caption
        per epoch); its repeats are not negatives, and the uniformity takes each image once (its first row), as
        the code's every fifth row of its batches of five captions per image."""
        align = difficulty_weighted_loss(scores, self.margin, self.beta, positives)
        images = self._images
        if images is not None and positives is not None:
            images = images[~positives.tril(-1).any(1).to(images.device)]     # no earlier row of the same image
        if images is None or len(images) < 2:
            self._images = None
            return align
        unif = uniformity(images, self.gamma, self.log_uniformity)
        self._images = None
        return self.weight_loss(torch.stack([align, unif.to(align.dtype)]))
