"""Training and evaluation of the baselines under the book's protocol.

:func:`prepare` reads a data set (the same readers and split tensors as :func:`osdpm_lib.train.load_bundle`) and
builds the vocabulary from the training captions; :func:`train_system` trains one system for one seed (Adam,
max-violation triplet loss on batches of one random caption per image, after ``warmup_epochs`` on the sum over all
negatives, as later VSE codes warm up; on the embedded benchmark every epoch on the sum did best on validation,
docs/BASELINE_STUDY.md; gradient clipping), scores validation after
every epoch, keeps the epoch of the highest validation Rsum (the first of ties) and scores the test split once with
it; :func:`run_baselines` runs the systems and seeds of a profile (:data:`osdpm_lib.profiles.BASELINE_PROFILES`).

With a frozen backbone (``finetune_backbone=False``) the ResNet features of every split are computed once per seed
and shared by all systems.  A run folder (:func:`run_folder`) holds ``config.json``, ``metrics.csv`` (per epoch) and ``result.json``;
a finished run of the same configuration and data is returned as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import checkpoints, metrics
from ..train import data_key, load_bundle, seed_everything
from ..data import load as load_annotations
from . import COMMON, SYSTEMS
from .encoders import IMAGENET_MEAN, IMAGENET_STD, GridBackbone, Vocab
from .scoring import GiB, rerank_metrics, score_matrix


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
                                        # (the systems' own loss); None: every epoch on the sum
    memory_gib: float = 1.0             # working memory of one block of the score matrix (8 GiB fits RSICD too)
    eval_batch: int = 256
    ties: str = "expected"

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose one of {sorted(SYSTEMS)}")

    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Data:
    vocab: Vocab
    bundle: object          # osdpm_lib.train.Bundle (train/val/test SplitTensors, normalizer)
    key: str


def prepare(data_dir, image_size: int = 64, min_count: int = 1, cache_dir=None) -> Data:
    """The splits of the data set at ``data_dir`` with a vocabulary of its training captions."""
    ann = load_annotations(data_dir)
    vocab = Vocab([c for r in ann.split("train") for c in r.captions], min_count=min_count)
    pre = {"image_size": image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    bundle = load_bundle(data_dir, vocab, pre, with_priors=False, ann=ann, cache_dir=cache_dir)
    return Data(vocab, bundle, data_key([ann.split(s) for s in ("train", "val", "test")], Path(data_dir) / "images"))


def build_backbone(cfg: BaselineConfig) -> GridBackbone:
    torch.manual_seed(cfg.seed)
    return GridBackbone(cfg.arch, cfg.image_size, cfg.weights)


@torch.no_grad()
def extract(backbone: GridBackbone, images_u8: torch.Tensor, normalizer, batch: int = 256):
    """``(low, high)`` feature maps of all images (backbone in eval mode)."""
    backbone.eval()
    lows, highs = [], []
    for i in range(0, len(images_u8), batch):
        lo, hi = backbone(normalizer(images_u8[i:i + batch]))
        lows.append(lo)
        highs.append(hi)
    return torch.cat(lows), torch.cat(highs)


def build_system(cfg: BaselineConfig, backbone: GridBackbone, vocab_size: int):
    torch.manual_seed(cfg.seed + 1)
    return SYSTEMS[cfg.system].factory(channels=backbone.channels, low_channels=backbone.low_channels,
                                       grid=backbone.grid, low_grid=backbone.low_grid, vocab_size=vocab_size,
                                       dim=cfg.dim, word_dim=cfg.word_dim)


def _trim(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, :max(1, int((tokens != 0).sum(1).max()))]


@torch.no_grad()
def encode(model, visual, tokens: torch.Tensor, n_images: int, batch: int = 256):
    """All images and captions of a split as the system's representations (tuples of tensors)."""
    model.eval()
    img = [model.encode_image(*visual(slice(i, i + batch))) for i in range(0, n_images, batch)]
    return tuple(torch.cat(p) for p in zip(*img)), model.encode_text(_trim(tokens))


def evaluate(model, visual, split, cfg: BaselineConfig, with_rerank: bool = False):
    """The book's metrics of one split (and the score matrix).  Captions with the same tokens are encoded and
    scored once (their columns are equal: on the embedded benchmark 2,051 distinct test captions of 5,000)."""
    unique, inverse = torch.unique(split.tokens, dim=0, return_inverse=True)
    img, txt = encode(model, visual, unique, len(split.records), cfg.eval_batch)
    sims = score_matrix(model, img, txt, int(cfg.memory_gib * GiB))[:, inverse.numpy()]
    cap_img = split.caption_image.numpy()
    out = {"plain": metrics.retrieval_metrics(sims, cap_img, cfg.ties)}
    if with_rerank:
        out["rerank"] = rerank_metrics(sims, cap_img, cfg.ties)
    return out, sims


def train_system(cfg: BaselineConfig, data: Data, run_dir, features: dict | None = None, reuse: bool = True) -> dict:
    """Train one system for one seed; returns ``{"test": metrics, "best_epoch", "best_val_rsum", ...}``
    (``test_plain`` too when the system re-ranks).  ``features``: precomputed ``{split: (low, high)}`` of a frozen
    backbone (:func:`extract`) to share between systems."""
    run_dir = Path(run_dir)
    identity = {"config_key": cfg.key(), "data_key": data.key}
    done = run_dir / "result.json"
    if reuse and done.exists():
        saved = json.loads(done.read_text())
        if {k: saved.get(k) for k in identity} == identity:
            return saved
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg) | identity, indent=2))
    seed_everything(cfg.seed)
    b = data.bundle
    backbone = build_backbone(cfg)
    if features is None:
        features = frozen_features(cfg, data, {}, backbone)
    model = build_system(cfg, backbone, len(data.vocab))
    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    if cfg.finetune_backbone:
        groups.append({"params": list(backbone.parameters()), "lr": cfg.backbone_lr})
    optim = torch.optim.Adam(groups)

    def visual_of(split: str):
        if cfg.finetune_backbone:
            images = getattr(b, split).images
            return lambda idx: backbone(b.normalizer(images[idx]))
        lo, hi = features[split]
        return lambda idx: (lo[idx], hi[idx])

    train = b.train
    order, start, count = train.caption_index()
    gen = torch.Generator().manual_seed(cfg.seed)
    n_train = len(train.records)
    bs = min(cfg.batch_size, n_train)
    history, best, best_state = [], {"rsum": -1.0, "epoch": -1}, None
    t_train = 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        backbone.train(cfg.finetune_backbone)
        perm = torch.randperm(n_train, generator=gen)
        t0, total = time.perf_counter(), 0.0
        visual = visual_of("train")
        for step in range(n_train // bs):
            idx = perm[step * bs:(step + 1) * bs]
            cap = order[start[idx] + (torch.rand(len(idx), generator=gen) * count[idx]).long()]
            img = model.encode_image(*visual(idx))
            txt = model.encode_text(_trim(train.tokens[cap]))
            hardest = cfg.warmup_epochs is not None and epoch > cfg.warmup_epochs
            loss = model.loss(model.score(img, txt), max_violation=hardest)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            optim.step()
            total += float(loss.detach())
        t_train += time.perf_counter() - t0
        backbone.eval()
        val, _ = evaluate(model, visual_of("val"), b.val, cfg)
        history.append({"epoch": epoch, "loss": total / max(1, n_train // bs), "train_s": round(t_train, 2),
                        **{f"val_{k}": v for k, v in val["plain"].items()}})
        pd.DataFrame(history).to_csv(run_dir / "metrics.csv", index=False)
        if val["plain"]["rsum"] > best["rsum"]:      # strictly greater: the first of tied epochs is kept
            best = {"rsum": val["plain"]["rsum"], "epoch": epoch}
            best_state = copy.deepcopy((model.state_dict(), backbone.state_dict()))
    model.load_state_dict(best_state[0])
    backbone.load_state_dict(best_state[1])
    backbone.eval()
    re = SYSTEMS[cfg.system].rerank
    test, _ = evaluate(model, visual_of("test"), b.test, cfg, with_rerank=re)   # the only test evaluation
    result = {"test": test["rerank"] if re else test["plain"], **({"test_plain": test["plain"]} if re else {}),
              "best_epoch": best["epoch"], "best_val_rsum": best["rsum"], **identity, "system": cfg.system,
              "seed": cfg.seed, "train_s": round(t_train, 2), "history": history}
    checkpoints.write_text(done, json.dumps(result, indent=2))
    return result


def frozen_features(cfg: BaselineConfig, data: Data, cache: dict, backbone: GridBackbone | None = None
                    ) -> dict | None:
    """The frozen backbone's ``{split: (low, high)}`` features for ``cfg`` (None when it fine-tunes), computed once
    per seed, weights and image size and kept in ``cache`` (one entry: the systems of a seed share it);
    ``backbone``: the one :func:`build_backbone` made for ``cfg`` already (else it is built here)."""
    if cfg.finetune_backbone:
        return None
    key = (cfg.seed, cfg.arch, cfg.weights, cfg.image_size)
    if key not in cache:
        cache.clear()
        bb, b = backbone or build_backbone(cfg), data.bundle
        cache[key] = {s: extract(bb, getattr(b, s).images, b.normalizer, cfg.eval_batch)
                      for s in ("train", "val", "test")}
    return cache[key]


def run_baselines(data_dir, runs_dir, profile: str = "default", systems=None, seeds=None, data: Data | None = None,
                  log=print, **overrides) -> pd.DataFrame:
    """Every system x seed of a baseline profile; one row per run (``method``, ``seed``, the metric keys,
    ``best_epoch``, ``val_rsum``, ``seconds``, ``replaced``).  Re-ranking systems add a row without re-ranking."""
    from ..profiles import baseline_config, baseline_profile

    p = baseline_profile(profile)
    systems = list(systems or p["systems"])
    seeds = list(p["seeds"] if seeds is None else seeds)
    rows, feats = [], {}
    for seed in seeds:
        for name in systems:
            cfg = baseline_config(profile, name, seed, **overrides)
            if data is None:
                data = prepare(data_dir, cfg.image_size)
            t0 = time.perf_counter()
            res = train_system(cfg, data, run_folder(runs_dir, profile, name, seed),
                               frozen_features(cfg, data, feats))
            seconds = time.perf_counter() - t0
            loss = ("; the triplet loss summed over all negatives, not only the hardest (chosen on validation)"
                    if cfg.warmup_epochs is None or cfg.warmup_epochs >= cfg.epochs else "")
            base = {"method": name, "seed": seed, "best_epoch": res["best_epoch"], "val_rsum": res["best_val_rsum"],
                    "seconds": round(seconds, 1), "replaced": f"{COMMON}; {SYSTEMS[name].replaced}{loss}"}
            rows.append(base | {k: res["test"][k] for k in metrics.KEYS})
            if "test_plain" in res:
                rows.append(base | {"method": f"{name} (no re-ranking)"} | {k: res["test_plain"][k] for k in metrics.KEYS})
            log(f"{name} seed {seed}: test mR {res['test']['mr']:.2f}, Rsum {res['test']['rsum']:.2f} "
                f"(epoch {res['best_epoch']} by validation; {seconds:.1f} s)")
    return pd.DataFrame(rows)


def run_folder(runs_dir, profile: str, system: str, seed: int) -> Path:
    """``<runs_dir>/baselines/<profile>/<system>_s<seed>``: the runs of two baseline profiles of a chain (e.g.
    ``default`` and ``full``) live side by side."""
    return Path(runs_dir) / "baselines" / profile / f"{_slug(system)}_s{seed}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
