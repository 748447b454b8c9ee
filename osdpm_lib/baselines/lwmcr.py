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

* **contrastive learning on unlabeled images** (``LW-MCR(u)``): before the supervised epochs of ``LW-MCR(d)``, the
  student's image encoder (:class:`MultiScaleImage`) is trained on unlabeled images by SimCLR's NT-Xent loss
  (:func:`contrastive_loss`, :func:`pretrain_unlabeled`): two augmented views of each image
  (:func:`contrastive_view`: AMFMN's resize, a random rotation up to 90 degrees and a random crop,
  :func:`osdpm_lib.cache.resize_rotate_crop`, and a random horizontal flip) through the frozen ResNet and the
  encoder, a two-layer projection head (discarded afterwards, as SimCLR's), temperature :data:`TEMPERATURE`.
  The paper's unlabeled remote-sensing images, its views, loss and schedule were not seen: the images here are
  the book's pretraining corpus (:func:`osdpm_lib.synth.generate_pretrain`, its captions ignored), at most
  :data:`UNLABELED_IMAGES` of them for :data:`UNLABELED_EPOCHS` epochs (``BaselineConfig.unlabeled_images`` /
  ``unlabeled_epochs``); the ResNet and the text encoder do not take part; SimCLR's colour distortion and blur
  are not applied (the views differ in geometry only).

What "b", "d" and "u" mean is not defined in any source reachable here (the paper's text is closed access).  Later
papers' tables (e.g. CUP's Tables III-V) list three rows, LW-MCR-b, -d and -u, which match the abstract's three
stages: b the basic model, d with knowledge distillation, u with contrastive learning on unlabeled images.  This
reading is an inference, stated in the rows.  The OSDPM paper's tables report b and d only: ``LW-MCR(u)`` has no
reported row to set beside it.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .encoders import PAD, cells, l2norm
from .scoring import Baseline, triplet_loss

GROUPS = 4
DISTILL_WEIGHT = 1.0
# LW-MCR(u)'s contrastive stage (the paper's values not seen): SimCLR's temperature of its ImageNet runs, views
# rotated by up to GaLR's 90 degrees, and the defaults of BaselineConfig.unlabeled_images / unlabeled_epochs
TEMPERATURE = 0.1
VIEW_ROTATION = 90.0
UNLABELED_IMAGES = 4000
UNLABELED_EPOCHS = 2


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


# ------------------------------------------------------------------------------ LW-MCR(u): unlabeled images
def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent (InfoNCE) loss of two views ``[B, d]`` of the same ``B`` images (row ``i`` of ``z1`` and of
    ``z2``: one image).  The ``2B`` vectors are l2-normalised (a no-op on unit vectors) and stacked; their ``2B x 2B``
    cosine matrix divided by ``temperature`` has its diagonal (each vector with itself) masked out; each row is a
    softmax cross-entropy whose target is the other view of its image, averaged over all ``2B`` rows (both views as
    anchors: symmetric).  Computed in float32 or the inputs' wider dtype."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"two views [B, d] expected, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = l2norm(torch.cat([z1, z2]).to(torch.promote_types(z1.dtype, torch.float32)))
    n = len(z1)
    logits = (z @ z.t()) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(logits, target)


def contrastive_view(x: torch.Tensor, generator: torch.Generator, degrees: float = VIEW_ROTATION) -> torch.Tensor:
    """One random view of a uint8 batch ``[N, 3, S, S]`` (uint8 out, same size): AMFMN's and GaLR's resize, random
    rotation in ``[0, degrees]`` and random crop (:func:`osdpm_lib.cache.resize_rotate_crop`), then a horizontal
    flip of each image with probability 1/2; all draws from ``generator``."""
    from ..cache import resize_rotate_crop

    x = resize_rotate_crop(x, generator, degrees)
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


class ProjectionHead(nn.Sequential):
    """SimCLR's projection head: ``Linear(dim, dim)``, ReLU, ``Linear(dim, dim)``; the loss reads its output, the
    retrieval model never does."""

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


def pretrain_unlabeled(model: LWMCR, backbone: nn.Module, images_u8: torch.Tensor, normalizer, epochs: int = 2,
                       batch_size: int = 64, lr: float = 1e-3, temperature: float = TEMPERATURE, seed: int = 0,
                       augmentation=contrastive_view, amp: torch.dtype | None = None,
                       grad_clip: float | None = None, log=None) -> dict:
    """The unlabeled stage of ``LW-MCR(u)``: train ``model.image`` (:class:`MultiScaleImage`) and a
    :class:`ProjectionHead` (made here, discarded after) by :func:`contrastive_loss` on two views
    (``augmentation(x, generator)``, :func:`contrastive_view`) of each of the uint8 ``images_u8`` ``[N, 3, S, S]``,
    for ``epochs`` of ``N // batch_size`` shuffled batches (the last partial batch dropped, as the supervised
    epochs), with Adam at ``lr`` (and ``grad_clip`` on the gradient norm).  Each view passes the frozen
    ``backbone`` (eval mode, no gradient; ``backbone(normalizer(x))``: its ``(low, high)`` maps, the two scales the
    encoder reads) and the encoder, under ``amp`` autocast on the model's device; the loss is taken in float32.
    Everything else of ``model`` (the text encoder) is untouched, and the global random state is left as it was:
    the head's initialisation, the order and the views are drawn from ``seed``.  Returns ``{"images", "epochs",
    "batch_size", "lr", "temperature", "history": [{"epoch", "loss", "seconds"}], "seconds"}``."""
    device = next(model.parameters()).device
    n = len(images_u8)
    bs = min(batch_size, n)
    if bs < 2:
        raise ValueError(f"the contrastive loss needs two images in a batch, got {n} images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ProjectionHead(model.image.fc.out_features).to(device)
    params = list(model.image.parameters()) + list(head.parameters())
    optim = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    backbone_mode = backbone.training
    backbone.eval()
    model.image.train()
    head.train()
    history, t_all = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        t0, total, steps = time.perf_counter(), 0.0, n // bs
        for step in range(steps):
            x = images_u8[perm[step * bs:(step + 1) * bs]].to(device)
            views = [augmentation(x, gen), augmentation(x, gen)]
            with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                with torch.no_grad():
                    maps = [backbone(normalizer(v)) for v in views]
                z1, z2 = (head(model.image(*m[-2:])) for m in maps)
            loss = contrastive_loss(z1.float(), z2.float(), temperature)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optim.step()
            total += float(loss.detach())
        history.append({"epoch": epoch, "loss": total / max(1, steps), "seconds": round(time.perf_counter() - t0, 2)})
        if log is not None:
            log(f"unlabeled epoch {epoch}: contrastive loss {history[-1]['loss']:.4f}")
    backbone.train(backbone_mode)
    return {"images": n, "epochs": epochs, "batch_size": bs, "lr": lr, "temperature": temperature,
            "history": history, "seconds": round(time.perf_counter() - t_all, 2)}
