"""Tests for osdpm_lib.priors and osdpm_lib.wordnet: WordNet provisioning, caption-noun extraction, per-image priors.

WordNet is provisioned by the setup (`apt-get install -y wordnet-base wordnet-sense-index` then
`python -m osdpm_lib.priors provision-wordnet`); tests that need it fail with that hint when it is missing.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osdpm_lib import lexicon, priors
from osdpm_lib import wordnet as wn

REPO = Path(__file__).resolve().parents[1]
RSICD = Path(__file__).resolve().parents[2] / "shared/data/rsicd"


@dataclass
class Rec:
    filename: str
    captions: tuple[str, ...]


@pytest.fixture(scope="module")
def wordnet():
    try:
        return priors.check_wordnet()
    except priors.WordNetMissingError as exc:  # the setup provisions WordNet: fail loudly, do not skip
        pytest.fail(str(exc), pytrace=False)


# ------------------------------------------------------------------------------------------ WordNet
def test_wordnet_is_provisioned(wordnet):
    from nltk.corpus import wordnet as wn
    from nltk.stem import WordNetLemmatizer

    assert wn.synsets("airplane")[0].name() == "airplane.n.01"
    assert WordNetLemmatizer().lemmatize("planes") == "plane"
    # lexnames is generated; a misnumbered file would give airplane another lexicographer file
    assert wn.synsets("airplane")[0].lexname() == "noun.artifact"
    assert wn.synsets("dog", pos="n")[0].lexname() == "noun.animal"
    assert wordnet["version"] == "3.0"


def test_books_reader_lemmatises_and_finds_nouns_as_nltks_standard_loader(wordnet):
    """osdpm_lib.wordnet.reader skips only NLTK's WordNet-3.0 mapping for multilingual data (about 3 s a load):
    its lemmas and noun tests are those of NLTK's ``WordNetLemmatizer`` and ``wordnet.synsets``."""
    from nltk.corpus import wordnet as nltk_wn
    from nltk.stem import WordNetLemmatizer

    words = ["planes", "churches", "aardwolves", "us", "abaci", "hardrock", "buildings", "trees", "glasses",
             "ponds", "boats", "cars", "is", "was", "has", "runways", "viaducts", "fields", "geese", "mice",
             "stadia", "storage", "baseball", "bareland", "xqzzy"]
    book = wn.reader()
    assert book.map30 is None                       # the skipped mapping
    for w in words:
        lemma = wn.lemmatize_noun(w)
        assert lemma == WordNetLemmatizer().lemmatize(w, "n"), w
        assert [s.name() for s in book.synsets(lemma, pos="n")] == [s.name() for s in nltk_wn.synsets(lemma, pos="n")]


def test_lexnames_text_matches_wordnet_format():
    lines = wn.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[44] == "44\tadj.ppl\t3"
    assert lines[3] == "03\tnoun.Tops\t1" and lines[29] == "29\tverb.body\t2"
    for i, line in enumerate(lines):
        num, name, cat = line.split("\t")
        assert int(num) == i and name.split(".")[0] in {"adj", "adv", "noun", "verb"}
        assert int(cat) == {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]


def _wordnet_source() -> Path:
    if wn.DEBIAN_WORDNET_DIR.is_dir():
        return wn.DEBIAN_WORDNET_DIR
    import nltk

    try:
        found = Path(str(nltk.data.find("corpora/wordnet")))
    except LookupError:
        pytest.fail(wn.PROVISION_HINT, pytrace=False)
    if not found.is_dir():
        pytest.skip(f"WordNet is a zip ({found}), {wn.DEBIAN_WORDNET_DIR} is absent: no folder to copy")
    return found


def test_provision_cli_builds_a_loadable_tree_and_is_idempotent(tmp_path, wordnet):
    src, dest = _wordnet_source(), tmp_path / "nltk_data"  # NLTK_DATA: search dest first
    env = {**os.environ, "NLTK_DATA": str(dest)}
    cmd = [sys.executable, "-m", "osdpm_lib.priors", "provision-wordnet", "--dest", str(dest),
           "--source", str(src), "--no-download"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    wn_dir = dest / "corpora" / "wordnet"
    assert f"OK at {wn_dir}" in res.stdout  # NLTK loaded the new tree, not another one
    assert (wn_dir / "lexnames").read_text() == wn.lexnames_text() or (src / "lexnames").is_file()
    for name in ("data.noun", "index.noun", "noun.exc", "index.sense", "lexnames"):
        assert (wn_dir / name).is_file(), name
    mtimes = {p.name: p.stat().st_mtime_ns for p in wn_dir.iterdir()}
    logs: list[str] = []
    assert wn.provision_wordnet(dest, src, download=False, log=logs.append) == wn_dir
    assert logs and logs[0].endswith("up to date")
    assert {p.name: p.stat().st_mtime_ns for p in wn_dir.iterdir()} == mtimes


def test_provision_without_any_source_names_the_apt_packages(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wn, "DEBIAN_WORDNET_DIR", tmp_path / "absent")
    monkeypatch.setattr(wn, "_try_download", lambda dest, timeout=30.0: False)
    with pytest.raises(priors.WordNetMissingError) as err:
        wn.provision_wordnet(tmp_path / "nltk_data", log=lambda m: None)
    assert "apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index" in str(err.value)
    assert "provision-wordnet" in str(err.value)
    assert not (tmp_path / "nltk_data").exists()
    assert priors.main(["provision-wordnet", "--dest", str(tmp_path / "nltk_data")]) == 1
    assert "wordnet-base wordnet-sense-index" in capsys.readouterr().err


def test_provision_keeps_an_existing_tree_without_downloading(tmp_path, monkeypatch):
    wn_dir = tmp_path / "nltk_data" / "corpora" / "wordnet"
    wn_dir.mkdir(parents=True)
    for name in (*wn.WORDNET_FILES, "lexnames"):
        (wn_dir / name).write_text("x")
    monkeypatch.setattr(wn, "DEBIAN_WORDNET_DIR", tmp_path / "absent")
    monkeypatch.setattr(wn, "_try_download", lambda dest, timeout=30.0: pytest.fail("downloaded"))
    logs: list[str] = []
    assert wn.provision_wordnet(tmp_path / "nltk_data", log=logs.append) == wn_dir
    assert "already provisioned" in logs[0]


def test_provision_rejects_a_folder_that_is_not_wordnet(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "data.noun").write_text("x")
    with pytest.raises(priors.WordNetMissingError, match="index.noun"):
        wn.provision_wordnet(tmp_path / "dest", tmp_path / "src", download=False, log=lambda m: None)
    assert not (tmp_path / "dest").exists()


# -------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("caption, expected", [
    ("three planes are parked in the airport .", ["airplane"]),
    ("an aircraft is parked next to a building", ["airplane", "building"]),
    ("many storage tanks are in a factory area", ["storage tank", "building"]),
    ("white storage tanks .", ["storage tank"]),
    ("a baseball field is near some trees", ["baseball field", "tree"]),
    ("parking lot with many cars", ["parking lot", "car"]),
    ("two baseball fields and a football field", ["baseball field", "playground"]),
    ("three basketball fields are beside the road", ["playground", "road"]),  # not farmland
    ("many green plants are around the pond", ["tree", "pond"]),  # RSICD plants = vegetation
    ("a plane, two jets and airplanes", ["airplane", "airplane", "airplane"]),
    ("the railway tracks pass a train station", ["railway", "railway"]),
    ("a diamond-shaped building", ["building"]),  # hyphenated modifiers are not nouns
    ("some cropland", ["farmland"]),  # a lexicon term WordNet 3.0 lacks as a noun still counts
    ("it is a piece of khaki land .", []),  # "land" alone names no category
    ("", []),
    # the categories of RSICD's desert, mountain and bareland scenes and its swimming pools
    ("it is a piece of bare land .", ["bare land"]),
    ("some barelands and a wasteland", ["bare land", "bare land"]),  # "barelands": a plural WordNet lacks
    ("a piece of yellow desert with sand dunes", ["desert", "desert"]),
    ("green mountains and a hill", ["mountain", "mountain"]),
    ("a swimming pool is beside the houses", ["swimming pool", "house"]),
    # material and water words of no one kind name no category
    ("white sand on the beach", ["beach"]),
    ("some ripples are in a piece of yellow sands .", []),
    ("the water of the lake is green", ["pond"]),
    ("a pool near a house", ["house"]),
])
def test_caption_categories(wordnet, caption, expected):
    assert priors.caption_categories(caption) == expected


def test_multiword_terms_are_not_counted_again(wordnet):
    # "storage tanks" is one storage-tank mention, "parking lot" does not add a bare "parking" mention
    assert priors.caption_nouns("many storage tanks") == ["storage tank"]
    assert priors.caption_categories("a parking lot and a car park") == ["parking lot", "parking lot"]
    assert priors.caption_nouns("a baseball field") == ["baseball field"]


def test_caption_nouns_keep_wordnet_nouns_only(wordnet):
    nouns = priors.caption_nouns("Many planes are parked near the long terminal building .")
    assert nouns == ["plane", "terminal", "building"]  # "parked", "long", "are", "the" are not nouns


@pytest.mark.parametrize("category, term", [(c, t) for c, ts in lexicon.CATEGORIES.items() for t in ts])
def test_every_lexicon_term_maps_to_its_category(wordnet, category, term):
    assert priors.caption_categories(f"there is a {term} here .") == [category]


def test_count_categories_counts_each_category_once_per_caption(wordnet):
    counts = priors.count_categories(["two planes and a jet near a runway", "a plane", "an airport"])
    assert counts == collections.Counter({"airplane": 2, "runway": 1})


# ----------------------------------------------------------------------------------------- priors
FIVE = ("many planes are parked near a runway", "some planes are parked", "a building .",
        "an airport with a building and cars", "it is an airport .")


def _toy() -> priors.Priors:
    return priors.image_priors([
        Rec("airport_1.jpg", FIVE),
        Rec("port_1.jpg", ("boats in a harbor", "many boats", "boats", "a ship", "some boats and a pier")),
        Rec("00017.jpg", ("a piece of land", "khaki land", "land", "it is bare", "nothing")),
        Rec("parking_1.jpg", ("cars in a parking lot",)),
    ])


def test_image_priors_counts_probs_and_high_set(wordnet):
    p = _toy()
    k = {c: j for j, c in enumerate(p.categories)}
    assert p.categories == lexicon.CATEGORY_NAMES and p.filenames[2] == "00017.jpg"
    assert p.counts.shape == (4, len(lexicon.CATEGORY_NAMES)) and p.counts.dtype.kind == "i"
    row = p.counts[0]
    assert (row[k["airplane"]], row[k["runway"]], row[k["building"]], row[k["car"]]) == (2, 1, 2, 1)
    assert row.sum() == 6
    assert p.probs.dtype == np.float32
    np.testing.assert_allclose(p.probs.sum(axis=1), [1, 1, 0, 1], atol=1e-6)
    assert p.probs[0, k["airplane"]] == pytest.approx(2 / 6)
    assert not p.probs[2].any() and not p.high[2].any()
    # high set: named in >= 40% of the captions (2 of 5)
    assert set(np.asarray(p.categories)[p.high[0]]) == {"airplane", "building"}
    assert p.counts[1, k["boat"]] == 5 and p.counts[1, k["dock"]] == 2  # "harbor", "pier"
    assert set(np.asarray(p.categories)[p.high[1]]) == {"boat", "dock"}  # 2/5 = 0.4 is in the set
    assert p.high[3, k["car"]] and p.high[3, k["parking lot"]]  # 1 caption of 1
    p5 = priors.image_priors([Rec("a.jpg", FIVE)], threshold=0.5)
    assert not p5.high.any()  # 2/5 < 0.5
    assert p.n_captions.tolist() == [5, 5, 5, 1]


def test_image_priors_category_subset_and_order(wordnet):
    p = priors.image_priors([Rec("a.jpg", FIVE)], categories=("runway", "airplane"))
    assert p.categories == ("runway", "airplane") and p.counts.tolist() == [[1, 2]]
    np.testing.assert_allclose(p.probs, [[1 / 3, 2 / 3]], rtol=1e-6)
    with pytest.raises(ValueError, match="not in the lexicon"):
        priors.image_priors([Rec("a.jpg", FIVE)], categories=("airplane", "spaceship"))
    with pytest.raises(ValueError, match="threshold"):
        priors.image_priors([Rec("a.jpg", FIVE)], threshold=0)


def test_to_frame_and_peakedness(wordnet):
    p = _toy()
    long = p.to_frame()
    assert list(long.columns) == ["filename", "category", "count", "prob", "high"]
    assert len(long) == 4 * len(p.categories)
    a = long[(long.filename == "airport_1.jpg") & (long.category == "airplane")].iloc[0]
    assert (a["count"], bool(a["high"])) == (2, True)
    wide = p.to_frame(wide=True, value="count")
    assert wide.loc["airport_1.jpg", "airplane"] == 2 and wide.shape == (4, len(p.categories))
    pk = p.peakedness()
    assert list(pk.index) == p.filenames
    assert pk.loc["port_1.jpg", "top_category"] == "boat"
    assert pk.loc["airport_1.jpg", "max_prob"] == pytest.approx(2 / 6)
    expected = -sum(q * np.log2(q) for q in (2 / 6, 1 / 6, 2 / 6, 1 / 6))
    assert pk.loc["airport_1.jpg", "entropy"] == pytest.approx(expected, rel=1e-5)
    assert pk.loc["parking_1.jpg", "entropy"] == pytest.approx(1.0)
    assert np.isnan(pk.loc["00017.jpg", "entropy"]) and pd.isna(pk.loc["00017.jpg", "top_category"])
    assert pk.loc["00017.jpg", "n_named"] == 0 and pk.loc["airport_1.jpg", "n_high"] == 2


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_round_trip_is_deterministic(wordnet, tmp_path, suffix):
    p = _toy()
    a, b = p.save(tmp_path / f"a{suffix}"), p.save(tmp_path / "sub" / f"b{suffix}")
    assert a.read_bytes() == b.read_bytes()
    q = priors.Priors.load(a)
    assert q.filenames == p.filenames and q.categories == p.categories and q.threshold == p.threshold
    for name in ("counts", "probs", "high", "n_captions"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
        assert getattr(q, name).dtype == getattr(p, name).dtype
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError):
        p.save(tmp_path / "c.csv")


def test_top_categories_by_scene(wordnet):
    p = _toy()
    df = priors.top_categories_by_scene(p, ["airport", "port", None, "parking"], k=2)
    assert list(df.columns) == ["scene", "rank", "category", "share", "n_images"]
    assert df.scene.tolist() == ["airport", "airport", "parking", "parking", "port", "port"]
    assert df[df.scene == "port"].category.iloc[0] == "boat"
    assert df[df.scene == "airport"].category.tolist() == ["airplane", "runway"]  # ties: lexicon order
    assert df.share.between(0, 1).all()
    high = priors.top_categories_by_scene(p, ["airport", "port", None, "parking"], k=1, by="high")
    assert high[high.scene == "airport"].share.iloc[0] == 1.0
    with pytest.raises(ValueError):
        priors.top_categories_by_scene(p, ["airport"])


def test_scene_coverage(wordnet):
    p = _toy()  # airport_1 names 4 categories (2 in its high set), 00017 none, port_1 2, parking_1 2
    cov = priors.scene_coverage(p, ["x", "port", "x", None])
    assert list(cov.columns) == ["scene", "n_images", "n_covered", "coverage", "mean_categories", "top_category",
                                 "top_share"]
    assert cov.scene.tolist() == ["port", "x"]  # sorted, the image of scene None left out
    x = cov.set_index("scene").loc["x"]
    assert (x.n_images, x.n_covered, x.coverage, x.mean_categories) == (2, 1, 0.5, 2.0)
    assert (x.top_category, x.top_share) == ("airplane", 0.5)  # ties: lexicon order
    assert cov.set_index("scene").loc["port", "top_category"] == "boat"
    assert cov.set_index("scene").loc["port", "coverage"] == 1.0
    high = priors.scene_coverage(p, ["x", "port", "x", None], by="high").set_index("scene")
    assert high.loc["x", "mean_categories"] == 1.0
    p5 = priors.image_priors([Rec("a.jpg", FIVE)], threshold=0.5)  # names 4 categories, none in 3 of 5 captions
    assert priors.scene_coverage(p5, ["airport"]).coverage.tolist() == [1.0]
    assert priors.scene_coverage(p5, ["airport"], by="high").coverage.tolist() == [0.0]
    with pytest.raises(ValueError, match="scenes for"):
        priors.scene_coverage(p, ["x"])
    with pytest.raises(ValueError, match="by must be"):
        priors.scene_coverage(p, ["x"] * 4, by="all")


# --------------------------------------------------------------------------------- real RSICD data
@pytest.fixture(scope="module")
def rsicd(wordnet):
    if not RSICD.is_dir():
        pytest.skip(f"RSICD annotations not present at {RSICD}")
    names = (RSICD / "train_filename.txt").read_text(encoding="utf-8").split()
    caps = (RSICD / "train_caps.txt").read_text(encoding="utf-8").splitlines()
    assert len(caps) == 5 * len(names)
    records = [Rec(n, tuple(caps[5 * i:5 * i + 5])) for i, n in enumerate(names)]
    scenes = [n.rsplit("_", 1)[0] if "_" in n else None for n in names]
    return priors.image_priors(records), scenes


def test_rsicd_priors_are_sensible(rsicd):
    p, scenes = rsicd
    assert len(p) == 9828 and sum(s is None for s in scenes) == 855
    assert p.counts.max() <= 5 and (p.n_captions == 5).all()
    named = p.counts.sum(axis=1) > 0
    assert named.mean() > 0.9  # nearly every image names some lexicon object
    np.testing.assert_allclose(p.probs[named].sum(axis=1), 1, atol=1e-5)
    top = priors.top_categories_by_scene(p, scenes, k=3)
    assert top.scene.nunique() == 30

    def top3(scene):
        return top[top.scene == scene].category.tolist()

    assert "airplane" in top3("airport") and "runway" in top3("airport")
    assert top3("airport")[0] == "airplane"
    assert top3("port")[0] == "boat"
    assert {"car", "parking lot"} & set(top3("parking"))
    assert top3("storagetanks")[0] == "storage tank"
    assert top3("baseballfield")[0] == "baseball field"
    assert top3("viaduct")[0] == "viaduct" and top3("church")[0] == "church"
    # land forms name their scenes; "sand" no longer makes deserts beaches, "water" no longer makes sea
    assert top3("desert")[0] == "desert" and "beach" not in top3("desert") and "sea" not in top3("desert")
    assert top3("mountain")[0] == "mountain" and top3("bareland")[0] == "bare land"
    assert top3("beach")[0] == "beach" and top3("pond")[0] == "pond"
    assert "swimming pool" in top3("resort") + top3("sparseresidential")
    # the lexicon corrections keep RSICD's "basketball fields" and "green plants" where they belong
    share = top.set_index(["scene", "category"]).share
    assert ("playground", "farmland") not in share.index and ("river", "building") not in share.index


def test_rsicd_scene_coverage(rsicd):
    """Every scene's images get a prior (desert, mountain and bareland had 40%, 32% and 52% before the
    lexicon named their land forms), and the priors stay specific (few categories per image)."""
    p, scenes = rsicd
    cov = priors.scene_coverage(p, scenes).set_index("scene")
    assert len(cov) == 30 and cov.n_images.sum() == 9828 - 855
    assert cov.coverage.min() >= 0.98, cov.coverage.nsmallest(3)
    assert cov.loc[["desert", "mountain", "bareland"], "coverage"].min() >= 0.98
    assert cov.loc[["desert", "mountain", "bareland"], "top_category"].tolist() == ["desert", "mountain", "bare land"]
    assert cov.mean_categories.max() < 4
    named = priors.top_categories_by_scene(p, scenes, k=len(p.categories)).set_index(["scene", "category"]).share
    assert named["desert", "beach"] < 0.05 and named["desert", "sea"] < 0.05


def test_rsicd_high_set_is_peaked(rsicd):
    p, scenes = rsicd
    pk = p.peakedness()
    assert pk.n_high.median() >= 1
    airport = np.asarray([s == "airport" for s in scenes])
    j = p.categories.index("airplane")
    assert p.high[airport, j].mean() > 0.8  # airplanes are named consistently across the 5 captions
    assert isinstance(pk, pd.DataFrame) and pk.max_prob.dropna().between(0, 1).all()


def test_high_probability_target_changes_the_training_target():
    """``target("high")`` keeps only the categories named in >= threshold of the captions, renormalised."""
    from osdpm_lib.priors import Priors

    counts = np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]])      # 5 captions each
    pri = Priors.from_counts(["a", "b", "c"], ("airplane", "car", "tree"), counts, np.array([5, 5, 5]), 0.4)
    np.testing.assert_allclose(pri.target("full")[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(pri.target("high")[0], [1.0, 0.0, 0.0])     # car: 1 of 5 captions < 0.4
    np.testing.assert_array_equal(pri.target("high")[1], [0.0, 0.0, 0.0])  # nothing frequent enough: no target
    low = Priors.from_counts(["a", "b", "c"], ("airplane", "car", "tree"), counts, np.array([5, 5, 5]), 0.2)
    np.testing.assert_allclose(low.target("high")[0], [0.75, 0.25, 0.0])    # the threshold decides
    np.testing.assert_allclose(low.target("high")[1], [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="unknown prior target"):
        pri.target("top1")
