"""The faults of issue 19, planted one at a time in a copy of ``osdpm_lib``: each must fail the tests that guard it.

    python tools/plant_faults.py              # every fault
    python tools/plant_faults.py prior_of_other_images

All faults are planted in one process (the library is imported once): the function that holds the original text
runs the faulty text instead while pytest runs the guarding tests, then the original is restored.  A fault whose
original text is no longer in one function is reported as ``stale`` (the code changed: update the fault to the new
code).  Exit status 1 if any fault survives.  Run it from the repository root with ``PYTHONPATH=$PWD``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (file, original text, faulty text, pytest arguments of the tests that must fail)
FAULTS = {
    "epochs_selected_on_test": (
        "osdpm_lib/train.py", "val_enc = encode_split(model, bundle.val,", "val_enc = encode_split(model, bundle.test,",
        ["tests/test_selection.py", "-k", "selection"]),
    "last_of_tied_best_epochs": (
        "osdpm_lib/train.py", '(val["rsum"] > best["rsum"])', '(val["rsum"] >= best["rsum"])',
        ["tests/test_selection.py", "-k", "selection"]),
    "prior_of_other_images": (
        "osdpm_lib/train.py", "prior[idx.to(device)]", "prior[idx.flip(0).to(device)]",
        ["tests/test_selection.py", "-k", "prior"]),
    "one_collaborative_round": (
        "osdpm_lib/models.py", "for _ in range(self.rounds):", "for _ in range(1):",
        ["tests/test_dapn.py"]),
    "context_without_channel_weights": (
        "osdpm_lib/models.py", "context = (x * a_c[:, :, None, None] * a_s).sum(dim=(2, 3))",
        "context = (x * a_s).sum(dim=(2, 3))", ["tests/test_dapn.py"]),
    "channel_weights_without_spatial_map": (
        "osdpm_lib/models.py", "desc = (x * a_s).sum(dim=(2, 3))", "desc = x.mean(dim=(2, 3))",
        ["tests/test_dapn.py"]),
    "reverse_kl_with_clamped_prior": (
        "osdpm_lib/losses.py", "kl = (torch.xlogy(p, p) - p * log_q).sum(dim=1)",
        "kl = (log_q.exp() * (log_q - torch.log(p.clamp_min(1e-6)))).sum(dim=1) * keep",
        ["tests/test_losses.py"]),
    "generator_ignores_seed": (
        "osdpm_lib/synth/__init__.py", "rng = _rng(seed, 0x5EED)\n", "rng = _rng(0, 0x5EED)\n",
        ["tests/test_synth.py", "-k", "depend_on_seed"]),
}


def _function_of(file: str, old: str):
    """(module, function) of the function in ``file`` whose source holds ``old`` (module-level or method)."""
    import importlib
    import inspect

    module = importlib.import_module(file.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
    for obj in vars(module).values():
        candidates = [obj] if inspect.isfunction(obj) else list(vars(obj).values()) if inspect.isclass(obj) else []
        for fn in candidates:
            if not (inspect.isfunction(fn) and fn.__module__ == module.__name__):
                continue
            try:
                if old in inspect.getsource(fn):
                    return module, fn
            except (OSError, TypeError):   # generated code (dataclass methods) has no source
                continue
    return module, None


def plant(name: str) -> str:
    """'caught' (a guarding test failed), 'SURVIVED' or 'stale'.

    In this process: the function holding the original text gets the code of its faulty version (``__code__``, so
    every reference to it sees the fault, also names imported elsewhere), pytest runs the guarding tests, and the
    original code is put back."""
    import inspect
    import textwrap

    import pytest

    file, old, new, tests = FAULTS[name]
    module, fn = _function_of(file, old)
    if fn is None or inspect.getsource(fn).count(old) != 1:
        print(f"{name}: stale (the text to replace is not in one function of {file})", flush=True)
        return "stale"
    src = textwrap.dedent(inspect.getsource(fn)).replace(old, new)
    scope: dict = {}
    exec(compile(src, f"<fault {name}>", "exec"), vars(module).copy(), scope)
    original = fn.__code__
    fn.__code__ = scope[fn.__name__].__code__
    try:
        rc = pytest.main(["-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider", *tests])
    finally:
        fn.__code__ = original
    print(f"{name}: {'caught' if rc == 1 else f'pytest exit {int(rc)}'}", flush=True)
    return "caught" if rc == 1 else "SURVIVED"


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    names = (argv if argv is not None else sys.argv[1:]) or list(FAULTS)
    results = {n: plant(n) for n in names}
    for n, r in results.items():
        print(f"{r:9s} {n}")
    return int(any(r != "caught" for r in results.values()))


if __name__ == "__main__":
    sys.exit(main())
