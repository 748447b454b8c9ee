"""Mutation testing of the modules that carry the book's promises (``make mutate``; docs/MUTATION.md).

Each target is one module of ``osdpm_lib`` with the fast, targeted pytest selection that guards it.  For each,
this script lays out a work folder ``build/mutate/<target>/`` (a copy of ``osdpm_lib/`` and ``tests/`` and a
``pyproject.toml`` whose ``[tool.mutmut]`` section names that module and those tests), runs ``mutmut run`` there
(mutmut 3: mutants are switched on one at a time inside the copy, and each mutant runs only the selected tests
that reach the mutated function) and prints the score and the surviving mutants.

    python tools/mutate.py                     # every target, in the order below
    python tools/mutate.py metrics stats       # some targets
    python tools/mutate.py --show train        # survivors of a finished run, with their diffs
    python tools/mutate.py --rerun stats       # its survivors again, with the tests added since
    python tools/mutate.py --full train        # every mutant of the train target, not its one-in-five sample

mutmut is a development tool, not a dependency of the library: ``requirements-dev.txt``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"

# target -> (module, pytest selection, mutant-name globs (None: every function of the module))
TARGETS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "metrics": ("osdpm_lib/metrics.py", ["tests/test_metrics.py", "tests/test_stats.py"], None),
    "stats": ("osdpm_lib/stats.py", ["tests/test_stats.py"], None),
    "losses": ("osdpm_lib/losses.py", ["tests/test_losses.py", "tests/test_models.py", "-k", "loss"], None),
    "models": ("osdpm_lib/models.py", ["tests/test_dapn.py", "tests/test_models.py", "tests/test_checkpoints.py",
                                       "tests/test_pretrain.py::test_shipped_checkpoint"], None),
    # The selection and step code of train.py: the training loop ``_train`` (its bookkeeping lines excluded, see
    # TRAIN_SCOPE), the optimisation step, its parameter groups and schedule, and the batches of pairs.
    "train": ("osdpm_lib/train.py",
              ["tests/test_selection.py", "tests/test_train.py", "tests/test_recipe.py", "-k",
               "selection_uses or step_receives or frozen_backbone or config_plumbing or epoch_size_and_batch_pairs "
               "or schedule_is_linear or param_groups_split or stepper_hands or text_prototypes_follow "
               "or one_process_steps or each_caption_once or own_generator or bf16_precision or carve_out_and_final_retrain"],
              # A systematic sample: the mutants whose number ends in 0 or 5 (one in five).  Each mutant of this
              # module trains the tiny model in four tests (about 15 s a mutant on the shared 2-core machine; all
              # ~510 would take two hours).
              [f"osdpm_lib.train.{f}__mutmut_*[05]" for f in
               ("x__train", "xǁStepperǁ*", "x_param_groups", "x_cosine_with_warmup", "x_batch_pairs", "x_epoch_size")]),
}

# Lines of ``_train`` that are not selection or step code, left unmutated in the copy (mutmut's ``# pragma: no
# mutate start`` / ``end`` / ``block`` comments, inserted before the line that starts with the anchor; anchors are
# searched in order from ``def _train(``).  They are the run folder's bookkeeping (identity, claim, reuse, data
# loading, config.json, resume, the ``last.pt`` checkpoints, the stage embeddings, the files written at the end:
# guarded by test_resume.py and test_train.py, too slow for this loop), the history's timing and loss columns and
# the progress bar.  What stays mutated: the step inputs (batch size, steps per epoch, the Stepper's total steps,
# the generator, the prior rows of each batch), validation and the choice of the best epoch, the epoch loop, and
# the single test evaluation with the selected weights.
TRAIN_SCOPE = [
    ("start", "run_dir = Path(run_dir)"), ("end", "normalizer = bundle.normalizer.to(device)"),
    ("start", "def encode_stage("), ("end", "def validate("),
    ("start", "sums = _mean_over_ranks(sums, device, world)"), ("end", "val_enc = encode_split("),
    ("start", 'row = {"epoch": epoch,'), ("end", "history.append(row)"),
    ("start", "t0 = time.perf_counter()"), ("end", "for step in bar:"),
    ("block", "for k in sums:"),
    ("start", 'if device.type == "cuda":'), ("end", "validate(epoch, time.perf_counter() - t0"),
    ("start", "if epoch == (cfg.epochs + 1) // 2:"), ("end", "perm, sums, step0 = None, None, 0"),
    ("block", "checkpoint(epoch + 1, 0, None, None)"),
    ("start", 'encode_stage(stages, "end")'), ("end", "checkpoints.load_into(model, checkpoints.load("),
    ("start", "if stages:"), ("end", "result = {"),
    ("block", "checkpoints.write_text(done,"),
]
# DDP and torch.compile, out of this loop's reach (one CPU process, eager): lines that matter only with world > 1 or
# cfg.compile, left unmutated in the copy as above.  They are guarded by tests/test_ddp.py (two gloo processes give
# one process's numbers), tests/test_train_cli.py (torchrun) and GPU runs, which a mutant here cannot reach: in one
# process their mutants are equivalent.  (def line, [(pragma, anchor), ...]), anchors searched in order from it.
DDP_SCOPE = [
    ("def _train(", [("start", "if global_bs % world:"), ("end", "steps_per_epoch = n_train // global_bs"),
                     ("start", "local_bs = global_bs // world"), ("end", "for epoch in range(epoch0,")]),
    ("    def __init__(self, model: OSDPM, cfg: TrainConfig", [("block", "if world > 1:"),
                                                          ("line", "self.fwd = torch.compile(")]),
]


def _pragmas(lines: list[str], def_line: str, scope: list[tuple[str, str]], name: str) -> None:
    """Insert ``# pragma: no mutate <kind>`` before each anchor of ``scope``, searched in order from ``def_line``
    (kind ``"line"``: ``# pragma: no mutate`` at the end of the anchor's line)."""
    i = next((n for n, line in enumerate(lines) if line.startswith(def_line)), len(lines))
    for kind, anchor in scope:
        while i < len(lines) and not lines[i].strip().startswith(anchor):
            i += 1
        if i == len(lines):
            raise SystemExit(f"tools/mutate.py: {name} anchor {anchor!r} not found in order after {def_line.strip()!r} "
                             f"in osdpm_lib/train.py: update {name} to the code")
        if kind == "line":      # this one line: mutmut's end-of-line pragma
            lines[i] = lines[i].rstrip("\n") + "  # pragma: no mutate\n"
            i += 1
            continue
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines.insert(i, f"{indent}# pragma: no mutate {kind}\n")
        i += 2


def _scope_train(path: Path) -> None:
    """Insert TRAIN_SCOPE's and DDP_SCOPE's pragmas into the copy of train.py at ``path`` (the repository's file is
    not changed)."""
    lines = path.read_text().splitlines(keepends=True)
    _pragmas(lines, "def _train(", TRAIN_SCOPE, "TRAIN_SCOPE")
    for def_line, scope in DDP_SCOPE:
        _pragmas(lines, def_line, scope, "DDP_SCOPE")
    path.write_text("".join(lines))


STATUS = re.compile(r"^\s*(\S+): (\S.*)$")


def _layout(target: str) -> Path:
    module, tests, _ = TARGETS[target]
    work = WORK / target
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "osdpm_lib", work / "osdpm_lib", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject += ("\n[tool.mutmut]\n"
                  f"source_paths = [\"osdpm_lib\"]\n"
                  f"only_mutate = [{json.dumps(module)}]\n"
                  f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
                  "pytest_add_cli_args = [\"-q\", \"-x\", \"-p\", \"no:randomly\"]\n")
    (work / "pyproject.toml").write_text(pyproject)
    if target == "train":
        _scope_train(work / module)
    return work


def _mutmut(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(cmd, cwd=work, env=env, check=check, text=True, capture_output=args[0] != "run")


def statuses(work: Path) -> dict[str, str]:
    """mutant name -> mutmut status (killed, survived, no tests, timeout, ...) of the run in ``work``."""
    out = _mutmut(work, "results", "--all", "true").stdout
    return {m.group(1): m.group(2).strip() for line in out.splitlines() if (m := STATUS.match(line))}


def score(status: dict[str, str]) -> dict:
    """Counts per status and the share of mutants killed (timeouts and segfaults count as killed)."""
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    dead = sum(counts.get(s, 0) for s in ("killed", "timeout", "segfault", "caught by type check"))
    tested = sum(v for k, v in counts.items() if k not in ("not checked", "skipped"))
    return {"counts": counts, "killed": dead, "tested": tested,
            "score": round(100.0 * dead / tested, 1) if tested else float("nan")}


def run(target: str, max_children: int, full: bool = False) -> dict:
    work = _layout(target)
    globs = TARGETS[target][2] or []
    if full:    # every mutant of the target's functions, not the sample
        globs = [g.replace("__mutmut_*[05]", "__mutmut_*") for g in globs]
    t0 = time.time()
    _mutmut(work, "run", "--max-children", str(max_children), *globs, check=False)
    st = statuses(work)
    if globs:   # mutmut lists every mutant of the module; keep those of the selected functions
        st = {k: v for k, v in st.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
    result = {"target": target, "module": TARGETS[target][0], "tests": TARGETS[target][1],
              "wall_s": round(time.time() - t0), **score(st),
              "survivors": sorted(k for k, v in st.items() if v not in ("killed", "timeout", "segfault"))}
    (work / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def rerun(target: str, max_children: int) -> dict:
    """Test the survivors of the last run of ``target`` again, with the current ``tests/`` (after tests were added
    for them); the other mutants keep their results (a test added cannot revive a killed mutant).  The module itself
    must be unchanged since that run.  Where the target's test selection changed since (mutmut would then drop every
    result), the survivors are tested in a fresh layout."""
    module, tests, _ = TARGETS[target]
    work = WORK / target
    summary = json.loads((work / "summary.json").read_text())
    if target != "train" and (work / module).read_text() != (ROOT / module).read_text():   # (train: the copy has
        # TRAIN_SCOPE's pragmas)
        raise SystemExit(f"{module} changed since the last run of {target}: run it again in full")
    if f"pytest_add_cli_args_test_selection = {json.dumps(tests)}" in (work / "pyproject.toml").read_text():
        shutil.rmtree(work / "tests")
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        work = _layout(target)
    t0 = time.time()
    before = summary["survivors"]
    if before:
        _mutmut(work, "run", "--max-children", str(max_children), *before, check=False)
    st = {k: v for k, v in statuses(work).items() if k in before}
    newly = sum(v in ("killed", "timeout", "segfault") for v in st.values())
    left = sorted(k for k in before if st.get(k) not in ("killed", "timeout", "segfault"))
    result = {**summary, "rerun_wall_s": round(time.time() - t0), "survivors_before": before,
              "killed": summary["killed"] + newly, "score": round(100.0 * (summary["killed"] + newly)
                                                                   / summary["tested"], 1),
              "survivors": left}
    (work / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def show(target: str) -> None:
    work = WORK / target
    summary = json.loads((work / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "survivors"}))
    for name in summary["survivors"]:
        print(_mutmut(work, "show", name).stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    ap.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--full", action="store_true", help="every mutant of a sampled target (train), not its sample")
    ap.add_argument("--show", action="store_true", help="print the survivors of finished runs with their diffs")
    ap.add_argument("--rerun", action="store_true",
                    help="test the survivors of the last run again with the current tests (after adding tests)")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    for t in args.targets or TARGETS:
        if args.show:
            show(t)
            continue
        r = rerun(t, args.max_children) if args.rerun else run(t, args.max_children, args.full)
        print(f"{t}: {r['score']}% killed ({r['killed']}/{r['tested']}) in {r['wall_s']} s; "
              f"{len(r['survivors'])} left: {', '.join(r['survivors']) or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
