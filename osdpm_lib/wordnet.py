"""WordNet for NLTK, offline: provisioning and the smoke check.

WordNet comes from the NLTK data tree ``<sys.prefix>/nltk_data/corpora/wordnet``; NLTK's downloader
cannot reach its server offline, so ``python -m osdpm_lib.priors provision-wordnet`` (the same as
``python -m osdpm_lib.wordnet provision-wordnet``) builds the tree from the Debian packages
(``apt-get install -y wordnet-base wordnet-sense-index`` puts the WordNet 3.0 database in
``/usr/share/wordnet``) and falls back to ``nltk.download('wordnet')`` where the internet is reachable.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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


def load_reader():
    """A fresh NLTK WordNet reader of the provisioned ``corpora/wordnet`` (raises :class:`WordNetMissingError`).

    It is NLTK's ``WordNetCorpusReader`` without the mapping from WordNet 3.0 that NLTK (3.9 and later) builds at
    every load for Open Multilingual WordNet: it reads ``index.sense`` twice, about 3 of the load's 5 seconds, and
    serves only the multilingual functions, which the priors do not use.  Lookups (``_morphy``, ``synsets``) are
    NLTK's own."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None

    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError as exc:
        raise WordNetMissingError(PROVISION_HINT) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # "The multilingual functions are not available with this Wordnet version"
        return _Reader(root, None)


_READER: Any = None


def reader():
    """:func:`load_reader`, loaded once per process (the priors' lookups)."""
    global _READER
    if _READER is None:
        _READER = load_reader()
    return _READER


def lemmatize_noun(token: str, wn=None) -> str:
    """NLTK's ``WordNetLemmatizer().lemmatize(token, "n")`` on ``wn`` (default :func:`reader`): the shortest of
    WordNet's noun lemmas of ``token``, or ``token`` itself."""
    lemmas = (wn or reader())._morphy(token, "n")
    return min(lemmas, key=len) if lemmas else token


def check_wordnet() -> dict[str, Any]:
    """Load WordNet through NLTK (a fresh :func:`load_reader`) and run the smoke checks; raises
    :class:`WordNetMissingError`."""
    wordnet = load_reader()
    path = wordnet.root
    synsets = wordnet.synsets("airplane")
    lemma = lemmatize_noun("planes", wordnet)
    if (not synsets or lemma != "plane" or synsets[0].lexname() != "noun.artifact"
            or wordnet.synset("entity.n.01").lexname() != "noun.Tops"):
        raise WordNetMissingError(f"WordNet at {path} looks broken (synsets('airplane')={synsets}, "
                                  f"lemmatize('planes')={lemma!r}).\n" + PROVISION_HINT)
    return {"path": str(path), "airplane": synsets[0].name(), "lexname": synsets[0].lexname(),
            "planes": lemma, "version": wordnet.get_version()}


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osdpm_lib.priors", description="WordNet for NLTK: provision it offline or check it")
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
