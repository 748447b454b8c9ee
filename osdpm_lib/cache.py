"""The fast data path: images decoded once into a uint8 tensor cache, captions tokenised once.

``SplitTensors.build`` returns, for one split, the images as ``uint8 [N, 3, S, S]`` (decoded from JPEG
once and stored under ``cache_dir``; later runs and variants read the ``.pt`` file and never decode
again), the tokenised captions ``[M, L]`` and ``caption_image [M]``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import checkpoints
from .data import AnnotationError



def bar_off(off: bool) -> dict:
    """tqdm keyword arguments that switch a bar off only when asked: an explicit ``disable=False`` would override
    ``TQDM_DISABLE=1`` (the runner's kernels, the CI chain), and a bar saved into an executed notebook is noise."""
    return {"disable": True} if off else {}

def _decode(path: Path, size: int, origin: str = "") -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError, SyntaxError) as e:   # PIL: missing, truncated, not an image, unreadable
        raise AnnotationError(f"{origin + ': ' if origin else ''}image {path}: cannot read ({e})") from e


def image_cache(filenames: list[str], image_dir: Path, size: int, cache_dir: Path | None = None,
                workers: int = 4, progress: bool = True, origins: list[str] | None = None) -> torch.Tensor:
    """uint8 ``[N, 3, size, size]`` for ``filenames`` under ``image_dir``, cached on disk.

    A missing or unreadable image raises :class:`~osdpm_lib.data.AnnotationError` naming the image and the
    annotation record (``origins``) it comes from; a corrupt cache file is rebuilt.
    """
    image_dir = Path(image_dir)
    origins = origins or [""] * len(filenames)
    missing = [(o, f) for o, f in zip(origins, filenames) if not (image_dir / f).is_file()]
    if missing:
        shown = "; ".join(f"{o + ': ' if o else ''}{f}" for o, f in missing[:5])
        raise AnnotationError(f"{len(missing)} of {len(filenames)} images missing under {image_dir}: {shown}"
                              + (" ..." if len(missing) > 5 else ""))
    stats = [(f, (st := (image_dir / f).stat()).st_size, st.st_mtime_ns)
             for f in filenames]  # a regenerated file changes size or mtime, and so the key
    key = hashlib.sha1(json.dumps([str(image_dir.resolve()), size, stats]).encode()).hexdigest()[:16]
    path = Path(cache_dir or image_dir.parent / ".cache") / f"images_{size}px_{key}.pt"
    if path.exists():
        try:
            return checkpoints.load(path)
        except checkpoints.CheckpointError as exc:
            warnings.warn(f"{exc}; rebuilding the image cache", stacklevel=2)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(tqdm(pool.map(lambda fo: _decode(image_dir / fo[0], size, fo[1]), zip(filenames, origins)),
                           total=len(filenames), desc=f"decoding {image_dir.name}", leave=False,
                           **bar_off(not progress)))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 3, size, size, dtype=torch.uint8)
    checkpoints.save(images, path)   # atomic: a crash never leaves a half-written cache
    return images


_TOKENS: dict[tuple, torch.Tensor] = {}


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """``tokenizer(captions)``, remembered for the process: the runs of an ablation tokenise the same splits again
    and again (about 4 s each at the book's size).  The key holds the tokenizer's kind, context length and
    vocabulary name, and the captions themselves."""
    inner = getattr(tokenizer, "tokenizer", None)
    key = (type(tokenizer).__qualname__, getattr(tokenizer, "context_length", None),
           getattr(inner, "name_or_path", None), tuple(captions))
    if key not in _TOKENS:
        if len(_TOKENS) >= 8:
            _TOKENS.pop(next(iter(_TOKENS)))
        _TOKENS[key] = tokenizer(captions)
    return _TOKENS[key].clone()


@dataclass
class SplitTensors:
    records: list                 # osdpm_lib.data.ImageRecord, image order
    images: torch.Tensor          # uint8 [N, 3, S, S]
    tokens: torch.Tensor          # long [M, L]
    caption_image: torch.Tensor   # long [M]
    captions: list[str]

    @classmethod
    def build(cls, records, image_dir, size: int, tokenizer, cache_dir=None) -> "SplitTensors":
        captions = [c for r in records for c in r.captions]
        caption_image = torch.tensor([i for i, r in enumerate(records) for _ in r.captions], dtype=torch.long)
        images = image_cache([r.filename for r in records], image_dir, size, cache_dir,
                             origins=[r.origin for r in records])
        tokens = tokenize(tokenizer, captions) if captions else torch.zeros(0, 1, dtype=torch.long)
        return cls(list(records), images, tokens, caption_image, captions)

    def caption_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Captions grouped by image: ``order[start[i]:start[i] + count[i]]`` are image i's captions."""
        order = torch.argsort(self.caption_image, stable=True)
        count = torch.bincount(self.caption_image, minlength=len(self.records))
        start = torch.cumsum(count, 0) - count
        return order, start, count


class Normalizer(torch.nn.Module):
    """uint8 images -> float, CLIP-normalised."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean.to(x.device)) / self.std.to(x.device)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Aerial-image augmentation on a uint8 batch: random horizontal flip and 90-degree rotation."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)
    k = int(torch.randint(0, 4, (1,), generator=generator))
    return torch.rot90(x, k, dims=(-2, -1))
