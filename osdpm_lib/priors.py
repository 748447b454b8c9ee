"""Caption-noun category priors (the OSFCM prior of OSDPM) and offline WordNet provisioning.

For every training image the object categories named in its captions are counted: each caption is
tokenised (``nltk.tokenize.wordpunct_tokenize``, which needs no downloaded model), every token is
lemmatised as a noun with NLTK's ``WordNetLemmatizer``, multi-word lexicon terms ("baseball field",
"parking lot", "storage tank") are matched first (longest match, their words are then not counted
again), and the remaining tokens that WordNet knows as nouns are mapped onto the categories of
:mod:`osdpm_lib.lexicon` (plurals via the lemmatiser, synonyms via the lexicon terms).

An image's count for a category is the number of its captions that name the category (at most one
per caption), so with RSICD's five captions per image the count measures how consistently the
annotators named it.  ``probs`` normalises the counts per image; the *high-probability set* ``high``
holds the categories named in at least ``threshold`` of the image's captions.

WordNet comes from the NLTK data tree ``<sys.prefix>/nltk_data/corpora/wordnet``; NLTK's downloader
cannot reach its server offline, so ``python -m osdpm_lib.priors provision-wordnet`` builds the tree
from the Debian packages (``apt-get install -y wordnet-base wordnet-sense-index`` puts the WordNet 3.0
database in ``/usr/share/wordnet``) and falls back to ``nltk.download('wordnet')`` where the internet
is reachable.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import filecmp
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osdpm_lib import lexicon

# ---------------------------------------------------------------------------------------------------
# WordNet provisioning
# ---------------------------------------------------------------------------------------------------

#: Where the Debian packages ``wordnet-base`` and ``wordnet-sense-index`` install the WordNet 3.0 files.
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

#: The apt packages that provide WordNet (``wordnet-sense-index`` ships ``index.sense``).
APT_PACKAGES = ("wordnet-base", "wordnet-sense-index")

#: Files NLTK's WordNetCorpusReader reads (``lexnames`` is generated, Debian does not ship it).
WORDNET_FILES = (
    "data.noun", "data.verb", "data.adj", "data.adv",
    "index.noun", "index.verb", "index.adj", "index.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
    "index.sense", "cntlist.rev",
)
#: Of those, the ones without which the reader cannot start (NLTK >= 3.9 reads index.sense on load).
_REQUIRED_FILES = WORDNET_FILES[:13]

#: The 45 WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic category.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)

PROVISION_HINT = (
    "WordNet for NLTK is not provisioned. Install the Debian WordNet 3.0 database and copy it into the "
    "venv's NLTK data tree:\n"
    "    apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES) + "\n"
    "    python -m osdpm_lib.priors provision-wordnet\n"
    "(without root: `apt-get download " + " ".join(APT_PACKAGES) + "`, `dpkg -x <each .deb> /tmp/wn`, then "
    "`python -m osdpm_lib.priors provision-wordnet --source /tmp/wn/usr/share/wordnet`)."
)


class WordNetMissingError(LookupError):
    """WordNet is not available to NLTK; the message says how to provision it."""


def default_nltk_data_dir() -> Path:
    """``<sys.prefix>/nltk_data``: inside the active venv, on NLTK's default search path."""
    return Path(sys.prefix) / "nltk_data"


def lexnames_text() -> str:
    """The ``lexnames`` file NLTK expects ("00\\tadj.all\\t3" ... "44\\tadj.ppl\\t3")."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def _is_complete(wn_dir: Path) -> bool:
    return (wn_dir / "lexnames").is_file() and all((wn_dir / f).is_file() for f in _REQUIRED_FILES)


def _copy_wordnet(source: Path, wn_dir: Path) -> list[str]:
    """Copy the WordNet files from ``source`` into ``wn_dir``; return the names written (idempotent)."""
    missing = [f for f in _REQUIRED_FILES if not (source / f).is_file()]
    if missing:
        hint = " (index.sense comes with wordnet-sense-index)" if missing == ["index.sense"] else ""
        raise WordNetMissingError(f"{source} is not a complete WordNet 3.0 database (missing "
                                  f"{', '.join(missing)}{hint}).\n" + PROVISION_HINT)
    wn_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for name in WORDNET_FILES:
        src, dst = source / name, wn_dir / name
        if not src.is_file():  # cntlist.rev (sense counts) is optional for the reader
            continue
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        written.append(name)
    lexnames = lexnames_text()
    if (source / "lexnames").is_file():  # an NLTK tree or an upstream WordNet dict/ ships its own
        lexnames = (source / "lexnames").read_text(encoding="utf-8")
    dst = wn_dir / "lexnames"
    if not dst.is_file() or dst.read_text(encoding="utf-8") != lexnames:
        dst.write_text(lexnames, encoding="utf-8")
        written.append("lexnames")
    license_src = next((p for p in (source / "LICENSE", Path("/usr/share/doc/wordnet-base/copyright"))
                        if p.is_file()), None)
    if license_src is not None and not (wn_dir / "LICENSE").is_file():
        shutil.copyfile(license_src, wn_dir / "LICENSE")
        written.append("LICENSE")
    return written


def _try_download(dest: Path, timeout: float = 30.0) -> bool:
    """``nltk.download('wordnet')`` into ``dest``; False when the NLTK server cannot be reached."""
    import nltk

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return bool(nltk.download("wordnet", download_dir=str(dest), quiet=True, raise_on_error=False))
    except Exception:  # noqa: BLE001 - any network / unzip failure means "not available this way"
        return False
    finally:
        socket.setdefaulttimeout(old)


def provision_wordnet(dest: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                      download: bool = True, log=print) -> Path:
    """Make WordNet available to NLTK under ``dest`` (default ``<sys.prefix>/nltk_data``); idempotent.

    Sources, in order: ``source`` if given (a WordNet ``dict`` folder, e.g. a ``dpkg -x`` of the Debian
    packages), else ``/usr/share/wordnet`` (``apt-get install wordnet-base wordnet-sense-index``), else
    ``nltk.download('wordnet')``.  Returns the ``corpora/wordnet`` folder (or zip) written.  Raises
    :class:`WordNetMissingError` naming the apt packages when no source works.
    """
    dest = Path(dest) if dest is not None else default_nltk_data_dir()
    wn_dir = dest / "corpora" / "wordnet"
    debian = DEBIAN_WORDNET_DIR if DEBIAN_WORDNET_DIR.is_dir() else None
    src = Path(source) if source is not None else debian
    if source is not None and not src.is_dir():
        raise WordNetMissingError(f"--source {src} is not a folder.\n" + PROVISION_HINT)
    if src is not None:
        written = _copy_wordnet(src, wn_dir)
        done = f"wrote {', '.join(written)}" if written else "up to date"
        log(f"WordNet from {src} -> {wn_dir}: {done}")
    elif _is_complete(wn_dir) or (dest / "corpora" / "wordnet.zip").is_file():
        log(f"WordNet already provisioned in {dest / 'corpora'}")
    elif download and _try_download(dest):
        log(f"WordNet downloaded with nltk.download into {dest}")
    else:
        raise WordNetMissingError(
            f"No WordNet source: {DEBIAN_WORDNET_DIR} is absent and nltk.download('wordnet') failed "
            f"(no internet?).\n" + PROVISION_HINT)
    if not _is_complete(wn_dir) and (dest / "corpora" / "wordnet.zip").is_file():
        return dest / "corpora" / "wordnet.zip"
    return wn_dir


def check_wordnet() -> dict[str, Any]:
    """Load WordNet through NLTK and run the smoke checks; raises :class:`WordNetMissingError`."""
    import nltk
    from nltk.corpus import wordnet
    from nltk.stem import WordNetLemmatizer

    try:
        path = nltk.data.find("corpora/wordnet")
        synsets = wordnet.synsets("airplane")
    except LookupError as exc:
        raise WordNetMissingError(PROVISION_HINT) from exc
    lemma = WordNetLemmatizer().lemmatize("planes")
    if (not synsets or lemma != "plane" or synsets[0].lexname() != "noun.artifact"
            or wordnet.synset("entity.n.01").lexname() != "noun.Tops"):
        raise WordNetMissingError(f"WordNet at {path} looks broken (synsets('airplane')={synsets}, "
                                  f"lemmatize('planes')={lemma!r}).\n" + PROVISION_HINT)
    return {"path": str(path), "airplane": synsets[0].name(), "lexname": synsets[0].lexname(),
            "planes": lemma, "version": wordnet.get_version()}


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
        self._wn = None
        self._lemmatizer = None

    # -- WordNet access ----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._wn is not None:
            return
        import nltk
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer

        try:
            nltk.data.find("corpora/wordnet")
            wordnet.ensure_loaded()
        except LookupError as exc:
            raise WordNetMissingError(PROVISION_HINT) from exc
        self._wn, self._lemmatizer = wordnet, WordNetLemmatizer()

    def lemma(self, token: str) -> str:
        """The noun lemma of a lower-case token ("planes" -> "plane"), cached."""
        out = self._lemma.get(token)
        if out is None:
            self._load()
            out = self._lemma[token] = self._lemmatizer.lemmatize(token, pos="n")
        return out

    def is_noun(self, lemma: str) -> bool:
        """Whether WordNet knows ``lemma`` as a noun, cached."""
        out = self._noun.get(lemma)
        if out is None:
            self._load()
            out = self._noun[lemma] = bool(self._wn.synsets(lemma, pos="n"))
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
                    elif tok in self.terms:  # a lexicon term WordNet lacks as a noun: trust the lexicon
                        out.append((tok, self.terms[tok]))
                i += 1
        return out

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


def top_categories_by_scene(priors: Priors, scenes: Sequence[str | None], k: int = 5,
                            by: str = "named") -> pd.DataFrame:
    """Per scene, the ``k`` categories named by the largest share of its images.

    ``by="named"``: an image names a category when any caption does; ``by="high"``: when it is in the
    image's high-probability set.  Images whose scene is None are left out.  Columns: scene, rank,
    category, share, n_images; sorted by scene, then share (descending), then lexicon order.
    """
    if len(scenes) != len(priors):
        raise ValueError(f"{len(scenes)} scenes for {len(priors)} images")
    mask = {"named": priors.counts > 0, "high": priors.high}[by]
    scenes_arr = np.asarray([s if s is not None else "" for s in scenes], dtype=object)
    rows = []
    for scene in sorted({s for s in scenes if s is not None}):
        sel = scenes_arr == scene
        share = mask[sel].mean(axis=0)
        order = sorted(range(len(priors.categories)), key=lambda j: (-share[j], j))[:k]
        for rank, j in enumerate(order, start=1):
            rows.append({"scene": scene, "rank": rank, "category": priors.categories[j],
                         "share": float(share[j]), "n_images": int(sel.sum())})
    return pd.DataFrame(rows, columns=["scene", "rank", "category", "share", "n_images"])


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osdpm_lib.priors", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision-wordnet", help="copy WordNet into an NLTK data tree (idempotent)")
    p.add_argument("--dest", default=None, help=f"NLTK data folder (default {default_nltk_data_dir()})")
    p.add_argument("--source", default=None,
                   help=f"WordNet dict folder to copy (default {DEBIAN_WORDNET_DIR} when present)")
    p.add_argument("--no-download", action="store_true", help="never try nltk.download")
    c = sub.add_parser("check-wordnet", help="verify that NLTK loads WordNet")
    c.set_defaults(dest=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "provision-wordnet":
            provision_wordnet(args.dest, args.source, download=not args.no_download)
            if args.dest is not None:
                import nltk

                nltk.data.path.insert(0, str(Path(args.dest)))
        info = check_wordnet()
    except WordNetMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"WordNet {info['version']} OK at {info['path']}: synsets('airplane')[0]={info['airplane']} "
          f"({info['lexname']}), lemmatize('planes')={info['planes']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
