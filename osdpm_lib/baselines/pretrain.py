"""The baselines' "ImageNet weights" offline: a ResNet pretrained on the book's pretraining corpus.

The originals start their CNN from ImageNet weights, a supervised classifier trained on another, larger image
collection.  Offline the book plays that stage as it plays CLIP's web pretraining (:mod:`osdpm_lib.pretrain`): the
same pretraining corpus (:func:`osdpm_lib.synth.generate_pretrain`, no benchmark image or caption in it), here as a
*tagging* task: each image's targets are the lexicon categories its alt-text captions name
(:func:`osdpm_lib.priors.image_priors`, multi-hot), learnt with a linear head on the mean-pooled grid and a binary
cross-entropy loss.  The epoch is selected on the corpus's own validation split (macro average precision over the
categories present there, the first maximum); the weights of the grid backbone (:class:`.encoders.GridBackbone`,
stem to the grid stage of 64 px images) are written as float16 safetensors to
``osdpm_lib/weights/resnet18_synthpre.safetensors`` with a json record beside them (recipe, sha256, per-epoch
validation, time, machine).  ``BaselineConfig(weights="synthpre")`` loads them.

    python -m osdpm_lib.baselines.pretrain          # make pretrain-resnet
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import checkpoints
from ..download import sha256_file as sha256
from ..models import WEIGHTS_DIR, weights_file
from ..paths import ROOT
from ..pretrain import CORPUS, CORPUS_DIR
from .encoders import IMAGENET_MEAN, IMAGENET_STD, GridBackbone, Vocab

ARCH = "resnet18"
TAG = "synthpre"
# The recipe of the shipped weights (changing it changes them).
RECIPE = {"arch": ARCH, "image_size": 64, "epochs": 3, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-4,
          "seed": 0, "augment": True}


def tag_targets(records) -> tuple[np.ndarray, tuple[str, ...]]:
    """Multi-hot ``float32 [N, K]``: the lexicon categories named by any caption of each record, and their names."""
    from ..priors import image_priors

    pri = image_priors(records)
    return (pri.counts > 0).astype(np.float32), pri.categories


def macro_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over categories with at least one positive of scikit-learn's average precision (nan when none has)."""
    from sklearn.metrics import average_precision_score

    cols = [k for k in range(targets.shape[1]) if 0 < targets[:, k].sum() < len(targets)]
    if not cols:
        return float("nan")
    return float(np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in cols]))


class Tagger(nn.Module):
    """A :class:`GridBackbone` with a linear tagging head on its mean-pooled grid."""

    def __init__(self, n_tags: int, arch: str = ARCH, image_size: int = 64):
        super().__init__()
        self.backbone = GridBackbone(arch, image_size, None)
        self.head = nn.Linear(self.backbone.channels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[1].mean((2, 3)))


@torch.no_grad()
def _scores(model: Tagger, images: torch.Tensor, normalizer, batch: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model(normalizer(images[i:i + batch])) for i in range(0, len(images), batch)]).numpy()


def train_tagger(train_images: torch.Tensor, train_targets: np.ndarray, val_images: torch.Tensor,
                 val_targets: np.ndarray, recipe: dict | None = None, progress: bool = False,
                 log=print) -> tuple[Tagger, list[dict], int]:
    """Train a :class:`Tagger` on uint8 images and multi-hot targets (AdamW, cosine schedule, flips and 90-degree
    rotations); returns the model at the epoch of the highest validation macro AP (the first of ties), the
    per-epoch history and that epoch."""
    from ..cache import Normalizer, augment
    from ..train import seed_everything

    r = RECIPE | (recipe or {})
    seed_everything(r["seed"])
    model = Tagger(train_targets.shape[1], r["arch"], r["image_size"])
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
    y = torch.from_numpy(train_targets)
    n = len(train_images)
    bs = min(r["batch_size"], n)
    steps = max(1, n // bs) * r["epochs"]
    optim = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, steps)
    gen = torch.Generator().manual_seed(r["seed"])
    history, best, best_state = [], (-1.0, 0), None
    t_train = 0.0
    for epoch in range(1, r["epochs"] + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        t0, total = time.perf_counter(), 0.0
        for step in range(n // bs):
            idx = perm[step * bs:(step + 1) * bs]
            x = train_images[idx]
            if r["augment"]:
                x = augment(x, gen)
            loss = nn.functional.binary_cross_entropy_with_logits(model(norm(x)), y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            total += float(loss.detach())
            if progress and step % 20 == 0:
                log(f"epoch {epoch} step {step}/{n // bs}: loss {float(loss.detach()):.4f}")
        t_train += time.perf_counter() - t0
        ap = macro_ap(val_targets, _scores(model, val_images, norm))
        history.append({"epoch": epoch, "loss": total / max(1, n // bs), "val_macro_ap": ap,
                        "train_s": round(t_train, 1)})
        log(f"epoch {epoch}: train loss {history[-1]['loss']:.4f}, val macro AP {ap:.4f}")
        if ap > best[0]:          # strictly greater: the first of tied epochs
            best, best_state = (ap, epoch), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, history, best[1]


def pretrain_backbone(data_dir: Path = CORPUS_DIR, out_dir: Path = WEIGHTS_DIR,
                      corpus: dict | None = None, recipe: dict | None = None, progress: bool = True) -> dict:
    """Generate (or reuse) the pretraining corpus, train the tagger, export its backbone; returns the record
    written beside the weights."""
    from .. import synth
    from ..cache import SplitTensors
    from ..data import load

    corpus = dict(CORPUS if corpus is None else corpus)
    r = RECIPE | (recipe or {})
    t0 = time.perf_counter()
    synth.generate_pretrain(data_dir, **corpus)
    ann = load(data_dir)
    vocab = Vocab([c for rec in ann.split("train") for c in rec.captions])    # tokens are not used here
    splits = {s: SplitTensors.build(ann.split(s), Path(data_dir) / "images", r["image_size"], vocab,
                                    Path(data_dir) / ".cache")
              for s in ("train", "val")}
    (y_train, cats), (y_val, _) = (tag_targets(splits[s].records) for s in ("train", "val"))
    model, history, epoch = train_tagger(splits["train"].images, y_train, splits["val"].images, y_val, r, progress)
    out = weights_file(r["arch"], TAG, out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save({k: v.to(torch.float16) if v.is_floating_point() else v
                      for k, v in model.backbone.state_dict().items()}, out)
    record = {
        "arch": r["arch"], "tag": TAG, "file": out.name, "sha256": sha256(out), "dtype": "float16",
        "task": "multi-label tagging of the lexicon categories named in the corpus captions (BCE, linear head "
                "on the mean-pooled grid)",
        "categories": list(cats), "train_images": len(y_train), "val_images": len(y_val),
        "corpus": corpus | {"generator": "osdpm_lib.synth.generate_pretrain"}, "recipe": r,
        "history": history, "selected_epoch": epoch,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    checkpoints.write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.baselines.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=CORPUS_DIR)
    ap.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    args = ap.parse_args(argv)
    rec = pretrain_backbone(args.data_dir, args.out_dir, recipe={"epochs": args.epochs})
    print(json.dumps({k: rec[k] for k in ("file", "sha256", "selected_epoch", "history", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
