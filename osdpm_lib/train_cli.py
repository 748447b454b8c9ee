"""``python -m osdpm_lib.train``: the book's runs from the command line, in one process or under ``torchrun``.

    python -m osdpm_lib.train --profile default --variant osdpm --seed 0
    torchrun --standalone --nproc-per-node 8 -m osdpm_lib.train --profile finetune --dataset data/rsicd \\
        --name rsicd_vitb32 --model ViT-B-32 --pretrained openai --variant all --seed all
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id rsicd \\
        -m osdpm_lib.train ...                       # the same command on every node

Each run is the configuration the chain builds for it (:func:`osdpm_lib.ablation.row_config`: the profile, the
ablation row, the seed, ``--model``/``--pretrained``) in the folder where the chain looks for it
(``runs/<name>/<row>_s<seed>``, :func:`osdpm_lib.profiles.chain_folders`), so ``python -m osdpm_lib.runner``
(``make book``) afterwards reuses it instead of training it again.  ``batch_size`` is the global batch: the same
configuration gives the same run under any number of processes, and a run made under another world size is
reused.  ``--set key=value`` sets any ``TrainConfig`` field; except ``progress``, ``checkpoint_every`` and
``stage_embeddings`` it changes the run's identity, and the chain reuses such a run only when its profile sets the
same value.  Rank 0 alone writes files and prints; the other ranks are silent.  An interrupted run resumes when the
same command is given again (with any number of processes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import sys
import warnings
from pathlib import Path

from . import ablation, profiles, settings

# TrainConfig fields that have their own option
OWN_OPTIONS = ("variant", "seed", "model", "pretrained")
PRECISIONS = ("auto", "bf16", "fp32")
UsageError = settings.UsageError      # a bad command-line option


def set_value(item: str) -> tuple[str, object]:
    """``"key=value"`` -> ``(key, value)`` typed as the ``TrainConfig`` field (:func:`osdpm_lib.settings.typed`:
    ``none`` for an optional one, ``true``/``false`` for a flag, JSON for ``extra``)."""
    key, raw = settings.split(item)
    if key in OWN_OPTIONS:
        raise UsageError(f"--set {key}=...: use --{key}")
    fields = settings.train_fields()
    if key not in fields:
        raise UsageError(f"--set {key}=...: {key!r} is not a TrainConfig field; fields: {', '.join(fields)}")
    return key, settings.typed(key, raw, fields[key])


def _parser() -> argparse.ArgumentParser:
    rows = list(ablation.ROWS)
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", choices=sorted(profiles.PROFILES),
                    help="sizes and TrainConfig values of the book (osdpm_lib/profiles.py); default: default")
    ap.add_argument("--variant", nargs="+", default=["clip"], choices=rows + ["all"], metavar="ROW",
                    help=f"ablation rows to train: {', '.join(rows)}, or all; default: clip")
    ap.add_argument("--seed", nargs="+", default=["0"], metavar="SEED",
                    help="seeds (integers), or all: the profile's; default: 0 (zero-shot runs the first only)")
    ap.add_argument("--dataset", default="embedded",
                    help="'embedded' (built in data/<name> as notebook 01 does) or a data set folder")
    ap.add_argument("--name", help="the chain's name: runs go to runs/<name>/ (default: as the runner: embedded "
                                   "for the default profile, else the profile's name)")
    ap.add_argument("--runs-dir", type=Path, help="the chain's runs folder (default: runs/<name>)")
    ap.add_argument("--run-dir", type=Path, help="the run folder of a single run (default: <runs-dir>/<row>_s<seed>)")
    ap.add_argument("--model", help="open_clip model name, e.g. ViT-B-32 (default: the profile's)")
    ap.add_argument("--pretrained", help="open_clip tag (openai, ...), synthpre or a checkpoint file "
                                         "(default: the profile's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="any TrainConfig field, e.g. --set epochs=10 --set lr=2e-5 (repeatable)")
    ap.add_argument("--backend", default="auto", choices=("auto", "nccl", "gloo"),
                    help="torch.distributed backend under torchrun (auto: nccl on CUDA, gloo on CPU)")
    ap.add_argument("--overwrite", action="store_true",
                    help="move a run folder holding another configuration aside instead of refusing")
    return ap


@dataclasses.dataclass
class Plan:
    data_dir: Path
    embedded_sizes: dict | None        # synth.generate's arguments when the data set is the embedded benchmark
    runs: list                         # [(TrainConfig, run folder)]
    backend: str
    overwrite: bool


def plan(argv: list[str] | None = None) -> Plan:
    """The runs a command line asks for; :class:`UsageError` (or argparse's exit) on a bad option."""
    ap = _parser()
    args = ap.parse_args(argv)
    p = profiles.get(args.profile)
    if "all" in args.seed:
        seeds = list(p["seeds"])
    else:
        try:
            seeds = [int(s) for s in args.seed]
        except ValueError:
            raise UsageError(f"--seed {' '.join(args.seed)}: seeds are integers or 'all'") from None
    rows = list(ablation.ROWS) if "all" in args.variant else list(dict.fromkeys(args.variant))
    overrides = dict(set_value(s) for s in args.sets)
    name = profiles.chain_name(args.profile, args.name)
    data_dir, runs_dir = profiles.chain_folders(name, args.dataset)
    runs_dir = args.runs_dir or runs_dir
    if args.dataset != "embedded" and not data_dir.exists():
        raise UsageError(f"--dataset {args.dataset}: no such folder")
    runs = []
    for row in rows:
        for seed in ablation.row_seeds(row, seeds):
            cfg = ablation.row_config(args.profile, row, seed, model=args.model, pretrained=args.pretrained)
            try:
                cfg = dataclasses.replace(cfg, **overrides)
            except ValueError as exc:
                raise UsageError(f"--set: {exc}") from None
            runs.append((cfg, ablation.run_dir(runs_dir, row, seed)))
    if args.run_dir:
        if len(runs) != 1:
            raise UsageError(f"--run-dir names one run folder, but the options ask for {len(runs)} runs")
        runs = [(runs[0][0], args.run_dir)]
    from .metrics import TIE_RULES

    for cfg, _ in runs:
        if cfg.ties not in TIE_RULES:
            raise UsageError(f"--set ties={cfg.ties}: choose one of {sorted(TIE_RULES)}")
        if cfg.precision not in PRECISIONS:
            raise UsageError(f"--set precision={cfg.precision}: choose one of {PRECISIONS}")
    sizes = profiles.data_sizes(args.profile) if args.dataset == "embedded" else None
    return Plan(data_dir, sizes, runs, args.backend, args.overwrite)


def _init_distributed(backend: str, device: str) -> bool:
    """Join torchrun's process group (``WORLD_SIZE`` > 1); returns whether this call created it."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def _check_shared(folders: list[Path], rank: int) -> None:
    """Every rank reads the data and the resume state that rank 0 prepared: the folders must be shared."""
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise RuntimeError(f"rank {rank} on {socket.gethostname()} does not see {', '.join(missing)}: the data and "
                           "run folders must lie on a filesystem that every node shares")


def execute(pl: Plan) -> list[dict]:
    """Train (or reuse, or resume) the planned runs in this process, joining torchrun's group if there is one."""
    import torch.distributed as dist

    from .train import _rank_world, train

    created = _init_distributed(pl.backend, pl.runs[0][0].device)
    try:
        rank, world = _rank_world()
        if rank == 0:
            if pl.embedded_sizes is not None:     # as notebook 01 builds it: nothing is written when it is current
                from . import synth

                synth.generate(pl.data_dir, seed=0, **pl.embedded_sizes)
            for _, run_dir in pl.runs:
                run_dir.mkdir(parents=True, exist_ok=True)
        if world > 1:
            dist.barrier()
            _check_shared([pl.data_dir] + [d for _, d in pl.runs], rank)
        results = []
        for cfg, run_dir in pl.runs:
            res = train(cfg, pl.data_dir, run_dir, overwrite=pl.overwrite)
            if rank == 0:
                t = res["test"]
                print(f"{run_dir}: {cfg.variant} seed {cfg.seed}: selected epoch {res['best_epoch']} of "
                      f"{cfg.epochs}, test Rsum {t['rsum']:.2f}, mR {t['mr']:.2f} ({world} process"
                      f"{'es' if world > 1 else ''})", flush=True)
            results.append(res)
        if world > 1:
            dist.barrier()
        return results
    finally:
        if created:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    from .checkpoints import CheckpointError
    from .train import RunExistsError

    quiet = int(os.environ.get("RANK", "0")) != 0      # torchrun reports a failing rank's traceback itself
    with contextlib.ExitStack() as stack:
        if quiet:
            devnull = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(devnull))
            stack.enter_context(contextlib.redirect_stderr(devnull))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            pl = plan(argv)
            (record(execute) if "TORCHELASTIC_ERROR_FILE" in os.environ else execute)(pl)
        except (ValueError, RunExistsError, CheckpointError, FileNotFoundError) as exc:   # bad options or input
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception:
            if not quiet:
                raise
            return 1        # recorded in torchrun's error file, which torchrun prints
    return 0
