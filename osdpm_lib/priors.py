"""Caption-noun category priors (the OSFCM prior of OSDPM).

For every training image the object categories named in its captions are counted: each caption is
tokenised (``nltk.tokenize.wordpunct_tokenize``, which needs no downloaded model), every token is
lemmatised as a noun as NLTK's ``WordNetLemmatizer`` does (:func:`osdpm_lib.wordnet.lemmatize_noun`), multi-word
lexicon terms ("baseball field", "parking lot", "storage tank") are matched first (longest match, their words are then not counted
again), and the remaining tokens that WordNet knows as nouns are mapped onto the categories of
:mod:`osdpm_lib.lexicon` (plurals via the lemmatiser, synonyms via the lexicon terms).

An image's count for a category is the number of its captions that name the category (at most one
per caption), so with RSICD's five captions per image the count measures how consistently the
annotators named it.  ``probs`` normalises the counts per image; the *high-probability set* ``high``
holds the categories named in at least ``threshold`` of the image's captions.

WordNet is provisioned by :mod:`osdpm_lib.wordnet` (``python -m osdpm_lib.priors provision-wordnet``
still works: this module's ``main`` is that module's).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osdpm_lib import lexicon

from osdpm_lib.wordnet import PROVISION_HINT, WordNetMissingError, check_wordnet, main, provision_wordnet  # noqa: F401
from osdpm_lib.wordnet import lemmatize_noun, reader as wordnet_reader

# ---------------------------------------------------------------------------------------------------
# Caption-noun extraction
# ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+\Z")
_TOKENIZER: Any = None  # nltk's WordPunctTokenizer, made on first use (importing nltk takes seconds)

#: Function words that WordNet also lists as nouns ("a" vitamin A, "in" inch, "it", "are" the unit,
#: "was"/"has" lemmatised to "wa"/"ha"); never caption nouns.  (NLTK's stopword list needs a download.)
STOPWORDS = frozenset("""
a an the this that these those there here it its is are was were be been being am has have had do does
did can could will would shall should may might must in on at of to by for with from into onto over under
up down out off about above below near beside besides between among through across along around behind
and or but nor so as than then while if not no yes very too also just only some any many much more most
few several each every all both one two three four five six seven eight nine ten who which what where
""".split())


class CaptionNounExtractor:
    """Maps captions to lexicon categories; caches lemmas, noun tests and whole captions.

    ``terms`` maps surface terms (lower case, singular, possibly multi-word) to categories; default
    :func:`osdpm_lib.lexicon.term_to_category`.
    """

    def __init__(self, terms: dict[str, str] | None = None):
        self.terms = dict(lexicon.term_to_category() if terms is None else terms)
        self._multi: dict[tuple[str, ...], str] = {
            tuple(t.split()): c for t, c in self.terms.items() if len(t.split()) > 1}
        self._max_len = max((len(k) for k in self._multi), default=1)
        self._lemma: dict[str, str] = {}
        self._noun: dict[str, bool] = {}
        self._captions: dict[str, tuple[str, ...]] = {}

    # -- WordNet access (osdpm_lib.wordnet.reader: loaded on first use, once per process) ---------------
    def lemma(self, token: str) -> str:
        """The noun lemma of a lower-case token ("planes" -> "plane"), cached."""
        out = self._lemma.get(token)
        if out is None:
            out = self._lemma[token] = lemmatize_noun(token)
        return out

    def is_noun(self, lemma: str) -> bool:
        """Whether WordNet knows ``lemma`` as a noun, cached."""
        out = self._noun.get(lemma)
        if out is None:
            out = self._noun[lemma] = bool(wordnet_reader().synsets(lemma, pos="n"))
        return out

    # -- captions ----------------------------------------------------------------------------------
    @staticmethod
    def tokens(caption: str) -> list[str]:
        """Lower-case word tokens of ``wordpunct_tokenize``, punctuation and numbers dropped; words
        glued by hyphens stay one token ("diamond-shaped", "tree-lined": modifiers, never nouns)."""
        global _TOKENIZER
        if _TOKENIZER is None:
            from nltk.tokenize import WordPunctTokenizer

            _TOKENIZER = WordPunctTokenizer()
        text = caption.lower()
        out: list[str] = []
        glue = False  # the previous token was a "-" glued to the word before it
        prev_end = -1
        for s, e in _TOKENIZER.span_tokenize(text):  # = wordpunct_tokenize, with character offsets
            t = text[s:e]
            if glue and s == prev_end and t.isalpha() and out:
                out[-1] += "-" + t
            elif t == "-" and s == prev_end and out and out[-1][-1:].isalpha():
                glue, prev_end = True, e
                continue
            elif t.isalpha():
                out.append(t)
            glue, prev_end = False, e
        return out

    def _match(self, caption: str) -> list[tuple[str, str | None]]:
        """(term or noun lemma, category or None) per matched unit, in caption order."""
        tokens = self.tokens(caption)
        lemmas = [self.lemma(t) if _WORD.match(t) and t not in STOPWORDS else t for t in tokens]
        out: list[tuple[str, str | None]] = []
        i = 0
        while i < len(lemmas):
            for n in range(min(self._max_len, len(lemmas) - i), 1, -1):  # longest multi-word term first
                cat = self._multi.get(tuple(lemmas[i:i + n]))
                if cat is None:
                    cat = self._multi.get(tuple(tokens[i:i + n]))
                if cat is not None:
                    out.append((" ".join(lemmas[i:i + n]), cat))
                    i += n
                    break
            else:
                lem, tok = lemmas[i], tokens[i]
                if _WORD.match(tok) and tok not in STOPWORDS:
                    if self.is_noun(lem):
                        out.append((lem, self.terms.get(lem, self.terms.get(tok))))
                    elif (term := self._unlisted_term(tok)) is not None:  # a term WordNet lacks: trust the lexicon
                        out.append((term, self.terms[term]))
                i += 1
        return out

    def _unlisted_term(self, token: str) -> str | None:
        """The lexicon term a token WordNet does not know names ("cropland"; "barelands" -> "bareland":
        the lemmatiser leaves words outside WordNet as they are), or None."""
        if token in self.terms:
            return token
        if token.endswith("s") and token[:-1] in self.terms:
            return token[:-1]
        return None

    def nouns(self, caption: str) -> list[str]:
        """Noun lemmas and matched multi-word terms of a caption, in order (for lexicon coverage)."""
        return [u for u, _ in self._match(caption)]

    def categories(self, caption: str) -> tuple[str, ...]:
        """Lexicon categories mentioned in a caption, one entry per mention, in order."""
        out = self._captions.get(caption)
        if out is None:
            out = self._captions[caption] = tuple(c for _, c in self._match(caption) if c is not None)
        return out

    def count(self, captions: Iterable[str]) -> collections.Counter:
        """Per category, the number of captions naming it (each caption counts a category once)."""
        counter: collections.Counter = collections.Counter()
        for cap in captions:
            counter.update(set(self.categories(cap)))
        return counter


_DEFAULT: CaptionNounExtractor | None = None


def default_extractor() -> CaptionNounExtractor:
    """The shared extractor over :mod:`osdpm_lib.lexicon` (its caches live for the process)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CaptionNounExtractor()
    return _DEFAULT


def caption_nouns(caption: str) -> list[str]:
    """Noun lemmas of a caption, multi-word lexicon terms kept whole ("storage tanks" -> "storage tank")."""
    return default_extractor().nouns(caption)


def caption_categories(caption: str) -> list[str]:
    """Lexicon categories a caption mentions, one entry per mention ("three planes and a jet" ->
    ["airplane", "airplane"])."""
    return list(default_extractor().categories(caption))


def count_categories(captions: Sequence[str]) -> collections.Counter:
    """Category -> number of the captions that name it (at most one per caption)."""
    return default_extractor().count(captions)


# ---------------------------------------------------------------------------------------------------
# Per-image priors
# ---------------------------------------------------------------------------------------------------

_PRIORS_FORMAT = "osdpm-priors-v1"
TARGETS = ("full", "high")   # Priors.target


@dataclasses.dataclass
class Priors:
    """Category priors of a set of images.

    ``counts[i, k]``: captions of image ``i`` naming category ``k``; ``probs``: counts normalised per
    image (a zero row when the image names no category); ``high``: the high-probability set, categories
    named in at least ``threshold`` of the image's ``n_captions[i]`` captions.
    """

    filenames: list[str]
    categories: tuple[str, ...]
    counts: np.ndarray
    probs: np.ndarray
    high: np.ndarray
    n_captions: np.ndarray
    threshold: float

    def __len__(self) -> int:
        return len(self.filenames)

    @classmethod
    def from_counts(cls, filenames: Sequence[str], categories: Sequence[str], counts: np.ndarray,
                    n_captions: np.ndarray, threshold: float) -> "Priors":
        counts = np.asarray(counts, dtype=np.int64).reshape(len(filenames), len(categories))
        n_captions = np.asarray(n_captions, dtype=np.int64).reshape(len(filenames))
        totals = counts.sum(axis=1, keepdims=True)
        probs = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
        frac = np.divide(counts, n_captions[:, None], out=np.zeros(counts.shape, dtype=np.float64),
                         where=n_captions[:, None] > 0)
        high = (counts > 0) & (frac >= threshold - 1e-9)
        return cls(list(filenames), tuple(categories), counts, probs.astype(np.float32), high,
                   n_captions, float(threshold))

    def index(self, filename: str) -> int:
        return self.filenames.index(filename)

    def target(self, kind: str = "high") -> np.ndarray:
        """OSFCM's training target per image (``TARGETS``): ``"full"`` every named category with its caption
        frequency (``probs``); ``"high"`` only the high-probability set (categories named in at least ``threshold``
        of the image's captions), renormalised to sum to 1.  Images without a category (or without a high one) get a
        zero row and no OSFCM loss."""
        if kind == "full":
            return self.probs
        if kind != "high":
            raise ValueError(f"unknown prior target {kind!r}; choose one of {TARGETS}")
        kept = np.where(self.high, self.probs.astype(np.float64), 0.0)
        total = kept.sum(axis=1, keepdims=True)
        return np.divide(kept, total, out=np.zeros_like(kept), where=total > 0).astype(np.float32)

    def to_frame(self, wide: bool = False, value: str = "prob") -> pd.DataFrame:
        """Long table (filename, category, count, prob, high; one row per image and category) or, with
        ``wide=True``, filenames x categories of ``value`` ("prob", "count" or "high")."""
        if wide:
            data = {"prob": self.probs, "count": self.counts, "high": self.high}[value]
            return pd.DataFrame(data, index=pd.Index(self.filenames, name="filename"),
                                columns=pd.Index(self.categories, name="category"))
        n, k = self.counts.shape
        return pd.DataFrame({
            "filename": np.repeat(np.asarray(self.filenames, dtype=object), k),
            "category": np.tile(np.asarray(self.categories, dtype=object), n),
            "count": self.counts.reshape(-1),
            "prob": self.probs.reshape(-1),
            "high": self.high.reshape(-1),
        })

    def peakedness(self) -> pd.DataFrame:
        """Per image: n_captions, n_named, n_high, top_category, max_prob, entropy (bits) and
        norm_entropy (entropy / log2 K); missing (NaN) for images naming no category."""
        p = self.probs.astype(np.float64)
        named = self.counts > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
        any_named = named.any(axis=1)
        ent = np.where(any_named, ent + 0.0, np.nan)  # + 0.0 turns -0.0 into 0.0
        k = len(self.categories)
        top = np.where(any_named, np.asarray(self.categories, dtype=object)[p.argmax(axis=1)], None)
        return pd.DataFrame({
            "n_captions": self.n_captions,
            "n_named": named.sum(axis=1),
            "n_high": self.high.sum(axis=1),
            "top_category": top,
            "max_prob": np.where(any_named, p.max(axis=1), np.nan),
            "entropy": ent,
            "norm_entropy": ent / math.log2(k) if k > 1 else np.zeros(len(ent)),
        }, index=pd.Index(self.filenames, name="filename"))

    # -- persistence -------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return {"filenames": np.asarray(self.filenames, dtype=str),
                "categories": np.asarray(self.categories, dtype=str),
                "counts": self.counts.astype(np.int64), "n_captions": self.n_captions.astype(np.int64),
                "threshold": np.asarray(self.threshold, dtype=np.float64),
                "format": np.asarray(_PRIORS_FORMAT)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.json`` (readable) or ``.npz``; byte-identical for equal priors.  Probabilities and
        the high set are recomputed from counts on load."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            doc = {"format": _PRIORS_FORMAT, "threshold": self.threshold, "categories": list(self.categories),
                   "images": [{"filename": f, "n_captions": int(n), "counts": [int(c) for c in row]}
                              for f, n, row in zip(self.filenames, self.n_captions, self.counts)]}
            text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
        elif path.suffix == ".npz":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, arr in self._arrays().items():  # fixed timestamps -> deterministic bytes
                    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    arr_buf = io.BytesIO()
                    np.lib.format.write_array(arr_buf, np.asarray(arr, order="C"), allow_pickle=False)
                    zf.writestr(info, arr_buf.getvalue())
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(buf.getvalue())
        else:
            raise ValueError(f"{path}: priors are saved as .json or .npz")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Priors":
        path = Path(path)
        if path.suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != _PRIORS_FORMAT:
                raise ValueError(f"{path}: not a priors file (format {doc.get('format')!r})")
            images = doc["images"]
            k = len(doc["categories"])
            counts = np.asarray([im["counts"] for im in images], dtype=np.int64).reshape(len(images), k)
            return cls.from_counts([im["filename"] for im in images], doc["categories"], counts,
                                   np.asarray([im["n_captions"] for im in images], dtype=np.int64),
                                   doc["threshold"])
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != _PRIORS_FORMAT:
                raise ValueError(f"{path}: not a priors file")
            return cls.from_counts([str(f) for f in z["filenames"]], tuple(str(c) for c in z["categories"]),
                                   z["counts"], z["n_captions"], float(z["threshold"]))


def image_priors(records: Iterable[Any], categories: Sequence[str] = lexicon.CATEGORY_NAMES,
                 threshold: float = 0.4, extractor: CaptionNounExtractor | None = None) -> Priors:
    """Priors of images given as objects with ``.filename`` and ``.captions`` (e.g. ``data.ImageRecord``).

    ``categories`` picks and orders the columns (lexicon categories; mentions of others are ignored).
    """
    categories = tuple(categories)
    unknown = [c for c in categories if c not in lexicon.CATEGORIES]
    if unknown:
        raise ValueError(f"categories not in the lexicon: {unknown}")
    if len(set(categories)) != len(categories):
        raise ValueError("categories repeat")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    ex = extractor or default_extractor()
    col = {c: j for j, c in enumerate(categories)}
    records = list(records)
    counts = np.zeros((len(records), len(categories)), dtype=np.int64)
    n_caps = np.zeros(len(records), dtype=np.int64)
    for i, rec in enumerate(records):
        caps = [rec.captions] if isinstance(rec.captions, str) else list(rec.captions)
        n_caps[i] = len(caps)
        for cat, n in ex.count(caps).items():
            j = col.get(cat)
            if j is not None:
                counts[i, j] = n
    return Priors.from_counts([str(r.filename) for r in records], categories, counts, n_caps, threshold)


def cached_image_priors(records, cache_dir: str | os.PathLike, threshold: float = 0.4) -> "Priors":
    """Training priors, computed once per (captions, lexicon, threshold) and kept under ``cache_dir``
    (loading WordNet costs NLTK 10-20 s per process; the priors themselves take about a second)."""
    blob = json.dumps([threshold, lexicon.CATEGORIES, [(r.filename, list(r.captions)) for r in records]])
    cache_dir = Path(cache_dir)
    path = cache_dir / f"priors_{hashlib.sha1(blob.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        return Priors.load(path)
    pri = image_priors(records, threshold=threshold)
    cache_dir.mkdir(parents=True, exist_ok=True)
    pri.save(path)
    return pri


def _named_mask(priors: Priors, by: str) -> np.ndarray:
    """``[n_images, K]``: whether an image names a category (``by="named"``: any caption does;
    ``by="high"``: the category is in its high-probability set)."""
    if by not in ("named", "high"):
        raise ValueError(f"by must be 'named' or 'high', got {by!r}")
    return priors.counts > 0 if by == "named" else priors.high


def _scene_masks(scenes: Sequence[str | None]) -> list[tuple[str, np.ndarray]]:
    """(scene, boolean mask of its images) per scene, sorted by name; images whose scene is None are left out."""
    arr = np.asarray([s if s is not None else "" for s in scenes], dtype=object)
    return [(scene, arr == scene) for scene in sorted({s for s in scenes if s is not None})]


def scene_coverage(priors: Priors, scenes: Sequence[str | None], by: str = "named") -> pd.DataFrame:
    """Per scene, how many of its images have a prior at all.

    ``coverage`` is the fraction of the scene's images that name at least one category (``by="named"``)
    or have a non-empty high-probability set (``by="high"``); an image without one gets no OSFCM target.
    ``mean_categories`` is the mean number of such categories per image (how specific the priors stay);
    ``top_category`` and ``top_share`` are rank 1 of :func:`top_categories_by_scene`.  Images whose scene
    is None are left out.  Columns: scene, n_images, n_covered, coverage, mean_categories, top_category,
    top_share; sorted by scene.
    """
    if len(scenes) != len(priors):
        raise ValueError(f"{len(scenes)} scenes for {len(priors)} images")
    per_image = _named_mask(priors, by).sum(axis=1)
    top = top_categories_by_scene(priors, scenes, k=1, by=by).set_index("scene")
    rows = [{"scene": scene, "n_images": int(sel.sum()), "n_covered": int((per_image[sel] > 0).sum()),
             "coverage": float((per_image[sel] > 0).mean()), "mean_categories": float(per_image[sel].mean()),
             "top_category": top.loc[scene, "category"], "top_share": float(top.loc[scene, "share"])}
            for scene, sel in _scene_masks(scenes)]
    return pd.DataFrame(rows, columns=["scene", "n_images", "n_covered", "coverage", "mean_categories",
                                       "top_category", "top_share"])


def top_categories_by_scene(priors: Priors, scenes: Sequence[str | None], k: int = 5,
                            by: str = "named") -> pd.DataFrame:
    """Per scene, the ``k`` categories named by the largest share of its images.

    ``by="named"``: an image names a category when any caption does; ``by="high"``: when it is in the
    image's high-probability set.  Images whose scene is None are left out.  Columns: scene, rank,
    category, share, n_images; sorted by scene, then share (descending), then lexicon order.
    """
    if len(scenes) != len(priors):
        raise ValueError(f"{len(scenes)} scenes for {len(priors)} images")
    mask = _named_mask(priors, by)
    rows = []
    for scene, sel in _scene_masks(scenes):
        share = mask[sel].mean(axis=0)
        order = sorted(range(len(priors.categories)), key=lambda j: (-share[j], j))[:k]
        for rank, j in enumerate(order, start=1):
            rows.append({"scene": scene, "rank": rank, "category": priors.categories[j],
                         "share": float(share[j]), "n_images": int(sel.sum())})
    return pd.DataFrame(rows, columns=["scene", "rank", "category", "share", "n_images"])


if __name__ == "__main__":  # python -m osdpm_lib.priors provision-wordnet | check-wordnet (osdpm_lib.wordnet)
    raise SystemExit(main())
