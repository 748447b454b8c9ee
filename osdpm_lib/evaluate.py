"""Encoding a split and scoring it with the retrieval protocol of ``metrics.py``.

Embeddings are normalised and compared in float32 also under bf16 autocast (a bf16 similarity would tie
captions that differ).  Also the rankings behind the book's examples: top-k retrieval for one query
(:func:`topk_image_to_text`, :func:`topk_text_to_image`) and free-text search of a gallery (:func:`search`)."""

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

    def save(self, path) -> None:
        """Write ``path`` (``.npz``: images, texts, caption_image) atomically."""
        from .checkpoints import atomic_path
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, images=self.images, texts=self.texts, caption_image=self.caption_image)

    @classmethod
    def load(cls, path) -> "Encoded":
        with np.load(path) as z:
            return cls(z["images"], z["texts"], z["caption_image"])


@torch.no_grad()
def encode_images(model, images_u8: torch.Tensor, normalizer, batch_size: int = 256, device="cpu",
                  autocast_dtype=None, maps_hook=None) -> np.ndarray:
    """L2-normalised image embeddings.  ``maps_hook(maps)``: called per batch with the model's maps
    (``OSDPM.encode_image(..., return_maps=True)``, e.g. ``"dapn_share"``) when the model has DAPN, so that a caller
    reads them from the same forward pass (``train``: DAPN's share of the embedding on validation)."""
    model.eval()
    out = []
    with_maps = maps_hook is not None and getattr(model, "dapn", None) is not None
    for i in range(0, len(images_u8), batch_size):
        x = normalizer(images_u8[i:i + batch_size].to(device, non_blocking=True))
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            if with_maps:
                z, maps = model.encode_image(x, normalize=False, return_maps=True)
                maps_hook(maps)
            else:
                z = model.encode_image(x, normalize=False)
            out.append(F.normalize(z.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_texts(model, tokens: torch.Tensor, batch_size: int = 1024, device="cpu", autocast_dtype=None) -> np.ndarray:
    """Embeddings of every token row; identical rows (repeated captions) are encoded once and share one embedding."""
    model.eval()
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    out = []
    for i in range(0, len(unique), batch_size):
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            out.append(F.normalize(model.encode_text(unique[i:i + batch_size].to(device), normalize=False).float(),
                                   dim=-1).cpu())
    return torch.cat(out)[inverse].numpy() if out else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------------- rankings of single queries
def _embeddings(enc) -> tuple[np.ndarray, np.ndarray]:
    """``(images, texts)`` of an :class:`osdpm_lib.evaluate.Encoded`, an ``np.load`` of
    ``test_encoded.npz`` or a dict with those keys."""
    if hasattr(enc, "images") and hasattr(enc, "texts"):
        return np.asarray(enc.images), np.asarray(enc.texts)
    return np.asarray(enc["images"]), np.asarray(enc["texts"])


def _ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; ties keep index order (deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def topk_image_to_text(enc, image: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` caption indices for a query image and their similarities."""
    im, tx = _embeddings(enc)
    s = tx @ im[image]
    idx = _ranked(s, k)
    return idx, s[idx]


def topk_text_to_image(enc, caption: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` image indices for a query caption and their similarities."""
    im, tx = _embeddings(enc)
    s = im @ tx[caption]
    idx = _ranked(s, k)
    return idx, s[idx]


def search(query: str, model, tokenizer, image_embeddings, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Text search of an image gallery: the query is encoded with ``model`` (an OSDPM / open_clip model
    with ``encode_text``) and ``tokenizer``, compared (cosine) with ``image_embeddings`` ``[N, D]``
    (normalised, e.g. ``test_encoded.npz``'s ``images``).  Returns the top-``k`` indices (best first,
    ties in index order) and their similarities."""
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        q = model.encode_text(tokenizer([query]).to(dev)).float().cpu().numpy()[0]
    q = q / max(np.linalg.norm(q), 1e-12)
    s = np.asarray(image_embeddings, dtype=np.float32) @ q
    idx = _ranked(s, k)
    return idx, s[idx]
