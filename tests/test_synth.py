"""Tests of the embedded benchmark generator (osdpm_lib.synth)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from osdpm_lib import synth
from osdpm_lib.lexicon import CATEGORIES, term_to_category
from osdpm_lib.synth import scenes

N = 200
SIZE = 64


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("emb") / "out", n_images=N, seed=7, image_size=SIZE)


@pytest.fixture(scope="module")
def data(ds):
    return json.loads(ds.read_text())


@pytest.fixture(scope="module")
def gt(ds):
    return json.loads((ds.parent / synth.GT_NAME).read_text())


# ---- determinism --------------------------------------------------------------------------------


def _files(root: Path, names) -> dict[str, bytes]:
    return {n: (root / synth.IMAGES_DIR / n).read_bytes() for n in names}


def test_same_seed_same_bytes(ds, data, tmp_path):
    other = synth.generate(tmp_path / "again", n_images=N, seed=7, image_size=SIZE)
    assert other.read_bytes() == ds.read_bytes()
    assert (other.parent / synth.GT_NAME).read_bytes() == (ds.parent / synth.GT_NAME).read_bytes()
    names = [im["filename"] for im in data["images"]]
    assert _files(other.parent, names) == _files(ds.parent, names)


def test_different_seed_different_data(ds, data, tmp_path):
    other = synth.generate(tmp_path / "seed8", n_images=N, seed=8, image_size=SIZE)
    assert other.read_bytes() != ds.read_bytes()
    d2 = json.loads(other.read_text())
    caps1 = [s["raw"] for im in data["images"] for s in im["sentences"]]
    caps2 = [s["raw"] for im in d2["images"] for s in im["sentences"]]
    assert sum(a != b for a, b in zip(caps1, caps2)) > len(caps1) // 2
    same_name = [im["filename"] for im in d2["images"] if (ds.parent / synth.IMAGES_DIR / im["filename"]).exists()]
    assert same_name, "expected some shared file names"
    a, b = _files(ds.parent, same_name[:10]), _files(other.parent, same_name[:10])
    assert all(a[n] != b[n] for n in a)


# ---- Karpathy schema ----------------------------------------------------------------------------


def test_karpathy_schema(data):
    assert data["dataset"] == "embedded"
    assert len(data["images"]) == N
    sentids = []
    for i, im in enumerate(data["images"]):
        assert set(im) == {"filename", "split", "imgid", "sentids", "sentences"}
        assert im["imgid"] == i
        assert im["split"] in ("train", "val", "test")
        assert len(im["sentences"]) == synth.CAPTIONS_PER_IMAGE
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert set(s) == {"raw", "tokens", "imgid", "sentid"}
            assert s["imgid"] == i
            raw = s["raw"]
            assert raw == raw.lower() and raw.endswith(" .") and "  " not in raw
            assert s["tokens"] == re.findall(r"[a-z0-9]+", raw)
            assert all(t.isalnum() and t == t.lower() for t in s["tokens"])
        sentids += im["sentids"]
    assert sentids == list(range(len(sentids)))


def test_tokenize():
    assert synth.tokenize("Many planes, parked next to a long building .") == [
        "many", "planes", "parked", "next", "to", "a", "long", "building"]


# ---- splits -------------------------------------------------------------------------------------


def test_split_sizes_and_stratification(data, gt):
    by_split: dict[str, int] = {}
    by_scene_split: dict[tuple[str, str], int] = {}
    for im in data["images"]:
        sc = gt["images"][im["filename"]]["scene"]
        by_split[im["split"]] = by_split.get(im["split"], 0) + 1
        by_scene_split[sc, im["split"]] = by_scene_split.get((sc, im["split"]), 0) + 1
    assert abs(by_split["train"] / N - 0.8) <= 0.05
    assert abs(by_split["val"] / N - 0.1) <= 0.04
    assert abs(by_split["test"] / N - 0.1) <= 0.04
    scenes = {sc for sc, _ in by_scene_split}
    assert scenes == set(synth.SCENES)
    for sc in scenes:  # every scene (>= 8 images each here) is in every split, mostly in train
        counts = [by_scene_split.get((sc, sp), 0) for sp in ("train", "val", "test")]
        assert all(c >= 1 for c in counts), (sc, counts)
        assert counts[0] >= 0.6 * sum(counts)


def test_scenes_balanced(gt):
    counts: dict[str, int] = {}
    for rec in gt["images"].values():
        counts[rec["scene"]] = counts.get(rec["scene"], 0) + 1
    assert max(counts.values()) - min(counts.values()) <= 1
    assert 18 <= len(synth.SCENES) <= 30


def _per_scene(scenes, splits, split):
    counts = dict.fromkeys(synth.SCENES, 0)
    for sc, sp in zip(scenes, splits):
        counts[sc] += sp == split
    return counts


@pytest.mark.parametrize("n, n_val, n_test", [(200, 30, 44), (1300, 300, 1000), (30, 5, 7), (100, 0, 99), (22, 21, 0)])
def test_explicit_split_sizes_exact_and_stratified(n, n_val, n_test):
    scenes, splits, numeric = synth._assign(n, 7, n_val=n_val, n_test=n_test)
    assert (splits.count("val"), splits.count("test"), splits.count("train")) == (n_val, n_test, n - n_val - n_test)
    for split in ("val", "test", "train"):
        counts = _per_scene(scenes, splits, split).values()
        assert max(counts) - min(counts) <= 1, (split, counts)
    assert (scenes, numeric) == synth._assign(n, 7)[::2]  # scenes and numeric names do not depend on the sizes


def test_explicit_split_sizes_depend_on_seed():
    a = synth._assign(1000, 7, n_val=300, n_test=100)[1]
    b = synth._assign(1000, 8, n_val=300, n_test=100)[1]
    assert a != b and a == synth._assign(1000, 7, n_val=300, n_test=100)[1]


@pytest.mark.parametrize("sizes", [{}, {"n_val": 30, "n_test": 40}])
def test_scene_and_split_assignment_depend_on_seed(sizes):
    """Another seed draws other scenes and other splits for the same image indices (with and without split sizes);
    the same seed draws the same."""
    s7, sp7, num7 = synth._assign(200, 7, **sizes)
    s8, sp8, num8 = synth._assign(200, 8, **sizes)
    assert sum(a != b for a, b in zip(s7, s8)) > 100          # balanced scenes in another order
    assert sum(a != b for a, b in zip(sp7, sp8)) > 10          # other images held out
    assert num7 != num8
    assert (s7, sp7, num7) == synth._assign(200, 7, **sizes)


# _assign(n, seed) of the generator before split sizes existed: sha256 of json [scenes, splits, sorted numeric]
OLD_ASSIGN = {(200, 7): "069dd9b4d7f00d24", (1000, 0): "ea46f158195c0f52", (2000, 3): "bd016c6bec9e358b"}


@pytest.mark.parametrize("n, seed", sorted(OLD_ASSIGN))
def test_no_split_sizes_keep_the_old_assignment(n, seed):
    import hashlib

    scenes, splits, numeric = synth._assign(n, seed, n_val=None, n_test=None)
    digest = hashlib.sha256(json.dumps([scenes, splits, sorted(numeric)]).encode()).hexdigest()
    assert digest[:16] == OLD_ASSIGN[n, seed]


def test_params_without_split_sizes_unchanged(gt):
    assert gt["params"] == {"n_images": N, "seed": 7, "image_size": SIZE, "version": synth.GENERATOR_VERSION}
    assert synth._params(N, 7, SIZE) == gt["params"]
    assert synth._params(N, 7, SIZE, n_val=20, n_test=30) == {**gt["params"], "n_val": 20, "n_test": 30}


def test_generate_with_split_sizes(ds, data, gt, tmp_path):
    """Exact split sizes in the json; the same images and captions as without them; its own params."""
    out = tmp_path / "sized"
    p = synth.generate(out, n_images=N, seed=7, image_size=SIZE, n_val=23, n_test=41)
    d2 = json.loads(p.read_text())
    assert [sp["split"] for sp in d2["images"]].count("val") == 23
    assert [sp["split"] for sp in d2["images"]].count("test") == 41
    assert [(im["filename"], im["sentences"]) for im in d2["images"]] == [
        (im["filename"], im["sentences"]) for im in data["images"]]
    names = [im["filename"] for im in data["images"]]
    assert _files(out, names) == _files(ds.parent, names)
    gt2 = json.loads((out / synth.GT_NAME).read_text())
    assert gt2["params"] == {**gt["params"], "n_val": 23, "n_test": 41}
    assert synth.is_current(out, N, 7, SIZE, n_val=23, n_test=41)
    assert not synth.is_current(out, N, 7, SIZE) and not synth.is_current(out, N, 7, SIZE, n_val=23, n_test=40)
    assert not synth.is_current(ds.parent, N, 7, SIZE, n_val=23, n_test=41) and synth.is_current(ds.parent, N, 7, SIZE)


@pytest.mark.parametrize("n_val, n_test", [(15, 15), (30, 0), (-1, 5)])
def test_bad_split_sizes(tmp_path, n_val, n_test):
    with pytest.raises(ValueError, match="n_val"):
        synth.generate(tmp_path / "bad", n_images=30, n_val=n_val, n_test=n_test)
    assert not (tmp_path / "bad").exists()


# ---- ground truth -------------------------------------------------------------------------------


def test_ground_truth_boxes(ds, data, gt):
    assert gt["image_size"] == SIZE and gt["seed"] == 7 and gt["scenes"] == list(synth.SCENES)
    assert set(gt["images"]) == {im["filename"] for im in data["images"]}
    n_boxes = 0
    for fn, rec in gt["images"].items():
        assert rec["scene"] in synth.SCENES
        assert rec["boxes"], fn
        with Image.open(ds.parent / synth.IMAGES_DIR / fn) as img:
            assert img.format == "JPEG" and img.size == (SIZE, SIZE) and img.mode == "RGB"
        for b in rec["boxes"]:
            assert b["category"] in synth.BENCHMARK_CATEGORIES
            x0, y0, x1, y1 = b["box"]
            assert all(isinstance(v, int) for v in b["box"])
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, (fn, b)
            n_boxes += 1
    assert n_boxes > 5 * N


def test_scene_categories_drawn(gt):
    """Each scene's first (defining) category is drawn in nearly all of its images."""
    have: dict[str, list[bool]] = {}
    for rec in gt["images"].values():
        key = synth.SCENE_SPECS[rec["scene"]].objects[0].category
        have.setdefault(rec["scene"], []).append(any(b["category"] == key for b in rec["boxes"]))
    for sc, flags in have.items():
        assert sum(flags) >= 0.9 * len(flags), sc


def test_classes_share_objects():
    cats = {name: {o.category for o in s.objects} for name, s in synth.SCENE_SPECS.items()}
    assert {"car"} <= cats["parking"] & cats["commercial"]
    assert "sea" in cats["port"] & cats["beach"]
    assert "river" in cats["river"] & cats["bridge"]
    assert "storage tank" in cats["industrial"] & cats["storagetanks"]
    assert "house" in cats["denseresidential"] & cats["sparseresidential"]
    assert "tree" in cats["forest"] & cats["park"] & cats["meadow"]
    for s in synth.SCENE_SPECS.values():
        assert all(o.category in CATEGORIES for o in s.objects)


def test_object_sizes_are_multiscale(ds):
    df = synth.object_sizes(ds.parent / synth.GT_NAME)
    assert list(df.columns) == ["filename", "scene", "category", "width", "height", "size"]
    assert ((df["width"] > 0) & (df["width"] <= 1) & (df["height"] > 0) & (df["height"] <= 1)).all()
    med = df.groupby("category")["size"].median()
    assert med["car"] <= 0.07
    assert 0.06 <= med["airplane"] <= 0.2
    assert 0.06 <= med["storage tank"] <= 0.17
    assert med["stadium"] >= 0.3
    assert set(df["scene"]) == set(synth.SCENES)


# ---- captions -----------------------------------------------------------------------------------


def test_caption_statistics(ds, data):
    st = synth.caption_stats(ds)
    assert st["n_images"] == N and st["n_captions"] == 5 * N and st["captions_per_image"] == 5
    assert 9.0 <= st["mean_words"] <= 13.0
    assert st["unique_ratio"] < 0.7
    assert st["mean_unique_per_image"] < 4.0
    assert sum(st["images_per_split"].values()) == N
    assert set(st["images_per_scene"]) == set(synth.SCENES)
    assert sum(st["images_per_scene"].values()) == N


def test_caption_style(data):
    """RSICD style: lower case, ' .' at the end, 'an' before vowels, vague sentences shared."""
    raws = [s["raw"] for im in data["images"] for s in im["sentences"]]
    for r in raws:
        assert re.fullmatch(r"[a-z][a-z ]* \.", r), r
        assert not re.search(r"\ba [aeiou]", r) and not re.search(r"\ban [^aeiou]", r), r
    images_of: dict[str, set[int]] = {}
    for im in data["images"]:
        for s in im["sentences"]:
            images_of.setdefault(s["raw"], set()).add(im["imgid"])
    assert sum(len(v) >= 2 for v in images_of.values()) >= 8  # generic sentences shared by images
    by_image_repeats = sum(len(set(s["raw"] for s in im["sentences"])) < 5 for im in data["images"])
    assert by_image_repeats >= 0.5 * N


def test_airplane_synonyms_and_plurals(data):
    text = " ".join(f" {s['raw']} " for im in data["images"] for s in im["sentences"])
    forms = {t for t in ("plane", "planes", "airplane", "airplanes", "aircraft", "aeroplane", "aeroplanes",
                         "jet", "jets") if f" {t} " in text}
    assert len(forms) >= 4, forms
    assert {"planes", "airplanes"} & forms and {"plane", "airplane", "aircraft"} & forms


def test_caption_nouns_from_lexicon(data):
    """Every lexicon category of a drawn scene is named somewhere, and names come from the lexicon."""
    used = set()
    text = " ".join(f" {s['raw']} " for im in data["images"] for s in im["sentences"])
    for cat, terms in CATEGORIES.items():
        if any(f" {t} " in text or f" {synth._Captioner.plural(t)} " in text for t in terms):
            used.add(cat)
    assert len(used) >= 20
    to_cat = term_to_category()
    for cat, terms in synth.CAPTION_TERMS.items():  # a lexicon term of this category, or a word the priors skip
        assert all(to_cat.get(t, cat) == cat for t, _ in terms), (cat, terms)
    assert ("sand", 2.0) in synth.CAPTION_TERMS["beach"] and "sand" not in to_cat


def test_caption_terms_naming_another_category_are_refused():
    assert scenes._lexicon_terms("beach", (("beach", 1.0), ("sand", 0.5))) == (("beach", 1.0), ("sand", 0.5))
    assert scenes._lexicon_terms("beach", ()) == ((CATEGORIES["beach"][0], 1.0),)
    with pytest.raises(ValueError, match="'lake' -> 'pond'"):
        scenes._lexicon_terms("sea", (("sea", 1.0), ("lake", 1.0)))


def test_benchmark_categories_are_a_fixed_subset_of_the_lexicon():
    """The lexicon may gain categories for real data; the benchmark draws its own 24, in its own order."""
    assert len(synth.BENCHMARK_CATEGORIES) == 24 == len(set(synth.BENCHMARK_CATEGORIES))
    assert set(synth.BENCHMARK_CATEGORIES) < set(CATEGORIES)
    assert sorted(scenes.DRAW_ORDER) == sorted(synth.BENCHMARK_CATEGORIES)
    assert {"desert", "mountain", "bare land", "swimming pool"}.isdisjoint(synth.BENCHMARK_CATEGORIES)


# sha256[:16] of dataset_embedded.json and ground_truth.json of generate(N=200, seed=7, image_size=64), as
# written before the lexicon gained desert/mountain/bare land/swimming pool and dropped sand/water/pool
GOLDEN = ("c484c54f18fa25a6", "a9f8f1bc9641cc17")


def test_benchmark_unchanged_by_lexicon_changes(ds):
    import hashlib

    digests = tuple(hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in (ds, ds.parent / synth.GT_NAME))
    assert digests == GOLDEN


def test_counts_in_captions_match_ground_truth(data, gt):
    """'three planes', 'five white storage tanks': exact counts come from what was drawn."""
    words = {v: k for k, v in synth.NUMBERS.items() if k >= 2}
    plural_of = {}
    for cat, terms in CATEGORIES.items():
        for t in terms:
            plural_of[synth._Captioner.plural(t).split()[-1]] = cat
    checks = {"airplane", "storage tank", "boat", "house", "building"}
    checked = 0
    for im in data["images"]:
        boxes = gt["images"][im["filename"]]["boxes"]
        for s in im["sentences"]:
            toks = s["tokens"]
            for i, t in enumerate(toks):
                if t not in words:
                    continue
                noun = next((w for w in toks[i + 1 : i + 4] if w in plural_of), None)
                if noun is None or plural_of[noun] not in checks:
                    continue
                n = sum(b["category"] == plural_of[noun] for b in boxes)
                assert n == words[t], (im["filename"], s["raw"], n)
                checked += 1
    assert checked >= 20


def test_captions_mention_objects_not_only_scene(data, gt):
    """Most images have a caption naming a non-defining object category that was drawn."""
    inf = 0
    t2c = {}
    for cat, terms in synth.CAPTION_TERMS.items():
        for t, _ in terms:
            t2c[t] = cat
            t2c[synth._Captioner.plural(t)] = cat
    for im in data["images"]:
        rec = gt["images"][im["filename"]]
        drawn = {b["category"] for b in rec["boxes"]}
        key = synth.SCENE_SPECS[rec["scene"]].objects[0].category
        named = {t2c[t] for s in im["sentences"] for t in s["tokens"] if t in t2c}
        if named & (drawn - {key}):
            inf += 1
    assert inf >= 0.6 * N


def test_numeric_filenames(data, gt):
    names = [im["filename"] for im in data["images"]]
    numeric = [n for n in names if re.fullmatch(r"\d{5}\.jpg", n)]
    assert len(numeric) == round(0.1 * N)
    for n in names:
        if n in numeric:
            continue
        m = re.fullmatch(r"([a-z]+)_(\d+)\.jpg", n)
        assert m, n
        assert m.group(1) == gt["images"][n]["scene"]
    assert len(set(names)) == N


# ---- reuse --------------------------------------------------------------------------------------


def test_reuse_skips_and_params_regenerate(tmp_path, monkeypatch):
    out = tmp_path / "small"
    p = synth.generate(out, n_images=30, seed=1)
    assert synth.is_current(out, n_images=30, seed=1)
    before = {f.name: f.stat().st_mtime_ns for f in (out / synth.IMAGES_DIR).iterdir()}

    def boom(*a, **k):
        raise AssertionError("regenerated although the folder is current")

    with monkeypatch.context() as m:
        m.setattr(synth, "_render", boom)
        assert synth.generate(out, n_images=30, seed=1) == p
    assert {f.name: f.stat().st_mtime_ns for f in (out / synth.IMAGES_DIR).iterdir()} == before

    assert not synth.is_current(out, n_images=20, seed=1)
    synth.generate(out, n_images=20, seed=1)  # other params: regenerated, stale images removed
    gt = json.loads((out / synth.GT_NAME).read_text())
    assert gt["params"]["n_images"] == 20 and len(gt["images"]) == 20
    assert {f.name for f in (out / synth.IMAGES_DIR).iterdir()} == set(gt["images"])

    (out / synth.IMAGES_DIR / next(iter(gt["images"]))).unlink()  # incomplete folder: regenerated
    assert not synth.is_current(out, n_images=20, seed=1)
    synth.generate(out, n_images=20, seed=1)
    assert synth.is_current(out, n_images=20, seed=1)


def test_cli(tmp_path, capsys):
    assert synth.main([str(tmp_path / "cli"), "--n-images", "25", "--seed", "2", "--image-size", "48"]) == 0
    out = capsys.readouterr().out
    assert "dataset_embedded.json" in out
    gt = json.loads((tmp_path / "cli" / synth.GT_NAME).read_text())
    assert gt["image_size"] == 48 and len(gt["images"]) == 25
    assert synth.main([str(tmp_path / "bad"), "--n-images", "0"]) == 2
    assert synth.main([str(tmp_path / "sized"), "--n-images", "30", "--n-val", "4", "--n-test", "6"]) == 0
    splits = [im["split"] for im in json.loads((tmp_path / "sized" / synth.JSON_NAME).read_text())["images"]]
    assert (splits.count("val"), splits.count("test")) == (4, 6)
    assert synth.main([str(tmp_path / "bad"), "--n-images", "10", "--n-val", "5", "--n-test", "5"]) == 2
    with pytest.raises(SystemExit):
        synth.main([])


def test_make_embedded_script_exists():
    script = Path(__file__).resolve().parents[1] / "data_prep" / "make_embedded.py"
    assert script.is_file() and "osdpm_lib.synth" in script.read_text()


def test_groundtruth_is_the_one_scene_of_an_image(ds, gt):
    from osdpm_lib.data import ImageRecord, load
    from osdpm_lib.synth import groundtruth

    loaded = groundtruth.load_ground_truth(ds.parent)
    assert loaded == gt and groundtruth.load_ground_truth(ds.parent / "images") is None
    numeric = next(f for f in gt["images"] if f[0].isdigit())      # "00012.jpg": only the ground truth knows
    assert groundtruth.scene_of(numeric, gt) == gt["images"][numeric]["scene"]
    assert groundtruth.scene_of(numeric) is None
    assert groundtruth.scene_of("airport_348.jpg") == "airport"                   # the name's class
    assert groundtruth.scene_of(ImageRecord("x.jpg", "test", (), "port"), gt) == "port"   # the record's
    recs = load(ds).images
    assert groundtruth.scenes_for(recs, gt) == [gt["images"][r.filename]["scene"] for r in recs]
    f = recs[0].filename
    assert groundtruth.categories_of(gt, f) == {b["category"] for b in gt["images"][f]["boxes"]}
    assert groundtruth.image_size(gt) == gt["image_size"]


def test_never_written_over_another_data_set(tmp_path):
    """A notebook pointed at a real data set's folder with dataset="embedded" must not overwrite its images."""
    real = tmp_path / "rsicd"
    (real / "images").mkdir(parents=True)
    (real / "dataset_rsicd.json").write_text('{"images": []}')
    (real / "images" / "airport_1.jpg").write_bytes(b"real image")
    with pytest.raises(FileExistsError, match="dataset_rsicd.json"):
        synth.generate(real, n_images=20, seed=0, image_size=32)
    assert (real / "images" / "airport_1.jpg").read_bytes() == b"real image"
    assert sorted(p.name for p in real.iterdir()) == ["dataset_rsicd.json", "images"]
