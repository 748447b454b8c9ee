"""Notebook paths: read from the project root whatever the working directory; empty folders name the chain's."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

from osdpm_lib import paths

ROOT = Path(__file__).resolve().parents[1]


def test_root_is_the_project():
    assert paths.ROOT == ROOT and (paths.ROOT / "notebooks").is_dir()


@pytest.mark.parametrize("cwd", ["notebooks", "results", "."])
def test_relative_paths_do_not_depend_on_the_working_directory(cwd, monkeypatch):
    monkeypatch.chdir(ROOT / cwd)
    monkeypatch.delenv(paths.CHAIN_ENV, raising=False)
    assert paths.resolve("data/rsicd") == ROOT / "data" / "rsicd"
    assert paths.resolve("../shared/data/rsicd") == ROOT.parent / "shared" / "data" / "rsicd"
    assert paths.resolve("", "data") == ROOT / "data" / "embedded"
    assert paths.resolve("", "runs") == ROOT / "runs" / "embedded"
    assert paths.resolve("", "results") == ROOT / "results" / "embedded"


def test_absolute_paths_stay_and_empty_optional_paths_are_unset(tmp_path):
    assert paths.resolve(str(tmp_path / "x")) == tmp_path / "x"
    assert paths.resolve(tmp_path) == tmp_path
    assert paths.resolve("") is None and paths.resolve(None) is None and paths.resolve("  ") is None
    assert paths.resolve("~/x") == Path.home() / "x"


def test_chain_from_the_environment(monkeypatch):
    monkeypatch.setenv(paths.CHAIN_ENV, "ci")
    assert paths.chain() == "ci"
    assert paths.resolve("", "runs") == ROOT / "runs" / "ci"
    assert paths.resolve("runs/embedded", "runs") == ROOT / "runs" / "embedded"     # an explicit value wins
    monkeypatch.setenv(paths.CHAIN_ENV, "../elsewhere")
    with pytest.raises(ValueError, match="OSDPM_CHAIN='../elsewhere'"):
        paths.resolve("", "data")


def test_unknown_folder_kind():
    with pytest.raises(ValueError, match="folder 'tables'"):
        paths.resolve("", "tables")


def test_relative_is_from_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert paths.relative("../data/rsicd") == "data/rsicd"            # a command-line path: from the cwd
    assert paths.relative(ROOT / "runs" / "ci") == "runs/ci"
    assert paths.relative(ROOT) == "."
    outside = paths.relative(tmp_path / "d")
    assert not os.path.isabs(outside) and outside.startswith("..")
    assert paths.resolve(outside).resolve() == (tmp_path / "d").resolve()


def test_checkpoint_paths_are_read_from_the_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    shipped = "osdpm_lib/weights/osdpm-tiny-vit_synthpre.safetensors"
    assert paths.checkpoint(shipped) == str(ROOT / shipped)
    assert paths.checkpoint("openai") == "openai" and paths.checkpoint("") == ""
    assert paths.checkpoint("synthpre") == "synthpre"
    assert paths.checkpoint(str(tmp_path / "x.pt")) == str(tmp_path / "x.pt")


def _defaults(nb_path: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / (nb_path.stem + ".ipynb")
        nbformat.write(jupytext.read(nb_path), tmp)
        return pm.inspect_notebook(str(tmp))


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
FOLDER_OF = {"data_dir": "data", "runs_dir": "runs", "out_dir": "results"}


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_follow_the_convention(nb_path):
    """Folder parameters default to "" (the chain's folder) and every path parameter is resolved by
    osdpm_lib.paths in the cell right after the parameters (docs/DESIGN.md, "Notebook execution convention")."""
    params = _defaults(nb_path)
    nb = jupytext.read(nb_path)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    resolving = nb.cells[i + 1].source
    assert "from osdpm_lib import paths" in resolving, nb_path.name
    for name, spec in params.items():
        if name in FOLDER_OF:
            assert spec["default"] in ('""', "''"), f"{nb_path.name}: {name} = {spec['default']}"
            assert f'paths.resolve({name}, "{FOLDER_OF[name]}")' in resolving, f"{nb_path.name}: {name}"
        elif name.endswith("_dir"):
            assert not os.path.isabs(spec["default"].strip("\"'")), f"{nb_path.name}: {name}"
            assert f"paths.resolve({name})" in resolving, f"{nb_path.name}: {name}"
        elif name == "pretrained":
            assert "paths.checkpoint(pretrained)" in resolving, nb_path.name


def test_notebook_runs_from_notebooks_and_writes_only_under_the_root(tmp_path):
    """06 (the quickest notebook) executed with its defaults from notebooks/, as JupyterLab does, with its chain's
    results elsewhere: it reads and writes results/<chain>, nothing in notebooks/."""
    chain = "pathtest"
    out = ROOT / "results" / chain
    assert not out.exists(), f"{out} exists: remove it"
    try:
        (out / "tables").mkdir(parents=True)
        src = ROOT / "results" / "ci" / "tables" / "ablation_runs.csv"
        if not src.exists():
            pytest.skip("results/ci/tables/ablation_runs.csv missing")
        (out / "tables" / "ablation_runs.csv").write_bytes(src.read_bytes())
        before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
        nb = tmp_path / "06.ipynb"
        nbformat.write(jupytext.read(ROOT / "notebooks" / "06_tables.py"), nb)
        env = dict(os.environ, **{paths.CHAIN_ENV: chain}, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "06_out.ipynb"),
                               "--cwd", str(ROOT / "notebooks"), "-k", "python3", "--no-progress-bar"],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (out / "tables" / "table1_rsicd.csv").exists()
        assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_folder_outside_the_project_is_named_absolute_in_errors(tmp_path):
    """The runner writes a folder outside the project as ``../../tmp/...`` (no machine path in the notebook); a
    notebook resolves it to the folder itself, so an error names ``/tmp/.../realmini_amfmn``, not ``<root>/../..``."""
    from osdpm_lib import data

    missing = (tmp_path / "realmini_amfmn").resolve()
    param = paths.relative(missing)
    assert param.startswith("..")
    assert paths.resolve(param) == missing
    with pytest.raises(data.AnnotationError) as exc:
        data.load(paths.resolve(param))
    assert str(missing) in str(exc.value) and "/../" not in str(exc.value)
    assert paths.checkpoint(paths.relative(tmp_path)) == str(tmp_path.resolve())
