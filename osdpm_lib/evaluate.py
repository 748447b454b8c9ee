"""Encoding a split and scoring it with the retrieval protocol of ``metrics.py``.

Embeddings are normalised and compared in float32 also under bf16 autocast (a bf16 similarity would tie
captions that differ)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import retrieval_metrics


@dataclass
class Encoded:
    images: np.ndarray          # [n_images, D] L2-normalised
    texts: np.ndarray           # [n_captions, D] L2-normalised
    caption_image: np.ndarray   # [n_captions] caption -> image index

    def sims(self) -> np.ndarray:
        return self.images @ self.texts.T

    def metrics(self, ties: str = "expected") -> dict[str, float]:
        return retrieval_metrics(self.sims(), self.caption_image, ties)


@torch.no_grad()
def encode_images(model, images_u8: torch.Tensor, normalizer, batch_size: int = 256, device="cpu",
                  autocast_dtype=None) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = normalizer(images_u8[i:i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            out.append(F.normalize(model.encode_image(x, normalize=False).float(), dim=-1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_texts(model, tokens: torch.Tensor, batch_size: int = 1024, device="cpu", autocast_dtype=None) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(tokens), batch_size):
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            out.append(F.normalize(model.encode_text(tokens[i:i + batch_size].to(device), normalize=False).float(),
                                   dim=-1).cpu())
    return torch.cat(out).numpy()
