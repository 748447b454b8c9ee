"""Rendering of the embedded benchmark: the canvas (land-cover background, placement masks, boxes) and one
painter per lexicon category; :func:`_render` draws one image of a scene spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .scenes import CATEGORY_COLOURS, COLOURS, DRAW_ORDER, LANDCOVER, WATER, ObjectSpec, SceneSpec


def _choice(rng: np.random.Generator, items: Sequence, weights: Sequence[float] | None = None):
    if weights is None:
        return items[int(rng.integers(len(items)))]
    u = rng.random() * sum(weights)
    acc = 0.0
    for item, w in zip(items, weights):
        acc += w
        if u < acc:
            return item
    return items[-1]


def _wchoice(rng: np.random.Generator, pairs: Sequence[tuple[str, float]]) -> str:
    return _choice(rng, [p[0] for p in pairs], [p[1] for p in pairs])


def _rot(pts: Sequence[tuple[float, float]], cx: float, cy: float, th: float) -> list[tuple[float, float]]:
    c, s = math.cos(th), math.sin(th)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _rect(w: float, h: float) -> list[tuple[float, float]]:
    return [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]


def _smooth(pts: list[tuple[float, float]], rounds: int = 2) -> list[tuple[float, float]]:
    """Chaikin corner cutting of an open polyline."""
    for _ in range(rounds):
        out = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            out.append((0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1))
            out.append((0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1))
        out.append(pts[-1])
        pts = out
    return pts


@dataclass
class _Obj:
    category: str
    pts: list[tuple[float, float]]  # canvas points whose bounding box is the object's box
    colour: str
    size: float  # longest dimension / canvas side
    long: bool = False
    distractor: bool = False  # drawn for clutter, left out of the captions (generator condition "cluttered")


class _Canvas:
    """One scene being drawn at ``ss`` times the output resolution, with placement masks."""

    def __init__(self, rng: np.random.Generator, size: int, ss: int, background: str):
        self.rng, self.S, self.ss = rng, size, ss
        self.C = C = size * ss
        rgb, lo_amp, grain = LANDCOVER[background]
        base = np.array(rgb, float) + rng.normal(0.0, 4.0, 3) + rng.normal(0.0, 6.0)
        # texture at the output resolution (finer detail would be averaged away), upsampled
        lo = rng.normal(0.0, 1.0, (6, 6)).astype(np.float32)
        lo_img = np.asarray(Image.fromarray(lo).resize((size, size), Image.BICUBIC), dtype=np.float32)
        mid = rng.normal(0.0, 1.0, (size // 2, size // 2)).astype(np.float32)
        mid_img = np.asarray(Image.fromarray(mid).resize((size, size), Image.BILINEAR), dtype=np.float32)
        arr = base[None, None, :] + (lo_amp * lo_img + grain * 0.8 * mid_img)[:, :, None]
        small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        self.img = small.resize((C, C), Image.BILINEAR) if ss > 1 else small
        self.bg_rgb = tuple(int(v) for v in np.clip(base, 0, 255))
        self.draw = ImageDraw.Draw(self.img)
        self.masks = {k: Image.new("L", (C, C), 0) for k in ("water", "paved", "occupied", "veg")}
        self.mdraw = {k: ImageDraw.Draw(m) for k, m in self.masks.items()}
        self._mask_cache: dict[str, np.ndarray] = {}
        self.objects: list[_Obj] = []
        self.sun = rng.uniform(0, 2 * math.pi)
        self.roads: list[tuple[list[tuple[float, float]], float, float]] = []  # (polyline, width, angle)
        self.rivers: list[tuple[list[tuple[float, float]], float]] = []
        self.lots: list[tuple[float, float, float, float, float]] = []  # (cx, cy, w, h, th)
        self.docks: list[tuple[float, float, float, float]] = []  # (x0, y0, angle, length)
        self.sea_side: int | None = None
        self.sea_edge: list[tuple[float, float]] = []
        self.swapped: dict[str, str] = {}  # twin mode of _render: category -> the category it was painted as

    # ---- colours -----------------------------------------------------------------------------
    def jitter(self, rgb: Sequence[int], amount: float = 10.0) -> tuple[int, int, int]:
        e = self.rng.normal(0.0, amount, 4)
        return tuple(min(255, max(0, int(c + e[i] + 0.6 * e[3]))) for i, c in enumerate(rgb))  # type: ignore[return-value]

    def colour_for(self, cat: str) -> str:
        return _wchoice(self.rng, CATEGORY_COLOURS.get(cat, (("gray", 1.0),)))

    def shadow_rgb(self) -> tuple[int, int, int]:
        return self.jitter(tuple(int(c * 0.45) for c in self.bg_rgb), 4.0)

    # ---- masks and placement -------------------------------------------------------------------
    def mask(self, name: str) -> np.ndarray:
        m = self._mask_cache.get(name)
        if m is None:
            o = self.ss // 2
            m = self._mask_cache[name] = np.asarray(self.masks[name])[o :: self.ss, o :: self.ss] > 0
        return m

    def mark(self, names: Sequence[str], pts=None, line=None, width: float = 0, ellipse=None,
             joint: str | None = None) -> None:
        for n in names:
            self._mask_cache.pop(n, None)
            d = self.mdraw[n]
            if pts is not None:
                d.polygon(pts, fill=255)
            if line is not None:
                d.line(line, fill=255, width=max(1, int(round(width))), joint=joint)
            if ellipse is not None:
                d.ellipse(ellipse, fill=255)

    def place(self, allowed: np.ndarray, radius_px: float, tol: float = 0.15, tries: int = 25):
        """A canvas centre whose footprint (a square of ``radius_px`` canvas px) is mostly allowed."""
        S, ss, rng = self.S, self.ss, self.rng
        r = max(0, int(math.ceil(radius_px / ss)))
        m = min(r, S // 2 - 1)
        inner = np.zeros_like(allowed)
        inner[m : S - m, m : S - m] = allowed[m : S - m, m : S - m]
        ys, xs = np.nonzero(inner)
        if len(xs) == 0:
            return None
        for _ in range(tries):
            k = int(rng.integers(len(xs)))
            y, x = ys[k], xs[k]
            win = allowed[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            if win.size and win.mean() >= 1.0 - tol:
                return ((x + rng.random()) * ss, (y + rng.random()) * ss)
        return None

    def land_free(self) -> np.ndarray:
        return ~self.mask("water") & ~self.mask("occupied") & ~self.mask("paved")

    def add(self, cat: str, pts, colour: str, size: float, long: bool = False) -> None:
        self.objects.append(_Obj(cat, list(pts), colour, size, long))

    # ---- polylines -----------------------------------------------------------------------------
    def crossing_line(self, wobble: float, n: int = 5, through=None, angle=None):
        """A polyline crossing the whole canvas (optionally through a point at an angle)."""
        rng, C = self.rng, self.C
        th = rng.uniform(0, math.pi) if angle is None else angle
        cx, cy = through if through is not None else (rng.uniform(0.25, 0.75) * C, rng.uniform(0.25, 0.75) * C)
        L = 1.6 * C
        pts = []
        for i in range(n):
            t = -L / 2 + L * i / (n - 1)
            off = rng.normal(0.0, wobble * C) if 0 < i < n - 1 else 0.0
            if through is not None and i == n // 2:
                off = 0.0
            pts.append((cx + t * math.cos(th) - off * math.sin(th), cy + t * math.sin(th) + off * math.cos(th)))
        return _smooth(pts, 3) if wobble > 0 else pts, th

    @staticmethod
    def line_bbox_pts(line, width):
        xs = [p[0] for p in line]
        ys = [p[1] for p in line]
        h = width / 2
        return [(min(xs) - h, min(ys) - h), (max(xs) + h, max(ys) + h)]

    def point_on(self, line) -> tuple[float, float, float]:
        """A random point well inside the canvas on a polyline, and the local direction."""
        rng, C = self.rng, self.C
        segs = [
            (a, b)
            for a, b in zip(line[:-1], line[1:])
            if 0.08 * C < (a[0] + b[0]) / 2 < 0.92 * C and 0.08 * C < (a[1] + b[1]) / 2 < 0.92 * C
        ]
        if not segs:
            segs = list(zip(line[:-1], line[1:]))
        a, b = segs[int(rng.integers(len(segs)))]
        t = rng.random()
        return a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]), math.atan2(b[1] - a[1], b[0] - a[0])

    # ---- finishing -----------------------------------------------------------------------------
    def finish(self) -> Image.Image:
        rng = self.rng
        img = self.img.resize((self.S, self.S), Image.BOX) if self.ss > 1 else self.img
        arr = np.asarray(img, dtype=np.float32)
        gain = rng.uniform(0.9, 1.1)
        cast = rng.normal(0.0, 3.0, 3)
        sigma = rng.uniform(2.0, 6.0)
        arr = arr * gain + cast[None, None, :] + rng.normal(0.0, sigma, arr.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))

    def boxes(self, out_size: int | None = None) -> list[dict]:
        """Pixel boxes of the drawn objects at the canvas's output side, or at ``out_size`` when the image is
        resampled to it (a condition's coarser ground sampling distance); distractors are flagged."""
        out = []
        S = self.S if out_size is None else out_size
        ss = self.ss if out_size is None else self.ss * self.S / out_size
        for o in self.objects:
            xs = [p[0] for p in o.pts]
            ys = [p[1] for p in o.pts]
            x0 = max(0, min(S - 1, int(math.floor(min(xs) / ss))))
            y0 = max(0, min(S - 1, int(math.floor(min(ys) / ss))))
            x1 = max(x0 + 1, min(S, int(math.ceil(max(xs) / ss))))
            y1 = max(y0 + 1, min(S, int(math.ceil(max(ys) / ss))))
            b = {"category": o.category, "box": [x0, y0, x1, y1], "color": o.colour}
            if o.distractor:
                b["distractor"] = True
            out.append(b)
        return out


# ---- category painters --------------------------------------------------------------------------
# Each painter draws ``n`` instances (or fewer when they do not fit) with sizes drawn from ``size``
# (fractions of the image side) and records them on the canvas.


def _paint_farmland(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        s = rng.uniform(*size)
        th = rng.uniform(0, math.pi)
        if s >= 0.7:
            cx, cy, L = C / 2, C / 2, 1.5 * C
        else:
            cx, cy = rng.uniform(0.3, 0.7) * C, rng.uniform(0.3, 0.7) * C
            L = s * C
        crops = [(104, 140, 70), (70, 110, 56), (176, 162, 96), (150, 124, 88), (128, 150, 84), (190, 176, 120)]
        k = int(rng.integers(4, 10))
        edges = np.sort(rng.uniform(-L / 2, L / 2, k - 1))
        edges = np.concatenate([[-L / 2], edges, [L / 2]])
        names = []
        for a, b in zip(edges[:-1], edges[1:]):
            ci = int(rng.integers(len(crops)))
            names.append(ci)
            pts = _rot([((a + b) / 2 + x, y) for x, y in _rect(b - a, L)], cx, cy, th)
            d.polygon(pts, fill=cv.jitter(crops[ci], 8.0))
            # furrows: faint lines along the strip
            for j in range(1, 4):
                t = a + (b - a) * j / 4
                d.line(_rot([(t, -L / 2), (t, L / 2)], cx, cy, th), fill=cv.jitter(crops[ci], 14.0), width=1)
        region = _rot(_rect(L, L), cx, cy, th)
        greens = sum(1 for c in names if c in (0, 1, 4))
        colour = "green" if greens >= 0.6 * len(names) else "yellow" if greens <= 0.3 * len(names) else "brown"
        cv.add("farmland", region, colour, min(1.0, s))
        cv.mark(["veg"], pts=region)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, k: int = 28, rough: float = 0.18):
    phases = rng.uniform(0, 2 * math.pi, 4)
    amps = rng.normal(0.0, rough, 4) / np.arange(1, 5)
    pts = []
    for i in range(k):
        a = 2 * math.pi * i / k
        rr = r * (1.0 + sum(amps[j] * math.cos((j + 2) * a + phases[j]) for j in range(4)))
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _paint_meadow(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C = cv.rng, cv.C
    for _ in range(n):
        s = rng.uniform(*size)
        r = s * C / 2 * (1.3 if s > 0.8 else 1.0)
        pts = _blob(rng, rng.uniform(0.35, 0.65) * C, rng.uniform(0.35, 0.65) * C, r, rough=0.25)
        cv.draw.polygon(pts, fill=cv.jitter((112, 150, 80), 10.0))
        cv.add("meadow", pts, "green", min(1.0, s))
        cv.mark(["veg"], pts=pts)


def _paint_sea(cv: _Canvas, n: int, size: tuple[float, float], beach: tuple[float, float] | None = None) -> None:
    """Sea covering one side of the image (with a sand band when ``beach`` is given)."""
    rng, C = cv.rng, cv.C
    cover = rng.uniform(*size)
    side = int(rng.integers(4))
    tilt = rng.normal(0.0, 0.15)
    k = 14
    edge = []
    for i in range(k + 1):
        x = -0.2 * C + 1.4 * C * i / k
        y = C * (1 - cover) + (x - C / 2) * tilt + rng.normal(0.0, 0.015 * C)
        edge.append((x, y))
    edge = _smooth(edge, 2)

    def orient(pts):  # local frame has the sea at the bottom; rotate about the centre by side*90deg
        return _rot([(x - C / 2, y - C / 2) for x, y in pts], C / 2, C / 2, side * math.pi / 2)

    colour = cv.colour_for("sea")
    if beach is not None:
        band = rng.uniform(*beach) * C
        inland = [(x, y - band + rng.normal(0.0, 0.01 * C)) for x, y in edge]
        sand_pts = orient(inland + [(1.3 * C, 1.3 * C), (-0.3 * C, 1.3 * C)])
        bcol = cv.colour_for("beach")
        cv.draw.polygon(sand_pts, fill=cv.jitter((214, 196, 146) if bcol == "yellow" else (226, 220, 200), 8.0))
        cv.add("beach", orient(inland + edge[::-1]), bcol, band / C)
    sea_pts = orient(edge + [(1.3 * C, 1.3 * C), (-0.3 * C, 1.3 * C)])
    cv.draw.polygon(sea_pts, fill=cv.jitter(WATER[colour], 6.0))
    # waves / foam along the shore
    cv.draw.line(orient(edge), fill=cv.jitter((225, 228, 225), 6.0), width=max(1, cv.ss))
    cv.mark(["water"], pts=sea_pts)
    cv.add("sea", sea_pts, colour, cover)
    cv.sea_side = side
    cv.sea_edge = orient(edge)


def _paint_river(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C = cv.rng, cv.C
    for _ in range(n):
        w = rng.uniform(*size) * C
        line, _ = cv.crossing_line(0.12, n=6)
        colour = cv.colour_for("river")
        bank = cv.jitter((150, 140, 110), 10.0)
        cv.draw.line(line, fill=bank, width=int(w * 1.25), joint="curve")
        cv.draw.line(line, fill=cv.jitter(WATER[colour], 6.0), width=int(w), joint="curve")
        cv.mark(["water"], line=line, width=w, joint="curve")
        cv.rivers.append((line, w))
        cv.add("river", cv.line_bbox_pts(line, w), colour, w / C)


def _paint_pond(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C = cv.rng, cv.C
    for _ in range(n):
        s = rng.uniform(*size)
        r = s * C / 2
        c = cv.place(cv.land_free(), r * 0.9, tol=0.3)
        if c is None:
            continue
        pts = _blob(rng, c[0], c[1], r, rough=0.3)
        colour = cv.colour_for("pond")
        cv.draw.polygon(pts, fill=cv.jitter(WATER[colour], 6.0), outline=cv.jitter((120, 130, 100), 8.0))
        cv.mark(["water"], pts=pts)
        cv.add("pond", pts, colour, s)


def _paint_road(cv: _Canvas, n: int, size: tuple[float, float], through=None, angle=None) -> None:
    rng, C = cv.rng, cv.C
    for i in range(n):
        w = rng.uniform(*size) * C
        if angle is None and cv.roads and i > 0:  # a second road often crosses the first at a right angle
            line, th = cv.crossing_line(0.03, n=3, angle=cv.roads[0][2] + math.pi / 2 + rng.normal(0, 0.1))
        else:
            line, th = cv.crossing_line(0.04 if through is None else 0.0, n=3, through=through, angle=angle)
        colour = cv.colour_for("road")
        cv.draw.line(line, fill=cv.jitter(COLOURS[colour], 8.0), width=max(1, int(w)))
        cv.mark(["paved"], line=line, width=w)
        cv.roads.append((line, w, th))
        cv.add("road", cv.line_bbox_pts(line, w), colour, w / C)


def _strip(cv: _Canvas, cat: str, size: tuple[float, float], centre: tuple[float, float]):
    """A straight strip across the canvas (runway, railway): width drawn from ``size``, a random angle, its
    centre in ``centre`` (fractions of the side) on both axes, a colour of ``cat``.  Returns
    ``(width, angle, cx, cy, colour, corner points)`` (1.6 canvas sides long)."""
    rng, C = cv.rng, cv.C
    w = rng.uniform(*size) * C
    th = rng.uniform(0, math.pi)
    cx, cy = rng.uniform(*centre) * C, rng.uniform(*centre) * C
    colour = cv.colour_for(cat)
    return w, th, cx, cy, colour, _rot(_rect(1.6 * C, w), cx, cy, th)


def _add_axis(cv: _Canvas, cx: float, cy: float, th: float, w: float) -> None:
    """Record the axis of a strip (1.6 canvas sides long, width ``w``) as a road other objects may follow."""
    C = cv.C
    cv.roads.append(([_rot([(-0.8 * C, 0)], cx, cy, th)[0], _rot([(0.8 * C, 0)], cx, cy, th)[0]], w, th))


def _paint_runway(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        w, th, cx, cy, colour, pts = _strip(cv, "runway", size, (0.3, 0.7))
        d.polygon(pts, fill=cv.jitter(COLOURS[colour], 6.0))
        for t in np.arange(-0.8 * C, 0.8 * C, 0.1 * C):  # centre-line dashes
            d.polygon(_rot([(t + x, y) for x, y in _rect(0.05 * C, max(1.0, w * 0.08))], cx, cy, th), fill=(225, 225, 220))
        off = w * rng.uniform(1.2, 2.0) * _choice(rng, [-1, 1])  # taxiway
        taxi = _rot([(-0.8 * C, off), (0.8 * C, off)], cx, cy, th)
        d.line(taxi, fill=cv.jitter(COLOURS["gray"], 6.0), width=max(1, int(w * 0.35)))
        cv.mark(["paved"], pts=pts)
        cv.mark(["occupied"], pts=_rot(_rect(1.6 * C, w * 1.2), cx, cy, th))
        _add_axis(cv, cx, cy, th, w)
        cv.add("runway", pts, colour, 1.0)


def _paint_railway(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        band, th, cx, cy, colour, pts = _strip(cv, "railway", size, (0.35, 0.65))
        d.polygon(pts, fill=cv.jitter((128, 112, 96) if colour == "brown" else (120, 120, 116), 6.0))
        k = int(rng.integers(3, 8))
        tw = max(1, int(round(0.012 * C)))
        for j in range(k):
            off = -band / 2 + band * (j + 0.5) / k
            d.line(_rot([(-0.8 * C, off), (0.8 * C, off)], cx, cy, th), fill=cv.jitter((50, 46, 44), 5.0), width=tw)
            if j < k - 1 and rng.random() < 0.5:  # platform between tracks
                po = off + band / (2 * k)
                plen = rng.uniform(0.3, 0.6) * C
                pc = rng.uniform(-0.2, 0.2) * C
                d.polygon(_rot([(pc + x, po + y) for x, y in _rect(plen, band / k * 0.4)], cx, cy, th),
                          fill=cv.jitter((196, 196, 190), 6.0))
        cv.mark(["occupied", "paved"], pts=pts)
        cv.add("railway", pts, colour, band / C)
        _add_axis(cv, cx, cy, th, band)


def _paint_viaduct(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        s = rng.uniform(*size) * C
        cx, cy = rng.uniform(0.4, 0.6) * C, rng.uniform(0.4, 0.6) * C
        th = rng.uniform(0, math.pi)
        colour = cv.colour_for("viaduct")
        rgb = cv.jitter(COLOURS[colour], 6.0)
        w = max(2, int(rng.uniform(0.035, 0.055) * C))
        sh = cv.shadow_rgb()
        ox, oy = 0.012 * C * math.cos(cv.sun), 0.012 * C * math.sin(cv.sun)
        pts_all = []
        for a in (th, th + math.pi / 2):
            line = _rot([(-0.8 * C, 0), (0.8 * C, 0)], cx, cy, a)
            d.line([(x + ox, y + oy) for x, y in line], fill=sh, width=w)
            d.line(line, fill=rgb, width=w)
            cv.mark(["paved"], line=line, width=w)
        loops = int(rng.integers(2, 5))
        r = s * 0.22
        for q in rng.permutation(4)[:loops]:
            a = th + math.pi / 4 + q * math.pi / 2
            lx, ly = cx + 1.25 * r * math.cos(a), cy + 1.25 * r * math.sin(a)
            d.ellipse((lx - r + ox, ly - r + oy, lx + r + ox, ly + r + oy), outline=sh, width=w)
            d.ellipse((lx - r, ly - r, lx + r, ly + r), outline=rgb, width=w)
            pts_all += [(lx - r, ly - r), (lx + r, ly + r)]
        pts_all += [(cx - s / 2, cy - s / 2), (cx + s / 2, cy + s / 2)]
        xs, ys = [p[0] for p in pts_all], [p[1] for p in pts_all]
        box = [(min(xs), min(ys)), (max(xs), max(ys))]
        cv.mark(["occupied"], pts=[box[0], (box[1][0], box[0][1]), box[1], (box[0][0], box[1][1])])
        cv.roads.append(([_rot([(-0.8 * C, 0)], cx, cy, th)[0], _rot([(0.8 * C, 0)], cx, cy, th)[0]], w, th))
        cv.add("viaduct", box, colour, s / C)


def _paint_bridge(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    """Bridges across the river (with the road they carry); anywhere on water otherwise."""
    rng, C, d = cv.rng, cv.C, cv.draw
    for i in range(n):
        if not cv.rivers:
            return
        line, rw = cv.rivers[0]
        x, y, a = cv.point_on(line)
        th = a + math.pi / 2 + rng.normal(0.0, 0.12)
        w = rng.uniform(*size) * C
        L = rw * rng.uniform(1.5, 2.0)
        colour = cv.colour_for("bridge")
        if i == 0 or rng.random() < 0.5:  # the road the bridge carries
            _paint_road(cv, 1, (w / C * 0.9, w / C * 0.9), through=(x, y), angle=th)
            # repaint the river over the road, then the bridge over both
            d.line(line, fill=cv.jitter(WATER[cv.objects[[o.category for o in cv.objects].index("river")].colour], 6.0),
                   width=int(rw), joint="curve")
        pts = _rot(_rect(L, w), x, y, th)
        ox, oy = 0.02 * C * math.cos(cv.sun), 0.02 * C * math.sin(cv.sun)
        d.polygon([(px + ox, py + oy) for px, py in pts], fill=cv.shadow_rgb())
        d.polygon(pts, fill=cv.jitter(COLOURS[colour], 6.0))
        cv.mark(["paved", "occupied"], pts=pts)
        cv.add("bridge", pts, colour, L / C)


def _paint_lot(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C = cv.rng, cv.C
    for _ in range(n):
        s = rng.uniform(*size)
        w, h = s * C, s * C * rng.uniform(0.55, 1.0)
        c = cv.place(~cv.mask("water") & ~cv.mask("occupied"), h / 2, tol=0.35)
        if c is None:
            continue
        th = _choice(rng, [0.0, math.pi / 2]) + rng.normal(0.0, 0.25)
        colour = cv.colour_for("parking lot")
        pts = _rot(_rect(w, h), c[0], c[1], th)
        cv.draw.polygon(pts, fill=cv.jitter(COLOURS[colour], 6.0), outline=cv.jitter((200, 200, 195), 5.0))
        cv.mark(["paved", "occupied"], pts=pts)
        cv.lots.append((c[0], c[1], w, h, th))
        cv.add("parking lot", pts, colour, s)


def _paint_dock(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C = cv.rng, cv.C
    if not cv.sea_edge:
        return
    inward = (cv.sea_side or 0) * math.pi / 2 + math.pi / 2  # direction from the shore into the sea
    inner = [p for p in cv.sea_edge if 0.1 * C < p[0] < 0.9 * C and 0.1 * C < p[1] < 0.9 * C]
    if not inner:
        return
    for _ in range(n):
        L = rng.uniform(*size) * C
        w = rng.uniform(0.035, 0.055) * C
        x0, y0 = inner[int(rng.integers(len(inner)))]
        a = inward + rng.normal(0.0, 0.15)
        cx, cy = x0 + (L / 2 - 0.03 * C) * math.cos(a), y0 + (L / 2 - 0.03 * C) * math.sin(a)
        pts = _rot(_rect(L, w), cx, cy, a)
        colour = cv.colour_for("dock")
        cv.draw.polygon(pts, fill=cv.jitter(COLOURS[colour], 6.0))
        cv.mark(["occupied"], pts=pts)
        cv.docks.append((x0, y0, a, L))
        cv.add("dock", pts, colour, L / C)


def _building_like(cv: _Canvas, cat: str, n: int, size: tuple[float, float], aspect: tuple[float, float],
                   height: float, grid: bool = False) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    base_colour = cv.colour_for(cat)
    th0 = rng.uniform(0, math.pi)
    if cv.roads and rng.random() < 0.7:  # align with the first road
        th0 = cv.roads[0][2]
    cells = None
    if grid:
        s_mean = (size[0] + size[1]) / 2 * C
        pitch = s_mean * rng.uniform(1.25, 1.6)
        k = int(1.6 * C / pitch) + 1
        cells = [(i, j) for i in range(-k // 2, k // 2 + 1) for j in range(-k // 2, k // 2 + 1)]
        cells = [cells[i] for i in rng.permutation(len(cells))]
        gx, gy = rng.uniform(0.4, 0.6) * C, rng.uniform(0.4, 0.6) * C
    placed = 0
    for _ in range(n * (6 if grid else 1)):
        if placed >= n:
            break
        L = rng.uniform(*size) * C
        W = L / rng.uniform(*aspect)
        colour = base_colour if rng.random() < 0.75 else cv.colour_for(cat)
        th = th0 + (_choice(rng, [0.0, math.pi / 2]) if not grid else 0.0) + rng.normal(0.0, 0.05)
        allowed = cv.land_free()
        if grid:
            if not cells:
                break
            i, j = cells.pop()
            cx, cy = _rot([(i * pitch + rng.normal(0, 0.05 * pitch), j * pitch + rng.normal(0, 0.05 * pitch))], gx, gy, th0)[0]
            xi, yi = int(cx / cv.ss), int(cy / cv.ss)
            r = max(1, int(L / cv.ss / 2))
            if not (r <= xi < cv.S - r and r <= yi < cv.S - r):
                continue
            win = allowed[yi - r : yi + r + 1, xi - r : xi + r + 1]
            if win.mean() < 0.8:
                continue
            c = (cx, cy)
        else:
            c = cv.place(allowed, L / 2 * 0.8)
            if c is None:
                continue
        if cat == "church":
            arm = W * 0.45
            local = [(-L / 2, -arm / 2), (L * 0.15, -arm / 2), (L * 0.15, -L * 0.3), (L * 0.35, -L * 0.3),
                     (L * 0.35, -arm / 2), (L / 2, -arm / 2), (L / 2, arm / 2), (L * 0.35, arm / 2),
                     (L * 0.35, L * 0.3), (L * 0.15, L * 0.3), (L * 0.15, arm / 2), (-L / 2, arm / 2)]
        else:
            local = _rect(L, W)
        pts = _rot(local, c[0], c[1], th)
        sh = height * L
        ox, oy = sh * math.cos(cv.sun), sh * math.sin(cv.sun)
        d.polygon([(x + ox, y + oy) for x, y in pts], fill=cv.shadow_rgb())
        rgb = cv.jitter(COLOURS[colour], 9.0)
        d.polygon(pts, fill=rgb)
        if cat in ("house", "church"):  # roof ridge
            d.line(_rot([(-L / 2, 0), (L / 2, 0)], c[0], c[1], th), fill=tuple(int(v * 0.7) for v in rgb),
                   width=max(1, int(W * 0.12)))
        elif cat == "building" and L > 0.08 * C:  # roof structure
            d.polygon(_rot(_rect(L * 0.6, W * 0.5), c[0], c[1], th), fill=cv.jitter(rgb, 8.0))
        cv.mark(["occupied"], pts=pts)
        cv.add(cat, pts, colour, L / C, long=(L / W) >= 2.4)
        placed += 1


def _paint_building(cv, n, size):
    _building_like(cv, "building", n, size, (1.0, 3.2), 0.18)


def _paint_house(cv, n, size):
    _building_like(cv, "house", n, size, (1.2, 1.8), 0.12, grid=n >= 12)


def _paint_church(cv, n, size):
    _building_like(cv, "church", n, size, (1.6, 1.8), 0.25)


def _paint_tank(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    colour = cv.colour_for("storage tank")
    s0 = rng.uniform(*size)
    for _ in range(n):
        s = float(np.clip(s0 * rng.uniform(0.8, 1.2), size[0], size[1]))  # tanks of a site look alike
        r = s * C / 2
        c = cv.place(cv.land_free(), r * 1.1, tol=0.1)
        if c is None:
            continue
        x, y = c
        ox, oy = 0.35 * r * math.cos(cv.sun), 0.35 * r * math.sin(cv.sun)
        d.ellipse((x - r + ox, y - r + oy, x + r + ox, y + r + oy), fill=cv.shadow_rgb())
        rgb = cv.jitter(COLOURS[colour], 8.0)
        d.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
        ri = r * 0.7
        d.ellipse((x - ri, y - ri, x + ri, y + ri), outline=tuple(int(v * 0.75) for v in rgb), width=max(1, int(r * 0.1)))
        cv.mark(["occupied"], ellipse=(x - r, y - r, x + r, y + r))
        cv.add("storage tank", [(x - r, y - r), (x + r, y + r)], colour, s)


def _paint_airplane(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    colour = cv.colour_for("airplane")
    row = rng.random() < 0.5 and cv.roads
    th0 = (cv.roads[0][2] + math.pi / 2) if row else None
    for _ in range(n):
        L = rng.uniform(*size) * C
        c = cv.place(~cv.mask("water") & ~cv.mask("occupied"), L / 2 * 0.8, tol=0.1)
        if c is None:
            continue
        th = (th0 + _choice(rng, [0.0, math.pi]) + rng.normal(0.0, 0.08)) if th0 is not None else rng.uniform(0, 2 * math.pi)
        fus = [(-L / 2, -L * 0.06), (L * 0.42, -L * 0.06), (L / 2, 0.0), (L * 0.42, L * 0.06), (-L / 2, L * 0.06)]
        wing = [(L * 0.12, -L * 0.48), (L * 0.02, -L * 0.48), (-L * 0.1, 0.0), (L * 0.02, L * 0.48), (L * 0.12, L * 0.48), (L * 0.2, 0.0)]
        tail = [(-L * 0.36, -L * 0.2), (-L * 0.44, -L * 0.2), (-L * 0.48, 0.0), (-L * 0.44, L * 0.2), (-L * 0.36, L * 0.2), (-L * 0.32, 0.0)]
        rgb = cv.jitter(COLOURS[colour], 7.0)
        ox, oy = 0.05 * L * math.cos(cv.sun), 0.05 * L * math.sin(cv.sun)
        sh = cv.shadow_rgb()
        for part in (fus, wing, tail):
            d.polygon([(x + ox, y + oy) for x, y in _rot(part, c[0], c[1], th)], fill=sh)
        allp = []
        for part in (wing, tail, fus):
            p = _rot(part, c[0], c[1], th)
            d.polygon(p, fill=rgb)
            allp += p
        cv.mark(["occupied"], pts=_rot(_rect(L, L * 0.96), c[0], c[1], th))
        cv.add("airplane", allp, colour, L / C)


def _paint_car(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    slots: list[tuple[float, float, float]] = []
    for lx, ly, w, h, th in cv.lots:  # rows of parking slots
        l = (size[0] + size[1]) / 2 * C
        pitch_x, pitch_y = l * 0.65, l * 1.35
        for yy in np.arange(-h / 2 + l * 0.7, h / 2 - l * 0.5, pitch_y):
            for xx in np.arange(-w / 2 + l * 0.4, w / 2 - l * 0.3, pitch_x):
                x, y = _rot([(xx, yy)], lx, ly, th)[0]
                slots.append((x, y, th + math.pi / 2))
    order = rng.permutation(len(slots)) if slots else []
    si = 0
    free_road = [r for r in cv.roads]
    for _ in range(n):
        L = rng.uniform(*size) * C
        colour = cv.colour_for("car")
        if si < len(slots) and (not free_road or rng.random() < 0.85):
            x, y, th = slots[int(order[si])]
            si += 1
            th += _choice(rng, [0.0, math.pi])
        elif free_road:
            line, w, _ = free_road[int(rng.integers(len(free_road)))]
            x, y, th = cv.point_on(line)
            off = rng.uniform(-0.3, 0.3) * w
            x, y = x - off * math.sin(th), y + off * math.cos(th)
            if not (0 <= x < C and 0 <= y < C):
                continue
        else:
            c = cv.place(~cv.mask("water") & ~cv.mask("occupied"), L / 2)
            if c is None:
                continue
            x, y = c
            th = rng.uniform(0, math.pi)
        pts = _rot(_rect(L, L * 0.5), x, y, th)
        d.polygon(pts, fill=cv.jitter(COLOURS[colour], 8.0))
        cv.add("car", pts, colour, L / C)


def _paint_boat(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    water = cv.mask("water")
    if not water.any():
        return
    for _ in range(n):
        L = rng.uniform(*size) * C
        colour = cv.colour_for("boat")
        if cv.docks and rng.random() < 0.6:  # moored alongside a dock
            x0, y0, a, dl = cv.docks[int(rng.integers(len(cv.docks)))]
            t = rng.uniform(0.3, 0.95) * dl
            side = _choice(rng, [-1.0, 1.0]) * (0.03 * C + L * 0.25)
            x = x0 + t * math.cos(a) - side * math.sin(a)
            y = y0 + t * math.sin(a) + side * math.cos(a)
            th = a + _choice(rng, [0.0, math.pi])
            xi, yi = int(x / cv.ss), int(y / cv.ss)
            if not (0 <= xi < cv.S and 0 <= yi < cv.S) or not water[yi, xi]:
                continue
        else:
            c = cv.place(water & ~cv.mask("occupied"), L / 2, tol=0.05)
            if c is None:
                continue
            x, y = c
            th = rng.uniform(0, 2 * math.pi)
            if cv.rivers:
                th = cv.point_on(cv.rivers[0][0])[2]
        W = L * 0.35
        pts = _rot([(-L / 2, -W / 2), (L * 0.2, -W / 2), (L / 2, 0.0), (L * 0.2, W / 2), (-L / 2, W / 2)], x, y, th)
        d.polygon(pts, fill=cv.jitter(COLOURS[colour], 7.0))
        cv.mark(["occupied"], pts=pts)
        cv.add("boat", pts, colour, L / C)


def _paint_tree(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    allowed = ~cv.mask("water") & ~cv.mask("occupied") & ~cv.mask("paved")
    colour = cv.colour_for("tree")
    clustered = rng.random() < 0.5
    centre = cv.place(allowed, 0.0) if clustered else None
    for _ in range(n):
        r = rng.uniform(*size) * C / 2
        if centre is not None and rng.random() < 0.7:
            x, y = centre[0] + rng.normal(0, 0.15 * C), centre[1] + rng.normal(0, 0.15 * C)
            xi, yi = int(x / cv.ss), int(y / cv.ss)
            if not (0 <= xi < cv.S and 0 <= yi < cv.S) or not allowed[yi, xi]:
                continue
        else:
            c = cv.place(allowed, r * 0.5, tol=0.3)
            if c is None:
                continue
            x, y = c
        base = COLOURS[colour]
        ox, oy = 0.3 * r * math.cos(cv.sun), 0.3 * r * math.sin(cv.sun)
        d.ellipse((x - r + ox, y - r + oy, x + r + ox, y + r + oy), fill=cv.shadow_rgb())
        rgb = cv.jitter(base, 10.0)
        d.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
        hr = r * 0.5
        d.ellipse((x - hr - ox, y - hr - oy, x + hr - ox, y + hr - oy), fill=tuple(min(255, int(v * 1.18)) for v in rgb))
        cv.mark(["veg"], ellipse=(x - r, y - r, x + r, y + r))
        cv.add("tree", [(x - r, y - r), (x + r, y + r)], colour, 2 * r / C)


def _paint_playground(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        s = rng.uniform(*size)
        L = s * C
        W = L * rng.uniform(0.5, 0.6)
        c = cv.place(cv.land_free(), W / 2, tol=0.25)
        if c is None:
            continue
        th = rng.uniform(0, math.pi)

        def track(l, w):
            r = w / 2
            straight = l - w
            pts = []
            for i in range(13):
                a = -math.pi / 2 + math.pi * i / 12
                pts.append((straight / 2 + r * math.cos(a), r * math.sin(a)))
            for i in range(13):
                a = math.pi / 2 + math.pi * i / 12
                pts.append((-straight / 2 + r * math.cos(a), r * math.sin(a)))
            return _rot(pts, c[0], c[1], th)

        colour = cv.colour_for("playground")
        outer = track(L, W)
        d.polygon(outer, fill=cv.jitter((176, 74, 60) if colour == "red" else (150, 100, 70), 8.0))
        d.polygon(track(L * 0.8, W * 0.68), fill=cv.jitter((84, 140, 70), 8.0))
        d.line(_rot([(0, -W * 0.34), (0, W * 0.34)], c[0], c[1], th), fill=(220, 220, 220), width=max(1, cv.ss // 2))
        cv.mark(["occupied"], pts=outer)
        cv.add("playground", outer, colour, s)


def _paint_stadium(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        s = rng.uniform(*size)
        a, b = s * C / 2, s * C / 2 * rng.uniform(0.7, 0.85)
        c = cv.place(cv.land_free(), b, tol=0.3)
        if c is None:
            c = (C / 2, C / 2)
        th = rng.uniform(0, math.pi)

        def ell(sa, sb, k=36):
            return _rot([(sa * math.cos(2 * math.pi * i / k), sb * math.sin(2 * math.pi * i / k)) for i in range(k)], c[0], c[1], th)

        colour = cv.colour_for("stadium")
        outer = ell(a, b)
        sh = cv.shadow_rgb()
        ox, oy = 0.04 * a * math.cos(cv.sun), 0.04 * a * math.sin(cv.sun)
        d.polygon([(x + ox, y + oy) for x, y in outer], fill=sh)
        d.polygon(outer, fill=cv.jitter(COLOURS[colour], 6.0))
        d.polygon(ell(a * 0.8, b * 0.75), fill=cv.jitter((150, 150, 146), 8.0))
        d.polygon(ell(a * 0.62, b * 0.55), fill=cv.jitter((164, 80, 64), 8.0))
        d.polygon(ell(a * 0.5, b * 0.42), fill=cv.jitter((80, 136, 66), 8.0))
        cv.mark(["occupied"], pts=outer)
        cv.add("stadium", outer, colour, s)


def _paint_baseball(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        s = rng.uniform(*size)
        R = s * C
        c = cv.place(cv.land_free(), R * 0.45, tol=0.3)
        if c is None:
            continue
        start = rng.uniform(0, 360)
        a0 = math.radians(start)
        bis = a0 + math.pi / 4
        # move the apex so the quarter-disc's centroid lies on the chosen centre
        x, y = c[0] - 0.42 * R * math.cos(bis), c[1] - 0.42 * R * math.sin(bis)
        d.pieslice((x - R, y - R, x + R, y + R), start, start + 90, fill=cv.jitter((110, 156, 84), 8.0),
                   outline=cv.jitter((170, 130, 90), 8.0), width=max(1, int(R * 0.05)))
        di = R * 0.32
        diamond = _rot([(0, 0), (di, -di * 0.0), (di, di), (0, di)], x, y, bis - math.pi / 4)
        d.polygon(diamond, fill=cv.jitter((176, 134, 96), 8.0))
        arc = [(x + R * math.cos(a0 + math.pi / 2 * i / 8), y + R * math.sin(a0 + math.pi / 2 * i / 8)) for i in range(9)]
        pts = [(x, y)] + arc
        cv.mark(["occupied"], pts=pts)
        cv.add("baseball field", pts, "green", s)


PAINTERS = {
    "farmland": _paint_farmland,
    "meadow": _paint_meadow,
    "river": _paint_river,
    "pond": _paint_pond,
    "road": _paint_road,
    "runway": _paint_runway,
    "railway": _paint_railway,
    "viaduct": _paint_viaduct,
    "bridge": _paint_bridge,
    "parking lot": _paint_lot,
    "dock": _paint_dock,
    "baseball field": _paint_baseball,
    "playground": _paint_playground,
    "stadium": _paint_stadium,
    "church": _paint_church,
    "building": _paint_building,
    "house": _paint_house,
    "storage tank": _paint_tank,
    "airplane": _paint_airplane,
    "car": _paint_car,
    "boat": _paint_boat,
    "tree": _paint_tree,
}


def _plan(objects: Sequence[ObjectSpec], rng: np.random.Generator) -> dict[str, tuple[int, tuple[float, float]]]:
    """Category -> (instances to draw, size range) for the objects whose probability ``p`` comes up."""
    plan: dict[str, tuple[int, tuple[float, float]]] = {}
    for o in objects:
        if rng.random() < o.p:
            plan[o.category] = (int(rng.integers(o.count[0], o.count[1] + 1)), o.size)
    return plan


Plan = dict[str, tuple[int, tuple[float, float]]]


def _stream(key) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(key)))


def _render(spec: SceneSpec, rng: np.random.Generator, size: int, objects: Sequence[ObjectSpec] | None = None,
            extra=None, swap=None) -> tuple[Image.Image, _Canvas]:
    """One image of ``spec``: its background carrying its objects (or ``objects``, one spec per category).

    Two hooks of the generator conditions (:mod:`osdpm_lib.synth.conditions`), neither used by the default
    benchmark (whose draws they leave untouched):

    * ``extra(plan, rng)``: object specs drawn after the scene's objects as *distractors* (flagged on the canvas,
      left out of the captions);
    * ``swap(plan)``: ``{category: painted as}`` for categories of the plan.  The image is then drawn in *twin*
      mode: every category with a random stream of its own (keys drawn once after the plan), the swapped
      categories last, each with its own stream and instance counts and sizes but painted as the category it maps
      to; the finishing noise has a stream of its own too.  Two images drawn from the same ``rng`` with swaps of
      the same keys (``{"car": "car"}`` and ``{"car": "tree"}``) therefore share background, layout and noise
      and differ only in the swapped objects.  ``cv.swapped`` records the swap.
    """
    ss = max(1, min(4, int(round(256 / size))))
    bg = _wchoice(rng, spec.backgrounds)
    cv = _Canvas(rng, size, ss, bg)
    plan = _plan(spec.objects if objects is None else objects, rng)
    swapped = {} if swap is None else dict(swap(plan))
    cv.swapped = swapped
    keys = rng.integers(0, 2**63, size=len(DRAW_ORDER) + 2) if swap is not None else None

    def paint(cat: str, painter: str) -> None:
        n, sz = plan[cat]
        if n <= 0:
            return
        if keys is not None:
            cv.rng = _stream(keys[DRAW_ORDER.index(cat)])
        if painter == "sea":
            _paint_sea(cv, n, sz, beach=plan["beach"][1] if "beach" in plan else None)
        else:
            PAINTERS[painter](cv, n, sz)

    for cat in DRAW_ORDER:
        if cat in plan and cat != "beach" and cat not in swapped:
            paint(cat, cat)
    for cat in DRAW_ORDER:
        if cat in swapped:
            paint(cat, swapped[cat])
    if extra is not None:
        if keys is not None:
            cv.rng = _stream(keys[-2])
        first = len(cv.objects)
        for o in extra(plan, cv.rng):
            PAINTERS[o.category](cv, int(cv.rng.integers(o.count[0], o.count[1] + 1)), o.size)
        for o in cv.objects[first:]:
            o.distractor = True
    if keys is not None:
        cv.rng = _stream(keys[-1])
    return cv.finish(), cv


# --------------------------------------------------------------------------------------------------
# The pretraining corpus's sensor
# --------------------------------------------------------------------------------------------------

# The pretraining corpus is seen through another "camera" than the benchmark, as web photos differ from RSICD's
# aerial tiles: another colour response (a fixed channel mixing that desaturates and shifts hues, jittered per
# image), another tone curve (gamma), another ground sampling distance (a zoomed crop) and softer optics (blur).
# Colour words of the benchmark's captions therefore do not match the pretrained model's colours, and fine-tuning
# has a visual domain gap to close.
SENSOR_MIX = np.array([[0.50, 0.40, 0.10],
                       [0.20, 0.55, 0.25],
                       [0.15, 0.45, 0.40]])
SENSOR_JITTER = 0.06
SENSOR_GAMMA = (0.7, 1.4)
SENSOR_ZOOM = (0.75, 1.0)        # side of the kept crop / image side
SENSOR_BLUR = (0.3, 1.1)         # Gaussian blur radius in pixels at 64 px (scaled with the image size)


@dataclass(frozen=True)
class Sensor:
    """A camera other than the benchmark's: a colour response (the channel mixing ``mix``, rows the output
    channels, each entry jittered per image by ``jitter``), a tone curve (gamma drawn from ``gamma``), a zoomed crop
    (its side a fraction drawn from ``zoom`` of the image's; None: no crop) and a Gaussian blur (radius drawn from
    ``blur`` in pixels at 64 px, scaled with the image size).  Calling it changes an image; deterministic in
    ``rng``."""

    mix: tuple[tuple[float, float, float], ...]
    jitter: float
    gamma: tuple[float, float]
    zoom: tuple[float, float] | None
    blur: tuple[float, float]

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        from PIL import ImageFilter

        size = img.size[0]
        a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        mix = np.asarray(self.mix) + rng.normal(0.0, self.jitter, size=(3, 3))
        a = np.clip(a @ mix.T, 0.0, 1.0) ** rng.uniform(*self.gamma)
        out = Image.fromarray(np.round(a * 255.0).astype(np.uint8))
        if self.zoom is not None:
            side = int(round(size * rng.uniform(*self.zoom)))
            x0, y0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
            out = out.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        return out.filter(ImageFilter.GaussianBlur(rng.uniform(*self.blur) * size / 64.0))


PRETRAIN_SENSOR = Sensor(tuple(map(tuple, SENSOR_MIX.tolist())), SENSOR_JITTER, SENSOR_GAMMA, SENSOR_ZOOM, SENSOR_BLUR)


def sensor_shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``img`` as the pretraining corpus's sensor sees it (:data:`PRETRAIN_SENSOR`); deterministic in ``rng``."""
    return PRETRAIN_SENSOR(img, rng)
