"""Scene and vocabulary tables of the embedded benchmark: scene specs, land cover and colours, caption terms.

Checked against :mod:`osdpm_lib.lexicon` on import (``_check_tables``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from osdpm_lib.data import tokenize
from osdpm_lib.lexicon import CATEGORIES, term_to_category

# The object categories the benchmark draws, in the order its generator iterates them (random choices among
# them depend on this order).  A fixed subset of the lexicon: categories the lexicon gains for real data
# (desert, mountain, bare land, swimming pool) leave the benchmark's images, captions and boxes unchanged.
BENCHMARK_CATEGORIES: tuple[str, ...] = (
    "airplane", "runway", "boat", "car", "storage tank", "building", "house", "tree", "road", "bridge", "viaduct",
    "river", "pond", "sea", "beach", "baseball field", "playground", "stadium", "church", "railway",
    "parking lot", "farmland", "meadow", "dock",
)

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
    """The caption terms of ``cat``, checked against the lexicon the priors read captions with.

    A term the lexicon lists for ``cat`` is kept, and so is a plain word it does not list ("sand" of a
    beach, "water" of the sea, "pool" of a pond: true of the drawn object, but not counted by the priors,
    see :mod:`osdpm_lib.lexicon`); a term the lexicon lists for another category is an error, since the
    priors would name an object that was not drawn.  Falls back to the lexicon's first term of ``cat``.
    """
    to_cat = term_to_category()
    wrong = [t for t, _ in pairs if to_cat.get(t, cat) != cat]
    if wrong:
        raise ValueError(f"caption terms of {cat!r} that the lexicon maps to other categories: "
                         + ", ".join(f"{t!r} -> {to_cat[t]!r}" for t in wrong))
    return tuple(pairs) or ((CATEGORIES[cat][0], 1.0),)


def _check_tables() -> None:
    for spec in SCENE_SPECS.values():
        for o in spec.objects:
            if o.category not in BENCHMARK_CATEGORIES:
                raise ValueError(f"scene {spec.name}: unknown category {o.category!r}")
        for cat in list(spec.terms):
            spec.terms[cat] = _lexicon_terms(cat, spec.terms[cat])
        for v in spec.vague:  # what keeps alt-texts (generate_pretrain) apart from benchmark sentences
            if not BENCHMARK_VERBS & set(tokenize(v)):
                raise ValueError(f"scene {spec.name}: vague sentence without a verb of BENCHMARK_VERBS: {v!r}")
    if set(BENCHMARK_CATEGORIES) - set(CATEGORIES):
        raise ValueError(f"benchmark categories not in the lexicon: "
                         f"{sorted(set(BENCHMARK_CATEGORIES) - set(CATEGORIES))}")
    if sorted(DRAW_ORDER) != sorted(BENCHMARK_CATEGORIES):
        raise ValueError(f"DRAW_ORDER and BENCHMARK_CATEGORIES differ: "
                         f"{sorted(set(DRAW_ORDER) ^ set(BENCHMARK_CATEGORIES))}")
    for cat in BENCHMARK_CATEGORIES:
        CAPTION_TERMS[cat] = _lexicon_terms(cat, CAPTION_TERMS.get(cat, ()))


# Draw order: ground cover, water, linear features, large structures, buildings, small objects.
DRAW_ORDER = (
    "farmland", "meadow", "sea", "beach", "river", "runway", "railway", "viaduct", "road", "bridge",
    "parking lot", "dock", "pond", "baseball field", "playground", "stadium", "church", "building",
    "house", "storage tank", "airplane", "tree", "car", "boat",
)
_check_tables()
_check_tables()


# Every ObjectSpec the scene table has for a category (where an object out of its scenes' context, a pretraining
# corpus's or a distractor of the generator condition "cluttered", borrows its counts and sizes).
SPECS_OF: dict[str, tuple[ObjectSpec, ...]] = {
    cat: tuple(o for s in SCENE_SPECS.values() for o in s.objects if o.category == cat) for cat in BENCHMARK_CATEGORIES
}
