"""Figures of the book.  Every figure is saved as PNG and PDF (deterministic PDF metadata)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def save(fig, out_dir, name: str) -> list[Path]:
    """Write ``figures/<name>.png`` and ``.pdf`` under ``out_dir``; returns the paths."""
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png", d / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return paths


def sample_grid(records, image_dir, n: int = 8, cols: int = 4, scenes: dict | None = None, seed: int = 0,
                wrap: int = 38):
    """Sample images with their (first two) captions and scene class."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(records), size=min(n, len(records)), replace=False)
    rows = int(np.ceil(len(pick) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), pick):
        r = records[int(i)]
        with Image.open(Path(image_dir) / r.filename) as im:
            ax.imshow(im.convert("RGB"))
        scene = (scenes or {}).get(r.filename, r.scene) or "?"
        caps = "\n".join(textwrap.fill(c, wrap) for c in r.captions[:2])
        ax.set_title(f"{r.filename} [{scene}]\n{caps}", fontsize=7, loc="left")
    fig.tight_layout()
    return fig
