"""Tables of the book: written as CSV, Markdown and (for the paper's tables) LaTeX.

The literature rows the book shows live in ``literature/reported_results.csv`` (one tidy file with a
``source`` and a ``citation`` for every row; see ``literature/README.md``); no number of the paper is
written in code.  :func:`comparison_table` builds the paper's Table 1 (RSICD) or Table 2 (RSITMD) with the
public anchors and the rows measured in this book beside them, :func:`ablation_table` reduces one row per
(variant, seed) to mean and std over seeds, and :func:`table3` sets that beside the paper's Table 3.
Every row says where it comes from: ``measured_here`` ("yes"/"no") and ``evaluated_on``
(e.g. ``"RSICD test (reported)"`` or ``"embedded test (measured here)"``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .metrics import KEYS

LITERATURE = Path(__file__).with_name("literature")
REPORTED = LITERATURE / "reported_results.csv"
RECALLS = KEYS[:6]
DATASETS = {"RSICD": "table1", "RSITMD": "table2"}

# ablation variants of osdpm_lib.train -> the paper's Table 3 names, and the labels of the rows this
# book measures in Tables 1/2
PAPER_NAMES = {"clip": "CLIP", "clip+dapn": "CLIP+DAPN", "osdpm": "CLIP+DAPN+OSFCM",
               "zero-shot": "CLIP zero-shot", "frozen": "CLIP (frozen)+DAPN+OSFCM"}
BOOK_LABELS = {"clip": "CLIP fine-tune (this book)", "clip+dapn": "CLIP+DAPN (this book)",
               "osdpm": "OSDPM (this book)", "zero-shot": "CLIP zero-shot (this book)",
               "frozen": "OSDPM, frozen backbone (this book)"}
FINETUNED_CLIP = "fine-tuned CLIP (as reported by OSDPM)"


def literature_file(name: str) -> Path:
    """The path of a file of the literature folder (``osdpm_lib/literature/``), e.g. ``rsicd_stats.csv``."""
    return LITERATURE / name


def write(df: pd.DataFrame, out_dir, name: str, latex: bool = False, floatfmt: str = ".2f") -> list[Path]:
    d = Path(out_dir) / "tables"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.csv", d / f"{name}.md"]
    df.to_csv(paths[0], index=False, float_format="%.4f")
    shown = df.astype(object).where(df.notna(), None)  # tabulate prints NaN as "nan", None as missingval
    paths[1].write_text(shown.to_markdown(index=False, floatfmt=floatfmt, missingval="--") + "\n")
    if latex:
        paths.append(d / f"{name}.tex")
        paths[-1].write_text(df.to_latex(index=False, float_format=lambda x: f"{x:{floatfmt}}", na_rep="--",
                                         escape=True))
    return paths


def metrics_row(label: str, metrics: dict, **extra) -> dict:
    return {"method": label, **extra, **{k: metrics[k] for k in KEYS}}


# ----------------------------------------------------------------------------------------- literature
def _table_key(table) -> str:
    t = str(table).strip().lower().replace(" ", "")
    if t.isdigit():
        return f"table{t}"
    return {"anchors": "anchor", "public": "anchor"}.get(t, t)


def _dataset_key(dataset: str) -> str:
    d = str(dataset).strip().upper()
    if d not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; the literature covers {sorted(DATASETS)}")
    return d


def reported(dataset: str | None = None, table=None) -> pd.DataFrame:
    """Rows of ``literature/reported_results.csv``, optionally of one dataset (``"RSICD"``/``"RSITMD"``,
    any case) and one table (``"table1"``, ``"table2"``, ``"table3"``, ``"anchor"``; ``1``/``"Table 1"``
    also work).  ``rsum`` is as printed by the source; ``mr`` (mean of the six recalls) is derived here."""
    df = pd.read_csv(REPORTED)
    known = set(df["table"])
    if dataset is not None:
        df = df[df["dataset"] == _dataset_key(dataset)]
    if table is not None:
        key = _table_key(table)
        if key not in known:
            raise ValueError(f"unknown table {table!r}; choose table1, table2, table3 or anchor")
        df = df[df["table"] == key]
    df = df.reset_index(drop=True)
    df.insert(df.columns.get_loc("rsum") + 1, "mr", df[list(RECALLS)].mean(axis=1))
    return df


def dataset_label(dataset: str) -> str:
    """How the tables name the dataset a chain ran on: ``"embedded"``, or a real dataset folder's name
    (``"RSICD"``/``"RSITMD"`` upper-cased, as in the literature rows)."""
    name = Path(str(dataset).rstrip("/\\")).name or str(dataset)
    return name.upper() if name.upper() in DATASETS else name


# ------------------------------------------------------------------------------------ Tables 1 and 2
def _measured_frame(measured: pd.DataFrame) -> pd.DataFrame:
    m = measured.copy()
    missing = [c for c in ("method", *RECALLS) if c not in m.columns]
    if missing:
        raise ValueError(f"measured rows lack the columns {missing}")
    if "rsum" not in m.columns:
        m["rsum"] = m[list(RECALLS)].sum(axis=1)
    if "mr" not in m.columns:
        m["mr"] = m[list(RECALLS)].mean(axis=1)
    return m


def comparison_table(dataset: str, measured: pd.DataFrame, measured_on: str) -> pd.DataFrame:
    """The paper's Table 1 (``dataset="RSICD"``) or Table 2 (``"RSITMD"``) with context and this book's rows.

    Rows, in order: the paper's comparison methods and OSDPM as reported; the paper's fine-tuned CLIP
    baseline (its Table 3 "CLIP" row); the public anchors (CLIP zero-shot, PIR, RemoteCLIP, GeoRSCLIP
    zero-shot and fine-tuned, with their extra pre-training data); then ``measured`` (columns ``method``
    and the keys of :data:`osdpm_lib.metrics.KEYS`, optionally ``*_std``, ``source``,
    ``extra_pretraining_data``), evaluated on ``measured_on``'s test split.  ``measured_here`` and
    ``evaluated_on`` mark every row.
    """
    ds = _dataset_key(dataset)
    paper = reported(ds, DATASETS[ds])
    clip_ft = reported(ds, "table3")
    clip_ft = clip_ft[clip_ft["method"] == PAPER_NAMES["clip"]].assign(method=FINETUNED_CLIP)
    anchors = reported(ds, "anchor")
    lit = pd.concat([paper, clip_ft, anchors], ignore_index=True)
    lit = lit.assign(measured_here="no", evaluated_on=f"{ds} test (reported)")

    m = _measured_frame(measured)
    m = m.assign(measured_here="yes", evaluated_on=f"{measured_on} test (measured here)")
    if "source" not in m.columns:
        m["source"] = "this book"
    if "extra_pretraining_data" not in m.columns:
        m["extra_pretraining_data"] = "none"

    std_cols = [c for c in m.columns if c.endswith("_std")]
    cols = ["method", *KEYS, *std_cols, "extra_pretraining_data", "measured_here", "evaluated_on", "source"]
    return pd.concat([lit[[c for c in cols if c in lit.columns]], m[cols]], ignore_index=True)[cols]


# ---------------------------------------------------------------------------------- ablation, Table 3
def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1) over seeds of each variant, from one row per (variant, seed).

    Columns: ``variant``, ``method`` (the paper's name of the variant), ``n_seeds``, a formatted
    ``"mean ± std"`` string per metric key (e.g. ``rsum``), then ``<key>_mean`` and ``<key>_std``.
    Variants keep the order of their first appearance; a single seed has std NaN (shown as the mean).
    """
    missing = [c for c in ("variant", *RECALLS) if c not in runs.columns]
    if missing:
        raise ValueError(f"ablation runs lack the columns {missing}")
    r = runs.copy()
    if "rsum" not in r.columns:
        r["rsum"] = r[list(RECALLS)].sum(axis=1)
    if "mr" not in r.columns:
        r["mr"] = r[list(RECALLS)].mean(axis=1)
    g = r.groupby("variant", sort=False)[list(KEYS)]
    mean, std = g.mean(), g.std(ddof=1)
    out = pd.DataFrame({"variant": mean.index,
                        "method": [PAPER_NAMES.get(v, v) for v in mean.index],
                        "n_seeds": g.size().to_numpy()})
    for k in KEYS:
        out[k] = [_fmt(a, b) for a, b in zip(mean[k], std[k])]
    for k in KEYS:
        out[f"{k}_mean"] = mean[k].to_numpy()
        out[f"{k}_std"] = std[k].to_numpy()
    return out.reset_index(drop=True)


def ablation_means(ablation: pd.DataFrame, labels: dict[str, str] | None = None,
                   std: tuple[str, ...] = ("rsum",)) -> pd.DataFrame:
    """The measured rows for :func:`comparison_table`: ``method`` (``labels`` of the variant, default
    :data:`BOOK_LABELS`), the means of the metric keys and the std columns named in ``std``."""
    labels = BOOK_LABELS if labels is None else labels
    out = pd.DataFrame({"method": [labels.get(v, f"{v} (this book)") for v in ablation["variant"]]})
    for k in KEYS:
        out[k] = ablation[f"{k}_mean"].to_numpy()
    for k in std:
        out[f"{k}_std"] = ablation[f"{k}_std"].to_numpy()
    return out


def table3(ablation: pd.DataFrame, measured_on: str, paired: pd.DataFrame | None = None,
           baseline: str = "clip") -> pd.DataFrame:
    """The paper's Table 3 (RSICD and RSITMD blocks, as reported) above the measured ablation
    (``ablation_table`` output; cells ``"mean ± std"`` over seeds).  With ``paired`` (``stats.compare_runs``
    output), the column ``vs_<baseline>`` holds each measured row's paired Rsum difference to ``baseline`` with
    its 95% CI (``"+1.23 [-0.40, 2.90]"``; a pair ``baseline − row`` is shown negated).  Metric cells are strings."""
    paper = reported(table="table3")
    col = f"vs_{baseline}"
    ci = {}
    if paired is not None:
        for r in paired.to_dict("records"):
            a, b = r["comparison"].split(" − ")
            if b == baseline:
                ci[a] = f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
            elif a == baseline:
                ci[b] = f"{-r['diff']:+.2f} [{-r['ci_high']:+.2f}, {-r['ci_low']:+.2f}]"
    rows = []
    for r in paper.to_dict("records"):
        rows.append({"evaluated_on": f"{r['dataset']} test (reported)", "method": r["method"],
                     "measured_here": "no", **{k: f"{r[k]:.2f}" for k in (*RECALLS, "rsum")},
                     "seeds": "", col: "", "source": r["source"]})
    for r in ablation.to_dict("records"):
        rows.append({"evaluated_on": f"{measured_on} test (measured here)", "method": r["method"],
                     "measured_here": "yes", **{k: r[k] for k in (*RECALLS, "rsum")},
                     "seeds": str(int(r["n_seeds"])), col: ci.get(r["variant"], ""),
                     "source": "this book (mean ± std over seeds)"})
    return pd.DataFrame(rows)


def protocol_note(n_test_images: int, seeds: dict[str, int], ties: str = "expected", n_boot: int | None = None) -> str:
    """The line printed under every measured table: tie rule, test images, seeds per row (and bootstrap size)."""
    from .metrics import TIE_RULES

    per_row = ", ".join(f"{k}: {v}" for k, v in seeds.items())
    boot = f"; paired bootstrap: {n_boot} replicates over test images, nested over seeds, 95% percentile CI" \
        if n_boot else ""
    return f"Tie rule: {ties} ({TIE_RULES[ties]}). Test images: {n_test_images}. Seeds per row: {per_row}{boot}."


# ------------------------------------------------------------------------------- measured baselines
BASELINE_SUFFIX = " (measured here)"


def baseline_means(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per baseline system from one row per (system, seed) (``osdpm_lib.baselines.run.run_baselines``):
    the mean of every metric key over seeds, ``rsum_std`` (ddof=1; NaN for one seed), ``n_seeds`` and
    ``replaced`` (what the implementation replaces of the original)."""
    g = runs.groupby("method", sort=False)
    out = g[list(KEYS)].mean().reset_index()
    out["rsum_std"] = g["rsum"].std(ddof=1).to_numpy()
    out["n_seeds"] = g.size().to_numpy()
    out["replaced"] = g["replaced"].first().to_numpy()
    return out


def add_baselines(table: pd.DataFrame, baselines: pd.DataFrame, measured_on: str) -> pd.DataFrame:
    """Table 1 or 2 (:func:`comparison_table` output, or its CSV read back) with the measured baseline rows
    (:func:`baseline_means` output) appended as ``"<method> (measured here)"``, marked ``measured_here`` "yes",
    ``evaluated_on`` the measured split and ``differs_from_original`` (what replaced what the original used).
    Baseline rows already in ``table`` are replaced, so the call can be repeated."""
    t = table[~table["method"].astype(str).str.endswith(BASELINE_SUFFIX)].copy()
    if "differs_from_original" not in t.columns:
        t["differs_from_original"] = ""
    b = pd.DataFrame({"method": [f"{m}{BASELINE_SUFFIX}" for m in baselines["method"]]})
    for k in KEYS:
        b[k] = baselines[k].to_numpy()
    if "rsum_std" in t.columns and "rsum_std" in baselines.columns:
        b["rsum_std"] = baselines["rsum_std"].to_numpy()
    b["extra_pretraining_data"] = "none"
    b["measured_here"] = "yes"
    b["evaluated_on"] = f"{measured_on} test (measured here)"
    b["source"] = [f"this book (osdpm_lib.baselines; mean of {n} seed{'s' * (n > 1)})" for n in baselines["n_seeds"]]
    b["differs_from_original"] = baselines["replaced"].to_numpy()
    return pd.concat([t, b], ignore_index=True)[list(t.columns)]
