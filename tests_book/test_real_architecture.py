"""The real architecture on CPU, as a researcher checks it before renting a GPU: open_clip ViT-B-32 with random
weights, saved by the test as a local ``.pt`` state dict (as RemoteCLIP ships its weights), at 224 px (DAPN on the
7x7 patch grid), on a handful of real-layout images (Karpathy json + ``images/``, JPEG and TIFF, no ground truth),
``finetune`` profile through the runner's smoke overrides (``osdpm_lib.settings.SMOKE``: 1 seed, 1 epoch, batch 16).
Notebooks 01-07 run (08's eleven ResNet-18 systems at 224 px are left to the README's smoke run: ``make test``'s
budget); Table 3 must hold measured rows and the figures must exist."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osdpm_lib import settings
from osdpm_lib.ablation import ROWS
from osdpm_lib.profiles import run_name
from osdpm_lib.runner import noise, run_chain

CAPTIONS = {      # RSICD-like captions naming the lexicon's objects
    "airport": ["many planes are parked near a runway .", "an airport with a long runway and some planes .",
                "several airplanes are next to the terminal .", "a plane is on the runway near green grass .",
                "the airport has two runways and many planes ."],
    "parking": ["many cars are parked in a parking lot .", "a parking lot with rows of cars .",
                "lots of cars are parked near a building .", "some cars are in the parking lot beside a road .",
                "cars of different colors are parked in lines ."],
    "river": ["a river goes through the green forest .", "a bridge is over the river .",
              "the river is next to some buildings and trees .", "a curved river with trees on both sides .",
              "green trees are on both sides of the river ."],
    "harbor": ["many boats are docked in the harbor .", "some ships are in the port near the pier .",
               "boats are parked along the dock .", "a harbor with many white boats .",
               "several boats are in the water near the port ."],
}
SPLITS = ["train"] * 8 + ["val"] * 4 + ["test"] * 4
N_CAPTIONS = 3           # of each image's five: 24 training pairs, two steps of the smoke's batch 16
SMOKE_NOTEBOOKS = ["01", "02", "03", "04", "05", "06", "07"]
pytestmark = pytest.mark.real_architecture      # make test-real (.ci/run): minutes on CPU, beyond make test's budget


def real_layout(folder: Path, seed: int = 0) -> Path:
    """``folder/dataset_realmini.json`` + ``folder/images/``: 16 images of 256 px, RSICD-like JPEGs and UCM-like
    TIFFs, named ``<scene>_<n>``, each a scene colour with objects (bright rectangles) and noise."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    scenes = list(CAPTIONS)
    records = []
    for i, split in enumerate(SPLITS):
        scene = scenes[i % len(scenes)]
        name = f"{scene}_{i}.{'jpg' if i % 2 else 'tif'}"
        img = np.clip(rng.normal(60 + 40 * scenes.index(scene), 25, (256, 256, 3)), 0, 255)
        for _ in range(int(rng.integers(3, 8))):
            y, x = rng.integers(0, 224, 2)
            img[y:y + 24, x:x + 32] = rng.integers(150, 256, 3)
        Image.fromarray(img.astype(np.uint8)).save(folder / "images" / name)
        records.append({"filename": name, "imgid": i, "split": split,
                        "sentences": [{"raw": c, "tokens": c.split()} for c in CAPTIONS[scene][:N_CAPTIONS]]})
    (folder / "dataset_realmini.json").write_text(json.dumps({"dataset": "realmini", "images": records}))
    return folder


def random_checkpoint(path: Path) -> Path:
    """A randomly initialised open_clip ViT-B-32 saved as a plain state dict (float16: half the file)."""
    import torch

    from osdpm_lib.models import build_clip

    torch.manual_seed(0)
    model = build_clip("ViT-B-32")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vitb32")
    data = real_layout(tmp / "realmini")
    ckpt = random_checkpoint(tmp / "ViT-B-32_random.pt")
    t0 = time.perf_counter()
    done = run_chain("realmini", "finetune", str(data), only=SMOKE_NOTEBOOKS, results_root=tmp / "results",
                     runs_root=tmp / "runs", log=print, model="ViT-B-32", pretrained=str(ckpt),
                     overrides=settings.SMOKE)
    print(f"ViT-B-32 smoke chain (notebooks {' '.join(SMOKE_NOTEBOOKS)}): {time.perf_counter() - t0:.0f} s")
    return tmp / "results" / "realmini.smoke", tmp / "runs" / "realmini.smoke", done


def test_every_notebook_ran_without_error(chain):
    out, _, done = chain
    assert [p.name[:2] for p in done] == SMOKE_NOTEBOOKS
    for nb in done:
        errors = [f for f in noise(nb) if "error output" in f]
        assert not errors, errors


def test_the_runs_are_vitb32_at_224_px_with_the_smoke_overrides(chain):
    _, runs, _ = chain
    folders = sorted(p.name for p in runs.iterdir() if (p / "config.json").exists())
    assert folders == sorted(run_name(row, 0) for row in ROWS)      # every row, one seed
    cfg = json.loads((runs / "osdpm_s0" / "config.json").read_text())
    assert cfg["model"] == "ViT-B-32" and cfg["pretrained"].endswith("ViT-B-32_random.pt")
    assert (cfg["epochs"], cfg["batch_size"], cfg["epoch_unit"]) == (1, 16, "caption")
    history = pd.read_csv(runs / "osdpm_s0" / "metrics.csv")
    assert list(history.epoch) == [0, 1]          # the untrained start and the one epoch


def test_dapn_runs_on_the_7x7_grid_at_224_px():
    from osdpm_lib.models import build_clip, preprocess_config

    clip = build_clip("ViT-B-32")
    assert preprocess_config(clip)["image_size"] == 224 and clip.visual.grid_size == (7, 7)


def test_table3_has_measured_rows_and_the_figures_exist(chain):
    out, _, _ = chain
    table3 = pd.read_csv(out / "tables" / "table3_ablation.csv")
    measured = table3[table3.measured_here == "yes"]
    assert len(measured) == 5 and measured.evaluated_on.str.contains("measured here").all()
    rsum = pd.to_numeric(measured.rsum.astype(str).str.split(" ").str[0])
    assert rsum.between(0, 600).all() and (pd.to_numeric(measured.seeds) == 1).all()    # the smoke: one seed
    runs = pd.read_csv(out / "tables" / "ablation_runs.csv")
    assert sorted(runs.variant) == sorted(ROWS)
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    for stem in ("03_learning_curve_clip_s0", "05_ablation", "07_attention_maps", "07_embedding_space",
                 "07_retrieval_image_to_text", "07_retrieval_text_to_image", "07_search"):
        assert stem in figures, sorted(figures)
