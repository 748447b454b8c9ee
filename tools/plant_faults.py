"""The faults of issue 19, planted one at a time in a copy of ``osdpm_lib``: each must fail the tests that guard it.

    python tools/plant_faults.py              # every fault
    python tools/plant_faults.py prior_of_other_images

For each fault the library and its tests are copied to ``build/faults/<name>/``, one source line is replaced, and
pytest runs the guarding tests inside that copy.  A fault whose original text is no longer in the source is
reported as ``stale`` (the code changed: update the fault to the new code).  Exit status 1 if any fault survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "faults"

# name -> (file, original text, faulty text, pytest arguments of the tests that must fail)
FAULTS = {
    "epochs_selected_on_test": (
        "osdpm_lib/train.py", "val = encode_split(model, bundle.val,", "val = encode_split(model, bundle.test,",
        ["tests/test_selection.py", "-k", "selection"]),
    "last_of_tied_best_epochs": (
        "osdpm_lib/train.py", 'if val["rsum"] > best["rsum"]:', 'if val["rsum"] >= best["rsum"]:',
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
        "osdpm_lib/losses.py", "kl = (torch.xlogy(p, p) - p * log_q).sum()",
        "kl = (log_q.exp() * (log_q - torch.log(p.clamp_min(1e-6))) * keep).sum()",
        ["tests/test_losses.py"]),
    "generator_ignores_seed": (
        "osdpm_lib/synth/__init__.py", "rng = _rng(seed, 0x5EED)\n", "rng = _rng(0, 0x5EED)\n",
        ["tests/test_synth.py", "-k", "depend_on_seed"]),
}


def plant(name: str) -> str:
    """'caught' (a guarding test failed), 'SURVIVED' or 'stale'."""
    file, old, new, tests = FAULTS[name]
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    for folder in ("osdpm_lib", "tests"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    src = (work / file).read_text()
    if src.count(old) != 1:
        return "stale"
    (work / file).write_text(src.replace(old, new))
    env = os.environ | {"PYTHONPATH": str(work), "TQDM_DISABLE": "1"}
    # run inside the copy: ``python -m pytest`` puts the working directory first on sys.path
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", *tests], cwd=work, env=env,
                       capture_output=True, text=True)
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith("FAILED")]
    print(f"{name}: {'caught by ' + failed[0][7:].split(' - ')[0] if r.returncode == 1 else 'rc ' + str(r.returncode)}",
          flush=True)
    return "caught" if r.returncode == 1 else "SURVIVED"


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(FAULTS)
    results = {n: plant(n) for n in names}
    for n, r in results.items():
        print(f"{r:9s} {n}")
    return int(any(r != "caught" for r in results.values()))


if __name__ == "__main__":
    sys.exit(main())
