"""The embedded benchmark: a synthetic remote-sensing image-caption data set standing in for RSICD.

`generate(out_dir, n_images, seed, image_size)` draws ``n_images`` overhead scenes from about twenty
scene classes modelled on RSICD's thirty (airport, port, storage tanks, residential areas, farmland,
forest, river, bridge, beach, ...).  Every scene is a land-cover background (colour, low-frequency
variation, grain) carrying objects of the categories of :mod:`osdpm_lib.lexicon` at several scales
(cars and boats a few per cent of the image side, tanks and planes about a tenth, stadiums and ponds
up to a half), at random positions, rotations and colours.  Classes share objects (cars in parking
lots, commercial areas and stadiums; water in ports, beaches and rivers; tanks in industrial areas
and tank farms; houses in dense and sparse residential areas; trees almost everywhere), so their
images overlap.

Every image gets five captions in RSICD's style (lower case, " ." at the end, about eleven words,
sentences repeated within an image, vague sentences shared between images) whose object nouns are
drawn from the lexicon terms with synonyms and plurals, and whose counts, colours, sizes and spatial
relations are read from what was drawn.  Generation is deterministic: the same seed and parameters
give the same bytes (json and JPEG); everything is drawn from ``numpy.random.Generator(PCG64)``
streams derived from the seed.

Files written (see docs/DESIGN.md): ``dataset_embedded.json`` (Karpathy schema), ``images/*.jpg``
and ``ground_truth.json`` (scene and pixel boxes per image, x1/y1 exclusive, plus the parameters, so
that a second call with the same parameters returns at once).  The val and test splits hold a tenth
of each scene's images, or exactly ``n_val`` and ``n_test`` images (stratified by scene) when given.

`generate_pretrain(out_dir, n_images, seed, image_size, n_val, n_test)` writes a pretraining corpus
that differs from the benchmark the way web alt-text data differs from RSICD: its own seed streams,
perturbed scene specs with 30% two-scene mixtures and some out-of-context objects, and one to three
short noisy alt-texts per image ("aerial photo of cars, trees and a road", "tanks factory
warehouse") with the benchmark's object nouns but none of its sentences: ``dataset_pretrain.json``,
``images/pre_*.jpg`` and ``pretrain_params.json``.

Command line::

    python -m osdpm_lib.synth OUT_DIR [--n-images N] [--seed S] [--image-size P] [--n-val V] [--n-test T]
    python -m osdpm_lib.synth --pretrain OUT [--n-images N] [--seed S] [--image-size P] [--n-val V] [--n-test T]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from osdpm_lib.lexicon import CATEGORIES, CATEGORY_NAMES

__all__ = [
    "GENERATOR_VERSION",
    "DEFAULT_N_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "JPEG_QUALITY",
    "JSON_NAME",
    "GT_NAME",
    "IMAGES_DIR",
    "ObjectSpec",
    "SceneSpec",
    "SCENE_SPECS",
    "SCENES",
    "CAPTION_TERMS",
    "PRETRAIN_JSON",
    "PRETRAIN_PARAMS_NAME",
    "generate",
    "is_current",
    "generate_pretrain",
    "is_current_pretrain",
    "caption_stats",
    "object_sizes",
    "tokenize",
    "main",
]

GENERATOR_VERSION = 1
DEFAULT_N_IMAGES = 2000
DEFAULT_IMAGE_SIZE = 64
JPEG_QUALITY = 90
JSON_NAME = "dataset_embedded.json"
GT_NAME = "ground_truth.json"
IMAGES_DIR = "images"
NUMERIC_NAME_FRACTION = 0.1
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}  # the rest is train
CAPTIONS_PER_IMAGE = 5
# The pretraining corpus (generate_pretrain).  Its seed sequences are [seed, PRETRAIN_STREAM, ...]; the
# benchmark's are [seed, 1, i] and [seed, 0x5EED(, 1)], so no two streams coincide for any two seeds.
PRETRAIN_JSON = "dataset_pretrain.json"
PRETRAIN_PARAMS_NAME = "pretrain_params.json"
PRETRAIN_VERSION = 1
PRETRAIN_STREAM = 0x9E7
PRETRAIN_MIX_FRACTION = 0.3  # images whose objects mix two scenes
PRETRAIN_EXTRA_FRACTION = 0.15  # images with an object category foreign to their scene(s)
ALT_NOISE = 0.1  # alt-texts naming a wrong object or leaving the main one out
# Finite verbs: every benchmark sentence has one (its templates "is"/"are", vague sentences checked by
# _check_tables), no alt-text of the pretraining corpus has any.
BENCHMARK_VERBS = frozenset({"is", "are", "goes", "passes", "cross"})


# --------------------------------------------------------------------------------------------------
# Scene specifications
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """Objects of one lexicon category in a scene.

    ``count`` is the inclusive range of instances to draw (fewer may fit); ``size`` the range of the
    object's longest dimension as a fraction of the image side (for roads, rivers, runways and
    railways: their width; for sea and beach: the fraction of the image they cover); ``p`` the
    probability that the category appears at all.
    """

    category: str
    count: tuple[int, int]
    size: tuple[float, float]
    p: float = 1.0


@dataclass(frozen=True)
class SceneSpec:
    name: str
    backgrounds: tuple[tuple[str, float], ...]
    objects: tuple[ObjectSpec, ...]
    nps: tuple[str, ...]  # noun phrases naming the scene ("an airport")
    locs: tuple[str, ...]  # locatives ("in an airport")
    vague: tuple[str, ...] = ()  # generic sentences, true of every image of the scene
    terms: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # term overrides


def _o(cat: str, count: tuple[int, int], size: tuple[float, float], p: float = 1.0) -> ObjectSpec:
    return ObjectSpec(cat, count, size, p)


CAR = (0.03, 0.045)
BOAT = (0.035, 0.065)
HOUSE = (0.05, 0.085)
TREE = (0.04, 0.08)
ROAD = (0.03, 0.055)
_INDUSTRIAL_TERMS = {"building": (("building", 5.0), ("factory", 2.0), ("warehouse", 1.5), ("workshop", 0.5))}

SCENE_SPECS: dict[str, SceneSpec] = {  # checked against the lexicon by _check_tables below
    s.name: s
    for s in (
        SceneSpec(
            "airport",
            (("concrete", 0.6), ("grass", 0.25), ("soil", 0.15)),
            (
                _o("airplane", (2, 7), (0.09, 0.15)),
                _o("runway", (1, 1), (0.06, 0.1)),
                _o("building", (0, 2), (0.15, 0.3), 0.7),
                _o("car", (1, 5), CAR, 0.4),
                _o("road", (1, 1), ROAD, 0.4),
            ),
            ("an airport", "an airport"),
            ("in an airport", "in the airport", "at the airport"),
            (
                "it is an airport with some planes and a runway .",
                "some planes are parked in the airport near the runway .",
                "there are some planes next to a runway in an airport .",
                "several airplanes are parked beside the runway at the airport .",
                "this is an airport with a long runway and some planes .",
            ),
        ),
        SceneSpec(
            "port",
            (("urban", 0.5), ("concrete", 0.5)),
            (
                _o("boat", (3, 12), BOAT),
                _o("sea", (1, 1), (0.35, 0.6)),
                _o("dock", (1, 3), (0.2, 0.35)),
                _o("building", (1, 3), (0.08, 0.16), 0.6),
                _o("storage tank", (1, 3), (0.06, 0.09), 0.25),
                _o("car", (1, 4), CAR, 0.4),
            ),
            ("a port", "a harbor", "a port"),
            ("in the port", "in a port", "in the harbor"),
            (
                "many boats are docked in the port near the piers .",
                "some boats are in a port beside the sea .",
                "this is a harbor with some ships and docks .",
                "some ships are docked in the harbor .",
                "it is a port with some boats docked beside the piers .",
            ),
        ),
        SceneSpec(
            "storagetanks",
            (("soil", 0.5), ("concrete", 0.35), ("grass", 0.15)),
            (
                _o("storage tank", (4, 12), (0.07, 0.14)),
                _o("building", (1, 2), (0.08, 0.15), 0.6),
                _o("road", (1, 1), ROAD, 0.5),
                _o("car", (1, 3), CAR, 0.3),
            ),
            ("an industrial area", "a storage area", "a tank farm"),
            ("in an industrial area", "in a storage area", "in the factory area"),
            (
                "many storage tanks are located in a factory area .",
                "there are some storage tanks in this area .",
                "several oil tanks are in an industrial area .",
                "some round storage tanks are arranged closely in this area .",
            ),
            _INDUSTRIAL_TERMS,
        ),
        SceneSpec(
            "industrial",
            (("concrete", 0.6), ("urban", 0.25), ("soil", 0.15)),
            (
                _o("building", (3, 7), (0.1, 0.25)),
                _o("storage tank", (1, 3), (0.06, 0.1), 0.5),
                _o("road", (1, 2), ROAD),
                _o("car", (1, 6), CAR, 0.6),
                _o("tree", (1, 4), TREE, 0.3),
            ),
            ("an industrial area", "a factory area"),
            ("in an industrial area", "in the industrial area", "in the factory area"),
            (
                "many buildings are in an industrial area .",
                "some large factories are located in an industrial area .",
                "many buildings and some roads are in the factory area .",
                "it is an industrial area with many buildings .",
            ),
            _INDUSTRIAL_TERMS,
        ),
        SceneSpec(
            "commercial",
            (("urban", 0.7), ("concrete", 0.3)),
            (
                _o("building", (4, 9), (0.08, 0.18)),
                _o("car", (3, 12), CAR),
                _o("road", (1, 2), ROAD),
                _o("tree", (1, 4), TREE, 0.5),
                _o("parking lot", (1, 1), (0.2, 0.3), 0.3),
            ),
            ("a commercial area", "a business district"),
            ("in a commercial area", "in the commercial area", "in a business district"),
            (
                "many buildings are in a commercial area .",
                "many buildings and some roads are in a commercial area .",
                "some cars are parked beside the buildings in a business district .",
                "it is a commercial area with many buildings .",
            ),
        ),
        SceneSpec(
            "parking",
            (("concrete", 0.65), ("urban", 0.25), ("grass", 0.1)),
            (
                _o("car", (10, 40), CAR),
                _o("parking lot", (1, 2), (0.35, 0.6)),
                _o("tree", (1, 4), TREE, 0.4),
                _o("building", (1, 1), (0.1, 0.2), 0.4),
                _o("road", (1, 1), ROAD, 0.5),
            ),
            ("a parking lot", "a car park"),
            ("in a parking lot", "in the parking lot", "in the car park"),
            (
                "many cars are parked in a parking lot .",
                "lots of cars are parked neatly in the parking lot .",
                "many cars of different colors are in the parking lot .",
                "it is a parking lot with many cars .",
            ),
        ),
        SceneSpec(
            "denseresidential",
            (("urban", 0.65), ("grass", 0.2), ("concrete", 0.15)),
            (
                _o("house", (20, 40), HOUSE),
                _o("road", (1, 2), ROAD),
                _o("tree", (1, 8), TREE, 0.6),
                _o("car", (1, 6), CAR, 0.5),
            ),
            ("a dense residential area", "a residential area"),
            ("in a dense residential area", "in a residential area", "in a dense area"),
            (
                "many buildings are in a dense area .",
                "many houses are densely arranged in a dense residential area .",
                "lots of houses are arranged neatly beside the roads .",
                "it is a dense residential area with many houses and roads .",
            ),
        ),
        SceneSpec(
            "sparseresidential",
            (("grass", 0.7), ("soil", 0.3)),
            (
                _o("house", (3, 8), (0.05, 0.09)),
                _o("tree", (4, 14), TREE),
                _o("road", (1, 1), ROAD, 0.7),
                _o("car", (1, 3), CAR, 0.3),
            ),
            ("a sparse residential area", "a residential area"),
            ("in a sparse residential area", "in a residential area", "in the residential area"),
            (
                "some houses and trees are in a sparse residential area .",
                "several houses are surrounded by many green trees .",
                "a few houses are scattered in a residential area .",
                "it is a sparse residential area with some trees .",
            ),
            {"house": (("house", 5.0), ("villa", 1.0), ("residence", 1.0), ("home", 0.5))},
        ),
        SceneSpec(
            "farmland",
            (("grass", 0.4), ("soil", 0.6)),
            (
                _o("farmland", (1, 1), (0.7, 1.0)),
                _o("road", (1, 1), ROAD, 0.5),
                _o("tree", (1, 4), TREE, 0.4),
                _o("house", (1, 2), HOUSE, 0.3),
            ),
            ("a farmland", "a piece of farmland"),
            ("in the farmland", "on the farmland", "in the fields"),
            (
                "it is a large piece of farmland divided into fields .",
                "many pieces of farmland are arranged neatly here .",
                "the farmland is divided into many pieces of different colors .",
                "there are many fields of different colors .",
            ),
        ),
        SceneSpec(
            "forest",
            (("dark vegetation", 0.6), ("grass", 0.4)),
            (
                _o("tree", (25, 55), (0.05, 0.1)),
                _o("road", (1, 1), (0.02, 0.04), 0.3),
            ),
            ("a forest", "a dense forest"),
            ("in the forest", "in a forest", "in the woods"),
            (
                "it is a dense forest with many trees of different sizes .",
                "many green trees are growing densely in a forest .",
                "the forest is dense and green with many trees .",
                "lots of trees are growing in the woods .",
            ),
        ),
        SceneSpec(
            "meadow",
            (("grass", 0.6), ("dry grass", 0.4)),
            (
                _o("meadow", (1, 1), (0.6, 1.0)),
                _o("tree", (1, 4), TREE, 0.5),
                _o("road", (1, 1), (0.02, 0.04), 0.3),
            ),
            ("a meadow", "a piece of meadow", "a grassland"),
            ("on the meadow", "in the meadow", "on the grassland"),
            (
                "it is a piece of green meadow with nothing on it .",
                "it is a large piece of green grassland .",
                "a large piece of green meadow is here .",
                "the meadow is green and there are few objects .",
            ),
        ),
        SceneSpec(
            "park",
            (("grass", 0.8), ("dark vegetation", 0.2)),
            (
                _o("tree", (6, 16), TREE),
                _o("pond", (1, 1), (0.12, 0.22), 0.6),
                _o("road", (1, 2), (0.02, 0.035), 0.8),
                _o("meadow", (1, 1), (0.3, 0.5), 0.3),
                _o("building", (1, 1), (0.08, 0.14), 0.3),
            ),
            ("a park", "a green park"),
            ("in a park", "in the park"),
            (
                "it is a park with many green trees .",
                "many green trees are planted in a park .",
                "some trees are planted on the lawn in the park .",
                "this is a beautiful park with many trees .",
            ),
        ),
        SceneSpec(
            "river",
            (("grass", 0.5), ("soil", 0.3), ("dark vegetation", 0.2)),
            (
                _o("river", (1, 1), (0.1, 0.22)),
                _o("tree", (3, 15), TREE),
                _o("farmland", (1, 1), (0.35, 0.6), 0.3),
                _o("road", (1, 1), ROAD, 0.3),
                _o("house", (1, 3), HOUSE, 0.3),
            ),
            ("a river", "a winding river"),
            ("beside the river", "near a river", "along the river"),
            (
                "a river goes through this area with some trees .",
                "there is a river with some green trees beside it .",
                "a curved river is here with many trees .",
                "a river passes through the land from one side to the other .",
            ),
        ),
        SceneSpec(
            "bridge",
            (("grass", 0.55), ("urban", 0.3), ("soil", 0.15)),
            (
                _o("bridge", (1, 2), (0.06, 0.1)),
                _o("river", (1, 1), (0.12, 0.25)),
                _o("car", (1, 6), CAR, 0.5),
                _o("tree", (1, 6), TREE, 0.5),
                _o("boat", (1, 2), BOAT, 0.3),
            ),
            ("a bridge", "a bridge over a river"),
            ("over the river", "on the river", "across the river"),
            (
                "a bridge is built over the river .",
                "there is a bridge over a river .",
                "a bridge goes across the river with a road on it .",
                "it is a bridge over a river .",
            ),
        ),
        SceneSpec(
            "beach",
            (("sand", 0.3), ("grass", 0.4), ("urban", 0.3)),
            (
                _o("beach", (1, 1), (0.12, 0.25)),
                _o("sea", (1, 1), (0.3, 0.55)),
                _o("tree", (1, 5), TREE, 0.5),
                _o("house", (1, 4), HOUSE, 0.4),
                _o("boat", (1, 2), BOAT, 0.3),
            ),
            ("a beach", "a beach near the sea"),
            ("on the beach", "near the beach", "beside the sea"),
            (
                "it is a beach beside the sea .",
                "some white waves are on the beach near the sea .",
                "the sea is near a long beach .",
                "a beach is between the sea and the land .",
            ),
        ),
        SceneSpec(
            "pond",
            (("grass", 0.6), ("soil", 0.4)),
            (
                _o("pond", (1, 1), (0.3, 0.5)),
                _o("tree", (2, 12), TREE),
                _o("house", (1, 2), HOUSE, 0.3),
                _o("road", (1, 1), ROAD, 0.3),
            ),
            ("a pond", "a lake"),
            ("near the pond", "beside a pond", "around the pond"),
            (
                "a pond is surrounded by some green trees .",
                "there is a pond with some trees around it .",
                "it is a pond with water in the middle of the image .",
                "a lake is here with some green trees beside it .",
            ),
        ),
        SceneSpec(
            "playground",
            (("grass", 0.55), ("urban", 0.3), ("concrete", 0.15)),
            (
                _o("playground", (1, 1), (0.3, 0.45)),
                _o("building", (1, 3), (0.08, 0.16), 0.6),
                _o("tree", (1, 6), TREE, 0.6),
                _o("car", (1, 4), CAR, 0.4),
                _o("road", (1, 1), ROAD, 0.5),
            ),
            ("a playground", "a school playground"),
            ("in the playground", "near the playground", "in a school"),
            (
                "a playground is surrounded by some buildings and trees .",
                "it is a playground with a running track around a football field .",
                "there is a playground with a red running track .",
                "a football field is in the middle of the playground .",
            ),
        ),
        SceneSpec(
            "stadium",
            (("urban", 0.65), ("concrete", 0.25), ("grass", 0.1)),
            (
                _o("stadium", (1, 1), (0.35, 0.5)),
                _o("car", (1, 15), CAR, 0.6),
                _o("road", (1, 2), ROAD, 0.7),
                _o("building", (1, 3), (0.08, 0.15), 0.5),
                _o("parking lot", (1, 1), (0.2, 0.3), 0.3),
            ),
            ("a stadium", "a large stadium"),
            ("near the stadium", "around the stadium", "beside a stadium"),
            (
                "it is a stadium with many seats around a green field .",
                "a large stadium is here with a green field in it .",
                "a stadium is surrounded by some buildings and roads .",
                "there is a big stadium with a green football field .",
            ),
        ),
        SceneSpec(
            "church",
            (("urban", 0.7), ("concrete", 0.3)),
            (
                _o("church", (1, 1), (0.22, 0.34)),
                _o("building", (1, 4), (0.08, 0.15)),
                _o("house", (1, 6), HOUSE, 0.5),
                _o("road", (1, 2), ROAD),
                _o("car", (1, 5), CAR, 0.5),
                _o("tree", (1, 4), TREE, 0.5),
            ),
            ("a church", "an old church"),
            ("near the church", "around a church", "beside the church"),
            (
                "it is a church with a cross shape in the city .",
                "a church is surrounded by some buildings and roads .",
                "there is a church with some buildings around it .",
                "a church is in a dense area with some buildings .",
            ),
        ),
        SceneSpec(
            "railwaystation",
            (("urban", 0.6), ("concrete", 0.25), ("soil", 0.15)),
            (
                _o("railway", (1, 1), (0.2, 0.35)),
                _o("building", (1, 3), (0.15, 0.35)),
                _o("car", (1, 5), CAR, 0.5),
                _o("road", (1, 1), ROAD, 0.5),
            ),
            ("a railway station", "a train station"),
            ("in the railway station", "in a train station", "near the railway station"),
            (
                "it is a railway station with many parallel railways .",
                "many railways are in a railway station near some buildings .",
                "some long buildings are beside the railways in a train station .",
                "a railway station is here with some tracks .",
            ),
        ),
        SceneSpec(
            "viaduct",
            (("grass", 0.6), ("soil", 0.3), ("urban", 0.1)),
            (
                _o("viaduct", (1, 1), (0.5, 0.8)),
                _o("road", (1, 2), ROAD),
                _o("car", (1, 8), CAR, 0.6),
                _o("tree", (1, 5), TREE, 0.5),
            ),
            ("a viaduct", "an overpass", "an interchange"),
            ("near the viaduct", "on the viaduct", "around the overpass"),
            (
                "it is a viaduct with some curved roads crossing each other .",
                "a viaduct is crossed by some roads .",
                "there is an interchange with some roads on the land .",
                "some roads cross each other on the overpass .",
            ),
        ),
        SceneSpec(
            "baseballfield",
            (("grass", 0.75), ("urban", 0.25)),
            (
                _o("baseball field", (1, 2), (0.25, 0.4)),
                _o("tree", (1, 8), TREE, 0.6),
                _o("road", (1, 1), ROAD, 0.5),
                _o("car", (1, 5), CAR, 0.4),
                _o("building", (1, 2), (0.08, 0.14), 0.3),
            ),
            ("a baseball field", "a baseball field"),
            ("near the baseball field", "beside a baseball field", "around the baseball field"),
            (
                "it is a baseball field with a fan shape on the green lawn .",
                "there is a baseball field with some green grass .",
                "a baseball field is surrounded by some trees and roads .",
                "a baseball field is here with some green grass in it .",
            ),
        ),
    )
}
SCENES: tuple[str, ...] = tuple(SCENE_SPECS)


# --------------------------------------------------------------------------------------------------
# Colours, land cover, caption vocabulary
# --------------------------------------------------------------------------------------------------

LANDCOVER: dict[str, tuple[tuple[int, int, int], float, float]] = {
    # name: (rgb, low-frequency amplitude, grain amplitude)
    "grass": ((98, 124, 74), 16.0, 9.0),
    "dry grass": ((138, 136, 92), 16.0, 9.0),
    "soil": ((146, 126, 98), 14.0, 8.0),
    "concrete": ((160, 158, 150), 10.0, 6.0),
    "urban": ((124, 118, 110), 12.0, 12.0),
    "sand": ((204, 188, 146), 10.0, 6.0),
    "dark vegetation": ((58, 84, 50), 14.0, 12.0),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (232, 232, 226),
    "gray": (156, 156, 152),
    "dark gray": (92, 92, 94),
    "black": (42, 42, 46),
    "red": (172, 62, 52),
    "blue": (64, 96, 168),
    "brown": (132, 94, 62),
    "green": (70, 122, 62),
    "dark green": (38, 72, 40),
    "yellow": (206, 186, 104),
}
WATER: dict[str, tuple[int, int, int]] = {
    "blue": (52, 86, 128),
    "dark blue": (32, 52, 86),
    "green": (62, 98, 86),
}

# Colour names each category may take, with weights.
CATEGORY_COLOURS: dict[str, tuple[tuple[str, float], ...]] = {
    "airplane": (("white", 0.75), ("gray", 0.25)),
    "boat": (("white", 0.8), ("gray", 0.2)),
    "car": (("white", 0.35), ("gray", 0.2), ("black", 0.15), ("red", 0.15), ("blue", 0.15)),
    "storage tank": (("white", 0.7), ("gray", 0.3)),
    "building": (("gray", 0.4), ("white", 0.3), ("blue", 0.15), ("dark gray", 0.15)),
    "house": (("red", 0.35), ("brown", 0.25), ("gray", 0.25), ("white", 0.15)),
    "tree": (("green", 0.5), ("dark green", 0.5)),
    "church": (("gray", 0.5), ("brown", 0.3), ("red", 0.2)),
    "road": (("gray", 0.5), ("dark gray", 0.5)),
    "runway": (("dark gray", 0.6), ("gray", 0.4)),
    "parking lot": (("gray", 0.5), ("dark gray", 0.5)),
    "dock": (("gray", 0.6), ("white", 0.4)),
    "bridge": (("gray", 0.5), ("white", 0.5)),
    "viaduct": (("gray", 0.5), ("white", 0.5)),
    "sea": (("blue", 0.5), ("dark blue", 0.3), ("green", 0.2)),
    "river": (("blue", 0.4), ("dark blue", 0.3), ("green", 0.3)),
    "pond": (("blue", 0.4), ("dark blue", 0.3), ("green", 0.3)),
    "beach": (("yellow", 0.7), ("white", 0.3)),
    "playground": (("red", 0.8), ("brown", 0.2)),
    "stadium": (("white", 0.5), ("gray", 0.5)),
    "baseball field": (("green", 1.0),),
    "farmland": (("green", 0.5), ("yellow", 0.25), ("brown", 0.25)),
    "meadow": (("green", 1.0),),
    "railway": (("brown", 0.5), ("gray", 0.5)),
}

# Caption nouns per category: (lexicon term, weight).  Defaults favour the first lexicon term.
CAPTION_TERMS: dict[str, tuple[tuple[str, float], ...]] = {
    "airplane": (("plane", 4.0), ("airplane", 3.0), ("aircraft", 2.0), ("aeroplane", 0.6), ("jet", 0.6)),
    "runway": (("runway", 5.0), ("airstrip", 1.0)),
    "boat": (("boat", 5.0), ("ship", 3.0), ("vessel", 1.0), ("yacht", 0.5)),
    "car": (("car", 6.0), ("vehicle", 2.0), ("automobile", 0.3)),
    "storage tank": (("storage tank", 5.0), ("tank", 3.0), ("oil tank", 1.5), ("container tank", 0.3)),
    "building": (("building", 1.0),),
    "house": (("house", 6.0), ("residence", 1.0), ("home", 0.5)),
    "tree": (("tree", 1.0),),
    "road": (("road", 5.0), ("street", 2.0), ("highway", 0.7), ("avenue", 0.3)),
    "bridge": (("bridge", 1.0),),
    "viaduct": (("viaduct", 4.0), ("overpass", 2.0), ("interchange", 1.0)),
    "river": (("river", 5.0), ("stream", 1.0)),
    "pond": (("pond", 4.0), ("lake", 2.0), ("pool", 0.5)),
    "sea": (("sea", 4.0), ("ocean", 2.0), ("water", 2.0)),
    "beach": (("beach", 4.0), ("sand", 2.0), ("shore", 1.0), ("coast", 1.0)),
    "baseball field": (("baseball field", 5.0), ("baseball diamond", 1.5), ("diamond", 0.3)),
    "playground": (("playground", 5.0), ("running track", 1.5), ("track", 1.0), ("football field", 1.5)),
    "stadium": (("stadium", 4.0), ("arena", 1.0)),
    "church": (("church", 5.0), ("cathedral", 1.0)),
    "railway": (("railway", 3.0), ("railroad", 1.0), ("rail", 1.0)),
    "parking lot": (("parking lot", 5.0), ("car park", 1.0)),
    "farmland": (("farmland", 3.0), ("field", 3.0), ("farm", 1.0), ("crop", 0.5), ("cropland", 0.5)),
    "meadow": (("meadow", 3.0), ("grass", 3.0), ("grassland", 1.0), ("lawn", 1.0)),
    "dock": (("dock", 3.0), ("pier", 2.0), ("wharf", 1.0)),
}
MASS_TERMS = frozenset({"sea", "ocean", "water", "sand", "grass", "grassland", "farmland", "cropland"})
NO_PLURAL = frozenset({"aircraft"})
# Terms that only ever appear in the plural with a vague quantifier ("some fields", "many crops").
VAGUE_PLURAL_TERMS = frozenset({"field", "farm", "crop"})
LINEAR = frozenset({"road", "river", "runway", "railway", "sea", "beach", "farmland", "meadow", "viaduct"})
VERBS: dict[str, tuple[str, ...]] = {
    "airplane": ("parked", "parked", "stopped", ""),
    "car": ("parked", "parked", ""),
    "boat": ("docked", "moored", "parked", ""),
    "storage tank": ("located", "", "standing"),
    "house": ("located", "built", "", "arranged"),
    "building": ("located", "built", ""),
    "tree": ("planted", "growing", ""),
}
SIZE_ADJ: dict[str, tuple[float, float]] = {  # (small below, large above), relative longest side
    "storage tank": (0.08, 0.115),
    "airplane": (0.1, 0.135),
    "building": (0.1, 0.2),
    "pond": (0.2, 0.4),
    "stadium": (0.38, 0.46),
    "playground": (0.33, 0.42),
    "church": (0.2, 0.27),
    "baseball field": (0.28, 0.36),
    "house": (0.055, 0.08),
}
# Categories that name the scene itself: no "in the parking lot" after "a parking lot".
SELF_CATS: dict[str, tuple[str, ...]] = {
    "parking": ("parking lot",), "farmland": ("farmland",), "meadow": ("meadow",), "river": ("river",),
    "bridge": ("bridge", "river"), "beach": ("beach", "sea"), "pond": ("pond",), "playground": ("playground",),
    "stadium": ("stadium",), "church": ("church",), "railwaystation": ("railway",), "viaduct": ("viaduct",),
    "baseballfield": ("baseball field",), "port": ("sea", "dock"), "forest": ("tree",),
}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _lexicon_terms(cat: str, pairs: Sequence[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """Keep the caption terms the lexicon (still) lists for ``cat``; fall back to its first term."""
    kept = tuple((t, w) for t, w in pairs if t in CATEGORIES[cat])
    return kept or ((CATEGORIES[cat][0], 1.0),)


def _check_tables() -> None:
    for spec in SCENE_SPECS.values():
        for o in spec.objects:
            if o.category not in CATEGORIES:
                raise ValueError(f"scene {spec.name}: unknown category {o.category!r}")
        for cat in list(spec.terms):
            spec.terms[cat] = _lexicon_terms(cat, spec.terms[cat])
        for v in spec.vague:  # what keeps alt-texts (generate_pretrain) apart from benchmark sentences
            if not BENCHMARK_VERBS & set(tokenize(v)):
                raise ValueError(f"scene {spec.name}: vague sentence without a verb of BENCHMARK_VERBS: {v!r}")
    missing = set(CATEGORY_NAMES) - set(DRAW_ORDER)
    if missing or set(DRAW_ORDER) - set(CATEGORY_NAMES):
        raise ValueError(f"DRAW_ORDER and lexicon categories differ: {sorted(missing)}")
    for cat in CATEGORY_NAMES:
        CAPTION_TERMS[cat] = _lexicon_terms(cat, CAPTION_TERMS.get(cat, ()))



def tokenize(raw: str) -> list[str]:
    """Karpathy tokens: lower-cased words without punctuation."""
    return re.findall(r"[a-z0-9]+", raw.lower())


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


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

    def boxes(self) -> list[dict]:
        out = []
        S, ss = self.S, self.ss
        for o in self.objects:
            xs = [p[0] for p in o.pts]
            ys = [p[1] for p in o.pts]
            x0 = max(0, min(S - 1, int(math.floor(min(xs) / ss))))
            y0 = max(0, min(S - 1, int(math.floor(min(ys) / ss))))
            x1 = max(x0 + 1, min(S, int(math.ceil(max(xs) / ss))))
            y1 = max(y0 + 1, min(S, int(math.ceil(max(ys) / ss))))
            out.append({"category": o.category, "box": [x0, y0, x1, y1], "color": o.colour})
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


def _paint_runway(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        w = rng.uniform(*size) * C
        th = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0.3, 0.7) * C, rng.uniform(0.3, 0.7) * C
        colour = cv.colour_for("runway")
        pts = _rot(_rect(1.6 * C, w), cx, cy, th)
        d.polygon(pts, fill=cv.jitter(COLOURS[colour], 6.0))
        for t in np.arange(-0.8 * C, 0.8 * C, 0.1 * C):  # centre-line dashes
            d.polygon(_rot([(t + x, y) for x, y in _rect(0.05 * C, max(1.0, w * 0.08))], cx, cy, th), fill=(225, 225, 220))
        off = w * rng.uniform(1.2, 2.0) * _choice(rng, [-1, 1])  # taxiway
        taxi = _rot([(-0.8 * C, off), (0.8 * C, off)], cx, cy, th)
        d.line(taxi, fill=cv.jitter(COLOURS["gray"], 6.0), width=max(1, int(w * 0.35)))
        cv.mark(["paved"], pts=pts)
        cv.mark(["occupied"], pts=_rot(_rect(1.6 * C, w * 1.2), cx, cy, th))
        cv.roads.append(([_rot([(-0.8 * C, 0)], cx, cy, th)[0], _rot([(0.8 * C, 0)], cx, cy, th)[0]], w, th))
        cv.add("runway", pts, colour, 1.0)


def _paint_railway(cv: _Canvas, n: int, size: tuple[float, float]) -> None:
    rng, C, d = cv.rng, cv.C, cv.draw
    for _ in range(n):
        band = rng.uniform(*size) * C
        th = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0.35, 0.65) * C, rng.uniform(0.35, 0.65) * C
        colour = cv.colour_for("railway")
        pts = _rot(_rect(1.6 * C, band), cx, cy, th)
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
        cv.roads.append(([_rot([(-0.8 * C, 0)], cx, cy, th)[0], _rot([(0.8 * C, 0)], cx, cy, th)[0]], band, th))


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
# Draw order: ground cover, water, linear features, large structures, buildings, small objects.
DRAW_ORDER = (
    "farmland", "meadow", "sea", "beach", "river", "runway", "railway", "viaduct", "road", "bridge",
    "parking lot", "dock", "pond", "baseball field", "playground", "stadium", "church", "building",
    "house", "storage tank", "airplane", "tree", "car", "boat",
)
_check_tables()


def _plan(objects: Sequence[ObjectSpec], rng: np.random.Generator) -> dict[str, tuple[int, tuple[float, float]]]:
    """Category -> (instances to draw, size range) for the objects whose probability ``p`` comes up."""
    plan: dict[str, tuple[int, tuple[float, float]]] = {}
    for o in objects:
        if rng.random() < o.p:
            plan[o.category] = (int(rng.integers(o.count[0], o.count[1] + 1)), o.size)
    return plan


def _render(spec: SceneSpec, rng: np.random.Generator, size: int,
            objects: Sequence[ObjectSpec] | None = None) -> tuple[Image.Image, _Canvas]:
    """One image of ``spec``: its background carrying its objects (or ``objects``, one spec per category)."""
    ss = max(1, min(4, int(round(256 / size))))
    bg = _wchoice(rng, spec.backgrounds)
    cv = _Canvas(rng, size, ss, bg)
    plan = _plan(spec.objects if objects is None else objects, rng)
    for cat in DRAW_ORDER:
        if cat not in plan or cat == "beach":
            continue
        n, sz = plan[cat]
        if n <= 0:
            continue
        if cat == "sea":
            _paint_sea(cv, n, sz, beach=plan["beach"][1] if "beach" in plan else None)
        else:
            PAINTERS[cat](cv, n, sz)
    return cv.finish(), cv


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    category: str
    n: int
    cx: float
    cy: float
    spread: float
    colour: str | None  # the colour of (nearly) all instances, None when mixed
    size: float  # mean longest side relative to the image
    long: bool


def _groups(cv: _Canvas) -> dict[str, _Group]:
    by: dict[str, list[_Obj]] = {}
    for o in cv.objects:
        by.setdefault(o.category, []).append(o)
    out = {}
    C = cv.C
    for cat, objs in by.items():
        cs = []
        for o in objs:
            xs = [min(max(p[0], 0), C) for p in o.pts]
            ys = [min(max(p[1], 0), C) for p in o.pts]
            cs.append(((min(xs) + max(xs)) / 2 / C, (min(ys) + max(ys)) / 2 / C))
        arr = np.asarray(cs)
        names = [o.colour for o in objs]
        top = max(set(names), key=lambda c: (names.count(c), c))
        colour = top if names.count(top) >= 0.75 * len(names) else None
        out[cat] = _Group(
            cat,
            len(objs),
            float(arr[:, 0].mean()),
            float(arr[:, 1].mean()),
            float(arr.std(axis=0).mean()) if len(objs) > 1 else 0.0,
            colour,
            float(np.mean([o.size for o in objs])),
            sum(o.long for o in objs) > len(objs) / 2,
        )
    return out


class _Captioner:
    def __init__(self, spec: SceneSpec, groups: dict[str, _Group], rng: np.random.Generator):
        self.spec, self.g, self.rng = spec, groups, rng
        self.key = [o.category for o in spec.objects]

    # ---- words ---------------------------------------------------------------------------------
    def term(self, cat: str) -> str:
        return _wchoice(self.rng, self.spec.terms.get(cat, CAPTION_TERMS[cat]))

    @staticmethod
    def plural(term: str) -> str:
        if term in NO_PLURAL or term in MASS_TERMS:
            return term
        head, _, last = term.rpartition(" ")
        if last.endswith("y") and last[-2:-1] not in "aeiou":
            last = last[:-1] + "ies"
        elif last.endswith(("s", "x", "ch", "sh")):
            last += "es"
        else:
            last += "s"
        return f"{head} {last}".strip()

    def adjective(self, g: _Group) -> str:
        rng = self.rng
        opts = []
        if g.colour is not None and g.category not in ("road", "runway", "parking lot", "railway", "baseball field"):
            opts.append(g.colour)
        elif g.colour is None and g.category in ("car", "house", "building") and g.n > 2:
            opts.append("colorful" if g.category == "car" else "")
        lim = SIZE_ADJ.get(g.category)
        if lim is not None:
            if g.size <= lim[0]:
                opts.append("small")
            elif g.size >= lim[1]:
                opts.append(_choice(rng, ["large", "big"]))
        if g.long and g.category == "building":
            opts.append("long")
        opts = [o for o in opts if o]
        if not opts or rng.random() < 0.3:
            return ""
        return _choice(rng, opts)

    def count_word(self, n: int) -> str:
        rng = self.rng
        if n <= 1:
            return _choice(rng, ["a", "a", "a", "a", "a", "one"])
        if n <= 6 and rng.random() < 0.55:
            return NUMBERS[n]
        if n <= 3:
            return _choice(rng, ["two", "a few"]) if n == 2 else _choice(rng, ["three", "a few", "some"])
        if n <= 7:
            return _choice(rng, ["some", "several", "a few"] if n <= 5 else ["some", "several", "many"])
        return _choice(rng, ["many", "many", "many", "lots of", "a lot of"])

    def np(self, cat: str, det: str | None = None, adj: bool = True) -> tuple[str, bool]:
        """A noun phrase for the group of ``cat`` and whether it is plural."""
        g, rng = self.g[cat], self.rng
        term = self.term(cat)
        a = self.adjective(g) if adj else ""
        a = f"{a} " if a else ""
        if term in MASS_TERMS:
            return (f"the {a}{term}" if rng.random() < 0.6 or not a else f"{a}{term}"), False
        if term in VAGUE_PLURAL_TERMS:
            return f"{_choice(rng, ['many', 'some', 'several'])} {a}{self.plural(term)}", True
        if g.n == 1 or cat in LINEAR and g.n == 1:
            d = det or self.count_word(1)
            if det is None and rng.random() < 0.25:
                d = "the"
            return f"{d} {a}{term}", False
        return f"{self.count_word(g.n)} {a}{self.plural(term)}", True

    def verb(self, cat: str) -> str:
        v = _choice(self.rng, VERBS.get(cat, ("",)))
        g = self.g[cat]
        if cat in ("house", "building", "tree") and g.n >= 12 and self.rng.random() < 0.4:
            v = _choice(self.rng, ["densely arranged", "densely distributed", "closely arranged"])
        elif cat in ("tree", "house") and g.spread > 0.22 and self.rng.random() < 0.4:
            v = "scattered"
        return v

    def pos(self, g: _Group) -> str:
        rng = self.rng
        if g.n > 2 and g.spread > 0.26:
            return _choice(rng, ["all over the image", "everywhere", "in different places"])
        h = "left" if g.cx < 0.4 else "right" if g.cx > 0.6 else None
        v = "top" if g.cy < 0.4 else "bottom" if g.cy > 0.6 else None
        if h and v:
            return _choice(rng, [f"in the {'upper' if v == 'top' else 'lower'} {h} corner", f"on the {h}", f"at the {v}"])
        if h:
            return _choice(rng, [f"on the {h}", f"on the {h} side", f"on the {h} of the image"])
        if v:
            return _choice(rng, [f"at the {v}", f"on the {v} side", f"at the {v} of the image"])
        return _choice(rng, ["in the middle", "in the center", "in the middle of the image"])

    def rel(self, a: _Group, b: _Group) -> str:
        rng = self.rng
        near = ["next to", "beside", "near", "close to", "around"]
        if b.category in LINEAR or a.category in LINEAR:
            return _choice(rng, near[:4] + (["along"] if b.category in ("road", "river", "runway", "railway") else []))
        dx, dy = a.cx - b.cx, a.cy - b.cy
        if a.spread > 0.25 or math.hypot(dx, dy) < 0.22 or rng.random() < 0.25:
            return _choice(rng, near)
        if abs(dx) >= abs(dy):
            return _choice(rng, ["on the left of", "to the left of"] if dx < 0 else ["on the right of", "to the right of"])
        return _choice(rng, ["above", "on the top of"] if dy < 0 else ["below", "under"])

    # ---- sentence choice -----------------------------------------------------------------------
    def primary(self) -> str:
        cats = [c for c in self.key if c in self.g]
        w = [4.0 if c == self.key[0] else 2.0 if c == self.key[1] else 1.0 for c in cats]
        return _choice(self.rng, cats, w)

    def secondary(self, a: str) -> str | None:
        cats = [c for c in self.g if c != a]
        if not cats:
            return None
        w = [2.0 if self.g[c].n <= 2 else 1.0 for c in cats]
        return _choice(self.rng, cats, w)

    def loc(self, *cats: str | None) -> str:
        """A scene locative ("in an airport"), or "" when one of ``cats`` names the scene itself."""
        if any(c in SELF_CATS.get(self.spec.name, ()) for c in cats):
            return ""
        return _choice(self.rng, self.spec.locs)

    def vague_ok(self, sentence: str) -> bool:
        """Whether a generic sentence names only categories that were drawn."""
        toks = f" {sentence} "
        for cat in CATEGORY_NAMES:
            if cat in self.g:
                continue
            for t in CAPTION_TERMS[cat] + self.spec.terms.get(cat, ()):
                if f" {t[0]} " in toks or f" {self.plural(t[0])} " in toks:
                    return False
        return True

    KINDS = (("rel", 3.0), ("there", 1.3), ("two", 1.5), ("rev", 0.8), ("this", 1.3), ("pos2", 1.8), ("pos", 0.7),
             ("surr", 0.9), ("vague", 1.7))

    def sentence(self, kind: str | None = None, primary: str | None = None) -> str:
        rng = self.rng
        kind = kind or _wchoice(rng, self.KINDS)
        a = primary if primary in self.g else self.primary()
        b = self.secondary(a)
        ga = self.g[a]
        if kind == "vague":
            ok = [v for v in self.spec.vague if self.vague_ok(v)]
            if ok:
                return _choice(rng, ok)
            kind = "rel"
        if kind in ("rel", "rev", "surr", "pos2", "two") and b is None:
            kind = "there"
        if kind == "surr":
            big = [c for c in self.g if self.g[c].n <= 2 and self.g[c].size >= 0.12 and c not in LINEAR]
            small = [c for c in self.g if self.g[c].n >= 3 and c not in big]
            if big and small:
                b2, a2 = _choice(rng, big), _choice(rng, small)
                s1, _ = self.np(b2, det="a")
                s2, _ = self.np(a2)
                tail = self.loc(a2, b2) if rng.random() < 0.4 else ""
                return f"{s1} is surrounded by {s2}{' ' + tail if tail else ''} ."
            kind = "rel"
        if kind == "rel":
            s, pl = self.np(a)
            v = self.verb(a)
            o, _ = self.np(b, adj=rng.random() < 0.6)
            tail = self.loc(a, b) if rng.random() < 0.9 else ""
            return f"{s} {'are' if pl else 'is'}{' ' + v if v else ''} {self.rel(ga, self.g[b])} {o}{' ' + tail if tail else ''} ."  # type: ignore[index]
        if kind == "there":
            s, pl = self.np(a)
            loc = self.loc(a)
            tail = self.pos(ga) + (f" {loc}" if loc and rng.random() < 0.7 else "")
            return f"there {'are' if pl else 'is'} {s} {tail} ."
        if kind == "two":
            c2 = b if rng.random() < 0.5 else _choice(rng, [c for c in self.g if c != a])
            s1, _ = self.np(a)
            s2, _ = self.np(c2)
            loc = self.loc(a, c2)
            if not loc or rng.random() < 0.3:
                loc = _choice(rng, ["in this area", "here", "in the image"])
            return f"{s1} and {s2} are {loc} ."
        if kind == "rev":
            s, pl = self.np(b, det="a")
            o, _ = self.np(a)
            tail = self.loc(a, b) if rng.random() < 0.6 else ""
            return f"{s} {'are' if pl else 'is'} {self.rel(self.g[b], ga)} {o}{' ' + tail if tail else ''} ."  # type: ignore[index]
        if kind == "this":
            selfc = SELF_CATS.get(self.spec.name, ())
            cats = [c for c in self.g if c not in selfc]
            if cats:
                c = a if a in cats else _choice(rng, cats)
                s, _ = self.np(c)
                tail = f" {self.pos(self.g[c])}" if rng.random() < 0.6 else ""
                return f"{_choice(rng, ['this is', 'it is'])} {_choice(rng, self.spec.nps)} with {s}{tail} ."
            kind = "pos"
        if kind == "pos2":
            s1, pl1 = self.np(a)
            v = self.verb(a)
            s2, pl2 = self.np(b)
            return (f"{s1} {'are' if pl1 else 'is'}{' ' + v if v else ''} {self.pos(ga)} and "
                    f"{s2} {'are' if pl2 else 'is'} {self.pos(self.g[b])} .")  # type: ignore[index]
        # "pos"
        s, pl = self.np(a)
        v = self.verb(a)
        tail = self.loc(a) if rng.random() < 0.7 else ""
        return f"{s} {'are' if pl else 'is'}{' ' + v if v else ''} {self.pos(ga)}{' ' + tail if tail else ''} ."

    def captions(self) -> list[str]:
        rng = self.rng
        k = int(_choice(rng, [1, 2, 3, 4, 5], [0.34, 0.3, 0.17, 0.11, 0.08]))
        distinct: list[str] = []
        for _ in range(6 * k):
            if len(distinct) >= k:
                break
            # the first sentence is mostly about the scene's defining objects
            key = self.key[0] if not distinct and rng.random() < 0.7 else None
            s = _fix_articles(self.sentence(primary=key))
            if s not in distinct:
                distinct.append(s)
        out = list(distinct)
        while len(out) < CAPTIONS_PER_IMAGE:
            out.append(distinct[int(rng.integers(len(distinct)))])
        return [out[i] for i in rng.permutation(CAPTIONS_PER_IMAGE)]


def _fix_articles(s: str) -> str:
    words = s.split()
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][0] in "aeiou" else "a"
    return " ".join(words)


# --------------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------------


def _rng(*entropy: int) -> np.random.Generator:
    """A PCG64 generator on the seed sequence of ``entropy`` (one stream per purpose and image)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def _split_sizes(n_images: int, n_val: int | None, n_test: int | None) -> tuple[int, int] | None:
    """Explicit ``(n_val, n_test)`` (a missing one at its default fraction), or None when both are None."""
    if n_val is None and n_test is None:
        return None
    return (int(round(SPLIT_FRACTIONS["val"] * n_images)) if n_val is None else int(n_val),
            int(round(SPLIT_FRACTIONS["test"] * n_images)) if n_test is None else int(n_test))


def _check_args(n_images: int, image_size: int, n_val: int | None, n_test: int | None) -> None:
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    sizes = _split_sizes(n_images, n_val, n_test)
    if sizes is not None and min(sizes) < 0:
        raise ValueError(f"n_val and n_test must not be negative, got {sizes[0]} and {sizes[1]}")
    if sizes is not None and sum(sizes) >= n_images:
        raise ValueError(f"n_val + n_test ({sizes[0]} + {sizes[1]}) must be below n_images ({n_images}): "
                         "the train split would be empty")


def _params(n_images: int, seed: int, image_size: int, n_val: int | None = None, n_test: int | None = None) -> dict:
    """What identifies a generation; the split sizes only when given, so that data sets generated with the
    default fractions (before the sizes existed) stay current."""
    p = {"n_images": int(n_images), "seed": int(seed), "image_size": int(image_size), "version": GENERATOR_VERSION}
    sizes = _split_sizes(n_images, n_val, n_test)
    if sizes is not None:
        p["n_val"], p["n_test"] = sizes
    return p


def _listed(path: Path) -> list[str] | None:
    """The image file names a generation's json lists (a ground truth keyed by file name, or a Karpathy
    ``images`` list); None when the file is missing or unreadable."""
    try:
        images = json.loads(path.read_text())["images"]
        names = list(images) if isinstance(images, dict) else [im["filename"] for im in images]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if all(isinstance(f, str) for f in names) else None


def _is_complete(out: Path, marker: str, listing: str, params: dict, n_images: int) -> bool:
    """Whether ``out`` holds a finished generation with ``params``: the json ``marker`` (written last)
    records them and the json ``listing`` names ``n_images`` images, all present under ``out/images``."""
    try:
        recorded = json.loads((out / marker).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    names = _listed(out / listing)
    return (recorded == params and names is not None and len(names) == n_images
            and all((out / IMAGES_DIR / f).is_file() for f in names))


def is_current(out_dir: str | Path, n_images: int = DEFAULT_N_IMAGES, seed: int = 0,
               image_size: int = DEFAULT_IMAGE_SIZE, n_val: int | None = None, n_test: int | None = None) -> bool:
    """Whether ``out_dir`` already holds a complete data set generated with these parameters."""
    return _is_complete(Path(out_dir), GT_NAME, JSON_NAME, _params(n_images, seed, image_size, n_val, n_test),
                        n_images)


def _clear_previous(out: Path, listing: Path) -> Path:
    """Remove the images a previous generation listed in ``listing``; return the (created) image folder."""
    img_dir = out / IMAGES_DIR
    for f in _listed(listing) or ():
        p = img_dir / Path(f).name
        if p.is_file():
            p.unlink()
    img_dir.mkdir(parents=True, exist_ok=True)
    return img_dir


def _balanced_scenes(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` scenes in random order, every scene as often as any other (within one)."""
    scenes = [SCENES[i % len(SCENES)] for i in range(n)]
    return [scenes[i] for i in rng.permutation(n)]


def _stratified(scenes: Sequence[str], n_val: int, n_test: int, rng: np.random.Generator) -> list[str]:
    """Splits with exactly ``n_test`` test and ``n_val`` val images, the rest train.

    Each split's images are spread over the scenes as evenly as possible (per-scene counts differ by
    at most one): held-out slots go round the scenes (the larger ones first, in random order
    otherwise), the first ``n_test`` slots to test and the next ``n_val`` to val; within a scene the
    images are taken in random order.  ``scenes`` must be balanced (:func:`_balanced_scenes`).
    """
    by: dict[str, list[int]] = {}
    for i, sc in enumerate(scenes):
        by.setdefault(sc, []).append(i)
    names = sorted(by)
    order = sorted(rng.permutation(len(names)).tolist(), key=lambda k: -len(by[names[k]]))  # stable: random ties
    quota = {sc: {"test": 0, "val": 0} for sc in names}
    for j in range(n_test + n_val):
        quota[names[order[j % len(names)]]]["test" if j < n_test else "val"] += 1
    splits = ["train"] * len(scenes)
    for sc in names:
        idx, q = by[sc], quota[sc]
        if q["test"] + q["val"] > len(idx):
            raise ValueError(f"scene {sc!r} has {len(idx)} images, fewer than its {q['test'] + q['val']} held out")
        picked = [idx[i] for i in rng.permutation(len(idx))]
        for k, i in enumerate(picked[: q["test"] + q["val"]]):
            splits[i] = "test" if k < q["test"] else "val"
    return splits


def _assign(n: int, seed: int, n_val: int | None = None,
            n_test: int | None = None) -> tuple[list[str], list[str], set[int]]:
    """Scene and split per image index, and the indices named by number.

    Without split sizes each scene holds out :data:`SPLIT_FRACTIONS` of its images (rounded per
    scene); with them the splits come from :func:`_stratified` on a stream of their own, so that the
    scenes and file names (hence the images) do not depend on the split sizes.
    """
    rng = _rng(seed, 0x5EED)
    scenes = _balanced_scenes(n, rng)
    splits = ["train"] * n
    for sc in SCENES:
        idx = [i for i in range(n) if scenes[i] == sc]
        idx = [idx[i] for i in rng.permutation(len(idx))]
        m = len(idx)
        n_te = int(round(SPLIT_FRACTIONS["test"] * m))
        n_va = int(round(SPLIT_FRACTIONS["val"] * m))
        for i in idx[:n_te]:
            splits[i] = "test"
        for i in idx[n_te : n_te + n_va]:
            splits[i] = "val"
    numeric = set(int(i) for i in rng.choice(n, size=int(round(NUMERIC_NAME_FRACTION * n)), replace=False)) if n else set()
    sizes = _split_sizes(n, n_val, n_test)
    if sizes is not None:
        splits = _stratified(scenes, sizes[0], sizes[1], _rng(seed, 0x5EED, 1))
    return scenes, splits, numeric


def _entry(i: int, name: str, split: str, captions: Sequence[str], sentid: int) -> dict:
    """The Karpathy record of image ``i``, its captions numbered from ``sentid`` on."""
    sents = [{"tokens": tokenize(c), "raw": c, "imgid": i, "sentid": sentid + k} for k, c in enumerate(captions)]
    return {"filename": name, "imgid": i, "split": split, "sentids": [s["sentid"] for s in sents], "sentences": sents}


def _make_image(path: Path, spec: SceneSpec, rng: np.random.Generator, size: int, captioner: type[_Captioner],
                objects: Sequence[ObjectSpec] | None = None) -> tuple[_Canvas, list[str]]:
    """Render one image of ``spec`` (see :func:`_render`) into the JPEG ``path`` and caption what was drawn."""
    img, cv = _render(spec, rng, size, objects)
    img.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return cv, captioner(spec, _groups(cv), rng).captions()


def generate(out_dir: str | Path, n_images: int = DEFAULT_N_IMAGES, seed: int = 0,
             image_size: int = DEFAULT_IMAGE_SIZE, n_val: int | None = None, n_test: int | None = None,
             force: bool = False) -> Path:
    """Write the embedded benchmark into ``out_dir`` and return the path of its Karpathy json.

    ``n_val`` / ``n_test`` fix the split sizes (exactly, stratified by scene, see :func:`_stratified`;
    a missing one takes its default fraction of ``n_images``); with both None each scene holds out
    :data:`SPLIT_FRACTIONS` of its images.  The images do not depend on the split sizes.

    When ``out_dir`` already holds a complete data set with the same parameters (and generator
    version) nothing is written; otherwise the data set is (re)generated, images of a previous
    generation listed in its ground truth being removed first.
    """
    _check_args(n_images, image_size, n_val, n_test)
    out = Path(out_dir)
    js_path, gt_path = out / JSON_NAME, out / GT_NAME
    if not force and is_current(out, n_images, seed, image_size, n_val, n_test):
        return js_path
    img_dir = _clear_previous(out, gt_path)

    scenes, splits, numeric = _assign(n_images, seed, n_val, n_test)
    per_scene: dict[str, int] = {}
    images, gt_images = [], {}
    sentid = 0
    for i in range(n_images):
        scene = scenes[i]
        per_scene[scene] = per_scene.get(scene, 0) + 1
        name = f"{i:05d}.jpg" if i in numeric else f"{scene}_{per_scene[scene]}.jpg"
        cv, caps = _make_image(img_dir / name, SCENE_SPECS[scene], _rng(seed, 1, i), image_size, _Captioner)
        images.append(_entry(i, name, splits[i], caps, sentid))
        sentid += len(caps)
        gt_images[name] = {"scene": scene, "boxes": cv.boxes()}

    params = _params(n_images, seed, image_size, n_val, n_test)
    gt = {"image_size": int(image_size), "seed": int(seed), "n_images": int(n_images), "params": params,
          "scenes": list(SCENES), "images": gt_images}
    js_path.write_text(json.dumps({"dataset": "embedded", "images": images}))
    gt_path.write_text(json.dumps(gt))  # written last: its presence marks a complete generation
    return js_path


# --------------------------------------------------------------------------------------------------
# Pretraining corpus
# --------------------------------------------------------------------------------------------------

# Every ObjectSpec the scene table has for a category (where an out-of-context object borrows its counts and sizes).
_SPECS_OF: dict[str, tuple[ObjectSpec, ...]] = {
    cat: tuple(o for s in SCENE_SPECS.values() for o in s.objects if o.category == cat) for cat in CATEGORY_NAMES
}


def _perturb(o: ObjectSpec, rng: np.random.Generator, keep: bool = False) -> ObjectSpec:
    """``o`` with its counts scaled by a log-normal factor (single objects stay single), sizes by
    0.9-1.1 and probability by 0.5-1.5 (1 when ``keep``)."""
    f = math.exp(rng.normal(0.0, 0.35))
    lo, hi = o.count
    if hi > 1:
        lo = lo if lo == 0 else max(1, int(round(lo * f)))
        hi = max(lo, 1, int(round(hi * f)))
    g = rng.uniform(0.9, 1.1)
    p = 1.0 if keep else min(1.0, o.p * rng.uniform(0.5, 1.5))
    return ObjectSpec(o.category, (lo, hi), (min(1.0, o.size[0] * g), min(1.0, o.size[1] * g)), p)


def _pretrain_objects(scene: str, rng: np.random.Generator) -> tuple[SceneSpec, tuple[ObjectSpec, ...]]:
    """The scene spec whose background an image of the pretraining corpus gets, and its objects.

    The scene's objects are perturbed (:func:`_perturb`, its defining category always kept); in
    :data:`PRETRAIN_MIX_FRACTION` of the images the objects of a second scene join them (its
    defining category kept, categories already there not doubled), and in
    :data:`PRETRAIN_EXTRA_FRACTION` a category absent from both, with the counts and sizes of a
    scene that has it.
    """
    spec = SCENE_SPECS[scene]
    objs = {o.category: _perturb(o, rng, keep=k == 0) for k, o in enumerate(spec.objects)}
    if rng.random() < PRETRAIN_MIX_FRACTION:
        other = SCENE_SPECS[_choice(rng, [s for s in SCENES if s != scene])]
        for k, o in enumerate(other.objects):
            if o.category not in objs:
                objs[o.category] = _perturb(o, rng, keep=k == 0)
    if rng.random() < PRETRAIN_EXTRA_FRACTION:
        cat = _choice(rng, [c for c in CATEGORY_NAMES if c not in objs])
        objs[cat] = _perturb(_choice(rng, _SPECS_OF[cat]), rng, keep=True)
    return spec, tuple(objs.values())


class _AltText(_Captioner):
    """Web alt-text for an image of the pretraining corpus: short, noisy, in the benchmark's nouns only.

    Kinds: objects after a prefix ("aerial photo of cars, trees and a road"), after a colon
    ("satellite image : storage tanks"), bare tags ("tanks factory warehouse"), the scene ("drone
    view of a beach"), the scene with objects ("top view parking lot with many cars"), a numbered
    title ("image 2931 of farmland").  Objects come in random order; :data:`ALT_NOISE` of the
    captions name a wrong object or leave the main one out; words are dropped at random and fillers
    ("stock photo", "hd") added.  No caption holds a word of :data:`BENCHMARK_VERBS` (every benchmark
    sentence does, see ``_check_tables``) nor ends with " .", so none equals a benchmark caption
    after :func:`osdpm_lib.audit.normalize`.
    """

    PREFIXES = ("aerial photo", "aerial view", "aerial image", "aerial photography", "satellite image",
                "satellite photo", "satellite view", "drone view", "drone shot", "drone photo", "top view",
                "top down view", "overhead view", "birds eye view", "remote sensing image", "google earth")
    FILLERS = ("stock photo", "hd", "free download", "4k", "royalty free", "high resolution", "wallpaper",
               "stock image", "photo", "hq", "free stock photo", "editorial", "jpg", "download")
    TITLES = ("image", "img", "photo", "dsc", "pic", "frame", "tile")
    ALT_KINDS = (("list", 3.0), ("colon", 1.2), ("tags", 1.5), ("scene", 1.3), ("with", 1.2), ("title", 0.6))

    def objects(self) -> list[str]:
        """The categories to name, in random order: the main one and up to three other drawn ones;
        a wrong (undrawn) one replaces one of them or the main one is left out in :data:`ALT_NOISE`."""
        rng, g = self.rng, self.g
        main = self.key[0] if self.key[0] in g else max(g, key=lambda c: (g[c].n, c))
        others = [c for c in g if c != main]
        k = int(_choice(rng, [0, 1, 2, 3], [0.25, 0.35, 0.25, 0.15]))
        picked = [main] + [others[i] for i in rng.permutation(len(others))[:k]]
        u = rng.random()
        if u < ALT_NOISE and (u < ALT_NOISE / 2 or len(picked) == 1):
            picked[int(rng.integers(len(picked)))] = _choice(rng, [c for c in CATEGORY_NAMES if c not in g])
        elif u < ALT_NOISE:
            picked.remove(main)
        return [picked[i] for i in rng.permutation(len(picked))]

    def noun(self, cat: str) -> str:
        """"cars", "3 planes", "a white boat", "storage tank": a term of ``cat``, mostly plural when
        several were drawn, sometimes with a count or an adjective."""
        rng, g = self.rng, self.g.get(cat)
        term = self.term(cat)
        n = g.n if g is not None else int(rng.integers(1, 4))
        adj = self.adjective(g) if g is not None and rng.random() < 0.15 else ""
        if n >= 2 and rng.random() < 0.85:
            q = "" if rng.random() < 0.75 else str(n) if rng.random() < 0.4 else self.count_word(n)
            word = self.plural(term)
        else:
            q = "a" if rng.random() < 0.3 and term not in MASS_TERMS else ""
            word = term
        return " ".join(w for w in (q, adj, word) if w)

    def phrase(self, cats: Sequence[str]) -> str:
        parts = [self.noun(c) for c in cats]
        if len(parts) == 1:
            return parts[0]
        sep = _choice(self.rng, [", ", " , ", " "], [0.45, 0.35, 0.2])
        if sep != " " and self.rng.random() < 0.6:
            return f"{sep.join(parts[:-1])} and {parts[-1]}"
        return sep.join(parts)

    def scene_np(self, article: bool = True) -> str:
        """A name of the scene ("a beach", "parking lot")."""
        np_ = _choice(self.rng, self.spec.nps)
        return np_ if article else np_.split(" ", 1)[1]

    def caption(self) -> str:
        rng = self.rng
        kind = _wchoice(rng, self.ALT_KINDS) if self.g else "scene"
        pre = _choice(rng, self.PREFIXES)
        with_cats = [c for c in self.objects() if c not in SELF_CATS.get(self.spec.name, ())] if kind == "with" else []
        if kind == "with" and not with_cats:
            kind = "list"
        if kind == "list":
            s = f"{pre} {'of ' if rng.random() < 0.7 else ''}{self.phrase(self.objects())}"
        elif kind == "colon":
            s = f"{pre} {_choice(rng, [':', '-', '|'])} {self.phrase(self.objects())}"
        elif kind == "tags":
            s = " ".join(self.term(c) if rng.random() < 0.5 else self.plural(self.term(c)) for c in self.objects())
            s = f"{s} {_choice(rng, ['aerial', 'satellite', 'drone', 'overhead'])}" if rng.random() < 0.3 else s
        elif kind == "scene":
            s = f"{pre} of {self.scene_np(rng.random() < 0.7)}"
        elif kind == "with":
            s = f"{pre} {self.scene_np(rng.random() < 0.3)} with {self.phrase(with_cats)}"
        else:  # "title"
            num = f"{int(rng.integers(1, 10000)):0{int(_choice(rng, [1, 4]))}d}"
            what = self.scene_np(False) if rng.random() < 0.5 or not self.g else self.phrase(self.objects())
            s = f"{_choice(rng, self.TITLES)} {num} {'of ' if rng.random() < 0.6 else ''}{what}"
        words = _fix_articles(s).split()
        if rng.random() < 0.35:  # some words missing (an article goes with its noun)
            chunks: list[str] = []
            for w in words:
                chunks.append(f"{chunks.pop()} {w}" if chunks and chunks[-1] in ("a", "an") else w)
            keep = rng.random(len(chunks)) >= 0.2
            if keep.sum() >= 2:
                words = " ".join(c for c, k in zip(chunks, keep) if k).split()
        while len(words) > 1 and words[-1] in (":", "-", "|", ",", "of", "with", "and"):
            words.pop()
        words[-1] = words[-1].rstrip(",")
        if rng.random() < 0.2:
            filler = _choice(rng, self.FILLERS)
            sep = _choice(rng, [" ", " - ", " | ", ", "])
            s = f"{filler}{sep}{' '.join(words)}" if rng.random() < 0.3 else f"{' '.join(words)}{sep}{filler}"
            words = s.split()
        s = " ".join(words)
        return s[0].upper() + s[1:] if rng.random() < 0.2 else s

    def captions(self) -> list[str]:
        """One to three distinct alt-texts."""
        rng = self.rng
        k = int(_choice(rng, [1, 2, 3], [0.4, 0.35, 0.25]))
        out: list[str] = []
        for _ in range(4 * k):
            if len(out) >= k:
                break
            s = self.caption()
            if BENCHMARK_VERBS & set(tokenize(s)) or s.endswith("."):  # cannot happen: no such word is used
                raise AssertionError(f"alt-text in the benchmark's register: {s!r}")
            if s not in out:
                out.append(s)
        return out


def _pretrain_params(n_images: int, seed: int, image_size: int, n_val: int, n_test: int) -> dict:
    return {**_params(n_images, seed, image_size, n_val, n_test), "corpus": "pretrain",
            "pretrain_version": PRETRAIN_VERSION}


def is_current_pretrain(out_dir: str | Path, n_images: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                        n_val: int = 200, n_test: int = 200) -> bool:
    """Whether ``out_dir`` already holds a complete pretraining corpus generated with these parameters."""
    return _is_complete(Path(out_dir), PRETRAIN_PARAMS_NAME, PRETRAIN_JSON,
                        _pretrain_params(n_images, seed, image_size, n_val, n_test), n_images)


def generate_pretrain(out_dir: str | Path, n_images: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                      n_val: int = 200, n_test: int = 200, force: bool = False) -> Path:
    """Write a pretraining corpus (web alt-text style) into ``out_dir`` and return its Karpathy json.

    The corpus plays web alt-text data for a CLIP later fine-tuned on the benchmark: images from the
    same painters with perturbed and mixed scenes (:func:`_pretrain_objects`), one to three short
    noisy captions each (:class:`_AltText`) with the benchmark's object nouns, and its own seed
    streams (``[seed, 0x9E7, ...]``), so that its images, file names (``pre_000123.jpg``) and
    captions differ from every benchmark's.  Files: ``dataset_pretrain.json`` (Karpathy schema;
    ``n_val`` val and ``n_test`` test images, stratified by the scene whose background an image has),
    ``images/*.jpg`` and, written last, ``pretrain_params.json`` (the parameters: a second call with
    the same ones returns at once unless ``force``).  ``out_dir`` must not hold another
    ``dataset*.json`` (the readers expect one per folder).
    """
    _check_args(n_images, image_size, n_val, n_test)
    out = Path(out_dir)
    js_path = out / PRETRAIN_JSON
    params = _pretrain_params(n_images, seed, image_size, n_val, n_test)
    if not force and _is_complete(out, PRETRAIN_PARAMS_NAME, PRETRAIN_JSON, params, n_images):
        return js_path
    others = sorted(p.name for p in out.glob("dataset*.json") if p.name != PRETRAIN_JSON)
    if others:
        raise ValueError(f"{out} already holds {', '.join(others)}; the pretraining corpus needs a folder of its own")
    img_dir = _clear_previous(out, js_path)

    rng = _rng(seed, PRETRAIN_STREAM, 0)
    scenes = _balanced_scenes(n_images, rng)
    splits = _stratified(scenes, n_val, n_test, rng)
    images = []
    sentid = 0
    for i in range(n_images):
        name = f"pre_{i:06d}.jpg"
        rng = _rng(seed, PRETRAIN_STREAM, 1, i)
        spec, objects = _pretrain_objects(scenes[i], rng)
        _, caps = _make_image(img_dir / name, spec, rng, image_size, _AltText, objects)
        images.append(_entry(i, name, splits[i], caps, sentid))
        sentid += len(caps)
    js_path.write_text(json.dumps({"dataset": "pretrain", "images": images}))
    counts = {sp: splits.count(sp) for sp in ("train", "val", "test")}
    marker = {"params": params, "images_per_split": counts, "captions": sentid}
    (out / PRETRAIN_PARAMS_NAME).write_text(json.dumps(marker, indent=1))  # written last: marks a complete corpus
    return js_path


# --------------------------------------------------------------------------------------------------
# Summaries for the data-prep notebook
# --------------------------------------------------------------------------------------------------


def _scene_of(filename: str, gt_images: dict) -> str:
    if filename in gt_images:
        return gt_images[filename]["scene"]
    stem = Path(filename).stem
    head, sep, tail = stem.rpartition("_")
    return head if sep and tail.isdigit() else "unknown"


def caption_stats(json_path: str | Path) -> dict:
    """Caption and split statistics of a Karpathy json (scenes from a sibling ground_truth.json)."""
    path = Path(json_path)
    data = json.loads(path.read_text())
    gt_path = path.with_name(GT_NAME)
    gt_images = json.loads(gt_path.read_text())["images"] if gt_path.is_file() else {}
    lengths, raws = [], []
    per_split: dict[str, int] = {}
    per_scene: dict[str, int] = {}
    per_image_unique = []
    for im in data["images"]:
        per_split[im["split"]] = per_split.get(im["split"], 0) + 1
        sc = _scene_of(im["filename"], gt_images)
        per_scene[sc] = per_scene.get(sc, 0) + 1
        rs = [s["raw"] for s in im["sentences"]]
        raws += rs
        per_image_unique.append(len(set(rs)))
        lengths += [len(s["tokens"]) for s in im["sentences"]]
    train = [s["raw"] for im in data["images"] if im["split"] == "train" for s in im["sentences"]]
    n_caps = len(raws)
    from osdpm_lib.audit import length_stats  # lazy: audit imports pandas

    words = length_stats(lengths)
    return {
        "n_images": len(data["images"]),
        "n_captions": n_caps,
        "captions_per_image": n_caps / max(1, len(data["images"])),
        "mean_words": words["mean"],
        "min_words": words["min"],
        "max_words": words["max"],
        "unique_captions": len(set(raws)),
        "unique_ratio": len(set(raws)) / max(1, n_caps),
        "train_unique_ratio": len(set(train)) / max(1, len(train)),
        "mean_unique_per_image": float(np.mean(per_image_unique)) if per_image_unique else 0.0,
        "vocabulary": len({t for im in data["images"] for s in im["sentences"] for t in s["tokens"]}),
        "images_per_split": dict(sorted(per_split.items())),
        "images_per_scene": dict(sorted(per_scene.items())),
    }


def object_sizes(gt_path: str | Path):
    """One row per ground-truth box: filename, scene, category, width, height, size (relative)."""
    import pandas as pd

    gt = json.loads(Path(gt_path).read_text())
    S = float(gt["image_size"])
    rows = []
    for fn, rec in gt["images"].items():
        for b in rec["boxes"]:
            x0, y0, x1, y1 = b["box"]
            w, h = (x1 - x0) / S, (y1 - y0) / S
            rows.append({"filename": fn, "scene": rec["scene"], "category": b["category"],
                         "width": w, "height": h, "size": max(w, h)})
    return pd.DataFrame(rows, columns=["filename", "scene", "category", "width", "height", "size"])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``OUT_DIR`` generates the benchmark, ``--pretrain OUT`` the pretraining corpus; 2 on bad values."""
    ap = argparse.ArgumentParser(description="Generate the embedded synthetic remote-sensing caption benchmark "
                                             "(OUT_DIR) or its pretraining corpus (--pretrain OUT).")
    ap.add_argument("out_dir", nargs="?", help="benchmark folder")
    ap.add_argument("--pretrain", metavar="OUT", help="write the pretraining corpus (web alt-text style) here")
    ap.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    ap.add_argument("--n-val", type=int, default=None,
                    help="validation images (benchmark: default a tenth per scene; pretraining corpus: 200)")
    ap.add_argument("--n-test", type=int, default=None,
                    help="test images (benchmark: default a tenth per scene; pretraining corpus: 200)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the folder is current")
    args = ap.parse_args(argv)
    if (args.out_dir is None) == (args.pretrain is None):
        ap.error("give either OUT_DIR (benchmark) or --pretrain OUT (pretraining corpus)")
    try:
        if args.pretrain is not None:
            path = generate_pretrain(args.pretrain, n_images=args.n_images, seed=args.seed, image_size=args.image_size,
                                     n_val=200 if args.n_val is None else args.n_val,
                                     n_test=200 if args.n_test is None else args.n_test, force=args.force)
        else:
            path = generate(args.out_dir, n_images=args.n_images, seed=args.seed, image_size=args.image_size,
                            n_val=args.n_val, n_test=args.n_test, force=args.force)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    st = caption_stats(path)
    print(path)
    print(json.dumps({k: st[k] for k in ("n_images", "n_captions", "mean_words", "unique_ratio", "images_per_split")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
