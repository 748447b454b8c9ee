"""Training and evaluation of the baselines under the book's protocol.

:func:`prepare` reads a data set (the same readers and split tensors as :func:`osdpm_lib.train.load_bundle`) and
builds the vocabulary from the training captions; :func:`train_system` trains one system for one seed (Adam,
max-violation triplet loss on batches of one random caption per image, or of every (image, caption) pair once per
epoch with ``epoch_unit="caption"`` (the originals' loaders; two captions of one image in a batch are then not each
other's negatives, :func:`osdpm_lib.baselines.scoring.same_image`), after ``warmup_epochs`` on the sum over all
negatives, as later VSE codes warm up; on the embedded benchmark every epoch on the sum did best on validation,
docs/BASELINE_STUDY.md; VSE++ keeps its hardest negative from the first epoch, VSE0 its sum, and AMFMN and GaLR
the sum of their released configurations; gradient clipping), scores validation after every epoch, keeps the
epoch of the highest validation Rsum (the first of ties) and scores the test split once with it (not at all with
``score_test=False``, the tuning's runs); ``augment`` (with a fine-tuned backbone) applies the originals' training
transform (:func:`osdpm_lib.cache.resize_rotate_crop`) to the training images;
:func:`run_baselines` runs the systems and seeds of a profile
(:data:`osdpm_lib.baselines.profiles.BASELINE_PROFILES`).  Data without a val split: ``val_fraction`` carves one
from train per run seed (:func:`prepare`), and ``retrain_full`` retrains each run on train+val for its selected
epochs (:func:`train_full`), as :mod:`osdpm_lib.train` does.  A system with an unlabeled stage
(``System.unlabeled``: ``LW-MCR(u)``) first trains its image encoder contrastively on unlabeled images
(:func:`_unlabeled_stage`: the first training images of the pretraining corpus, :func:`unlabeled_images`).

Device and dtype: ``BaselineConfig.device`` (``auto``: CUDA when available) holds the backbone, the model, the
training batches and the scoring; ``precision`` (``auto``: bf16 autocast on CUDA, fp32 on the CPU) is the autocast
of the forward passes (the loss is taken in fp32, the GRU runs in fp32).  On the CPU every operation is what it was
before these fields existed: the same numbers.

With a frozen backbone (``finetune_backbone=False``) the ResNet features of every split are computed once per seed
and shared by all systems (kept on the CPU; each batch moves to the device): ``(low, high)``, or every stage when a
system of the profile reads them all (AMFMN, GaLR; the others then get views of the last two, the same numbers).
A run folder (:func:`run_folder`) holds ``config.json``, ``metrics.csv`` (per epoch), ``test_contrib.npz`` (each
test image's contributions to the recalls, for :func:`versus_clip`) and ``result.json`` (and ``full/`` for the
retrain on train+val; ``teacher/`` for a distilling system's teacher, :func:`_teacher`); a finished run of the same
configuration and data is returned as it is.
:func:`versus_clip` sets each row against the fine-tuned CLIP of notebook 05 with a paired bootstrap CI.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import checkpoints, metrics
from ..cache import image_cache, resize_rotate_crop
from ..data import load as load_annotations, merge_val, with_val_split
from ..pretrain import CORPUS, CORPUS_DIR
from ..stats import paired_bootstrap, per_image_contributions
from ..train import autocast_dtype, batch_pairs, data_key, epoch_size, load_bundle, seed_everything
from . import PROFILE, SYSTEMS, common
from .encoders import IMAGENET_MEAN, IMAGENET_STD, GridBackbone, Vocab, _low_high
from .lwmcr import pretrain_unlabeled
from .profiles import BaselineConfig, baseline_config, baseline_profile
from .scoring import GiB, rerank, rerank_metrics, same_image, score_matrix

SPLITS = ("train", "val", "test")
FULL_DIR = "full"     # the final retrain on train+val, inside the selected run's folder
TEACHER_DIR = "teacher"   # a distilling system's teacher, trained first inside the student's run folder
CONTRIB_FILE = "test_contrib.npz"   # per-image contributions of the test scoring (plain; rerank for GaLR)
NO_RERANK = " (no re-ranking)"   # the row of a re-ranking system's plain scores
CLIP_ROW = "clip"     # the fine-tuned CLIP row of the ablation (osdpm_lib.ablation.ROWS): <runs>/clip_s<seed>


@dataclass
class Data:
    vocab: Vocab
    bundle: object          # osdpm_lib.train.Bundle (train/val/test SplitTensors, normalizer)
    key: str


def prepare(data_dir, image_size: int = 64, min_count: int = 1, cache_dir=None, val_fraction: float = 0.0,
            seed: int = 0, full: bool = False) -> Data:
    """The splits of the data set at ``data_dir`` with a vocabulary of its training captions.  ``val_fraction``:
    data without a val split: that share of train becomes val, drawn with ``seed`` (the run seed), by the helper
    :func:`osdpm_lib.train.run_annotations` uses (:func:`osdpm_lib.data.with_val_split`); ``full``: val merged back
    into train (the final retrain on train+val; the vocabulary then has the val captions' words too)."""
    ann = with_val_split(load_annotations(data_dir), val_fraction, seed)
    if full:
        ann = merge_val(ann)
    vocab = Vocab([c for r in ann.split("train") for c in r.captions], min_count=min_count)
    pre = {"image_size": image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    bundle = load_bundle(data_dir, vocab, pre, with_priors=False, ann=ann, cache_dir=cache_dir, need_val=not full)
    return Data(vocab, bundle, data_key([ann.split(s) for s in ("train", "val", "test")], Path(data_dir) / "images"))


def build_backbone(cfg: BaselineConfig) -> GridBackbone:
    torch.manual_seed(cfg.seed)
    return GridBackbone(cfg.arch, cfg.image_size, cfg.weights)


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None)


@torch.no_grad()
def extract(backbone: GridBackbone, images_u8: torch.Tensor, normalizer, batch: int = 256,
            amp: torch.dtype | None = None, all_stages: bool = False):
    """``(low, high)`` float32 feature maps of all images (backbone in eval mode, on its device, under ``amp``
    autocast), kept on the CPU: a training batch is moved to the device when it is used.  ``all_stages``: every
    stage's map (``layer1`` to the grid stage; the last two are ``low, high``)."""
    backbone.eval()
    device = next(backbone.parameters()).device
    parts = []
    for i in range(0, len(images_u8), batch):
        with _autocast(device, amp):
            maps = backbone(normalizer(images_u8[i:i + batch].to(device)), all_stages=all_stages)
        parts.append([m.float().cpu() for m in maps])
    return tuple(torch.cat(p) for p in zip(*parts))


def build_system(cfg: BaselineConfig, backbone: GridBackbone, vocab_size: int):
    """The system's model; one that reads every stage (``System.all_stages``: AMFMN, GaLR) also gets their channels
    and grids and a copy of the ResNet stage after the grid stage (``GridBackbone.next_stage``: its own ``layer4``
    at 64 px, trained with it)."""
    system = SYSTEMS[cfg.system]
    stages = {}
    if system.all_stages:
        stages = {"stage_channels": backbone.stage_channels, "stage_grids": backbone.stage_grids,
                  "next_stage": copy.deepcopy(backbone.next_stage)}
    torch.manual_seed(cfg.seed + 1)
    return system.factory(channels=backbone.channels, low_channels=backbone.low_channels,
                          grid=backbone.grid, low_grid=backbone.low_grid, vocab_size=vocab_size,
                          dim=cfg.dim, word_dim=cfg.word_dim, **stages)


def _trim(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, :max(1, int((tokens != 0).sum(1).max()))]


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode(model, visual, tokens: torch.Tensor, n_images: int, batch: int = 256):
    """All images and captions of a split as the system's representations (tuples of tensors, on the model's
    device; ``visual(index)`` gives the images' features there)."""
    model.eval()
    img = [model.encode_image(*visual(slice(i, i + batch))) for i in range(0, n_images, batch)]
    return tuple(torch.cat(p) for p in zip(*img)), model.encode_text(_trim(tokens).to(_device_of(model)))


def evaluate(model, visual, split, cfg: BaselineConfig, with_rerank: bool = False, contributions: bool = False):
    """The book's metrics of one split (and the score matrix).  Captions with the same tokens are encoded and
    scored once (their columns are equal: on the embedded benchmark 2,051 distinct test captions of 5,000).
    Encoding and scoring run on the model's device, under ``cfg.precision``'s autocast there.  ``contributions``:
    also each image's per-image contributions (:func:`osdpm_lib.stats.per_image_contributions`, under
    ``cfg.ties``) as ``contrib_plain`` (and ``contrib_rerank``: image->text columns from the image-side re-ranked
    matrix, text->image ones from the caption-side one, as :func:`rerank_metrics` reads them)."""
    unique, inverse = torch.unique(split.tokens, dim=0, return_inverse=True)
    device = _device_of(model)
    with _autocast(device, _amp(cfg, device)):
        img, txt = encode(model, visual, unique, len(split.records), cfg.eval_batch)
        sims = score_matrix(model, img, txt, int(cfg.memory_gib * GiB))[:, inverse.numpy()]
    cap_img = split.caption_image.numpy()
    out = {"plain": metrics.retrieval_metrics(sims, cap_img, cfg.ties)}
    if contributions:
        out["contrib_plain"] = per_image_contributions(sims, cap_img, cfg.ties)
    if with_rerank:     # True: GaLR's re-ranking (scoring.rerank); a function: the system's own (MTFN's)
        reranked = (with_rerank if callable(with_rerank) else rerank)(sims)
        out["rerank"] = rerank_metrics(sims, cap_img, cfg.ties, reranked=reranked)
        if contributions:
            a, b = (per_image_contributions(m, cap_img, cfg.ties) for m in reranked)
            out["contrib_rerank"] = np.concatenate([a[:, :3], b[:, 3:]], axis=1)
    return out, sims


def _amp(cfg: BaselineConfig, device: torch.device) -> torch.dtype | None:
    return autocast_dtype(cfg.precision, device)


def train_system(cfg: BaselineConfig, data: Data, run_dir, features: dict | None = None, reuse: bool = True,
                 score_test: bool = True, unlabeled: torch.Tensor | None = None) -> dict:
    """Train one system for one seed; returns ``{"test": metrics, "best_epoch", "best_val_rsum", ...}``
    (``test_plain`` too when the system re-ranks).  ``features``: precomputed ``{split: (low, high)}`` of a frozen
    backbone (:func:`extract`) to share between systems.  ``score_test=False`` (tuning on validation,
    :mod:`osdpm_lib.tuning`): the test split is not encoded or scored and the result has no ``test``; it is part of
    the run's identity, so that such a run is never reused as a scored one.  ``unlabeled``: a system with an
    unlabeled stage (``LW-MCR(u)``) reads these uint8 images ``[N, 3, S, S]`` (at most ``cfg.unlabeled_images``)
    in place of the pretraining corpus (:func:`_unlabeled_stage`); the result then has ``unlabeled``."""
    return _run(cfg, data, run_dir, features, reuse, select=True, score_test=score_test, unlabeled=unlabeled)


def train_full(cfg: BaselineConfig, data: Data, run_dir, epochs: int, features: dict | None = None,
               reuse: bool = True, unlabeled: torch.Tensor | None = None) -> dict:
    """Retrain ``cfg`` on train+val (``data``: :func:`prepare` with ``full=True``) for ``epochs`` (the epoch
    selected on validation) into ``run_dir/full/``: no selection (the weights after the last epoch), the test
    split scored once.  What papers that train on every non-test image report; the selected run stays as it is."""
    return _run(dataclasses.replace(cfg, epochs=epochs), data, Path(run_dir) / FULL_DIR, features, reuse,
                select=False, unlabeled=unlabeled)


def _run(cfg: BaselineConfig, data: Data, run_dir, features: dict | None, reuse: bool, select: bool,
         keep: dict | None = None, score_test: bool = True, unlabeled: torch.Tensor | None = None) -> dict:
    """One run; ``keep``: filled with the trained ``model`` and the training split's ``visual`` (a teacher's);
    ``score_test=False``: no test scoring (:func:`train_system`); ``unlabeled``: the images of the unlabeled
    stage, if the system has one (:func:`_unlabeled_stage`)."""
    run_dir = Path(run_dir)
    identity = {"config_key": cfg.key(), "data_key": data.key} | ({} if score_test else {"score_test": False})
    done = run_dir / "result.json"
    if reuse and done.exists():
        saved = json.loads(done.read_text())
        if {k: saved.get(k) for k in identity} == identity and saved.get("score_test", True) == score_test:
            return saved
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg) | identity, indent=2))
    device, amp = cfg.resolve_device()
    seed_everything(cfg.seed)
    b = data.bundle
    backbone = build_backbone(cfg).to(device)
    if features is None:
        features = frozen_features(cfg, data, {}, backbone, splits=SPLITS if score_test else SPLITS[:2])
    model = build_system(cfg, backbone, len(data.vocab)).to(device)
    all_stages = SYSTEMS[cfg.system].all_stages
    teacher = _teacher(cfg, data, run_dir, features, select, score_test) if SYSTEMS[cfg.system].teacher else None
    if teacher is not None:
        model.teacher_scores = teacher["scores"]
    pretrained = (_unlabeled_stage(cfg, model, backbone, b.normalizer, unlabeled)
                  if SYSTEMS[cfg.system].unlabeled else None)
    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    if cfg.finetune_backbone:
        groups.append({"params": list(backbone.parameters()), "lr": cfg.backbone_lr})
    optim = torch.optim.Adam(groups)

    def visual_of(split: str, augment_with: torch.Generator | None = None):
        """``idx -> features`` of a split's images: the backbone on their pixels (fine-tuned; ``augment_with``: the
        originals' training transform first, drawn from that generator) or the frozen backbone's cached maps."""
        if cfg.finetune_backbone:
            images = getattr(b, split).images
            if augment_with is not None:
                degrees = SYSTEMS[cfg.system].rotation
                return lambda idx: backbone(b.normalizer(resize_rotate_crop(images[idx].to(device), augment_with,
                                                                            degrees)), all_stages=all_stages)
            return lambda idx: backbone(b.normalizer(images[idx].to(device)), all_stages=all_stages)
        maps = features[split]
        return lambda idx: tuple(m[idx].to(device) for m in maps)

    train = b.train
    index = train.caption_index()
    model.see_captions(train.tokens, index, data.vocab.words)     # a hook; nothing for most
    gen = torch.Generator().manual_seed(cfg.seed)
    n_pairs = epoch_size(cfg, train)         # images ("image": a random caption each) or captions ("caption")
    bs = min(cfg.batch_size, n_pairs)
    n_steps = n_pairs // bs
    history, best, best_state = [], {"rsum": -1.0, "epoch": -1}, None
    t_train = 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        backbone.train(cfg.finetune_backbone)
        perm = torch.randperm(n_pairs, generator=gen)
        t0, total = time.perf_counter(), 0.0
        visual = visual_of("train", gen if cfg.augments else None)
        for step in range(n_steps):
            idx, cap = batch_pairs(cfg, perm[step * bs:(step + 1) * bs], index, train.caption_image, gen)
            with _autocast(device, amp):
                img = model.encode_image(*visual(idx))
                txt = model.encode_text(_trim(train.tokens[cap]).to(device))
                scores = model.score(img, txt)
            hardest = cfg.warmup_epochs is not None and epoch > cfg.warmup_epochs
            positives = same_image(idx)        # None unless an image occurs twice (epoch_unit "caption")
            loss = model.loss(scores.float(), max_violation=hardest, **model.loss_inputs(idx, cap),
                              **({"positives": positives} if positives is not None else {}))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            optim.step()
            total += float(loss.detach())
        t_train += time.perf_counter() - t0
        row = {"epoch": epoch, "loss": total / max(1, n_steps), "train_s": round(t_train, 2)}
        if select:
            backbone.eval()
            val, _ = evaluate(model, visual_of("val"), b.val, cfg)
            row |= {f"val_{k}": v for k, v in val["plain"].items()}
            if val["plain"]["rsum"] > best["rsum"]:      # strictly greater: the first of tied epochs is kept
                best = {"rsum": val["plain"]["rsum"], "epoch": epoch}
                best_state = copy.deepcopy((model.state_dict(), backbone.state_dict()))
        history.append(row)
        pd.DataFrame(history).to_csv(run_dir / "metrics.csv", index=False)
        if select and cfg.patience is not None and epoch - best["epoch"] >= cfg.patience:
            break                              # early stopping: no better validation Rsum for `patience` epochs
    if select:
        model.load_state_dict(best_state[0])
        backbone.load_state_dict(best_state[1])
    backbone.eval()
    re = SYSTEMS[cfg.system].rerank
    scored = {}
    if score_test:
        test, _ = evaluate(model, visual_of("test"), b.test, cfg, with_rerank=re, contributions=True)  # the only one
        with checkpoints.atomic_path(run_dir / CONTRIB_FILE) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, plain=test["contrib_plain"], **({"rerank": test["contrib_rerank"]} if re else {}))
        scored = {"test": test["rerank"] if re else test["plain"], **({"test_plain": test["plain"]} if re else {})}
    result = {**scored,
              **({"best_epoch": best["epoch"], "best_val_rsum": best["rsum"]} if select else {"epochs": cfg.epochs}),
              **identity, "system": cfg.system, "seed": cfg.seed, "device": device.type, "amp": str(amp),
              "train_s": round(t_train, 2), "epochs_run": len(history), "history": history,
              **({"teacher": teacher["result"]} if teacher is not None else {}),
              **({"unlabeled": pretrained} if pretrained is not None else {})}
    checkpoints.write_text(done, json.dumps(result, indent=2))
    if keep is not None:
        keep.update(model=model, visual=visual_of("train"))
    return result


def _teacher(cfg: BaselineConfig, data: Data, run_dir: Path, features: dict | None, select: bool,
             score_test: bool = True) -> dict:
    """A distilling system's teacher (``System.teacher``), trained first under the same configuration and protocol
    into ``run_dir/teacher/`` (always trained: its weights are not stored); returns ``{"scores": f, "result": {..}}``
    with ``f(images, captions)`` the teacher's ``[B, B]`` score matrix of a training batch (indices of the training
    split: its images' features from its own backbone, the captions' tokens) under no_grad, and the teacher's
    system, selected epoch and test metrics."""
    name = SYSTEMS[cfg.system].teacher
    keep: dict = {}
    res = _run(dataclasses.replace(cfg, system=name), data, run_dir / TEACHER_DIR, features, reuse=False,
               select=select, keep=keep, score_test=score_test)
    model, visual, tokens = keep["model"].eval(), keep["visual"], data.bundle.train.tokens
    device, amp = cfg.resolve_device()

    @torch.no_grad()
    def scores(images, captions):
        with _autocast(device, amp):
            return model.score(model.encode_image(*visual(images)),
                               model.encode_text(_trim(tokens[captions]).to(device))).float()

    summary = {"system": name, **({"test_mr": res["test"]["mr"], "test_rsum": res["test"]["rsum"]}
                                  if "test" in res else {}),
               **({"best_epoch": res["best_epoch"]} if select else {"epochs": res["epochs"]})}
    return {"scores": scores, "result": summary}


def unlabeled_images(n: int, image_size: int, data_dir=None) -> torch.Tensor:
    """The first ``n`` training images (uint8 ``[n, 3, S, S]``, ``S = image_size``) of the pretraining corpus at
    ``data_dir`` (default :data:`osdpm_lib.pretrain.CORPUS_DIR`), its captions ignored: generated first at the size the CLIP and
    ResNet pretraining use (:data:`osdpm_lib.pretrain.CORPUS`, :func:`osdpm_lib.synth.generate_pretrain`; returns
    at once when it is there), decoded through the image cache beside it.  Fewer when its train split is
    smaller.  The corpus's images are in random scene order, so its first ``n`` spread over the scenes."""
    from .. import synth

    data_dir = Path(data_dir or CORPUS_DIR)
    synth.generate_pretrain(data_dir, **CORPUS)
    records = load_annotations(data_dir).split("train")[:n]
    return image_cache([r.filename for r in records], data_dir / "images", image_size, data_dir / ".cache",
                       progress=False)


def _unlabeled_stage(cfg: BaselineConfig, model, backbone: GridBackbone, normalizer,
                     images: torch.Tensor | None = None) -> dict:
    """The unlabeled stage of a system that has one (``System.unlabeled``, ``LW-MCR(u)``): its image encoder
    trained contrastively (:func:`osdpm_lib.baselines.lwmcr.pretrain_unlabeled`: two views per image, the frozen
    ``backbone`` as it is before the supervised epochs, ``cfg``'s batch size, lr, gradient clipping, seed and
    precision) on at most ``cfg.unlabeled_images`` images, for ``cfg.unlabeled_epochs``: ``images`` if given,
    else the pretraining corpus's (:func:`unlabeled_images`).  Returns the record kept in the run's result
    (``source``, ``images``, ``history``, ``seconds``, ...)."""
    if images is None:
        images, source = unlabeled_images(cfg.unlabeled_images, cfg.image_size), str(CORPUS_DIR)
    else:
        images, source = images[:cfg.unlabeled_images], "given"
    device, amp = cfg.resolve_device()
    record = pretrain_unlabeled(model, backbone, images, normalizer, epochs=cfg.unlabeled_epochs,
                                batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, amp=amp,
                                grad_clip=cfg.grad_clip)
    return {"source": source, **record}


def unlabeled_text(cfg: BaselineConfig) -> str:
    """Where a run's unlabeled stage differs from its row's text (which names the defaults of
    ``BaselineConfig.unlabeled_images`` / ``unlabeled_epochs``): empty where it does not."""
    if not SYSTEMS[cfg.system].unlabeled:
        return ""
    defaults = {f.name: f.default for f in dataclasses.fields(BaselineConfig)}
    if (cfg.unlabeled_images, cfg.unlabeled_epochs) == (defaults["unlabeled_images"], defaults["unlabeled_epochs"]):
        return ""
    return (f"; in this run the unlabeled stage read at most {cfg.unlabeled_images:,} images for "
            f"{cfg.unlabeled_epochs} epochs")


def frozen_features(cfg: BaselineConfig, data: Data, cache: dict, backbone: GridBackbone | None = None,
                    keep_all: bool = False, splits=SPLITS) -> dict | None:
    """The frozen backbone's features of ``data``'s non-empty splits for ``cfg`` (None when it fine-tunes):
    ``{split: (low, high)}``, or ``{split: (layer1, .., grid stage)}`` for a system that reads every stage
    (``System.all_stages``).  Computed once per seed, weights, image size, device, precision and data set and kept
    in ``cache`` (entries of another seed are dropped: the systems of a seed share them); ``keep_all``: extract
    every stage even if ``cfg``'s system reads two (a later system of the profile will: one extraction for all;
    ``low, high`` are then views of the last two stages, the same numbers).  ``backbone``: the one
    :func:`build_backbone` made for ``cfg`` already (else it is built here); ``splits``: the splits to encode (the
    tuning's runs: ``("train", "val")``, the test images never pass the backbone)."""
    if cfg.finetune_backbone:
        return None
    device, amp = cfg.resolve_device()
    key = (cfg.seed, cfg.arch, cfg.weights, cfg.image_size, device.type, str(amp), data.key, tuple(splits))
    need_all = SYSTEMS[cfg.system].all_stages
    if key not in cache or ((need_all or keep_all) and not cache[key][0]):
        for other in [k for k in cache if k[0] != cfg.seed]:
            del cache[other]
        bb, b = backbone or build_backbone(cfg).to(device), data.bundle
        every = need_all or keep_all
        cache[key] = (every, {s: extract(bb, getattr(b, s).images, b.normalizer, cfg.eval_batch, amp, every)
                              for s in splits if len(getattr(b, s).records)})
    every, feats = cache[key]
    return feats if need_all or not every else {s: _low_high(f) for s, f in feats.items()}


def loss_text(cfg: BaselineConfig) -> str:
    """The loss schedule of a row where it is not the system's own (the profile's warm-up choice)."""
    own = SYSTEMS[cfg.system].warmup_epochs
    if own != PROFILE and cfg.warmup_epochs == own:
        return ""
    if cfg.warmup_epochs is None or cfg.warmup_epochs >= cfg.epochs:
        return "; the triplet loss summed over all negatives, not only the hardest (chosen on validation)"
    if cfg.warmup_epochs > 0:
        return f"; the first {cfg.warmup_epochs} epochs on the sum over all negatives, then the hardest negative"
    return ""


def protocol_text(cfg: BaselineConfig) -> str:
    """Where a run's training protocol differs from the originals' (every caption of an image a training pair in
    each epoch; resize, random rotation and crop of the training images): empty where it does not."""
    parts = []
    if cfg.epoch_unit == "image":
        parts.append("one random caption per training image per epoch (the book's quick protocol; the originals "
                     "iterate over every caption)")
    if not cfg.augments:
        parts.append("no augmentation of the training images (the originals resize, rotate and crop them)"
                     + ("; the frozen backbone's features are computed once" if not cfg.finetune_backbone else ""))
    return "".join(f"; {p}" for p in parts)


def list_parameter(name: str, value, item: type = str) -> list | None:
    """A comma-separated list parameter of notebook 08 (``systems``, ``seeds``), read as ``--set`` reads a list
    (:func:`osdpm_lib.settings.typed`): ``"0,1"``, ``"[0, 1]"``, a list, or one value as papermill passes it
    (``-p seeds 0`` arrives as the int 0); ``""``/None: None (the profile's)."""
    from .. import settings

    if value is None:
        return None
    return settings.typed(name, value if isinstance(value, (list, tuple)) else str(value), list[item]) or None


def run_baselines(data_dir, runs_dir, profile: str = "default", systems=None, seeds=None, data: Data | None = None,
                  log=print, val_fraction: float = 0.0, retrain_full: bool = False, **overrides) -> pd.DataFrame:
    """Every system x seed of a baseline profile (:data:`osdpm_lib.baselines.profiles.BASELINE_PROFILES`); one row
    per run (``method``, ``seed``, the metric keys, ``best_epoch``, ``val_rsum``, ``seconds``, ``replaced``).
    Re-ranking systems add a row without re-ranking.  ``val_fraction``: data without a val split: that share of
    train is carved out as val for each run seed (:func:`prepare`); ``retrain_full``: each run is also retrained on
    train+val for its selected epochs (:func:`train_full`), in columns ``retrain_<metric>``.  ``data``: the
    prepared data set (then ``val_fraction`` is not applied: it is the data set as given)."""
    p = baseline_profile(profile)
    systems = list(systems or p["systems"])
    seeds = list(p["seeds"] if seeds is None else seeds)
    rows, feats, prepared = [], {}, {}
    keep_all = any(SYSTEMS[s].all_stages for s in systems if s in SYSTEMS)   # one extraction serves every system

    def data_for(cfg: BaselineConfig, full: bool = False) -> Data:
        if data is not None and not full:
            return data
        # the carve is seeded by the run seed; train+val is the same for every seed
        key = (cfg.image_size, cfg.seed if val_fraction and not full else None, full)
        if key not in prepared:
            for other in [k for k in prepared if k[2] == full]:       # one data set of each kind at a time
                del prepared[other]
            prepared[key] = prepare(data_dir, cfg.image_size, val_fraction=val_fraction, seed=cfg.seed, full=full)
        return prepared[key]

    for seed in seeds:
        for name in systems:
            cfg = baseline_config(profile, name, seed, **overrides)
            d = data_for(cfg)
            t0 = time.perf_counter()
            folder = run_folder(runs_dir, profile, name, seed)
            res = train_system(cfg, d, folder, frozen_features(cfg, d, feats, keep_all=keep_all))
            seconds = time.perf_counter() - t0
            base = {"method": name, "seed": seed, "best_epoch": res["best_epoch"], "val_rsum": res["best_val_rsum"],
                    "seconds": round(seconds, 1),
                    "replaced": f"{common(cfg.weights, cfg.finetune_backbone, cfg.arch)}; "
                                f"{SYSTEMS[name].replaced}{loss_text(cfg)}{protocol_text(cfg)}"
                                f"{unlabeled_text(cfg)}"}
            full, full_plain = {}, {}
            if retrain_full:
                f = data_for(cfg, full=True)
                again = train_full(cfg, f, folder, res["best_epoch"],
                                   frozen_features(cfg, f, feats, keep_all=keep_all))
                full = {f"retrain_{k}": again["test"][k] for k in metrics.KEYS}
                full_plain = {f"retrain_{k}": again.get("test_plain", again["test"])[k] for k in metrics.KEYS}
            rows.append(base | {k: res["test"][k] for k in metrics.KEYS} | full)
            if "test_plain" in res:
                rows.append(base | {"method": f"{name}{NO_RERANK}"}
                            | {k: res["test_plain"][k] for k in metrics.KEYS} | full_plain)
            log(f"{name} seed {seed}: test mR {res['test']['mr']:.2f}, Rsum {res['test']['rsum']:.2f} "
                f"(epoch {res['best_epoch']} by validation; {seconds:.1f} s)"
                + (f"; retrained on train+val: Rsum {full['retrain_rsum']:.2f}" if full else ""))
    return pd.DataFrame(rows)


def test_contributions(runs_dir, profile: str, method: str, seed: int) -> np.ndarray | None:
    """The per-image test contributions of one row of :func:`run_baselines` (``"<system> (no re-ranking)"``: the
    plain ones of a re-ranking system), or None when its run has none (a run made before they were stored)."""
    system = method.removesuffix(NO_RERANK)
    path = run_folder(runs_dir, profile, system, seed) / CONTRIB_FILE
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["rerank" if "rerank" in z and method == system else "plain"]


def clip_contributions(clip_dir, ties: str = "expected") -> dict[int, np.ndarray]:
    """``{seed: per-image test contributions}`` of the fine-tuned CLIP runs (the ablation's ``clip`` row,
    ``<clip_dir>/clip_s<seed>/test_encoded.npz``, :func:`osdpm_lib.ablation.contributions`) under ``ties``;
    empty when there are none."""
    from .. import ablation
    from ..profiles import run_name

    clip_dir = Path(clip_dir)
    seeds = sorted(int(p.name[len(CLIP_ROW) + 2:]) for p in clip_dir.glob(f"{CLIP_ROW}_s*")
                   if p.name[len(CLIP_ROW) + 2:].isdigit() and (p / "test_encoded.npz").is_file()
                   and p.name == run_name(CLIP_ROW, int(p.name[len(CLIP_ROW) + 2:])))
    if not seeds:
        return {}
    runs = pd.DataFrame({"variant": [CLIP_ROW] * len(seeds), "seed": seeds})
    return ablation.contributions(runs, clip_dir, ties=ties)[CLIP_ROW]


VS_CLIP = ["method", "vs_clip_rsum", "vs_clip_ci_low", "vs_clip_ci_high", "vs_clip_seeds", "vs_clip"]


def versus_clip(runs: pd.DataFrame, runs_dir, profile: str, clip_dir=None, ties: str = "expected",
                n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Each row of :func:`run_baselines` against the fine-tuned CLIP: the paired bootstrap
    (:func:`osdpm_lib.stats.paired_bootstrap`) of ``Rsum(system) - Rsum(CLIP)`` over the test images, nested over
    the seeds the two share (paired by seed label, as the book's comparisons are), from the runs' per-image
    contributions on the same test split.  One row per method (columns :data:`VS_CLIP`): the observed mean
    difference, the CI at ``level``, the seeds used and ``vs_clip``, the verdict (a finding when the CI excludes 0)
    or why there is none: no CLIP runs in ``clip_dir`` (default ``runs_dir``, the chain's runs: notebook 05 trains
    them), no shared seed, a run without per-image contributions, or another test split."""
    clip = clip_contributions(Path(clip_dir or runs_dir), ties)
    rows = []
    for method, group in runs.groupby("method", sort=False):
        row = dict.fromkeys(VS_CLIP[1:], np.nan) | {"method": method, "vs_clip_seeds": ""}
        seeds = sorted(int(s) for s in group["seed"])
        shared = [s for s in seeds if s in clip]
        mine = {s: test_contributions(runs_dir, profile, method, s) for s in shared}
        if not clip:
            row["vs_clip"] = (f"no fine-tuned CLIP runs ({CLIP_ROW}_s<seed>/test_encoded.npz in "
                              f"{Path(clip_dir or runs_dir)}; notebook 05 trains them)")
        elif not shared:
            row["vs_clip"] = f"no CLIP run with the seeds {seeds} (CLIP seeds: {sorted(clip)})"
        elif any(v is None for v in mine.values()):
            row["vs_clip"] = "no per-image test contributions in its run (made before they were stored: rerun it)"
        else:
            try:
                r = paired_bootstrap([mine[s] for s in shared], [clip[s] for s in shared], n_boot=n_boot,
                                     seed=seed, level=level, names=(method, "fine-tuned CLIP"))
            except ValueError as e:          # e.g. not the same test images
                row["vs_clip"] = f"not comparable: {e}"
            else:
                row |= {"vs_clip_rsum": r.diff, "vs_clip_ci_low": r.ci_low, "vs_clip_ci_high": r.ci_high,
                        "vs_clip_seeds": ", ".join(map(str, shared)),
                        "vs_clip": ("finding: " if r.excludes_zero else "") + r.verdict}
        rows.append(row)
    return pd.DataFrame(rows, columns=VS_CLIP)


def run_folder(runs_dir, profile: str, system: str, seed: int) -> Path:
    """``<runs_dir>/baselines/<profile>/<system>_s<seed>``: the runs of two baseline profiles of a chain (e.g.
    ``default`` and ``full``) live side by side."""
    return Path(runs_dir) / "baselines" / profile / f"{_slug(system)}_s{seed}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
