"""The book's "pretrained CLIP": ``osdpm-tiny-vit`` trained with the plain CLIP loss on a pretraining corpus.

OSDPM fine-tunes a CLIP pretrained on web alt-text.  Offline, the book plays that stage itself: the pretraining
corpus (:func:`osdpm_lib.synth.generate_pretrain`) is drawn from its own seeds, is much larger than the benchmark,
mixes scenes and objects more broadly and is captioned in another register (short, noisy alt-text, object lists,
wrong or missing words); no benchmark image or caption is in it (notebook 01 checks this with the audit).

``python -m osdpm_lib.pretrain`` (``make pretrain``) generates the corpus, trains the ``clip`` variant on it with
:func:`osdpm_lib.train.train` (the same code path as every other run: selection on the corpus's own validation
split, resume from ``last.pt``) and writes the selected weights of the CLIP model as float16 safetensors to
``osdpm_lib/weights/osdpm-tiny-vit_synthpre.safetensors``, with a json beside it that records the recipe (corpus
and training configuration), the sha256 of the file, the time and the machine.  ``pretrained="synthpre"`` loads it
(:func:`osdpm_lib.models.bundled_weights`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import checkpoints
from .download import sha256_file as sha256
from .models import WEIGHTS_DIR, weights_file
from .paths import ROOT
from .train import TrainConfig, train

MODEL = "osdpm-tiny-vit"
TAG = "synthpre"

# The recipe of the shipped checkpoint: corpus and training configuration (changing it changes the checkpoint).
CORPUS = {"n_images": 16000, "seed": 20251, "image_size": 64, "n_val": 300, "n_test": 300}
CORPUS_DIR = ROOT / "data" / "pretrain"   # where it is generated (the CLIP's, the ResNet's, LW-MCR(u)'s)
TRAIN = {"variant": "clip", "model": MODEL, "pretrained": None, "epochs": 10, "batch_size": 128, "lr": 1e-3,
         "weight_decay": 0.1, "warmup_frac": 0.05, "seed": 0, "augment": True}


def weights_path(model: str = MODEL, tag: str = TAG, out_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_file(model, tag, out_dir)


def export(best_pt: Path, out: Path, dtype: torch.dtype = torch.float16) -> None:
    """The CLIP part of a run's ``best.pt`` as a flat safetensors state dict in ``dtype`` (atomic write)."""
    state = checkpoints.load(best_pt)["model"]
    clip = {k[len("clip."):]: v.to(dtype) if v.is_floating_point() else v
            for k, v in state.items() if k.startswith("clip.")}
    if not clip:
        raise checkpoints.CheckpointError(f"{best_pt}: no CLIP weights (keys 'clip.*') in it")
    checkpoints.save(clip, out)


def benchmark_overlap(corpus_dir: Path, benchmark_dir: Path) -> dict:
    """What the corpus shares with the benchmark (``audit.overlap``: filenames, normalised captions, near-duplicate
    images by perceptual hash); the scalars, for the record."""
    from . import audit, data

    res = audit.overlap(data.load(corpus_dir), data.load(benchmark_dir), Path(corpus_dir) / "images",
                        Path(benchmark_dir) / "images", progress=False)
    out = {k: v for k, v in res.items() if k != "pairs"}
    # the hash pairs within the threshold, to be looked at: chance matches of near-uniform layouts look alike in a
    # 64-bit hash (docs/pretrain_phash_pairs.png shows those of the shipped corpus)
    pairs = res["pairs"]
    out["near-duplicate pairs"] = [] if pairs is None else [
        {"filename a": str(a), "filename b": str(b), "distance": int(d)} for a, b, d in pairs.itertuples(index=False)]
    return out


def pretrain(data_dir: Path = CORPUS_DIR, run_dir: Path = ROOT / "runs" / "pretrain",
             out_dir: Path = WEIGHTS_DIR, corpus: dict | None = None, train_overrides: dict | None = None,
             benchmark_dir: Path | None = ROOT / "data" / "embedded", progress: bool = True) -> dict:
    """Generate the corpus, check it against the benchmark (generated at the ``default`` profile's size into
    ``benchmark_dir`` when absent; None skips the check), train, export; returns the record written beside the
    checkpoint."""
    from . import data, profiles, synth

    corpus = dict(CORPUS if corpus is None else corpus)
    t0 = time.perf_counter()
    synth.generate_pretrain(data_dir, **corpus)
    t_data = time.perf_counter() - t0
    overlap = None
    if benchmark_dir is not None:
        synth.generate(benchmark_dir, seed=0, **profiles.data_sizes("default"))
        overlap = benchmark_overlap(data_dir, benchmark_dir)
    cfg = TrainConfig(**(TRAIN | (train_overrides or {}) | {"progress": progress}))
    result = train(cfg, data_dir, run_dir)
    out = weights_path(cfg.model, TAG, out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(Path(run_dir) / "best.pt", out)
    record = {
        "model": cfg.model, "tag": TAG, "file": out.name, "sha256": sha256(out), "dtype": "float16",
        "corpus": corpus | {"generator": "osdpm_lib.synth.generate_pretrain"},
        "overlap_with_benchmark": overlap,
        "example_captions": [c for r in data.load(data_dir).split("train")[:6] for c in r.captions[:2]],
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "checkpoint_every")},
        "selected_epoch": result["best_epoch"], "corpus_val_rsum": result["best_val_rsum"],
        "corpus_test": result["test"],
        "seconds": {"corpus": round(t_data, 1), "train": result["train_s"],
                    "total": round(time.perf_counter() - t0, 1)},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    checkpoints.write_text(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record


def verify(out_dir: Path = WEIGHTS_DIR, model: str = MODEL, tag: str = TAG) -> dict:
    """The record of the shipped checkpoint, after checking its sha256 (``CheckpointError`` when it differs)."""
    path = weights_path(model, tag, out_dir)
    record = json.loads(path.with_suffix(".json").read_text())
    got = sha256(path)
    if got != record["sha256"]:
        raise checkpoints.CheckpointError(f"{path}: sha256 {got} differs from {record['sha256']} recorded in "
                                          f"{path.with_suffix('.json').name}; rebuild it with `make pretrain`")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=CORPUS_DIR)
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "pretrain")
    ap.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR, help="where the .safetensors and .json go")
    ap.add_argument("--n-images", type=int, default=CORPUS["n_images"])
    ap.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--verify", action="store_true", help="only check the shipped checkpoint's sha256")
    args = ap.parse_args(argv)
    if args.verify:
        rec = verify(args.out_dir)
        print(f"{rec['file']}: sha256 {rec['sha256']} ok")
        return 0
    rec = pretrain(args.data_dir, args.run_dir, args.out_dir, CORPUS | {"n_images": args.n_images},
                   {"epochs": args.epochs, "device": args.device})
    print(json.dumps({k: rec[k] for k in ("file", "sha256", "selected_epoch", "corpus_val_rsum", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
