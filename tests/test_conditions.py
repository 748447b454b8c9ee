"""The generator conditions (osdpm_lib.synth.conditions): each keeps the default's scenes, splits and names and
differs from the default in the property that defines it (osdpm_lib.conditions); the mechanism checks on arrays."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from osdpm_lib import conditions as C
from osdpm_lib import synth
from osdpm_lib.synth import conditions as SC

N = 66      # three images per scene: twins in every scene that has something to swap
SIZE = 64
SEED = 3


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditions")
    out = {name: synth.generate(root / name, n_images=N, seed=SEED, image_size=SIZE, condition=name).parent
           for name in SC.CONDITIONS}
    out["default-other-seed"] = synth.generate(root / "other", n_images=N, seed=SEED + 1, image_size=SIZE).parent
    return out


@pytest.fixture(scope="module")
def tables(dirs):
    return {name: C.object_table(d) for name, d in dirs.items()}


def _json(d, name):
    return json.loads((d / name).read_text())


# ---- the registry and the generator's interface -------------------------------------------------------------------


def test_registry_each_condition_one_documented_change():
    assert list(SC.CONDITIONS) == ["default", "small-objects", "ambiguous", "cluttered", "domain-gap"]
    default = SC.CONDITIONS["default"]
    assert default.is_default and synth.CONDITIONS is SC.CONDITIONS
    knobs = [f.name for f in dataclasses.fields(SC.Condition) if f.name not in ("name", "change")]
    for name, cond in SC.CONDITIONS.items():
        assert cond.name == name and cond.change
        changed = [k for k in knobs if getattr(cond, k) != getattr(default, k)]
        if name == "default":
            assert changed == []
        else:     # domain-gap: the sensor and its ground sampling distance
            assert 1 <= len(changed) <= 2, (name, changed)
            assert not cond.is_default
    assert len({c.fingerprint for c in SC.CONDITIONS.values()}) == len(SC.CONDITIONS)


def test_unknown_condition_names_the_known_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match="'nope'.*default, small-objects, ambiguous, cluttered, domain-gap"):
        synth.generate(tmp_path / "x", n_images=20, condition="nope")
    assert not (tmp_path / "x").exists()
    assert synth.main([str(tmp_path / "y"), "--n-images", "20", "--condition", "nope"]) == 2
    assert "unknown generator condition 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synth.main(["--pretrain", str(tmp_path / "p"), "--condition", "cluttered"])


def test_default_condition_is_the_benchmark_byte_for_byte(dirs, tmp_path):
    plain = synth.generate(tmp_path / "plain", n_images=N, seed=SEED, image_size=SIZE).parent
    for f in (synth.JSON_NAME, synth.GT_NAME):
        assert (plain / f).read_bytes() == (dirs["default"] / f).read_bytes()
    names = sorted(p.name for p in (plain / synth.IMAGES_DIR).iterdir())
    assert names == sorted(p.name for p in (dirs["default"] / synth.IMAGES_DIR).iterdir())
    assert all((plain / synth.IMAGES_DIR / n).read_bytes() == (dirs["default"] / synth.IMAGES_DIR / n).read_bytes()
               for n in names)
    assert "condition" not in _json(plain, synth.GT_NAME)["params"]


@pytest.mark.parametrize("name", [n for n in SC.CONDITIONS if n != "default"])
def test_condition_keeps_scenes_splits_names_and_sizes(dirs, name):
    ref, got = _json(dirs["default"], synth.JSON_NAME), _json(dirs[name], synth.JSON_NAME)
    assert [(im["filename"], im["split"]) for im in got["images"]] == [
        (im["filename"], im["split"]) for im in ref["images"]]
    gt_ref, gt = _json(dirs["default"], synth.GT_NAME), _json(dirs[name], synth.GT_NAME)
    assert {f: r["scene"] for f, r in gt["images"].items()} == {f: r["scene"] for f, r in gt_ref["images"].items()}
    assert gt["image_size"] == SIZE
    for f in gt["images"]:
        with Image.open(dirs[name] / synth.IMAGES_DIR / f) as im:
            assert im.size == (SIZE, SIZE)
        assert all(0 <= b["box"][0] < b["box"][2] <= SIZE and 0 <= b["box"][1] < b["box"][3] <= SIZE
                   for b in gt["images"][f]["boxes"])
    assert gt["params"]["condition"] == name
    assert gt["params"]["condition_fingerprint"] == SC.CONDITIONS[name].fingerprint


def test_condition_is_part_of_the_parameters(dirs):
    d = dirs["cluttered"]
    assert synth.is_current(d, N, SEED, SIZE, condition="cluttered")
    assert not synth.is_current(d, N, SEED, SIZE)
    assert not synth.is_current(d, N, SEED, SIZE, condition="ambiguous")
    assert not synth.is_current(dirs["default"], N, SEED, SIZE, condition="cluttered")
    changed = dataclasses.replace(SC.CONDITIONS["cluttered"], clutter_count=(1, 2))
    assert synth._params(N, SEED, SIZE, condition=changed)["condition_fingerprint"] != \
        _json(d, synth.GT_NAME)["params"]["condition_fingerprint"]


def test_cli_condition(tmp_path):
    assert synth.main([str(tmp_path / "c"), "--n-images", "22", "--condition", "small-objects"]) == 0
    assert _json(tmp_path / "c", synth.GT_NAME)["params"]["condition"] == "small-objects"


# ---- defining properties against the default ---------------------------------------------------------------------


def test_small_objects_named_objects_are_small(tables):
    small, default = C.named_area_share(tables["small-objects"]), C.named_area_share(tables["default"])
    assert small < C.SMALL_SHARE
    assert small < 0.6 * default


def test_cluttered_has_many_unnamed_distractors(dirs, tables):
    clut, default = C.distractor_count(tables["cluttered"]), C.distractor_count(tables["default"])
    assert clut > 3 * default and clut > default + 8
    t = tables["cluttered"]
    assert t["distractor"].sum() > 5 * N and not tables["default"]["distractor"].any()
    assert (t["distractor"] & t["named"]).sum() < 0.02 * t["distractor"].sum()   # "factory area" names buildings
    # the scene's own objects are those of the default's draw: same boxes up to the distractors
    gt_ref, gt = _json(dirs["default"], synth.GT_NAME), _json(dirs["cluttered"], synth.GT_NAME)
    for f, rec in gt["images"].items():
        assert [b for b in rec["boxes"] if not b.get("distractor")] == gt_ref["images"][f]["boxes"]


def test_ambiguous_twins_look_alike_and_differ_in_named_categories(dirs):
    amb, default = C.lookalike_similarity(dirs["ambiguous"]), C.lookalike_similarity(dirs["default"])
    assert amb > default + 0.1
    stats = C.twin_stats(dirs["ambiguous"])
    assert stats["twin_share"] >= 0.4 and stats["twins_naming_swap"] >= 0.8
    assert C.twin_stats(dirs["default"])["twin_share"] == 0
    gt = _json(dirs["ambiguous"], synth.GT_NAME)["images"]
    n_pairs = 0
    for f, rec in gt.items():
        if "twin" not in rec or f > rec["twin"]:
            continue
        other = gt[rec["twin"]]
        assert other["twin"] == f and other["swapped"] == rec["swapped"] and 1 <= len(rec["swapped"]) <= 2
        diff = set(rec["swapped"]) | set(rec["swapped"].values())
        same = [sorted((b["category"], b["box"]) for b in r["boxes"] if b["category"] not in diff)
                for r in (rec, other)]
        assert same[0] == same[1], f       # shared layout: every other object in the same place
        cats = [{b["category"] for b in r["boxes"]} & diff for r in (rec, other)]
        assert cats[0] and cats[1] and not cats[0] & cats[1], f
        n_pairs += 1
    assert n_pairs >= 0.2 * N


def test_domain_gap_shifts_colour_and_detail(dirs):
    gap = C.domain_gap(dirs["domain-gap"], dirs["default"])
    floor = C.domain_gap(dirs["default-other-seed"], dirs["default"])    # another draw of the same domain
    assert gap["colour_distance"] > 2 * floor["colour_distance"]
    assert gap["sharpness_ratio"] < 0.8 and abs(floor["sharpness_ratio"] - 1) < 0.2
    for name in ("small-objects", "ambiguous"):       # the other conditions keep the default's domain
        assert C.domain_gap(dirs[name], dirs["default"])["colour_distance"] < gap["colour_distance"] / 2


def test_measure_and_cli(dirs, tmp_path, capsys):
    m = C.measure(dirs["cluttered"], dirs["default"])
    assert set(m) == {"named_area_share", "distractor_count", "lookalike_similarity", "twin_share",
                      "twins_naming_swap", "colour_distance", "sharpness_ratio"}
    assert C.main([str(tmp_path / "m"), "--n-images", "22"]) == 0
    out = capsys.readouterr().out
    assert all(f"| {name}" in out for name in SC.CONDITIONS) and "default (seed 8)" in out
    with pytest.raises(FileNotFoundError, match="ground_truth"):
        C.object_table(tmp_path)


# ---- measures on hand-made inputs --------------------------------------------------------------------------------


def test_area_share_and_distractors_on_a_table():
    t = pd.DataFrame({"filename": ["a", "a", "a", "b", "b"], "category": ["car", "car", "road", "tree", "house"],
                      "area": [0.01, 0.03, 0.9, 0.04, 0.05], "named": [True, True, True, True, False]})
    assert C.named_area_share(t) == pytest.approx(0.04)     # median of car 0.02, road 0.9, tree 0.04
    assert C.distractor_count(t) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no object"):
        C.named_area_share(t.assign(named=False))


def test_lookalike():
    x = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    sim = C.lookalike(x, ["a", "b", "b", "b"])
    assert sim[0] == pytest.approx(1.0) and sim[1] == pytest.approx(1.0)
    assert sim[2] < 1.0 and sim[3] < 1.0
    assert np.isnan(C.lookalike(x, ["a"] * 4)).all()
    with pytest.raises(ValueError, match="N = 3"):
        C.lookalike(x, ["a", "b", "c"])


def test_colour_histogram_distance_and_sharpness():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 2] = 255
    h = C.colour_histogram([red, blue])
    assert h.sum() == pytest.approx(1.0) and (h > 0).sum() == 2
    assert C.histogram_distance(h, h) == pytest.approx(0.0)
    assert C.histogram_distance(C.colour_histogram([red]), C.colour_histogram([blue])) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert C.sharpness([noise.filter(ImageFilter.GaussianBlur(1.5))]) < 0.5 * C.sharpness([noise])
    with pytest.raises(ValueError, match="no pixels"):
        C.colour_histogram([])


# ---- mechanism checks --------------------------------------------------------------------------------------------


def _peak_map(x, y, grid=8):
    m = np.zeros((grid, grid), np.float32)
    m[y, x] = 1.0
    return m


def test_pointing_game_hits_small_images_and_references():
    size = 64   # 8x8 maps: a token cell is 8 px; the peak of an upsampled one-hot cell lies in that cell
    maps = np.stack([_peak_map(1, 1), _peak_map(6, 6), _peak_map(4, 4), _peak_map(0, 0)])
    boxes = [np.array([[0, 0, 24, 24]]),                 # large (14% of the image), hit
             np.array([[0, 0, 8, 8], [8, 0, 16, 8]]),    # small boxes, missed (peak at the far corner)
             np.array([[32, 32, 42, 42]]),               # small, hit
             np.zeros((0, 4))]                           # no named object: not scored
    assert C.small_object_images(boxes, size).tolist() == [False, True, True, False]
    t = C.dapn_pointing_game(maps, boxes, size).set_index("map")
    row = t.loc["saliency"]
    assert (row["n_images"], row["hits"], row["n_small"]) == (3, 2, 2)
    assert row["accuracy"] == pytest.approx(200 / 3) and row["accuracy_small"] == pytest.approx(50.0)
    assert {"center", "random (expected)"} <= set(t.index)
    assert t.loc["center", "hits"] == 1            # the center pixel (32, 32) lies in the third image's box only
    with pytest.raises(ValueError, match="2 maps for 4 images"):
        C.dapn_pointing_game(maps[:2], boxes, size)


def test_explain_pointing_game_takes_a_small_mask():
    from osdpm_lib.explain import pointing_game

    maps = np.stack([_peak_map(1, 1), _peak_map(6, 6)])
    boxes = [np.array([[0, 0, 16, 16]]), np.array([[0, 0, 16, 16]])]
    t = pointing_game({("v", "m"): maps}, boxes, 64, baselines=False, small=np.array([False, True]))
    assert (t.loc[0, "n_small"], t.loc[0, "accuracy_small"]) == (1, 0.0)
    with pytest.raises(ValueError, match="1 flags for 2 images"):
        pointing_game({("v", "m"): maps}, boxes, 64, small=np.array([True]))


def test_cluster_purity():
    protos = np.eye(3, 4)                                  # three prototypes in 4-d
    feats = np.array([[1.0, 0.1, 0, 0],                    # nearest 0, named {0}: hit
                      [0.1, 1.0, 0, 0],                    # nearest 1, named {0, 2}: miss
                      [0, 0.2, 2.0, 0],                    # nearest 2, named {1, 2}: hit
                      [0, 0, 0, 1.0]])                     # named nothing: not scored
    named = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 1], [0, 0, 0]], bool)
    r = C.cluster_purity(feats, protos, named)
    assert r["n_images"] == 3 and r["purity"] == pytest.approx(2 / 3)
    assert r["chance"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert r["hit"][:3].tolist() == [1.0, 0.0, 1.0] and np.isnan(r["hit"][3])
    assert C.cluster_purity(feats * 5, protos, named)["purity"] == pytest.approx(2 / 3)   # cosine: scale-free
    with pytest.raises(ValueError, match="named \\[N, K\\]"):
        C.cluster_purity(feats, protos, named[:, :2])


def test_zero_shot_embeddings_see_twins_as_close(dirs):
    """The pretrained CLIP's (centred) embeddings, and the thumbnails, put twins closer together than other pairs
    of images of their scene."""
    d = dirs["ambiguous"]
    names = list(_json(d, synth.GT_NAME)["images"])
    z = C.zero_shot_embeddings(d, names[:8])
    assert z.shape[0] == 8 and np.allclose(z.mean(axis=0), 0.0, atol=1e-5)
    for features in (C.zero_shot_embeddings, None):
        pairs = C.pair_similarity(d, features)
        assert pairs["twin"] > pairs["same_scene"] + 0.1, (features, pairs)
    assert np.isnan(C.pair_similarity(dirs["default"])["twin"])


def test_measures_need_a_generated_data_set(tmp_path):
    (tmp_path / synth.JSON_NAME).write_text(json.dumps({"images": []}))
    for f in (C.object_table, C.twin_stats, C.pair_similarity):
        with pytest.raises(FileNotFoundError, match="ground_truth.json"):
            f(tmp_path)


# ---- mechanism checks on trained runs -----------------------------------------------------------------------------

MECH_IMAGES = 10


@pytest.fixture(scope="module")
def mech_runs(tmp_path_factory):
    """A tiny 32 px benchmark and a 1-epoch run of each variant (random init, no test split scored)."""
    from osdpm_lib.train import TrainConfig, train

    root = tmp_path_factory.mktemp("mechanism")
    data = synth.generate(root / "data", n_images=24, seed=SEED, image_size=32, n_val=12, n_test=4).parent
    runs = {}
    for variant in ("clip", "clip+dapn", "osdpm"):
        cfg = TrainConfig(variant=variant, epochs=1, batch_size=8, progress=False, score_test=False,
                          stage_embeddings=False, threads=1)
        train(cfg, data, root / variant)
        runs[variant] = root / variant
    return data, runs


def test_mechanism_checks_on_trained_runs(mech_runs):
    import torch

    from osdpm_lib import explain
    from osdpm_lib.cache import Normalizer, image_cache
    from osdpm_lib.data import load as load_annotations
    from osdpm_lib.synth import groundtruth
    from osdpm_lib.train import load_trained

    data, runs = mech_runs
    r = C.mechanism_checks(runs, data, n_images=MECH_IMAGES, batch_size=4)
    assert set(r) == {"n_images", "split", "pointing", "dapn_ratio", "purity"}
    assert (r["n_images"], r["split"]) == (MECH_IMAGES, "val")
    assert set(r["pointing"]) == set(r["dapn_ratio"]) == {"clip+dapn", "osdpm"}
    assert set(r["purity"]) == {"osdpm"}

    records = load_annotations(data / synth.JSON_NAME).split("val")[:MECH_IMAGES]
    gt = groundtruth.load_ground_truth(data)
    ref = explain.pointing_game({}, explain.target_boxes(records, gt), groundtruth.image_size(gt)).set_index("map")
    for variant, rows in r["pointing"].items():
        t = pd.DataFrame(rows).set_index("map")
        assert list(t.index) == ["saliency", "center", "random (expected)"]
        assert (t["n_images"] > 0).all() and (t["n_images"] <= MECH_IMAGES).all()
        for col in ("accuracy", "accuracy_small"):
            vals = t[col].dropna()
            assert ((vals >= 0) & (vals <= 100)).all(), (variant, col)
        assert not np.isnan(t.loc["saliency", "accuracy"])
        for row in ("center", "random (expected)"):   # the references are explain.pointing_game's
            assert t.loc[row, "accuracy"] == pytest.approx(ref.loc[row, "accuracy"])
            assert t.loc[row, "n_images"] == ref.loc[row, "n_images"]

    for variant, ratio in r["dapn_ratio"].items():   # OSDPM.dapn_ratio on the same images at once
        model, _, pre, _ = load_trained(runs[variant])
        x = image_cache([rec.filename for rec in records], data / synth.IMAGES_DIR, pre["image_size"], workers=1,
                        progress=False)
        with torch.no_grad():
            expected = model.dapn_ratio(Normalizer(pre["mean"], pre["std"])(x))
        assert ratio == pytest.approx(expected, rel=1e-4, abs=1e-7) and ratio >= 0   # 0: best.pt is epoch 0

    p = r["purity"]["osdpm"]
    assert set(p) == {"purity", "chance", "n_images"}
    assert 0 <= p["purity"] <= 1 and 0 < p["chance"] <= 1 and 0 < p["n_images"] <= MECH_IMAGES


def test_mechanism_checks_refuse_test_and_skip_clip(mech_runs):
    data, runs = mech_runs
    with pytest.raises(ValueError, match="test"):
        C.mechanism_checks(runs, data, split="test")
    r = C.mechanism_checks({"clip": runs["clip"]}, data, n_images=4)
    assert r["n_images"] == 4 and r["pointing"] == {} and r["dapn_ratio"] == {} and r["purity"] == {}
