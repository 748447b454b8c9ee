"""Sizes of the book.  Each profile sets the embedded benchmark's size (``n_images``, ``n_val``, ``n_test``,
``image_size``, ``seeds``) and any :class:`osdpm_lib.train.TrainConfig` field (an unknown key is an error).

* ``default``: the book.  The embedded benchmark with a test split of 1,000 images and a validation split of 300,
  five seeds, and every variant fine-tuned from the book's pretrained CLIP (``osdpm-tiny-vit`` / ``synthpre``,
  ``osdpm_lib/pretrain.py``).  Learning rates and epochs were chosen on validation only (``docs/TUNING.md``).
  The whole book runs in about 15 minutes on 2 CPU cores.
* ``ci``: a few hundred images, the same pretrained start, for the notebooks that nbval re-executes.
* ``scratch``: the earlier default: the tiny CLIP trained from random initialisation (3 seeds, 154 test images).
* ``finetune``: a pretrained CLIP (e.g. ``ViT-B-32`` / ``openai``, RemoteCLIP, GeoRSCLIP) fine-tuned on a real data
  set (RSICD, RSITMD) on a GPU, with HarMA's recipe for GeoRSCLIP (Huang et al., ICLRW 2024,
  github.com/seekerhuang/HarMA, ``configs/Retrieval_rsicd_geo.yaml`` and ``dataset/__init__.py``): AdamW at
  lr 4e-6, weight decay 0.04, batch 214, 80 epochs over the (image, caption) pairs (``epoch_unit="caption"``:
  on RSICD 43,670 pairs, 204 steps an epoch, 16,320 steps in all, against 1,020 steps (about 3 caption-epochs)
  of the earlier 15 image-epochs at batch 128), 10% warm-up; RandomResizedCrop(scale 0.5-1), horizontal flip
  and ALBEF's RandomAugment(2, 7) with HarMA's op list.  Kept from the book: the cosine decay (HarMA: linear),
  the aerial flip + 90-degree rotation (``augment``; HarMA flips only) and the new modules' own learning rate
  (1e-4: DAPN's output projection starts at zero, and at 4e-6 it would barely move).  Not run here (no weights,
  data or long GPU time offline); none of it was chosen on validation.
* ``frozen``: ``finetune`` with the backbone frozen (``freeze_backbone``): only DAPN, OSFCM, CLIP's two
  projections and the temperature train, so the projections get the modules' learning rate (1e-4; at the
  backbone's 4e-6 they would hardly move) and 20 caption-epochs.  A cheaper chain on the real data sets; its
  Table 3 is an ablation on a frozen CLIP.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .paths import ROOT, chain_folder   # the project: data/<chain>, runs/<chain>, results/<chain>

# keys of a profile that are not TrainConfig fields, and their types: the embedded benchmark's size and the seeds
DATA_FIELDS = {"n_images": int, "n_val": int, "n_test": int, "image_size": int, "seeds": list[int]}
DATA_KEYS = frozenset(DATA_FIELDS)

PROFILES: dict[str, dict] = {
    "default": {
        "n_images": 2500, "n_val": 300, "n_test": 1000, "image_size": 64,
        "seeds": [0, 1, 2, 3, 4],
        "pretrained": "synthpre",
        "epochs": 3,            # lr, epochs, module_lr: chosen on validation (docs/TUNING.md)
        "batch_size": 64,
        "lr": 1e-3,
        "module_lr": 1e-3,
        "lambda_osfcm": 1.0,
    },
    "ci": {
        "n_images": 200, "image_size": 64,
        "seeds": [0, 1, 2],
        "pretrained": "synthpre",
        "epochs": 2,
        "batch_size": 32,
        "lr": 1e-3,
        "module_lr": 1e-3,
        "lambda_osfcm": 1.0,
    },
    "scratch": {
        "n_images": 1600, "image_size": 64,
        "seeds": [0, 1, 2],
        "epochs": 12,
        "batch_size": 64,
        "lr": 1e-3,
        "module_lr": 2e-3,
        "lambda_osfcm": 1.0,
    },
    "finetune": {
        "n_images": 1600, "image_size": 64,
        "seeds": [0, 1, 2],
        "epoch_unit": "caption",
        "epochs": 80,
        "batch_size": 214,
        "lr": 4e-6,
        "module_lr": 1e-4,
        "weight_decay": 0.04,
        "warmup_frac": 0.1,
        "crop_scale": (0.5, 1.0),
        "rand_augment": 2,
        "rand_augment_magnitude": 7,
        "lambda_osfcm": 1.0,
    },
}
PROFILES["frozen"] = PROFILES["finetune"] | {"freeze_backbone": True, "lr": 1e-4, "epochs": 20}


def get(name: str) -> dict:
    try:
        return dict(PROFILES[name])
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def train_config(name: str, variant: str = "clip", seed: int = 0, **overrides):
    """The ``TrainConfig`` of a profile for one variant and seed: every profile key that is a ``TrainConfig``
    field, then ``overrides`` (those that are not None win).  A profile key that is neither a field nor one of
    :data:`DATA_KEYS` raises ``KeyError``."""
    from .train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    p = get(name)
    unknown = sorted(set(p) - fields - DATA_KEYS)
    if unknown:
        raise KeyError(f"profile {name!r}: unknown keys {unknown} (neither TrainConfig fields nor {sorted(DATA_KEYS)})")
    kw = {k: v for k, v in p.items() if k in fields} | {"variant": variant, "seed": seed}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kw)


def data_sizes(name: str) -> dict:
    """The embedded benchmark's generation arguments of a profile (``n_images``, ``image_size``, ``n_val``,
    ``n_test`` where set)."""
    p = get(name)
    return {k: p[k] for k in sorted(DATA_KEYS - {"seeds"}) if k in p}


def chain_name(profile: str, name: str | None = None) -> str:
    """The name of a chain (its ``data/``, ``runs/`` and ``results/`` folders): ``name``, else ``embedded`` for the
    default profile and the profile's name for the others."""
    return name or ("embedded" if profile == "default" else profile)


def chain_folders(name: str, dataset: str = "embedded", runs_root=ROOT / "runs") -> tuple[Path, Path]:
    """``(data folder, runs folder)`` of the chain ``name``: the embedded benchmark lives in ``data/<name>``, a real
    data set where ``dataset`` points; the runs in ``<runs_root>/<name>``."""
    return (chain_folder("data", name) if dataset == "embedded" else Path(dataset)), Path(runs_root) / name


def run_name(variant: str, seed: int) -> str:
    """Folder name of one run inside a chain's runs folder."""
    return f"{variant.replace('+', '_')}_s{seed}"


# The baselines' sizes (notebook 08) live with the baselines: osdpm_lib.baselines.profiles (BASELINE_PROFILES,
# baseline_config), so that this module imports nothing of them.
