"""Tests for osdpm_lib.data: the three readers, detection, errors, blank captions and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdpm_lib.data import (
    AnnotationError,
    Annotations,
    BlankCaptionWarning,
    ImageRecord,
    detect_format,
    load,
    main,
    scene_from_filename,
    summary,
)

REPO = Path(__file__).resolve().parents[1]
RSICD = Path(__file__).resolve().parents[2] / "shared/data/rsicd"


# ------------------------------------------------------------------------------------- fixtures
def write_karpathy(folder: Path, images: list[dict], name: str = "dataset_test.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"images": images, "dataset": "test"}, indent=1))
    return path


def kimg(filename: str, split: str, *raws: str) -> dict:
    """A Karpathy image record."""
    sentences = [{"raw": r, "tokens": r.split()} for r in raws]
    return {"filename": filename, "split": split, "sentences": sentences, "imgid": 0}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_amfmn(folder: Path, split: str, caps: list[str], names: list[str]) -> None:
    write_lines(folder / f"{split}_caps.txt", caps)
    write_lines(folder / f"{split}_filename.txt", names)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)


@pytest.fixture
def karpathy_dir(tmp_path: Path) -> Path:
    write_karpathy(
        tmp_path,
        [
            kimg("airport_1.jpg", "train", "a plane .", "two planes "),
            kimg("00017.jpg", "restval", "a field"),
            kimg("beach_3.jpg", "test", "sand", "sea", "waves"),
            kimg("denseresidential_2.jpg", "val", "houses"),
        ],
    )
    return tmp_path


@pytest.fixture
def amfmn_dir(tmp_path: Path) -> Path:
    train_caps = [f"airport {i} ." for i in range(5)] + [f"beach {i} .  " for i in range(5)]
    write_amfmn(tmp_path, "train", train_caps, ["airport_1.jpg", "beach_2.jpg"])
    test_caps = ["p one .", "p two .", "q one .", "q two .", "q three ."]
    write_amfmn(tmp_path, "test", test_caps, ["park_1.jpg"] * 2 + ["00005.jpg"] * 3)
    return tmp_path


@pytest.fixture
def albef_dir(tmp_path: Path) -> Path:
    write_json(
        tmp_path / "rsicd_train.json",
        [
            {"image": "rsicd/airport_1.jpg", "caption": ["a plane", "planes "]},
            {"image": "rsicd/beach_4.jpg", "caption": "sand"},
            {"image": "rsicd/airport_1.jpg", "caption": "a runway"},
        ],
    )
    write_json(tmp_path / "rsicd_test.json", [{"image": "rsicd/00003.jpg", "caption": "x"}])
    return tmp_path


# ------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize(
    "name, scene",
    [
        ("airport_348.jpg", "airport"),
        ("denseresidential_1.jpg", "denseresidential"),
        ("storage_tanks_12.tif", "storage_tanks"),
        ("rsicd/beach_4.jpg", "beach"),
        ("00017.jpg", None),
        ("airport.jpg", None),
        ("12_3.jpg", None),
    ],
)
def test_scene_from_filename(name, scene):
    assert scene_from_filename(name) == scene


def test_annotations_splits_and_caption_image():
    recs = [
        ImageRecord("a_1.jpg", "test", ("x", "y")),
        ImageRecord("b_1.jpg", "train", ("t",)),
        ImageRecord("c_1.jpg", "test", ()),
        ImageRecord("d_1.jpg", "test", ("z",)),
    ]
    ann = Annotations("karpathy", Path("."), recs)
    assert list(ann.splits()) == ["train", "test"]
    assert ann.split("test") == [recs[0], recs[2], recs[3]]
    captions, index = ann.caption_image("test")
    assert captions == ["x", "y", "z"]
    assert index.dtype.kind == "i" and index.tolist() == [0, 0, 2]
    assert ann.caption_image("val")[1].shape == (0,)
    with pytest.raises(ValueError, match="restval"):
        ann.split("restval")


# ------------------------------------------------------------------------------------ round trips
def test_karpathy_round_trip(karpathy_dir: Path):
    ann = load(karpathy_dir)
    assert ann.format == "karpathy" and ann.source == karpathy_dir / "dataset_test.json"
    first = ImageRecord("airport_1.jpg", "train", ("a plane .", "two planes"), "airport")
    assert ann.images[0] == first
    assert ann.images[1] == ImageRecord("00017.jpg", "train", ("a field",), None)  # from restval
    assert list(ann.splits()) == ["train", "val", "test"]
    assert summary(ann) == {
        "format": "karpathy",
        "splits": {
            "train": {"images": 2, "captions": 3},
            "val": {"images": 1, "captions": 1},
            "test": {"images": 1, "captions": 3},
        },
    }
    assert load(karpathy_dir / "dataset_test.json").images == ann.images


def test_amfmn_round_trip(amfmn_dir: Path):
    ann = load(amfmn_dir)
    assert ann.format == "amfmn" and ann.source == amfmn_dir
    train = ann.split("train")
    assert [r.filename for r in train] == ["airport_1.jpg", "beach_2.jpg"]
    assert train[1].captions == tuple(f"beach {i} ." for i in range(5))  # trailing blanks stripped
    assert [r.scene for r in ann.images] == ["airport", "beach", "park", None]
    test = ann.split("test")
    assert [(r.filename, len(r.captions)) for r in test] == [("park_1.jpg", 2), ("00005.jpg", 3)]
    captions, index = ann.caption_image("test")
    assert captions[2] == "q one ." and index.tolist() == [0, 0, 1, 1, 1]
    assert load(amfmn_dir / "train_caps.txt").images == ann.images  # a file names its folder


def test_albef_round_trip(albef_dir: Path):
    ann = load(albef_dir)
    assert ann.format == "albef"
    assert ann.split("train") == [
        ImageRecord("rsicd/airport_1.jpg", "train", ("a plane", "planes", "a runway"), "airport"),
        ImageRecord("rsicd/beach_4.jpg", "train", ("sand",), "beach"),
    ]
    assert ann.split("test") == [ImageRecord("rsicd/00003.jpg", "test", ("x",), None)]
    single = load(albef_dir / "rsicd_test.json")
    assert single.images == ann.split("test")


def test_albef_split_from_word_not_substring(tmp_path: Path):
    write_json(tmp_path / "retrieval_val.json", [{"image": "a_1.jpg", "caption": "c"}])
    assert load(tmp_path).images[0].split == "val"
    with pytest.raises(AnnotationError, match="retrieval.json"):
        load(write_json(tmp_path / "other" / "retrieval.json", []), format="albef")


# -------------------------------------------------------------------------------------- detection
def test_detect_format(karpathy_dir, tmp_path):
    assert detect_format(karpathy_dir) == "karpathy"
    assert detect_format(karpathy_dir / "dataset_test.json") == "karpathy"
    a = tmp_path / "amfmn"
    write_amfmn(a, "test", ["c"], ["x_1.jpg"])
    assert detect_format(a) == detect_format(a / "test_caps.txt") == "amfmn"
    b = tmp_path / "albef"
    write_json(b / "pir_train.json", [])
    assert detect_format(b) == detect_format(b / "pir_train.json") == "albef"
    write_json(tmp_path / "k" / "anything.json", {"images": []})
    assert detect_format(tmp_path / "k" / "anything.json") == "karpathy"
    notes = write_lines(tmp_path / "e" / "notes.txt", ["x"])
    for bad in (notes, tmp_path / "e", tmp_path / "missing"):
        with pytest.raises(AnnotationError, match=bad.name):
            detect_format(bad)


def test_explicit_format_overrides_detection(albef_dir):
    with pytest.raises(AnnotationError, match=r"rsicd_test\.json.*Karpathy"):
        load(albef_dir / "rsicd_test.json", format="karpathy")


# ----------------------------------------------------------------------------------------- errors
def test_amfmn_line_counts_must_fit(tmp_path):
    write_amfmn(tmp_path, "train", ["c"] * 7, ["a_1.jpg", "b_1.jpg"])
    with pytest.raises(AnnotationError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "train_caps.txt has 7 lines" in msg and "train_filename.txt has 2 lines" in msg


def test_amfmn_missing_partner_file(tmp_path):
    write_lines(tmp_path / "val_caps.txt", ["c"])
    with pytest.raises(AnnotationError, match=r"val_filename\.txt: missing"):
        load(tmp_path)


def test_amfmn_blank_filename_line(tmp_path):
    write_amfmn(tmp_path, "test", ["a", "b", "c"], ["a_1.jpg", "", "b_1.jpg"])
    with pytest.raises(AnnotationError, match=r"test_filename\.txt: line 2: blank filename"):
        load(tmp_path)


def test_amfmn_duplicate_filename_grouped(tmp_path):
    write_amfmn(tmp_path, "train", ["c"] * 15, ["a_1.jpg", "b_1.jpg", "a_1.jpg"])
    msg = r"train_filename\.txt: line 3: duplicate .*a_1\.jpg.*line 1"
    with pytest.raises(AnnotationError, match=msg):
        load(tmp_path)


def test_amfmn_per_caption_non_consecutive_repeat(tmp_path):
    names = ["a_1.jpg", "a_1.jpg", "b_1.jpg", "a_1.jpg"]
    write_amfmn(tmp_path, "test", ["c"] * 4, names)
    with pytest.raises(AnnotationError, match=r"test_filename\.txt: line 4: duplicate .*a_1\.jpg"):
        load(tmp_path)


def test_same_filename_in_two_splits_only_on_request(tmp_path):
    write_amfmn(tmp_path, "train", ["c"] * 5, ["a_1.jpg"])
    write_amfmn(tmp_path, "test", ["c"], ["a_1.jpg"])
    msg = (r"image 'a_1\.jpg' is in 2 records: .*train_filename\.txt: line 1 \(split 'train'\); "
           r".*test_filename\.txt: line 1 \(split 'test'\)")
    with pytest.raises(AnnotationError, match=msg):
        load(tmp_path)
    assert [r.split for r in load(tmp_path, allow_shared_images=True).images] == ["train", "test"]


def test_amfmn_unknown_split_file(tmp_path):
    write_amfmn(tmp_path, "train", ["c"] * 5, ["a_1.jpg"])
    write_amfmn(tmp_path, "trainval", ["c"] * 5, ["a_1.jpg"])
    with pytest.raises(AnnotationError, match=r"trainval_caps\.txt: unknown split 'trainval'"):
        load(tmp_path)


def test_karpathy_unknown_split(tmp_path):
    write_karpathy(tmp_path, [kimg("a_1.jpg", "train", "c"), kimg("b_1.jpg", "dev", "c")])
    with pytest.raises(AnnotationError, match=r"dataset_test\.json: record 1: unknown split 'dev'"):
        load(tmp_path)


def test_karpathy_duplicate_filename(tmp_path):
    write_karpathy(tmp_path, [kimg(n, "test", "c") for n in ("a_1.jpg", "b_1.jpg", "a_1.jpg")])
    msg = r"dataset_test\.json: record 2: duplicate .*record 0"
    with pytest.raises(AnnotationError, match=msg):
        load(tmp_path)


@pytest.mark.parametrize("drop", ["filename", "split", "sentences"])
def test_karpathy_missing_key(tmp_path, drop):
    imgs = [kimg("a_1.jpg", "train", "c"), kimg("b_1.jpg", "train", "c")]
    del imgs[1][drop]
    write_karpathy(tmp_path, imgs)
    with pytest.raises(AnnotationError, match=rf"dataset_test\.json: record 1: missing .*'{drop}'"):
        load(tmp_path)


def test_karpathy_sentence_without_raw(tmp_path):
    imgs = [kimg("a_1.jpg", "train", "c", "d")]
    del imgs[0]["sentences"][1]["raw"]
    write_karpathy(tmp_path, imgs)
    with pytest.raises(AnnotationError, match=r"record 0: sentence 1: missing .*'raw'"):
        load(tmp_path)


def test_karpathy_folder_needs_exactly_one_dataset_json(karpathy_dir):
    write_karpathy(karpathy_dir, [], name="dataset_other.json")
    with pytest.raises(AnnotationError, match="dataset_other.json, dataset_test.json"):
        load(karpathy_dir)


@pytest.mark.parametrize("fmt, name", [("karpathy", "dataset_x.json"), ("albef", "x_train.json")])
def test_malformed_json(tmp_path, fmt, name):
    (tmp_path / name).write_text('{"images": [\n  {"filename": "a.jpg",,}\n]}')
    with pytest.raises(AnnotationError, match=rf"{name}: malformed JSON at line 2 column 24"):
        load(tmp_path / name, format=fmt)


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"caption": "c"}, "missing required key.*'image'"),
        ({"image": "a_1.jpg"}, "missing required key.*'caption'"),
        ({"image": "a_1.jpg", "caption": [1]}, ".*string or a list of strings"),
        ("a_1.jpg", "expected an object"),
    ],
)
def test_albef_bad_record(tmp_path, record, problem):
    write_json(tmp_path / "x_val.json", [{"image": "b_1.jpg", "caption": "c"}, record])
    with pytest.raises(AnnotationError, match=rf"x_val\.json: record 1: {problem}"):
        load(tmp_path)


def test_albef_two_files_for_one_split(tmp_path):
    write_json(tmp_path / "a_test.json", [])
    write_json(tmp_path / "b_test.json", [])
    with pytest.raises(AnnotationError, match=r"b_test\.json: second file for split 'test'"):
        load(tmp_path)


def test_load_missing_path(tmp_path):
    with pytest.raises(AnnotationError, match="nowhere"):
        load(tmp_path / "nowhere", format="amfmn")


# ------------------------------------------------------------------------------------ image checks
def test_check_images_ok_and_missing(karpathy_dir):
    for name in ("airport_1.jpg", "00017.jpg", "beach_3.jpg", "denseresidential_2.jpg"):
        write_image(karpathy_dir / "images" / name)
    assert len(load(karpathy_dir, check_images=True).images) == 4
    (karpathy_dir / "images" / "beach_3.jpg").unlink()
    msg = r"dataset_test\.json: record 2: image .*beach_3\.jpg not found"
    with pytest.raises(AnnotationError, match=msg):
        load(karpathy_dir, check_images=True)
    assert len(load(karpathy_dir).images) == 4  # images are only looked at on request


def test_check_images_unreadable_and_image_dir(amfmn_dir, tmp_path):
    imgs = tmp_path / "elsewhere"
    for name in ("airport_1.jpg", "beach_2.jpg", "park_1.jpg", "00005.jpg"):
        write_image(imgs / name)
    assert len(load(amfmn_dir, image_dir=imgs, check_images=True).images) == 4
    (imgs / "park_1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    msg = r"test_filename\.txt: line 1: image .*park_1\.jpg is unreadable"
    with pytest.raises(AnnotationError, match=msg):
        load(amfmn_dir, image_dir=imgs, check_images=True)
    default = r"train_filename\.txt: line 1: image .*/images/airport_1\.jpg not found"
    with pytest.raises(AnnotationError, match=default):
        load(amfmn_dir, check_images=True)  # default <folder>/images does not exist


# ---------------------------------------------------------------------------------- blank captions
def test_amfmn_blank_captions_keep_grouping(tmp_path):
    caps = ["a0", "", "a2", "a3", "a4", "b0", "b1", "b2", "   ", "b4", "c0", "c1", "c2", "c3", ""]
    write_amfmn(tmp_path, "train", caps, ["a_1.jpg", "b_1.jpg", "c_1.jpg"])
    with pytest.warns(BlankCaptionWarning) as record:
        ann = load(tmp_path)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "train_caps.txt" in msg and msg.endswith("line(s) 2, 9, 15")
    assert [r.captions for r in ann.images] == [
        ("a0", "a2", "a3", "a4"),
        ("b0", "b1", "b2", "b4"),
        ("c0", "c1", "c2", "c3"),
    ]
    assert summary(ann)["splits"]["train"] == {"images": 3, "captions": 12}


def test_amfmn_blank_per_caption_file(tmp_path):
    write_amfmn(tmp_path, "test", ["x", "", "y"], ["a_1.jpg", "a_1.jpg", "b_1.jpg"])
    msg = r"test_caps\.txt: dropped 1 blank caption\(s\) at line\(s\) 2$"
    with pytest.warns(BlankCaptionWarning, match=msg):
        ann = load(tmp_path)
    assert [r.captions for r in ann.images] == [("x",), ("y",)]


def test_karpathy_blank_captions(tmp_path):
    write_karpathy(tmp_path, [kimg("a_1.jpg", "train", "x", " "), kimg("b_1.jpg", "train", "y"),
                              kimg("c_1.jpg", "test", "", "")])
    msg = r"dataset_test\.json: dropped 2 .*record\(s\) 0, 2$"
    with pytest.warns(BlankCaptionWarning, match=msg):
        ann = load(tmp_path)
    assert [r.captions for r in ann.images] == [("x",), ("y",), ()]
    assert summary(ann)["splits"]["test"] == {"images": 1, "captions": 0}


def test_albef_blank_captions(tmp_path):
    write_json(tmp_path / "d_train.json", [{"image": "a_1.jpg", "caption": "x"},
                                            {"image": "a_1.jpg", "caption": ["", "y"]}])
    with pytest.warns(BlankCaptionWarning, match=r"d_train\.json: dropped 1 .*record\(s\) 1$"):
        ann = load(tmp_path)
    assert ann.images == [ImageRecord("a_1.jpg", "train", ("x", "y"), "a")]


def test_no_warning_without_blanks(amfmn_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(amfmn_dir)


# -------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "osdpm_lib.data", *args], cwd=REPO, capture_output=True, text=True
    )


def test_cli_summary(amfmn_dir):
    proc = run_cli("summary", str(amfmn_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "format": "amfmn",
        "splits": {"train": {"images": 2, "captions": 10}, "test": {"images": 2, "captions": 5}},
    }


def test_cli_error_exit_2(tmp_path, karpathy_dir):
    write_amfmn(tmp_path / "bad", "train", ["c"] * 3, ["a_1.jpg"])
    proc = run_cli("summary", str(tmp_path / "bad"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "train_caps.txt has 3 lines" in proc.stderr
    proc = run_cli("summary", str(karpathy_dir), "--format", "amfmn")
    assert proc.returncode == 2 and "no {train,val,test}_caps.txt" in proc.stderr
    proc = run_cli("summary", str(karpathy_dir), "--check-images")
    assert proc.returncode == 2 and "record 0: image" in proc.stderr


def test_cli_main_in_process(karpathy_dir, capsys):
    assert main(["summary", str(karpathy_dir), "--format", "karpathy"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"] == {"images": 1, "captions": 1}


# -------------------------------------------------------------------------------------- real RSICD
@pytest.mark.skipif(not (RSICD / "train_caps.txt").is_file(), reason="RSICD files not present")
def test_real_rsicd_amfmn():
    ann = load(RSICD)
    assert ann.format == "amfmn"
    assert summary(ann)["splits"] == {
        "train": {"images": 9828, "captions": 49140},
        "test": {"images": 1093, "captions": 5465},
    }
    train = ann.split("train")
    assert sum(r.scene is None for r in train) == 855
    assert len({r.scene for r in ann.images} - {None}) == 30
    assert ann.split("test")[0].filename == "airport_348.jpg"
    captions, index = ann.caption_image("test")
    assert len(captions) == 5465 and np.array_equal(np.bincount(index), np.full(1093, 5))


# ------------------------------------------------------------------------- bad input: one clear error each
def test_non_utf8_text_names_file_and_line(tmp_path):
    write_amfmn(tmp_path, "train", [f"c{i}" for i in range(5)], ["a_1.jpg"])
    caps = tmp_path / "train_caps.txt"
    caps.write_bytes(b"c0\nc1\nbeach caf\xe9 .\nc3\nc4\n")            # latin-1, not UTF-8
    with pytest.raises(AnnotationError, match=r"train_caps\.txt: line 3: not UTF-8 text \(byte 0xe9"):
        load(tmp_path)
    js = tmp_path / "k" / "dataset_k.json"
    js.parent.mkdir()
    js.write_bytes(b'{"images": [\n{"filename": "a.jpg",\n "split": "train", "sentences": [{"raw": "\xff"}]}]}')
    with pytest.raises(AnnotationError, match=r"dataset_k\.json: line 3: not UTF-8"):
        load(js.parent)


def test_unreadable_path_names_the_file(tmp_path):
    write_amfmn(tmp_path, "train", [f"c{i}" for i in range(5)], ["a_1.jpg"])
    (tmp_path / "train_caps.txt").unlink()
    (tmp_path / "train_caps.txt").mkdir()                         # a folder where a file should be
    with pytest.raises(AnnotationError, match=r"train_caps\.txt: cannot read: Is a directory"):
        load(tmp_path)


def test_truncated_json_names_the_line(karpathy_dir):
    path = karpathy_dir / "dataset_test.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(AnnotationError, match=r"dataset_test\.json: malformed JSON at line \d+"):
        load(karpathy_dir)


def _split_tensors(ann, split, image_dir, cache_dir):
    import torch

    from osdpm_lib.cache import SplitTensors

    def tokenizer(captions):
        return torch.zeros(len(captions), 4, dtype=torch.long)

    return SplitTensors.build(ann.split(split), image_dir, 8, tokenizer, cache_dir)


def test_corrupt_or_missing_image_in_training_names_the_record(amfmn_dir, tmp_path):
    imgs = amfmn_dir / "images"
    for name in ("airport_1.jpg", "beach_2.jpg", "park_1.jpg", "00005.jpg"):
        write_image(imgs / name)
    good = (imgs / "00005.jpg").read_bytes()
    (imgs / "00005.jpg").write_bytes(good[: len(good) // 2])          # truncated
    with pytest.raises(AnnotationError, match=r"test_filename\.txt: line 3: image .*00005\.jpg is unreadable"):
        load(amfmn_dir, check_images=True)
    ann = load(amfmn_dir)                                              # without the check: caught when decoding
    with pytest.raises(AnnotationError, match=r"test_filename\.txt: line 3: image .*00005\.jpg is unreadable"):
        _split_tensors(ann, "test", imgs, tmp_path / "cache")
    (imgs / "beach_2.jpg").unlink()
    with pytest.raises(AnnotationError, match=r"1 of 2 images missing under .*train_filename\.txt: line 2: beach_2"):
        _split_tensors(ann, "train", imgs, tmp_path / "cache")


def test_corrupt_image_cache_is_rebuilt(amfmn_dir, tmp_path):
    imgs = amfmn_dir / "images"
    for name in ("airport_1.jpg", "beach_2.jpg"):
        write_image(imgs / name)
    ann = load(amfmn_dir)
    first = _split_tensors(ann, "train", imgs, tmp_path)
    (cached,) = tmp_path.glob("images_8px_*.pt")
    cached.write_bytes(cached.read_bytes()[:50])
    with pytest.warns(UserWarning, match="rebuilding the image cache"):
        again = _split_tensors(ann, "train", imgs, tmp_path)
    assert (again.images == first.images).all()
