"""Tests of the pretraining corpus (osdpm_lib.synth.generate_pretrain): web alt-text beside the benchmark."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdpm_lib import audit, data, synth
from osdpm_lib.lexicon import CATEGORIES

N = 150
SIZE = 64
N_VAL, N_TEST = 20, 25


@pytest.fixture(scope="module")
def pre(tmp_path_factory) -> Path:
    return synth.generate_pretrain(tmp_path_factory.mktemp("pre") / "out", n_images=N, seed=0, image_size=SIZE,
                                   n_val=N_VAL, n_test=N_TEST)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("emb") / "out", n_images=N, seed=0, image_size=SIZE)


@pytest.fixture(scope="module")
def pre_ann(pre):
    return data.load(pre.parent, check_images=True)


@pytest.fixture(scope="module")
def bench_ann(bench):
    return data.load(bench.parent)


def _captions(ann) -> list[str]:
    return [c for r in ann.images for c in r.captions]


# ---- layout and schema --------------------------------------------------------------------------


def test_layout_and_schema(pre, pre_ann):
    out = pre.parent
    assert pre.name == synth.PRETRAIN_JSON
    assert sorted(p.name for p in out.iterdir()) == sorted([synth.IMAGES_DIR, synth.PRETRAIN_JSON,
                                                            synth.PRETRAIN_PARAMS_NAME])
    assert pre_ann.format == "karpathy" and len(pre_ann.images) == N
    assert {k: len(v) for k, v in pre_ann.splits().items()} == {"train": N - N_VAL - N_TEST, "val": N_VAL,
                                                                 "test": N_TEST}
    names = [r.filename for r in pre_ann.images]
    assert names == [f"pre_{i:06d}.jpg" for i in range(N)]
    assert all(1 <= len(r.captions) <= 3 and len(set(r.captions)) == len(r.captions) for r in pre_ann.images)
    assert 1.5 <= len(_captions(pre_ann)) / N <= 2.5
    with Image.open(out / synth.IMAGES_DIR / names[0]) as img:
        assert img.format == "JPEG" and img.size == (SIZE, SIZE) and img.mode == "RGB"
    doc = json.loads(pre.read_text())
    assert doc["dataset"] == "pretrain"
    sentids = [sid for im in doc["images"] for sid in im["sentids"]]
    assert sentids == list(range(len(sentids)))
    for im in doc["images"]:
        assert [s["tokens"] for s in im["sentences"]] == [synth.tokenize(s["raw"]) for s in im["sentences"]]
    marker = json.loads((out / synth.PRETRAIN_PARAMS_NAME).read_text())
    assert marker["params"]["n_val"] == N_VAL and marker["params"]["corpus"] == "pretrain"
    assert marker["images_per_split"] == {"train": N - N_VAL - N_TEST, "val": N_VAL, "test": N_TEST}


def test_deterministic_bytes(tmp_path):
    a = synth.generate_pretrain(tmp_path / "a", n_images=30, seed=3, image_size=48, n_val=4, n_test=4)
    b = synth.generate_pretrain(tmp_path / "b", n_images=30, seed=3, image_size=48, n_val=4, n_test=4)
    c = synth.generate_pretrain(tmp_path / "c", n_images=30, seed=4, image_size=48, n_val=4, n_test=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    for name in (synth.PRETRAIN_PARAMS_NAME, *(f"{synth.IMAGES_DIR}/pre_{i:06d}.jpg" for i in range(30))):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name
    img = f"{synth.IMAGES_DIR}/pre_000000.jpg"
    assert (a.parent / img).read_bytes() != (c.parent / img).read_bytes()


# ---- apart from the benchmark -------------------------------------------------------------------


def test_nothing_shared_with_the_benchmark(pre, pre_ann, bench, bench_ann):
    """Same seed (0) and size: no shared file name, caption (normalised) or near-duplicate image."""
    res = audit.overlap(bench_ann, pre_ann, bench.parent / synth.IMAGES_DIR, pre.parent / synth.IMAGES_DIR,
                        progress=False)
    assert res["shared filenames"] == 0
    assert res["shared captions"] == 0
    assert res["images a matched"] == 0 and res["images b matched"] == 0 and res["pairs"].empty


def test_register_apart_structurally(pre_ann, bench_ann):
    """Every benchmark sentence has a finite verb and ends with " ."; no alt-text has either."""
    for c in _captions(bench_ann):
        assert synth.BENCHMARK_VERBS & set(synth.tokenize(c)) and c.endswith(" ."), c
    for c in _captions(pre_ann):
        assert not synth.BENCHMARK_VERBS & set(synth.tokenize(c)) and not c.endswith("."), c
    for spec in synth.SCENE_SPECS.values():
        assert all(synth.BENCHMARK_VERBS & set(synth.tokenize(v)) for v in spec.vague)


def test_alt_text_register(pre_ann, bench_ann):
    caps = _captions(pre_ann)
    words = [len(synth.tokenize(c)) for c in caps]
    bench_words = np.mean([len(synth.tokenize(c)) for c in _captions(bench_ann)])
    assert np.mean(words) <= 0.65 * bench_words, (np.mean(words), bench_words)
    assert min(words) >= 1 and max(words) <= 20
    forms = {f for terms in CATEGORIES.values() for t in terms for f in (t, synth._Captioner.plural(t))}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, forms), key=len, reverse=True)) + r")\b")
    with_term = [bool(pattern.search(c.lower())) for c in caps]
    assert np.mean(with_term) > 0.8
    lower = [c.lower() for c in caps]
    assert sum(c.startswith(synth._AltText.PREFIXES) for c in lower) >= 0.3 * len(caps)  # "aerial photo of ..."
    assert any(f in c for c in lower for f in synth._AltText.FILLERS)  # "stock photo", "hd"
    assert len(set(lower)) >= 0.8 * len(caps)  # noisy, not templated sentences repeated


def test_alt_text_noise_and_order():
    """About a tenth of the object lists name an undrawn object or leave the main one out; order varies."""
    spec = synth.SCENE_SPECS["parking"]
    groups = {c: synth._Group(c, n, 0.5, 0.5, 0.1, "gray", 0.05, False)
              for c, n in (("car", 20), ("parking lot", 1), ("tree", 3), ("road", 1))}
    alt = synth._AltText(spec, groups, np.random.default_rng(0))
    picks = [alt.objects() for _ in range(2000)]
    noisy = sum("car" not in p or not set(p) <= set(groups) for p in picks) / len(picks)
    assert 0.06 <= noisy <= 0.14, noisy
    firsts = {p[0] for p in picks if len(p) > 1}
    assert len(firsts) >= 3


def test_scenes_perturbed_and_mixed():
    """Every spec keeps its defining category; about 30% mix in a second scene, some a foreign object."""
    foreign, total = 0, 0
    for i in range(400):
        rng = np.random.default_rng(i)
        scene = synth.SCENES[i % len(synth.SCENES)]
        spec, objects = synth._pretrain_objects(scene, rng)
        cats = [o.category for o in objects]
        assert spec.name == scene and cats[0] == spec.objects[0].category and objects[0].p == 1.0
        assert len(set(cats)) == len(cats)
        assert all(o.count[0] <= o.count[1] and 0 < o.size[0] <= o.size[1] <= 1 for o in objects)
        foreign += not set(cats) <= {o.category for o in spec.objects}
        total += 1
    assert 0.25 <= foreign / total <= 0.6, foreign / total


# ---- reuse, errors, command line ----------------------------------------------------------------


def test_skip_when_current_and_regenerate(tmp_path, monkeypatch):
    out = tmp_path / "small"
    p = synth.generate_pretrain(out, n_images=30, seed=1, image_size=32, n_val=3, n_test=3)
    assert synth.is_current_pretrain(out, n_images=30, seed=1, image_size=32, n_val=3, n_test=3)
    before = {f.name: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    rendered: list = []
    monkeypatch.setattr(synth, "_render", lambda *a, **k: rendered.append(a))  # would fail if called
    assert synth.generate_pretrain(out, n_images=30, seed=1, image_size=32, n_val=3, n_test=3) == p
    monkeypatch.undo()
    assert not rendered and {f.name: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == before
    assert not synth.is_current_pretrain(out, n_images=30, seed=1, image_size=32, n_val=3, n_test=4)
    assert not synth.is_current(out, n_images=30, seed=1, image_size=32)  # not a benchmark folder

    synth.generate_pretrain(out, n_images=20, seed=1, image_size=32, n_val=3, n_test=3)  # stale images removed
    assert sorted(f.name for f in (out / synth.IMAGES_DIR).iterdir()) == [f"pre_{i:06d}.jpg" for i in range(20)]
    (out / synth.IMAGES_DIR / "pre_000007.jpg").unlink()
    assert not synth.is_current_pretrain(out, n_images=20, seed=1, image_size=32, n_val=3, n_test=3)
    synth.generate_pretrain(out, n_images=20, seed=1, image_size=32, n_val=3, n_test=3)
    assert synth.is_current_pretrain(out, n_images=20, seed=1, image_size=32, n_val=3, n_test=3)


def test_errors(tmp_path, bench):
    with pytest.raises(ValueError, match="n_val"):
        synth.generate_pretrain(tmp_path / "x", n_images=100)  # 200 + 200 held out by default
    with pytest.raises(ValueError, match="n_images"):
        synth.generate_pretrain(tmp_path / "x", n_images=0, n_val=0, n_test=0)
    with pytest.raises(ValueError, match="folder of its own"):
        synth.generate_pretrain(bench.parent, n_images=10, n_val=1, n_test=1)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--pretrain", str(out), "--n-images", "20", "--seed", "2", "--image-size", "32", "--n-val", "3",
            "--n-test", "2"]
    assert synth.main(argv) == 0
    assert synth.PRETRAIN_JSON in capsys.readouterr().out
    assert synth.is_current_pretrain(out, n_images=20, seed=2, image_size=32, n_val=3, n_test=2)
    assert synth.main(["--pretrain", str(tmp_path / "bad"), "--n-images", "50"]) == 2  # 200 + 200 held out
    with pytest.raises(SystemExit):
        synth.main([str(tmp_path / "emb"), "--pretrain", str(out)])


def test_sensor_shift_changes_colour_and_detail_deterministically():
    """The corpus's sensor: another colour response (less saturated) and softer detail, same size, seeded."""
    import numpy as np
    from PIL import Image

    from osdpm_lib.synth.render import sensor_shift

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    a[:32, :, 0] = 250                      # a saturated red half
    img = Image.fromarray(a)
    out1 = sensor_shift(img, np.random.default_rng(1))
    out2 = sensor_shift(img, np.random.default_rng(1))
    assert out1.size == img.size and np.array_equal(np.asarray(out1), np.asarray(out2))
    b = np.asarray(out1, dtype=np.float32)
    sat = lambda x: (x.max(axis=2) - x.min(axis=2)).mean()      # noqa: E731
    assert sat(b) < 0.8 * sat(a.astype(np.float32))
    detail = lambda x: np.abs(np.diff(x.mean(axis=2), axis=1)).mean()   # noqa: E731
    assert detail(b) < 0.5 * detail(a.astype(np.float32))
    assert not np.array_equal(b, np.asarray(sensor_shift(img, np.random.default_rng(2)), dtype=np.float32))
