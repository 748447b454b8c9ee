"""Safe, atomic checkpoint files.

* ``load(path)`` reads a checkpoint **without executing code**: ``.safetensors`` through safetensors, anything
  else through ``torch.load(weights_only=True)``.  A pickle that holds more than tensors and plain containers
  (and so could run code when unpickled) is refused with :class:`CheckpointError`, as is a truncated or
  corrupt file; the message names the file.
* ``load_into(module, state, path, what)`` loads a state dict strictly and, when it does not fit (a checkpoint
  of another architecture), raises :class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.
* ``atomic_path(path)`` / ``save(obj, path)``: write to a temporary file beside ``path`` and rename it into
  place, so that a crash never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot (or must not) be loaded; the message names the file."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:       # data on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """``Path.write_text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically (``.safetensors`` for a flat dict of tensors)."""
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in obj.items()}, str(tmp))
        else:
            torch.save(obj, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The checkpoint at ``path``, read without executing code (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable .safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused: the file pickles Python objects other than tensors and plain containers, "
            f"which could run code when loaded (torch.load with weights_only=True: {reason}). Load only "
            "checkpoints you trust; re-save a trusted one as a plain state dict or as .safetensors."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc


def load_into(module: nn.Module, state: dict, path: str | Path, what: str) -> None:
    """``module.load_state_dict(state)`` (strict); a mismatch raises :class:`CheckpointError` naming ``path``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def some(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")
        parts = [f"{label}: {some(items)}" for label, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape (file vs model)", shapes))
                 if items]
        raise CheckpointError(f"{path}: does not fit {what} (a checkpoint of another architecture?): "
                              + "; ".join(parts))
    module.load_state_dict(state)
