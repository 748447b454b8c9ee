"""Executed notebooks hold no machine path and no warning noise (runner.noise), and the stored ones in results/ pass."""

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from osdpm_lib import runner

ROOT = Path(__file__).resolve().parents[1]
STORED = sorted((ROOT / "results").glob("**/*.ipynb"))


def _nb(*outputs, source="x = 1", metadata=None):
    nb = new_notebook(cells=[new_markdown_cell("# t"), new_code_cell(source, outputs=list(outputs))])
    nb.metadata.update(metadata or {})
    return nb


def test_clean_notebook_passes():
    html = '<table class="dataframe"><tr><td>i2t / t2i</td><td>1/5</td></tr></table>'
    nb = _nb(new_output("stream", name="stdout", text="RSICD annotations not found at ../shared/data/rsicd; skipped\n"
                                                      "see https://doi.org/10.11999/JEIT240946 and runs/ci/clip_s0\n"),
             new_output("display_data", data={"text/html": html, "text/plain": "method  rsum\nclip  387.27",
                                              "image/png": "iVBORw0KGgo/work/abc/def+/xyz=="}),
             source='data_dir = "data/ci"\nout_dir = "results/ci"',
             metadata={"papermill": {"input_path": "notebooks/04_evaluate.py",
                                     "output_path": "results/ci/04_evaluate.ipynb"}})
    assert runner.noise(nb) == []


@pytest.mark.parametrize("output, expected", [
    (new_output("stream", name="stderr", text="/home/u/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: "
                                              "TqdmWarning: IProgress not found.\n"), ["absolute path", "TqdmWarning"]),
    (new_output("stream", name="stderr", text="No pretrained weights loaded for model 'osdpm-tiny-vit'. "
                                              "Model initialized randomly.\n"), ["No pretrained weights"]),
    (new_output("stream", name="stderr", text="WARNING:root:something\n"), ["WARNING"]),
    (new_output("stream", name="stderr", text="\rclip s0 epoch 1/2:   0%|   | 0/4\rclip s0 epoch 1/2:  25%|█ | 1/4"),
     ["2 text progress-bar chunks"]),
    (new_output("execute_result", data={"text/plain": "PosixPath('/work/main/data/ci')"}, execution_count=1),
     ["absolute path '/work/main/data/ci'"]),
    (new_output("error", ename="FileNotFoundError", evalue="runs/embedded/clip_s0/test_metrics.json",
                traceback=[]), ["error output FileNotFoundError"]),
])
def test_noise_is_named_with_its_cell(output, expected):
    found = runner.noise(_nb(output), "nb.ipynb")
    assert found and all(f.startswith("nb.ipynb: cell 1: ") for f in found), found
    for e in expected:
        assert any(e in f for f in found), (e, found)


def test_machine_paths_in_sources_and_metadata():
    nb = _nb(source='data_dir = "/srv/book/data/ci"', metadata={"papermill": {"input_path": "C:\\\\book\\\\x.ipynb"}})
    found = runner.noise(nb)
    assert any("cell 1: absolute path '/srv/book/data/ci'" in f for f in found), found
    assert any(f.startswith("notebook metadata: absolute path 'C:") for f in found), found


def test_record_source_makes_papermill_paths_relative(tmp_path):
    target = tmp_path / "04_evaluate.ipynb"
    nbformat.write(_nb(metadata={"papermill": {"input_path": str(tmp_path / ".04.src.ipynb"),
                                               "output_path": str(target)}}), target)
    src = ROOT / "notebooks" / "04_evaluate.py"
    runner._record_source(target, src)
    record = nbformat.read(target, as_version=4).metadata.papermill
    assert record.input_path == "notebooks/04_evaluate.py"
    assert not Path(record.output_path).is_absolute() and record.output_path.endswith("04_evaluate.ipynb")


@pytest.mark.parametrize("path", STORED, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_stored_executed_notebooks_are_clean(path):
    """Fails on notebooks executed before the runner recorded relative paths and before ipywidgets: regenerate
    them (`make book`, `make book-ci`)."""
    found = runner.noise(path, path.relative_to(ROOT))
    assert not found, "\n".join(found[:20]) + (f"\n... {len(found) - 20} more" if len(found) > 20 else "")
