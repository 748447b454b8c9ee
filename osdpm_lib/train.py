"""Training: one configuration -> one run folder.

``train(cfg, data_dir, run_dir)`` fine-tunes (or trains from scratch) a CLIP model in one of the
variants ``clip``, ``clip+dapn``, ``osdpm``; selects the epoch on **validation Rsum only**, evaluates the
test split **once** with the selected weights, and writes to ``run_dir``:
``config.json`` (resolved), ``metrics.csv`` (per epoch), ``best.pt``, ``test_metrics.json``,
``embeddings.npz`` (embeddings of the first ``STAGE_IMAGES`` test images at the start, middle and end of training,
for figures),
``val_encoded.npz`` and ``test_encoded.npz`` (the selected model's validation and test embeddings: paired
comparisons on either split); while it runs, ``last.pt`` (everything needed to
resume exactly).  With ``score_test=False`` (tuning, design and the study's runs) no test split is loaded, encoded or
scored: ``selection.json`` (the selected epoch and its validation metrics) replaces ``test_metrics.json`` and there
is no ``test_encoded.npz`` or ``embeddings.npz``.  ``patience`` > 0 stops training once that many epochs in a row
did not beat the best validation Rsum (:func:`stop_early`).  Every file is written atomically; a folder belongs to one configuration and data set
(``config_key``, ``data_key``) and is never silently overwritten.

Runs under ``torchrun`` too (``python -m osdpm_lib.train``: :mod:`osdpm_lib.train_cli`): each rank takes its
slice of every global batch, DDP averages gradients and the contrastive loss is computed over features gathered
from all ranks.  The random draws (data order, caption picks, augmentation) are those of the global batch, so a
run's numbers depend on ``batch_size`` (the global batch), not on the number of processes; ``config.json``
records ``world_size``, which is not part of the run's identity.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import checkpoints, folds, lexicon
from .cache import Normalizer, SplitTensors, augment, bar_off, recipe_augment
from .data import Annotations, load as load_annotations, merge_val, with_val_split
from .evaluate import Encoded, encode_images, encode_texts
from .losses import AMBIGUITY_MODES, OSDPMLoss
from .priors import TARGETS, cached_image_priors
from .models import (OSDPM, PROTOTYPE_MODES, VARIANTS, DAPNConfig, build_clip, category_text_embeddings,
                     preprocess_config, tokenizer_for)


LOSS_KEYS = ("total", "contrastive", "osfcm")
RATIO_IMAGES = 256      # metrics.csv's dapn_ratio: mean ||DAPN delta|| / ||CLIP pooled|| over the first validation images
STAGE_IMAGES = 300      # embeddings.npz: the first test images, encoded at the start, middle and end of training

# TrainConfig fields that change nothing in the numbers: not part of the run's identity.
_NOT_IN_KEY = ("progress", "checkpoint_every", "stage_embeddings", "retrain_full")
# Fields added after runs were made: at these values they change nothing, and they stay out of the key, so that
# a run folder made before they existed keeps its identity.
_KEY_NEUTRAL = {"epoch_unit": "image", "crop_scale": None, "rand_augment": 0, "rand_augment_magnitude": 7,
                "val_fraction": 0.0, "patience": 0, "min_epochs": 0, "score_test": True, "purpose": "book"}
EPOCH_UNITS = ("image", "caption")
# Why a run exists.  Only "study" runs may score the study's test folds (osdpm_lib.folds); "tuning" and "design" runs
# choose settings on validation and score no test split at all (score_test=False).
PURPOSES = ("book", "tuning", "design", "study")


@dataclass
class TrainConfig:
    variant: str = "clip"
    model: str = "osdpm-tiny-vit"
    pretrained: str | None = None
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    module_lr: float = 2e-3          # DAPN / OSFCM parameters
    weight_decay: float = 0.1
    warmup_frac: float = 0.1
    seed: int = 0
    freeze_backbone: bool = False    # train only DAPN/OSFCM and CLIP's two projections (+ logit scale)
    lambda_osfcm: float = 1.0
    osfcm_tau: float = 0.1
    prior_threshold: float = 0.4     # the high-probability set: categories named in >= this share of an image's captions
    # OSFCM's design, chosen on validation (docs/DESIGN_STUDY.md, `python -m osdpm_lib.tuning --part design`):
    osfcm_target: str = "high"       # priors.TARGETS: "high" = the high-probability set renormalised, "full" = all nouns
    osfcm_prototypes: str = "free"   # models.PROTOTYPE_MODES: "free" (trained), "fixed" (text embeddings), "text" (per epoch)
    osfcm_ambiguity: str = "entropy" # losses.AMBIGUITY_MODES: which images OSFCM pulls ("all", "entropy"-weighted, "ambiguous")
    osfcm_warmup_frac: float = 0.3   # lambda_osfcm ramps linearly from 0 over this share of the training steps
    dapn: DAPNConfig = field(default_factory=DAPNConfig)   # DAPN's hyperparameters (a dict of some fields is accepted)
    ties: str = "expected"           # tie rule of the retrieval metrics (validation selection and test), metrics.TIE_RULES
    augment: bool = True
    device: str = "auto"
    precision: str = "auto"          # "bf16" autocast on CUDA, fp32 on CPU
    compile: bool = False
    channels_last: bool = False
    threads: int = 0                 # torch CPU threads (0 = torch default)
    eval_batch_size: int = 256
    progress: bool = True
    checkpoint_every: int = 0        # also write last.pt every N steps (0: at the end of each epoch only)
    stage_embeddings: bool = True    # write embeddings.npz (test images at the start, middle and end, for figures)
    extra: dict = field(default_factory=dict)
    # the real-data recipe (README, "Runbook"); at their defaults a run is the same as before they existed
    epoch_unit: str = "image"        # "image": an epoch draws one random caption per training image;
                                     # "caption": an epoch goes over every training caption once (HarMA, open_clip)
    crop_scale: tuple[float, float] | None = None   # RandomResizedCrop area range, e.g. (0.5, 1.0); None: no crop
    rand_augment: int = 0            # ops per image of ALBEF/HarMA's RandomAugment (cache.rand_augment); 0: none
    rand_augment_magnitude: int = 7  # its magnitude, 0-10
    val_fraction: float = 0.0        # data without a val split: carve this share of train (seeded by `seed`)
    retrain_full: bool = False       # then retrain on train+val for the selected number of epochs (run_dir/full/)
    patience: int = 0                # early stopping: stop once this many epochs in a row did not beat the best
                                     # validation Rsum (0: run every epoch up to `epochs`)
    min_epochs: int = 0              # early stopping never stops before this many epochs (the warm-up and the
                                     # first high-learning-rate epochs dip on validation before they climb)
    score_test: bool = True          # False: no test split is loaded, encoded or scored (tuning, design, the study)
    purpose: str = "book"            # PURPOSES: "tuning"/"design" runs can never score the study folds

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")
        self.dapn = DAPNConfig.of(self.dapn)
        for name, value, allowed in (("osfcm_target", self.osfcm_target, TARGETS),
                                     ("osfcm_prototypes", self.osfcm_prototypes, PROTOTYPE_MODES),
                                     ("osfcm_ambiguity", self.osfcm_ambiguity, AMBIGUITY_MODES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
        if self.epoch_unit not in EPOCH_UNITS:
            raise ValueError(f"unknown epoch_unit {self.epoch_unit!r}; choose one of {EPOCH_UNITS}")
        if self.crop_scale is not None:
            self.crop_scale = tuple(float(v) for v in self.crop_scale)   # a json list reads back as the same key
            if not (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
                raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience < 0 or self.min_epochs < 0:
            raise ValueError(f"patience and min_epochs must be >= 0 (0: no early stopping, no minimum), got "
                             f"{self.patience} and {self.min_epochs}")
        if self.purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {self.purpose!r}; choose one of {PURPOSES}")
        if self.purpose in ("tuning", "design") and self.score_test:
            raise ValueError(f"a {self.purpose} run scores no test split: set score_test=False")

    def key(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in _NOT_IN_KEY and not (k in _KEY_NEUTRAL and v == _KEY_NEUTRAL[k])}
        if self.variant == "osdpm":  # its OSFCM target: the lexicon's categories and terms (a new one retrains)
            fields["lexicon"] = lexicon.CATEGORIES
        if self.pretrained and Path(self.pretrained).is_file():   # a checkpoint file: the same however it is spelled
            fields["pretrained"] = str(Path(self.pretrained).resolve())
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def numeric_environment() -> dict:
    """What decides the last bits of a CPU run besides the seed: torch's version, its CPU kernel path
    (``ATEN_CPU_CAPABILITY``), MKL's and oneDNN's code paths (``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``) and the number of
    threads.  Two runs with equal environments and seeds give bit-identical results (docs/REPRODUCIBILITY.md)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "MKL_CBWR": os.environ.get("MKL_CBWR", ""), "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "threads": torch.get_num_threads()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda" and dist.is_initialized():
        dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(dev)
    return device, autocast_dtype(cfg.precision, device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``"bf16"`` -> bfloat16 autocast, ``"fp32"`` -> none, ``"auto"`` -> bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return fn


def param_groups(model: OSDPM, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: backbone (decay / no decay) at ``lr``; new modules at ``module_lr``."""
    module_ids = {id(p) for p in model.module_parameters()}
    decay, no_decay = [], []
    for name, p in model.clip.named_parameters():
        if not p.requires_grad or id(p) in module_ids:
            continue
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0}]
    if module_ids:
        groups.append({"params": model.module_parameters(), "lr": cfg.module_lr, "weight_decay": 0.0})
    return groups


@dataclass
class Bundle:
    """Everything a run needs from a dataset: tensors per split and the training priors."""
    train: SplitTensors
    val: SplitTensors
    test: SplitTensors
    normalizer: Normalizer
    prior: torch.Tensor | None    # [n_train, K] caption-noun frequencies over lexicon.CATEGORY_NAMES


def load_bundle(data_dir, tokenizer, preprocess: dict, with_priors: bool, prior_threshold: float = 0.4,
                image_dir=None, cache_dir=None, ann=None, prior_target: str = "high", bands=None,
                need_val: bool = True, with_test: bool = True) -> Bundle:
    """The split tensors and priors of the data set at ``data_dir`` (``ann``: its annotations, if read already);
    the training prior is OSFCM's target (``priors.Priors.target(prior_target)``); ``bands``: see
    :func:`osdpm_lib.data.read_image`; ``need_val=False``: an empty val split is allowed, as in the final retrain
    on train+val; ``with_test=False``: the test split is
    left empty (not even read: runs that score no test split)."""
    data_dir = Path(data_dir)
    ann = ann if ann is not None else load_annotations(data_dir)
    image_dir = Path(image_dir) if image_dir else data_dir / "images"
    size = preprocess["image_size"]
    splits = {s: SplitTensors.build(ann.split(s) if (s != "test" or with_test) else [], image_dir, size, tokenizer,
                                    cache_dir, bands)
              for s in ("train", "val", "test")}
    for s, t in splits.items():
        if len(t.records) == 0 and not (s == "val" and not need_val) and not (s == "test" and not with_test):
            hint = " (TrainConfig.val_fraction, e.g. 0.1, carves one from train)" if s == "val" else ""
            raise ValueError(f"{ann.source}: split {s!r} is empty{hint}")
    prior = None
    if with_priors:
        pri = cached_image_priors(splits["train"].records, Path(cache_dir or data_dir / ".cache"), prior_threshold)
        prior = torch.from_numpy(np.asarray(pri.target(prior_target), dtype=np.float32))
    return Bundle(splits["train"], splits["val"], splits["test"],
                  Normalizer(preprocess["mean"], preprocess["std"]), prior)


# Backbone parameters that still train when the backbone is frozen: the two projections into the joint space
# and the temperature (ViT: ``visual.proj``; ModifiedResNet: the attention pool's output projection).
FROZEN_TRAINABLE = ("visual.proj", "text_projection", "logit_scale", "visual.attnpool.c_proj.")


def freeze_backbone(clip: torch.nn.Module) -> None:
    """Stop gradients into every backbone parameter except :data:`FROZEN_TRAINABLE`."""
    for name, p in clip.named_parameters():
        p.requires_grad_(any(name == k or (k.endswith(".") and name.startswith(k)) for k in FROZEN_TRAINABLE))


def build_model(cfg: TrainConfig) -> tuple[OSDPM, object, dict]:
    seed_everything(cfg.seed)
    clip = build_clip(cfg.model, cfg.pretrained)
    if cfg.freeze_backbone:
        freeze_backbone(clip)
    tokenizer = tokenizer_for(cfg.model)
    protos = category_text_embeddings(clip, tokenizer, lexicon.CATEGORY_NAMES) if cfg.variant == "osdpm" else None
    torch.manual_seed(cfg.seed + 1)  # new modules: same init whatever came before
    model = OSDPM(clip, cfg.variant, protos, osfcm_tau=cfg.osfcm_tau, dapn=cfg.dapn, prototypes=cfg.osfcm_prototypes)
    return model, tokenizer, preprocess_config(clip)


def encode_split(model, split: SplitTensors, normalizer, cfg: TrainConfig, device, amp, ratios: list | None = None
                 ) -> Encoded:
    """The split's image and caption embeddings; with ``ratios`` (a list), DAPN's share of every image's embedding
    (``models.dapn_share``) is appended to it from the same forward pass (nothing without DAPN)."""
    hook = None if ratios is None else (lambda maps: ratios.extend(maps["dapn_share"].tolist()))
    return Encoded(encode_images(model, split.images, normalizer.to(device), cfg.eval_batch_size, device, amp, hook),
                   encode_texts(model, split.tokens, 4 * cfg.eval_batch_size, device, amp),
                   split.caption_image.numpy())


@torch.no_grad()
def dapn_ratio(model: OSDPM, split: SplitTensors, normalizer, device, amp) -> float:
    """How much DAPN changes CLIP's image embedding: mean ``||delta|| / ||pooled||`` over the first
    ``RATIO_IMAGES`` images of ``split`` (NaN without DAPN; 0 at initialisation, where its projection is zero).
    Validation reads it from its own encoding instead (``encode_split(..., ratios=...)``)."""
    if model.dapn is None:
        return float("nan")
    model.eval()
    x = normalizer(split.images[:RATIO_IMAGES].to(device))
    with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
        return model.dapn_ratio(x)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Stepper:
    """One optimisation step of ``train`` (the benchmark times the same object).

    Holds the optimiser (fused AdamW; backbone and new-module groups of ``param_groups``), the warm-up +
    cosine schedule, the DDP / ``torch.compile`` wrapping and the loss.  ``__call__`` augments and
    normalises a uint8 batch, runs forward/backward under autocast, steps, clamps the logit scale and
    returns the detached losses (tensors on the device: no host synchronisation).
    """

    def __init__(self, model: OSDPM, cfg: TrainConfig, normalizer, device, amp, total_steps: int,
                 rank: int = 0, world: int = 1):
        self.model, self.cfg, self.normalizer, self.device, self.amp = model, cfg, normalizer, device, amp
        self.rank, self.world = rank, world
        self.loss_fn = OSDPMLoss(cfg.lambda_osfcm if cfg.variant == "osdpm" else 0.0, rank, world, cfg.osfcm_ambiguity)
        self.warmup_steps = int(cfg.osfcm_warmup_frac * total_steps)
        self.optim = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, cosine_with_warmup(total_steps, int(cfg.warmup_frac * total_steps)))
        fwd = model
        if world > 1:
            fwd = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=model.osfcm is not None and self.loss_fn.lambda_osfcm == 0)
        self.fwd = torch.compile(fwd, dynamic=False) if cfg.compile else fwd

    def lambda_scale(self) -> float:
        """OSFCM's warm-up factor at the coming step: ``(step + 1) / warmup_steps``, capped at 1 (a host integer:
        the scheduler's step count, restored on resume)."""
        return min(1.0, (self.sched.last_epoch + 1) / self.warmup_steps) if self.warmup_steps else 1.0

    def __call__(self, images_u8: torch.Tensor, tokens: torch.Tensor, prior: torch.Tensor | None,
                 gen: torch.Generator) -> dict[str, torch.Tensor]:
        imgs = images_u8
        if self.cfg.augment:
            # contiguous: one compiled graph for every rotation
            imgs = augment(imgs, gen, self.rank, self.world).contiguous()
        imgs = recipe_augment(imgs.to(self.device, non_blocking=True), gen, self.cfg.crop_scale,
                              self.cfg.rand_augment, self.cfg.rand_augment_magnitude)   # by default: imgs itself
        imgs = self.normalizer(imgs)
        if self.cfg.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.fwd(imgs, tokens.to(self.device, non_blocking=True))
            losses = self.loss_fn(out, prior, self.lambda_scale())
        self.optim.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optim.step()
        self.sched.step()
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, math.log(100))
        return {k: v.detach() for k, v in losses.items()}


def epoch_size(cfg: TrainConfig, split: SplitTensors) -> int:
    """The pairs one epoch draws: one per training image (``epoch_unit="image"``, a random caption each) or one
    per training caption (``"caption"``: every caption once, as HarMA's and open_clip's pair data sets do).
    ``cfg``: anything with an ``epoch_unit`` (also the baselines' ``BaselineConfig``)."""
    return len(split.captions) if cfg.epoch_unit == "caption" else len(split.records)


def batch_pairs(cfg: TrainConfig, batch: torch.Tensor, caption_index, caption_image: torch.Tensor,
                gen: torch.Generator, part: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """(image indices, caption indices) of this process's ``part`` of one global batch; ``batch`` is the global
    batch's slice of the epoch's permutation (images or captions, :func:`epoch_size`); ``caption_index`` is
    ``SplitTensors.caption_index()``.  Every rank draws the whole global batch's random numbers and keeps its part,
    so the numbers do not depend on the number of processes."""
    chosen = batch[part]
    if cfg.epoch_unit == "caption":
        return caption_image[chosen], chosen
    order, start, count = caption_index
    pick = (torch.rand(len(batch), generator=gen)[part] * count[chosen]).long()   # one caption per image
    return chosen, order[start[chosen] + pick]


class RunExistsError(RuntimeError):
    """The run folder holds results of another configuration or data set; nothing was overwritten."""


def data_key(records_by_split, image_dir=None) -> str:
    """Identity of a data set as a run sees it: split, filename and captions of every image, and with
    ``image_dir`` each image file's size (a regenerated or replaced image set changes it).  Cheap: no image is read."""
    h = hashlib.sha1()
    for records in records_by_split:
        rows = [[r.split, r.filename, list(r.captions)] for r in records]
        if image_dir is not None:
            rows = [row + [f.stat().st_size if (f := Path(image_dir) / row[1]).is_file() else -1] for row in rows]
        h.update(json.dumps(rows).encode())
    return h.hexdigest()[:12]


def _claim(run_dir: Path, identity: dict, overwrite: bool) -> None:
    """Refuse to reuse a folder holding another run, unless ``overwrite`` (then it is moved aside)."""
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists():
        leftovers = [p.name for p in run_dir.glob("*")] if run_dir.exists() else []
        if leftovers and not overwrite:
            raise RunExistsError(f"{run_dir}: not empty ({', '.join(sorted(leftovers)[:5])}) and not a run folder; "
                                 "choose another folder or pass overwrite=True")
    else:
        old = json.loads(cfg_file.read_text())
        if {k: old.get(k) for k in identity} == identity:
            return
        if not overwrite:
            diff = {k: (old.get(k), v) for k, v in identity.items() if old.get(k) != v}
            raise RunExistsError(
                f"{run_dir} holds a run of another configuration or data set ({diff}: stored vs requested); "
                "nothing was overwritten: choose another run folder, delete that one, or pass overwrite=True "
                "(which moves it aside)")
    if run_dir.exists() and any(run_dir.iterdir()):
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"{run_dir}: earlier run moved to {aside}")


def _resume_state(path: Path, identity: dict) -> dict | None:
    if not path.exists():
        return None
    state = checkpoints.load(path)
    if state.get("identity") != identity:
        raise RunExistsError(f"{path}: a resume checkpoint of another configuration or data set "
                             f"({state.get('identity')} vs {identity})")
    return state


def train(cfg: TrainConfig, data_dir, run_dir, bundle: Bundle | None = None, reuse: bool = True,
          overwrite: bool = False) -> dict:
    """Train one configuration; returns ``{"test": metrics, "best_epoch": e, "history": [...]}``.

    ``run_dir`` is tied to one configuration and data set: a finished run of the same is returned as it is
    (``reuse``), an interrupted one resumes from ``last.pt`` (written atomically at the end of every epoch and
    every ``cfg.checkpoint_every`` steps) and ends with the same numbers as an uninterrupted run; a folder holding
    another run raises :class:`RunExistsError` unless ``overwrite`` (which moves it aside, never deletes it).
    With ``cfg.retrain_full`` the result also holds ``"retrain_full"``: :func:`retrain_full` at the selected epoch.
    """
    if cfg.retrain_full and bundle is not None:
        raise ValueError("retrain_full reads the data set from data_dir; pass no bundle")
    result = _train(cfg, data_dir, run_dir, bundle, reuse, overwrite)
    if cfg.retrain_full:
        best = [result.get("best_epoch")]        # under torchrun only rank 0 has the result; every rank retrains
        if _rank_world()[1] > 1:
            dist.broadcast_object_list(best, src=0)
        full = retrain_full(cfg, data_dir, run_dir, best[0], reuse)
        result = result | {"retrain_full": full} if result else result
    return result


FULL_DIR = "full"    # the final retrain on train+val, inside the selected run's folder
DONE_FILE = "test_metrics.json"       # a finished run that scored its test split
SELECTION_FILE = "selection.json"     # a finished run with score_test=False: its validation selection only


def stop_early(cfg: TrainConfig, epoch: int, best_epoch: int) -> bool:
    """Whether training stops before ``epoch``: with ``cfg.patience`` > 0, once the ``patience`` epochs after the
    best one (``best_epoch``, the first of tied bests) were all trained without beating it, and at least
    ``cfg.min_epochs`` epochs were trained.  Checked before each epoch from the stored best, so an interrupted and
    resumed run stops where an uninterrupted one does."""
    return cfg.patience > 0 and epoch - 1 >= cfg.min_epochs and epoch - 1 - best_epoch >= cfg.patience


def retrain_full(cfg: TrainConfig, data_dir, run_dir, epochs: int, reuse: bool = True) -> dict:
    """Retrain ``cfg`` on train+val for ``epochs`` (the epoch selected on validation; its warm-up and cosine
    schedule end there) into ``run_dir/full/``: no selection (``best.pt`` holds the weights after the last
    epoch), the test split scored once (``full/test_metrics.json``).  What papers that train on every non-test
    image report (AMFMN trains RSICD on its 9,828 train+val images); the selected run's files stay as they are."""
    full_cfg = dataclasses.replace(cfg, epochs=epochs, retrain_full=False, stage_embeddings=False)
    return _train(full_cfg, data_dir, Path(run_dir) / FULL_DIR, None, reuse, False, full=True)


def run_annotations(cfg: TrainConfig, data_dir, full: bool = False) -> Annotations:
    """The annotations a run sees: the data set's, with ``cfg.val_fraction`` of train carved out as val (seeded by
    ``cfg.seed``; :func:`osdpm_lib.data.with_val_split`), and with val merged back into train when ``full``."""
    ann = with_val_split(load_annotations(data_dir), cfg.val_fraction, cfg.seed)
    return merge_val(ann) if full else ann


def _train(cfg: TrainConfig, data_dir, run_dir, bundle: Bundle | None, reuse: bool, overwrite: bool,
           full: bool = False) -> dict:
    """:func:`train` without the final retrain; ``full``: train on train+val, no selection (:func:`retrain_full`)."""
    run_dir = Path(run_dir)
    rank, world = _rank_world()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if bundle is None:
        folds.refuse_study_fold(data_dir, cfg.purpose)     # only the study's final runs may see its test folds
        ann = run_annotations(cfg, data_dir, full)
        key = data_key([ann.split(s) for s in ("train", "val", "test")], Path(data_dir) / "images")
    else:
        key = data_key([bundle.train.records, bundle.val.records, bundle.test.records])
    identity = {"config_key": cfg.key(), "data_key": key}
    done = run_dir / (DONE_FILE if cfg.score_test else SELECTION_FILE)
    if rank == 0:
        _claim(run_dir, identity, overwrite)
    if world > 1:
        dist.barrier()
    if reuse and done.exists():   # finished: returned before any model or image is loaded
        saved = json.loads(done.read_text())
        if {k: saved.get(k) for k in identity} == identity:
            return saved
    device, amp = resolve_device(cfg)
    model, tokenizer, pre = build_model(cfg)
    if bundle is None:
        if rank > 0:
            dist.barrier()      # rank 0 builds the image and prior caches first; the others read them
        bundle = load_bundle(data_dir, tokenizer, pre, cfg.variant == "osdpm", cfg.prior_threshold, ann=ann,
                             prior_target=cfg.osfcm_target, need_val=not full, with_test=cfg.score_test)
        if rank == 0 and world > 1:
            dist.barrier()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    normalizer = bundle.normalizer.to(device)
    n_train = epoch_size(cfg, bundle.train)     # what an epoch's permutation runs over: images or captions
    global_bs = min(cfg.batch_size, n_train)
    if global_bs % world:
        raise ValueError(f"batch_size {global_bs} (the global batch) is not divisible by the {world} processes; "
                         "choose a batch size that is a multiple of the number of processes")
    steps_per_epoch = n_train // global_bs
    step_fn = Stepper(model, cfg, normalizer, device, amp, steps_per_epoch * cfg.epochs, rank, world)
    caps_index = bundle.train.caption_index()
    gen = torch.Generator().manual_seed(cfg.seed)
    prior = bundle.prior.to(device) if bundle.prior is not None else None

    def encode_stage(stages: dict, name: str) -> None:
        if cfg.stage_embeddings and cfg.score_test:
            stages[name] = encode_images(model, bundle.test.images[:STAGE_IMAGES], normalizer, cfg.eval_batch_size,
                                         device, amp)

    last = run_dir / "last.pt"
    resume = _resume_state(last, identity) if reuse else None
    if resume is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            checkpoints.write_text(run_dir / "config.json", json.dumps(
                dataclasses.asdict(cfg) | {"data_dir": str(data_dir), "world_size": world} | identity
                | _split_record(cfg, bundle, full), indent=2))
        stages = {}
        encode_stage(stages, "start")
        history, best, epoch0, step0, perm, sums = [], {"rsum": -1.0, "epoch": -1}, 1, 0, None, None
    else:
        checkpoints.load_into(model, resume["model"], last, _model_label(cfg))
        step_fn.optim.load_state_dict(resume["optim"])
        step_fn.sched.load_state_dict(resume["sched"])
        gen.set_state(resume["gen"])
        torch.set_rng_state(resume["torch_rng"])
        stages = {k: v.numpy() for k, v in resume["stages"].items()}
        history, best, epoch0, step0 = resume["history"], resume["best"], resume["epoch"], resume["step"]
        perm, sums = resume["perm"], resume["sums"]
        if rank == 0:
            print(f"{run_dir}: resuming at epoch {epoch0}, step {step0} of {steps_per_epoch}")

    def checkpoint(epoch: int, step: int, perm, sums) -> None:
        if rank == 0:
            checkpoints.save({
                "identity": identity, "model": model.state_dict(), "optim": step_fn.optim.state_dict(),
                "sched": step_fn.sched.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "stages": {k: torch.from_numpy(v) for k, v in stages.items()}, "history": history, "best": best,
                "epoch": epoch, "step": step, "perm": perm,
                "sums": None if sums is None else {k: float(v) for k, v in sums.items()}}, last)

    def validate(epoch: int, train_time: float, steps: int, sums) -> None:
        """Score validation after ``epoch`` (0: the starting weights); keep the first best as ``best.pt``."""
        nonlocal best
        sums = _mean_over_ranks(sums, device, world)
        ratios: list[float] = []
        val_enc = encode_split(model, bundle.val, normalizer, cfg, device, amp, ratios) if not full else None
        val = val_enc.metrics(cfg.ties) if not full else {}
        row = {"epoch": epoch, "lr": step_fn.sched.get_last_lr()[0] if epoch else 0.0, "train_s": round(train_time, 3),
               "pairs_per_s": round(steps * global_bs / max(train_time, 1e-9), 1) if steps else 0.0}
        row |= {f"loss_{k}": float(sums[k]) / max(1, steps_per_epoch) if sums else float("nan") for k in LOSS_KEYS}
        row |= {f"val_{k}": v for k, v in val.items()}
        # DAPN's share of the embedding over the first RATIO_IMAGES validation images, from the validation encoding
        row["dapn_ratio"] = (float(np.mean(ratios[:RATIO_IMAGES])) if ratios else float("nan")) if not full else \
            dapn_ratio(model, bundle.train, normalizer, device, amp)
        history.append(row)
        if rank == 0:
            _write_history(run_dir / "metrics.csv", history)
        if (val["rsum"] > best["rsum"]) if val else (epoch == cfg.epochs):   # the first of tied epochs is kept
            best = {"rsum": val.get("rsum"), "epoch": epoch}           # full: no val, the last epoch
            if rank == 0:
                checkpoints.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg), "epoch": epoch},
                                 run_dir / "best.pt")
                if val_enc is not None:
                    val_enc.save(run_dir / "val_encoded.npz")

    if resume is None:      # epoch 0: the starting weights are a candidate too (an untrained run is zero-shot)
        validate(0, 0.0, 0, None)
    local_bs = global_bs // world
    part = slice(rank * local_bs, (rank + 1) * local_bs)     # this rank's share of every global batch
    for epoch in range(epoch0, cfg.epochs + 1):
        if stop_early(cfg, epoch, best["epoch"]):
            break
        model.train()
        if perm is None:
            perm = torch.randperm(n_train, generator=gen)
            sums = dict.fromkeys(LOSS_KEYS, 0.0)
            if model.osfcm is not None and model.osfcm.mode == "text":   # prototypes from the current text tower
                model.osfcm.set_prototypes(category_text_embeddings(model.clip, tokenizer, lexicon.CATEGORY_NAMES))
        t0 = time.perf_counter()
        bar = tqdm(range(step0, steps_per_epoch), desc=f"{cfg.variant} s{cfg.seed} epoch {epoch}/{cfg.epochs}",
                   leave=False, initial=step0, total=steps_per_epoch, **bar_off(not cfg.progress or rank != 0))
        for step in bar:
            idx, cap = batch_pairs(cfg, perm[step * global_bs:(step + 1) * global_bs], caps_index,
                                   bundle.train.caption_image, gen, part)
            losses = step_fn(bundle.train.images[idx], bundle.train.tokens[cap],
                             prior[idx.to(device)] if prior is not None else None, gen)
            for k in sums:
                if k in losses:
                    sums[k] += losses[k]   # on the device: no host sync per step
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps_per_epoch:
                sums = _mean_over_ranks(sums, device, world)     # the checkpoint holds the global sums
                checkpoint(epoch, step + 1, perm, sums)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        validate(epoch, time.perf_counter() - t0, steps_per_epoch - step0, sums)
        if epoch == (cfg.epochs + 1) // 2:
            encode_stage(stages, "mid")
        perm, sums, step0 = None, None, 0
        checkpoint(epoch + 1, 0, None, None)
    encode_stage(stages, "end")
    if rank != 0:
        return {}
    common = {"best_epoch": best["epoch"], "best_val_rsum": best["rsum"], **identity, "variant": cfg.variant,
              "seed": cfg.seed, "train_s": round(sum(h["train_s"] for h in history), 2)}
    if not cfg.score_test:      # tuning, design, the study's runs: the selection on validation, no test split
        at_best = next((h for h in history if h["epoch"] == best["epoch"]), {})
        result = {"val": {k[4:]: v for k, v in at_best.items() if k.startswith("val_")}, **common,
                  "epochs_run": history[-1]["epoch"], "max_epochs": cfg.epochs}
        checkpoints.write_text(done, json.dumps(result, indent=2))
        last.unlink(missing_ok=True)
        return result
    checkpoints.load_into(model, checkpoints.load(run_dir / "best.pt")["model"], run_dir / "best.pt",
                          _model_label(cfg))
    enc = encode_split(model, bundle.test, normalizer, cfg, device, amp)   # the only test evaluation
    test = enc.metrics(cfg.ties)
    if stages:
        with checkpoints.atomic_path(run_dir / "embeddings.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **stages)
    enc.save(run_dir / "test_encoded.npz")
    result = {"test": test, **common}
    checkpoints.write_text(done, json.dumps(result, indent=2))
    last.unlink(missing_ok=True)   # finished: best.pt and the results are what stays
    return result


def _mean_over_ranks(sums: dict | None, device, world: int) -> dict | None:
    """The loss sums averaged over the ranks (what one process on the global batch sums); as it is for one."""
    if sums is None or world == 1:
        return sums
    t = torch.tensor([float(sums[k]) for k in LOSS_KEYS], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(LOSS_KEYS, (t / world).tolist()))


def _split_record(cfg: TrainConfig, bundle: Bundle, full: bool) -> dict:
    """What ``config.json`` says about the splits beyond the data set's: the carved val images, the final retrain."""
    rec = {"val_carved": [r.filename for r in bundle.val.records]} if cfg.val_fraction and not full else {}
    if full:
        rec["trained_on"] = "train+val (final retrain at the selected epoch; no selection)"
    return rec


def _write_history(path: Path, history: list[dict]) -> None:
    """Per-epoch metrics, rewritten (atomically) after every epoch: a long run can be watched."""
    with checkpoints.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def _model_label(cfg: TrainConfig) -> str:
    """How checkpoint errors name the model a state dict must fit."""
    return f"model {cfg.model!r} ({cfg.variant})"


def load_trained(run_dir, device="cpu") -> tuple[OSDPM, object, dict, TrainConfig]:
    """The selected model of a finished run, its tokenizer and preprocessing."""
    path = Path(run_dir) / "best.pt"
    state = checkpoints.load(path, map_location=device)
    cfg = TrainConfig(**state["config"])
    model, tokenizer, pre = build_model(cfg)
    checkpoints.load_into(model, state["model"], path, _model_label(cfg))
    return model.to(device).eval(), tokenizer, pre, cfg


if __name__ == "__main__":      # python -m osdpm_lib.train, also under torchrun: osdpm_lib/train_cli.py
    from osdpm_lib.train_cli import main

    raise SystemExit(main())
