"""Sizes of the book.  ``default``: the embedded benchmark at a size the whole book runs in about
15 minutes on 2 CPU cores; ``ci``: a few hundred images, for the notebooks that nbval re-executes;
``finetune``: a pretrained CLIP (e.g. ``ViT-B-32`` / ``openai``, RemoteCLIP, GeoRSCLIP) fine-tuned on a real
data set (RSICD, RSITMD) on a GPU.  Its values follow common CLIP fine-tuning practice on these data sets (small
backbone learning rate, larger batch); they have not been run here (no weights, data or long GPU time offline).
``n_images`` and ``image_size`` apply to the embedded benchmark only."""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    "default": {
        "n_images": 1600,
        "image_size": 64,
        "epochs": 12,
        "batch_size": 64,
        "seeds": [0, 1, 2],
        "lr": 1e-3,
        "module_lr": 2e-3,
        "lambda_osfcm": 1.0,
    },
    "ci": {
        "n_images": 200,
        "image_size": 64,
        "epochs": 2,
        "batch_size": 32,
        "seeds": [0, 1, 2],
        "lr": 1e-3,
        "module_lr": 2e-3,
        "lambda_osfcm": 1.0,
    },
    "finetune": {
        "n_images": 1600,
        "image_size": 64,
        "epochs": 15,
        "batch_size": 128,
        "seeds": [0, 1, 2],
        "lr": 1e-5,
        "module_lr": 1e-4,
        "lambda_osfcm": 1.0,
    },
}


def get(name: str) -> dict:
    try:
        return dict(PROFILES[name])
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def train_config(name: str, variant: str = "clip", seed: int = 0, **overrides):
    """The ``TrainConfig`` of a profile for one variant and seed (``overrides`` win)."""
    from .train import TrainConfig

    p = get(name)
    keys = {"epochs", "batch_size", "lr", "module_lr", "lambda_osfcm"}
    kw = {k: p[k] for k in keys if k in p} | {"variant": variant, "seed": seed}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kw)


def run_name(variant: str, seed: int) -> str:
    """Folder name of one run inside a chain's runs folder."""
    return f"{variant.replace('+', '_')}_s{seed}"
