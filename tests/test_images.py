"""Bad images and records (issue 18), each planted in small files the tests write: a truncated JPEG, one image
file in two records (test and val), a 16-bit TIFF (I;16, values up to 4,000), an RGBA PNG, multi-band TIFFs;
and the one reader (data.read_image) that the image cache, the check and the audit's hashes share."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from osdpm_lib import audit, cache, data
from osdpm_lib.data import AnnotationError, load, read_image, stretch_to_uint8

REPO = Path(__file__).resolve().parents[1]


def write_dataset(folder: Path, entries: list[tuple[str, str]]) -> Path:
    """A Karpathy json of ``(filename, split)`` records, one caption each."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [{"filename": f, "split": s, "sentences": [{"raw": f"caption of {f}"}]} for f, s in entries]
    (folder / "dataset_x.json").write_text(json.dumps({"images": items}))
    (folder / "images").mkdir(exist_ok=True)
    return folder


def noise_jpeg(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path, quality=95)


def tiff16(seed: int = 0, shape=(32, 32)) -> np.ndarray:
    """12-bit sensor values in a 16-bit container: a ramp from 100 to 4,000 plus noise."""
    ramp = np.linspace(100, 4000, shape[0] * shape[1]).reshape(shape)
    noise = np.random.default_rng(seed).normal(0, 20, shape)
    return np.clip(ramp + noise, 0, 4000).astype(np.uint16)


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True)


# ------------------------------------------------------------------------------------- truncated JPEG
def test_truncated_jpeg_and_every_bad_image_are_named(tmp_path):
    folder = write_dataset(tmp_path / "d", [("a_1.jpg", "train"), ("b_1.jpg", "train"), ("c_1.jpg", "val"),
                                            ("d_1.jpg", "test"), ("e_1.jpg", "test")])
    imgs = folder / "images"
    for i, name in enumerate(["a_1.jpg", "b_1.jpg", "c_1.jpg", "d_1.jpg"]):
        noise_jpeg(imgs / name, i)
    whole = (imgs / "b_1.jpg").read_bytes()
    assert len(whole) > 6000
    (imgs / "b_1.jpg").write_bytes(whole[:3000])                     # truncated
    (imgs / "d_1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")    # corrupt header; e_1.jpg is missing
    with Image.open(imgs / "b_1.jpg") as im:
        im.verify()                                                   # what the check used to do: it passes
    with pytest.raises(AnnotationError) as err:
        load(folder, check_images=True)
    msg = str(err.value)
    assert msg.startswith(f"3 of 5 images under {imgs} are missing or bad:\n")
    assert "dataset_x.json: record 1: image " in msg and "b_1.jpg is unreadable: image file is truncated" in msg
    assert "dataset_x.json: record 3: image " in msg and "d_1.jpg is unreadable" in msg
    assert "dataset_x.json: record 4: image " in msg and "e_1.jpg not found" in msg
    assert "a_1.jpg" not in msg and "c_1.jpg" not in msg
    proc = run_cli("osdpm_lib.data", "summary", str(folder), "--check-images")
    assert proc.returncode == 2 and proc.stdout == ""
    assert all(f"record {i}: image" in proc.stderr for i in (1, 3, 4))
    # training decodes through the same reader and stops with the same words
    with pytest.raises(AnnotationError, match=r"record 1: image .*b_1\.jpg is unreadable: image file is truncated"):
        cache.image_cache(["a_1.jpg", "b_1.jpg"], imgs, 16, tmp_path / "c", workers=1, progress=False,
                          origins=[f"{folder / 'dataset_x.json'}: record {i}" for i in (0, 1)])


def test_check_passes_with_a_report_and_threads_agree(tmp_path, capsys):
    names = [f"im_{i}.jpg" for i in range(6)]
    folder = write_dataset(tmp_path / "d", [(n, "train") for n in names])
    for i, n in enumerate(names):
        noise_jpeg(folder / "images" / n, i)
    ann = load(folder, check_images=True)
    assert ann.image_check == {"images": 6, "rescaled": 0, "alpha dropped": 0}
    assert data.summary(ann)["image check"] == ann.image_check
    assert "image check" not in data.summary(load(folder))
    one = data.check_image_files(ann.images, folder / "images", workers=1, progress=False)
    assert one == data.check_image_files(ann.images, folder / "images", workers=3, progress=False)
    capsys.readouterr()
    data.check_image_files(ann.images, folder / "images", workers=1, progress=True)
    assert "checking images: 100%" in capsys.readouterr().err              # the bar, forced on


def test_large_sets_are_checked_in_worker_processes(tmp_path, monkeypatch):
    names = [f"im_{i}.jpg" for i in range(5)]
    folder = write_dataset(tmp_path / "d", [(n, "train") for n in names] + [("s_1.tif", "test")])
    for i, n in enumerate(names):
        noise_jpeg(folder / "images" / n, i)
    Image.fromarray(tiff16()).save(folder / "images" / "s_1.tif")
    ann = load(folder)
    monkeypatch.setattr(data, "LARGE_SET", 2)

    def not_here(*args):
        raise AssertionError("decoded in this process")

    monkeypatch.setattr(data, "read_image", not_here)   # worker processes import the module afresh
    assert data.check_image_files(ann.images, folder / "images", workers=2, progress=False) == \
        {"images": 6, "rescaled": 1, "alpha dropped": 0}
    (folder / "images" / "im_3.jpg").write_bytes(b"broken")
    with pytest.raises(AnnotationError, match=r"1 of 6 images .*\n.*record 3: image .*im_3\.jpg is unreadable"):
        data.check_image_files(ann.images, folder / "images", workers=2, progress=False)


# ----------------------------------------------------------------------------- one file, two records
def test_same_file_in_test_and_val_is_an_error_naming_both(tmp_path):
    folder = write_dataset(tmp_path / "d", [("a_1.jpg", "train"), ("same_1.jpg", "test"), ("b_1.jpg", "test"),
                                            ("./same_1.jpg", "val")])           # the same path, spelt otherwise
    with pytest.raises(AnnotationError) as err:
        load(folder)
    msg = str(err.value)
    assert "1 image file(s) referenced by more than one record" in msg and "allow_shared_images" in msg
    assert "image 'same_1.jpg' is in 2 records: " in msg
    assert "dataset_x.json: record 1 (split 'test'); " in msg and "dataset_x.json: record 3 (split 'val')" in msg
    proc = run_cli("osdpm_lib.data", "summary", str(folder))
    assert proc.returncode == 2 and "record 1 (split 'test')" in proc.stderr

    ann = load(folder, allow_shared_images=True)                       # the explicit option
    assert [r.split for r in ann.images] == ["train", "test", "test", "val"]
    proc = run_cli("osdpm_lib.data", "summary", str(folder), "--allow-shared-images")
    assert proc.returncode == 0 and json.loads(proc.stdout)["splits"]["val"] == {"images": 1, "captions": 1}

    table = audit.shared_files(ann)                                     # and the audit reports it
    assert table.to_dict("records") == [{"filename": "same_1.jpg", "records": 2, "splits": "test, val",
                                         "origins": "dataset_x.json: record 1; dataset_x.json: record 3"}]
    proc = run_cli("osdpm_lib.audit", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "## Image files in several records" in proc.stdout and "| same_1.jpg |" in proc.stdout


def test_training_refuses_a_shared_image_before_any_work(tmp_path):
    from osdpm_lib.train import TrainConfig, train

    folder = write_dataset(tmp_path / "d", [("a_1.jpg", "train"), ("x_1.jpg", "test"), ("x_1.jpg", "val")])
    with pytest.raises(AnnotationError, match=r"image 'x_1\.jpg' is in 2 records"):
        train(TrainConfig(), folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()                              # nothing written


# ------------------------------------------------------------------------------------------ 16-bit TIFF
def test_16bit_tiff_is_stretched_not_clipped(tmp_path):
    x = tiff16()
    path = tmp_path / "s_1.tif"
    Image.fromarray(x).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
        clipped = np.asarray(im.convert("RGB"))                         # what the cache used to do
    assert (clipped == 255).all(-1).mean() > 0.9

    dec = read_image(path)
    got = np.asarray(dec.image)
    assert dec.rescaled and not dec.alpha_dropped and dec.image.mode == "RGB" and got.shape == (32, 32, 3)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
    lo, hi = np.percentile(x.astype(np.float64), [2, 98])              # the documented rule, computed here
    want = np.rint(np.clip((x - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(got[..., 0], want)
    assert (got == 255).all(-1).mean() <= 0.03 and (got == 0).all(-1).mean() <= 0.03
    assert np.corrcoef(x.ravel(), got[..., 0].ravel())[0, 1] > 0.99

    folder = write_dataset(tmp_path / "d", [("s_1.tif", "train"), ("p_1.png", "train")])
    path.rename(folder / "images" / "s_1.tif")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "images" / "p_1.png")
    assert load(folder, check_images=True).image_check == {"images": 2, "rescaled": 1, "alpha dropped": 0}
    proc = run_cli("osdpm_lib.data", "summary", str(folder), "--check-images")
    assert proc.returncode == 0 and json.loads(proc.stdout)["image check"]["rescaled"] == 1
    # the cache decodes through the same reader
    cached = cache.image_cache(["s_1.tif"], folder / "images", 32, tmp_path / "c", workers=1, progress=False)
    assert torch.equal(cached[0], torch.from_numpy(got.transpose(2, 0, 1).copy()))


def test_16bit_and_float_rgb_tiffs_are_stretched_jointly(tmp_path):
    rgb = np.stack([tiff16(0), tiff16(1) // 2, tiff16(2) // 4], axis=-1)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb)
    with Image.open(tmp_path / "rgb16.tif") as im:                      # Pillow alone reads garbage
        assert np.asarray(im.convert("RGB")).max() < 20
    dec = read_image(tmp_path / "rgb16.tif")
    assert dec.rescaled
    assert np.array_equal(np.asarray(dec.image), stretch_to_uint8(rgb))
    means = np.asarray(dec.image).reshape(-1, 3).mean(0)
    assert means[0] > means[1] > means[2]                               # one stretch for all bands: balance kept
    tifffile.imwrite(tmp_path / "f.tif", rgb.astype(np.float32) / 4000)  # float RGB: Pillow cannot open it
    assert np.array_equal(np.asarray(read_image(tmp_path / "f.tif").image), np.asarray(dec.image))


def test_stretch_rule():
    assert not stretch_to_uint8(np.full((4, 4), 7.0)).any()             # constant: black
    x = np.array([[0.0, 1.0], [np.nan, 3.0]])
    assert stretch_to_uint8(x)[1, 0] == 0                               # not finite: 0
    y = np.zeros((10, 10))
    y[0, 0] = 5.0                                                       # percentiles equal: min..max
    assert stretch_to_uint8(y)[0, 0] == 255 and stretch_to_uint8(y)[0, 1] == 0
    z = np.arange(101, dtype=np.uint16)
    assert stretch_to_uint8(z)[[0, 2, 50, 98, 100]].tolist() == [0, 0, 128, 255, 255]


# -------------------------------------------------------------------------------------------- RGBA PNG
def test_rgba_png_drops_alpha_by_rule(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0                                                    # fully transparent: colours kept anyway
    folder = write_dataset(tmp_path / "d", [("t_1.png", "train")])
    Image.fromarray(rgba, "RGBA").save(folder / "images" / "t_1.png")
    dec = read_image(folder / "images" / "t_1.png")
    assert dec.alpha_dropped and not dec.rescaled
    assert np.array_equal(np.asarray(dec.image), rgba[..., :3])
    assert load(folder, check_images=True).image_check == {"images": 1, "rescaled": 0, "alpha dropped": 1}


# ------------------------------------------------------------------------------------- more than 3 bands
def test_four_band_tiff_is_an_error_unless_bands_are_picked(tmp_path):
    bands4 = np.stack([tiff16(i) // (i + 1) for i in range(4)], axis=-1)   # R, G, B, NIR
    folder = write_dataset(tmp_path / "d", [("m_1.tif", "train")])
    path = folder / "images" / "m_1.tif"
    tifffile.imwrite(path, bands4, photometric="minisblack", planarconfig="contig")
    with pytest.raises(AnnotationError, match=r"record 0: image .*m_1\.tif has 4 bands; .*bands=\(r, g, b\)"):
        load(folder, check_images=True)
    dec = read_image(path, bands=(3, 2, 1))
    assert np.array_equal(np.asarray(dec.image), stretch_to_uint8(bands4[..., [3, 2, 1]]))
    grey = np.asarray(read_image(path, bands=[3]).image)
    assert np.array_equal(grey[..., 0], stretch_to_uint8(bands4[..., 3])) and (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(AnnotationError, match=r"m_1\.tif has 4 bands; bands=\(0, 1, 4\) asks for band 4"):
        read_image(path, bands=(0, 1, 4))
    with pytest.raises(ValueError, match="1 or 3 band indices"):
        read_image(path, bands=(0, 1))
    proc = run_cli("osdpm_lib.data", "summary", str(folder), "--check-images", "--bands", "2,1,0")
    assert proc.returncode == 0 and json.loads(proc.stdout)["image check"]["rescaled"] == 1
    # planar (band-interleaved) layout, 8 bits, 5 bands: the same rule
    tifffile.imwrite(path, np.moveaxis(np.stack([bands4[..., 0] // 16] * 5, -1), -1, 0).astype(np.uint8),
                     photometric="minisblack", planarconfig="separate")
    with pytest.raises(AnnotationError, match=r"m_1\.tif has 5 bands"):
        read_image(path)
    dec = read_image(path, bands=(4, 0, 1))
    assert not dec.rescaled and np.array_equal(np.asarray(dec.image)[..., 0], (bands4[..., 0] // 16).astype(np.uint8))
    cached = cache.image_cache(["m_1.tif"], folder / "images", 32, tmp_path / "c", workers=1, progress=False,
                               bands=(4, 0, 1))
    assert torch.equal(cached[0], torch.from_numpy(np.asarray(dec.image).transpose(2, 0, 1).copy()))


def test_tiff_alpha_sample_is_dropped(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgba, extrasamples=["unassalpha"])
    dec = read_image(tmp_path / "a.tif")
    assert dec.alpha_dropped and np.array_equal(np.asarray(dec.image), rgba[..., :3])


def _png16(path: Path, x: np.ndarray) -> None:
    """A 16-bit RGB PNG, written by hand (Pillow cannot write one)."""
    h, w, _ = x.shape
    raw = b"".join(b"\x00" + x[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_rgb_png_is_refused(tmp_path):
    _png16(tmp_path / "p.png", np.stack([tiff16(0, (8, 8))] * 3, -1))
    with pytest.raises(AnnotationError, match=r"p\.png: a 16-bit RGB PNG, of which Pillow reads only the high byte"):
        read_image(tmp_path / "p.png", origin="list.json: record 7")
    gray = tmp_path / "g.png"
    Image.fromarray(tiff16(0, (8, 8))).save(gray)                       # 16-bit grey PNG: stretched
    assert read_image(gray).rescaled


def test_eight_bit_modes_convert_as_before(tmp_path):
    rng = np.random.default_rng(2)
    for mode in ("L", "P", "RGB", "1", "CMYK"):
        im = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode)
        path = tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        im.save(path)
        with Image.open(path) as ref:
            want = np.asarray(ref.convert("RGB"))
        dec = read_image(path)
        assert not dec.rescaled and not dec.alpha_dropped
        assert np.array_equal(np.asarray(dec.image), want), mode


def test_sample_grid_shows_images_as_read(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from osdpm_lib import figures

    folder = write_dataset(tmp_path / "d", [("s_1.tif", "train")])
    Image.fromarray(tiff16()).save(folder / "images" / "s_1.tif")
    fig = figures.sample_grid(load(folder).images, folder / "images", n=1, cols=1)
    shown = fig.axes[0].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), np.asarray(read_image(folder / "images" / "s_1.tif").image))
