"""Tests for the fast data path (osdpm_lib.cache): the uint8 image cache on disk, the split tensors, the
normaliser and the augmentation.  (Missing images and a corrupt cache file: tests/test_data.py.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from osdpm_lib import cache
from osdpm_lib.cache import Normalizer, SplitTensors, augment, image_cache
from osdpm_lib.data import ImageRecord


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate((12, 8, 8)):   # the first one needs resizing
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return d


def _expected(path, size):
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy())


def test_image_cache_decodes_once_and_reads_the_file_after(image_dir, tmp_path, monkeypatch):
    names = ["im0.png", "im1.png", "im2.png"]
    x = image_cache(names, image_dir, 8, tmp_path / "c", workers=1, progress=False)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 8, 8)
    for i, n in enumerate(names):
        assert torch.equal(x[i], _expected(image_dir / n, 8))
    assert len(list((tmp_path / "c").glob("images_8px_*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "_decode", no_decoding)
    assert torch.equal(image_cache(names, image_dir, 8, tmp_path / "c", progress=False), x)
    with pytest.raises(AssertionError, match="decoded again"):   # another order is another cache
        image_cache(names[::-1], image_dir, 8, tmp_path / "c", progress=False)


def test_image_cache_key_follows_the_files(image_dir, tmp_path):
    names = ["im1.png", "im2.png"]
    first = image_cache(names, image_dir, 8, tmp_path / "c", workers=1, progress=False)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image_dir / "im2.png")   # regenerated file
    st = (image_dir / "im2.png").stat()
    os.utime(image_dir / "im2.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = image_cache(names, image_dir, 8, tmp_path / "c", workers=1, progress=False)
    assert torch.equal(second[0], first[0]) and not second[1].any()
    assert len(list((tmp_path / "c").glob("images_8px_*.pt"))) == 2


def test_split_tensors(image_dir, tmp_path):
    recs = [ImageRecord("im1.png", "train", ("a b", "c")), ImageRecord("im0.png", "train", ("d",)),
            ImageRecord("im2.png", "train", ("e", "f", "g"))]

    def tokenizer(captions):
        return torch.tensor([[len(c), 7] for c in captions])

    st = SplitTensors.build(recs, image_dir, 8, tokenizer, tmp_path / "c")
    assert st.captions == ["a b", "c", "d", "e", "f", "g"]
    assert st.caption_image.tolist() == [0, 0, 1, 2, 2, 2]
    assert st.tokens[:, 0].tolist() == [3, 1, 1, 1, 1, 1]
    assert torch.equal(st.images[1], _expected(image_dir / "im0.png", 8))
    order, start, count = st.caption_index()
    assert count.tolist() == [2, 1, 3] and start.tolist() == [0, 2, 3]
    assert [st.captions[int(order[j])] for j in range(start[2], start[2] + count[2])] == ["e", "f", "g"]


def test_normalizer():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    y = Normalizer(mean, std)(x)
    want = [(0 - 127.5) / 127.5, (128 - 63.75) / 63.75, 255 / 255.0]
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y[0, :, 0, 0].numpy(), want, rtol=1e-6)


def test_augment_is_a_seeded_flip_and_rotation():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    a = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(3)))   # same generator state, same result
    for i in range(2):
        dihedral = [torch.rot90(v, k, dims=(-2, -1)) for v in (x[i], x[i].flip(-1)) for k in range(4)]
        assert any(torch.equal(a[i], d) for d in dihedral)
    outs = {augment(x, torch.Generator().manual_seed(s)).numpy().tobytes() for s in range(20)}
    assert len(outs) > 1   # the generator decides



def test_tqdm_disable_switches_bars_off():
    """TQDM_DISABLE=1 (the runner's kernels) must win over a bar the caller leaves on; tqdm reads it at import."""
    import os
    import subprocess
    import sys

    code = ("from tqdm.auto import tqdm; from osdpm_lib.cache import bar_off; "
            "print(tqdm(range(3), **bar_off(False)).disable, tqdm(range(3), disable=False).disable, "
            "tqdm(range(3), **bar_off(True)).disable)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TQDM_DISABLE="1"), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "False", "True"], out      # the middle one: why bar_off exists
