"""Throughput of ``python -m osdpm_lib.data summary --check-images`` (data.check_image_files): N generated
256 px JPEGs (RSICD's size and format) decoded in threads and in worker processes, on every available core.

    python benchmarks/check_images.py [--n 4000] [--workers K]

Prints images per second for each; a goal, not a test: worker processes should scale with the cores
(threads stop near 2-3 cores, because Pillow parses headers in Python under the GIL)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from osdpm_lib import data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, rng = Path(tmp), np.random.default_rng(0)
        base = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        for i in range(args.n):
            im = Image.fromarray(np.roll(base, i, axis=(0, 1))).resize((256, 256), Image.BICUBIC)
            im.save(folder / f"x_{i}.jpg", quality=90)
        recs = [data.ImageRecord(f"x_{i}.jpg", "train", ("c",), None, f"record {i}") for i in range(args.n)]
        workers = args.workers or data.available_cores()
        for how, large in (("threads", args.n + 1), ("processes", 1)):
            data.LARGE_SET = large
            t = time.perf_counter()
            data.check_image_files(recs, folder, workers=workers, progress=False)
            dt = time.perf_counter() - t
            print(f"{how:9s} {workers:3d} workers: {args.n / dt:8.0f} images/s ({dt:.2f} s for {args.n})")


if __name__ == "__main__":
    main()
