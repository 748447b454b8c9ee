import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osdpm_lib import tables
from osdpm_lib.metrics import KEYS

RECALLS = list(KEYS[:6])
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ literature file
def test_literature_row_counts_and_columns():
    lit = pd.read_csv(tables.REPORTED)
    assert list(lit.columns) == ["dataset", "table", "method", *RECALLS, "rsum", "extra_pretraining_data",
                                 "source", "citation"]
    counts = lit.groupby(["table", "dataset"]).size().to_dict()
    assert counts == {("table1", "RSICD"): 14, ("table2", "RSITMD"): 14, ("table3", "RSICD"): 3,
                      ("table3", "RSITMD"): 3, ("anchor", "RSICD"): 5, ("anchor", "RSITMD"): 5}
    assert not lit.duplicated(["dataset", "table", "method"]).any()
    assert lit[["source", "citation", "extra_pretraining_data"]].notna().all().all()
    paper = lit[lit["table"] != "anchor"]
    assert (paper["citation"].str.contains("10.11999/JEIT240946")).all()
    assert set(paper["source"]) == {"OSDPM paper Table 1", "OSDPM paper Table 2", "OSDPM paper Table 3"}
    assert (lit.loc[lit["table"] == "anchor", "source"] == "om-ai-lab/RS5M README").all()
    assert ((lit[RECALLS] >= 0) & (lit[RECALLS] <= 100)).all().all()


def test_literature_rsum_is_sum_of_recalls():
    lit = pd.read_csv(tables.REPORTED)
    gap = (lit[RECALLS].sum(axis=1) - lit["rsum"]).abs()
    paper = lit["table"] != "anchor"
    assert (gap[paper] <= 0.02).all(), lit.loc[paper & (gap > 0.02), ["table", "method"]]
    assert (gap[~paper] <= 0.006).all()  # computed when the file was written, rounded to 2 decimals


def test_literature_extra_pretraining_marked():
    a = tables.reported(table="anchor").set_index(["dataset", "method"])["extra_pretraining_data"]
    assert (a[a.index.get_level_values("method").str.startswith("GeoRSCLIP")] == "RS5M").all()
    assert (a[a.index.get_level_values("method").str.startswith("RemoteCLIP")] != "none").all()
    assert (a[a.index.get_level_values("method").str.startswith("CLIP")] == "none").all()


def test_reported_filters():
    assert len(tables.reported()) == 44
    t1 = tables.reported("rsicd", 1)
    assert len(t1) == 14 and set(t1["dataset"]) == {"RSICD"} and t1["method"].iloc[-1] == "OSDPM"
    assert len(tables.reported("RSITMD", "Table 3")) == 3
    assert len(tables.reported(table="anchors")) == 10
    assert np.allclose(t1["mr"], t1[RECALLS].mean(axis=1))
    with pytest.raises(ValueError, match="dataset"):
        tables.reported("UCM")
    with pytest.raises(ValueError, match="table"):
        tables.reported(table="table9")


def test_no_literature_numbers_in_code():
    src = (ROOT / "osdpm_lib" / "tables.py").read_text()
    for number in ("129.98", "207.77", "125.31", "8.39", "14.68"):
        assert number not in src


# ------------------------------------------------------------------------------------- ablation
def _runs():
    rows = []
    for v, base in (("clip", 100.0), ("clip+dapn", 110.0), ("osdpm", 130.0)):
        for seed, d in enumerate((-1.0, 0.0, 1.0)):
            rec = {k: (base + d * (i + 1)) / 6 for i, k in enumerate(RECALLS)}
            rows.append({"variant": v, "seed": seed, **rec, "rsum": sum(rec.values()),
                         "mr": sum(rec.values()) / 6, "best_epoch": 1})
    return pd.DataFrame(rows)


def test_ablation_table_mean_std():
    runs = _runs()
    ab = tables.ablation_table(runs)
    assert list(ab["variant"]) == ["clip", "clip+dapn", "osdpm"]
    assert list(ab["method"]) == ["CLIP", "CLIP+DAPN", "CLIP+DAPN+OSFCM"]
    assert (ab["n_seeds"] == 3).all()
    for v, g in runs.groupby("variant"):
        row = ab.set_index("variant").loc[v]
        for k in KEYS:
            assert row[f"{k}_mean"] == pytest.approx(g[k].mean())
            assert row[f"{k}_std"] == pytest.approx(np.std(g[k], ddof=1))
    # rsum over seeds: base + (-21, 0, +21)/6 -> std 3.5
    clip = ab.set_index("variant").loc["clip"]
    assert clip["rsum_mean"] == pytest.approx(100.0) and clip["rsum_std"] == pytest.approx(3.5)
    assert clip["rsum"] == "100.00 ± 3.50"


def test_ablation_table_single_seed_and_missing_columns():
    runs = _runs()
    one = tables.ablation_table(runs[runs["seed"] == 0].drop(columns=["rsum", "mr"]))
    assert math.isnan(one["rsum_std"].iloc[0]) and "±" not in one["rsum"].iloc[0]
    assert one["rsum_mean"].iloc[0] == pytest.approx(runs.loc[0, "rsum"])
    with pytest.raises(ValueError, match="variant"):
        tables.ablation_table(runs.drop(columns=["variant"]))


def test_table3_paired_column_and_protocol_note():
    paired = pd.DataFrame([{"comparison": "osdpm − clip", "diff": 2.5, "ci_low": 0.5, "ci_high": 4.0},
                           {"comparison": "clip − zero-shot", "diff": 30.0, "ci_low": 20.0, "ci_high": 40.0}])
    t = tables.table3(tables.ablation_table(_runs()), "embedded", paired)
    measured = t[t["measured_here"] == "yes"].set_index("method")
    assert measured.loc["CLIP+DAPN+OSFCM", "vs_clip"] == "+2.50 [+0.50, +4.00]"
    assert measured.loc["CLIP", "vs_clip"] == "" and measured.loc["CLIP+DAPN", "vs_clip"] == ""
    note = tables.protocol_note(1000, {"clip": 5, "zero-shot": 1}, "expected", 2000)
    assert "Test images: 1000" in note and "clip: 5" in note and "2000 replicates" in note and "random" in note


# ---------------------------------------------------------------------------------- Tables 1-3
def test_comparison_table_marks_measured_rows():
    ab = tables.ablation_table(_runs())
    measured = tables.ablation_means(ab)
    assert list(measured["method"]) == ["CLIP fine-tune (this book)", "CLIP+DAPN (this book)", "OSDPM (this book)"]
    for ds, n_paper in (("RSICD", 14), ("RSITMD", 14)):
        t = tables.comparison_table(ds, measured, "embedded")
        assert len(t) == n_paper + 1 + 5 + 3
        assert list(t["measured_here"]).count("yes") == 3
        mine = t[t["measured_here"] == "yes"]
        assert (mine["evaluated_on"] == "embedded test (measured here)").all()
        assert mine["method"].str.endswith("(this book)").all()
        assert (t.loc[t["measured_here"] == "no", "evaluated_on"] == f"{ds} test (reported)").all()
        assert t.loc[t["measured_here"] == "no", "rsum_std"].isna().all()
        assert mine["rsum_std"].notna().all()
        ft = t[t["method"] == tables.FINETUNED_CLIP]
        paper_clip = tables.reported(ds, "table3").set_index("method").loc["CLIP"]
        assert len(ft) == 1 and ft["rsum"].iloc[0] == paper_clip["rsum"]
        assert ft["source"].iloc[0] == "OSDPM paper Table 3"
        assert {"CLIP ViT-B/32 zero-shot", "RemoteCLIP ViT-B/32", "GeoRSCLIP ViT-B/32 zero-shot",
                "GeoRSCLIP-FT ViT-B/32 (RET-2)", "OSDPM"} <= set(t["method"])
        assert t["mr"].notna().all()
    with pytest.raises(ValueError):
        tables.comparison_table("UCM", measured, "embedded")


def test_comparison_table_accepts_plain_metric_rows():
    rec = {k: 10.0 for k in RECALLS}
    t = tables.comparison_table("rsicd", pd.DataFrame([{"method": "x", **rec}]), "RSICD")
    row = t.iloc[-1]
    assert row["rsum"] == 60.0 and row["mr"] == 10.0 and row["evaluated_on"] == "RSICD test (measured here)"


def test_table3_paper_beside_measured():
    t = tables.table3(tables.ablation_table(_runs()), "embedded")
    assert len(t) == 9 and set(t["vs_clip"]) == {""}
    assert list(t["measured_here"]) == ["no"] * 6 + ["yes"] * 3
    assert t.loc[6, "rsum"] == "100.00 ± 3.50" and t.loc[6, "method"] == "CLIP"
    assert set(t.loc[:5, "evaluated_on"]) == {"RSICD test (reported)", "RSITMD test (reported)"}


def test_dataset_label():
    assert tables.dataset_label("embedded") == "embedded"
    assert tables.dataset_label("../../data/rsicd/") == "RSICD"


def test_write_csv_md_tex(tmp_path):
    t = tables.comparison_table("RSICD", tables.ablation_means(tables.ablation_table(_runs())), "embedded")
    paths = tables.write(t, tmp_path, "table1_rsicd", latex=True)
    assert [p.name for p in paths] == ["table1_rsicd.csv", "table1_rsicd.md", "table1_rsicd.tex"]
    back = pd.read_csv(paths[0])
    assert len(back) == len(t) and list(back.columns) == list(t.columns)
    md = paths[1].read_text()
    assert "OSDPM (this book)" in md and "nan" not in md
    tex = paths[2].read_text()
    assert r"\begin{tabular}" in tex and r"SCAN\_t2i" in tex and r"i2t\_r1" in tex
    assert tables.write(t, tmp_path, "plain")[-1].suffix == ".md"


# ------------------------------------------------------------------------------------- notebook 06
def test_notebook_06_runs(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    pm = pytest.importorskip("papermill")
    (tmp_path / "tables").mkdir()
    _runs().to_csv(tmp_path / "tables" / "ablation_runs.csv", index=False)
    nb = jupytext.read(ROOT / "notebooks" / "06_tables.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "06.ipynb")
    pm.execute_notebook(tmp_path / "06.ipynb", tmp_path / "06_out.ipynb", cwd=str(tmp_path),
                        parameters={"dataset": "embedded", "profile": "ci", "out_dir": str(tmp_path)},
                        kernel_name="python3", progress_bar=False)
    for name in ("table1_rsicd", "table2_rsitmd", "table3_ablation"):
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").is_file()
    t1 = pd.read_csv(tmp_path / "tables" / "table1_rsicd.csv")
    assert (t1["measured_here"] == "yes").sum() == 3
    assert t1.loc[t1["method"] == "OSDPM (this book)", "rsum"].iloc[0] == pytest.approx(130.0)
