"""The fast data path: images decoded once into a uint8 tensor cache, captions tokenised once.

``SplitTensors.build`` returns, for one split, the images as ``uint8 [N, 3, S, S]`` (decoded from JPEG
once by :func:`osdpm_lib.data.read_image` and stored under ``cache_dir``; later runs and variants read the ``.pt``
file and never decode again), the tokenised captions ``[M, L]`` and ``caption_image [M]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import checkpoints
from .data import READ_RULE, AnnotationError, read_image



def bar_off(off: bool) -> dict:
    """tqdm keyword arguments that switch a bar off only when asked: an explicit ``disable=False`` would override
    ``TQDM_DISABLE=1`` (the runner's kernels, the CI chain), and a bar saved into an executed notebook is noise."""
    return {"disable": True} if off else {}


def _decode(path: Path, size: int, origin: str = "", bands=None) -> np.ndarray:
    im = read_image(path, origin, bands).image
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def image_cache(filenames: list[str], image_dir: Path, size: int, cache_dir: Path | None = None,
                workers: int = 4, progress: bool = True, origins: list[str] | None = None,
                bands=None) -> torch.Tensor:
    """uint8 ``[N, 3, size, size]`` for ``filenames`` under ``image_dir``, cached on disk.

    A missing or unreadable image raises :class:`~osdpm_lib.data.AnnotationError` naming the image and the
    annotation record (``origins``) it comes from; a corrupt cache file is rebuilt.  ``bands``: see
    :func:`~osdpm_lib.data.read_image`.
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
    blob = [str(image_dir.resolve()), size, stats, READ_RULE, bands and list(bands)]
    key = hashlib.sha1(json.dumps(blob).encode()).hexdigest()[:16]
    path = Path(cache_dir or image_dir.parent / ".cache") / f"images_{size}px_{key}.pt"
    if path.exists():
        try:
            return checkpoints.load(path)
        except checkpoints.CheckpointError as exc:
            warnings.warn(f"{exc}; rebuilding the image cache", stacklevel=2)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(tqdm(pool.map(lambda fo: _decode(image_dir / fo[0], size, fo[1], bands), zip(filenames, origins)),
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
    def build(cls, records, image_dir, size: int, tokenizer, cache_dir=None, bands=None) -> "SplitTensors":
        captions = [c for r in records for c in r.captions]
        caption_image = torch.tensor([i for i, r in enumerate(records) for _ in r.captions], dtype=torch.long)
        images = image_cache([r.filename for r in records], image_dir, size, cache_dir,
                             origins=[r.origin for r in records], bands=bands)
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


def augment(x: torch.Tensor, generator: torch.Generator, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Aerial-image augmentation on a uint8 batch: random horizontal flip and 90-degree rotation.

    With ``world`` > 1, ``x`` is share ``rank`` of a global batch of ``world * len(x)`` images: the draws are the
    global batch's, so an image is augmented the same way whatever the number of processes."""
    n = x.shape[0]
    flip = (torch.rand(n * world, generator=generator) < 0.5)[rank * n:(rank + 1) * n]
    x = torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)
    k = int(torch.randint(0, 4, (1,), generator=generator))
    return torch.rot90(x, k, dims=(-2, -1))


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale=(0.5, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` on a uint8 batch ``[N, 3, H, W]``, a box per image drawn from
    ``generator``: area share uniform in ``scale``, aspect ratio log-uniform in ``ratio``, ten tries per image, else
    the centre crop of the whole image clipped to ``ratio`` (torchvision's rule); each box is resized back to
    ``H x W`` by bilinear sampling, all images in one call (``torchvision.ops.roi_align``)."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    tries = 10
    area = h * w * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.exp(torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator))
    cw, ch = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    u = torch.rand(n, tries, 2, generator=generator)
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(1, keepdim=True)             # the first try that fits
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    left = (u[..., 0].gather(1, first)[:, 0] * (w - cw + 1)).floor()
    top = (u[..., 1].gather(1, first)[:, 0] * (h - ch + 1)).floor()
    fw, fh = float(w), float(h)                            # no try fits: the centre crop, clipped to ``ratio``
    if fw / fh < ratio[0]:
        fh = round(fw / ratio[0])
    elif fw / fh > ratio[1]:
        fw = round(fh * ratio[1])
    none = ~ok.any(1)
    cw, ch = torch.where(none, fw, cw), torch.where(none, fh, ch)
    left, top = torch.where(none, (w - fw) // 2, left), torch.where(none, (h - fh) // 2, top)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), left, top, left + cw, top + ch], 1)
    out = roi_align(x.float(), boxes.to(x.device), (h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# AMFMN's and GaLR's training transform (data.py of github.com/xiaoyuan1996/AMFMN and /GaLR): Resize((278, 278)),
# RandomRotation, RandomCrop(256) of 256-px inputs; here scaled to the batch's size
RESIZE_ROTATE_CROP_SCALE = 278 / 256


def resize_rotate_crop(x: torch.Tensor, generator: torch.Generator, degrees: float = 0.0,
                       scale: float = RESIZE_ROTATE_CROP_SCALE) -> torch.Tensor:
    """AMFMN's and GaLR's training augmentation on a uint8 batch ``[N, 3, S, S]`` (uint8 out, same size), scaled to
    ``S``: ``Resize(round(scale * S))`` (bilinear, torchvision's default), a rotation by an angle drawn per image
    uniformly in ``[0, degrees]`` (``RandomRotation(degrees=(0, degrees))``: counter-clockwise, nearest, corners
    filled with 0, no expansion; ``degrees=0``: none, no draw), then a random ``S x S`` crop per image
    (``RandomCrop``).  GaLR's code rotates by up to 90 degrees; AMFMN's writes ``RandomRotation(0, 90)``, whose
    ``degrees`` is 0 (the 90 lands in ``resample``): no rotation.  All draws come from ``generator``."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    n, _, h, w = x.shape
    big_h, big_w = round(scale * h), round(scale * w)
    y = TF.resize(x, [big_h, big_w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if degrees:
        angles = torch.rand(n, generator=generator) * degrees
        y = torch.stack([TF.rotate(y[i], float(angles[i]), interpolation=InterpolationMode.NEAREST, fill=0)
                         for i in range(n)])
    top = torch.randint(0, big_h - h + 1, (n,), generator=generator)
    left = torch.randint(0, big_w - w + 1, (n,), generator=generator)
    return torch.stack([y[i, :, t:t + h, l_:l_ + w] for i, (t, l_) in enumerate(zip(top.tolist(), left.tolist()))])


# ALBEF's RandomAugment op list as HarMA trains with it (RandomAugment(2, 7, augs=[...])): colour (autocontrast,
# equalize, brightness, sharpness) and geometry (shear, translate, rotate; grey fill)
RAND_AUGMENT_OPS = ("identity", "autocontrast", "equalize", "brightness", "sharpness", "shear_x", "shear_y",
                    "translate_x", "translate_y", "rotate")
_SIGNED = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate"})


def _rand_augment_op(x: torch.Tensor, name: str, magnitude: int, sign: float) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    m = magnitude / 10
    if name == "autocontrast":
        return TF.autocontrast(x)
    if name == "equalize":
        return TF.equalize(x)
    if name in ("brightness", "sharpness"):        # ALBEF: factor 0.1 + 1.8 m (1.36 at magnitude 7)
        return (TF.adjust_brightness if name == "brightness" else TF.adjust_sharpness)(x, 0.1 + 1.8 * m)
    shift = sign * m * 10 / 224 * x.shape[-1]      # ALBEF: 10 px at magnitude 10 on 224 px, scaled to the image
    shear = sign * math.degrees(math.atan(0.3 * m))   # ALBEF: shear factor 0.3 m (about the centre here)
    angle, translate, shears = {"shear_x": (0.0, [0.0, 0.0], [shear, 0.0]),
                                "shear_y": (0.0, [0.0, 0.0], [0.0, shear]),
                                "translate_x": (0.0, [shift, 0.0], [0.0, 0.0]),
                                "translate_y": (0.0, [0.0, shift], [0.0, 0.0]),
                                "rotate": (sign * 30 * m, [0.0, 0.0], [0.0, 0.0])}[name]
    return TF.affine(x, angle=angle, translate=translate, scale=1.0, shear=shears,
                     interpolation=InterpolationMode.BILINEAR, fill=128)


def rand_augment(x: torch.Tensor, generator: torch.Generator, n_ops: int = 2, magnitude: int = 7) -> torch.Tensor:
    """ALBEF's ``RandomAugment(n_ops, magnitude)`` with HarMA's op list (:data:`RAND_AUGMENT_OPS`) on a uint8 batch:
    per image, ``n_ops`` times an op drawn uniformly, applied with probability 0.5, signed ops with a random sign;
    every draw comes from ``generator``.  The images that drew the same op (and sign) are transformed together by
    ``torchvision.transforms.v2.functional``."""
    if not 0 <= magnitude <= 10:
        raise ValueError(f"rand_augment magnitude must be in 0..10, got {magnitude}")
    n = x.shape[0]
    for _ in range(n_ops):
        op = torch.randint(0, len(RAND_AUGMENT_OPS), (n,), generator=generator)
        on = torch.rand(n, generator=generator) < 0.5
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        out = x.clone()
        for k, name in enumerate(RAND_AUGMENT_OPS[1:], 1):
            for s in (1.0, -1.0) if name in _SIGNED else (1.0,):
                idx = ((op == k) & on & ((sign == s) if name in _SIGNED else True)).nonzero()[:, 0].to(x.device)
                if len(idx):
                    out[idx] = _rand_augment_op(x[idx], name, magnitude, s)
        x = out
    return x


def recipe_augment(x: torch.Tensor, generator: torch.Generator, crop_scale=None, n_ops: int = 0,
                   magnitude: int = 7) -> torch.Tensor:
    """The optional augmentation of the real-data recipe after :func:`augment`: ``random_resized_crop`` (when
    ``crop_scale``), then ``rand_augment`` (when ``n_ops``).  With neither, ``x`` itself and no random draw."""
    if crop_scale is not None:
        x = random_resized_crop(x, generator, crop_scale)
    if n_ops:
        x = rand_augment(x, generator, n_ops, magnitude)
    return x
