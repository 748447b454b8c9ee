"""Losses: open_clip's contrastive ``ClipLoss`` plus OSFCM's clustering loss, one class each."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn


AMBIGUITY_MODES = ("all", "entropy", "ambiguous")


def assignment_ambiguity(assign_logits: torch.Tensor) -> torch.Tensor:
    """Per image, the normalised entropy ``H(q) / log K`` of its soft assignment ``q`` to the K prototypes:
    0 when the image sits on one prototype, 1 when it is equally close to all of them (detached: a weight, not a
    target)."""
    logq = F.log_softmax(assign_logits.detach().float(), dim=1)
    return -(logq.exp() * logq).sum(dim=1) / math.log(assign_logits.shape[1])


def ambiguity_weights(assign_logits: torch.Tensor, prior: torch.Tensor, mode: str = "all") -> torch.Tensor:
    """OSFCM's per-image weights (``AMBIGUITY_MODES``), detached:

    * ``"all"``       1 for every image;
    * ``"entropy"``   the assignment's normalised entropy (:func:`assignment_ambiguity`): the less decided an image's
      assignment, the harder it is pulled;
    * ``"ambiguous"`` 1 for the images whose nearest prototype is not one of the categories of their prior (the
      image currently sits with another category), else 0.
    """
    if mode == "all":
        return torch.ones(assign_logits.shape[0], device=assign_logits.device)
    if mode == "entropy":
        return assignment_ambiguity(assign_logits)
    if mode == "ambiguous":
        top = assign_logits.detach().argmax(dim=1, keepdim=True)
        return (prior.gather(1, top)[:, 0] <= 0).float()
    raise ValueError(f"unknown OSFCM ambiguity mode {mode!r}; choose one of {AMBIGUITY_MODES}")


class OSFCMLoss(nn.Module):
    """Weighted KL(prior || assignment): pull image embeddings toward the categories their captions name.

    ``prior`` rows are each training image's category target (rows of zeros for images that name no category;
    those do not contribute); ``weight`` (default 1) weighs each image.  Returns ``sum_i w_i KL_i / sum_i w_i`` over
    images with a prior, or zero when there is none.  ``denominator`` replaces the local ``sum_i w_i`` (under DDP:
    the global sum / world_size, so that the mean over ranks, and DDP's averaged gradient, are those of the
    global-batch mean).
    """

    def forward(self, assign_logits: torch.Tensor, prior: torch.Tensor, weight: torch.Tensor | None = None,
                denominator: torch.Tensor | float | None = None) -> torch.Tensor:
        prior = prior.float()
        mass = prior.sum(dim=1, keepdim=True)
        keep = (mass[:, 0] > 0).float()
        w = keep if weight is None else keep * weight.float()
        p = prior / mass.clamp_min(1e-12)
        log_q = F.log_softmax(assign_logits.float(), dim=1)
        # KL(p || q) per image; rows without a prior are all zeros and contribute nothing.
        # Written without data-dependent branches or indexing: no host synchronisation on the GPU.
        kl = (torch.xlogy(p, p) - p * log_q).sum(dim=1)
        denom = w.sum().clamp_min(1e-12) if denominator is None else denominator
        return (w * kl).sum() / denom


class OSDPMLoss(nn.Module):
    """Contrastive loss (gathered across ranks under DDP) + ``lambda_osfcm`` x OSFCM loss.

    ``ambiguity`` (:data:`AMBIGUITY_MODES`) weighs each image's OSFCM term; ``forward``'s ``lambda_scale`` (the
    trainer's warm-up factor, 0..1) multiplies ``lambda_osfcm``.
    """

    def __init__(self, lambda_osfcm: float = 0.0, rank: int = 0, world_size: int = 1, ambiguity: str = "all"):
        super().__init__()
        if ambiguity not in AMBIGUITY_MODES:
            raise ValueError(f"unknown OSFCM ambiguity mode {ambiguity!r}; choose one of {AMBIGUITY_MODES}")
        self.contrastive = ClipLoss(local_loss=world_size > 1, gather_with_grad=world_size > 1,
                                    rank=rank, world_size=world_size)
        self.osfcm = OSFCMLoss()
        self.lambda_osfcm = lambda_osfcm
        self.ambiguity = ambiguity
        self.world_size = world_size

    def forward(self, out: dict[str, torch.Tensor], prior: torch.Tensor | None = None,
                lambda_scale: float = 1.0) -> dict[str, torch.Tensor]:
        c = self.contrastive(out["image_features"], out["text_features"], out["logit_scale"])
        losses = {"contrastive": c, "total": c}
        if "osfcm_logits" in out and prior is not None and self.lambda_osfcm > 0:
            logits = out["osfcm_logits"]
            weight = ambiguity_weights(logits, prior, self.ambiguity)
            denom = None
            if self.world_size > 1:  # divide by the global weight of images with a prior (per rank)
                denom = (weight * (prior.sum(dim=1) > 0).float()).sum()
                dist.all_reduce(denom)
                denom = (denom / self.world_size).clamp_min(1e-12)
            o = self.osfcm(logits, prior, weight, denom)
            losses["osfcm"] = o
            losses["total"] = c + (self.lambda_osfcm * lambda_scale) * o
        return losses
