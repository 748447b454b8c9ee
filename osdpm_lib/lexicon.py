"""The remote-sensing object-category lexicon shared by the embedded benchmark and prior extraction.

Each canonical category maps to the surface terms (singular, lower case, possibly multi-word) that
name it in captions.  Prior extraction lemmatises caption nouns and matches multi-word terms first
("baseball field", "parking lot", "storage tank"), then single nouns; the embedded benchmark draws
its caption nouns from the same terms so that synonyms and plurals occur as in RSICD.

Categories follow the objects RSICD captions name most often (Lu et al., TGRS 2018), and the land forms
that name RSICD's desert, mountain and bare-land scenes (without them most of those images had no prior).

Words that name a material or a body of water of no one kind are not terms: "sand" (deserts, beaches,
baseball diamonds, river bars), "water" (sea, river, lake, pool, flooded land) and a bare "pool" (RSICD's
pools are mostly swimming or spa pools, sometimes ponds).  Mapping them onto one category gave wrong priors:
``sand -> beach`` made "beach" the top category of RSICD's desert images.  Only the unambiguous multi-word
"swimming pool" is a term.  The embedded benchmark (:mod:`osdpm_lib.synth`) still uses these words in its
captions (it draws its own, fixed set of categories); the priors simply do not count them.
"""

from __future__ import annotations

CATEGORIES: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "plane", "aircraft", "aeroplane", "jet"),
    "runway": ("runway", "airstrip"),
    "boat": ("boat", "ship", "vessel", "yacht"),
    "car": ("car", "vehicle", "automobile"),
    "storage tank": ("storage tank", "tank", "oil tank", "container tank"),
    "building": ("building", "factory", "warehouse", "workshop"),
    "house": ("house", "residence", "home", "villa"),
    "tree": ("tree", "forest", "wood", "woods", "plant"),
    "road": ("road", "street", "highway", "avenue"),
    "bridge": ("bridge",),
    "viaduct": ("viaduct", "overpass", "interchange"),
    "river": ("river", "stream"),
    "pond": ("pond", "lake"),  # not "pool": see the module docstring
    "sea": ("sea", "ocean", "wave"),  # not "water"
    "beach": ("beach", "shore", "coast"),  # not "sand"
    "baseball field": ("baseball field", "baseball diamond", "diamond"),
    "playground": ("playground", "track", "running track", "football field", "court", "basketball field",
                   "soccer field", "sports field", "tennis field", "badminton field", "track field"),
    "stadium": ("stadium", "arena"),
    "church": ("church", "cathedral"),
    "railway": ("railway", "railway station", "train station", "rail", "train", "railroad", "railway track",
                "train track", "rail track", "railroad track"),
    "parking lot": ("parking lot", "parking", "car park"),
    "farmland": ("farmland", "field", "farm", "crop", "cropland"),
    "meadow": ("meadow", "grass", "grassland", "lawn"),
    "dock": ("dock", "pier", "harbor", "harbour", "wharf"),
    # land forms and land cover of RSICD's desert, mountain and bareland scenes; appended so that the
    # columns of the categories above keep their positions
    "desert": ("desert", "dune", "sand dune"),
    "mountain": ("mountain", "hill", "hillside", "mountainside", "ridge", "peak", "mountain range"),
    "bare land": ("bare land", "bareland", "bare ground", "bare soil", "bare field", "barren land",
                  "wasteland", "waste land"),  # not "soil" or "dirt": tilled fields, dirt roads
    "swimming pool": ("swimming pool",),
}

CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)


def term_to_category() -> dict[str, str]:
    """Surface term -> canonical category (every term maps to exactly one category)."""
    out: dict[str, str] = {}
    for cat, terms in CATEGORIES.items():
        for t in terms:
            if t in out and out[t] != cat:
                raise ValueError(f"lexicon term {t!r} maps to both {out[t]!r} and {cat!r}")
            out[t] = cat
    return out
