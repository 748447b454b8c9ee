"""The remote-sensing object-category lexicon shared by the embedded benchmark and prior extraction.

Each canonical category maps to the surface terms (singular, lower case, possibly multi-word) that
name it in captions.  Prior extraction lemmatises caption nouns and matches multi-word terms first
("baseball field", "parking lot", "storage tank"), then single nouns; the embedded benchmark draws
its caption nouns from the same terms so that synonyms and plurals occur as in RSICD.

Categories follow the objects RSICD captions name most often (Lu et al., TGRS 2018).
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
    "pond": ("pond", "lake", "pool"),
    "sea": ("sea", "ocean", "water", "wave"),
    "beach": ("beach", "sand", "shore", "coast"),
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
