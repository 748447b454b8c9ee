"""Dataset audit (osdpm_lib.audit): exact counts on tiny data sets with known duplicates, phash
matching of a re-encoded copy, the CLI, and the real RSICD annotations when present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdpm_lib import audit, data

RSICD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsicd"

A = [  # filename, split, captions: duplicates known by construction
    ("airport_1.jpg", "train", ["A plane is parked .", "a plane  is parked", "many cars ."]),
    ("airport_2.jpg", "train", ["Many cars.", "a green field .", "a green field ."]),
    ("beach_3.jpg", "train", ["a river ."]),
    ("0004.jpg", "test", ["a river!", "a bridge ."]),
]
B = [
    ("airport_1.jpg", "train", ["a plane is parked"]),   # same name as in A, different image
    ("copy_x.jpg", "train", ["something new ."]),        # A's beach_3.jpg resized and re-encoded
    ("other.jpg", "test", ["A bridge"]),
]


def _image(seed: int) -> Image.Image:
    """A smooth random 64 px image (an 8 x 8 random grid, upsampled)."""
    grid = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((64, 64), Image.BICUBIC)


def _write(folder: Path, entries, images: dict[str, Image.Image] | None = None) -> Path:
    folder.mkdir(parents=True)
    items = [{"filename": f, "split": s, "sentences": [{"raw": c} for c in caps]} for f, s, caps in entries]
    (folder / "dataset_x.json").write_text(json.dumps({"images": items}))
    if images is not None:
        (folder / "images").mkdir()
        for name, im in images.items():
            im.save(folder / "images" / name, quality=90)
    return folder


@pytest.fixture
def ab(tmp_path):
    imgs_a = {f: _image(i) for i, (f, _, _) in enumerate(A)}
    copy = imgs_a["beach_3.jpg"].resize((96, 96), Image.BILINEAR)
    imgs_b = {"airport_1.jpg": _image(10), "copy_x.jpg": copy, "other.jpg": _image(11)}
    return _write(tmp_path / "a", A, imgs_a), _write(tmp_path / "b", B, imgs_b)


def test_normalize():
    assert audit.normalize("  A plane\tis  parked . ") == "a plane is parked"
    assert audit.normalize("Many cars!?") == audit.normalize("many cars .") == "many cars"
    assert audit.normalize("a 3.5 m road") == "a 3.5 m road"  # only trailing punctuation goes
    assert audit.normalize(" . ") == ""


def test_length_stats():
    st = audit.length_stats([4, 4, 2, 2, 3, 3, 2])
    assert st == pytest.approx({"mean": 20 / 7, "median": 3.0, "p5": 2.0, "p95": 4.0, "min": 2, "max": 4})
    assert isinstance(st["min"], int) and isinstance(st["mean"], float)
    assert audit.length_stats([]) == {"mean": 0.0, "median": 0.0, "p5": 0.0, "p95": 0.0, "min": 0, "max": 0}


def test_caption_lengths(ab):
    df = audit.caption_lengths(data.load(ab[0]))
    assert list(df.index) == ["train", "test", "all"]
    assert df.loc["train", "images"] == 3 and df.loc["train", "captions"] == 7
    assert df.loc["train", "words mean"] == pytest.approx(20 / 7)
    assert (df.loc["train", "words min"], df.loc["train", "words max"]) == (2, 4)
    assert df.loc["test", "captions/image"] == 2 and df.loc["all", "captions"] == 9


def test_duplicates_exact_counts(ab):
    df = audit.duplicates(data.load(ab[0]))
    cols = ["images", "captions", "images with repeats", "repeated slots", "distinct", "shared captions",
            "images sharing"]
    assert list(df.columns) == cols
    assert df.loc["train"].tolist() == [3, 7, 2, 2, 4, 1, 2]   # "many cars" in two train images
    assert df.loc["test"].tolist() == [1, 2, 0, 0, 2, 0, 0]
    assert df.loc["all"].tolist() == [4, 9, 2, 2, 5, 2, 4]     # + "a river" in train and test


def test_class_balance(ab):
    ann = data.load(ab[0])
    df = audit.class_balance(ann)
    assert list(df.columns) == ["train", "test", "total"]
    assert df.to_dict("index") == {"airport": {"train": 2, "test": 0, "total": 2},
                                   "beach": {"train": 1, "test": 0, "total": 1},
                                   "unknown": {"train": 0, "test": 1, "total": 1}}
    given = audit.class_balance(ann, ["x", "y", "x", "x"])
    assert given["total"].to_dict() == {"x": 3, "y": 1}
    with pytest.raises(ValueError, match="3 scenes for 4 images"):
        audit.class_balance(ann, ["x"] * 3)


@pytest.mark.parametrize("numpy_popcount", [True, False])
def test_hamming_pairs_matches_brute_force(numpy_popcount, monkeypatch):
    if not numpy_popcount:  # the lookup-table path used with numpy < 2
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 50, dtype=np.uint64)
    b = np.concatenate([rng.integers(0, 2**63, 30, dtype=np.uint64), a[:5] ^ np.uint64(0b1011)])
    got = audit.hamming_pairs(a, b, max_distance=26, chunk=7)
    want = [(i, j, (int(x) ^ int(y)).bit_count()) for i, x in enumerate(a) for j, y in enumerate(b)]
    want = [w for w in want if w[2] <= 26]
    assert [tuple(r) for r in got.tolist()] == want
    assert {(i, 30 + i, 3) for i in range(5)} <= set(map(tuple, got.tolist()))


def test_overlap_filenames_captions_and_phash(ab):
    a, b = data.load(ab[0]), data.load(ab[1])
    res = audit.overlap(a, b, progress=False)
    assert res["pairs"] is None and "images a matched" not in res
    assert (res["images a"], res["images b"], res["shared filenames"]) == (4, 3, 1)
    assert res["shared filenames / a"] == 0.25 and res["shared filenames / b"] == pytest.approx(1 / 3)
    assert (res["distinct captions a"], res["distinct captions b"], res["shared captions"]) == (5, 3, 2)
    assert res["shared captions / a"] == 0.4 and res["shared captions / b"] == pytest.approx(2 / 3)

    res = audit.overlap(a, b, ab[0] / "images", ab[1] / "images", progress=False)
    # the resized, re-encoded copy is found under its new name; same-named different images are not
    assert res["pairs"][["filename a", "filename b"]].values.tolist() == [["beach_3.jpg", "copy_x.jpg"]]
    assert 0 <= res["pairs"]["distance"].iloc[0] <= audit.MAX_DISTANCE
    assert (res["images a matched"], res["images b matched"]) == (1, 1)
    assert audit.overlap(a, b, ab[0] / "images", tmp := ab[1] / "absent", progress=False)["pairs"] is None
    assert not tmp.exists()


def test_split_overlap(ab):
    df = audit.split_overlap(data.load(ab[0]), ab[0] / "images", progress=False)
    assert list(df.columns) == ["train/test"]
    row = df["train/test"]
    assert (row["shared filenames"], row["shared captions"], row["images a matched"]) == (0, 1, 0)
    assert row["shared captions / b"] == 0.5


def test_unreadable_image_names_the_file(ab):
    a = data.load(ab[0])
    (ab[0] / "images" / "beach_3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.AnnotationError, match=r"\.json: record \d+: image .*beach_3\.jpg is unreadable"):
        audit.overlap(a, data.load(ab[1]), ab[0] / "images", ab[1] / "images", progress=False)
    (ab[0] / "images" / "beach_3.jpg").unlink()
    with pytest.raises(data.AnnotationError, match=r"beach_3\.jpg"):
        audit.phash(a, ab[0] / "images", progress=False)


def test_cli(ab, capsys):
    a, b = ab
    assert audit.main([str(a), "--against", str(b), "--images", str(a / "images"),
                       "--against-images", str(b / "images")]) == 0
    out = capsys.readouterr().out
    for title in ("Caption lengths", "Duplicate captions", "Class balance", "Overlap between splits",
                  "Overlap with b (a: a)", "Near-duplicate images"):
        assert f"## {title}\n" in out
    assert "| train |        3 |          7 |                     2 |" in out
    assert "| beach_3.jpg  | copy_x.jpg   |" in out
    assert str(a.parent) not in out   # no absolute paths
    assert audit.main([str(a / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_module_entry(ab):
    proc = subprocess.run([sys.executable, "-m", "osdpm_lib.audit", str(ab[0])], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "## Duplicate captions" in proc.stdout and "Near-duplicate" not in proc.stdout


# ---- real data: RSICD annotations (AMFMN text: captions only, no images) ---------------------------

def _rsicd_raw(split: str) -> tuple[list[str], list[str]]:
    return tuple([x.strip() for x in (RSICD / f"{split}_{kind}.txt").read_text(encoding="utf-8-sig").splitlines()]
                 for kind in ("caps", "filename"))


def test_rsicd_train_test_overlap():
    if not (RSICD / "train_caps.txt").is_file():
        pytest.skip(f"real RSICD annotations absent ({RSICD})")
    ann = data.load(RSICD)
    res = audit.overlap(audit.split_of(ann, "train"), audit.split_of(ann, "test"), progress=False)

    def norm(c: str) -> str:  # an independent re-implementation of audit.normalize
        return " ".join(c.lower().split()).rstrip(".,;:!? ")

    (train_caps, train_names), (test_caps, test_names) = _rsicd_raw("train"), _rsicd_raw("test")
    assert res["shared filenames"] == len(set(train_names) & set(test_names)) == 0
    shared = {norm(c) for c in train_caps if c} & {norm(c) for c in test_caps if c}
    assert res["shared captions"] == len(shared) > 0
    assert res["pairs"] is None
    # within-image repeats in train: grouped five caption lines per filename line
    assert len(train_caps) == 5 * len(train_names)
    groups = [[norm(c) for c in train_caps[5 * i:5 * i + 5] if c] for i in range(len(train_names))]
    dup = audit.duplicates(ann)
    assert dup.loc["train", "images with repeats"] == sum(len(set(g)) < len(g) for g in groups)
    assert dup.loc["train", "repeated slots"] == sum(len(g) - len(set(g)) for g in groups)
