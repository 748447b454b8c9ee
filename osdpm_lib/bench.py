"""Training / evaluation throughput and memory of the CLIP baseline against OSDPM, side by side.

``python -m osdpm_lib.bench --mode {ci,cpu,gpu} --out results/bench.md``

* **training**: pairs/s of variants ``clip`` and ``osdpm`` on the same backbone and batch, on synthetic
  data (random uint8 images and token ids kept on the device, random category priors with some empty
  rows), after warm-up steps.  The step is ``train.Stepper``, the very object ``train.train`` calls
  (augment, normalise, autocast forward, ``OSDPMLoss``, fused AdamW, LR schedule, logit-scale clamp; the
  losses stay on the device, so no host synchronisation per step).  GPU timings bracket the steps with
  ``torch.cuda.synchronize``.  On CPU the two variants are timed in alternating rounds (ABBA) and each
  gets the median round, so that a busy machine moves both figures alike (the ratio by process CPU
  time is given too); on GPU each variant is measured alone (one model in memory).
* **evaluation**: ``evaluate.encode_images`` of N images and ``encode_texts`` of 5N captions, and
  ``metrics.retrieval_metrics`` on a random 1,093 x 5,465 score matrix (the RSICD test split).
* **memory**: GPU — ``torch.cuda.max_memory_allocated`` over warm-up and timed steps (weights,
  gradients, optimiser state and activations); CPU — the growth of the resident set during two
  training steps (``malloc_trim`` + ``/proc/self/clear_refs`` reset the high-water mark ``VmHWM``,
  no tracemalloc), with the process's ``ru_maxrss`` beside it.
* **gpu** only: an *RSICD-scale* estimate per configuration — 10,000 pairs x 20 epochs / pairs/s plus
  21 evaluations (20 validation + 1 test) and 3 test-image encodings (``train``'s embedding stages) —
  against the goal of 60 s, and a real end-to-end ``train.train`` on an in-memory synthetic bundle
  (``e2e_train``; 10,000 train images at 224 px, no files read; images kept on the GPU, and, time
  allowing, a short run with them on the host as ``train.load_bundle`` would leave them).

Modes: ``ci`` (``osdpm-tiny-vit``, batch 32, a few steps, < 60 s on 2 cores), ``cpu`` (the embedded
book's configuration: ``osdpm-tiny-vit``, 64 px, batch 64), ``gpu`` (``ViT-B-32`` at 224 px, random
init, bf16 autocast, batches 256 and 512, eager vs ``torch.compile``, channels_last).  Phases run in
priority order under ``--time-budget``; one that would not fit is listed as skipped.  The section of
the mode in ``--out`` is (re)written after every phase, so a killed run leaves what it measured;
sections of other modes in the same file are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import lexicon
from .cache import Normalizer, SplitTensors
from .data import ImageRecord
from .evaluate import Encoded, encode_images, encode_texts
from .metrics import retrieval_metrics
from .train import Bundle, Stepper, TrainConfig, build_model, resolve_device

VARIANTS = ("clip", "osdpm")
GOAL_RATIO = 0.9            # osdpm pairs/s >= 0.9 x clip pairs/s
GOAL_METRICS_S = 0.2        # retrieval_metrics on 1,093 x 5,465
GOAL_RUN_S = 60.0           # RSICD-scale run, end to end (GPU)
RSICD = {"train_pairs": 10_000, "epochs": 20, "val_images": 1_094, "test_images": 1_093, "captions": 5}
METRICS_SHAPE = (1_093, 5)  # images, captions per image


@dataclass
class Setting:
    """One training configuration measured for both variants."""
    batch: int
    compile: bool = False
    channels_last: bool = False

    @property
    def label(self) -> str:
        parts = ["compile" if self.compile else "eager"]
        if self.channels_last:
            parts.append("channels_last")
        return f"{' + '.join(parts)}, batch {self.batch}"


_E2E_RSICD = {"n_train": RSICD["train_pairs"], "n_val": RSICD["val_images"], "n_test": RSICD["test_images"]}

# ``plan``: the phases in priority order (a phase that would not fit ``--time-budget`` is skipped):
# ``"eval"``, a ``Setting`` (training, both variants), or ``("e2e", label, spec)`` (end-to-end train.train;
# ``batch="auto"``: the fastest osdpm setting measured so far, with its compile flag).
MODES: dict[str, dict] = {
    "ci": {
        "model": "osdpm-tiny-vit", "device": "cpu", "precision": "fp32",
        "warmup": 1, "steps": 1, "rounds": 3, "eval_images": 64, "eval_batch": 256, "estimate": False,
        "plan": ["eval", Setting(32),
                 ("e2e", "images on device", {"n_train": 64, "n_val": 16, "n_test": 16, "epochs": 1,
                                              "batch": 32, "on_device": True})],
    },
    "cpu": {   # the embedded book: osdpm-tiny-vit at 64 px, batch 64, test split of 200 images (10% of 2,000)
        "model": "osdpm-tiny-vit", "device": "cpu", "precision": "fp32",
        "warmup": 2, "steps": 2, "rounds": 5, "eval_images": 200, "eval_batch": 256, "estimate": False,
        "plan": ["eval", Setting(64)],
    },
    "gpu": {
        "model": "ViT-B-32", "device": "cuda", "precision": "bf16",
        "warmup": 5, "steps": 20, "rounds": 1, "eval_images": RSICD["test_images"], "eval_batch": 256,
        "estimate": True,
        # plain open_clip fine-tuning on one H100 (bf16, random-init ViT-B/32, images on the GPU)
        "reference": {"eager, batch 256": 2970, "eager, batch 512": 3940, "compile, batch 256": 3950,
                      "compile, batch 512": 5300, "images_per_s": 19300},
        "plan": ["eval", Setting(256), Setting(512), Setting(512, compile=True),
                 ("e2e", "images on device", _E2E_RSICD | {"epochs": RSICD["epochs"], "batch": "auto",
                                                          "on_device": True}),
                 Setting(256, channels_last=True),
                 ("e2e", "images on host", _E2E_RSICD | {"epochs": 2, "batch": "auto", "compile": False,
                                                        "on_device": False}),
                 Setting(256, compile=True)],
    },
}


# --------------------------------------------------------------------------------------------- utils
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_priors(n: int, gen: torch.Generator) -> torch.Tensor:
    """Synthetic caption-noun priors: sparse rows, a quarter of the images naming no category."""
    prior = torch.rand(n, len(lexicon.CATEGORY_NAMES), generator=gen)
    prior[prior < 0.8] = 0.0
    prior[torch.rand(n, generator=gen) < 0.25] = 0.0
    return prior


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _RSS:
    """Resident-set measurements of this process (Linux ``/proc``; ``ru_maxrss`` elsewhere)."""

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    @classmethod
    def reset_peak(cls) -> bool:
        """Return freed heap to the OS and reset the high-water mark; False if not supported."""
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return cls._status("VmHWM") is not None
        except OSError:
            return False

    @classmethod
    def current(cls) -> int | None:
        return cls._status("VmRSS")

    @classmethod
    def peak(cls) -> int:
        hwm = cls._status("VmHWM")
        return hwm if hwm is not None else cls.maxrss()

    @staticmethod
    def maxrss() -> int:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r) if sys.platform == "darwin" else int(r) * 1024


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    with contextlib.suppress(ImportError):
        import open_clip
        info["open_clip"] = open_clip.__version__
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg"] = "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor})"
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = "-"
    return info


# ---------------------------------------------------------------------------------------- training
class _Trainer:
    """A model, optimiser and synthetic on-device data; ``step()`` is one ``train.train`` step."""

    def __init__(self, model_name: str, variant: str, setting: Setting, device: torch.device, amp,
                 seed: int = 0, lambda_osfcm: float = 1.0, pool: int = 2):
        cfg = TrainConfig(variant=variant, model=model_name, batch_size=setting.batch, seed=seed,
                          compile=setting.compile, channels_last=setting.channels_last, progress=False)
        model, _, pre = build_model(cfg)
        model.to(device)
        if setting.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model, self.device, self.amp, self.setting = model, device, amp, setting
        self.normalizer = Normalizer(pre["mean"], pre["std"]).to(device)
        cfg.lambda_osfcm = lambda_osfcm
        self.stepper = Stepper(model, cfg, self.normalizer, device, amp, total_steps=10**6)
        self.gen = torch.Generator().manual_seed(seed)
        n, s = pool * setting.batch, pre["image_size"]
        clip = model.clip
        g_dev = torch.Generator(device=device).manual_seed(seed)
        self.images = torch.empty((n, 3, s, s), dtype=torch.uint8, device=device).random_(0, 256, generator=g_dev)
        self.tokens = torch.randint(1, clip.vocab_size, (n, clip.context_length), generator=self.gen).to(device)
        self.prior = _random_priors(n, self.gen).to(device) if variant == "osdpm" else None
        self.n = n

    def step(self) -> dict:
        idx = torch.randperm(self.n, generator=self.gen)[:self.setting.batch].to(self.device)
        return self.stepper(self.images[idx], self.tokens[idx], self.prior[idx] if self.prior is not None else None,
                            self.gen)

    def run(self, steps: int) -> float:
        """Wall seconds of ``steps`` steps (``self.last_cpu_s``: the process's CPU seconds)."""
        _sync(self.device)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        self.last_cpu_s = time.process_time() - c0
        return time.perf_counter() - t0


def _dynamo_counts() -> tuple[int, int]:
    try:
        from torch._dynamo.utils import counters
        return sum(counters["graph_break"].values()), int(counters["stats"].get("unique_graphs", 0))
    except Exception:  # noqa: BLE001 - diagnostics only
        return 0, 0


def measure_training(model_name: str, setting: Setting, device: torch.device, amp, warmup: int, steps: int,
                     rounds: int, interleave: bool | None = None, variants=VARIANTS) -> dict[str, dict]:
    """``{variant: {"pairs_per_s", "step_ms", "warmup_s", "peak_mem_mib", ...}}`` for one setting."""
    interleave = device.type == "cpu" if interleave is None else interleave
    res: dict[str, dict] = {}
    if interleave:
        trainers = {}
        for v in variants:
            t0 = time.perf_counter()
            trainers[v] = _Trainer(model_name, v, setting, device, amp)
            build_s = time.perf_counter() - t0
            res[v] = {"build_s": build_s, "warmup_s": trainers[v].run(warmup), "rounds": []}
        order = list(variants)
        for v in variants:
            res[v]["cpu_rounds"] = []
        for r in range(rounds):
            for v in (order if r % 2 == 0 else order[::-1]):
                res[v]["rounds"].append(trainers[v].run(steps))
                res[v]["cpu_rounds"].append(trainers[v].last_cpu_s)
        for v, tr in trainers.items():
            ok = _RSS.reset_peak()
            before = _RSS.current()
            tr.run(2)
            if ok and before is not None:
                res[v]["peak_mem_mib"] = (_RSS.peak() - before) / 2**20
                res[v]["mem_kind"] = "RSS growth in 2 steps"
            else:
                res[v]["peak_mem_mib"] = _RSS.maxrss() / 2**20
                res[v]["mem_kind"] = "process ru_maxrss"
        del trainers
    else:
        for v in variants:
            _free(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if setting.compile:
                torch._dynamo.reset()   # no stale cache entries of earlier models (recompile limit)
            gb0, ug0 = _dynamo_counts()
            t0 = time.perf_counter()
            tr = _Trainer(model_name, v, setting, device, amp)
            build_s = time.perf_counter() - t0
            res[v] = {"build_s": build_s, "warmup_s": tr.run(warmup)}
            res[v]["rounds"] = [tr.run(steps) for _ in range(rounds)]
            if device.type == "cuda":
                res[v]["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                res[v]["mem_kind"] = "max_memory_allocated"
            else:
                res[v]["peak_mem_mib"] = _RSS.maxrss() / 2**20
                res[v]["mem_kind"] = "process ru_maxrss"
            if setting.compile:
                gb1, ug1 = _dynamo_counts()
                res[v]["graph_breaks"], res[v]["graphs"] = gb1 - gb0, ug1 - ug0
            del tr
            _free(device)
    for v in variants:
        t = statistics.median(res[v]["rounds"])
        res[v]["step_ms"] = 1000.0 * t / steps
        res[v]["pairs_per_s"] = setting.batch * steps / t
        if res[v].get("cpu_rounds"):   # CPU seconds: insensitive to other processes taking turns on the cores
            res[v]["cpu_pairs_per_s"] = setting.batch * steps / statistics.median(res[v]["cpu_rounds"])
    return res


# -------------------------------------------------------------------------------------- evaluation
def measure_metrics(n_images: int = METRICS_SHAPE[0], captions_per_image: int = METRICS_SHAPE[1],
                    repeats: int = 3) -> float:
    """Median seconds of ``retrieval_metrics`` on a random ``n_images x n_images*cpi`` matrix."""
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((n_images, n_images * captions_per_image), dtype=np.float32)
    cap_img = np.repeat(np.arange(n_images), captions_per_image)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        retrieval_metrics(sims, cap_img)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_eval(model_name: str, variant: str, n_images: int, device: torch.device, amp,
                 batch_size: int = 256, captions_per_image: int = 5) -> dict:
    """Seconds to encode ``n_images`` images (on the device, as uint8) and ``5 n`` captions (on the
    host, as ``train`` keeps them), and to score them (``Encoded.metrics``: similarity + metrics)."""
    model, _, pre = build_model(TrainConfig(variant=variant, model=model_name, progress=False))
    model.to(device).eval()
    norm = Normalizer(pre["mean"], pre["std"]).to(device)
    g = torch.Generator().manual_seed(0)
    s = pre["image_size"]
    images = torch.empty((n_images, 3, s, s), dtype=torch.uint8, device=device).random_(
        0, 256, generator=torch.Generator(device=device).manual_seed(0))
    tokens = torch.randint(1, model.clip.vocab_size, (n_images * captions_per_image, model.clip.context_length),
                           generator=g)
    cap_img = np.repeat(np.arange(n_images), captions_per_image)
    encode_images(model, images[:batch_size], norm, batch_size, device, amp)        # warm-up
    encode_texts(model, tokens[:4 * batch_size], 4 * batch_size, device, amp)
    _sync(device)
    t0 = time.perf_counter()
    im = encode_images(model, images, norm, batch_size, device, amp)
    _sync(device)
    t1 = time.perf_counter()
    tx = encode_texts(model, tokens, 4 * batch_size, device, amp)
    _sync(device)
    t2 = time.perf_counter()
    Encoded(im, tx, cap_img).metrics()
    t3 = time.perf_counter()
    del model, images
    _free(device)
    return {"n_images": n_images, "n_captions": len(tokens), "images_s": t1 - t0, "texts_s": t2 - t1,
            "score_s": t3 - t2, "total_s": t3 - t0, "images_per_s": n_images / (t1 - t0)}


# ------------------------------------------------------------------------------------ end to end
def synthetic_bundle(n_train: int, n_val: int, n_test: int, image_size: int, context_length: int,
                     vocab_size: int, captions_per_image: int = 5, device="cpu", seed: int = 0) -> Bundle:
    """An in-memory ``train.Bundle`` of random images (uint8, on ``device``; generated on the GPU when
    there is one), token ids and priors (on the host, as ``train.load_bundle`` leaves them)."""
    g = torch.Generator().manual_seed(seed)
    gen_dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    g_img = torch.Generator(device=gen_dev).manual_seed(seed)

    def split(name: str, n: int) -> SplitTensors:
        caps = tuple(f"synthetic caption {j}" for j in range(captions_per_image))
        records = [ImageRecord(f"{name}_{i:05d}.jpg", name, caps) for i in range(n)]
        images = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8, device=gen_dev)
        images = images.random_(0, 256, generator=g_img).to(device)
        tokens = torch.randint(1, vocab_size, (n * captions_per_image, context_length), generator=g)
        cap_img = torch.arange(n).repeat_interleave(captions_per_image)
        return SplitTensors(records, images, tokens, cap_img, [c for r in records for c in r.captions])

    prior = _random_priors(n_train, g)
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return Bundle(split("train", n_train), split("val", n_val), split("test", n_test),
                  Normalizer(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), prior)


def _model_dims(model_name: str) -> tuple[int, int, int]:
    """Image size, context length and vocabulary size of an open_clip model config."""
    import open_clip

    c = open_clip.get_model_config(model_name)
    if c is None:   # not a registered config: build it once
        from .models import build_clip, preprocess_config
        m = build_clip(model_name)
        return preprocess_config(m)["image_size"], m.context_length, m.vocab_size
    size = c["vision_cfg"].get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    return int(size), int(c["text_cfg"].get("context_length", 77)), int(c["text_cfg"].get("vocab_size", 49408))


def e2e_train(model_name: str, n_train: int, n_val: int, n_test: int, epochs: int, batch: int,
              device: str = "auto", compile: bool = False, on_device: bool = True, variant: str = "osdpm",
              run_dir=None) -> dict:
    """Wall time of a real ``train.train`` on a synthetic bundle (images on the device or the host)."""
    from .train import resolve_device, train

    cfg = TrainConfig(variant=variant, model=model_name, batch_size=batch, epochs=epochs, compile=compile,
                      device=device, progress=False)
    dev, _ = resolve_device(cfg)
    size, ctx, vocab = _model_dims(model_name)
    bundle = synthetic_bundle(n_train, n_val, n_test, size, ctx, vocab, device=dev if on_device else "cpu")
    if compile:
        torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as tmp:
        rd = Path(run_dir or tmp) / "e2e"
        _sync(dev)
        t0 = time.perf_counter()
        result = train(cfg, "<synthetic>", rd, bundle=bundle, reuse=False)
        _sync(dev)
        wall = time.perf_counter() - t0
        rows = (rd / "metrics.csv").read_text().splitlines()
    del bundle
    _free(dev)
    header = rows[0].split(",")
    pps = [float(r.split(",")[header.index("pairs_per_s")]) for r in rows[1:]]
    steps_per_epoch = n_train // min(batch, n_train)
    return {"wall_s": wall, "train_s": float(result["train_s"]), "epochs": epochs, "batch": batch,
            "compile": compile, "on_device": on_device, "n_train": n_train,
            "pairs_per_s": statistics.median(pps[1:] if len(pps) > 1 else pps),
            "pairs_per_epoch": steps_per_epoch * min(batch, n_train)}


# ------------------------------------------------------------------------------------------ report
def _fmt(x, nd=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def _pf(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "**fail**")


def rsicd_estimate(osdpm_pairs_per_s: float, ev: dict | None) -> float:
    """10,000 pairs x 20 epochs / pairs/s + 21 evaluations + 3 test-image encodings (seconds)."""
    t = RSICD["train_pairs"] * RSICD["epochs"] / osdpm_pairs_per_s
    if ev:
        t += (RSICD["epochs"] + 1) * ev["total_s"] + 3 * ev["images_s"]
    return t


def render(mode: str, cfg: dict, state: dict) -> str:
    info = state["machine"]
    lines = [f"<!-- bench:{mode}:begin -->", f"## Mode `{mode}`", ""]
    lines += [f"- machine: {info['cpu']} ({info['cpu_count']} logical CPUs, torch threads {info['torch_threads']}"
              + (f", load avg {info['load_avg']}" if "load_avg" in info else "") + ")",
              f"- GPU: {info['gpu']}" + (f", CUDA {info['cuda']}" if info.get("cuda") else ""),
              f"- torch {info['torch']}, open_clip {info.get('open_clip', '?')}, Python {info['python']}; "
              f"{info['date']}",
              f"- model `{cfg['model']}` (random init), {cfg['precision']}"
              f"{' autocast' if cfg['precision'] == 'bf16' else ''}, AdamW, synthetic data on the device; "
              f"{cfg['warmup']} warm-up steps, {cfg['rounds']} x {cfg['steps']} timed steps per variant"
              + (" (alternating rounds, median)" if cfg["device"] == "cpu" else ""),
              ""]
    est = cfg.get("estimate")
    lines += ["### Training throughput", ""]
    head = ["setting", "clip pairs/s", "osdpm pairs/s", f"osdpm / clip (goal >= {GOAL_RATIO})", "pass",
            "clip step ms", "osdpm step ms", "clip peak MiB", "osdpm peak MiB", "warm-up s (clip / osdpm)"]
    ref = cfg.get("reference") or {}
    if ref:
        head += ["open_clip reference pairs/s (clip / ref)"]
    if est:
        head += [f"est. RSICD-scale run s (goal <= {GOAL_RUN_S:.0f})", "pass"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ev = state.get("eval", {}).get("osdpm")
    mem_kind = None
    for label, r in state["training"].items():
        if "error" in r:
            lines.append(f"| {label} | " + " | ".join([f"error: {r['error']}"] + ["-"] * (len(head) - 2)) + " |")
            continue
        c, o = r["clip"], r["osdpm"]
        ratio = o["pairs_per_s"] / c["pairs_per_s"]
        mem_kind = c.get("mem_kind")
        row = [label, _fmt(c["pairs_per_s"]), _fmt(o["pairs_per_s"]), f"{ratio:.3f}", _pf(ratio >= GOAL_RATIO),
               _fmt(c["step_ms"]), _fmt(o["step_ms"]), _fmt(c["peak_mem_mib"]), _fmt(o["peak_mem_mib"]),
               f"{c['warmup_s']:.1f} / {o['warmup_s']:.1f}"]
        if ref:
            rp = ref.get(label)
            row += [f"{rp:,} ({c['pairs_per_s'] / rp:.2f})" if rp else "-"]
        if est:
            t = rsicd_estimate(o["pairs_per_s"], ev)
            row += [f"{t:.1f}", _pf(t <= GOAL_RUN_S)]
        lines.append("| " + " | ".join(row) + " |")
    for label in state.get("skipped", []):
        lines.append(f"| {label} | skipped (time budget) |" + " - |" * (len(head) - 2))
    lines.append("")
    cpu_ratio = {lab: r["osdpm"]["cpu_pairs_per_s"] / r["clip"]["cpu_pairs_per_s"]
                 for lab, r in state["training"].items()
                 if "error" not in r and r["clip"].get("cpu_pairs_per_s")}
    if cpu_ratio:
        lines.append("osdpm / clip by process CPU time (median round; robust to a busy machine, "
                     "exact with one torch thread): "
                     + "; ".join(f"{lab}: {x:.3f}" for lab, x in cpu_ratio.items()) + ".")
    if mem_kind:
        lines.append(f"Peak memory: {mem_kind}"
                     + (" (weights, gradients, AdamW state, activations)." if mem_kind == "max_memory_allocated"
                        else f"; process peak RSS {state.get('maxrss_mib', 0):.0f} MiB."))
    breaks = {f"{lab} {v}": (r[v].get("graph_breaks"), r[v].get("graphs"))
              for lab, r in state["training"].items() if "error" not in r for v in VARIANTS
              if r[v].get("graph_breaks") is not None}
    if breaks:
        lines.append("torch.compile graph breaks / graphs: "
                     + "; ".join(f"{k}: {a} / {b}" for k, (a, b) in breaks.items()) + ".")
    if est:
        lines.append(f"RSICD-scale estimate: {RSICD['train_pairs']:,} pairs x {RSICD['epochs']} epochs / osdpm "
                     f"pairs/s + {RSICD['epochs'] + 1} x evaluation total + 3 x image encoding (below).")
    lines.append("")

    lines += ["### Evaluation", "", "| item | clip | osdpm | goal | pass |", "|---|---|---|---|---|"]
    evs = state.get("eval", {})
    if evs:
        any_ev = next(iter(evs.values()))
        n, m = any_ev["n_images"], any_ev["n_captions"]
        rip = (cfg.get("reference") or {}).get("images_per_s")
        for key, label, nd in (("images_s", f"encode {n:,} images (s)", 3),
                               ("images_per_s", "images/s" + (f" (open_clip reference {rip:,})" if rip else ""), 0),
                               ("texts_s", f"encode {m:,} captions (s)", 3),
                               ("score_s", f"similarity + metrics {n:,} x {m:,} (s)", 3),
                               ("total_s", "evaluation total (s)", 3)):
            vals = [_fmt(evs[v][key], nd) if v in evs else "-" for v in VARIANTS]
            lines.append(f"| {label} | {vals[0]} | {vals[1]} | - | - |")
    if "metrics_s" in state:
        ms = state["metrics_s"]
        lines.append(f"| retrieval_metrics {METRICS_SHAPE[0]:,} x {METRICS_SHAPE[0] * METRICS_SHAPE[1]:,} (s) "
                     f"| {ms:.3f} | {ms:.3f} | <= {GOAL_METRICS_S} | {_pf(ms <= GOAL_METRICS_S)} |")
    lines.append("")

    e2e = state.get("e2e", {})
    if e2e or state.get("e2e_skipped"):
        lines += ["### End-to-end `train.train` (synthetic in-memory bundle, variant osdpm)", "",
                  "| run | epochs | train pairs | batch | compile | wall s | train-loop s | other s "
                  "| pairs/s in loop | wall s scaled to 20 epochs | goal | pass |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in e2e.items():
            if "error" in r:
                lines.append(f"| {label} | error: {r['error']} |" + " - |" * 10)
                continue
            goal = bool(est) and r["n_train"] == RSICD["train_pairs"]
            # scaled to 20 epochs: the whole wall time in proportion (build and test evaluation included)
            scaled = r["wall_s"] * RSICD["epochs"] / r["epochs"] if goal else None
            lines.append(f"| {label} | {r['epochs']} | {r['n_train']:,} | {r['batch']} | {r['compile']} "
                         f"| {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['wall_s'] - r['train_s']:.1f} "
                         f"| {_fmt(r['pairs_per_s'])} | {_fmt(scaled)} | {f'<= {GOAL_RUN_S:.0f}' if goal else '-'} "
                         f"| {_pf(scaled <= GOAL_RUN_S) if goal else '-'} |")
        for label in state.get("e2e_skipped", []):
            lines.append(f"| {label} | skipped (time budget) |" + " - |" * 10)
        lines += ["", "train-loop s: the epochs' training loops (`train_s`); other: model build, per-epoch "
                  "validation, embedding stages, checkpoints, test evaluation.", ""]
    lines += _goals(state, est)
    if state.get("pending"):
        lines += [f"_Partial: still to run: {', '.join(state['pending'])}._", ""]
    lines.append(f"<!-- bench:{mode}:end -->")
    return "\n".join(lines) + "\n"


def _goals(state: dict, est: bool) -> list[str]:
    rows = []
    ok = {lab: r for lab, r in state["training"].items() if "error" not in r}
    if ok:
        ratios = {lab: r["osdpm"]["pairs_per_s"] / r["clip"]["pairs_per_s"] for lab, r in ok.items()}
        lab = min(ratios, key=ratios.get)
        rows.append(f"| osdpm / clip pairs/s >= {GOAL_RATIO} (every setting) | lowest {ratios[lab]:.3f} ({lab}) "
                    f"| {_pf(ratios[lab] >= GOAL_RATIO)} |")
    if "metrics_s" in state:
        rows.append(f"| retrieval_metrics {METRICS_SHAPE[0]:,} x {METRICS_SHAPE[0] * METRICS_SHAPE[1]:,} "
                    f"<= {GOAL_METRICS_S} s | {state['metrics_s']:.3f} s "
                    f"| {_pf(state['metrics_s'] <= GOAL_METRICS_S)} |")
    if est and ok:
        ev = state.get("eval", {}).get("osdpm")
        t = {lab: rsicd_estimate(r["osdpm"]["pairs_per_s"], ev) for lab, r in ok.items()}
        lab = min(t, key=t.get)
        rows.append(f"| RSICD-scale osdpm run <= {GOAL_RUN_S:.0f} s, estimated (best setting) | {t[lab]:.1f} s ({lab}) "
                    f"| {_pf(t[lab] <= GOAL_RUN_S)} |")
    for lab, r in state.get("e2e", {}).items():
        if est and "error" not in r and r["n_train"] == RSICD["train_pairs"]:
            scaled = r["wall_s"] * RSICD["epochs"] / r["epochs"]
            rows.append(f"| RSICD-scale osdpm run <= {GOAL_RUN_S:.0f} s, measured `train.train` ({lab}) "
                        f"| {scaled:.1f} s{'' if r['epochs'] == RSICD['epochs'] else ' (scaled to 20 epochs)'} "
                        f"| {_pf(scaled <= GOAL_RUN_S)} |")
    if not rows:
        return []
    return ["### Goals", "", "| goal | figure | pass |", "|---|---|---|", *rows, ""]


def write_section(out: str | Path, mode: str, section: str) -> None:
    """Replace the ``mode`` section of ``out`` (or append it); other sections are kept."""
    out = Path(out)
    text = out.read_text() if out.exists() else "# Benchmarks (`python -m osdpm_lib.bench`)\n\n"
    pat = re.compile(rf"<!-- bench:{re.escape(mode)}:begin -->.*?<!-- bench:{re.escape(mode)}:end -->\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)


# -------------------------------------------------------------------------------------------- run
def _label(item) -> str:
    if item == "eval":
        return "evaluation"
    if isinstance(item, Setting):
        return item.label
    return f"e2e {item[1]}"


def run_mode(mode: str, out=None, time_budget: float | None = None, threads: int = 0, e2e: bool = True,
             verbose: bool = True, **overrides) -> dict:
    """Run one mode; returns ``{"markdown": str, "state": dict}``.  ``overrides`` replace keys of
    ``MODES[mode]`` (e.g. ``steps=1, rounds=1, warmup=1, eval_images=32, plan=[...]``)."""
    if mode not in MODES:
        raise KeyError(f"unknown mode {mode!r}; choose one of {sorted(MODES)}")
    cfg = MODES[mode] | {k: v for k, v in overrides.items() if v is not None}
    if threads:
        torch.set_num_threads(threads)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--mode gpu needs CUDA (torch.cuda.is_available() is False)")
    device, amp = resolve_device(TrainConfig(device=cfg["device"], precision=cfg["precision"]))
    t_start = time.perf_counter()

    def left() -> float:
        return math.inf if not time_budget else time_budget - (time.perf_counter() - t_start)

    plan = [it for it in cfg["plan"] if e2e or not (isinstance(it, tuple) and it[0] == "e2e")]
    state: dict = {"machine": machine_info(device), "training": {}, "eval": {}, "e2e": {}, "skipped": [],
                   "e2e_skipped": [], "pending": [_label(it) for it in plan]}
    measured: list[tuple[Setting, dict]] = []
    cost: dict[bool, float] = {}      # seconds a training setting took, eager / compiled

    def log(msg: str) -> None:
        if verbose:
            print(f"[bench {mode} {time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    def checkpoint() -> str:
        state["maxrss_mib"] = _RSS.maxrss() / 2**20
        md = render(mode, cfg, state)
        if out:
            write_section(out, mode, md)
        return md

    def osdpm_pps(batch: int, compiled: bool) -> float | None:
        for s, r in measured:
            if s.batch == batch and s.compile == compiled and not s.channels_last and "error" not in r:
                return r["osdpm"]["pairs_per_s"]
        return None

    def do_eval() -> None:
        state["metrics_s"] = measure_metrics()
        log(f"retrieval_metrics {METRICS_SHAPE[0]} x {METRICS_SHAPE[0] * METRICS_SHAPE[1]}: "
            f"{state['metrics_s']:.3f} s")
        for v in VARIANTS:
            state["eval"][v] = measure_eval(cfg["model"], v, cfg["eval_images"], device, amp, cfg["eval_batch"])
            log(f"eval {v}: {json.dumps({k: round(x, 4) for k, x in state['eval'][v].items()})}")

    def do_setting(s: Setting) -> None:
        need = cost.get(s.compile, cost.get(False, 0.0) * (4 if s.compile else 1))
        if s.compile and True not in cost:
            need = max(need, 90.0)        # first compile of the run: a guess
        if need > left():
            state["skipped"].append(f"{s.label} (needs ~{need:.0f} s, {max(left(), 0):.0f} s left)")
            log(f"skip {s.label}: needs ~{need:.0f} s")
            return
        log(f"training {s.label}")
        t0 = time.perf_counter()
        try:
            r = measure_training(cfg["model"], s, device, amp, cfg["warmup"], cfg["steps"], cfg["rounds"])
            log(f"{s.label}: clip {r['clip']['pairs_per_s']:.1f} pairs/s, osdpm {r['osdpm']['pairs_per_s']:.1f} "
                f"pairs/s (ratio {r['osdpm']['pairs_per_s'] / r['clip']['pairs_per_s']:.3f})")
        except Exception as exc:  # noqa: BLE001 - e.g. compile toolchain missing, OOM: report, keep going
            r = {"error": _err(exc)}
            log(f"{s.label} failed: {exc!r}")
            _free(device)
        cost[s.compile] = max(cost.get(s.compile, 0.0), time.perf_counter() - t0)
        state["training"][s.label] = r
        measured.append((s, r))

    def do_e2e(label: str, spec: dict) -> None:
        spec = dict(spec)
        batch, allow_compile = spec.pop("batch"), spec.pop("compile", True)
        compiled = False
        if batch == "auto":
            best = max(((s, r["osdpm"]["pairs_per_s"]) for s, r in measured
                        if "error" not in r and not s.channels_last and (allow_compile or not s.compile)),
                       key=lambda t: t[1], default=None)
            batch, compiled = (best[0].batch, best[0].compile) if best else (256, False)
        pps = osdpm_pps(batch, compiled)
        need = None
        if pps:
            scale = spec["epochs"] * spec["n_train"] / (RSICD["epochs"] * RSICD["train_pairs"])
            need = rsicd_estimate(pps, state["eval"].get("osdpm")) * scale * (1.0 if spec["on_device"] else 2.5)
            need += 20.0 + (cost.get(True, 0.0) if compiled else 0.0)   # build, checkpoints, (re)compiles
        if need is not None and need > left():
            state["e2e_skipped"].append(f"{label} (needs ~{need:.0f} s, {max(left(), 0):.0f} s left)")
            log(f"skip e2e {label}: needs ~{need:.0f} s")
            return
        log(f"e2e {label}: {spec}, batch {batch}, compile {compiled}")
        try:
            r = e2e_train(cfg["model"], batch=batch, compile=compiled, device=cfg["device"], **spec)
            log(f"e2e {label}: wall {r['wall_s']:.1f} s, training loops {r['train_s']:.1f} s")
        except Exception as exc:  # noqa: BLE001 - report, keep going
            r = {"error": _err(exc)}
            log(f"e2e {label} failed: {exc!r}")
            _free(device)
        state["e2e"][label] = r

    for item in plan:
        if item == "eval":
            do_eval()
        elif isinstance(item, Setting):
            do_setting(item)
        else:
            do_e2e(item[1], item[2])
        state["pending"].remove(_label(item))
        checkpoint()
    return {"markdown": checkpoint(), "state": state}


def _err(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:200] if msg else ''}".replace("|", "/")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), required=True)
    ap.add_argument("--out", default=None, help="Markdown file; this mode's section is replaced or appended")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds; phases that would not fit are skipped (default: none for ci/cpu, 360 for gpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="batch sizes (replaces the mode's settings with eager ones)")
    ap.add_argument("--eval-images", type=int, default=None)
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end train.train run(s)")
    ap.add_argument("--e2e-epochs", type=int, default=None, help="epochs of the on-device end-to-end run")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides: dict = {"steps": args.steps, "rounds": args.rounds, "warmup": args.warmup,
                       "eval_images": args.eval_images}
    plan = list(MODES[args.mode]["plan"])
    if args.batch:   # the mode's training settings -> eager ones at these batch sizes
        first = next(i for i, it in enumerate(plan) if isinstance(it, Setting))
        plan = [it for it in plan if not isinstance(it, Setting)]
        plan[first:first] = [Setting(b) for b in args.batch]
    if args.e2e_epochs:
        plan = [(it[0], it[1], it[2] | {"epochs": args.e2e_epochs})
                if isinstance(it, tuple) and it[2].get("on_device") else it for it in plan]
    overrides["plan"] = plan
    budget = args.time_budget if args.time_budget is not None else (360.0 if args.mode == "gpu" else None)
    res = run_mode(args.mode, out=args.out, time_budget=budget, threads=args.threads, e2e=not args.no_e2e,
                   **overrides)
    print(res["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
