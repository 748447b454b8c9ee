"""Generator conditions: named parameter sets of the embedded benchmark, each one documented change from the default.

The default benchmark mixes the properties the paper gives its modules (small objects, clutter, look-alike scenes,
a sensor unlike the pretraining corpus's) in fixed, uncontrolled amounts.  A condition changes one of them and
keeps the rest: the same scene list, scene balance, splits, file names and sizes (``_assign`` does not see the
condition), the same caption generator.  :data:`CONDITIONS`:

* ``default``: the benchmark as it is (bytes identical to a generation without a condition).
* ``small-objects``: every object's size range times :data:`SMALL_SCALE` (area times its square), so the objects
  the captions name are small (the defining property: their median area share, measured by
  :func:`osdpm_lib.conditions.named_area_share`, below 5%).
* ``ambiguous``: images come in *twin* pairs (consecutive images of the same scene and split): both drawn from the
  first one's random stream in twin mode (:func:`osdpm_lib.synth.render._render`: same background, layout and
  noise); the second has one or two of the first's object categories (alternating) painted as another category
  (:data:`SWAPS`, same counts and sizes), and both captioners put the swapped categories first, so the captions
  name what differs.  Ground truth: ``twin`` (the other image's file name) and ``swapped`` (``{category: painted
  as}``).  An image of a scene that has nothing to swap stays a plain image.
* ``cluttered``: after the scene's objects, :data:`CLUTTER_CATEGORIES` categories of :data:`DISTRACTOR_CATEGORIES`
  absent from the image, :data:`CLUTTER_COUNT` instances each, at the smallest sizes the scene table gives them
  (``distractor: true`` in the ground truth); the captions never see them.
* ``domain-gap``: a sensor further from the default rendering (and from the pretraining corpus's,
  :data:`osdpm_lib.synth.render.PRETRAIN_SENSOR`): a false-colour response (near-infrared-like: vegetation red,
  :data:`GAP_SENSOR`), a coarser ground sampling distance (rendered at :data:`GAP_RENDER_SCALE` of the side and
  resampled up) and more blur.  Captions (their colour words too) are those of the unshifted scene.

``condition(name)`` returns one, with an error that lists the known names.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from .render import Plan, Sensor
from .scenes import DRAW_ORDER, SCENE_SPECS, SPECS_OF, ObjectSpec, SceneSpec

DEFAULT = "default"
SMALL_SCALE = 0.5
# Twin swaps: a category and what it may be painted as instead (the first one the image does not already have).
# Compact objects with painters that place themselves on free land, so a swap keeps the twins' layout.
SWAPS: dict[str, tuple[str, ...]] = {
    "storage tank": ("building", "house"),
    "building": ("storage tank", "house"),
    "house": ("building", "storage tank"),
    "tree": ("house", "building"),
    "car": ("tree", "house"),
    "airplane": ("building", "storage tank"),
}
DISTRACTOR_CATEGORIES = ("car", "tree", "house", "building", "storage tank")   # small objects
CLUTTER_CATEGORIES = (2, 3)   # distractor categories per image (fewer when fewer are absent from it)
CLUTTER_COUNT = (5, 10)       # instances per distractor category (fewer when they do not fit)
# False-colour response (rows: output R, G, B from input R, G, B): red from a near-infrared-like band that is bright
# on vegetation, green from red, blue from green.
GAP_SENSOR = Sensor(mix=((-0.3, 1.3, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), jitter=0.04, gamma=(0.8, 1.25),
                    zoom=None, blur=(0.6, 1.0))
GAP_RENDER_SCALE = 0.75


@dataclasses.dataclass(frozen=True)
class Condition:
    """A parameter set of the generator; the defaults are the default benchmark's."""

    name: str
    change: str                                   # the documented change, one line
    size_scale: float = 1.0                       # every object's size range times this
    clutter_categories: tuple[int, int] = (0, 0)  # distractor categories per image
    clutter_count: tuple[int, int] = (0, 0)       # instances per distractor category
    twin_swaps: int = 0                           # twins differ in 1..twin_swaps categories (0: no twins)
    render_scale: float = 1.0                     # rendered at this fraction of the side, resampled up
    sensor: Sensor | None = None                  # applied to every finished image

    @property
    def is_default(self) -> bool:
        return self == CONDITIONS[DEFAULT]

    @property
    def fingerprint(self) -> str:
        """A short hash of the definition: a generation's parameters record it, so that a changed definition makes
        earlier generations under the same name stale."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:12]

    def scene_spec(self, scene: str) -> SceneSpec:
        """The scene's spec under this condition (the table's own object for the default)."""
        spec = SCENE_SPECS[scene]
        if self.size_scale == 1.0:
            return spec
        f = self.size_scale
        return dataclasses.replace(spec, objects=tuple(
            dataclasses.replace(o, size=(o.size[0] * f, min(1.0, o.size[1] * f))) for o in spec.objects))

    def render_size(self, image_size: int) -> int:
        """The side an image is rendered at before it is resampled to ``image_size``."""
        return image_size if self.render_scale == 1.0 else max(16, int(round(image_size * self.render_scale)))

    def distractors(self, plan: Plan, rng: np.random.Generator) -> tuple[ObjectSpec, ...]:
        """The distractor specs of one image (``_render``'s ``extra``): categories of :data:`DISTRACTOR_CATEGORIES`
        not in its plan, in draw order, each at the smallest size range the scene table gives it."""
        pool = [c for c in DISTRACTOR_CATEGORIES if c not in plan]
        k = min(len(pool), int(rng.integers(self.clutter_categories[0], self.clutter_categories[1] + 1)))
        picked = sorted((pool[i] for i in rng.permutation(len(pool))[:k]), key=DRAW_ORDER.index)
        return tuple(ObjectSpec(c, self.clutter_count, min(SPECS_OF[c], key=lambda o: o.size[1]).size)
                     for c in picked)

    def swap_plan(self, spec: SceneSpec, plan: Plan, k: int) -> dict[str, str]:
        """Up to ``k`` categories of the plan (in the scene's order, the captions' order of preference) and what
        each is painted as in the twin: the first of its :data:`SWAPS` the plan does not hold or use already."""
        out: dict[str, str] = {}
        for o in spec.objects:
            c = o.category
            if len(out) >= k or c not in SWAPS or c not in plan or plan[c][0] <= 0:
                continue
            sub = next((s for s in SWAPS[c] if s not in plan and s not in out.values()), None)
            if sub is not None:
                out[c] = sub
        return out


def twin_pairs(scenes: Sequence[str], splits: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive images of the same scene and split, paired in index order (an odd one out stays alone)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(scenes, splits)):
        groups.setdefault(key, []).append(i)
    pairs = [(g[k], g[k + 1]) for g in groups.values() for k in range(0, len(g) - 1, 2)]
    return sorted(pairs)


def caption_spec(spec: SceneSpec, swapped: dict[str, str]) -> SceneSpec:
    """The spec a twin's captioner sees: the swapped categories first (as what they were painted as), so the
    captions name what differs between the twins; ``spec`` itself without a swap."""
    if not swapped:
        return spec
    first = [dataclasses.replace(o, category=swapped[o.category]) for o in spec.objects if o.category in swapped]
    return dataclasses.replace(spec, objects=tuple(first + [o for o in spec.objects if o.category not in swapped]))


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition(DEFAULT, "the benchmark as it is"),
    Condition("small-objects", f"every object's size range x {SMALL_SCALE} (area x {SMALL_SCALE ** 2:g})",
              size_scale=SMALL_SCALE),
    Condition("ambiguous", "twin images: same background, layout and noise, one or two named categories swapped",
              twin_swaps=2),
    Condition("cluttered", f"{CLUTTER_CATEGORIES[0]}-{CLUTTER_CATEGORIES[1]} absent categories x "
                           f"{CLUTTER_COUNT[0]}-{CLUTTER_COUNT[1]} unnamed distractor objects per image",
              clutter_categories=CLUTTER_CATEGORIES, clutter_count=CLUTTER_COUNT),
    Condition("domain-gap", f"false-colour sensor, rendered at {GAP_RENDER_SCALE} of the side and resampled up, "
                            f"blur {GAP_SENSOR.blur[0]}-{GAP_SENSOR.blur[1]} px at 64 px",
              render_scale=GAP_RENDER_SCALE, sensor=GAP_SENSOR),
)}


def condition(name: str | Condition) -> Condition:
    """The condition called ``name`` (a :class:`Condition` is returned as it is)."""
    if isinstance(name, Condition):
        return name
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown generator condition {name!r}; known: {', '.join(CONDITIONS)}") from None
