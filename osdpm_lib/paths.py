"""Where the book's files are: every relative path a notebook takes is read from the project root.

The notebooks run from three working directories: ``notebooks/`` (JupyterLab with jupytext), ``results/<name>/``
(papermill through ``osdpm_lib.runner``, nbval) and the project root.  Their parameters therefore never depend on the
working directory:

* an **empty** folder parameter (``data_dir=""``, ``runs_dir=""``, ``out_dir=""``) names the folder of the current
  chain in the project: ``data/<chain>``, ``runs/<chain>``, ``results/<chain>``;
* a **relative** path is read from the project root (``data/rsicd``, ``../shared/data/rsicd``);
* an **absolute** path is used as it is (a data set or a checkpoint elsewhere on the machine).

The chain is ``embedded`` (the book of ``make book``) unless the environment variable ``OSDPM_CHAIN`` names another
one, e.g. ``OSDPM_CHAIN=ci make lab`` to step through the CI-size chain that ``make book-ci`` / ``make test`` leave
in ``runs/ci`` and ``results/ci``.  The runner passes every path explicitly, relative to the project root
(:func:`relative`), so the executed notebooks in ``results/`` hold no machine path and re-execute from anywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAIN_ENV = "OSDPM_CHAIN"
DEFAULT_CHAIN = "embedded"
FOLDERS = ("data", "runs", "results")      # the per-chain folders of the project


def chain() -> str:
    """The chain whose folders empty parameters name: ``$OSDPM_CHAIN`` or ``embedded``."""
    name = os.environ.get(CHAIN_ENV, "").strip() or DEFAULT_CHAIN
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"{CHAIN_ENV}={name!r}: expected a chain name such as 'embedded' or 'ci' (a folder of "
                         f"results/), not a path")
    return name


def chain_folder(folder: str, name: str | None = None) -> Path:
    """``ROOT/<folder>/<chain>``: the folder (one of :data:`FOLDERS`) of chain ``name`` (default: :func:`chain`)."""
    if folder not in FOLDERS:
        raise ValueError(f"folder {folder!r}: expected one of {FOLDERS}")
    return ROOT / folder / (name or chain())


def resolve(path: str | os.PathLike | None, folder: str | None = None) -> Path | None:
    """The file or folder a notebook parameter names.

    ``folder`` (one of :data:`FOLDERS`) gives the default of an empty value: ``ROOT/<folder>/<chain>``.  Without it
    an empty value stays unset (``None``), e.g. an optional second data set.  A relative path is read from
    :data:`ROOT`, never from the working directory, and normalised (``../../tmp/x`` from the root is ``/tmp/x``: an
    error names the folder the user gave, not ``<root>/../../tmp/x``); ``~`` is expanded.
    """
    if folder is not None and folder not in FOLDERS:
        raise ValueError(f"folder {folder!r}: expected one of {FOLDERS}")
    if path is None or not str(path).strip():
        return chain_folder(folder) if folder else None
    p = Path(path).expanduser()
    return p if p.is_absolute() else _from_root(p)


def _from_root(path: str | os.PathLike) -> Path:
    """A relative path read from :data:`ROOT`, its ``..`` folded away (as a command line would name it)."""
    return Path(os.path.normpath(ROOT / path))


def checkpoint(pretrained: str) -> str:
    """An open_clip ``pretrained`` value with a relative checkpoint path read from the project root.

    Tags (``openai``, ``synthpre``) and empty values are returned unchanged; so is a path that does not exist under
    the root (``models.build_clip`` then names it in its error)."""
    if not pretrained or Path(pretrained).expanduser().is_absolute():
        return pretrained
    candidate = _from_root(pretrained)
    return str(candidate) if candidate.exists() else pretrained


def relative(path: str | os.PathLike) -> str:
    """A path as the project root sees it (POSIX separators; ``..`` for a folder beside the project): how the runner
    writes paths into notebooks and how a notebook prints one, so that no machine path ends up in an executed
    notebook.  A relative ``path`` is taken from the working directory, as on a command line."""
    return Path(os.path.relpath(Path(path).expanduser().resolve(), ROOT)).as_posix()
