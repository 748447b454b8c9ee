"""Where do the models look?  DAPN attention maps, Grad-CAM and the pointing game (the paper's Fig. 5).

* :func:`dapn_maps` — the two maps DAPN computes for every image: the collaborative *spatial* attention
  (a softmax over the token grid) and the *saliency* map of the saliency-region attention (a sigmoid
  per location), both ``[N, h, w]`` on the visual token grid.
* :func:`gradcam` — Grad-CAM through the image-text similarity: the score is ``cos(image embedding,
  text embedding)`` (normally the embedding of the image's first caption); the activations ``A`` are a
  visual token grid ``[C, h, w]``; the channel weights are the spatially averaged gradients
  ``w_c = mean_hw dscore/dA_c`` and the map is ``ReLU(sum_c w_c A_c)``.  Works for every variant (for
  the DAPN variants the score includes DAPN's contribution).

  Which token grid: :func:`osdpm_lib.models.visual_grid` returns the patch tokens *after* ``ln_post``.
  A ViT with class-token pooling (open_clip's default ``pool_type="tok"``, and ``osdpm-tiny-vit``)
  takes the embedding from the class token only, so for the ``clip`` variant the gradient of the score
  with respect to those output patch tokens is identically zero (``target="grid"`` then gives an
  all-zero map).  ``target="auto"`` therefore uses, for such ViTs, the standard ViT Grad-CAM layer: the
  token grid entering the last transformer block (the output of its first LayerNorm ``ln_1``, the
  ``blocks[-1].norm1`` of pytorch-grad-cam), from which the class token attends to every patch;
  for a ModifiedResNet or an average-pooled ViT it uses :func:`visual_grid`'s grid.
* :func:`pointing_game` — a map "points" at the location of its maximum (after bilinear upsampling to
  the image); the pointing-game accuracy is the share of images whose peak falls inside a ground-truth
  box of an object category their captions name (images without such a box are not scored).  Two
  references: the image *center* and a *random* point (its exact expected accuracy: the share of the
  image covered by the target boxes).

* :func:`attention_maps` — all of them for several variants (the maps of notebook 07).

Ground truth: ``ground_truth.json`` of the embedded benchmark, read through
:mod:`osdpm_lib.synth.groundtruth` (pixel boxes ``[x0, y0, x1, y1]``, x1/y1 exclusive, at its
``image_size``); categories are lexicon categories, and captions are mapped onto them with
:func:`osdpm_lib.priors.caption_categories`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import open_clip
import torch
import torch.nn.functional as F

from .models import visual_grid
from .priors import count_categories
from .synth import groundtruth


# ------------------------------------------------------------------------------------------- maps
def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


@torch.no_grad()
def dapn_maps(model, images_u8: torch.Tensor, normalizer, batch_size: int = 64) -> dict[str, np.ndarray]:
    """DAPN's maps of a DAPN variant: ``{"spatial": [N, h, w], "saliency": [N, h, w]}`` (float32).

    ``images_u8`` is a uint8 ``[N, 3, S, S]`` batch (e.g. :func:`osdpm_lib.cache.image_cache`) and
    ``normalizer`` a :class:`osdpm_lib.cache.Normalizer`.  Raises ``ValueError`` for the ``clip`` variant.
    """
    if getattr(model, "dapn", None) is None:
        raise ValueError(f"variant {getattr(model, 'variant', '?')!r} has no DAPN maps")
    model.eval()
    out: dict[str, list[np.ndarray]] = {}
    for sl in _batches(len(images_u8), batch_size):
        _, maps = model.encode_image(normalizer(images_u8[sl]), return_maps=True)
        for k in ("spatial", "saliency"):
            if k in maps:
                out.setdefault(k, []).append(maps[k].float().cpu().numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def _is_tok_vit(visual) -> bool:
    return (isinstance(visual, open_clip.transformer.VisionTransformer)
            and getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", "tok") == "tok")


def _resolve_target(visual, target: str) -> str:
    if target not in ("auto", "grid", "last_block"):
        raise ValueError(f"target must be 'auto', 'grid' or 'last_block', not {target!r}")
    if target == "auto":
        return "last_block" if _is_tok_vit(visual) else "grid"
    if target == "last_block" and not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise ValueError("target 'last_block' needs an open_clip VisionTransformer")
    return target


def _tokens_to_grid(tokens: torch.Tensor, visual) -> torch.Tensor:
    """``[B, L, C]`` tokens (prefix tokens first) -> the patch grid ``[B, C, h, w]``."""
    gh, gw = (visual.grid_size if hasattr(visual, "grid_size") else (math.isqrt(tokens.shape[1]),) * 2)
    patches = tokens[:, tokens.shape[1] - gh * gw:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def _gradcam_batch(model, x: torch.Tensor, text: torch.Tensor, target: str) -> torch.Tensor:
    visual = model.clip.visual
    x = x.detach().requires_grad_(True)  # everything downstream needs grad, even with frozen weights
    if target == "grid":
        pooled, grid = visual_grid(visual, x, model.dapn.cfg.layers if model.dapn is not None else (-1,))
        z = pooled
        if model.dapn is not None:
            z = z + model.dapn(grid)[0]
        acts = grid
    else:
        captured: list[torch.Tensor] = []
        block = visual.transformer.resblocks[-1]
        batch_first = getattr(visual.transformer, "batch_first", True)
        handle = block.ln_1.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            z = model.encode_image(x, normalize=False)
        finally:
            handle.remove()
        acts = captured[0]
    score = (F.normalize(z.float(), dim=-1) * F.normalize(text.float(), dim=-1)).sum(-1)
    (grads,) = torch.autograd.grad(score.sum(), acts, allow_unused=True)
    if grads is None:  # the score does not depend on these activations (see the module doc)
        grads = torch.zeros_like(acts)
    if target == "last_block":
        if not batch_first:  # [L, B, C] -> [B, L, C]
            acts, grads = acts.transpose(0, 1), grads.transpose(0, 1)
        acts, grads = _tokens_to_grid(acts, visual), _tokens_to_grid(grads, visual)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)            # [B, C, 1, 1]
    return F.relu((weights * acts.float()).sum(1)).detach()            # [B, h, w]


def gradcam(model, images_u8: torch.Tensor, text_features, normalizer, batch_size: int = 64,
            target: str = "auto") -> np.ndarray:
    """Grad-CAM maps ``[N, h, w]`` (float32, >= 0) of the similarity of each image with its text.

    ``model`` is an :class:`osdpm_lib.models.OSDPM` (any variant), ``text_features`` ``[N, D]`` one text
    embedding per image (e.g. of its first caption; normalised or not), ``images_u8`` uint8
    ``[N, 3, S, S]``.  ``target``: ``"auto"`` (see the module doc), ``"grid"`` (the patch grid of
    :func:`osdpm_lib.models.visual_grid`) or ``"last_block"`` (ViT: tokens entering the last block).
    Each image's score depends only on its own activations, so a batch is one backward pass.
    """
    text = torch.as_tensor(np.asarray(text_features), dtype=torch.float32)
    if len(text) != len(images_u8):
        raise ValueError(f"{len(text)} text embeddings for {len(images_u8)} images")
    target = _resolve_target(model.clip.visual, target)
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.enable_grad():
        for sl in _batches(len(images_u8), batch_size):
            x = normalizer.to(dev)(images_u8[sl].to(dev))
            out.append(_gradcam_batch(model, x, text[sl].to(dev), target).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def first_caption_index(caption_image, n_images: int | None = None) -> np.ndarray:
    """Per image, the index of its first caption (``caption_image``: caption -> image index); -1 for an
    image without captions."""
    ci = np.asarray(caption_image)
    n = (int(ci.max()) + 1 if len(ci) else 0) if n_images is None else int(n_images)
    first = np.full(n, -1, dtype=np.int64)
    images, index = np.unique(ci, return_index=True)   # index: first occurrence of each image
    first[images] = index
    return first


def first_caption_features(texts: np.ndarray, caption_image: np.ndarray, n_images: int | None = None) -> np.ndarray:
    """Per image, the embedding of its first caption (``test_encoded.npz``'s ``texts``/``caption_image``)."""
    first = first_caption_index(caption_image, n_images)
    if (first < 0).any():
        raise ValueError(f"images without captions: {np.flatnonzero(first < 0).tolist()[:10]}")
    return np.asarray(texts)[first]


def upsample(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``[N, h, w]`` (or ``[h, w]``) maps to ``size`` (``align_corners=False``)."""
    m = np.asarray(maps, dtype=np.float32)
    single = m.ndim == 2
    t = torch.from_numpy(m[None] if single else m)[:, None]
    size = (size, size) if isinstance(size, int) else tuple(size)
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    return up[0] if single else up


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] (min-max); constant maps become zeros."""
    m = np.asarray(maps, dtype=np.float32)
    lo = m.min(axis=(-2, -1), keepdims=True)
    rng = m.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(rng > 0, (m - lo) / np.where(rng > 0, rng, 1.0), 0.0).astype(np.float32)


def attention_maps(models: Mapping[str, object], encoded: Mapping[str, Mapping], images_u8: torch.Tensor,
                   normalizer) -> dict[tuple[str, str], np.ndarray]:
    """Every map of every variant on the same images: ``{(variant, "DAPN spatial" | "DAPN saliency" |
    "Grad-CAM"): [N, h, w]}`` in the order of ``models`` (variant -> OSDPM model).

    DAPN's two maps (:func:`dapn_maps`) for the variants with DAPN; Grad-CAM (:func:`gradcam`) for every
    variant, through the similarity with each image's first caption, whose embedding comes from the
    variant's ``encoded`` (``test_encoded.npz``: ``texts``, ``caption_image``) for the ``N`` images.
    """
    maps = {}
    for v, model in models.items():
        text = first_caption_features(encoded[v]["texts"], encoded[v]["caption_image"], len(images_u8))
        if model.dapn is not None:
            d = dapn_maps(model, images_u8, normalizer)
            maps[(v, "DAPN spatial")] = d["spatial"]
            maps[(v, "DAPN saliency")] = d["saliency"]
        maps[(v, "Grad-CAM")] = gradcam(model, images_u8, text, normalizer)
    return maps


# ------------------------------------------------------------------------------------ ground truth
def target_boxes(records, gt: dict) -> list[np.ndarray]:
    """Per record, the ``[n, 4]`` pixel boxes of the objects whose category its captions name
    (:func:`osdpm_lib.priors.count_categories`)."""
    out = []
    for r in records:
        named = set(count_categories(r.captions))
        boxes = [box for cat, box in groundtruth.boxes_of(gt, r.filename) if cat in named]
        out.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    return out


# ---------------------------------------------------------------------------------- pointing game
def map_peaks(maps: np.ndarray, image_size: int) -> np.ndarray:
    """Peak ``(x, y)`` pixel of each map after bilinear upsampling to ``image_size`` (first maximum in
    row-major order); ``(-1, -1)`` for a constant map (it points nowhere).  Returns int ``[N, 2]``."""
    m = np.asarray(maps, dtype=np.float32)
    up = upsample(m, image_size)
    flat = up.reshape(len(up), -1)
    idx = flat.argmax(axis=1)
    peaks = np.stack([idx % image_size, idx // image_size], axis=1).astype(np.int64)
    constant = flat.max(axis=1) <= flat.min(axis=1)
    peaks[constant] = -1
    return peaks


def point_hits(peaks: np.ndarray, boxes: Sequence[np.ndarray], tolerance: float = 0.0) -> np.ndarray:
    """Per image: 1.0 when the peak lies inside one of its boxes (grown by ``tolerance`` pixels; x1/y1
    exclusive), 0.0 when not (or the map is constant), NaN when the image has no target box."""
    out = np.full(len(peaks), np.nan)
    for i, ((x, y), b) in enumerate(zip(np.asarray(peaks), boxes)):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            continue
        if x < 0:
            out[i] = 0.0
            continue
        inside = ((b[:, 0] - tolerance <= x) & (x < b[:, 2] + tolerance)
                  & (b[:, 1] - tolerance <= y) & (y < b[:, 3] + tolerance))
        out[i] = float(inside.any())
    return out


def box_coverage(boxes: Sequence[np.ndarray], image_size: int) -> np.ndarray:
    """Per image, the share of pixels inside the union of its boxes (NaN without boxes): the expected
    pointing-game hit rate of a uniformly random point."""
    out = np.full(len(boxes), np.nan)
    for i, b in enumerate(boxes):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            continue
        mask = np.zeros((image_size, image_size), dtype=bool)
        for x0, y0, x1, y1 in np.clip(np.rint(b), 0, image_size).astype(int):
            mask[y0:y1, x0:x1] = True
        out[i] = mask.mean()
    return out


def center_peaks(n: int, image_size: int) -> np.ndarray:
    """The center pixel as everyone's peak (``image_size // 2`` in both axes)."""
    return np.full((n, 2), image_size // 2, dtype=np.int64)


def _score(hits: np.ndarray, small: np.ndarray) -> dict:
    scored = ~np.isnan(hits)
    sub = scored & small

    def acc(mask):
        return 100.0 * float(hits[mask].mean()) if mask.any() else np.nan

    return {"n_images": int(scored.sum()), "hits": int(np.nansum(hits)), "accuracy": acc(scored),
            "n_small": int(sub.sum()), "accuracy_small": acc(sub)}


COLUMNS = ["variant", "map", "n_images", "hits", "accuracy", "n_small", "accuracy_small", "n_flat"]


def pointing_game(maps: Mapping[tuple[str, str], np.ndarray], boxes: Sequence[np.ndarray], image_size: int,
                  baselines: bool = True, tolerance: float = 0.0, small=0.25) -> pd.DataFrame:
    """Pointing-game table.  ``maps`` maps ``(variant, map type)`` to ``[N, h, w]`` maps of the same N
    images as ``boxes`` (see :func:`target_boxes`).

    Columns: variant, map, n_images (images with a target box), hits, accuracy (hits / n_images, in %),
    n_small / accuracy_small (the same on the images whose target boxes cover less than ``small`` of the
    image, where pointing anywhere near the middle is not enough; or, when ``small`` is a boolean array, on the
    images it marks), n_flat (constant maps, scored as
    misses).  With ``baselines``, two reference rows: ``center`` (the image center) and ``random
    (expected)`` (the exact expected accuracy of a uniformly random point: the mean box coverage).
    """
    coverage = box_coverage(boxes, image_size)
    if np.ndim(small):
        is_small = np.asarray(small, dtype=bool)
        if is_small.shape != (len(boxes),):
            raise ValueError(f"small: {is_small.shape[0]} flags for {len(boxes)} images")
    else:
        is_small = np.nan_to_num(coverage, nan=1.0) < small
    rows = []
    for (variant, kind), m in maps.items():
        m = np.asarray(m)
        if len(m) != len(boxes):
            raise ValueError(f"{variant}/{kind}: {len(m)} maps for {len(boxes)} images")
        peaks = map_peaks(m, image_size)
        hits = point_hits(peaks, boxes, tolerance)
        rows.append({"variant": variant, "map": kind, **_score(hits, is_small),
                     "n_flat": int((peaks[~np.isnan(hits), 0] < 0).sum())})
    if baselines:
        hits = point_hits(center_peaks(len(boxes), image_size), boxes, tolerance)
        rows.append({"variant": "baseline", "map": "center", **_score(hits, is_small), "n_flat": 0})
        rows.append({"variant": "baseline", "map": "random (expected)", **_score(coverage, is_small),
                     "hits": np.nan, "n_flat": 0})
    return pd.DataFrame(rows, columns=COLUMNS)
