"""Backbone factory, DAPN, OSFCM and the OSDPM wrapper.

* ``build_clip(name, pretrained)`` — any open_clip model; ``pretrained`` is an open_clip tag
  (``"openai"``, ``"laion2b_s34b_b79k"``), the tag of a checkpoint shipped in ``weights/`` (``"synthpre"``: the
  book's pretrained ``osdpm-tiny-vit``, see ``osdpm_lib/pretrain.py``), a local checkpoint path (loaded by open_clip with
  ``weights_only=True``) or ``None`` (random init; the offline default ``osdpm-tiny-vit``, whose config
  ships in ``model_configs/``).
* ``DAPN`` — dual-attention perception network over the visual token grid:
  ``CollaborativeAttention`` (spatial and channel attention computed jointly, each conditioned on the
  other) and ``SaliencyRegionAttention`` (saliency over locations, saliency-weighted region pooling at
  several scales, input-dependent weights over the scales).  Its output is added to CLIP's pooled image
  embedding through a zero-initialised projection: at initialisation (or whenever that projection is
  zero) the model *is* the CLIP baseline.
* ``OSFCM`` — learnable category prototypes initialised from text embeddings of the category names and a
  soft assignment of image embeddings to them (the clustering loss lives in ``losses.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).with_name("model_configs")
WEIGHTS_DIR = Path(__file__).with_name("weights")
open_clip.add_model_config(CONFIG_DIR)

VARIANTS = ("clip", "clip+dapn", "osdpm")
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt"}


def build_clip(name: str = "osdpm-tiny-vit", pretrained: str | None = None, **kwargs) -> nn.Module:
    """An open_clip CLIP model (random init when ``pretrained`` is None).

    A local checkpoint (``.pt``/``.pth``/``.bin``/``.safetensors`` or any existing file) is read through
    :func:`osdpm_lib.checkpoints.load` first, so a pickle that could run code is refused; one that does not fit
    the architecture raises :class:`~osdpm_lib.checkpoints.CheckpointError` naming the file.
    """
    pretrained = str(bundled_weights(name, pretrained) or pretrained) if pretrained else pretrained
    if pretrained and (Path(pretrained).suffix in CHECKPOINT_SUFFIXES or Path(pretrained).is_file()):
        checkpoints.load(pretrained)   # exists, is safe to unpickle, is not truncated
        with _without_random_init_warning():   # the weights are loaded right below
            model = open_clip.create_model(name, pretrained=None, **kwargs)
        try:
            open_clip.load_checkpoint(model, str(pretrained), weights_only=True)
        except (RuntimeError, KeyError, ValueError, AssertionError) as exc:   # open_clip asserts on some shapes
            detail = " ".join(str(exc).split())[:600]
            raise checkpoints.CheckpointError(
                f"{pretrained}: does not fit open_clip model {name!r} (a checkpoint of another "
                f"architecture?): {detail}") from exc
        return model
    if pretrained:
        return open_clip.create_model(name, pretrained=pretrained, weights_only=True, **kwargs)
    with _without_random_init_warning():   # random init is what was asked for (a scratch run, or weights loaded later)
        model = open_clip.create_model(name, pretrained=None, weights_only=True, **kwargs)
    log.info("%s: random initialisation (no pretrained weights asked for)", name)
    return model


@contextlib.contextmanager
def _without_random_init_warning():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" log record (and only it): the book
    asks for random weights on purpose (scratch runs, models whose trained weights are loaded next), and open_clip's
    warning reads like an error in every executed notebook."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")
    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def weights_file(name: str, tag: str, folder: Path = WEIGHTS_DIR) -> Path:
    """Where the checkpoint of model ``name`` and tag ``tag`` lives: ``<folder>/<name>_<tag>.safetensors``."""
    return Path(folder) / f"{name}_{tag}.safetensors"


def bundled_weights(name: str, tag: str | None) -> Path | None:
    """The checkpoint shipped with the library for model ``name`` and tag ``tag`` (:func:`weights_file` in
    ``weights/``, e.g. ``osdpm-tiny-vit`` / ``synthpre``, made by ``make pretrain``), or None when there is none."""
    path = weights_file(name, tag) if tag and "/" not in tag else None
    return path if path is not None and path.is_file() else None


def tokenizer_for(name: str = "osdpm-tiny-vit"):
    return open_clip.get_tokenizer(name)


def preprocess_config(clip: nn.Module) -> dict:
    """Image size and normalisation constants of a CLIP model's visual tower."""
    v = clip.visual
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    mean = getattr(v, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(v, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return {"image_size": int(size), "mean": tuple(mean), "std": tuple(std)}


def visual_grid(visual: nn.Module, images: torch.Tensor, layers: tuple[int, ...] = (-1,)
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's pooled image embedding and the visual feature grid ``[B, C, H, W]``.

    ViT: the patch tokens of the transformer blocks ``layers`` (negative: counted from the end; ``-1`` is the final
    block), each through the final ``ln_post``, reshaped to the patch grid and averaged over the blocks (open_clip's
    ``forward_intermediates``).  ModifiedResNet: the layer4 feature map before attention pooling (``layers`` must be
    ``(-1,)``).  The pooled embedding is always CLIP's own.
    """
    layers = tuple(int(i) for i in layers)
    if isinstance(visual, open_clip.modified_resnet.ModifiedResNet):
        if layers != (-1,):
            raise ValueError(f"DAPN layers {layers}: a ModifiedResNet offers its layer4 map only (layers=(-1,))")
        x = visual.stem(images)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
        return visual.attnpool(x), x
    if isinstance(visual, open_clip.transformer.VisionTransformer):
        n_blocks = len(visual.transformer.resblocks)
        if not layers or any(not -n_blocks <= i < n_blocks for i in layers):
            raise ValueError(f"DAPN layers {layers}: the visual transformer has {n_blocks} blocks "
                             f"(valid indices {-n_blocks}..{n_blocks - 1})")
        out = visual.forward_intermediates(images, indices=list(layers), normalize_intermediates=True,
                                           output_fmt="NCHW")
        grids = out["image_intermediates"]
        grid = grids[0] if len(grids) == 1 else torch.stack(grids).mean(0)
        return out["image_features"], grid
    raise TypeError(f"DAPN supports open_clip VisionTransformer and ModifiedResNet, not {type(visual).__name__}")


@dataclasses.dataclass(frozen=True)
class DAPNConfig:
    """DAPN's hyperparameters in one place (as open_clip's ``CLIPVisionCfg``); ``TrainConfig.dapn`` holds one.

    ``layers``: the ViT blocks whose patch tokens DAPN reads (see :func:`visual_grid`).  ``scales``: regions per side
    of the token grid at each scale of the saliency-region attention, clamped to the grid (on the tiny model's 8x8
    grid ``(8, 4, 2)`` are 64 cells, 16 regions of 2x2 cells and 4 of 4x4; on ViT-B/32's 7x7 grid they are its 49 cells,
    4x4 and 2x2 overlapping regions of about 2 and 4 cells a side).  ``reduction``: hidden width divisor of the
    attention MLPs; ``rounds``: refinement rounds of the collaborative attention; ``temperature``: of the softmax
    over region saliency.  ``collaborative`` / ``saliency`` switch the two attention modules.
    """
    layers: tuple[int, ...] = (-1,)
    scales: tuple[int, ...] = (8, 4, 2)
    reduction: int = 4
    rounds: int = 2
    temperature: float = 0.1
    collaborative: bool = True
    saliency: bool = True

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "scales", tuple(int(s) for s in self.scales))
        if not (self.collaborative or self.saliency):
            raise ValueError("DAPN needs at least one of its two attention modules")
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"DAPN scales must be positive region counts, got {self.scales}")
        if self.rounds < 1 or self.reduction < 1 or self.temperature <= 0:
            raise ValueError(f"DAPN rounds and reduction must be >= 1 and temperature > 0: {self}")

    @classmethod
    def of(cls, value: "DAPNConfig | dict | None") -> "DAPNConfig":
        """A DAPNConfig from itself, a dict of some of its fields (the rest default; as in a ``config.json``) or None."""
        if value is None or isinstance(value, cls):
            return value or cls()
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"unknown DAPN config keys {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**value)


class CollaborativeAttention(nn.Module):
    """Spatial-channel collaborative attention.

    Channel weights ``a_c`` come from a spatially *attended* descriptor, and spatial weights ``a_s``
    from the *channel-reweighted* features; one refinement round makes each depend on the other
    (a first guess from plain pooling, then the mutual update).  Returns the global-context vector
    ``sum_n a_s[n] * a_c * x[n]`` and the spatial attention map.
    """

    def __init__(self, dim: int, reduction: int = 4, rounds: int = 2):
        super().__init__()
        hidden = max(dim // reduction, 8)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.spatial = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 3, padding=1))
        self.rounds = rounds

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        a_s = torch.full((b, 1, h, w), 1.0 / (h * w), device=x.device, dtype=x.dtype)
        for _ in range(self.rounds):
            desc = (x * a_s).sum(dim=(2, 3))                       # spatially attended descriptor
            a_c = torch.sigmoid(self.channel_mlp(desc))            # [B, C]
            logits = self.spatial(x * a_c[:, :, None, None])       # channel-conditioned saliency
            a_s = torch.softmax(logits.flatten(1), dim=1).view(b, 1, h, w)
        context = (x * a_c[:, :, None, None] * a_s).sum(dim=(2, 3))
        return context, a_s[:, 0]


class SaliencyRegionAttention(nn.Module):
    """Adaptive saliency-region object attention.

    A saliency map ``m`` over locations; at each scale the grid is split into ``s x s`` regions (adaptive average
    pooling, ``s`` clamped to the grid: ``s`` >= the grid side gives the cells themselves), each region's feature is
    its saliency-weighted mean, and regions are aggregated with a softmax over their mean saliency / ``temperature``.
    Input-dependent weights over the scales (from the global context) mix the per-scale object vectors.
    """

    def __init__(self, dim: int, scales: tuple[int, ...] = (8, 4, 2), temperature: float = 0.1, reduction: int = 4):
        super().__init__()
        self.scales = tuple(scales)
        hidden = max(dim // reduction, 8)
        self.saliency = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1))
        self.scale_gate = nn.Linear(dim, len(self.scales))
        self.temperature = temperature

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = torch.sigmoid(self.saliency(x))                        # [B, 1, H, W]
        per_scale = []
        for s in self.scales:
            size = (min(s, x.shape[-2]), min(s, x.shape[-1]))
            num, den = x * m, m
            if size != tuple(x.shape[-2:]):  # at the grid's own size the regions are the cells
                num, den = F.adaptive_avg_pool2d(num, size), F.adaptive_avg_pool2d(den, size)
            region = (num / den.clamp_min(1e-6)).flatten(2)          # [B, C, R]
            weight = torch.softmax(den.flatten(2) / self.temperature, dim=-1)  # [B, 1, R]
            per_scale.append((region * weight).sum(-1))
        stacked = torch.stack(per_scale, dim=1)                    # [B, S, C]
        scale_w = torch.softmax(self.scale_gate(context), dim=-1)  # [B, S]
        return (stacked * scale_w[:, :, None]).sum(1), m[:, 0], scale_w


class DAPN(nn.Module):
    """Dual-attention perception network; output added to CLIP's image embedding (zero at init)."""

    def __init__(self, in_dim: int, embed_dim: int, cfg: DAPNConfig | dict | None = None):
        super().__init__()
        self.cfg = cfg = DAPNConfig.of(cfg)
        self.norm = nn.GroupNorm(1, in_dim)
        self.collab = CollaborativeAttention(in_dim, cfg.reduction, cfg.rounds) if cfg.collaborative else None
        self.region = (SaliencyRegionAttention(in_dim, cfg.scales, cfg.temperature, cfg.reduction)
                       if cfg.saliency else None)
        n_parts = int(cfg.collaborative) + int(cfg.saliency)
        self.out = nn.Linear(n_parts * in_dim, embed_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, grid: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.norm(grid)
        parts, maps = [], {}
        context = x.mean(dim=(2, 3))
        if self.collab is not None:
            context, maps["spatial"] = self.collab(x)
            parts.append(context)
        if self.region is not None:
            obj, maps["saliency"], maps["scale_weights"] = self.region(x, context)
            parts.append(obj)
        return self.out(torch.cat(parts, dim=-1)), maps


PROTOTYPE_MODES = ("free", "fixed", "text")


class OSFCM(nn.Module):
    """Object-semantic feature clustering: category prototypes in the joint space.

    ``assign_logits(z)`` gives the soft assignment logits (cosine similarity / ``tau``) of image embeddings to the
    prototypes.  Used for the training loss only.  ``prototypes`` (``PROTOTYPE_MODES``):

    * ``"free"``  a parameter initialised from the text embeddings of the category names, trained with the new
      modules (nothing anchors it: the loss can move the prototypes instead of the image features);
    * ``"fixed"`` those text embeddings, frozen (a buffer): only the image features can move;
    * ``"text"``  a buffer the trainer recomputes from the *current* text tower at the start of every epoch
      (:meth:`set_prototypes`): the prototypes follow the text side of the joint space.
    """

    def __init__(self, init_prototypes: torch.Tensor, tau: float = 0.1, prototypes: str = "free"):
        super().__init__()
        if prototypes not in PROTOTYPE_MODES:
            raise ValueError(f"unknown OSFCM prototypes {prototypes!r}; choose one of {PROTOTYPE_MODES}")
        init = F.normalize(init_prototypes.detach().float(), dim=-1).clone()
        self.mode = prototypes
        if prototypes == "free":
            self.prototypes = nn.Parameter(init)
        else:
            self.register_buffer("prototypes", init)
        self.tau = tau

    @torch.no_grad()
    def set_prototypes(self, embeddings: torch.Tensor) -> None:
        """Replace the (buffer) prototypes, e.g. with the current text tower's category embeddings."""
        if self.mode == "free":
            raise RuntimeError("free prototypes are trained, not set")
        self.prototypes.copy_(F.normalize(embeddings.float(), dim=-1))

    def assign_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_features, dim=-1) @ F.normalize(self.prototypes, dim=-1).T / self.tau


class OSDPM(nn.Module):
    """CLIP + optional DAPN + optional OSFCM, switched by ``variant`` (one of ``VARIANTS``)."""

    def __init__(self, clip: nn.Module, variant: str = "clip", category_prototypes: torch.Tensor | None = None,
                 osfcm_tau: float = 0.1, dapn: DAPNConfig | dict | None = None, prototypes: str = "free"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
        self.variant = variant
        self.clip = clip
        self.dapn = None
        self.osfcm = None
        if variant in ("clip+dapn", "osdpm"):
            cfg = DAPNConfig.of(dapn)
            embed_dim = clip.text_projection.shape[-1] if isinstance(clip.text_projection, torch.Tensor) \
                else clip.text_projection.out_features
            with torch.no_grad():
                size = preprocess_config(clip)["image_size"]
                _, grid = visual_grid(clip.visual, torch.zeros(1, 3, size, size), cfg.layers)
            self.dapn = DAPN(grid.shape[1], embed_dim, cfg)
        if variant == "osdpm":
            if category_prototypes is None:
                raise ValueError("variant 'osdpm' needs category_prototypes (text embeddings of category names)")
            self.osfcm = OSFCM(category_prototypes, tau=osfcm_tau, prototypes=prototypes)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = True, return_maps: bool = False):
        maps: dict[str, torch.Tensor] = {}
        if self.dapn is None:
            z = self.clip.encode_image(images)
        else:
            pooled, delta, maps = self.image_parts(images)
            z = pooled + delta
            if return_maps:         # not in the training step's forward, which reads no map
                maps["dapn_share"] = dapn_share(pooled.detach(), delta.detach())
        if normalize:
            z = F.normalize(z, dim=-1)
        return (z, maps) if return_maps else z

    def image_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """CLIP's pooled embedding, DAPN's additive delta and DAPN's maps (the image embedding is their sum)."""
        if self.dapn is None:
            raise ValueError(f"variant {self.variant!r} has no DAPN")
        pooled, grid = visual_grid(self.clip.visual, images, self.dapn.cfg.layers)
        delta, maps = self.dapn(grid)
        return pooled, delta, maps

    @torch.no_grad()
    def dapn_ratio(self, images: torch.Tensor) -> float:
        """Mean :func:`dapn_share` over ``images``: how much DAPN changes CLIP's image embedding (0 at init)."""
        if self.dapn is None:
            raise ValueError(f"variant {self.variant!r} has no DAPN")
        return float(self.encode_image(images, return_maps=True)[1]["dapn_share"].mean())

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        img = self.encode_image(images)
        out = {"image_features": img, "text_features": self.encode_text(tokens),
               "logit_scale": self.clip.logit_scale.exp()}
        if self.osfcm is not None:
            out["osfcm_logits"] = self.osfcm.assign_logits(img)
        return out

    def module_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new modules (DAPN, OSFCM), trained with their own learning rate."""
        params = []
        for m in (self.dapn, self.osfcm):
            if m is not None:
                params += list(m.parameters())
        return params


def dapn_share(pooled: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Per image ``||delta|| / ||pooled||`` in float32: DAPN's share of the image embedding ``pooled + delta`` (0 at
    initialisation, where DAPN's output projection is zero); ``OSDPM.encode_image``'s map ``"dapn_share"``."""
    return delta.float().norm(dim=-1) / pooled.float().norm(dim=-1).clamp_min(1e-12)


@torch.no_grad()
def category_text_embeddings(clip: nn.Module, tokenizer, categories, template: str = "an aerial image with {}.") -> torch.Tensor:
    """Text embeddings of the category names (OSFCM's prototypes), on the device of ``clip``."""
    tokens = tokenizer([template.format(c) for c in categories]).to(next(clip.parameters()).device)
    return clip.encode_text(tokens, normalize=True)
