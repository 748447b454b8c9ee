"""The chain runner's parameters: paths relative to the project root, model and checkpoint plumbing."""

import os
from pathlib import Path

import pytest

from osdpm_lib import paths, profiles, runner, settings


def test_paths_are_relative_to_the_project_root(tmp_path):
    ckpt = tmp_path / "ckpt" / "RemoteCLIP-ViT-B-32.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    data = tmp_path / "data" / "rsicd"
    out, params = runner.chain_parameters("rsicd", "finetune", str(data), results_root=tmp_path / "results",
                                          runs_root=tmp_path / "runs", model="ViT-B-32", pretrained=str(ckpt))
    assert out == tmp_path / "results" / "rsicd"
    for key, target in (("data_dir", data), ("runs_dir", tmp_path / "runs" / "rsicd"), ("pretrained", ckpt),
                        ("out_dir", out), ("dataset", data)):
        assert not os.path.isabs(params[key]), key
        assert paths.resolve(params[key]).resolve() == target.resolve(), key
    assert params["model"] == "ViT-B-32" and params["profile"] == "finetune"


def test_the_book_chain_names_project_folders(monkeypatch):
    monkeypatch.chdir(paths.ROOT / "notebooks")
    out, params = runner.chain_parameters("ci", "ci")
    assert out == paths.ROOT / "results" / "ci"
    assert {k: params[k] for k in ("data_dir", "runs_dir", "out_dir", "dataset")} == {
        "data_dir": "data/ci", "runs_dir": "runs/ci", "out_dir": "results/ci", "dataset": "embedded"}
    assert runner.chain_parameters("r", "finetune", "data/rsicd")[1]["data_dir"] == "notebooks/data/rsicd"  # CLI: from the cwd


def test_pretrained_tag_is_passed_as_it_is(tmp_path):
    _, params = runner.chain_parameters("x", "finetune", results_root=tmp_path, pretrained="openai")
    assert params["pretrained"] == "openai"
    assert params["dataset"] == "embedded"
    assert Path(params["data_dir"]).name == "x"


def test_cli_passes_model_and_pretrained(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: seen.update(args=a, kw=kw))
    runner.main(["--dataset", "data/rsicd", "--name", "r", "--profile", "finetune",
                 "--model", "ViT-B-32", "--pretrained", "openai"])
    assert seen["args"] == ("r", "finetune", "data/rsicd", None)
    assert seen["kw"] == {"model": "ViT-B-32", "pretrained": "openai"}
    runner.main(["--profile", "ci"])
    assert seen["args"] == ("ci", "ci", "embedded", None) and seen["kw"] == {}


def test_batch_file_must_be_a_list_of_named_sets(tmp_path):
    bad = tmp_path / "sets.yml"
    bad.write_text("name: only-one\n")
    with pytest.raises(SystemExit, match="expected a YAML list"):
        runner.main(["--batch", str(bad)])


def test_finetune_profile_is_a_small_learning_rate():
    from osdpm_lib import profiles

    cfg = profiles.train_config("finetune", "osdpm", 1, model="ViT-B-32", pretrained="openai")
    assert (cfg.model, cfg.pretrained, cfg.seed, cfg.variant) == ("ViT-B-32", "openai", 1, "osdpm")
    assert cfg.lr <= 1e-5 < cfg.module_lr and cfg.batch_size == 214 and cfg.epoch_unit == "caption"


def test_cli_passes_the_carve_out_and_the_retrain_to_the_notebooks_that_train(monkeypatch, tmp_path):
    import jupytext
    import papermill as pm

    seen = {}
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: seen.update(args=a, kw=kw))
    runner.main(["--dataset", "data/rsitmd", "--name", "r", "--profile", "finetune", "--val-fraction", "0.1",
                 "--retrain-full"])
    assert seen["kw"] == {"val_fraction": 0.1, "retrain_full": True}
    runner.main(["--dataset", "data/rsicd", "--name", "r"])
    assert seen["kw"] == {}
    for nb in runner.notebooks(["03", "05"]):     # papermill passes only the parameters a notebook declares
        path = tmp_path / f"{nb.stem}.ipynb"
        jupytext.write(jupytext.read(nb), path)
        declared = pm.inspect_notebook(path)
        assert {"val_fraction", "retrain_full"} <= set(declared), nb.name


def test_chain_kernels_draw_no_progress_bars(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with runner._no_progress_bars():
        assert os.environ["TQDM_DISABLE"] == "1"
    assert "TQDM_DISABLE" not in os.environ
    monkeypatch.setenv("TQDM_DISABLE", "0")          # the caller's choice stands
    with runner._no_progress_bars():
        assert os.environ["TQDM_DISABLE"] == "0"
    assert os.environ["TQDM_DISABLE"] == "0"


def test_param_option_reaches_the_study_chain(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_chain", lambda name, profile, dataset, only, **kw: seen.update(name=name, **kw))
    runner.main(["--study", "--only", "01", "-p", "budget_s", "9000", "-p", "safety", "1.5"])
    assert seen["name"] == "study" and seen["source"] == runner.STUDY_DIR
    assert seen["budget_s"] == 9000 and seen["safety"] == 1.5


def test_param_profile_is_the_notebooks_not_the_chains(monkeypatch, tmp_path):
    # make baselines-full: the embedded chain's folders, notebook 08 at the baseline profile "full"
    seen = {}
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: seen.update(args=a, kw=kw))
    runner.main(["--name", "embedded_full", "--only", "08", "-p", "profile", "full", "-p", "seeds", "0"])
    assert seen["args"][:2] == ("embedded_full", "default")
    assert seen["kw"] == {"parameters": {"profile": "full"}, "seeds": 0}
    out, params = runner.chain_parameters("embedded_full", "default", results_root=tmp_path, runs_root=tmp_path)
    params.update(seen["kw"]["parameters"])             # what run_chain does with them
    assert params["profile"] == "full" and params["out_dir"].endswith("embedded_full")


def test_set_and_smoke_reach_the_chain_as_overrides(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: seen.update(args=a, kw=kw))
    runner.main(["--dataset", "data/rsicd", "--name", "r", "--profile", "finetune", "--set", "epochs=2",
                 "--set", "seeds=0,1", "--set", "baselines.weights=none"])
    assert seen["kw"] == {"overrides": {"epochs": 2, "seeds": [0, 1], "baselines.weights": None}}
    runner.main(["--profile", "finetune", "--smoke", "--set", "epochs=3"])     # --set wins over --smoke
    assert seen["kw"]["overrides"] == settings.SMOKE | {"epochs": 3}
    runner.main(["--profile", "finetune", "--smoke"])
    assert seen["kw"]["overrides"] == settings.SMOKE


@pytest.mark.parametrize("args, message", [
    (["--profile", "ci", "--set", "epoch=1"], "'epoch' is not a key of profile 'ci'"),
    (["--profile", "finetune", "--set", "baselines.lr=fast"], "baselines.lr takes float"),
    (["--study", "--smoke"], "the study"),
])
def test_bad_overrides_stop_before_any_notebook(args, message, monkeypatch):
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: pytest.fail("a chain ran"))
    with pytest.raises(SystemExit, match=message):
        runner.main(args)


def test_overrides_give_the_chain_its_own_folders_and_reach_every_notebook(tmp_path, profile_tables):
    full, params = runner.chain_parameters("r", "finetune", results_root=tmp_path / "results",
                                           runs_root=tmp_path / "runs")
    assert params["overrides"] == {}
    smoke, sparams = runner.chain_parameters("r", "finetune", results_root=tmp_path / "results",
                                             runs_root=tmp_path / "runs", overrides=settings.SMOKE)
    other, oparams = runner.chain_parameters("r", "finetune", results_root=tmp_path / "results",
                                             runs_root=tmp_path / "runs", overrides=["crop_scale=0.4,1"])
    assert (full.name, smoke.name) == ("r", "r.smoke") and other.name.startswith("r.set-")
    for key in ("data_dir", "runs_dir", "out_dir"):
        assert len({params[key], sparams[key], oparams[key]}) == 3, key
    assert sparams["overrides"] == settings.SMOKE and oparams["overrides"] == {"crop_scale": [0.4, 1.0]}
    # the run identities differ too: the smoke profile's configuration is another run
    smoke_profile = settings.apply("finetune", sparams["overrides"])
    assert profiles.train_config(smoke_profile, "osdpm", 0).key() != profiles.train_config("finetune", "osdpm", 0).key()
    with pytest.raises(settings.UsageError, match="'lr_backbone' is not a key of profile 'finetune'"):
        runner.chain_parameters("r", "finetune", results_root=tmp_path, overrides={"lr_backbone": 1e-5})


def test_every_notebook_with_a_profile_declares_overrides(tmp_path):
    import jupytext
    import papermill as pm

    for nb in runner.notebooks():
        path = tmp_path / f"{nb.stem}.ipynb"
        jupytext.write(jupytext.read(nb), path)
        declared = pm.inspect_notebook(path)
        assert ("overrides" in declared) == ("profile" in declared), nb.name
        if "profile" in declared:
            assert "settings.apply(profile, overrides)" in nb.read_text(), nb.name


def test_batch_sets_take_overrides(tmp_path, monkeypatch):
    sets = tmp_path / "sets.yml"
    sets.write_text("- name: quick\n  profile: ci\n  set: {epochs: 1, seeds: [0], baselines.epochs: 1}\n"
                    "- name: book\n")
    seen = []
    monkeypatch.setattr(runner, "run_chain", lambda *a, **kw: seen.append((a, kw)))
    runner.main(["--batch", str(sets)])
    assert seen[0] == (("quick", "ci", "embedded", None), {"overrides": {"epochs": 1, "seeds": [0],
                                                                          "baselines.epochs": 1}})
    assert seen[1] == (("book", "default", "embedded", None), {"overrides": {}})
    sets.write_text("- name: quick\n  profile: ci\n  set: {epochs: one}\n")
    with pytest.raises(SystemExit, match=r"sets.yml: set 'quick': epochs=one: epochs takes int"):
        runner.main(["--batch", str(sets)])
    sets.write_text("- name: quick\n  set: {epoch: 1}\n")
    with pytest.raises(SystemExit, match=r"'epoch' is not a key of profile 'default'"):
        runner.main(["--batch", str(sets)])
    sets.write_text("- name: quick\n  set: [epochs, 1]\n")
    with pytest.raises(SystemExit, match=r"'set' must be a mapping"):
        runner.main(["--batch", str(sets)])
