"""How a baseline run is configured (:class:`BaselineConfig`) and the sizes of notebook 08 (:data:`BASELINE_PROFILES`).

They live here, beside the systems, so that the library has one way in: :mod:`osdpm_lib.profiles` (the chain's
sizes) imports nothing of the baselines, and the baselines import nothing of it.  The keys of
:data:`BASELINE_PROFILES` follow the chain profiles (``osdpm_lib.profiles.PROFILES``): every chain profile has
baseline sizes, so the chain never stops at notebook 08.

Offline the ResNet-18 starts from ``synthpre`` (pretrained on the book's pretraining corpus,
:mod:`osdpm_lib.baselines.pretrain`, as the CLIP is) and stays frozen; ``scratch`` starts it from random init;
``finetune`` (real data sets) uses ImageNet weights at 224 px and fine-tunes it.  ``warmup_epochs``: chosen on
validation (``docs/BASELINE_STUDY.md``) for the systems that do not fix their own loss schedule (VSE++ trains on
its hardest negative from the first epoch; VSE0, AMFMN and GaLR on the sum over all negatives every epoch, AMFMN and
GaLR as their released configurations do, LW-MCR as its authors' AMFMN and GaLR code, HVSA on its own
difficulty-weighted sum: :attr:`osdpm_lib.baselines.System.warmup_epochs`).  CAMP, MTFN, LW-MCR and HVSA run in the
``full`` and ``finetune`` profiles only (the quick book's budget stays as it was).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch

from . import PROFILE, SYSTEMS


@dataclass
class BaselineConfig:
    system: str
    seed: int = 0
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    dim: int = 256
    word_dim: int = 128
    arch: str = "resnet18"
    weights: str | None = None          # torchvision weights name, e.g. "IMAGENET1K_V1"; None: random init
    image_size: int = 64
    finetune_backbone: bool = False
    backbone_lr: float = 1e-4
    grad_clip: float = 2.0
    warmup_epochs: int | None = 0       # first epochs on the sum over all negatives, then the hardest negative
                                        # (the systems' own loss); None: every epoch on the sum.  VSE0 sums every
                                        # epoch whatever this says (its definition)
    memory_gib: float = 1.0             # working memory of one block of the score matrix (8 GiB fits RSICD too)
    eval_batch: int = 256
    ties: str = "expected"
    device: str = "auto"                # "auto": CUDA when available, else the CPU
    precision: str = "auto"             # "auto": bf16 autocast on CUDA, fp32 on the CPU; "bf16" or "fp32"

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose one of {sorted(SYSTEMS)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision={self.precision!r}; expected 'auto', 'bf16' or 'fp32'")

    def resolve_device(self) -> tuple[torch.device, torch.dtype | None]:
        """``(device, autocast dtype or None)`` of this run (:func:`osdpm_lib.train.autocast_dtype`)."""
        from ..train import autocast_dtype

        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto"
                              else self.device)
        return device, autocast_dtype(self.precision, device)

    def key(self) -> str:
        """The run's identity.  ``device`` and ``precision`` enter it as the resolved device type and autocast
        dtype, and only when they are not the CPU in fp32 (the numbers of a CPU run, and the keys of the runs made
        before these fields existed, stay as they are); a system's ``revision`` (a changed model) when set."""
        fields = dataclasses.asdict(self)
        del fields["device"], fields["precision"]
        device, amp = self.resolve_device()
        if device.type != "cpu" or amp is not None:
            fields["device_type"], fields["amp"] = device.type, str(amp)
        if SYSTEMS[self.system].revision:
            fields["revision"] = SYSTEMS[self.system].revision
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ profiles
BASELINE_SYSTEMS = ["VSE++", "VSE0", "SCAN_t2i", "SCAN_i2t", "AMFMN-soft", "AMFMN-fusion", "AMFMN-sim", "GaLR",
                    "CAMP-triplet", "CAMP-bce", "MTFN", "LW-MCR(b)", "LW-MCR(d)", "HVSA"]
# the book's subset: the most cited first (the order of work), VSE0 beside VSE++
BOOK_SYSTEMS = ["VSE++", "VSE0", "SCAN_t2i", "AMFMN-soft", "GaLR"]
BASELINE_WARMUP = None    # every epoch on the sum over all negatives (docs/BASELINE_STUDY.md)
BASELINE_PROFILES: dict[str, dict] = {
    "default": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 4, "batch_size": 128, "dim": 128, "word_dim": 64,
                "weights": "synthpre", "warmup_epochs": BASELINE_WARMUP},
    "ci": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 2, "dim": 64, "word_dim": 32, "weights": "synthpre",
           "warmup_epochs": BASELINE_WARMUP},
    "scratch": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 4, "batch_size": 128, "dim": 128, "word_dim": 64,
                "warmup_epochs": BASELINE_WARMUP},
    "full": {"systems": BASELINE_SYSTEMS, "seeds": [0, 1, 2], "epochs": 12, "weights": "synthpre",
             "warmup_epochs": BASELINE_WARMUP},
    # real data: the originals' hardest-negative loss (the embedded choice need not carry over: rerun the study there)
    "finetune": {"systems": BASELINE_SYSTEMS, "seeds": [0, 1, 2], "epochs": 20, "weights": "IMAGENET1K_V1",
                 "image_size": 224, "finetune_backbone": True, "lr": 2e-4, "batch_size": 128, "warmup_epochs": 0},
}
BASELINE_PROFILES["frozen"] = BASELINE_PROFILES["finetune"]   # the same real data sets: the baselines do not change


def baseline_profile(name: str) -> dict:
    try:
        return dict(BASELINE_PROFILES[name])
    except KeyError:
        raise KeyError(f"unknown baseline profile {name!r}; choose one of {sorted(BASELINE_PROFILES)}") from None


def baseline_config(name: str, system: str, seed: int = 0, **overrides) -> BaselineConfig:
    """The ``BaselineConfig`` of a baseline profile for one system and seed: the profile's fields, the system's own
    loss schedule where it fixes one (``System.warmup_epochs``: VSE++ 0, VSE0 None) in place of the profile's, then
    ``overrides`` (those that are not None win); an unknown profile key raises ``KeyError``."""
    fields = {f.name for f in dataclasses.fields(BaselineConfig)}
    p = baseline_profile(name)
    unknown = sorted(set(p) - fields - {"systems", "seeds"})
    if unknown:
        raise KeyError(f"baseline profile {name!r}: unknown keys {unknown}")
    kw = {k: v for k, v in p.items() if k in fields} | {"system": system, "seed": seed}
    own = SYSTEMS[system].warmup_epochs if system in SYSTEMS else PROFILE
    if own != PROFILE:
        kw["warmup_epochs"] = own
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return BaselineConfig(**kw)
