"""Captions of the embedded benchmark (:class:`_Captioner`, RSICD's register, read from what was drawn) and of
the pretraining corpus (:class:`_AltText`, web alt-text)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from osdpm_lib.data import tokenize

from .render import _Canvas, _choice, _Obj, _wchoice
from .scenes import (BENCHMARK_CATEGORIES, BENCHMARK_VERBS, CAPTION_TERMS, LINEAR, MASS_TERMS, NO_PLURAL, NUMBERS,
                     SELF_CATS, SIZE_ADJ, VAGUE_PLURAL_TERMS, VERBS, SceneSpec)

CAPTIONS_PER_IMAGE = 5
ALT_NOISE = 0.1  # alt-texts naming a wrong object or leaving the main one out


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
    """The drawn objects per category, as the captions describe them (distractors are left out)."""
    by: dict[str, list[_Obj]] = {}
    for o in cv.objects:
        if not o.distractor:
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
        for cat in BENCHMARK_CATEGORIES:
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
            picked[int(rng.integers(len(picked)))] = _choice(rng, [c for c in BENCHMARK_CATEGORIES if c not in g])
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
