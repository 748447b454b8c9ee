"""Training: one configuration -> one run folder.

``train(cfg, data_dir, run_dir)`` fine-tunes (or trains from scratch) a CLIP model in one of the
variants ``clip``, ``clip+dapn``, ``osdpm``; selects the epoch on **validation Rsum only**, evaluates the
test split **once** with the selected weights, and writes to ``run_dir``:
``config.json`` (resolved), ``metrics.csv`` (per epoch), ``best.pt``, ``test_metrics.json``,
``embeddings.npz`` (embeddings of the first ``STAGE_IMAGES`` test images at the start, middle and end of training,
for figures) and
``test_encoded.npz`` (the selected model's test embeddings); while it runs, ``last.pt`` (everything needed to
resume exactly).  Every file is written atomically; a folder belongs to one configuration and data set
(``config_key``, ``data_key``) and is never silently overwritten.

Runs under ``torchrun`` too: each rank takes its slice of every global batch, DDP averages gradients
and the contrastive loss is computed over features gathered from all ranks.
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

from . import checkpoints, lexicon
from .cache import Normalizer, SplitTensors, augment, bar_off
from .data import load as load_annotations
from .evaluate import Encoded, encode_images, encode_texts
from .losses import OSDPMLoss
from .priors import cached_image_priors
from .models import OSDPM, VARIANTS, build_clip, category_text_embeddings, preprocess_config, tokenizer_for


LOSS_KEYS = ("total", "contrastive", "osfcm")
STAGE_IMAGES = 300      # embeddings.npz: the first test images, encoded at the start, middle and end of training

# TrainConfig fields that change nothing in the numbers: not part of the run's identity.
_NOT_IN_KEY = ("progress", "checkpoint_every", "stage_embeddings")


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
    prior_threshold: float = 0.4
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

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")

    def key(self) -> str:
        blob = json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k not in _NOT_IN_KEY}, sort_keys=True)
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
                image_dir=None, cache_dir=None, ann=None) -> Bundle:
    """The split tensors and priors of the data set at ``data_dir`` (``ann``: its annotations, if read already)."""
    data_dir = Path(data_dir)
    ann = ann if ann is not None else load_annotations(data_dir)
    image_dir = Path(image_dir) if image_dir else data_dir / "images"
    size = preprocess["image_size"]
    splits = {s: SplitTensors.build(ann.split(s), image_dir, size, tokenizer, cache_dir) for s in ("train", "val", "test")}
    for s, t in splits.items():
        if len(t.records) == 0:
            raise ValueError(f"{ann.source}: split {s!r} is empty")
    prior = None
    if with_priors:
        pri = cached_image_priors(splits["train"].records, Path(cache_dir or data_dir / ".cache"), prior_threshold)
        prior = torch.from_numpy(np.asarray(pri.probs, dtype=np.float32))
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
    model = OSDPM(clip, cfg.variant, protos, osfcm_tau=cfg.osfcm_tau)
    return model, tokenizer, preprocess_config(clip)


def encode_split(model, split: SplitTensors, normalizer, cfg: TrainConfig, device, amp) -> Encoded:
    return Encoded(encode_images(model, split.images, normalizer.to(device), cfg.eval_batch_size, device, amp),
                   encode_texts(model, split.tokens, 4 * cfg.eval_batch_size, device, amp),
                   split.caption_image.numpy())


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
        self.loss_fn = OSDPMLoss(cfg.lambda_osfcm if cfg.variant == "osdpm" else 0.0, rank, world)
        self.optim = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.optim, cosine_with_warmup(total_steps, int(cfg.warmup_frac * total_steps)))
        fwd = model
        if world > 1:
            fwd = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=model.osfcm is not None and self.loss_fn.lambda_osfcm == 0)
        self.fwd = torch.compile(fwd, dynamic=False) if cfg.compile else fwd

    def __call__(self, images_u8: torch.Tensor, tokens: torch.Tensor, prior: torch.Tensor | None,
                 gen: torch.Generator) -> dict[str, torch.Tensor]:
        imgs = images_u8
        if self.cfg.augment:
            imgs = augment(imgs, gen).contiguous()  # contiguous: one compiled graph for every rotation
        imgs = self.normalizer(imgs.to(self.device, non_blocking=True))
        if self.cfg.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.fwd(imgs, tokens.to(self.device, non_blocking=True))
            losses = self.loss_fn(out, prior)
        self.optim.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optim.step()
        self.sched.step()
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(0, math.log(100))
        return {k: v.detach() for k, v in losses.items()}


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
    """
    run_dir = Path(run_dir)
    rank, world = _rank_world()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if bundle is None:
        ann = load_annotations(data_dir)
        key = data_key([ann.split(s) for s in ("train", "val", "test")], Path(data_dir) / "images")
    else:
        key = data_key([bundle.train.records, bundle.val.records, bundle.test.records])
    identity = {"config_key": cfg.key(), "data_key": key}
    done = run_dir / "test_metrics.json"
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
        bundle = load_bundle(data_dir, tokenizer, pre, cfg.variant == "osdpm", cfg.prior_threshold, ann=ann)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    normalizer = bundle.normalizer.to(device)
    n_train = len(bundle.train.records)
    global_bs = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // global_bs
    step_fn = Stepper(model, cfg, normalizer, device, amp, steps_per_epoch * cfg.epochs, rank, world)
    caps_order, caps_start, caps_count = bundle.train.caption_index()
    gen = torch.Generator().manual_seed(cfg.seed)
    prior = bundle.prior.to(device) if bundle.prior is not None else None

    def encode_stage(stages: dict, name: str) -> None:
        if cfg.stage_embeddings:
            stages[name] = encode_images(model, bundle.test.images[:STAGE_IMAGES], normalizer, cfg.eval_batch_size,
                                         device, amp)

    last = run_dir / "last.pt"
    resume = _resume_state(last, identity) if reuse else None
    if resume is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            checkpoints.write_text(run_dir / "config.json", json.dumps(
                dataclasses.asdict(cfg) | {"data_dir": str(data_dir)} | identity, indent=2))
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
        val = encode_split(model, bundle.val, normalizer, cfg, device, amp).metrics(cfg.ties)
        row = {"epoch": epoch, "lr": step_fn.sched.get_last_lr()[0] if epoch else 0.0, "train_s": round(train_time, 3),
               "pairs_per_s": round(steps * global_bs / max(train_time, 1e-9), 1) if steps else 0.0}
        row |= {f"loss_{k}": float(sums[k]) / max(1, steps_per_epoch) if sums else float("nan") for k in LOSS_KEYS}
        row |= {f"val_{k}": v for k, v in val.items()}
        history.append(row)
        if rank == 0:
            _write_history(run_dir / "metrics.csv", history)
        if val["rsum"] > best["rsum"]:     # strictly greater: the first of tied epochs is kept
            best = {"rsum": val["rsum"], "epoch": epoch}
            if rank == 0:
                checkpoints.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg), "epoch": epoch},
                                 run_dir / "best.pt")

    if resume is None:      # epoch 0: the starting weights are a candidate too (an untrained run is zero-shot)
        validate(0, 0.0, 0, None)
    local_bs = global_bs // world
    for epoch in range(epoch0, cfg.epochs + 1):
        model.train()
        if perm is None:
            perm = torch.randperm(n_train, generator=gen)
            sums = dict.fromkeys(LOSS_KEYS, 0.0)
        t0 = time.perf_counter()
        bar = tqdm(range(step0, steps_per_epoch), desc=f"{cfg.variant} s{cfg.seed} epoch {epoch}/{cfg.epochs}",
                   leave=False, initial=step0, total=steps_per_epoch, **bar_off(not cfg.progress or rank != 0))
        for step in bar:
            idx = perm[step * global_bs:(step + 1) * global_bs][rank * local_bs:(rank + 1) * local_bs]
            pick = (torch.rand(len(idx), generator=gen) * caps_count[idx]).long()   # one caption per image
            cap = caps_order[caps_start[idx] + pick]
            losses = step_fn(bundle.train.images[idx], bundle.train.tokens[cap],
                             prior[idx.to(device)] if prior is not None else None, gen)
            for k in sums:
                if k in losses:
                    sums[k] += losses[k]   # on the device: no host sync per step
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps_per_epoch:
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
    checkpoints.load_into(model, checkpoints.load(run_dir / "best.pt")["model"], run_dir / "best.pt",
                          _model_label(cfg))
    enc = encode_split(model, bundle.test, normalizer, cfg, device, amp)   # the only test evaluation
    test = enc.metrics(cfg.ties)
    if stages:
        with checkpoints.atomic_path(run_dir / "embeddings.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **stages)
    with checkpoints.atomic_path(run_dir / "test_encoded.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, images=enc.images, texts=enc.texts, caption_image=enc.caption_image)
    result = {"test": test, "best_epoch": best["epoch"], "best_val_rsum": best["rsum"], **identity,
              "variant": cfg.variant, "seed": cfg.seed, "train_s": round(sum(h["train_s"] for h in history), 2)}
    checkpoints.write_text(done, json.dumps(result, indent=2))
    last.unlink(missing_ok=True)   # finished: best.pt and the results are what stays
    return result


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
