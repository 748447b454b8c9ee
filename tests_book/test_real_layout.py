"""The README's real-data runbook end to end, offline: an archive in the layout of a published data set
(Karpathy json + images, no ground truth) is prepared by ``data_prep/download.py`` from a ``file://`` URL and
the whole book runs on it with ``--dataset`` (CI-size profile), into a temporary results folder."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from osdpm_lib import synth
from osdpm_lib.runner import run_chain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real_layout")
    src = tmp / "src"
    synth.generate(src, n_images=200, seed=5, image_size=64)
    (src / synth.GT_NAME).unlink()                                  # a real data set has no boxes
    archive = tmp / "RSITMD.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(next(src.glob("dataset*.json")), "RSITMD/dataset_RSITMD.json")
        for img in sorted((src / "images").iterdir()):
            z.write(img, f"RSITMD/images/{img.name}")
    shutil.rmtree(src)
    root = tmp / "data"
    cmd = [sys.executable, "data_prep/download.py", "rsitmd", "--root", str(root), "--url", archive.as_uri(),
           "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = tmp / "results"
    notebooks = run_chain("real", "ci", str(root / "rsitmd"), results_root=results, runs_root=tmp / "runs",
                          log=lambda *a: None)
    return results / "real", notebooks


def test_every_notebook_ran(chain):
    out, notebooks = chain
    from osdpm_lib.runner import notebooks as chain_notebooks

    assert [p.name for p in notebooks] == [p.stem + ".ipynb" for p in chain_notebooks()]   # every notebook of the chain
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, nb.name


def test_tables_measured_on_the_dataset(chain):
    out, _ = chain
    runs = pd.read_csv(out / "tables" / "ablation_runs.csv")
    assert set(runs.variant) == {"zero-shot", "frozen", "clip", "clip+dapn", "osdpm"} and len(runs) == 1 + 4 * 3
    assert runs.rsum.between(0, 600).all()
    table2 = pd.read_csv(out / "tables" / "table2_rsitmd.csv")
    assert table2.astype(str).apply(lambda col: col.str.contains("RSITMD test \\(measured here\\)")).any().any()


def test_no_ground_truth_no_pointing_game(chain):
    out, _ = chain
    assert not (out / "tables" / "pointing_game.csv").exists()
    text = (out / "07_figures.ipynb").read_text()
    assert "no ground truth: pointing game skipped" in text
