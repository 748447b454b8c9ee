"""Losses: open_clip's contrastive ``ClipLoss`` plus OSFCM's clustering loss, one class each."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn


class OSFCMLoss(nn.Module):
    """KL(prior || assignment): pull each image embedding toward the categories its captions name.

    ``prior`` rows are the caption-noun category frequencies of each training image (rows of zeros
    for images that name no category; those do not contribute).  Returns the mean over images with
    a prior, or zero when the batch has none.  ``n_with_prior`` replaces the local number of images
    with a prior as the divisor (under DDP: the global count / world_size, so that the mean over
    ranks, and DDP's averaged gradient, are those of the global-batch mean).
    """

    def forward(self, assign_logits: torch.Tensor, prior: torch.Tensor,
                n_with_prior: torch.Tensor | float | None = None) -> torch.Tensor:
        prior = prior.float()
        mass = prior.sum(dim=1, keepdim=True)
        keep = (mass > 0).float()
        p = prior / mass.clamp_min(1e-12)
        log_q = F.log_softmax(assign_logits.float(), dim=1)
        # KL(p || q) per image; rows without a prior are all zeros and contribute nothing.
        # Written without data-dependent branches or indexing: no host synchronisation on the GPU.
        kl = (torch.xlogy(p, p) - p * log_q).sum()
        denom = keep.sum().clamp_min(1.0) if n_with_prior is None else n_with_prior
        return kl / denom


class OSDPMLoss(nn.Module):
    """Contrastive loss (gathered across ranks under DDP) + ``lambda_osfcm`` x OSFCM loss."""

    def __init__(self, lambda_osfcm: float = 0.0, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.contrastive = ClipLoss(local_loss=world_size > 1, gather_with_grad=world_size > 1,
                                    rank=rank, world_size=world_size)
        self.osfcm = OSFCMLoss()
        self.lambda_osfcm = lambda_osfcm
        self.world_size = world_size

    def forward(self, out: dict[str, torch.Tensor], prior: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        c = self.contrastive(out["image_features"], out["text_features"], out["logit_scale"])
        losses = {"contrastive": c, "total": c}
        if "osfcm_logits" in out and prior is not None and self.lambda_osfcm > 0:
            n = None
            if self.world_size > 1:  # divide by the global count of images with a prior (per rank)
                n = (prior.sum(dim=1) > 0).sum().to(torch.float32)
                dist.all_reduce(n)
                n = n / self.world_size
            o = self.osfcm(out["osfcm_logits"], prior, n)
            losses["osfcm"] = o
            losses["total"] = c + self.lambda_osfcm * o
        return losses
