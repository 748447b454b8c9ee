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
``full`` and ``finetune`` profiles only (the quick book's budget stays as it was); so does ``LW-MCR(u)``, which
also trains its image encoder on unlabeled images of the pretraining corpus first (``unlabeled_images``,
``unlabeled_epochs``).

The originals' training protocol (``full``, ``finetune``): every (image, caption) pair once per epoch
(``epoch_unit="caption"``) and their augmentation (``augment``: where the backbone sees pixels, i.e. ``finetune``;
``full``'s frozen backbone is read through cached features, which no augmentation reaches).  The book's profiles
(``default``, ``ci``, ``scratch``) keep one random caption per image per epoch: every caption would make an epoch
five times as long, over the book's time budget.  Learning rates: a system's lr chosen on validation by
``python -m osdpm_lib.tuning --part baselines-lr`` (:data:`BASELINE_LR_FILE`, :func:`chosen_lrs`) replaces the
profile's ``lr`` for that profile and system; without an entry the profile's ``lr`` stands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import PROFILE, SYSTEMS
from .lwmcr import UNLABELED_EPOCHS, UNLABELED_IMAGES


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
    patience: int | None = None         # early stopping: stop when validation Rsum has not improved for this many
                                        # epochs (the selected epoch is then below the last one); None: all `epochs`
    epoch_unit: str = "image"           # "image": an epoch draws one random caption per training image (the book's
                                        # quick protocol); "caption": every (image, caption) pair once per epoch,
                                        # shuffled, as the originals' data loaders (VSE++, SCAN, AMFMN, GaLR index
                                        # captions, 5 per image): osdpm_lib.train.epoch_size / batch_pairs.  A batch
                                        # can then hold two captions of one image: the losses leave such a pair
                                        # out of the negatives (scoring.same_image; the originals count it)
    augment: bool = False               # the originals' training transform (resize, rotation, random crop:
                                        # osdpm_lib.cache.resize_rotate_crop, System.rotation) on the training
                                        # images; only where the backbone sees pixels (finetune_backbone): a frozen
                                        # backbone's features are computed once (run.frozen_features), nothing to
                                        # augment, and the flag has no effect (and is not part of the run's key)
    unlabeled_images: int = UNLABELED_IMAGES   # a system with an unlabeled stage (System.unlabeled, LW-MCR(u)):
    unlabeled_epochs: int = UNLABELED_EPOCHS   # at most this many images of the pretraining corpus (its first
                                        # training images), for this many epochs (lwmcr.pretrain_unlabeled); part
                                        # of the run's key for such a system only

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose one of {sorted(SYSTEMS)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision={self.precision!r}; expected 'auto', 'bf16' or 'fp32'")
        from ..train import EPOCH_UNITS

        if self.epoch_unit not in EPOCH_UNITS:
            raise ValueError(f"epoch_unit={self.epoch_unit!r}; expected one of {EPOCH_UNITS}")

    @property
    def augments(self) -> bool:
        """Whether the training images are augmented: ``augment`` with a backbone that sees pixels."""
        return self.augment and self.finetune_backbone

    def resolve_device(self) -> tuple[torch.device, torch.dtype | None]:
        """``(device, autocast dtype or None)`` of this run (:func:`osdpm_lib.train.autocast_dtype`)."""
        from ..train import autocast_dtype

        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto"
                              else self.device)
        return device, autocast_dtype(self.precision, device)

    def key(self) -> str:
        """The run's identity.  ``device`` and ``precision`` enter it as the resolved device type and autocast
        dtype, and only when they are not the CPU in fp32 (the numbers of a CPU run, and the keys of the runs made
        before these fields existed, stay as they are); a system's ``revision`` (a changed model) when set;
        ``epoch_unit`` when not ``"image"``, ``patience`` when set, ``augment`` when it applies (:attr:`augments`)
        and ``unlabeled_images`` / ``unlabeled_epochs`` for a system with an unlabeled stage
        (``System.unlabeled``), so that the runs made before these fields existed keep their keys."""
        fields = dataclasses.asdict(self)
        del fields["device"], fields["precision"]
        if fields["epoch_unit"] == "image":
            del fields["epoch_unit"]
        if fields["patience"] is None:
            del fields["patience"]
        fields["augment"] = self.augments
        if not fields["augment"]:
            del fields["augment"]
        if not SYSTEMS[self.system].unlabeled:
            del fields["unlabeled_images"], fields["unlabeled_epochs"]
        device, amp = self.resolve_device()
        if device.type != "cpu" or amp is not None:
            fields["device_type"], fields["amp"] = device.type, str(amp)
        if SYSTEMS[self.system].revision:
            fields["revision"] = SYSTEMS[self.system].revision
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ profiles
BASELINE_SYSTEMS = ["VSE++", "VSE0", "SCAN_t2i", "SCAN_i2t", "AMFMN-soft", "AMFMN-fusion", "AMFMN-sim", "GaLR",
                    "CAMP-triplet", "CAMP-bce", "MTFN", "LW-MCR(b)", "LW-MCR(d)", "LW-MCR(u)", "HVSA"]
# the book's subset: the most cited first (the order of work), VSE0 beside VSE++
BOOK_SYSTEMS = ["VSE++", "VSE0", "SCAN_t2i", "AMFMN-soft", "GaLR"]
BASELINE_WARMUP = None    # every epoch on the sum over all negatives (docs/BASELINE_STUDY.md)
BASELINE_PROFILES: dict[str, dict] = {
    # the book's profiles: one random caption per image per epoch (epoch_unit "image", the default) and no
    # augmentation: every caption per epoch would take five times as long, over the book's time budget
    "default": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 4, "batch_size": 128, "dim": 128, "word_dim": 64,
                "weights": "synthpre", "warmup_epochs": BASELINE_WARMUP},
    "ci": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 2, "dim": 64, "word_dim": 32, "weights": "synthpre",
           "warmup_epochs": BASELINE_WARMUP},
    "scratch": {"systems": BOOK_SYSTEMS, "seeds": [0], "epochs": 4, "batch_size": 128, "dim": 128, "word_dim": 64,
                "warmup_epochs": BASELINE_WARMUP},
    # the originals' protocol: every (image, caption) pair per epoch; `augment` is inert here (frozen backbone,
    # cached features) and applies if the backbone is fine-tuned (finetune_backbone=True)
    # up to 40 epochs, stopped when validation Rsum has not improved for 5 (at 12 every system was still learning)
    "full": {"systems": BASELINE_SYSTEMS, "seeds": [0, 1, 2], "epochs": 40, "patience": 5, "weights": "synthpre",
             "warmup_epochs": BASELINE_WARMUP, "epoch_unit": "caption", "augment": True},
    # real data: the originals' hardest-negative loss (the embedded choice need not carry over: rerun the study there)
    "finetune": {"systems": BASELINE_SYSTEMS, "seeds": [0, 1, 2], "epochs": 20, "weights": "IMAGENET1K_V1",
                 "image_size": 224, "finetune_backbone": True, "lr": 2e-4, "batch_size": 128, "warmup_epochs": 0,
                 "epoch_unit": "caption", "augment": True},
}
BASELINE_PROFILES["frozen"] = BASELINE_PROFILES["finetune"]   # the same real data sets: the baselines do not change


# the learning rates chosen on validation (python -m osdpm_lib.tuning --part baselines-lr):
# {profile: {"lr": {system: lr}, "grid": .., "seeds": .., ...}}; absent until that study has run
BASELINE_LR_FILE = Path(__file__).with_name("baseline_lr.json")


def _canonical(name: str) -> str:
    """The first profile name of the same sizes (``frozen`` -> ``finetune``: one dict under two names)."""
    same = [k for k, v in BASELINE_PROFILES.items() if v is BASELINE_PROFILES.get(name)]
    return same[0] if same else name


def chosen_lrs(name: str, path=None) -> dict[str, float]:
    """``{system: lr}`` chosen on validation for baseline profile ``name`` (:data:`BASELINE_LR_FILE`, or ``path``);
    empty when the study has not been run for it."""
    path = Path(path or BASELINE_LR_FILE)
    if not path.is_file():
        return {}
    entry = json.loads(path.read_text()).get(_canonical(name), {})
    return {k: float(v) for k, v in entry.get("lr", {}).items()}


def baseline_profile(name: str) -> dict:
    try:
        return dict(BASELINE_PROFILES[name])
    except KeyError:
        raise KeyError(f"unknown baseline profile {name!r}; choose one of {sorted(BASELINE_PROFILES)}") from None


def baseline_config(name: str, system: str, seed: int = 0, **overrides) -> BaselineConfig:
    """The ``BaselineConfig`` of a baseline profile for one system and seed: the profile's fields, the system's own
    loss schedule where it fixes one (``System.warmup_epochs``: VSE++ 0, VSE0 None) in place of the profile's, then
    ``overrides`` (those that are not None win); an unknown profile key raises ``KeyError``.  The system's lr chosen
    on validation for this profile (:func:`chosen_lrs`), when there is one, replaces the profile's ``lr``."""
    fields = {f.name for f in dataclasses.fields(BaselineConfig)}
    p = baseline_profile(name)
    unknown = sorted(set(p) - fields - {"systems", "seeds"})
    if unknown:
        raise KeyError(f"baseline profile {name!r}: unknown keys {unknown}")
    kw = {k: v for k, v in p.items() if k in fields} | {"system": system, "seed": seed}
    if system in (lrs := chosen_lrs(name)):
        kw["lr"] = lrs[system]
    own = SYSTEMS[system].warmup_epochs if system in SYSTEMS else PROFILE
    if own != PROFILE:
        kw["warmup_epochs"] = own
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return BaselineConfig(**kw)
