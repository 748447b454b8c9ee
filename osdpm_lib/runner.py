"""The notebook chain: executes ``notebooks/NN_*.py`` (jupytext sources) in order with papermill into
``results/<name>/``.

Each notebook runs with its working directory set to its results folder and receives every path explicitly,
relative to the project root (``osdpm_lib.paths``: notebooks read relative paths from the
root, never from the working directory), so that the stored notebook re-executes unchanged (nbval) from where it
lies and holds no machine path.

    python -m osdpm_lib.runner                         # the embedded benchmark, default profile
    python -m osdpm_lib.runner --profile ci --name ci  # small, for CI
    python -m osdpm_lib.runner --batch sets.yml        # one chain per parameter set
    python -m osdpm_lib.runner --only 04_evaluate      # rerun some notebooks of a chain
    python -m osdpm_lib.runner --dataset data/rsicd --name rsicd_vitb32 --profile finetune \
        --model ViT-B-32 --pretrained openai           # a real data set, a pretrained backbone (GPU)
    python -m osdpm_lib.runner --dataset data/rsitmd --name rsitmd_vitb32 --profile finetune \
        --model ViT-B-32 --pretrained openai --val-fraction 0.1 --retrain-full   # no val split: carve one
    python -m osdpm_lib.runner --dataset data/rsicd --name rsicd_vitb32 --profile finetune \
        --model ViT-B-32 --pretrained CKPT.pt --smoke    # the whole book at its smallest, on CPU, in minutes
    python -m osdpm_lib.runner --profile ci --set epochs=1 --set seeds=0,1 --set baselines.epochs=1

``--set KEY=VALUE`` (and ``--smoke``: ``osdpm_lib.settings.SMOKE``) overrides a field of the chain's profile (a
``TrainConfig`` field, ``seeds``, a data-size key; ``baselines.KEY`` for notebook 08's), read as
``python -m osdpm_lib.train --set`` reads it (``osdpm_lib.settings``).  Every notebook gets the overrides
(parameter ``overrides``), and the chain runs as ``<name>.smoke`` or ``<name>.set-<hash>``: its own ``data/``,
``runs/`` and ``results/`` folders, so it never reuses nor overwrites the chain without them.  In a ``--batch``
file a set takes them as ``set: {epochs: 1, seeds: [0]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import yaml
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from . import profiles, settings
from .paths import ROOT, relative

NOTEBOOKS_DIR = ROOT / "notebooks"
STUDY_DIR = NOTEBOOKS_DIR / "study"     # the study's chain (make study): its own numbered notebooks


class _IPCKernelManager(AsyncKernelManager):
    """The kernels of the chain talk over IPC sockets (local files) instead of TCP: the same execution, without
    ipykernel's "Kernel is running over TCP without encryption" warning on every notebook."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"


# Notebooks that run only when asked for (``--only NN``); none at present (the comparison systems of notebook 08 run
# in every chain since their backbone is pretrained offline: osdpm_lib.baselines.pretrain).
ON_REQUEST: tuple[str, ...] = ()


def notebooks(only: list[str] | None = None, source: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chain's notebooks in order (``only``: those whose name starts with one of these prefixes, including
    the :data:`ON_REQUEST` ones); ``source``: the folder of the chain's sources (:data:`STUDY_DIR`: the study's)."""
    found = sorted(Path(source).glob("[0-9][0-9]_*.py"))
    if only:
        found = [p for p in found if any(p.stem.startswith(o) for o in only)]
        if not found:
            raise SystemExit(f"no notebook matches {only}")
        return found
    return [p for p in found if p.stem not in ON_REQUEST]


def chain_parameters(name: str, profile: str, dataset: str = "embedded", results_root: Path = ROOT / "results",
                     runs_root: Path = ROOT / "runs", overrides: dict | None = None, **extra) -> tuple[Path, dict]:
    """The results folder of a chain and the parameters every notebook gets (paths relative to the project root:
    :func:`osdpm_lib.paths.relative`).  ``overrides`` of the profile (``KEY=VALUE`` texts or a mapping:
    :func:`osdpm_lib.settings.parse`) rename the chain (:func:`osdpm_lib.settings.chain_name`) and reach every
    notebook as its ``overrides`` parameter."""
    overrides = settings.parse(overrides or {}, profile)
    settings.apply(profile, overrides)       # a value the configuration refuses stops here, before any notebook
    name = settings.chain_name(name, overrides)
    out = Path(results_root) / name
    data_dir, runs_dir = profiles.chain_folders(name, dataset, runs_root)
    params = {"dataset": dataset if dataset == "embedded" else relative(dataset), "profile": profile,
              "data_dir": relative(data_dir), "out_dir": relative(out), "runs_dir": relative(runs_dir),
              "overrides": json.loads(json.dumps(overrides))}   # as papermill writes it: a tuple as a list
    for key in ("pretrained",):          # a local checkpoint path: relative to the project root too
        if extra.get(key) and Path(extra[key]).exists():
            extra[key] = relative(extra[key])
    params.update(extra)
    return out, params


def run_chain(name: str, profile: str = "default", dataset: str = "embedded", only: list[str] | None = None,
              results_root: Path = ROOT / "results", log=print, runs_root: Path = ROOT / "runs",
              source: Path = NOTEBOOKS_DIR, parameters: dict | None = None, **extra) -> list[Path]:
    """Execute the chain's notebooks (``only``: name prefixes) into ``results_root/<name>``; ``parameters`` replace
    the chain's notebook parameters after they are made (e.g. ``{"profile": "full"}``: notebook 08 at a baseline
    profile other than the chain's)."""
    out, params = chain_parameters(name, profile, dataset, results_root, runs_root, **extra)
    params.update(parameters or {})
    name = out.name          # with overrides: <name>.smoke, <name>.set-<hash>
    out.mkdir(parents=True, exist_ok=True)
    if not only:     # a whole chain: record the numeric environment its numbers depend on
        from .train import numeric_environment
        (out / "environment.json").write_text(json.dumps(numeric_environment(), indent=2) + "\n")
    done = []
    for src in notebooks(only, source):
        nb = jupytext.read(src)
        declared = pm.inspect_notebook(_write_tmp(nb, out / f".{src.stem}.src.ipynb"))
        own = {k: v for k, v in params.items() if k in declared}
        target = out / f"{src.stem}.ipynb"
        t0 = time.perf_counter()
        with _no_progress_bars():
            pm.execute_notebook(out / f".{src.stem}.src.ipynb", target, parameters=own, cwd=str(out),
                                kernel_name="python3", progress_bar=False, report_mode=False,
                                kernel_manager_class=_IPCKernelManager)
        (out / f".{src.stem}.src.ipynb").unlink()
        problems = _record_source(target, src)
        shown = target.relative_to(results_root.parent) if target.is_relative_to(results_root.parent) else target
        log(f"[{name}] {src.name} -> {shown} ({time.perf_counter() - t0:.1f} s)")   # one line per notebook
        for problem in problems:
            log(f"[{name}] {target.name}: {problem}")
        done.append(target)
    return done


@contextlib.contextmanager
def _no_progress_bars():
    """The chain's kernels run with ``TQDM_DISABLE=1`` (unless the caller set it): a progress bar saved into an
    executed notebook is noise either way (text chunks, or widget state with ipywidgets); the runner logs the time of
    each notebook instead.  Stepping through in JupyterLab draws widget bars."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)


def _record_source(target: Path, src: Path) -> list[str]:
    """Papermill records where it read and wrote a notebook as absolute paths: record the jupytext source and the
    executed notebook relative to the project root instead.  Returns what :func:`noise` finds in it."""
    nb = nbformat.read(target, as_version=4)
    record = nb.metadata.setdefault("papermill", {})
    record["input_path"], record["output_path"] = relative(src), relative(target)
    nbformat.write(nb, target)
    return noise(nb, target)


# An absolute POSIX path of two components or more (not the tail of a relative path or a URL), a Windows drive path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])/(?:[\w.@+-]+/)+[\w.@+-]*|\b[A-Za-z]:\\[\w.\\-]+")
# Warnings (``UserWarning: ...``, ``WARNING:root:...``), open_clip's random-init note.
_NOISE = re.compile(r"\b\w*Warning: |^WARNING\b|No pretrained weights loaded|initialized randomly|warnings\.warn\(", re.M)
_TEXT_BAR = re.compile(r"\r[^\n\r]*\d+%\|")     # a tqdm text bar (no ipywidgets): one chunk per update saved
_TEXT_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def noise(nb: nbformat.NotebookNode | str | Path, name: str | Path = "") -> list[str]:
    """What an executed notebook should not hold: absolute machine paths (anywhere but in images), warnings and
    text progress bars in its outputs, error outputs.  One line per finding, naming the cell."""
    if not isinstance(nb, nbformat.NotebookNode):
        name = name or nb
        nb = nbformat.read(nb, as_version=4)
    where = f"{name}: " if name else ""
    found = []

    def paths_in(text: str, place: str) -> None:
        found.extend(f"{where}{place}: absolute path {m!r}" for m in dict.fromkeys(_ABSOLUTE_PATH.findall(text)))

    paths_in(json.dumps(nb.metadata), "notebook metadata")
    for i, cell in enumerate(nb.cells):
        place, bars = f"cell {i}", 0
        paths_in(cell.source, place)
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"{where}{place}: error output {out.get('ename')}: {out.get('evalue', '')[:200]}")
                continue
            if out.output_type == "stream":
                texts = [out.text]
            else:
                texts = [v if isinstance(v, str) else json.dumps(v) for k, v in out.get("data", {}).items()
                         if k in _TEXT_MIME or k.endswith("+json")]
            for text in texts:
                paths_in(text, place)
                found.extend(f"{where}{place}: noise {m.group(0).strip()!r} in "
                             f"{text[max(0, m.start() - 60):m.end() + 60].strip()!r}"
                             for m in _NOISE.finditer(text))
                bars += len(_TEXT_BAR.findall(text))
        if bars:
            found.append(f"{where}{place}: {bars} text progress-bar chunks (tqdm without ipywidgets)")
    return found


def batch_sets(path: Path, profile: str = "default") -> list[dict]:
    """The parameter sets of a ``--batch`` file, each a mapping with a ``name``; a set's ``set:`` mapping (the
    profile's overrides, as ``--set``) is checked here, before any chain runs, and passed on as ``overrides``."""
    sets = yaml.safe_load(Path(path).read_text())
    if not isinstance(sets, list) or not all(isinstance(s, dict) and "name" in s for s in sets):
        raise SystemExit(f"{path}: expected a YAML list of mappings, each with a 'name'")
    out = []
    for s in sets:
        s = dict(s)
        changes = s.pop("set", None) or {}
        if not isinstance(changes, dict):
            raise SystemExit(f"{path}: set {s['name']!r}: 'set' must be a mapping KEY: VALUE, got {changes!r}")
        try:
            s["overrides"] = settings.parse(changes, s.get("profile", profile), flag=f"{path}: set {s['name']!r}:")
        except settings.UsageError as exc:
            raise SystemExit(f"error: {exc}") from None
        out.append(s)
    return out


def _write_tmp(nb: nbformat.NotebookNode, path: Path) -> Path:
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osdpm_lib.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--name", default=None, help="results folder name (default: embedded, or the profile when not default)")
    ap.add_argument("--dataset", default="embedded", help="'embedded' or the path of a real dataset folder")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    ap.add_argument("--model", help="open_clip model name, e.g. ViT-B-32 (default: the notebooks' osdpm-tiny-vit)")
    ap.add_argument("--pretrained", help="open_clip pretrained tag (openai, ...) or a local checkpoint "
                                         "(.pt/.safetensors: RemoteCLIP, GeoRSCLIP)")
    ap.add_argument("--val-fraction", type=float, help="data without a val split: carve this share of train "
                                                         "(seeded per run seed; TrainConfig.val_fraction)")
    ap.add_argument("--retrain-full", action="store_true", help="after selection, retrain on train+val at the "
                                                                 "selected epoch (each run's full/ folder)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter (VALUE read as YAML), for the notebooks that declare it, e.g. "
                         "--study --only 01 -p budget_s 9000")
    ap.add_argument("--study", action="store_true", help="the study's notebooks (notebooks/study -> results/study; "
                                                          "make study trains their runs first)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="override a field of the profile (a TrainConfig field, seeds, n_images, ...; baselines.KEY "
                         "for notebook 08's), e.g. --set epochs=1 --set seeds=0 (repeatable); the chain runs as "
                         "<name>.set-<hash>")
    ap.add_argument("--smoke", action="store_true", help="the smallest meaningful chain, to check the whole book on "
                                                         f"your data and checkpoint on CPU: {settings.SMOKE} "
                                                         "(--set wins over it); the chain runs as <name>.smoke")
    ap.add_argument("--batch", type=Path, help="YAML list of parameter sets; each needs 'name', may set profile, dataset, "
                                               "model, pretrained, ..., and set: {KEY: VALUE, ...} (as --set)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.batch:
            for s in batch_sets(args.batch, args.profile):
                run_chain(s.pop("name"), s.pop("profile", args.profile), s.pop("dataset", args.dataset), args.only,
                          **s)
        else:
            overrides = (settings.SMOKE if args.smoke else {}) | settings.parse(args.sets, args.profile)
            if args.study:
                if overrides:
                    raise SystemExit("error: --set and --smoke change a chain's profile; the study (--study) has its "
                                     "own configurations (osdpm_lib/study.py)")
                run_chain(args.name or "study", args.profile, args.dataset, args.only, source=STUDY_DIR,
                          **{k: yaml.safe_load(v) for k, v in args.param})
            else:
                name = profiles.chain_name(args.profile, args.name)
                extra = {k: v for k, v in (("model", args.model), ("pretrained", args.pretrained),
                                           ("val_fraction", args.val_fraction), ("retrain_full", args.retrain_full),
                                           ("overrides", overrides)) if v}
                extra |= {k: yaml.safe_load(v) for k, v in args.param}
                # -p profile X: the notebooks' profile parameter (notebook 08's baseline profile), not the chain's
                if "profile" in extra:
                    extra["parameters"] = {"profile": extra.pop("profile")}
                run_chain(name, args.profile, args.dataset, args.only, **extra)
    except settings.UsageError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"book finished in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
